// Rotary embedding: the host-side inverse-frequency table (with Llama 3.1 / linear scaling, as
// Hugging Face transformers computes it) and the reference ApplyRope.
//
// The table is computed in double and rounded to fp32 once. ApplyRope forms the angle as
// fp32(position) * inv_freq[i] in fp32 (as transformers does) and computes cos/sin once per token
// and pair, shared by all heads of that token.
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/rope.h"

namespace kvmesh::kernels {

std::vector<float> RopeInvFreq(int head_dim, float theta, const RopeScaling& scaling) {
  const int half = head_dim / 2;
  std::vector<float> out(static_cast<size_t>(half > 0 ? half : 0));
  const double factor = scaling.factor;
  const double low = scaling.low_freq_factor;
  const double high = scaling.high_freq_factor;
  const double old_ctx = scaling.original_max_position_embeddings;
  const double low_freq_wavelen = old_ctx / low;
  const double high_freq_wavelen = old_ctx / high;
  for (int i = 0; i < half; ++i) {
    double inv = 1.0 / std::pow(static_cast<double>(theta), (2.0 * i) / head_dim);
    if (scaling.type == "linear") {
      inv /= factor;
    } else if (scaling.type == "llama3") {
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > low_freq_wavelen) {
        inv /= factor;  // low frequencies: fully scaled
      } else if (wavelen >= high_freq_wavelen) {
        // medium band: interpolate between scaled and unscaled
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        inv = (1.0 - smooth) * inv / factor + smooth * inv;
      }  // high frequencies (wavelen < high_freq_wavelen): unchanged
    }
    out[static_cast<size_t>(i)] = static_cast<float>(inv);
  }
  return out;
}

namespace ref {
namespace {

void RotateHeads(float* x, int num_heads, int head_dim, const float* cos_t, const float* sin_t) {
  const int half = head_dim / 2;
  for (int h = 0; h < num_heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float x1 = head[i];
      const float x2 = head[i + half];
      head[i] = x1 * cos_t[i] - x2 * sin_t[i];
      head[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
    }
  }
}

}  // namespace

void ApplyRope(float* q, int64_t q_stride, float* k, int64_t k_stride, const int32_t* positions,
               int64_t num_tokens, int num_q_heads, int num_kv_heads, int head_dim,
               const float* inv_freq, Stream /*stream*/) {
  const int half = head_dim / 2;
  thread_local std::vector<float> table;
  table.resize(static_cast<size_t>(2 * half));
  float* cos_t = table.data();
  float* sin_t = table.data() + half;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    RotateHeads(q + t * q_stride, num_q_heads, head_dim, cos_t, sin_t);
    RotateHeads(k + t * k_stride, num_kv_heads, head_dim, cos_t, sin_t);
  }
}

}  // namespace ref
}  // namespace kvmesh::kernels
