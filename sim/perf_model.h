// Performance models for the fleet simulator (docs/simulator.md): how long a GPU instance takes to
// prefill and to run one decode step, how much KV it can hold, and how long KV takes to move over a
// link. First-order rooflines from ../shared/PERF-MODEL.md with calibration constants (MFU, HBM
// efficiency, per-step overhead) kept in one place and documented with their sources.
//
// An *instance* is one model replica: `tp` GPUs of one type running one model with tensor
// parallelism (weights and KV split over the tp GPUs; two all-reduces per layer over NVLink).
//
// Invariants: every time is finite and > 0 for valid inputs; times never decrease with tokens,
// batch size or context length (they are flat only where a step sits on its eager-launch floor);
// KvCapacityTokens() > 0 or Make() fails (model does not fit).
// Thread safety: immutable after Make(); all methods const and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::sim {

struct GpuSpec {
  std::string name;          // "h100", "h200", "b200"
  double bf16_tflops = 0;    // dense peak, TFLOP/s
  double fp8_tflops = 0;     // dense peak, TFLOP/s
  double hbm_gbps = 0;       // HBM bandwidth, GB/s (1e9 bytes/s)
  double mem_gb = 0;         // HBM capacity, GB (1e9 bytes)
  double nvlink_gbps = 0;    // NVLink per direction, GB/s
};

struct ModelSpec {
  std::string name;           // "llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b"
  uint32_t layers = 0;
  uint32_t hidden = 0;
  uint32_t heads = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  double total_params_b = 0;   // billions
  double active_params_b = 0;  // billions per token (== total for dense models)
  double weight_bytes_per_param = 2;  // bf16 2, fp8 1, mxfp4 ~0.53
  uint64_t kv_bytes_per_token = 0;    // whole model, all layers (bf16 KV)
  // ---- added by the perf model (H3); zero = dense model / no sliding window ----
  uint32_t num_experts = 0;            // MoE experts per layer (0 = dense)
  uint32_t experts_per_token = 0;      // MoE top-k
  uint32_t sliding_window_layers = 0;  // layers whose attention sees only the last window tokens
  uint32_t sliding_window_tokens = 0;  // that window (gpt-oss-120b: 18 of 36 layers, 128 tokens)
};

struct LinkSpec {
  std::string name;          // "nvlink", "ib400", "tcp"
  double bandwidth_gbps = 0; // GB/s per direction achievable for KV transfer
  double latency_us = 0;     // per transfer setup/first-byte latency
};

// Lookups by the names above (case-insensitive). NotFound listing the known names otherwise.
StatusOr<GpuSpec> GpuByName(std::string_view name);
StatusOr<ModelSpec> ModelByName(std::string_view name);
StatusOr<LinkSpec> LinkByName(std::string_view name);
std::vector<std::string> KnownGpus();
std::vector<std::string> KnownModels();

// Calibration constants; defaults documented (with sources) in docs/simulator.md.
struct PerfConstants {
  double prefill_mfu = 0.5;          // fraction of peak FLOP/s reached by prefill
  double decode_hbm_efficiency = 0.8;  // fraction of HBM bandwidth reached by decode steps
  double step_overhead_s = 0.002;    // per engine step (scheduling, launch, sampling)
  double memory_utilization = 0.9;   // fraction of HBM the engine may use (weights + KV)
  bool fp8_weights = false;          // weights (and GEMMs) in FP8: 1 byte/param, fp8 FLOP/s
  // ---- added by the perf model (H3) ----
  double allreduce_latency_s = 8e-6;  // fixed cost of one TP all-reduce (NCCL/custom, NVLink)
  double activation_reserve_gb = 1.0; // per GPU, kept out of the KV pool (activations, graphs)
  // CPU cost per layer of launching a step's kernels one by one (eager PyTorch: ~15 kernels per
  // layer at ~10 us each). Only steps that carry prefill tokens run eagerly; decode-only steps
  // replay a captured CUDA graph (vLLM captures graphs for decode-only batches). An eager step
  // takes max(GPU time, layers x this), since launches overlap with the kernels they queue.
  double eager_launch_s_per_layer = 150e-6;
};

class PerfModel {
 public:
  // InvalidArgument if tp is 0 or not a power of two <= 8, or the weights do not fit in
  // tp * mem_gb * memory_utilization.
  static StatusOr<PerfModel> Make(const GpuSpec& gpu, const ModelSpec& model, uint32_t tp,
                                  const PerfConstants& constants = {});

  // One prefill pass over `new_tokens` uncached tokens whose prompt already has `cached_tokens`
  // of KV (attention reads those). Batch of one sequence.
  double PrefillSeconds(uint32_t new_tokens, uint32_t cached_tokens) const;
  // A chunked/batched prefill pass: total new tokens and the sum over sequences of
  // new_tokens * (cached + new_tokens / 2) (the attention term), from which PrefillSeconds is
  // the single-sequence case.
  double PrefillBatchSeconds(uint64_t new_tokens, double attention_token_pairs) const;
  // One decode step of `batch` sequences whose KV totals `context_tokens` tokens.
  double DecodeStepSeconds(uint32_t batch, uint64_t context_tokens) const;
  // Tokens of KV the instance holds (all tp GPUs together) after weights.
  uint64_t KvCapacityTokens() const;
  uint64_t KvBytes(uint64_t tokens) const;  // model.kv_bytes_per_token * tokens
  // Moving `bytes` of KV over `link` between two instances (latency + bytes / bandwidth).
  static double TransferSeconds(uint64_t bytes, const LinkSpec& link);

  // ---- added by the perf model (H3) ----
  // Bytes of weights the instance holds (all tp GPUs) and bytes one decode step of `batch`
  // sequences reads (dense: all weights; MoE: the non-expert part plus the experts the batch's
  // tokens touch, 1 - (1 - k/E)^batch of them in expectation).
  double WeightBytes() const;
  double DecodeWeightBytesRead(uint32_t batch) const;
  // Time of the 2 * layers all-reduces of a pass over `tokens` tokens (0 when tp == 1).
  double AllReduceSeconds(uint64_t tokens) const;
  // One mixed (chunked-prefill) step: `decode_batch` decode sequences with `context_tokens` of KV
  // plus `prefill_tokens` new prompt tokens with `attention_token_pairs` (as PrefillBatchSeconds).
  // Roofline per kernel class, summed (the kernels run one after another):
  //   max(GEMM FLOPs of all tokens, weight reads) + prefill attention FLOPs + decode KV reads
  //   + all-reduces; a step with prefill tokens runs eagerly: max(that, eager launch time);
  //   + step_overhead_s.
  double MixedStepSeconds(uint32_t decode_batch, uint64_t context_tokens, uint64_t prefill_tokens,
                          double attention_token_pairs) const;

  const GpuSpec& gpu() const { return gpu_; }
  const ModelSpec& model() const { return model_; }
  uint32_t tp() const { return tp_; }
  const PerfConstants& constants() const { return constants_; }

 private:
  PerfModel() = default;
  GpuSpec gpu_;
  ModelSpec model_;
  uint32_t tp_ = 1;
  PerfConstants constants_;
  uint64_t kv_capacity_tokens_ = 0;
};

// ---- Calibration helpers (added by H3): steady-state analytic estimates from the rooflines ----
// Not the simulator: no queueing, no arrival noise, no scheduler. Used for the first sanity check
// against Dynamo's disaggregation points (docs/simulator.md "Performance model") and as a
// closed-form baseline the engine's results can be compared with.
struct SteadyStatePoint {
  std::string layout;              // "agg tp4", "disagg 1xtp4 prefill : 1xtp4 decode", ...
  uint32_t batch = 0;              // concurrent decode sequences per (decode) instance
  double itl_s = 0;                // mean inter-token latency seen by a user
  double tokens_per_s_user = 0;    // 1 / itl_s
  double tokens_per_s_gpu = 0;     // output tokens/s per GPU of the whole layout
  double ttft_s = 0;               // prefill time of one prompt (no queueing)
};

// Aggregated instance with `batch` sequences in decode, admitting batch/osl prompts per step to
// stay in steady state. Mean ITL (the user's tokens/s = 1/ITL):
//  - chunked, chunk_tokens == 0 (ideal smoothing): every step carries batch*isl/osl prompt
//    tokens: ITL = MixedStepSeconds(batch, ctx, batch*isl/osl, ...);
//  - chunked, chunk_tokens = C (vLLM's max_num_batched_tokens): a fraction f = batch*isl/osl/C
//    of the steps carry a C-token chunk: ITL = f * Mixed(batch, ctx, C) + (1-f) * Decode(batch);
//  - not chunked: prefills run as separate passes that stall decode:
//    ITL = DecodeStep + batch/osl * PrefillSeconds(isl).
// InvalidArgument for isl/osl/batch 0; ResourceExhausted if the batch's KV does not fit.
StatusOr<SteadyStatePoint> AggregatedSteadyState(const PerfModel& m, uint32_t isl, uint32_t osl,
                                                 uint32_t batch, bool chunked = true,
                                                 uint32_t chunk_tokens = 0);

// Disaggregated layout: `prefill_instances` of `prefill` and `decode_instances` of `decode`, decode
// at `batch` per instance. Output rate = min(prefill capacity * osl, decode capacity); tokens/s/GPU
// divides by all GPUs of both pools. KV transfer is assumed overlapped (adds TTFT, not GPU time).
StatusOr<SteadyStatePoint> DisaggregatedSteadyState(const PerfModel& prefill,
                                                    uint32_t prefill_instances,
                                                    const PerfModel& decode,
                                                    uint32_t decode_instances, uint32_t isl,
                                                    uint32_t osl, uint32_t batch);

// The best tokens/s/GPU among `points` whose tokens/s/user >= min_tokens_per_s_user (nullopt-like
// NotFound when none qualifies).
StatusOr<SteadyStatePoint> BestAtUserRate(const std::vector<SteadyStatePoint>& points,
                                          double min_tokens_per_s_user);

}  // namespace kvmesh::sim
