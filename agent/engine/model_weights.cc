#include "agent/engine/model_weights.h"

#include <cstdlib>
#include <set>
#include <string_view>

#include "agent/engine/safetensors.h"
#include "common/log.h"

namespace kvmesh::engine {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

void FreeAligned(float* p) { std::free(p); }

// Loads checkpoint tensors into fp32 buffers, remembering which names it consumed.
class Loader {
 public:
  Loader(const SafetensorsSet& set, std::string dir) : set_(set), dir_(std::move(dir)) {}

  // Copies tensor `name` (which must have `shape`) to `dst` as fp32.
  Status Copy(const std::string& name, const std::vector<int64_t>& shape, float* dst) {
    const TensorView* v = set_.Find(name);
    if (v == nullptr) {
      return InvalidArgumentError("model folder '" + dir_ + "': missing tensor '" + name +
                                  "' (expected shape " + ShapeString(shape) + ")");
    }
    if (v->shape != shape) {
      return InvalidArgumentError("model folder '" + dir_ + "': tensor '" + name + "' has shape " +
                                  ShapeString(v->shape) + ", expected " + ShapeString(shape));
    }
    ToFloat32(*v, dst);
    used_.insert(name);
    num_parameters_ += v->numel();
    return Status::Ok();
  }

  bool Has(const std::string& name) const { return set_.Find(name) != nullptr; }
  const std::set<std::string>& used() const { return used_; }
  int64_t num_parameters() const { return num_parameters_; }

 private:
  const SafetensorsSet& set_;
  std::string dir_;
  std::set<std::string> used_;
  int64_t num_parameters_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const std::string& dir) {
  KVMESH_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::Load(dir + "/config.json"));
  KVMESH_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsSet> set, SafetensorsSet::Open(dir));
  std::unique_ptr<ModelWeights> w(new ModelWeights());
  w->config_ = config;
  const ModelConfig& c = w->config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t vocab = c.vocab_size;
  const int64_t q = c.q_dim();
  const int64_t kv = c.kv_dim();
  const int64_t qkv = c.qkv_dim();

  // One 64-byte aligned allocation per engine tensor.
  auto alloc = [&](std::vector<int64_t> shape, WeightTensor* t) -> Status {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
    auto* p = static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
    if (p == nullptr) {
      return ResourceExhaustedError("cannot allocate " + std::to_string(bytes) +
                                    " bytes for model weights of '" + dir + "'");
    }
    w->buffers_.emplace_back(p, &FreeAligned);
    w->bytes_fp32_ += n * static_cast<int64_t>(sizeof(float));
    t->data = p;
    t->shape = std::move(shape);
    return Status::Ok();
  };

  Loader ld(*set, dir);
  KVMESH_RETURN_IF_ERROR(alloc({vocab, hidden}, &w->embed_tokens_));
  KVMESH_RETURN_IF_ERROR(ld.Copy("model.embed_tokens.weight", {vocab, hidden},
                                 const_cast<float*>(w->embed_tokens_.data)));
  KVMESH_RETURN_IF_ERROR(alloc({hidden}, &w->norm_));
  KVMESH_RETURN_IF_ERROR(ld.Copy("model.norm.weight", {hidden}, const_cast<float*>(w->norm_.data)));
  if (c.tie_word_embeddings) {
    w->lm_head_ = w->embed_tokens_;
  } else {
    KVMESH_RETURN_IF_ERROR(alloc({vocab, hidden}, &w->lm_head_));
    KVMESH_RETURN_IF_ERROR(
        ld.Copy("lm_head.weight", {vocab, hidden}, const_cast<float*>(w->lm_head_.data)));
  }

  w->layers_.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights& L = w->layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto mut = [](const WeightTensor& t) { return const_cast<float*>(t.data); };
    KVMESH_RETURN_IF_ERROR(alloc({hidden}, &L.input_layernorm));
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "input_layernorm.weight", {hidden}, mut(L.input_layernorm)));
    KVMESH_RETURN_IF_ERROR(alloc({qkv, hidden}, &L.qkv_proj));
    float* qkv_w = mut(L.qkv_proj);
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "self_attn.q_proj.weight", {q, hidden}, qkv_w));
    KVMESH_RETURN_IF_ERROR(
        ld.Copy(p + "self_attn.k_proj.weight", {kv, hidden}, qkv_w + q * hidden));
    KVMESH_RETURN_IF_ERROR(
        ld.Copy(p + "self_attn.v_proj.weight", {kv, hidden}, qkv_w + (q + kv) * hidden));
    if (c.attention_bias) {
      KVMESH_RETURN_IF_ERROR(alloc({qkv}, &L.qkv_bias));
      float* b = mut(L.qkv_bias);
      KVMESH_RETURN_IF_ERROR(ld.Copy(p + "self_attn.q_proj.bias", {q}, b));
      KVMESH_RETURN_IF_ERROR(ld.Copy(p + "self_attn.k_proj.bias", {kv}, b + q));
      KVMESH_RETURN_IF_ERROR(ld.Copy(p + "self_attn.v_proj.bias", {kv}, b + q + kv));
    }
    KVMESH_RETURN_IF_ERROR(alloc({hidden, q}, &L.o_proj));
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "self_attn.o_proj.weight", {hidden, q}, mut(L.o_proj)));
    KVMESH_RETURN_IF_ERROR(alloc({hidden}, &L.post_attention_layernorm));
    KVMESH_RETURN_IF_ERROR(
        ld.Copy(p + "post_attention_layernorm.weight", {hidden}, mut(L.post_attention_layernorm)));
    KVMESH_RETURN_IF_ERROR(alloc({2 * inter, hidden}, &L.gate_up_proj));
    float* gu = mut(L.gate_up_proj);
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "mlp.gate_proj.weight", {inter, hidden}, gu));
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "mlp.up_proj.weight", {inter, hidden}, gu + inter * hidden));
    KVMESH_RETURN_IF_ERROR(alloc({hidden, inter}, &L.down_proj));
    KVMESH_RETURN_IF_ERROR(ld.Copy(p + "mlp.down_proj.weight", {hidden, inter}, mut(L.down_proj)));
  }
  w->num_parameters_ = ld.num_parameters();

  // Tensors the engine does not use: rotary inverse frequencies are recomputed from the config;
  // anything else (e.g. a tied model's redundant lm_head.weight) is logged and ignored.
  int ignored = 0;
  std::string first_ignored;
  for (const TensorView* v : set->tensors()) {
    if (ld.used().count(v->name) != 0) continue;
    if (std::string_view(v->name).ends_with("rotary_emb.inv_freq")) continue;
    if (ignored++ == 0) first_ignored = v->name;
  }
  if (ignored > 0) {
    KVMESH_LOG_INFO("model", "ignoring checkpoint tensors the engine does not use", {"dir", dir},
                    {"count", ignored}, {"first", first_ignored});
  }
  KVMESH_LOG_INFO("model", "weights loaded", {"dir", dir}, {"architecture", c.architecture},
                  {"parameters", static_cast<long long>(w->num_parameters_)},
                  {"bytes_fp32", static_cast<long long>(w->bytes_fp32_)});
  return w;
}

}  // namespace kvmesh::engine
