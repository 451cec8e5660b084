#include "agent/engine/model_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace kvmesh::engine {
namespace {

using json = nlohmann::json;

// Llama-3.2-1B's config.json (abridged only of fields kvmesh ignores).
json Llama32() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "vocab_size": 128256})");
}

json Mistral7B() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "vocab_size": 32768})");
}

json Qwen25() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
    "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
    "vocab_size": 151936})");
}

StatusOr<ModelConfig> P(const json& j) { return ModelConfig::Parse(j.dump(), "config.json"); }

void ExpectError(const json& j, StatusCode code, const std::string& fragment) {
  auto c = P(j);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), code) << c.status().ToString();
  EXPECT_NE(c.status().message().find(fragment), std::string::npos) << c.status().ToString();
  EXPECT_NE(c.status().message().find("config.json"), std::string::npos) << c.status().ToString();
}

TEST(ModelConfigTest, Llama32WithLlama3Rope) {
  auto c = P(Llama32());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->q_dim(), 2048);
  EXPECT_EQ(c->kv_dim(), 512);
  EXPECT_EQ(c->qkv_dim(), 3072);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 32.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, MistralDefaultsAndIntEos) {
  auto c = P(Mistral7B());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "mistral");
  EXPECT_EQ(c->head_dim, 128);  // hidden / heads
  EXPECT_EQ(c->rope_scaling.type, "");
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{2});
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
}

TEST(ModelConfigTest, Qwen2HasAttentionBiasAndIgnoresDisabledSlidingWindow) {
  auto c = P(Qwen25());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "qwen2");
  EXPECT_TRUE(c->attention_bias);  // not in config.json: implied by Qwen2
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_key_value_heads, 2);
}

TEST(ModelConfigTest, Defaults) {
  json j = Mistral7B();
  j.erase("num_key_value_heads");
  j.erase("rms_norm_eps");
  j.erase("rope_theta");
  j.erase("tie_word_embeddings");
  j.erase("eos_token_id");
  j.erase("bos_token_id");
  j.erase("torch_dtype");
  j["dtype"] = "float16";  // newer transformers
  auto c = P(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->torch_dtype, "float16");
}

TEST(ModelConfigTest, RopeScalingVariants) {
  json j = Llama32();
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(P(j)->rope_scaling.type, "");
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(P(j)->rope_scaling.type, "");
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = P(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope_scaling.type, "linear");
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 2.0f);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  ExpectError(j, StatusCode::kUnimplemented, "yarn");
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
  ExpectError(j, StatusCode::kUnimplemented, "dynamic");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  ExpectError(j, StatusCode::kInvalidArgument, "rope_scaling.low_freq_factor");
  j["rope_scaling"] = {{"factor", 8.0}};
  ExpectError(j, StatusCode::kInvalidArgument, "rope_type");
  j["rope_scaling"] = "llama3";
  ExpectError(j, StatusCode::kInvalidArgument, "rope_scaling");
}

TEST(ModelConfigTest, SlidingWindow) {
  json j = Mistral7B();
  j["sliding_window"] = 32768;  // covers every position: ignored
  EXPECT_TRUE(P(j).ok());
  j["sliding_window"] = 4096;
  ExpectError(j, StatusCode::kUnimplemented, "sliding window attention");
  json q = Qwen25();
  q["use_sliding_window"] = true;
  q["sliding_window"] = 4096;
  ExpectError(q, StatusCode::kUnimplemented, "sliding window attention");
}

TEST(ModelConfigTest, UnsupportedArchitectureAndModelType) {
  json j = Llama32();
  j["architectures"] = {"GPT2LMHeadModel"};
  ExpectError(j, StatusCode::kUnimplemented, "GPT2LMHeadModel");
  j = Llama32();
  j["model_type"] = "gemma";
  ExpectError(j, StatusCode::kUnimplemented, "gemma");
  j = Llama32();
  j["hidden_act"] = "gelu";
  ExpectError(j, StatusCode::kUnimplemented, "gelu");
  j = Llama32();
  j.erase("architectures");
  ExpectError(j, StatusCode::kInvalidArgument, "architectures");
}

TEST(ModelConfigTest, FieldErrorsNameTheField) {
  json j = Llama32();
  j.erase("hidden_size");
  ExpectError(j, StatusCode::kInvalidArgument, "hidden_size");
  j = Llama32();
  j["vocab_size"] = "big";
  ExpectError(j, StatusCode::kInvalidArgument, "vocab_size");
  j = Llama32();
  j["num_hidden_layers"] = 0;
  ExpectError(j, StatusCode::kInvalidArgument, "num_hidden_layers");
  j = Llama32();
  j["intermediate_size"] = 1.5;
  ExpectError(j, StatusCode::kInvalidArgument, "intermediate_size");
  j = Llama32();
  j["rms_norm_eps"] = -1;
  ExpectError(j, StatusCode::kInvalidArgument, "rms_norm_eps");
  j = Llama32();
  j["tie_word_embeddings"] = "yes";
  ExpectError(j, StatusCode::kInvalidArgument, "tie_word_embeddings");
  j = Llama32();
  j["eos_token_id"] = {1, -2};
  ExpectError(j, StatusCode::kInvalidArgument, "eos_token_id[1]");
  j = Llama32();
  j["eos_token_id"] = 999999;
  ExpectError(j, StatusCode::kInvalidArgument, "outside the vocabulary");
}

TEST(ModelConfigTest, InconsistentHeads) {
  json j = Llama32();
  j["num_key_value_heads"] = 5;
  ExpectError(j, StatusCode::kInvalidArgument, "num_key_value_heads");
  j = Llama32();
  j["head_dim"] = 63;
  ExpectError(j, StatusCode::kInvalidArgument, "even");
  j = Mistral7B();
  j["num_attention_heads"] = 30;  // 4096 % 30 != 0 and no head_dim
  j["num_key_value_heads"] = 10;
  ExpectError(j, StatusCode::kInvalidArgument, "divisible");
}

TEST(ModelConfigTest, MalformedJsonAndLoad) {
  auto c = ModelConfig::Parse("{\"architectures\": [", "x/config.json");
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("x/config.json"), std::string::npos);
  EXPECT_EQ(ModelConfig::Parse("[1]", "config.json").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelConfig::Load("/nonexistent/kvmesh/config.json").status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvmesh::engine
