// Planner: the SLA planner's decision core. Every adjustment interval the caller (the operator's
// reconciler, `kvmesh up`, or the simulator) passes the load observed over the last interval; the
// planner predicts the next interval's load (request rate, mean ISL, mean OSL), converts it to
// prefill and decode replica counts with a PerfProfile corrected by observed/expected latency
// ratios, and stabilizes the result so the pools do not flap:
//
//   prefill_needed = rate * isl / MaxPrefill(isl, ttft_target / ttft_correction).tokens_per_s
//   decode_needed  = rate * osl / MaxDecode(isl + osl / 2, itl_target / itl_correction).tokens_per_s
//
// then a tolerance band (no change while needed/current is within +-tolerance), Kubernetes HPA
// stabilization (scale up to the lowest recommendation of the scale-up window, down to the highest
// of the scale-down window), a maximum step per decision, and min/max clamping. docs/planner.md
// has the details and the defaults.
//
// Invariants: a decision's replicas are always within [min_replicas, max_replicas] of its pool;
// with no usable sample (Hold) the planner keeps the current replicas and says why in the reason;
// time is passed in by the caller (no clock inside, no sleeping). Not thread-safe: one Planner per
// graph, called from one thread.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "common/inference_graph.h"
#include "common/status.h"
#include "operator/planner/load_predictor.h"
#include "operator/planner/perf_profile.h"

namespace kvmesh::planner {

inline constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();

// Load observed over one interval (what a MetricsSource returns). Latencies are NaN when no
// request finished in the interval (nothing to measure).
struct LoadSample {
  double time_s = 0;        // end of the interval, on the caller's clock
  double request_rate = 0;  // requests/s
  double mean_isl = 0;      // prompt tokens per request
  double mean_osl = 0;      // completion tokens per request
  double ttft_p90_s = kUnknown;
  double itl_p90_s = kUnknown;
  int32_t prefill_replicas = 0;  // replicas serving during the interval
  int32_t decode_replicas = 0;
  // Sequences decoding at once over the whole decode pool (mean), if known; NaN = estimate it
  // from Little's law as rate * osl * itl_p90.
  double decode_concurrency = kUnknown;
};

struct PoolLimits {
  bool enabled = true;  // false: the pool does not exist (e.g. aggregated serving has no prefill)
  int32_t min_replicas = 1;
  int32_t max_replicas = 1;
};

struct PlannerConfig {
  double ttft_target_s = 0.5;  // TTFT p90 target; 0 = none (the prefill pool is held)
  double itl_target_s = 0.05;  // ITL p90 target; 0 = none (the decode pool is held)
  PoolLimits prefill;
  PoolLimits decode;

  std::string predictor = "linear_trend";  // constant | moving_average | linear_trend
  int predictor_window = 6;                // samples the predictor looks at
  double interval_s = 30;                  // time between decisions = prediction horizon
  double tolerance = 0.1;                  // hysteresis band around the current replicas
  double scale_up_window_s = 0;            // HPA scaleUp stabilization (0 = act at once)
  double scale_down_window_s = 300;        // HPA scaleDown stabilization
  int32_t max_scale_up_step = 4;           // replicas added per decision; 0 = unlimited
  int32_t max_scale_down_step = 1;         // replicas removed per decision; 0 = unlimited
  double correction_smoothing = 0.5;       // weight of the newest observed/expected ratio (EMA)
  double correction_min = 0.25;            // clamp of the correction factors
  double correction_max = 4.0;

  // InvalidArgument naming the bad field.
  Status Validate() const;

  // Targets from spec.sla (ms -> s) and limits from spec.prefill/spec.decode: min =
  // max(1, minReplicas) (no scale to zero: a request would have nowhere to go), max = maxReplicas
  // or replicas when maxReplicas is 0 (no autoscaling); a pool with replicas 0 is disabled. The
  // knobs keep their defaults. Errors from Validate().
  static StatusOr<PlannerConfig> FromGraph(const graph::InferenceGraph& graph);
};

struct PoolDecision {
  int32_t current = 0;        // replicas when the decision was made
  int32_t replicas = 0;       // desired replicas (within the pool's limits)
  double needed = 0;          // fractional replicas the predicted load needs (before stabilizing)
  std::string direction;      // "up", "down" or "hold"
  std::string reason;         // one line for the graph's status and the log
};

struct Decision {
  double time_s = 0;
  bool metrics_ok = true;  // false: made by Hold(), replicas unchanged
  PoolDecision prefill;
  PoolDecision decode;
  double predicted_request_rate = 0;
  double predicted_isl = 0;
  double predicted_osl = 0;
  double ttft_correction = 1;  // observed / expected TTFT (smoothed) used for this decision
  double itl_correction = 1;   // observed / expected ITL (smoothed)
};

class Planner {
 public:
  // The planner shares ownership of `profile` (the simulator may share one among many graphs).
  // Errors: config.Validate(), a null profile, or an unknown predictor name.
  static StatusOr<std::unique_ptr<Planner>> Create(PlannerConfig config,
                                                   std::shared_ptr<const PerfProfile> profile);

  // Observes `sample` (updates the predictors and the correction factors) and decides the
  // replicas for the next interval at time `now_s`. A sample with a non-finite or negative rate,
  // ISL or OSL is treated as Hold(now_s, InvalidArgument(...)).
  Decision Decide(double now_s, const LoadSample& sample);

  // The metrics source failed: keep the current replicas (the last sample's, or the minimum
  // before any sample), and say why in the reasons. Never scales.
  Decision Hold(double now_s, const Status& why);

  const PlannerConfig& config() const { return config_; }
  double ttft_correction() const { return ttft_correction_; }
  double itl_correction() const { return itl_correction_; }

 private:
  struct PoolState {
    std::deque<std::pair<double, int32_t>> history;  // (time, recommendation), oldest first
    int32_t last_current = -1;                       // -1 = never seen
  };

  Planner(PlannerConfig config, std::shared_ptr<const PerfProfile> profile,
          std::unique_ptr<LoadPredictor> rate, std::unique_ptr<LoadPredictor> isl,
          std::unique_ptr<LoadPredictor> osl);

  void UpdateCorrections(const LoadSample& s);
  // Stabilizes `needed` for one pool and writes the decision.
  PoolDecision DecidePool(double now_s, const PoolLimits& limits, PoolState& state, int32_t current,
                          double needed, const std::string& why_needed);

  const PlannerConfig config_;
  const std::shared_ptr<const PerfProfile> profile_;
  std::unique_ptr<LoadPredictor> rate_, isl_, osl_;
  double ttft_correction_ = 1;
  double itl_correction_ = 1;
  PoolState prefill_state_, decode_state_;
};

}  // namespace kvmesh::planner
