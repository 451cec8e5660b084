// First-order rooflines for the fleet simulator; every constant and formula is documented, with its
// source, in docs/simulator.md ("Performance model").
#include "sim/perf_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

namespace kvmesh::sim {
namespace {

// Hardware: ../shared/PERF-MODEL.md "Hardware" (dense tensor figures, not the sparse ones spec
// pages quote). NVLink per direction. B200 memory: 180 GB usable (DGX B200 1,440 GB / 8).
const GpuSpec kGpus[] = {
    {"h100", 989, 1979, 3350, 80, 450},
    {"h200", 989, 1979, 4800, 141, 450},
    {"b200", 2250, 4500, 8000, 180, 900},
};

ModelSpec Dense(std::string name, uint32_t layers, uint32_t hidden, uint32_t heads,
                uint32_t kv_heads, uint32_t head_dim, double params_b, uint64_t kv_bytes) {
  ModelSpec m;
  m.name = std::move(name);
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.kv_heads = kv_heads;
  m.head_dim = head_dim;
  m.total_params_b = params_b;
  m.active_params_b = params_b;
  m.weight_bytes_per_param = 2;
  m.kv_bytes_per_token = kv_bytes;
  return m;
}

std::vector<ModelSpec> Models() {
  std::vector<ModelSpec> models;
  // Llama-3.1: config.json of meta-llama/Llama-3.1-{8B,70B}; parameter counts from the model cards.
  models.push_back(Dense("llama-3.1-8b", 32, 4096, 32, 8, 128, 8.03, 131072));
  models.push_back(Dense("llama-3.1-70b", 80, 8192, 64, 8, 128, 70.6, 327680));
  // gpt-oss-120b: 36 layers, hidden 2880, 64 query / 8 KV heads of dim 64, 128 experts top-4,
  // ~116.8 B total / ~5.1 B active parameters; MoE weights in MXFP4 (4.25 bits with scales = 0.53
  // bytes) and the rest in bf16, ~0.57 bytes/param overall (the checkpoint is ~65 GB). Alternate
  // layers use a 128-token sliding window.
  ModelSpec oss = Dense("gpt-oss-120b", 36, 2880, 64, 8, 64, 116.8, 73728);
  oss.active_params_b = 5.1;
  oss.weight_bytes_per_param = 0.57;
  oss.num_experts = 128;
  oss.experts_per_token = 4;
  oss.sliding_window_layers = 18;
  oss.sliding_window_tokens = 128;
  models.push_back(std::move(oss));
  return models;
}

// KV transfer links: bandwidth achievable for KV payloads, per direction. NVLink ~450 GB/s (one
// direction of 900 GB/s), one 400G NIC ~45 GB/s at >= 64 KB blocks (50 GB/s line rate), TCP
// ~2 GB/s (Dynamo's guide: 1-3). Latencies: first byte incl. transfer setup.
const LinkSpec kLinks[] = {
    {"nvlink", 450, 10},
    {"ib400", 45, 20},
    {"tcp", 2, 100},
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <typename T, typename Range>
StatusOr<T> Lookup(std::string_view kind, std::string_view name, const Range& table) {
  const std::string want = Lower(name);
  std::string known;
  for (const T& entry : table) {
    if (entry.name == want) return entry;
    known += known.empty() ? "" : ", ";
    known += entry.name;
  }
  return NotFoundError("unknown " + std::string(kind) + " '" + std::string(name) +
                       "' (known: " + known + ")");
}

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GB", bytes / 1e9);
  return buf;
}

}  // namespace

StatusOr<GpuSpec> GpuByName(std::string_view name) { return Lookup<GpuSpec>("GPU", name, kGpus); }
StatusOr<ModelSpec> ModelByName(std::string_view name) {
  return Lookup<ModelSpec>("model", name, Models());
}
StatusOr<LinkSpec> LinkByName(std::string_view name) {
  return Lookup<LinkSpec>("link", name, kLinks);
}
std::vector<std::string> KnownGpus() {
  std::vector<std::string> out;
  for (const GpuSpec& g : kGpus) out.push_back(g.name);
  return out;
}
std::vector<std::string> KnownModels() {
  std::vector<std::string> out;
  for (const ModelSpec& m : Models()) out.push_back(m.name);
  return out;
}

StatusOr<PerfModel> PerfModel::Make(const GpuSpec& gpu, const ModelSpec& model, uint32_t tp,
                                    const PerfConstants& constants) {
  if (tp == 0 || tp > 8 || (tp & (tp - 1)) != 0) {
    return InvalidArgumentError("tp must be 1, 2, 4 or 8, got " + std::to_string(tp));
  }
  if (!(gpu.bf16_tflops > 0) || !(gpu.fp8_tflops > 0) || !(gpu.hbm_gbps > 0) || !(gpu.mem_gb > 0) ||
      !(gpu.nvlink_gbps > 0)) {
    return InvalidArgumentError("GPU '" + gpu.name +
                                "' needs positive FLOP/s, HBM, memory, NVLink");
  }
  if (model.layers == 0 || model.hidden == 0 || model.heads == 0 || model.kv_heads == 0 ||
      model.head_dim == 0 || !(model.total_params_b > 0) || !(model.active_params_b > 0) ||
      model.active_params_b > model.total_params_b || !(model.weight_bytes_per_param > 0) ||
      model.kv_bytes_per_token == 0 || model.sliding_window_layers > model.layers ||
      (model.num_experts > 0 &&
       (model.experts_per_token == 0 || model.experts_per_token > model.num_experts))) {
    return InvalidArgumentError("model '" + model.name + "' has a zero or inconsistent field");
  }
  const PerfConstants& c = constants;
  if (!(c.prefill_mfu > 0 && c.prefill_mfu <= 1) ||
      !(c.decode_hbm_efficiency > 0 && c.decode_hbm_efficiency <= 1) ||
      !(c.memory_utilization > 0 && c.memory_utilization <= 1) || !(c.step_overhead_s >= 0) ||
      !(c.allreduce_latency_s >= 0) || !(c.activation_reserve_gb >= 0) ||
      !(c.eager_launch_s_per_layer >= 0)) {
    return InvalidArgumentError(
        "perf constants out of range: prefill_mfu, decode_hbm_efficiency and memory_utilization "
        "must be in (0, 1]; overheads and reserves >= 0");
  }
  PerfModel m;
  m.gpu_ = gpu;
  m.model_ = model;
  m.tp_ = tp;
  m.constants_ = constants;
  const double usable = tp * (gpu.mem_gb * c.memory_utilization - c.activation_reserve_gb) * 1e9;
  const double weights = m.WeightBytes();
  const std::string what = model.name + " (" + Gb(weights) + " of weights) on " +
                           std::to_string(tp) + " x " + gpu.name + " (" + Gb(usable) +
                           " usable at memory_utilization " + std::to_string(c.memory_utilization) +
                           ")";
  if (weights >= usable) return InvalidArgumentError("model does not fit: " + what);
  const double tokens =
      std::floor((usable - weights) / static_cast<double>(model.kv_bytes_per_token));
  if (tokens < 1) return InvalidArgumentError("no room for KV cache: " + what);
  m.kv_capacity_tokens_ = static_cast<uint64_t>(tokens);
  return m;
}

namespace {
double PeakFlops(const GpuSpec& gpu, const PerfConstants& c) {
  return (c.fp8_weights ? gpu.fp8_tflops : gpu.bf16_tflops) * 1e12;
}
}  // namespace

double PerfModel::WeightBytes() const {
  const double bpp = constants_.fp8_weights ? std::min(1.0, model_.weight_bytes_per_param)
                                            : model_.weight_bytes_per_param;
  return model_.total_params_b * 1e9 * bpp;
}

double PerfModel::DecodeWeightBytesRead(uint32_t batch) const {
  const double all = WeightBytes();
  if (model_.num_experts == 0) return all;
  // active = shared + expert * k/E and total = shared + expert, so expert = (total - active) /
  // (1 - k/E). A token picks k of E experts; b tokens touch 1 - (1 - k/E)^b of them on average.
  const double frac_k = static_cast<double>(model_.experts_per_token) / model_.num_experts;
  const double expert_params =
      frac_k < 1 ? (model_.total_params_b - model_.active_params_b) / (1 - frac_k) : 0;
  const double expert_share = std::min(1.0, expert_params / model_.total_params_b);
  const double touched = 1 - std::pow(1 - frac_k, std::max<uint32_t>(batch, 1));
  return all * ((1 - expert_share) + expert_share * touched);
}

double PerfModel::AllReduceSeconds(uint64_t tokens) const {
  if (tp_ == 1) return 0;
  // Two all-reduces per layer (after attention, after the MLP) of tokens x hidden bf16
  // activations; a ring moves 2 (tp-1)/tp of the payload through each GPU's NVLink.
  const double payload = static_cast<double>(std::max<uint64_t>(tokens, 1)) * model_.hidden * 2;
  const double ring = 2.0 * (tp_ - 1) / tp_ * payload / (gpu_.nvlink_gbps * 1e9);
  return 2.0 * model_.layers * (constants_.allreduce_latency_s + ring);
}

namespace {
// Attention FLOPs of `pairs` (query, key) pairs: QK^T and PV are 2 * heads * head_dim FLOPs each
// per pair per layer. Sliding-window layers see at most `window` keys per query.
double AttentionFlops(const ModelSpec& m, uint64_t new_tokens, double pairs) {
  const double width = static_cast<double>(m.heads) * m.head_dim;
  const double full_layers = m.layers - m.sliding_window_layers;
  double windowed = 0;
  if (m.sliding_window_layers > 0) {
    windowed = m.sliding_window_layers *
               std::min(pairs, static_cast<double>(new_tokens) * m.sliding_window_tokens);
  }
  return 4.0 * width * (full_layers * pairs + windowed);
}

// KV bytes a decode step of `batch` sequences with `context` tokens reads (all tp GPUs).
double KvReadBytes(const ModelSpec& m, uint32_t batch, uint64_t context) {
  const double per_layer = static_cast<double>(m.kv_bytes_per_token) / m.layers;
  const double full_layers = m.layers - m.sliding_window_layers;
  double bytes = per_layer * full_layers * static_cast<double>(context);
  if (m.sliding_window_layers > 0) {
    const double windowed = std::min(static_cast<double>(context),
                                     static_cast<double>(batch) * m.sliding_window_tokens);
    bytes += per_layer * m.sliding_window_layers * windowed;
  }
  return bytes;
}
}  // namespace

double PerfModel::MixedStepSeconds(uint32_t decode_batch, uint64_t context_tokens,
                                   uint64_t prefill_tokens, double attention_token_pairs) const {
  const PerfConstants& c = constants_;
  const uint64_t tokens = std::max<uint64_t>(1, decode_batch + prefill_tokens);
  const double flops = PeakFlops(gpu_, c) * c.prefill_mfu * tp_;
  const double hbm = gpu_.hbm_gbps * 1e9 * c.decode_hbm_efficiency * tp_;
  const uint32_t touched_tokens =
      static_cast<uint32_t>(std::min<uint64_t>(tokens, std::numeric_limits<uint32_t>::max()));
  // GEMMs (all tokens): compute against weight reads; the weights stream once per step.
  const double linear = std::max(
      2.0 * model_.active_params_b * 1e9 * static_cast<double>(tokens) / flops,
      DecodeWeightBytesRead(touched_tokens) / hbm);
  // Attention is its own kernel, after the QKV GEMM and before the output GEMM of each layer, so
  // its work cannot hide under GEMM compute: the prefill part is compute-bound (bf16: FP8 weights
  // do not make FlashAttention FP8), the decode part reads the batch's KV.
  const double prefill_attention =
      prefill_tokens == 0
          ? 0
          : AttentionFlops(model_, prefill_tokens, std::max(0.0, attention_token_pairs)) /
                (gpu_.bf16_tflops * 1e12 * c.prefill_mfu * tp_);
  const double decode_attention =
      decode_batch == 0 ? 0 : KvReadBytes(model_, decode_batch, context_tokens) / hbm;
  double gpu = linear + prefill_attention + decode_attention + AllReduceSeconds(tokens);
  // Steps with prefill tokens run eagerly (no CUDA graph): the CPU launches every kernel, and
  // the step cannot finish before the last launch.
  if (prefill_tokens > 0) gpu = std::max(gpu, model_.layers * c.eager_launch_s_per_layer);
  return gpu + c.step_overhead_s;
}

double PerfModel::PrefillBatchSeconds(uint64_t new_tokens, double attention_token_pairs) const {
  // A fully cached prompt still recomputes its last token (vLLM does the same).
  return MixedStepSeconds(0, 0, std::max<uint64_t>(new_tokens, 1), attention_token_pairs);
}

double PerfModel::PrefillSeconds(uint32_t new_tokens, uint32_t cached_tokens) const {
  const double n = std::max<uint32_t>(new_tokens, 1);
  return PrefillBatchSeconds(static_cast<uint64_t>(n), n * (cached_tokens + n / 2.0));
}

double PerfModel::DecodeStepSeconds(uint32_t batch, uint64_t context_tokens) const {
  return MixedStepSeconds(std::max<uint32_t>(batch, 1), context_tokens, 0, 0);
}

uint64_t PerfModel::KvCapacityTokens() const { return kv_capacity_tokens_; }

uint64_t PerfModel::KvBytes(uint64_t tokens) const { return model_.kv_bytes_per_token * tokens; }

double PerfModel::TransferSeconds(uint64_t bytes, const LinkSpec& link) {
  const double bw = link.bandwidth_gbps > 0 ? link.bandwidth_gbps * 1e9 : 1e-9;
  return link.latency_us * 1e-6 + static_cast<double>(bytes) / bw;
}

// ---- Calibration helpers ----

StatusOr<SteadyStatePoint> AggregatedSteadyState(const PerfModel& m, uint32_t isl, uint32_t osl,
                                                 uint32_t batch, bool chunked,
                                                 uint32_t chunk_tokens) {
  if (isl == 0 || osl == 0 || batch == 0) {
    return InvalidArgumentError("isl, osl and batch must be > 0");
  }
  const uint64_t need = static_cast<uint64_t>(batch) * (isl + osl);
  if (need > m.KvCapacityTokens()) {
    return ResourceExhaustedError("batch " + std::to_string(batch) + " needs " +
                                  std::to_string(need) + " KV tokens, instance holds " +
                                  std::to_string(m.KvCapacityTokens()));
  }
  // Sequences in decode hold on average isl + osl/2 tokens.
  const uint64_t context = static_cast<uint64_t>(batch * (isl + osl / 2.0));
  const double prompts_per_step = static_cast<double>(batch) / osl;
  double itl = 0;
  const double prefill_per_step = prompts_per_step * isl;
  if (chunked && chunk_tokens > 0 && prefill_per_step < chunk_tokens) {
    // A C-token chunk of a prompt attends to the earlier chunks: C x isl/2 pairs on average.
    const double f = prefill_per_step / chunk_tokens;
    itl = f * m.MixedStepSeconds(batch, context, chunk_tokens, chunk_tokens * (isl / 2.0)) +
          (1 - f) * m.DecodeStepSeconds(batch, context);
  } else if (chunked) {
    const uint64_t prefill_tokens = static_cast<uint64_t>(std::ceil(prefill_per_step));
    const double pairs = prompts_per_step * isl * (isl / 2.0);
    itl = m.MixedStepSeconds(batch, context, prefill_tokens, pairs);
  } else {
    itl = m.DecodeStepSeconds(batch, context) + prompts_per_step * m.PrefillSeconds(isl, 0);
  }
  SteadyStatePoint p;
  p.layout = std::string("agg tp") + std::to_string(m.tp()) +
             (!chunked           ? " unchunked"
              : chunk_tokens > 0 ? " chunk " + std::to_string(chunk_tokens)
                                 : "");
  p.batch = batch;
  p.itl_s = itl;
  p.tokens_per_s_user = 1 / itl;
  p.tokens_per_s_gpu = batch / itl / m.tp();
  p.ttft_s = m.PrefillSeconds(isl, 0);
  return p;
}

StatusOr<SteadyStatePoint> DisaggregatedSteadyState(const PerfModel& prefill,
                                                    uint32_t prefill_instances,
                                                    const PerfModel& decode,
                                                    uint32_t decode_instances, uint32_t isl,
                                                    uint32_t osl, uint32_t batch) {
  if (isl == 0 || osl == 0 || batch == 0 || prefill_instances == 0 || decode_instances == 0) {
    return InvalidArgumentError("isl, osl, batch and instance counts must be > 0");
  }
  const uint64_t need = static_cast<uint64_t>(batch) * (isl + osl);
  if (need > decode.KvCapacityTokens()) {
    return ResourceExhaustedError("decode batch " + std::to_string(batch) + " needs " +
                                  std::to_string(need) + " KV tokens, instance holds " +
                                  std::to_string(decode.KvCapacityTokens()));
  }
  if (isl > prefill.KvCapacityTokens()) {
    return ResourceExhaustedError("a " + std::to_string(isl) + "-token prompt does not fit the " +
                                  "prefill instance's " +
                                  std::to_string(prefill.KvCapacityTokens()) + " KV tokens");
  }
  const double prefill_s = prefill.PrefillSeconds(isl, 0);
  const double itl =
      decode.DecodeStepSeconds(batch, static_cast<uint64_t>(batch * (isl + osl / 2.0)));
  const double prefill_tokens_s = prefill_instances / prefill_s * osl;  // output tokens it feeds
  const double decode_tokens_s = decode_instances * batch / itl;
  const double gpus = static_cast<double>(prefill_instances) * prefill.tp() +
                      static_cast<double>(decode_instances) * decode.tp();
  SteadyStatePoint p;
  p.layout = "disagg " + std::to_string(prefill_instances) + "xtp" + std::to_string(prefill.tp()) +
             " prefill : " + std::to_string(decode_instances) + "xtp" +
             std::to_string(decode.tp()) + " decode";
  p.batch = batch;
  p.itl_s = itl;
  p.tokens_per_s_user = 1 / itl;
  p.tokens_per_s_gpu = std::min(prefill_tokens_s, decode_tokens_s) / gpus;
  p.ttft_s = prefill_s;
  return p;
}

StatusOr<SteadyStatePoint> BestAtUserRate(const std::vector<SteadyStatePoint>& points,
                                          double min_tokens_per_s_user) {
  const SteadyStatePoint* best = nullptr;
  for (const SteadyStatePoint& p : points) {
    if (p.tokens_per_s_user + 1e-12 < min_tokens_per_s_user) continue;
    if (best == nullptr || p.tokens_per_s_gpu > best->tokens_per_s_gpu) best = &p;
  }
  if (best == nullptr) {
    return NotFoundError("no point reaches " + std::to_string(min_tokens_per_s_user) +
                         " tokens/s/user");
  }
  return *best;
}

}  // namespace kvmesh::sim
