#include "agent/engine/model_preset.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/engine/model_preset_tokenizer.h"
#include "common/log.h"

namespace kvmesh::engine {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

// ---- deterministic weights ------------------------------------------------------------------

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Approximately normal values with standard deviation `std`: each value is the Irwin-Hall sum of
// four 16-bit uniforms from one SplitMix64 draw, centred and scaled to unit variance. Integer
// arithmetic plus one multiply per value, so the bytes are identical on every platform (no libm).
// Seeded by the tensor name, so a tensor does not depend on which others exist.
std::vector<float> RandomNormal(std::string_view tensor_name, size_t n, float std) {
  uint64_t state = 0x6b766d657368ull ^ Fnv1a(tensor_name);  // "kvmesh"
  std::vector<float> out(n);
  // Sum of 4 U[0,1) has mean 2, variance 1/3; (sum - 2) * sqrt(3) has unit variance.
  const double scale = std::sqrt(3.0) / 65536.0 * std;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix64(&state);
    const int64_t sum = static_cast<int64_t>(r & 0xffff) +
                        static_cast<int64_t>((r >> 16) & 0xffff) +
                        static_cast<int64_t>((r >> 32) & 0xffff) + static_cast<int64_t>(r >> 48);
    out[i] = static_cast<float>(static_cast<double>(sum - 2 * 65536) * scale);
  }
  return out;
}

// Target standard deviation of the logits of a unit-RMS hidden state. Real checkpoints have logit
// spreads of a few units; with a random init of std 0.02 they would be ~0.3 and greedy decoding
// would mostly echo the input token (tied embeddings). The final norm weight is set to reach it.
constexpr double kLogitStd = 3.0;
constexpr float kEmbedStd = 0.02f;
// Gains on top of 1/sqrt(fan_in), chosen with a reference forward (model_preset_test.cc) so greedy
// decoding is varied: q/k x2 gives attention scores a spread of ~4 (attention picks out positions
// instead of averaging the whole context, which makes the state drift slowly and greedy output
// repeat); down_proj x2 lets the MLP (a function of the current position) move the residual stream
// well beyond the token's own embedding. o_proj stays at 1: larger values let the context average
// dominate and greedy output locks onto one token.
constexpr double kQueryKeyGain = 2.0;
constexpr double kDownGain = 2.0;

Status AddTensor(SafetensorsWriter* w, const ModelPresetSpec& s, const std::string& name,
                 std::vector<int64_t> shape, const std::vector<float>& data) {
  if (s.dtype == SafetensorsDtype::kBF16) return w->AddBf16(name, std::move(shape), data);
  return w->AddF32(name, std::move(shape), data);
}

// Projections use std gain/sqrt(fan_in) (each keeps its input's RMS times the gain, so every layer
// adds an O(1) update to the residual stream), RMSNorm weights 1.0, embeddings / lm_head std 0.02,
// final norm weight set for a logit std of kLogitStd.
Status BuildWeights(const ModelPresetSpec& s, SafetensorsWriter* w) {
  const int64_t h = s.hidden_size;
  const int64_t hd = h / s.num_attention_heads;
  const int64_t q = hd * s.num_attention_heads;
  const int64_t kv = hd * s.num_key_value_heads;
  const int64_t inter = s.intermediate_size;
  const int64_t vocab = s.vocab_size;
  auto rnd = [](const std::string& name, int64_t rows, int64_t cols, double std) {
    return RandomNormal(name, static_cast<size_t>(rows * cols), static_cast<float>(std));
  };
  const double in_h = 1.0 / std::sqrt(static_cast<double>(h));
  KVMESH_RETURN_IF_ERROR(AddTensor(w, s, "model.embed_tokens.weight", {vocab, h},
                                   rnd("model.embed_tokens.weight", vocab, h, kEmbedStd)));
  for (int i = 0; i < s.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::vector<float> ones(static_cast<size_t>(h), 1.0f);
    KVMESH_RETURN_IF_ERROR(AddTensor(w, s, p + "input_layernorm.weight", {h}, ones));
    for (auto [proj, rows] :
         {std::pair{"q_proj", q}, std::pair{"k_proj", kv}, std::pair{"v_proj", kv}}) {
      const std::string n = p + "self_attn." + proj + ".weight";
      const double gain = std::string_view(proj) == "v_proj" ? 1.0 : kQueryKeyGain;
      KVMESH_RETURN_IF_ERROR(AddTensor(w, s, n, {rows, h}, rnd(n, rows, h, gain * in_h)));
    }
    {
      const std::string n = p + "self_attn.o_proj.weight";
      KVMESH_RETURN_IF_ERROR(AddTensor(w, s, n, {h, q}, rnd(n, h, q, 1.0 / std::sqrt(double(q)))));
    }
    KVMESH_RETURN_IF_ERROR(AddTensor(w, s, p + "post_attention_layernorm.weight", {h}, ones));
    for (const char* proj : {"gate_proj", "up_proj"}) {
      const std::string n = p + "mlp." + proj + ".weight";
      KVMESH_RETURN_IF_ERROR(AddTensor(w, s, n, {inter, h}, rnd(n, inter, h, in_h)));
    }
    const std::string n = p + "mlp.down_proj.weight";
    KVMESH_RETURN_IF_ERROR(
        AddTensor(w, s, n, {h, inter}, rnd(n, h, inter, kDownGain / std::sqrt(double(inter)))));
  }
  const float norm_weight =
      static_cast<float>(kLogitStd / (kEmbedStd * std::sqrt(static_cast<double>(h))));
  KVMESH_RETURN_IF_ERROR(AddTensor(w, s, "model.norm.weight", {h},
                                   std::vector<float>(static_cast<size_t>(h), norm_weight)));
  if (!s.tie_word_embeddings) {
    KVMESH_RETURN_IF_ERROR(
        AddTensor(w, s, "lm_head.weight", {vocab, h}, rnd("lm_head.weight", vocab, h, kEmbedStd)));
  }
  w->SetMetadata("format", "pt");
  return Status::Ok();
}

std::string PresetTag(const ModelPresetSpec& s) {
  return s.name + "-v" + std::to_string(kModelPresetVersion);
}

std::string TorchDtype(const ModelPresetSpec& s) {
  return s.dtype == SafetensorsDtype::kBF16 ? "bfloat16" : "float32";
}

std::string ConfigJson(const ModelPresetSpec& s, const PresetTokenizerFiles& tok) {
  ordered_json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["bos_token_id"] = tok.bos_token_id;
  c["eos_token_id"] = tok.eos_token_ids;
  c["head_dim"] = s.hidden_size / s.num_attention_heads;
  c["hidden_act"] = "silu";
  c["hidden_size"] = s.hidden_size;
  c["initializer_range"] = 0.02;
  c["intermediate_size"] = s.intermediate_size;
  c["kvmesh_preset"] = PresetTag(s);
  c["max_position_embeddings"] = s.max_position_embeddings;
  c["mlp_bias"] = false;
  c["model_type"] = "llama";
  c["num_attention_heads"] = s.num_attention_heads;
  c["num_hidden_layers"] = s.num_hidden_layers;
  c["num_key_value_heads"] = s.num_key_value_heads;
  c["pretraining_tp"] = 1;
  c["rms_norm_eps"] = 1e-05;
  c["rope_scaling"] = {{"factor", 8.0},
                       {"high_freq_factor", 4.0},
                       {"low_freq_factor", 1.0},
                       {"original_max_position_embeddings", 1024},
                       {"rope_type", "llama3"}};
  c["rope_theta"] = 500000.0;
  c["tie_word_embeddings"] = s.tie_word_embeddings;
  c["torch_dtype"] = TorchDtype(s);
  c["transformers_version"] = "4.46.0";
  c["use_cache"] = true;
  c["vocab_size"] = s.vocab_size;
  return c.dump(2) + "\n";
}

std::string GenerationConfigJson(const PresetTokenizerFiles& tok) {
  ordered_json g;
  g["bos_token_id"] = tok.bos_token_id;
  g["do_sample"] = false;
  g["eos_token_id"] = tok.eos_token_ids;
  g["transformers_version"] = "4.46.0";
  return g.dump(2) + "\n";
}

// The small files of a preset folder, name -> contents.
StatusOr<std::vector<std::pair<std::string, std::string>>> SmallFiles(const ModelPresetSpec& s) {
  KVMESH_ASSIGN_OR_RETURN(PresetTokenizerFiles tok,
                          BuildPresetTokenizer(s.vocab_size, s.max_position_embeddings));
  return std::vector<std::pair<std::string, std::string>>{
      {"config.json", ConfigJson(s, tok)},
      {"generation_config.json", GenerationConfigJson(tok)},
      {"tokenizer.json", tok.tokenizer_json},
      {"tokenizer_config.json", tok.tokenizer_config_json},
  };
}

StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.flush();
  if (!out) return InternalError("cannot write '" + path + "': " + std::strerror(errno));
  return Status::Ok();
}

// Names and shapes of the checkpoint tensors of `s`.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(
    const ModelPresetSpec& s) {
  const int64_t h = s.hidden_size, hd = h / s.num_attention_heads;
  const int64_t q = hd * s.num_attention_heads, kv = hd * s.num_key_value_heads;
  const int64_t inter = s.intermediate_size, vocab = s.vocab_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"model.embed_tokens.weight", {vocab, h}}, {"model.norm.weight", {h}}};
  if (!s.tie_word_embeddings) out.push_back({"lm_head.weight", {vocab, h}});
  for (int i = 0; i < s.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {q, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.o_proj.weight", {h, q}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    out.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    out.push_back({p + "mlp.up_proj.weight", {inter, h}});
    out.push_back({p + "mlp.down_proj.weight", {h, inter}});
  }
  return out;
}

// True when `dir` holds preset `s`: the small files are byte-identical and model.safetensors has
// a valid header with exactly the preset's tensors (names, dtypes, shapes).
bool HoldsPreset(const ModelPresetSpec& s, const std::string& dir) {
  auto small = SmallFiles(s);
  if (!small.ok()) return false;
  for (const auto& [name, contents] : *small) {
    auto got = ReadSmallFile(dir + "/" + name);
    if (!got.ok() || *got != contents) return false;
  }
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  if (!file.ok()) return false;
  const auto expected = ExpectedTensors(s);
  if ((*file)->tensors().size() != expected.size()) return false;
  for (const auto& [name, shape] : expected) {
    const TensorView* v = (*file)->Find(name);
    if (v == nullptr || v->shape != shape || v->dtype != s.dtype) return false;
  }
  return true;
}

bool IsEmptyDir(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec) && !ec;
}

}  // namespace

int64_t ModelPresetSpec::num_parameters() const {
  const int64_t h = hidden_size;
  const int64_t hd = h / num_attention_heads;
  const int64_t per_layer = 2 * h + h * hd * num_attention_heads * 2 +
                            2 * h * hd * num_key_value_heads + 3 * h * intermediate_size;
  return int64_t{vocab_size} * h * (tie_word_embeddings ? 1 : 2) + h +
         per_layer * num_hidden_layers;
}

std::vector<ModelPresetSpec> ModelPresets() {
  ModelPresetSpec small{"small", 768, 16, 12, 4, 2048, 1024, 4096, false, SafetensorsDtype::kBF16};
  ModelPresetSpec tiny{"tiny", 256, 4, 8, 4, 768, 1024, 4096, true, SafetensorsDtype::kF32};
  return {small, tiny};
}

StatusOr<ModelPresetSpec> FindModelPreset(std::string_view name) {
  std::string known;
  for (const auto& p : ModelPresets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  return InvalidArgumentError("unknown model preset '" + std::string(name) + "' (known: " + known +
                              ")");
}

Status CreatePresetModel(std::string_view preset, const std::string& dir) {
  KVMESH_ASSIGN_OR_RETURN(ModelPresetSpec spec, FindModelPreset(preset));
  if (dir.empty()) return InvalidArgumentError("model preset: empty target folder");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) {
      return AlreadyExistsError("'" + dir + "' exists and is not a folder");
    }
    if (!IsEmptyDir(dir)) {
      if (HoldsPreset(spec, dir)) return Status::Ok();
      return AlreadyExistsError("folder '" + dir + "' is not empty and does not hold preset '" +
                                spec.name + "'; refusing to overwrite it");
    }
  }
  fs::path target = fs::absolute(fs::path(dir), ec).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "a/b/" -> "a/b"
  const fs::path parent = target.parent_path();
  fs::create_directories(parent, ec);
  if (ec) return InternalError("cannot create folder '" + parent.string() + "': " + ec.message());

  static std::atomic<uint64_t> counter{0};
  const fs::path tmp = parent / ("." + target.filename().string() + ".tmp-" +
                                 std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directory(tmp, ec);
  if (ec) return InternalError("cannot create folder '" + tmp.string() + "': " + ec.message());
  auto cleanup = [&] {
    std::error_code ignore;
    fs::remove_all(tmp, ignore);
  };

  auto small = SmallFiles(spec);
  if (!small.ok()) {
    cleanup();
    return small.status();
  }
  for (const auto& [name, contents] : *small) {
    if (Status st = WriteFile((tmp / name).string(), contents); !st.ok()) {
      cleanup();
      return st;
    }
  }
  {
    SafetensorsWriter w;
    Status st = BuildWeights(spec, &w);
    if (st.ok()) st = w.Write((tmp / "model.safetensors").string());
    if (!st.ok()) {
      cleanup();
      return st;
    }
  }
  // rename(2) onto a missing or empty folder is atomic; onto a non-empty one it fails.
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    cleanup();
    if ((err == ENOTEMPTY || err == EEXIST) && HoldsPreset(spec, target.string())) {
      return Status::Ok();  // another process published the same preset first
    }
    return InternalError("cannot move '" + tmp.string() + "' to '" + target.string() +
                         "': " + std::strerror(err));
  }
  KVMESH_LOG_INFO("model", "created preset model", {"preset", spec.name}, {"dir", target.string()},
                  {"parameters", static_cast<long long>(spec.num_parameters())});
  return Status::Ok();
}

StatusOr<std::string> ResolveModelSource(std::string_view source, const std::string& cache_dir) {
  if (source.empty()) return InvalidArgumentError("empty model source");
  constexpr std::string_view kBuiltin = "builtin:";
  if (source.starts_with(kBuiltin)) {
    KVMESH_ASSIGN_OR_RETURN(ModelPresetSpec spec, FindModelPreset(source.substr(kBuiltin.size())));
    if (cache_dir.empty()) return InvalidArgumentError("empty model cache folder");
    const std::string dir = cache_dir + "/" + PresetTag(spec);
    if (HoldsPreset(spec, dir)) return dir;
    KVMESH_RETURN_IF_ERROR(CreatePresetModel(spec.name, dir));
    return dir;
  }
  const std::string dir(source);
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "config.json", ec)) {
    return NotFoundError("model source '" + dir +
                         "' is not a model folder (no config.json) and not builtin:<preset>");
  }
  return dir;
}

std::string DefaultModelCacheDir() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  if (std::string d = env("KVMESH_CACHE_DIR"); !d.empty()) return d;
  if (std::string d = env("XDG_CACHE_HOME"); !d.empty()) return d + "/kvmesh";
  if (std::string d = env("HOME"); !d.empty()) return d + "/.cache/kvmesh";
  return "/tmp/kvmesh-cache";
}

}  // namespace kvmesh::engine
