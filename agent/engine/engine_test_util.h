// Test helpers: writes small random-weight Llama-family model folders (config.json +
// model.safetensors) with chosen shapes, so tests cover GQA ratios, Qwen2 bias, tied/untied
// embeddings and rope scaling without the presets. Header-only; used by *_test.cc only.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/engine/safetensors.h"

namespace kvmesh::engine::test_util {

struct TestModelSpec {
  std::string architecture = "LlamaForCausalLM";
  std::string model_type = "llama";
  int vocab = 97;
  int hidden = 64;
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int head_dim = 16;
  int inter = 96;
  int max_pos = 512;
  float theta = 10000.0f;
  bool llama3_scaling = false;
  bool tied = true;
  bool bias = false;  // q/k/v bias (Qwen2)
  bool bf16 = false;  // store weights as bf16
  int eos = 2;
  uint64_t seed = 7;
};

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kvmesh_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteTestModel(const TestModelSpec& s, const std::string& dir) {
  nlohmann::json cfg = {
      {"architectures", {s.architecture}},
      {"model_type", s.model_type},
      {"vocab_size", s.vocab},
      {"hidden_size", s.hidden},
      {"intermediate_size", s.inter},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},
      {"head_dim", s.head_dim},
      {"max_position_embeddings", s.max_pos},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", s.theta},
      {"tie_word_embeddings", s.tied},
      {"bos_token_id", 1},
      {"eos_token_id", s.eos},
      {"torch_dtype", s.bf16 ? "bfloat16" : "float32"},
  };
  if (s.model_type != "qwen2") cfg["attention_bias"] = s.bias;
  if (s.llama3_scaling) {
    cfg["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 64}};
  }
  std::ofstream(dir + "/config.json") << cfg.dump(2);

  std::mt19937_64 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float stddev, float mean) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = mean + stddev * normal(rng);
    if (s.bf16) {
      (void)w.AddBf16(name, shape, v);
    } else {
      (void)w.AddF32(name, shape, v);
    }
  };
  const int64_t q = int64_t{s.heads} * s.head_dim, kv = int64_t{s.kv_heads} * s.head_dim;
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, 1.0f, 0.0f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const float ws = 1.0f / std::sqrt(static_cast<float>(s.hidden));
    add(p + "input_layernorm.weight", {s.hidden}, 0.1f, 1.0f);
    add(p + "self_attn.q_proj.weight", {q, s.hidden}, ws, 0.0f);
    add(p + "self_attn.k_proj.weight", {kv, s.hidden}, ws, 0.0f);
    add(p + "self_attn.v_proj.weight", {kv, s.hidden}, ws, 0.0f);
    if (s.bias || s.model_type == "qwen2") {
      add(p + "self_attn.q_proj.bias", {q}, 0.1f, 0.0f);
      add(p + "self_attn.k_proj.bias", {kv}, 0.1f, 0.0f);
      add(p + "self_attn.v_proj.bias", {kv}, 0.1f, 0.0f);
    }
    add(p + "self_attn.o_proj.weight", {s.hidden, q}, 1.0f / std::sqrt(static_cast<float>(q)), 0.0f);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0.1f, 1.0f);
    add(p + "mlp.gate_proj.weight", {s.inter, s.hidden}, ws, 0.0f);
    add(p + "mlp.up_proj.weight", {s.inter, s.hidden}, ws, 0.0f);
    add(p + "mlp.down_proj.weight", {s.hidden, s.inter}, 1.0f / std::sqrt(static_cast<float>(s.inter)), 0.0f);
  }
  add("model.norm.weight", {s.hidden}, 0.1f, 1.0f);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden}, 1.0f / std::sqrt(static_cast<float>(s.hidden)), 0.0f);
  (void)w.Write(dir + "/model.safetensors");
}

}  // namespace kvmesh::engine::test_util
