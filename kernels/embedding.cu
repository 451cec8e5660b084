// CUDA embedding lookup: one CTA per token copies one table row; an out-of-range id writes zeros
// and never reads the table.
#include "kernels/cuda_util.cuh"
#include "kernels/embedding.h"

namespace kvmesh::kernels::cuda {
namespace {

__global__ void EmbeddingKernel(float* out, const float* table, const int32_t* ids, int64_t dim,
                                int64_t vocab_size) {
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t];
  float* y = out + t * dim;
  if (id < 0 || id >= vocab_size) {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[i] = 0.0f;
    return;
  }
  const float* row = table + id * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[i] = row[i];
}

}  // namespace

void EmbeddingLookup(float* out, const float* table, const int32_t* ids, int64_t num_tokens,
                     int64_t dim, int64_t vocab_size, Stream stream) {
  if (num_tokens <= 0 || dim <= 0) return;
  EmbeddingKernel<<<static_cast<unsigned>(num_tokens), 256, 0, internal::AsCudaStream(stream)>>>(
      out, table, ids, dim, vocab_size);
}

}  // namespace kvmesh::kernels::cuda
