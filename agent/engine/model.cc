#include "agent/engine/model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace kvmesh::engine {
namespace {

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

void ForwardBatch::Clear() {
  tokens.clear();
  positions.clear();
  slot_mapping.clear();
  cu_q_lens.clear();
  context_lens.clear();
  block_tables.clear();
  max_blocks_per_seq = 0;
  logits_rows.clear();
}

Model::Model(std::shared_ptr<const ModelWeights> weights, KernelOps ops)
    : weights_(std::move(weights)), ops_(ops) {
  const ModelConfig& c = weights_->config();
  inv_freq_ = kernels::RopeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling);
}

kernels::KvCacheLayout Model::CacheLayout(int num_blocks, int block_size) const {
  const ModelConfig& c = config();
  kernels::KvCacheLayout l;
  l.num_layers = c.num_hidden_layers;
  l.num_blocks = num_blocks;
  l.block_size = block_size;
  l.num_kv_heads = c.num_key_value_heads;
  l.head_dim = c.head_dim;
  return l;
}

Status Model::Validate(const ForwardBatch& b, const kernels::KvCacheLayout& layout) const {
  const ModelConfig& c = config();
  if (layout.num_layers != c.num_hidden_layers || layout.num_kv_heads != c.num_key_value_heads ||
      layout.head_dim != c.head_dim) {
    return InvalidArgumentError("forward: KV cache layout does not match the model");
  }
  const int t = b.num_tokens();
  const int s = b.num_seqs();
  if (t == 0 || s == 0) return InvalidArgumentError("forward: empty batch");
  if (b.positions.size() != static_cast<size_t>(t) ||
      b.slot_mapping.size() != static_cast<size_t>(t)) {
    return InvalidArgumentError("forward: positions/slot_mapping must have one entry per token");
  }
  if (b.cu_q_lens.size() != static_cast<size_t>(s) + 1 || b.cu_q_lens[0] != 0 ||
      b.cu_q_lens[s] != t) {
    return InvalidArgumentError("forward: cu_q_lens must start at 0 and end at num_tokens");
  }
  if (b.max_blocks_per_seq <= 0 ||
      b.block_tables.size() != static_cast<size_t>(s) * b.max_blocks_per_seq) {
    return InvalidArgumentError("forward: block_tables must be num_seqs x max_blocks_per_seq");
  }
  const int64_t num_slots = static_cast<int64_t>(layout.num_blocks) * layout.block_size;
  for (int i = 0; i < t; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.vocab_size) {
      return InvalidArgumentError("forward: token id " + std::to_string(b.tokens[i]) +
                                  " outside the vocabulary of " + std::to_string(c.vocab_size));
    }
    if (b.positions[i] < 0 || b.positions[i] >= c.max_position_embeddings) {
      return InvalidArgumentError("forward: position " + std::to_string(b.positions[i]) +
                                  " outside [0, max_position_embeddings)");
    }
    if (b.slot_mapping[i] >= num_slots) {
      return InvalidArgumentError("forward: KV slot outside the cache");
    }
  }
  for (int q = 0; q < s; ++q) {
    const int q_len = b.cu_q_lens[q + 1] - b.cu_q_lens[q];
    const int ctx = b.context_lens[q];
    if (q_len <= 0 || ctx < q_len ||
        ctx > static_cast<int64_t>(b.max_blocks_per_seq) * layout.block_size) {
      return InvalidArgumentError("forward: sequence " + std::to_string(q) +
                                  " has inconsistent query/context lengths");
    }
    const int used_blocks = (ctx + layout.block_size - 1) / layout.block_size;
    for (int j = 0; j < used_blocks; ++j) {
      const int32_t blk = b.block_tables[static_cast<size_t>(q) * b.max_blocks_per_seq + j];
      if (blk <= 0 || blk >= layout.num_blocks) {
        return InvalidArgumentError("forward: block id " + std::to_string(blk) +
                                    " outside the cache");
      }
    }
  }
  for (int32_t r : b.logits_rows) {
    if (r < 0 || r >= t) return InvalidArgumentError("forward: logits row out of range");
  }
  return Status::Ok();
}

StatusOr<std::span<const float>> Model::Forward(const ForwardBatch& b, float* kv_cache,
                                                const kernels::KvCacheLayout& layout) {
  KVMESH_RETURN_IF_ERROR(Validate(b, layout));
  const ModelConfig& c = config();
  const int64_t t = b.num_tokens();
  const int64_t hidden = c.hidden_size;
  const int64_t qkv_dim = c.qkv_dim();
  const int64_t q_dim = c.q_dim();
  const int64_t kv_dim = c.kv_dim();
  const int64_t inter = c.intermediate_size;
  const int s = b.num_seqs();
  kernels::Stream stream = nullptr;

  Grow(x_, t * hidden);
  Grow(h_, t * hidden);
  Grow(qkv_, t * qkv_dim);
  Grow(attn_, t * q_dim);
  Grow(gate_up_, t * 2 * inter);
  Grow(act_, t * inter);

  // Leading sequences with one query token take the decode kernel.
  int num_decode = 0;
  while (num_decode < s && b.cu_q_lens[num_decode + 1] - b.cu_q_lens[num_decode] == 1) {
    ++num_decode;
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int64_t block_stride = layout.block_stride();

  ops_.embedding_lookup(x_.data(), weights_->embed_tokens().data, b.tokens.data(), t, hidden,
                        c.vocab_size, stream);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_->layers()[l];
    ops_.rms_norm(h_.data(), x_.data(), w.input_layernorm.data, t, hidden, c.rms_norm_eps,
                  stream);
    ops_.linear(qkv_.data(), h_.data(), w.qkv_proj.data, w.qkv_bias.data, t, qkv_dim, hidden,
                stream);
    float* q = qkv_.data();
    float* k = qkv_.data() + q_dim;
    float* v = qkv_.data() + q_dim + kv_dim;
    ops_.apply_rope(q, qkv_dim, k, qkv_dim, b.positions.data(), t, c.num_attention_heads,
                    c.num_key_value_heads, c.head_dim, inv_freq_.data(), stream);
    float* k_cache = kv_cache + layout.layer_offset(l, 0);
    float* v_cache = kv_cache + layout.layer_offset(l, 1);
    ops_.write_kv_cache(k, qkv_dim, v, qkv_dim, k_cache, v_cache, block_stride,
                        b.slot_mapping.data(), t, c.num_key_value_heads, c.head_dim,
                        layout.block_size, stream);
    if (num_decode > 0) {
      ops_.paged_attention_decode(attn_.data(), q, qkv_dim, k_cache, v_cache, block_stride,
                                  b.block_tables.data(), b.max_blocks_per_seq,
                                  b.context_lens.data(), num_decode, c.num_attention_heads,
                                  c.num_key_value_heads, c.head_dim, layout.block_size, scale,
                                  stream);
    }
    if (num_decode < s) {
      // The prefill kernel sees sequences num_decode.. with row offsets relative to their first row.
      const int32_t row0 = b.cu_q_lens[num_decode];
      cu_rebased_.resize(s - num_decode + 1);
      for (int i = num_decode; i <= s; ++i) cu_rebased_[i - num_decode] = b.cu_q_lens[i] - row0;
      ops_.paged_attention_prefill(
          attn_.data() + row0 * q_dim, q + row0 * qkv_dim, qkv_dim, k_cache, v_cache,
          block_stride, b.block_tables.data() + static_cast<size_t>(num_decode) * b.max_blocks_per_seq,
          b.max_blocks_per_seq, cu_rebased_.data(), b.context_lens.data() + num_decode,
          s - num_decode, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
          layout.block_size, scale, stream);
    }
    ops_.linear(h_.data(), attn_.data(), w.o_proj.data, nullptr, t, hidden, q_dim, stream);
    ops_.add_in_place(x_.data(), h_.data(), t * hidden, stream);
    ops_.rms_norm(h_.data(), x_.data(), w.post_attention_layernorm.data, t, hidden,
                  c.rms_norm_eps, stream);
    ops_.linear(gate_up_.data(), h_.data(), w.gate_up_proj.data, nullptr, t, 2 * inter, hidden,
                stream);
    ops_.silu_and_mul(act_.data(), gate_up_.data(), t, inter, stream);
    ops_.linear(h_.data(), act_.data(), w.down_proj.data, nullptr, t, hidden, inter, stream);
    ops_.add_in_place(x_.data(), h_.data(), t * hidden, stream);
  }

  const int64_t r = static_cast<int64_t>(b.logits_rows.size());
  Grow(rows_, r * hidden);
  Grow(logits_, r * c.vocab_size);
  for (int64_t i = 0; i < r; ++i) {
    const float* src = x_.data() + static_cast<int64_t>(b.logits_rows[i]) * hidden;
    std::copy(src, src + hidden, rows_.data() + i * hidden);
  }
  if (r > 0) {
    ops_.rms_norm(rows_.data(), rows_.data(), weights_->norm().data, r, hidden, c.rms_norm_eps,
                  stream);
    ops_.linear(logits_.data(), rows_.data(), weights_->lm_head().data, nullptr, r, c.vocab_size,
                hidden, stream);
  }
  return std::span<const float>(logits_.data(), static_cast<size_t>(r * c.vocab_size));
}

}  // namespace kvmesh::engine
