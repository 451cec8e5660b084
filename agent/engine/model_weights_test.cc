#include "agent/engine/model_weights.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/engine/engine_test_util.h"
#include "agent/engine/safetensors.h"

namespace kvmesh::engine {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test_util::TempDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A micro Llama: hidden 8, 2 layers, 4 heads of 2 dims, 2 kv heads, intermediate 12, vocab 16.
struct Micro {
  json config = json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
    "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 64, "vocab_size": 16,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "torch_dtype": "float32"})");
  // name -> (shape, values); values are distinct per tensor so misplacement shows.
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;

  void Add(const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    const float base = static_cast<float>(tensors.size() + 1);
    for (int64_t i = 0; i < n; ++i) v[i] = base + static_cast<float>(i) / 1024.0f;
    tensors[name] = {std::move(shape), std::move(v)};
  }

  explicit Micro(bool bias = false) {
    if (bias) {
      config["architectures"] = {"Qwen2ForCausalLM"};
      config["model_type"] = "qwen2";
    }
    Add("model.embed_tokens.weight", {16, 8});
    Add("model.norm.weight", {8});
    Add("lm_head.weight", {16, 8});
    for (int i = 0; i < 2; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      Add(p + "input_layernorm.weight", {8});
      Add(p + "self_attn.q_proj.weight", {8, 8});
      Add(p + "self_attn.k_proj.weight", {4, 8});
      Add(p + "self_attn.v_proj.weight", {4, 8});
      if (bias) {
        Add(p + "self_attn.q_proj.bias", {8});
        Add(p + "self_attn.k_proj.bias", {4});
        Add(p + "self_attn.v_proj.bias", {4});
      }
      Add(p + "self_attn.o_proj.weight", {8, 8});
      Add(p + "post_attention_layernorm.weight", {8});
      Add(p + "mlp.gate_proj.weight", {12, 8});
      Add(p + "mlp.up_proj.weight", {12, 8});
      Add(p + "mlp.down_proj.weight", {8, 12});
    }
  }

  // Writes config.json + model.safetensors (or, with `shards` > 1, that many shards + index).
  void Write(const std::string& dir, bool bf16 = false, int shards = 1) const {
    WriteText(dir + "/config.json", config.dump());
    std::vector<SafetensorsWriter> w(shards);
    json weight_map = json::object();
    int i = 0;
    for (const auto& [name, t] : tensors) {
      const int s = i++ % shards;
      Status st =
          bf16 ? w[s].AddBf16(name, t.first, t.second) : w[s].AddF32(name, t.first, t.second);
      ASSERT_TRUE(st.ok()) << st.ToString();
      weight_map[name] = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                         std::to_string(shards) + ".safetensors";
    }
    if (shards == 1) {
      ASSERT_TRUE(w[0].Write(dir + "/model.safetensors").ok());
      return;
    }
    for (int s = 0; s < shards; ++s) {
      ASSERT_TRUE(w[s].Write(dir + "/model-0000" + std::to_string(s + 1) + "-of-0000" +
                             std::to_string(shards) + ".safetensors")
                      .ok());
    }
    WriteText(dir + "/model.safetensors.index.json", json({{"weight_map", weight_map}}).dump());
  }

  const std::vector<float>& V(const std::string& name) const { return tensors.at(name).second; }
};

std::vector<float> Rows(const WeightTensor& t, int64_t row_begin, int64_t row_end) {
  const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
  return std::vector<float>(t.data + row_begin * cols, t.data + row_end * cols);
}

bool Aligned64(const float* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

TEST(ModelWeightsTest, LoadsAndFusesMicroLlama) {
  TempDir dir;
  Micro m;
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelWeights& mw = **w;
  EXPECT_EQ(mw.config().qkv_dim(), 16);
  ASSERT_EQ(mw.layers().size(), 2u);
  EXPECT_EQ(mw.embed_tokens().shape, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(std::vector<float>(mw.embed_tokens().data, mw.embed_tokens().data + 128),
            m.V("model.embed_tokens.weight"));
  EXPECT_NE(mw.lm_head().data, mw.embed_tokens().data);
  EXPECT_EQ(Rows(mw.lm_head(), 0, 16), m.V("lm_head.weight"));
  EXPECT_EQ(Rows(mw.norm(), 0, 8), m.V("model.norm.weight"));
  int64_t params = 0;
  for (const auto& [name, t] : m.tensors) params += static_cast<int64_t>(t.second.size());
  EXPECT_EQ(mw.num_parameters(), params);
  EXPECT_EQ(mw.bytes_fp32(), params * 4);
  for (int i = 0; i < 2; ++i) {
    const LayerWeights& L = mw.layers()[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    EXPECT_EQ(L.qkv_proj.shape, (std::vector<int64_t>{16, 8}));
    EXPECT_EQ(Rows(L.qkv_proj, 0, 8), m.V(p + "self_attn.q_proj.weight"));
    EXPECT_EQ(Rows(L.qkv_proj, 8, 12), m.V(p + "self_attn.k_proj.weight"));
    EXPECT_EQ(Rows(L.qkv_proj, 12, 16), m.V(p + "self_attn.v_proj.weight"));
    EXPECT_EQ(L.qkv_bias.data, nullptr);
    EXPECT_EQ(L.qkv_bias.numel(), 0);
    EXPECT_EQ(L.gate_up_proj.shape, (std::vector<int64_t>{24, 8}));
    EXPECT_EQ(Rows(L.gate_up_proj, 0, 12), m.V(p + "mlp.gate_proj.weight"));
    EXPECT_EQ(Rows(L.gate_up_proj, 12, 24), m.V(p + "mlp.up_proj.weight"));
    EXPECT_EQ(Rows(L.o_proj, 0, 8), m.V(p + "self_attn.o_proj.weight"));
    EXPECT_EQ(L.down_proj.shape, (std::vector<int64_t>{8, 12}));
    EXPECT_EQ(Rows(L.down_proj, 0, 8), m.V(p + "mlp.down_proj.weight"));
    EXPECT_EQ(Rows(L.input_layernorm, 0, 8), m.V(p + "input_layernorm.weight"));
    EXPECT_EQ(Rows(L.post_attention_layernorm, 0, 8), m.V(p + "post_attention_layernorm.weight"));
    for (const WeightTensor* t : {&L.qkv_proj, &L.o_proj, &L.gate_up_proj, &L.down_proj,
                                  &L.input_layernorm, &L.post_attention_layernorm}) {
      EXPECT_TRUE(Aligned64(t->data));
    }
  }
}

TEST(ModelWeightsTest, TiedEmbeddingsAliasAndIgnoreRedundantLmHead) {
  TempDir dir;
  Micro m;
  m.config["tie_word_embeddings"] = true;
  m.Add("model.layers.0.self_attn.rotary_emb.inv_freq", {1});
  m.Write(dir.path());  // still holds lm_head.weight: ignored when tied
  auto w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->lm_head().data, (*w)->embed_tokens().data);
  EXPECT_EQ((*w)->lm_head().shape, (std::vector<int64_t>{16, 8}));

  TempDir dir2;
  m.tensors.erase("lm_head.weight");
  m.Write(dir2.path());
  auto w2 = ModelWeights::Load(dir2.path());
  ASSERT_TRUE(w2.ok()) << w2.status().ToString();
  EXPECT_EQ((*w2)->lm_head().data, (*w2)->embed_tokens().data);
}

TEST(ModelWeightsTest, Qwen2BiasIsFused) {
  TempDir dir;
  Micro m(/*bias=*/true);
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const LayerWeights& L = (*w)->layers()[1];
  ASSERT_NE(L.qkv_bias.data, nullptr);
  EXPECT_EQ(L.qkv_bias.shape, std::vector<int64_t>{16});
  std::vector<float> want = m.V("model.layers.1.self_attn.q_proj.bias");
  for (const char* n : {"k_proj", "v_proj"}) {
    const auto& v = m.V(std::string("model.layers.1.self_attn.") + n + ".bias");
    want.insert(want.end(), v.begin(), v.end());
  }
  EXPECT_EQ(std::vector<float>(L.qkv_bias.data, L.qkv_bias.data + 16), want);
}

TEST(ModelWeightsTest, Bf16CheckpointConvertsToFp32) {
  TempDir dir;
  Micro m;
  m.Write(dir.path(), /*bf16=*/true);
  auto w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const auto& src = m.V("model.embed_tokens.weight");
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ((*w)->embed_tokens().data[i], Bf16ToFloat(FloatToBf16(src[i]))) << i;
  }
}

TEST(ModelWeightsTest, ShardedLoadEqualsSingleFile) {
  TempDir one, three;
  Micro m(/*bias=*/true);
  m.Write(one.path());
  m.Write(three.path(), false, /*shards=*/3);
  ASSERT_FALSE(fs::exists(three.path() + "/model.safetensors"));
  auto a = ModelWeights::Load(one.path());
  auto b = ModelWeights::Load(three.path());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto same = [](const WeightTensor& x, const WeightTensor& y) {
    return x.shape == y.shape && x.numel() == y.numel() &&
           (x.numel() == 0 || std::memcmp(x.data, y.data, x.numel() * 4) == 0);
  };
  EXPECT_TRUE(same((*a)->embed_tokens(), (*b)->embed_tokens()));
  EXPECT_TRUE(same((*a)->lm_head(), (*b)->lm_head()));
  EXPECT_TRUE(same((*a)->norm(), (*b)->norm()));
  for (size_t i = 0; i < 2; ++i) {
    const auto &x = (*a)->layers()[i], &y = (*b)->layers()[i];
    EXPECT_TRUE(same(x.qkv_proj, y.qkv_proj));
    EXPECT_TRUE(same(x.qkv_bias, y.qkv_bias));
    EXPECT_TRUE(same(x.o_proj, y.o_proj));
    EXPECT_TRUE(same(x.gate_up_proj, y.gate_up_proj));
    EXPECT_TRUE(same(x.down_proj, y.down_proj));
    EXPECT_TRUE(same(x.input_layernorm, y.input_layernorm));
    EXPECT_TRUE(same(x.post_attention_layernorm, y.post_attention_layernorm));
  }
  EXPECT_EQ((*a)->num_parameters(), (*b)->num_parameters());
}

TEST(ModelWeightsTest, MissingTensorIsNamed) {
  TempDir dir;
  Micro m;
  m.tensors.erase("model.layers.1.mlp.up_proj.weight");
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("missing tensor 'model.layers.1.mlp.up_proj.weight'"),
            std::string::npos)
      << w.status().message();
}

TEST(ModelWeightsTest, MissingBiasForQwen2IsNamed) {
  TempDir dir;
  Micro m(/*bias=*/true);
  m.tensors.erase("model.layers.0.self_attn.k_proj.bias");
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  EXPECT_NE(w.status().message().find("model.layers.0.self_attn.k_proj.bias"), std::string::npos)
      << w.status().message();
}

TEST(ModelWeightsTest, WrongShapeNamesTensorAndBothShapes) {
  TempDir dir;
  Micro m;
  m.Add("model.layers.0.self_attn.k_proj.weight", {8, 4});
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  const std::string msg = w.status().message();
  EXPECT_NE(msg.find("'model.layers.0.self_attn.k_proj.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[8, 4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected [4, 8]"), std::string::npos) << msg;
}

TEST(ModelWeightsTest, UnsupportedArchitecture) {
  TempDir dir;
  Micro m;
  m.config["architectures"] = {"FalconForCausalLM"};
  m.Write(dir.path());
  auto w = ModelWeights::Load(dir.path());
  EXPECT_EQ(w.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(w.status().message().find("FalconForCausalLM"), std::string::npos);
}

TEST(ModelWeightsTest, MissingFilesAndCorruptWeights) {
  TempDir dir;
  EXPECT_EQ(ModelWeights::Load(dir.path()).status().code(), StatusCode::kNotFound);  // no config
  Micro m;
  WriteText(dir.path() + "/config.json", m.config.dump());
  EXPECT_EQ(ModelWeights::Load(dir.path()).status().code(), StatusCode::kNotFound);  // no weights
  m.Write(dir.path());
  // Truncate the weights: the header now lies about the data section.
  fs::resize_file(dir.path() + "/model.safetensors",
                  fs::file_size(dir.path() + "/model.safetensors") - 4);
  auto w = ModelWeights::Load(dir.path());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("model.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::engine
