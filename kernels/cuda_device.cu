// CUDA device probe, error reporting and device-memory helpers (see kernels/cuda_device.h).
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include <optional>
#include <string>
#include <utility>

#include "kernels/cuda_util.cuh"

namespace kvmesh::kernels::cuda {
namespace internal {
namespace {
// std::optional rather than a bare Status: nvcc warns on assigning to a [[nodiscard]] type.
thread_local std::optional<Status> t_launch_error;
}  // namespace

void RecordLaunchError(Status status) {
  if (!t_launch_error.has_value()) (void)t_launch_error.emplace(std::move(status));
}
}  // namespace internal

namespace {
int ProbeDevices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count <= 0) return 0;
  // Creating the primary context is part of "usable": a device that cannot be initialised is no
  // device for us.
  err = cudaFree(nullptr);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}
}  // namespace

int UsableDeviceCount() {
  static const int count = ProbeDevices();
  return count;
}

Status LastError(const char* what) {
  if (internal::t_launch_error.has_value()) {
    Status s = std::move(*internal::t_launch_error);
    internal::t_launch_error.reset();
    (void)cudaGetLastError();
    return s.WithContext(what);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return InternalError(std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                         cudaGetErrorString(err) + ")");
  }
  return Status::Ok();
}

StatusOr<void*> DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    const Status s = internal::CudaErrorStatus(err, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
    if (err == cudaErrorMemoryAllocation) {
      return ResourceExhaustedError("DeviceAlloc(" + std::to_string(bytes) + " bytes): " +
                                    s.message());
    }
    return s.WithContext("DeviceAlloc(" + std::to_string(bytes) + " bytes)");
  }
  return p;
}

void DeviceFree(void* p) {
  if (p != nullptr) (void)cudaFree(p);
}

Status CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  KVMESH_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return Status::Ok();
}

Status CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  KVMESH_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return Status::Ok();
}

Status Synchronize() {
  KVMESH_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return Status::Ok();
}

}  // namespace kvmesh::kernels::cuda
