// CUDA RMSNorm: one CTA per row; a block-wide fp32 sum of squares, then one scaling pass. `out`
// may alias `in` (each element is read before the same thread writes it).
#include "kernels/cuda_util.cuh"
#include "kernels/rmsnorm.h"

namespace kvmesh::kernels::cuda {
namespace {

__global__ void RmsNormKernel(float* out, const float* in, const float* weight, int64_t dim,
                              float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float* x = in + row * dim;
  float* y = out + row * dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum_sq += x[i] * x[i];
  sum_sq = internal::BlockReduceSum(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[i] = x[i] * inv * weight[i];
}

}  // namespace

void RmsNorm(float* out, const float* in, const float* weight, int64_t rows, int64_t dim, float eps,
             Stream stream) {
  if (rows <= 0 || dim <= 0) return;
  const int threads = dim >= 4096 ? 1024 : (dim >= 1024 ? 512 : 256);
  RmsNormKernel<<<static_cast<unsigned>(rows), threads, 0, internal::AsCudaStream(stream)>>>(
      out, in, weight, dim, eps);
}

}  // namespace kvmesh::kernels::cuda
