// Internal helpers shared by the kernels/*.cu files (never included by code outside kernels/):
// the one CUDA checking macro, the per-thread sticky launch error that cuda::LastError() reports
// (for failures that cudaGetLastError cannot see, such as cuBLAS status codes), and warp/block
// reductions.
//
// Invariant: every CUDA runtime call whose failure matters goes through
// KVMESH_CUDA_RETURN_IF_ERROR, which returns a Status naming the call text, file and line.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/status.h"

namespace kvmesh::kernels::cuda::internal {

inline Status CudaErrorStatus(cudaError_t err, const char* call, const char* file, int line) {
  return InternalError(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                       ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

// Records an error of an asynchronous launcher (which returns void) for this thread; the next
// cuda::LastError() on the thread returns it and clears it. The first error recorded wins.
void RecordLaunchError(Status status);

inline cudaStream_t AsCudaStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float WarpReduceSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpReduceMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds >= 32 floats.
// Must be called by all threads of the block (it synchronizes).
__device__ __forceinline__ float BlockReduceSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = WarpReduceSum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  return WarpReduceSum(v);
}

}  // namespace kvmesh::kernels::cuda::internal

// Evaluates a CUDA runtime call; on failure returns (from the enclosing function) an internal
// Status naming the call text, file, line and the CUDA error.
#define KVMESH_CUDA_RETURN_IF_ERROR(call)                                                   \
  do {                                                                                      \
    const cudaError_t kvmesh_cuda_err_ = (call);                                            \
    if (kvmesh_cuda_err_ != cudaSuccess) {                                                  \
      return ::kvmesh::kernels::cuda::internal::CudaErrorStatus(kvmesh_cuda_err_, #call,    \
                                                                __FILE__, __LINE__);        \
    }                                                                                       \
  } while (0)
