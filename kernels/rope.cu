// CUDA rotary embedding (rotate_half convention), in place on q and k. One CTA per token; threads
// stride over (head, pair) of q then k. The angle is fp32(position) * inv_freq[i] in fp32, as in
// the reference; cos/sin use the accurate (non-fast-math) sincosf.
#include "kernels/cuda_util.cuh"
#include "kernels/rope.h"

namespace kvmesh::kernels::cuda {
namespace {

__global__ void ApplyRopeKernel(float* q, int64_t q_stride, float* k, int64_t k_stride,
                                const int32_t* positions, int num_q_heads, int num_kv_heads,
                                int head_dim, const float* inv_freq) {
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  const int q_pairs = num_q_heads * half;
  const int total = (num_q_heads + num_kv_heads) * half;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    float* head;
    int i;
    if (idx < q_pairs) {
      head = q + t * q_stride + static_cast<int64_t>(idx / half) * head_dim;
      i = idx % half;
    } else {
      const int j = idx - q_pairs;
      head = k + t * k_stride + static_cast<int64_t>(j / half) * head_dim;
      i = j % half;
    }
    const float angle = pos * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    const float x1 = head[i];
    const float x2 = head[i + half];
    head[i] = x1 * c - x2 * s;
    head[i + half] = x2 * c + x1 * s;
  }
}

}  // namespace

void ApplyRope(float* q, int64_t q_stride, float* k, int64_t k_stride, const int32_t* positions,
               int64_t num_tokens, int num_q_heads, int num_kv_heads, int head_dim,
               const float* inv_freq, Stream stream) {
  if (num_tokens <= 0 || head_dim < 2) return;
  const int total = (num_q_heads + num_kv_heads) * (head_dim / 2);
  const int threads = total >= 512 ? 512 : ((total + 31) / 32) * 32;
  ApplyRopeKernel<<<static_cast<unsigned>(num_tokens), threads, 0,
                    internal::AsCudaStream(stream)>>>(q, q_stride, k, k_stride, positions,
                                                      num_q_heads, num_kv_heads, head_dim,
                                                      inv_freq);
}

}  // namespace kvmesh::kernels::cuda
