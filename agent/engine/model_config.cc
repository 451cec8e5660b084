#include "agent/engine/model_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace kvmesh::engine {
namespace {

using json = nlohmann::json;

class Reader {
 public:
  Reader(const json& doc, std::string_view file) : doc_(doc), where_(std::string(file) + ": ") {}

  Status Bad(const std::string& what) const { return InvalidArgumentError(where_ + what); }
  Status Unsupported(const std::string& what) const { return UnimplementedError(where_ + what); }

  const json* Get(const char* key) const {
    auto it = doc_.find(key);
    return it == doc_.end() || it->is_null() ? nullptr : &*it;
  }

  // A positive int field; `fallback` when absent (required when fallback < 0).
  StatusOr<int> PositiveInt(const char* key, int fallback = -1) const {
    const json* v = Get(key);
    if (v == nullptr) {
      if (fallback < 0) return Bad("missing required field \"" + std::string(key) + "\"");
      return fallback;
    }
    if (!v->is_number_integer()) {
      return Bad("field \"" + std::string(key) + "\" must be an integer, got " + v->dump());
    }
    const int64_t x = v->get<int64_t>();
    if (x <= 0 || x > std::numeric_limits<int>::max()) {
      return Bad("field \"" + std::string(key) + "\" must be in [1, 2147483647], got " +
                 std::to_string(x));
    }
    return static_cast<int>(x);
  }

  StatusOr<float> PositiveNumber(const char* key, float fallback, const json* obj = nullptr,
                                 const std::string& prefix = "") const {
    const json& o = obj ? *obj : doc_;
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) {
      if (fallback < 0) return Bad("missing required field \"" + prefix + key + "\"");
      return fallback;
    }
    if (!it->is_number()) {
      return Bad("field \"" + prefix + key + "\" must be a number, got " + it->dump());
    }
    const double x = it->get<double>();
    if (!(x > 0) || !std::isfinite(x) || x > std::numeric_limits<float>::max()) {
      return Bad("field \"" + prefix + key + "\" must be a positive finite number, got " +
                 it->dump());
    }
    return static_cast<float>(x);
  }

  StatusOr<bool> Bool(const char* key, bool fallback) const {
    const json* v = Get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean())
      return Bad("field \"" + std::string(key) + "\" must be true or false, got " + v->dump());
    return v->get<bool>();
  }

  StatusOr<int> TokenId(const json& v, const std::string& key) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int>::max()) {
      return Bad("field \"" + key + "\" must be a non-negative integer token id, got " + v.dump());
    }
    return static_cast<int>(v.get<int64_t>());
  }

 private:
  const json& doc_;
  std::string where_;
};

bool IsSupportedArchitecture(const std::string& a) {
  return a == "LlamaForCausalLM" || a == "MistralForCausalLM" || a == "Qwen2ForCausalLM";
}

Status ParseRopeScaling(const Reader& r, const json* rs, kernels::RopeScaling* out) {
  *out = kernels::RopeScaling{};
  if (rs == nullptr) return Status::Ok();
  if (!rs->is_object())
    return r.Bad("field \"rope_scaling\" must be an object or null, got " + rs->dump());
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = rs->find(key);
    if (it != rs->end() && !it->is_null()) {
      if (!it->is_string())
        return r.Bad("field \"rope_scaling." + std::string(key) + "\" must be a string");
      type = it->get<std::string>();
      break;
    }
  }
  if (type.empty()) return r.Bad("field \"rope_scaling\" has no \"rope_type\" (or \"type\")");
  if (type == "default") return Status::Ok();
  if (type != "llama3" && type != "linear") {
    return r.Unsupported("rope_scaling type \"" + type +
                         "\" is not supported (supported: default, linear, llama3)");
  }
  out->type = type;
  KVMESH_ASSIGN_OR_RETURN(out->factor, r.PositiveNumber("factor", -1, rs, "rope_scaling."));
  if (type == "llama3") {
    KVMESH_ASSIGN_OR_RETURN(out->low_freq_factor,
                            r.PositiveNumber("low_freq_factor", -1, rs, "rope_scaling."));
    KVMESH_ASSIGN_OR_RETURN(out->high_freq_factor,
                            r.PositiveNumber("high_freq_factor", -1, rs, "rope_scaling."));
    KVMESH_ASSIGN_OR_RETURN(
        float orig, r.PositiveNumber("original_max_position_embeddings", -1, rs, "rope_scaling."));
    if (orig != std::floor(orig) || orig > 1e9f) {
      return r.Bad("field \"rope_scaling.original_max_position_embeddings\" must be an integer");
    }
    out->original_max_position_embeddings = static_cast<int>(orig);
    if (out->high_freq_factor <= out->low_freq_factor) {
      return r.Bad("rope_scaling.high_freq_factor (" + std::to_string(out->high_freq_factor) +
                   ") must be greater than low_freq_factor (" +
                   std::to_string(out->low_freq_factor) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<ModelConfig> ModelConfig::Parse(std::string_view json_text, std::string_view file) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    return InvalidArgumentError(std::string(file) + ": malformed JSON: " + what);
  }
  if (!doc.is_object()) {
    return InvalidArgumentError(std::string(file) + ": expected a JSON object, got " +
                                doc.type_name());
  }
  Reader r(doc, file);
  ModelConfig c;

  const json* archs = r.Get("architectures");
  if (archs == nullptr || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return r.Bad("field \"architectures\" must be a non-empty list of strings");
  }
  c.architecture = (*archs)[0].get<std::string>();
  if (!IsSupportedArchitecture(c.architecture)) {
    return r.Unsupported("architecture \"" + c.architecture +
                         "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
                         "Qwen2ForCausalLM)");
  }
  const json* mt = r.Get("model_type");
  if (mt == nullptr || !mt->is_string()) return r.Bad("field \"model_type\" must be a string");
  c.model_type = mt->get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return r.Unsupported("model_type \"" + c.model_type +
                         "\" is not supported (supported: llama, mistral, qwen2)");
  }

  KVMESH_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  KVMESH_ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size"));
  KVMESH_ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size"));
  KVMESH_ASSIGN_OR_RETURN(c.num_hidden_layers, r.PositiveInt("num_hidden_layers"));
  KVMESH_ASSIGN_OR_RETURN(c.num_attention_heads, r.PositiveInt("num_attention_heads"));
  KVMESH_ASSIGN_OR_RETURN(c.num_key_value_heads,
                          r.PositiveInt("num_key_value_heads", c.num_attention_heads));
  if (r.Get("head_dim") != nullptr) {
    KVMESH_ASSIGN_OR_RETURN(c.head_dim, r.PositiveInt("head_dim"));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return r.Bad("hidden_size " + std::to_string(c.hidden_size) +
                   " is not divisible by num_attention_heads " +
                   std::to_string(c.num_attention_heads) + " and no head_dim is given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return r.Bad("num_attention_heads " + std::to_string(c.num_attention_heads) +
                 " is not a multiple of num_key_value_heads " +
                 std::to_string(c.num_key_value_heads));
  }
  if (c.head_dim % 2 != 0) {
    return r.Bad("head_dim " + std::to_string(c.head_dim) + " must be even (rotary embedding)");
  }
  if (static_cast<int64_t>(c.head_dim) * c.num_attention_heads >
      std::numeric_limits<int>::max() / 4) {
    return r.Bad("head_dim x num_attention_heads is too large");
  }
  KVMESH_ASSIGN_OR_RETURN(c.max_position_embeddings, r.PositiveInt("max_position_embeddings"));
  KVMESH_ASSIGN_OR_RETURN(c.rms_norm_eps, r.PositiveNumber("rms_norm_eps", 1e-6f));
  KVMESH_ASSIGN_OR_RETURN(c.rope_theta, r.PositiveNumber("rope_theta", 10000.0f));
  KVMESH_RETURN_IF_ERROR(ParseRopeScaling(r, r.Get("rope_scaling"), &c.rope_scaling));
  KVMESH_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  KVMESH_ASSIGN_OR_RETURN(c.attention_bias, r.Bool("attention_bias", false));
  if (c.model_type == "qwen2") c.attention_bias = true;
  KVMESH_ASSIGN_OR_RETURN(bool mlp_bias, r.Bool("mlp_bias", false));
  if (mlp_bias) return r.Unsupported("mlp_bias true is not supported");

  if (const json* act = r.Get("hidden_act"); act != nullptr) {
    if (!act->is_string()) return r.Bad("field \"hidden_act\" must be a string");
    if (*act != "silu") {
      return r.Unsupported("hidden_act \"" + act->get<std::string>() +
                           "\" is not supported (supported: silu)");
    }
  }

  // Sliding-window attention: ignored when disabled or when the window covers every position.
  KVMESH_ASSIGN_OR_RETURN(bool use_sw, r.Bool("use_sliding_window", true));
  if (const json* sw = r.Get("sliding_window"); sw != nullptr && use_sw) {
    if (!sw->is_number_integer())
      return r.Bad("field \"sliding_window\" must be an integer or null");
    const int64_t w = sw->get<int64_t>();
    if (w < c.max_position_embeddings) {
      return r.Unsupported("sliding window attention (sliding_window " + std::to_string(w) +
                           " < max_position_embeddings " +
                           std::to_string(c.max_position_embeddings) + ") is not supported");
    }
  }

  if (const json* bos = r.Get("bos_token_id"); bos != nullptr) {
    KVMESH_ASSIGN_OR_RETURN(c.bos_token_id, r.TokenId(*bos, "bos_token_id"));
  }
  if (const json* eos = r.Get("eos_token_id"); eos != nullptr) {
    if (eos->is_array()) {
      for (size_t i = 0; i < eos->size(); ++i) {
        KVMESH_ASSIGN_OR_RETURN(int id,
                                r.TokenId((*eos)[i], "eos_token_id[" + std::to_string(i) + "]"));
        c.eos_token_ids.push_back(id);
      }
    } else {
      KVMESH_ASSIGN_OR_RETURN(int id, r.TokenId(*eos, "eos_token_id"));
      c.eos_token_ids.push_back(id);
    }
  }
  for (int id : c.eos_token_ids) {
    if (id >= c.vocab_size) {
      return r.Bad("eos_token_id " + std::to_string(id) +
                   " is outside the vocabulary (vocab_size " + std::to_string(c.vocab_size) + ")");
    }
  }
  if (c.bos_token_id >= c.vocab_size) {
    return r.Bad("bos_token_id " + std::to_string(c.bos_token_id) +
                 " is outside the vocabulary (vocab_size " + std::to_string(c.vocab_size) + ")");
  }
  // Newer transformers write "dtype"; older ones "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    const json* d = r.Get(key);
    if (d != nullptr && d->is_string()) {
      c.torch_dtype = d->get<std::string>();
      break;
    }
  }
  return c;
}

StatusOr<ModelConfig> ModelConfig::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read model config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return InvalidArgumentError("error reading model config '" + path + "'");
  return Parse(ss.str(), path);
}

}  // namespace kvmesh::engine
