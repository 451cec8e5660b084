// ModelConfig: the subset of a Hugging Face `config.json` the Llama-family decoder needs
// (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/rope.h"

namespace kvmesh::engine {

struct ModelConfig {
  std::string architecture;  // architectures[0]
  std::string model_type;    // "llama" | "mistral" | "qwen2"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;  // defaults to num_attention_heads
  int head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  kernels::RopeScaling rope_scaling;  // type "" when config.json has none
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2: always true)
  int bos_token_id = -1;        // -1 = none
  std::vector<int> eos_token_ids;  // config.json eos_token_id (int or list)
  std::string torch_dtype;      // informational: "bfloat16" | "float16" | "float32"

  // Parses config.json text. `file` names the file in errors. InvalidArgument naming the field for
  // missing/mistyped/out-of-range fields, inconsistent head counts (heads % kv_heads != 0, odd
  // head_dim), and Unimplemented for an unsupported architecture or model_type.
  static StatusOr<ModelConfig> Parse(std::string_view json_text, std::string_view file);
  // Reads and parses `path`.
  static StatusOr<ModelConfig> Load(const std::string& path);

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

}  // namespace kvmesh::engine
