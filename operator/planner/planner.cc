#include "operator/planner/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace kvmesh::planner {

namespace {

std::string Fmt(const char* format, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, a);
  return buf;
}

// "3.1", "0.42", "12": short and stable for reasons.
std::string Num(double v) {
  if (!std::isfinite(v)) return "n/a";
  if (std::fabs(v) >= 100) return Fmt("%.0f", v);
  if (std::fabs(v) >= 10) return Fmt("%.1f", v);
  return Fmt("%.2f", v);
}

std::string Ms(double seconds) { return Fmt("%.0fms", seconds * 1000); }

bool Finite(double v) { return std::isfinite(v); }

Status CheckPool(const char* name, const PoolLimits& p) {
  if (!p.enabled) return Status::Ok();
  if (p.min_replicas < 0 || p.max_replicas < p.min_replicas || p.max_replicas < 1) {
    return InvalidArgumentError(std::string(name) + ": want 0 <= min_replicas <= max_replicas and max >= 1, got min " +
                                std::to_string(p.min_replicas) + " max " + std::to_string(p.max_replicas));
  }
  return Status::Ok();
}

}  // namespace

Status PlannerConfig::Validate() const {
  auto nonneg = [](const char* field, double v) -> Status {
    if (!Finite(v) || v < 0) return InvalidArgumentError(std::string(field) + " must be >= 0, got " + Num(v));
    return Status::Ok();
  };
  KVMESH_RETURN_IF_ERROR(nonneg("ttft_target_s", ttft_target_s));
  KVMESH_RETURN_IF_ERROR(nonneg("itl_target_s", itl_target_s));
  KVMESH_RETURN_IF_ERROR(nonneg("scale_up_window_s", scale_up_window_s));
  KVMESH_RETURN_IF_ERROR(nonneg("scale_down_window_s", scale_down_window_s));
  KVMESH_RETURN_IF_ERROR(CheckPool("prefill", prefill));
  KVMESH_RETURN_IF_ERROR(CheckPool("decode", decode));
  if (predictor_window < 1) {
    return InvalidArgumentError("predictor_window must be >= 1, got " + std::to_string(predictor_window));
  }
  if (!Finite(interval_s) || interval_s <= 0) return InvalidArgumentError("interval_s must be > 0, got " + Num(interval_s));
  if (!Finite(tolerance) || tolerance < 0 || tolerance >= 1) {
    return InvalidArgumentError("tolerance must be in [0, 1), got " + Num(tolerance));
  }
  if (max_scale_up_step < 0) return InvalidArgumentError("max_scale_up_step must be >= 0, got " + std::to_string(max_scale_up_step));
  if (max_scale_down_step < 0) {
    return InvalidArgumentError("max_scale_down_step must be >= 0, got " + std::to_string(max_scale_down_step));
  }
  if (!Finite(correction_smoothing) || correction_smoothing <= 0 || correction_smoothing > 1) {
    return InvalidArgumentError("correction_smoothing must be in (0, 1], got " + Num(correction_smoothing));
  }
  if (!Finite(correction_min) || !Finite(correction_max) || correction_min <= 0 || correction_max < correction_min ||
      correction_min > 1 || correction_max < 1) {
    return InvalidArgumentError("want 0 < correction_min <= 1 <= correction_max, got " + Num(correction_min) + " and " +
                                Num(correction_max));
  }
  return Status::Ok();
}

StatusOr<PlannerConfig> PlannerConfig::FromGraph(const graph::InferenceGraph& graph) {
  PlannerConfig c;
  c.ttft_target_s = graph.spec.sla.ttft_ms / 1000.0;
  c.itl_target_s = graph.spec.sla.itl_ms / 1000.0;
  auto limits = [](const graph::PoolSpec& p) {
    PoolLimits l;
    l.enabled = p.replicas > 0;
    l.min_replicas = std::max<int32_t>(1, p.min_replicas);
    l.max_replicas = std::max(l.min_replicas, p.max_replicas > 0 ? p.max_replicas : p.replicas);
    return l;
  };
  c.prefill = limits(graph.spec.prefill);
  c.decode = limits(graph.spec.decode);
  KVMESH_RETURN_IF_ERROR(c.Validate());
  return c;
}

StatusOr<std::unique_ptr<Planner>> Planner::Create(PlannerConfig config, std::shared_ptr<const PerfProfile> profile) {
  KVMESH_RETURN_IF_ERROR(config.Validate());
  if (!profile) return InvalidArgumentError("planner: no performance profile");
  KVMESH_ASSIGN_OR_RETURN(auto rate, MakeLoadPredictor(config.predictor, config.predictor_window));
  KVMESH_ASSIGN_OR_RETURN(auto isl, MakeLoadPredictor(config.predictor, config.predictor_window));
  KVMESH_ASSIGN_OR_RETURN(auto osl, MakeLoadPredictor(config.predictor, config.predictor_window));
  return std::unique_ptr<Planner>(
      new Planner(std::move(config), std::move(profile), std::move(rate), std::move(isl), std::move(osl)));
}

Planner::Planner(PlannerConfig config, std::shared_ptr<const PerfProfile> profile, std::unique_ptr<LoadPredictor> rate,
                 std::unique_ptr<LoadPredictor> isl, std::unique_ptr<LoadPredictor> osl)
    : config_(std::move(config)),
      profile_(std::move(profile)),
      rate_(std::move(rate)),
      isl_(std::move(isl)),
      osl_(std::move(osl)) {}

void Planner::UpdateCorrections(const LoadSample& s) {
  auto blend = [&](double& factor, double ratio) {
    if (!Finite(ratio) || ratio <= 0) return;
    ratio = std::clamp(ratio, config_.correction_min, config_.correction_max);
    factor = config_.correction_smoothing * ratio + (1 - config_.correction_smoothing) * factor;
  };
  if (s.request_rate <= 0) return;
  if (config_.prefill.enabled && s.prefill_replicas > 0 && s.mean_isl > 0 && Finite(s.ttft_p90_s) && s.ttft_p90_s > 0) {
    const double load = s.request_rate * s.mean_isl / s.prefill_replicas;
    blend(ttft_correction_, s.ttft_p90_s / profile_->ExpectedTtft(s.mean_isl, load));
  }
  if (config_.decode.enabled && s.decode_replicas > 0 && s.mean_osl > 0 && Finite(s.itl_p90_s) && s.itl_p90_s > 0) {
    const double total = Finite(s.decode_concurrency) && s.decode_concurrency > 0
                             ? s.decode_concurrency
                             : s.request_rate * s.mean_osl * s.itl_p90_s;  // Little's law
    const double per_replica = std::max(1.0, total / s.decode_replicas);
    blend(itl_correction_, s.itl_p90_s / profile_->ExpectedItl(s.mean_isl + s.mean_osl / 2, per_replica));
  }
}

Decision Planner::Decide(double now_s, const LoadSample& s) {
  auto bad = [](double v) { return !Finite(v) || v < 0; };
  if (bad(s.request_rate) || bad(s.mean_isl) || bad(s.mean_osl) || s.prefill_replicas < 0 || s.decode_replicas < 0) {
    return Hold(now_s, InvalidArgumentError("sample has a negative or non-finite rate, ISL, OSL or replica count"));
  }
  prefill_state_.last_current = s.prefill_replicas;
  decode_state_.last_current = s.decode_replicas;
  UpdateCorrections(s);
  rate_->Observe(s.time_s, s.request_rate);
  if (s.request_rate > 0) {
    isl_->Observe(s.time_s, s.mean_isl);
    osl_->Observe(s.time_s, s.mean_osl);
  }
  const double at = now_s + config_.interval_s;
  Decision d;
  d.time_s = now_s;
  d.predicted_request_rate = rate_->Predict(at).value_or(0);
  d.predicted_isl = isl_->Predict(at).value_or(0);
  d.predicted_osl = osl_->Predict(at).value_or(0);
  d.ttft_correction = ttft_correction_;
  d.itl_correction = itl_correction_;
  const double rate = d.predicted_request_rate;
  const std::string load = "predicted " + Num(rate) + " req/s x ";

  // Prefill.
  if (!config_.prefill.enabled) {
    d.prefill = PoolDecision{s.prefill_replicas, s.prefill_replicas, 0, "hold", "hold: no prefill pool"};
  } else if (config_.ttft_target_s <= 0) {
    d.prefill = DecidePool(now_s, config_.prefill, prefill_state_, s.prefill_replicas, kUnknown, "no TTFT target in spec.sla");
  } else {
    const double target = config_.ttft_target_s / ttft_correction_;
    const PrefillCapacity cap = profile_->MaxPrefill(d.predicted_isl, target);
    double needed = 0;
    std::string why;
    if (rate <= 0 || d.predicted_isl <= 0) {
      why = "no predicted load";
    } else if (!cap.attainable || cap.tokens_per_s <= 0) {
      needed = std::numeric_limits<double>::infinity();
      why = load + "ISL " + Num(d.predicted_isl) + ": TTFT " + Ms(config_.ttft_target_s) +
            " unattainable per the profile (corrected target " + Ms(target) + ")";
    } else {
      needed = rate * d.predicted_isl / cap.tokens_per_s;
      why = load + "ISL " + Num(d.predicted_isl) + " needs " + Num(needed) + " prefill replicas at TTFT " +
            Ms(config_.ttft_target_s) + " (" + Num(cap.tokens_per_s) + " tok/s each, correction " +
            Num(ttft_correction_) + ")";
    }
    d.prefill = DecidePool(now_s, config_.prefill, prefill_state_, s.prefill_replicas, needed, why);
  }

  // Decode.
  if (!config_.decode.enabled) {
    d.decode = PoolDecision{s.decode_replicas, s.decode_replicas, 0, "hold", "hold: no decode pool"};
  } else if (config_.itl_target_s <= 0) {
    d.decode = DecidePool(now_s, config_.decode, decode_state_, s.decode_replicas, kUnknown, "no ITL target in spec.sla");
  } else {
    const double target = config_.itl_target_s / itl_correction_;
    const double context = d.predicted_isl + d.predicted_osl / 2;
    const DecodeCapacity cap = profile_->MaxDecode(context, target);
    double needed = 0;
    std::string why;
    if (rate <= 0 || d.predicted_osl <= 0) {
      why = "no predicted load";
    } else if (!cap.attainable || cap.tokens_per_s <= 0) {
      needed = std::numeric_limits<double>::infinity();
      why = load + "OSL " + Num(d.predicted_osl) + ": ITL " + Ms(config_.itl_target_s) +
            " unattainable per the profile (corrected target " + Ms(target) + ")";
    } else {
      needed = rate * d.predicted_osl / cap.tokens_per_s;
      why = load + "OSL " + Num(d.predicted_osl) + " needs " + Num(needed) + " decode replicas at ITL " +
            Ms(config_.itl_target_s) + " (" + Num(cap.tokens_per_s) + " tok/s, concurrency " + Num(cap.concurrency) +
            " each at context " + Num(context) + ", correction " + Num(itl_correction_) + ")";
    }
    d.decode = DecidePool(now_s, config_.decode, decode_state_, s.decode_replicas, needed, why);
  }
  return d;
}

PoolDecision Planner::DecidePool(double now_s, const PoolLimits& limits, PoolState& state, int32_t current,
                                 double needed, const std::string& why_needed) {
  PoolDecision p;
  p.current = current;
  p.needed = needed;
  const int32_t lo = limits.min_replicas, hi = limits.max_replicas;
  if (std::isnan(needed)) {  // no target: only enforce the limits
    p.replicas = std::clamp(current, lo, hi);
    p.direction = p.replicas > current ? "up" : p.replicas < current ? "down" : "hold";
    p.reason = (p.direction == "hold" ? "hold: " : "scale_" + p.direction + ": limits [" + std::to_string(lo) + ", " +
                                                        std::to_string(hi) + "]; ") +
               why_needed;
    return p;
  }

  // Recommendation: ceil(needed), kept at current inside the tolerance band.
  int32_t rec;
  bool in_band = false;
  if (std::isinf(needed)) {
    rec = hi;
  } else {
    // A relative 1e-6 absorbs the bisection's rounding: 3.000000001 needed is 3 replicas.
    rec = static_cast<int32_t>(std::min<double>(std::ceil(needed * (1 - 1e-6)), 1 << 30));
    if (current > 0 && std::fabs(needed / current - 1) <= config_.tolerance) {
      rec = current;
      in_band = true;
    }
  }
  rec = std::clamp(rec, lo, hi);

  // HPA stabilization over the recommendations in the windows.
  state.history.emplace_back(now_s, rec);
  const double keep = std::max(config_.scale_up_window_s, config_.scale_down_window_s);
  while (!state.history.empty() && state.history.front().first < now_s - keep) state.history.pop_front();
  int32_t up = rec, down = rec;
  for (const auto& [t, r] : state.history) {
    if (t >= now_s - config_.scale_up_window_s) up = std::min(up, r);
    if (t >= now_s - config_.scale_down_window_s) down = std::max(down, r);
  }

  int32_t target = current;
  if (up > current) {
    target = up;
    if (config_.max_scale_up_step > 0) target = std::min(target, current + config_.max_scale_up_step);
  } else if (down < current) {
    target = down;
    if (config_.max_scale_down_step > 0) target = std::max(target, current - config_.max_scale_down_step);
  }
  target = std::clamp(target, lo, hi);
  p.replicas = target;
  p.direction = target > current ? "up" : target < current ? "down" : "hold";

  std::string r = p.direction == "hold" ? "hold: " : "scale_" + p.direction + ": ";
  r += why_needed;
  if (p.direction == "up") {
    r += "; " + std::to_string(current) + " -> " + std::to_string(target);
    if (target < up) r += " (step limit " + std::to_string(config_.max_scale_up_step) + ")";
    if (target == hi && rec >= hi) r += " (at maxReplicas " + std::to_string(hi) + ")";
  } else if (p.direction == "down") {
    r += "; " + std::to_string(current) + " -> " + std::to_string(target);
    if (target > down) r += " (step limit " + std::to_string(config_.max_scale_down_step) + ")";
    if (target == lo) r += " (at minReplicas " + std::to_string(lo) + ")";
  } else if (in_band) {
    r += "; within " + Fmt("%g", config_.tolerance * 100) + "% of " + std::to_string(current);
  } else if (rec < current) {
    r += "; scale-down waits for the " + Num(config_.scale_down_window_s) + "s stabilization window (highest recommendation " +
         std::to_string(down) + ")";
  } else if (rec > current) {
    r += "; scale-up waits for the " + Num(config_.scale_up_window_s) + "s stabilization window";
  } else if (current == hi && rec >= hi) {
    r += "; at maxReplicas " + std::to_string(hi);
  } else if (current == lo && rec <= lo) {
    r += "; at minReplicas " + std::to_string(lo);
  }
  p.reason = std::move(r);
  return p;
}

Decision Planner::Hold(double now_s, const Status& why) {
  Decision d;
  d.time_s = now_s;
  d.metrics_ok = false;
  d.ttft_correction = ttft_correction_;
  d.itl_correction = itl_correction_;
  auto hold = [&](const PoolLimits& limits, const PoolState& state, const char* pool) {
    PoolDecision p;
    p.current = state.last_current >= 0 ? state.last_current : (limits.enabled ? limits.min_replicas : 0);
    p.replicas = p.current;
    p.direction = "hold";
    p.reason = std::string("hold: metrics unavailable (") + why.message() + "); keeping " + std::to_string(p.current) +
               " " + pool + " replicas";
    return p;
  };
  d.prefill = hold(config_.prefill, prefill_state_, "prefill");
  d.decode = hold(config_.decode, decode_state_, "decode");
  return d;
}

}  // namespace kvmesh::planner
