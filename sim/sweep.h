// Simulator sweep mode (docs/simulator.md, "Sweeps and calibration"): runs the fleet simulator
// (RunFleetSim, the real router policies and block pools) over a grid of fleet layouts under one
// GPU budget — aggregated (G/tp instances of TP tp) and disaggregated (Np prefill x TP tp_p +
// Nd decode x TP tp_d = G) — times batch limits, prefill chunk budgets and request rates, and
// reduces every run to a point (tokens/s/user, tokens/s/GPU). The Pareto frontier of those points
// (both coordinates maximised) is computed separately for aggregated and disaggregated layouts;
// ValueAt() reads a frontier at a per-user speed, which is how the published disaggregation gains
// (Dynamo: +30% on one 8xH100 node at ~50 tok/s/user, ~2x on two at ~40) are compared.
//
// Invariants: a frontier is sorted by tokens/s/user ascending with tokens/s/GPU strictly
// descending, and no point of its input dominates a frontier point; points whose config cannot run
// (the model does not fit, TP not allowed) are listed in SweepResult::skipped, never silently
// dropped; the same options give the same result (RunFleetSim is deterministic per seed).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "sim/fleet_sim.h"

namespace kvmesh::sim {

enum class SweepLayout { kAggregated, kDisaggregated };

const char* SweepLayoutName(SweepLayout layout);  // "agg" | "disagg"

struct SweepOptions {
  std::string gpu = "h100";
  std::string model = "llama-3.1-70b";
  bool fp8 = false;
  PerfConstants constants;              // fp8 above overrides constants.fp8_weights
  uint32_t gpus = 8;                    // GPU budget of every layout
  std::vector<uint32_t> tp = {1, 2, 4, 8};
  bool aggregated = true;
  bool disaggregated = true;
  // (prefill instances, decode instances); empty = every split with Np*tp_p + Nd*tp_d == gpus.
  // A given ratio is scaled to the largest multiple that fits the budget exactly.
  std::vector<std::pair<uint32_t, uint32_t>> pd_ratios;
  std::vector<uint32_t> max_batch = {8, 16, 32, 64, 128};  // aggregated / decode instances
  std::vector<uint32_t> max_prefill_tokens = {8192};      // chunk budget per engine step
  uint32_t prefill_max_batch = 256;     // prefill instances' max_batch (not swept)
  // Workload (synthetic, Poisson).
  uint32_t isl = 3000;
  uint32_t osl = 150;
  double shared_prefix_ratio = 0;
  uint32_t num_prefixes = 1;
  std::vector<double> rates;            // fleet requests/s; empty = rates_per_gpu x gpus
  std::vector<double> rates_per_gpu = {0.25, 0.5, 1, 2};
  uint64_t num_requests = 400;          // per point
  // Non-empty: closed-loop points at these fleet concurrencies (SimConfig::concurrency) instead
  // of Poisson rates, as fixed-concurrency benchmarks (genai-perf, Dynamo's plots) measure.
  std::vector<uint32_t> concurrency;
  // Fleet / router.
  std::string link = "nvlink";
  std::string policy = "kv:kvmesh";     // RoutingForPolicy
  std::string disagg_mode = "conditional";
  uint32_t max_prefill_queue = 0;       // 0 = unbounded: every prefill of a disagg layout is remote
  uint64_t seed = 1;
  double max_ttft_p90_s = 0;            // > 0: points over this TTFT p90 stay off the frontiers

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

// One simulated configuration, reduced.
struct SweepPoint {
  SweepLayout layout = SweepLayout::kAggregated;
  uint32_t prefill_instances = 0, prefill_tp = 0;  // 0 for aggregated
  uint32_t instances = 0, tp = 0;                  // aggregated or decode instances
  uint32_t gpus = 0;
  uint32_t max_batch = 0, max_prefill_tokens = 0;
  double rate = 0;                                 // requests/s offered (open loop)
  uint32_t concurrency = 0;                        // requests kept in the fleet (closed loop)
  uint64_t requests = 0, completed = 0, rejected = 0, remote_prefills = 0;
  double tokens_per_s_per_gpu = 0;
  double tokens_per_s_per_user = 0;
  double ttft_p50_s = 0, ttft_p90_s = 0, itl_p90_s = 0;
  double wall_s = 0;
  bool on_frontier = false;
  std::string label;  // e.g. "disagg 2xTP2 P + 1xTP4 D b32 c8192 r8"
};

struct FrontierPoint {
  double user = 0;   // tokens/s/user (x)
  double gpu = 0;    // tokens/s/GPU (y)
  size_t index = 0;  // into the input (SweepResult::points)
};

// Pareto frontier maximising both coordinates: sorted by user ascending, gpu strictly descending.
// A point is dropped when another has user >= and gpu >= with one strictly greater; of identical
// points the first is kept. Non-finite coordinates are ignored.
std::vector<FrontierPoint> ParetoFrontier(std::span<const FrontierPoint> points);

enum class FrontierRead { kLinear, kStep };

// Best tokens/s/GPU at tokens/s/user >= user_rate. kStep: the best frontier point at or above
// user_rate; kLinear: linear interpolation between the two frontier points around user_rate (the
// frontier line of a chart). Below the frontier's first point both give its gpu value; nullopt
// when the frontier is empty or no point reaches user_rate.
std::optional<double> ValueAt(std::span<const FrontierPoint> frontier, double user_rate,
                              FrontierRead read = FrontierRead::kLinear);

struct SweepResult {
  SweepOptions options;
  std::vector<SweepPoint> points;
  std::vector<std::string> skipped;  // "label: reason" for configs RunFleetSim refused
  std::vector<FrontierPoint> agg_frontier, disagg_frontier;
  double wall_s = 0;
};

// The configs a sweep runs, in order (rate innermost), without running them.
std::vector<SweepPoint> PlanSweep(const SweepOptions& options);

// Runs every planned point; `on_point` (optional) sees each point as it finishes. Errors:
// InvalidArgument for bad options; Internal when a run breaks a pool invariant.
StatusOr<SweepResult> RunSweep(const SweepOptions& options,
                               const std::function<void(const SweepPoint&)>& on_point = {});

std::string SweepPointJson(const SweepPoint& p);        // one line
std::string SweepResultJson(const SweepResult& result, double user_rate);  // whole document
// {"summary":true,"user_rate":..,"agg_at":..,"disagg_at":..,"ratio":..,...}; nulls when unreachable.
std::string SweepSummaryJson(const SweepResult& result, double user_rate);
// Self-contained SVG: points, both frontiers, a marker at user_rate, axes, legend.
std::string SweepSvg(const SweepResult& result, double user_rate, const std::string& title = "");

// `kvmesh sim sweep [flags]` (args exclude the command words). 0 ok, 1 runtime failure, 2 usage.
// Flags: sim/sim_options.h (SweepFlags).
int RunSweepCommand(std::span<char* const> args);

}  // namespace kvmesh::sim
