// CUDA Linear on cuBLAS, plus the bias add and residual add kernels.
//
// Row-major y[m, n] = x[m, k] . w[n, k]^T is, read column-major, y^T[n, m] = w^T . x^T where w is
// a column-major [k, n] matrix: one cublasSgemm(OP_T, OP_N, n, m, k) with no copies. The math mode
// is cuBLAS's default (full fp32, no TF32), matching the fp32 reference to rounding.
//
// Handles: one cublasHandle_t per (thread, stream), created on first use and bound to the stream
// with cublasSetStream. They live until the process exits and are deliberately not destroyed
// (destroying them from thread_local/static destructors can run after the CUDA runtime has shut
// down). A cuBLAS failure is recorded for this thread and returned by cuda::LastError().
#include <cublas_v2.h>

#include <string>
#include <unordered_map>

#include "kernels/cuda_util.cuh"
#include "kernels/gemm.h"

namespace kvmesh::kernels::cuda {
namespace {

cublasHandle_t HandleFor(cudaStream_t stream) {
  thread_local std::unordered_map<cudaStream_t, cublasHandle_t>* handles =
      new std::unordered_map<cudaStream_t, cublasHandle_t>();  // never freed, see above
  auto it = handles->find(stream);
  if (it != handles->end()) return it->second;
  cublasHandle_t handle = nullptr;
  cublasStatus_t st = cublasCreate(&handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    internal::RecordLaunchError(InternalError(std::string("cublasCreate failed: ") +
                                              cublasGetStatusName(st)));
    return nullptr;
  }
  st = cublasSetStream(handle, stream);
  if (st != CUBLAS_STATUS_SUCCESS) {
    internal::RecordLaunchError(InternalError(std::string("cublasSetStream failed: ") +
                                              cublasGetStatusName(st)));
    cublasDestroy(handle);
    return nullptr;
  }
  handles->emplace(stream, handle);
  return handle;
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[idx] += bias[idx % n];
  }
}

__global__ void AddInPlaceKernel(float* y, const float* x, int64_t n) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[idx] += x[idx];
  }
}

unsigned GridFor(int64_t total, int threads) {
  const int64_t blocks = internal::CeilDiv(total, threads);
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

}  // namespace

void Linear(float* y, const float* x, const float* w, const float* bias, int64_t m, int64_t n,
            int64_t k, Stream stream) {
  if (m <= 0 || n <= 0) return;
  const cudaStream_t s = internal::AsCudaStream(stream);
  cublasHandle_t handle = HandleFor(s);
  if (handle == nullptr) return;
  const float one = 1.0f;
  const float zero = 0.0f;
  const int ld = static_cast<int>(k > 0 ? k : 1);
  const cublasStatus_t st =
      cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                  static_cast<int>(k), &one, w, ld, x, ld, &zero, y, static_cast<int>(n));
  if (st != CUBLAS_STATUS_SUCCESS) {
    internal::RecordLaunchError(InternalError(
        std::string("cublasSgemm(m=") + std::to_string(m) + ", n=" + std::to_string(n) +
        ", k=" + std::to_string(k) + ") failed: " + cublasGetStatusName(st)));
    return;
  }
  if (bias != nullptr) {
    AddBiasKernel<<<GridFor(m * n, 256), 256, 0, s>>>(y, bias, m, n);
  }
}

void AddInPlace(float* y, const float* x, int64_t n, Stream stream) {
  if (n <= 0) return;
  AddInPlaceKernel<<<GridFor(n, 256), 256, 0, internal::AsCudaStream(stream)>>>(y, x, n);
}

}  // namespace kvmesh::kernels::cuda
