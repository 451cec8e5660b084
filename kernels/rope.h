// Rotary position embedding, Hugging Face Llama convention ("rotate_half": element i is paired with
// element i + head_dim/2 of the same head), applied in place to q and k.
//
// RopeInvFreq() builds the per-pair inverse frequencies on the host, including Llama 3.1's
// frequency-dependent scaling (rope_scaling.rope_type == "llama3") and plain linear scaling; the
// table (head_dim/2 floats) is then copied to the backend's memory and passed to ApplyRope.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace kvmesh::kernels {

struct RopeScaling {
  std::string type;  // "" (none), "llama3" or "linear"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;   // llama3 only
  float high_freq_factor = 4.0f;  // llama3 only
  int original_max_position_embeddings = 8192;  // llama3 only
};

// inv_freq[i] = 1 / theta^(2i / head_dim), i in [0, head_dim/2), then scaled as `scaling` says.
std::vector<float> RopeInvFreq(int head_dim, float theta, const RopeScaling& scaling);

namespace ref {
// q: [num_tokens] rows of `q_stride` floats, the first num_q_heads * head_dim are the heads;
// k likewise with k_stride and num_kv_heads. positions: [num_tokens]. inv_freq: [head_dim / 2].
void ApplyRope(float* q, int64_t q_stride, float* k, int64_t k_stride, const int32_t* positions,
               int64_t num_tokens, int num_q_heads, int num_kv_heads, int head_dim,
               const float* inv_freq, Stream stream);
}  // namespace ref
namespace cuda {
void ApplyRope(float* q, int64_t q_stride, float* k, int64_t k_stride, const int32_t* positions,
               int64_t num_tokens, int num_q_heads, int num_kv_heads, int head_dim,
               const float* inv_freq, Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
