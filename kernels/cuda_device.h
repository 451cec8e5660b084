// CUDA device probe and error checking, for code that links kvmesh_kernels_cuda. The header itself
// needs no CUDA headers.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace kvmesh::kernels::cuda {

// Number of usable CUDA devices; 0 when the driver, the runtime or the device probe reports any
// error (with no GPU cudaGetDeviceCount returns 35 or 34, not only 100).
int UsableDeviceCount();
// Error of the last launch(es) on this thread, as a status naming the CUDA error; OK if none.
Status LastError(const char* what);
// Device memory helpers returning status (the engine and tests use these, not raw cudaMalloc).
StatusOr<void*> DeviceAlloc(size_t bytes);
void DeviceFree(void* p);
Status CopyToDevice(void* dst, const void* src, size_t bytes);
Status CopyToHost(void* dst, const void* src, size_t bytes);
Status Synchronize();

}  // namespace kvmesh::kernels::cuda
