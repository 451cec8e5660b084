// ModelWeights: a Llama-family checkpoint loaded from a Hugging Face folder (config.json +
// model.safetensors, or model.safetensors.index.json + shards), memory-mapped, validated, and
// converted to fp32 in the layout the engine computes with:
//  - q/k/v projections fused into one [q_dim + 2 * kv_dim, hidden] matrix (rows: q, then k, then v)
//    and, when the model has attention bias, one fused [q_dim + 2 * kv_dim] bias;
//  - gate/up fused into one [2 * intermediate, hidden] matrix (rows: gate, then up);
//  - lm_head aliases embed_tokens when the embeddings are tied (or lm_head.weight is absent and
//    tie_word_embeddings is true).
// Every buffer is 64-byte aligned fp32 owned by this object (bf16/fp16/fp32 on disk).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/engine/model_config.h"
#include "common/status.h"

namespace kvmesh::engine {

struct WeightTensor {
  const float* data = nullptr;  // nullptr when absent (e.g. no bias)
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = data ? 1 : 0;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct LayerWeights {
  WeightTensor input_layernorm;           // [hidden]
  WeightTensor qkv_proj;                  // [q_dim + 2 * kv_dim, hidden]
  WeightTensor qkv_bias;                  // [q_dim + 2 * kv_dim] or absent
  WeightTensor o_proj;                    // [hidden, q_dim]
  WeightTensor post_attention_layernorm;  // [hidden]
  WeightTensor gate_up_proj;              // [2 * intermediate, hidden]
  WeightTensor down_proj;                 // [hidden, intermediate]
};

class ModelWeights {
 public:
  // Loads `dir`. Errors name the file and the problem: missing config.json / weights, unsupported
  // architecture or dtype, malformed or lying safetensors headers (header length past the file,
  // offsets past the end, overlapping or misordered ranges, sizes that do not match shape x dtype),
  // missing tensors and wrong shapes (naming the tensor and both shapes). Never crashes on bad files.
  static StatusOr<std::unique_ptr<ModelWeights>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const WeightTensor& embed_tokens() const { return embed_tokens_; }  // [vocab, hidden]
  const WeightTensor& norm() const { return norm_; }                  // [hidden]
  const WeightTensor& lm_head() const { return lm_head_; }            // [vocab, hidden]
  const std::vector<LayerWeights>& layers() const { return layers_; }
  int64_t num_parameters() const { return num_parameters_; }  // as in the checkpoint (tied once)
  int64_t bytes_fp32() const { return bytes_fp32_; }          // bytes of the fp32 buffers

 private:
  ModelWeights() = default;
  struct Buffer;  // aligned fp32 allocation
  ModelConfig config_;
  WeightTensor embed_tokens_;
  WeightTensor norm_;
  WeightTensor lm_head_;
  std::vector<LayerWeights> layers_;
  std::vector<std::unique_ptr<float[], void (*)(float*)>> buffers_;
  int64_t num_parameters_ = 0;
  int64_t bytes_fp32_ = 0;
};

}  // namespace kvmesh::engine
