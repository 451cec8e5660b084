// Model: the Llama-family decoder forward pass over a batch of sequences whose KV lives in the
// paged, block-major cache (kernels/backend.h). One call runs every layer for all scheduled
// tokens — decode tokens and prefill chunks mixed — writes their K/V into the cache and returns
// logits for the requested rows.
//
// Batch layout (ForwardBatch): the scheduled tokens of all sequences are flattened; sequence s owns
// rows [cu_q_lens[s], cu_q_lens[s+1]), which are the last q_len of its first context_lens[s]
// tokens. Sequences whose q_len is 1 and that come first use the decode attention kernel; the rest
// use the prefill kernel (chunked, over a cached prefix). The layer loop is written per layer with
// all weights of a layer in LayerWeights so that a tensor-parallel split can shard qkv/gate_up by
// rows and o/down by columns later.
//
// Thread safety: none; one engine thread calls Forward. Workspaces grow on demand and are reused.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "agent/engine/kernel_ops.h"
#include "agent/engine/model_weights.h"
#include "common/status.h"
#include "kernels/backend.h"

namespace kvmesh::engine {

struct ForwardBatch {
  std::vector<int32_t> tokens;        // [T]
  std::vector<int32_t> positions;     // [T]
  std::vector<int64_t> slot_mapping;  // [T]: block * block_size + offset
  std::vector<int32_t> cu_q_lens;     // [S + 1]
  std::vector<int32_t> context_lens;  // [S]: tokens with KV in the cache after this step
  std::vector<int32_t> block_tables;  // [S * max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  std::vector<int32_t> logits_rows;   // token rows whose logits are wanted

  int num_seqs() const { return static_cast<int>(context_lens.size()); }
  int num_tokens() const { return static_cast<int>(tokens.size()); }
  void Clear();
};

class Model {
 public:
  Model(std::shared_ptr<const ModelWeights> weights, KernelOps ops);

  const ModelConfig& config() const { return weights_->config(); }
  const ModelWeights& weights() const { return *weights_; }
  const KernelOps& ops() const { return ops_; }

  // Validates the batch against the cache layout (InvalidArgument naming the bad field: token id
  // out of vocab, position past max_position_embeddings, slot or block outside the cache,
  // inconsistent lengths), then runs the forward pass. Returns logits
  // [batch.logits_rows.size(), vocab_size], valid until the next call.
  StatusOr<std::span<const float>> Forward(const ForwardBatch& batch, float* kv_cache,
                                           const kernels::KvCacheLayout& layout);

  // The layout a cache of `num_blocks` blocks of `block_size` tokens needs for this model.
  kernels::KvCacheLayout CacheLayout(int num_blocks, int block_size) const;

 private:
  Status Validate(const ForwardBatch& batch, const kernels::KvCacheLayout& layout) const;

  std::shared_ptr<const ModelWeights> weights_;
  KernelOps ops_;
  std::vector<float> inv_freq_;
  // Workspaces, grown on demand.
  std::vector<float> x_, h_, qkv_, attn_, gate_up_, act_, rows_, logits_;
  std::vector<int32_t> cu_rebased_;
};

}  // namespace kvmesh::engine
