// A tiny persistent worker pool for the reference (CPU) kernels: ParallelFor splits [0, n) into
// contiguous ranges, one per thread, and runs them on the calling thread plus the pool's workers.
// The pool size comes from KVMESH_CPU_THREADS, else OPENBLAS_NUM_THREADS, else the number of CPUs.
// Calls are serialized (one ParallelFor at a time); the engine thread is the only caller.
#pragma once

#include <cstdint>
#include <functional>

namespace kvmesh::kernels::ref {

// Runs fn(begin, end) over a partition of [0, n) into at most NumCpuThreads() ranges whose sizes
// are multiples of `grain` (except the last). Returns when every range is done.
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
int NumCpuThreads();

}  // namespace kvmesh::kernels::ref
