// CUDA SiLU-and-multiply: one thread per output element (grid-stride), fp32 expf.
#include "kernels/activation.h"
#include "kernels/cuda_util.cuh"

namespace kvmesh::kernels::cuda {
namespace {

__global__ void SiluAndMulKernel(float* out, const float* gate_up, int64_t rows, int64_t dim) {
  const int64_t total = rows * dim;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / dim;
    const int64_t i = idx - r * dim;
    const float g = gate_up[r * 2 * dim + i];
    const float u = gate_up[r * 2 * dim + dim + i];
    out[idx] = g / (1.0f + expf(-g)) * u;
  }
}

}  // namespace

void SiluAndMul(float* out, const float* gate_up, int64_t rows, int64_t dim, Stream stream) {
  const int64_t total = rows * dim;
  if (total <= 0) return;
  const int threads = 256;
  const int64_t blocks = internal::CeilDiv(total, threads);
  SiluAndMulKernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), threads, 0,
                     internal::AsCudaStream(stream)>>>(out, gate_up, rows, dim);
}

}  // namespace kvmesh::kernels::cuda
