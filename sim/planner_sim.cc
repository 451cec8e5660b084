#include "sim/planner_sim.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "operator/planner/perf_profile.h"
#include "sim/sim_options.h"

namespace kvmesh::sim {
namespace {

uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class RampWorkload final : public Workload {
 public:
  explicit RampWorkload(const RampOptions& o) : o_(o), state_(Mix(o.seed)) {
    end_ = o_.ramp_up_s + o_.hold_s + o_.ramp_down_s + o_.tail_s;
  }

  std::optional<SimRequest> Next() override {
    // Thinning: candidates at the peak rate, kept with probability rate(t) / peak.
    for (;;) {
      t_ += -std::log(1.0 - Uniform()) / o_.peak_rate;
      if (t_ >= end_) return std::nullopt;
      if (Uniform() * o_.peak_rate >= RateAt(t_)) continue;
      SimRequest r;
      r.id = next_id_++;
      r.arrival_s = t_;
      r.input_tokens = o_.input_tokens;
      r.output_tokens = o_.output_tokens;
      uint64_t h = Mix(o_.seed ^ (r.id * 0x100000001B3ULL));
      for (uint32_t i = 0; i < o_.input_tokens / o_.block_size; ++i) {
        h = Mix(h + i + 1);
        r.hashes.push_back(h);
      }
      return r;
    }
  }

  std::string Describe() const override {
    std::ostringstream s;
    s << "ramp base=" << o_.base_rate << "/s peak=" << o_.peak_rate << "/s up=" << o_.ramp_up_s
      << "s hold=" << o_.hold_s << "s down=" << o_.ramp_down_s << "s tail=" << o_.tail_s
      << "s isl=" << o_.input_tokens << " osl=" << o_.output_tokens << " seed=" << o_.seed;
    return s.str();
  }

 private:
  double RateAt(double t) const {
    const double up = o_.ramp_up_s, hold = o_.hold_s, down = o_.ramp_down_s;
    if (t < up) return o_.base_rate + (o_.peak_rate - o_.base_rate) * (t / up);
    if (t < up + hold) return o_.peak_rate;
    if (t < up + hold + down) return o_.peak_rate - (o_.peak_rate - o_.base_rate) * ((t - up - hold) / down);
    return o_.base_rate;
  }
  double Uniform() {
    state_ = Mix(state_);
    return static_cast<double>(state_ >> 11) * 0x1.0p-53;
  }

  RampOptions o_;
  uint64_t state_;
  double t_ = 0;
  double end_ = 0;
  uint64_t next_id_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<Workload>> MakeRampWorkload(const RampOptions& o) {
  auto finite_nonneg = [](double x) { return std::isfinite(x) && x >= 0; };
  if (!finite_nonneg(o.base_rate) || !finite_nonneg(o.peak_rate) || !(o.peak_rate > 0) ||
      o.base_rate > o.peak_rate) {
    return InvalidArgumentError("ramp: want 0 <= base_rate <= peak_rate, peak_rate > 0");
  }
  if (!finite_nonneg(o.ramp_up_s) || !finite_nonneg(o.hold_s) || !finite_nonneg(o.ramp_down_s) ||
      !finite_nonneg(o.tail_s)) {
    return InvalidArgumentError("ramp: phase lengths must be finite and >= 0");
  }
  if (o.input_tokens == 0 || o.output_tokens == 0 || o.block_size == 0) {
    return InvalidArgumentError("ramp: input_tokens, output_tokens and block_size must be > 0");
  }
  return std::unique_ptr<Workload>(new RampWorkload(o));
}

PlannerSimOptions DefaultPlannerSimOptions() {
  PlannerSimOptions o;
  o.pool.role = router::WorkerRole::kAggregated;
  o.pool.gpu = "h100";
  o.pool.model = "llama-3.1-70b";
  o.pool.tp = 4;
  o.pool.count = 1;
  o.planner.ttft_target_s = 0;  // aggregated: no prefill pool to size
  o.planner.itl_target_s = 0.04;
  o.planner.prefill.enabled = false;
  o.planner.decode.min_replicas = 1;
  o.planner.decode.max_replicas = 12;
  o.planner.interval_s = 15;
  o.planner.scale_down_window_s = 60;
  o.planner.predictor = "linear_trend";
  o.planner.predictor_window = 4;
  o.base.disaggregation.mode = "off";
  return o;
}

StatusOr<PlannerSimResult> RunPlannerSim(const PlannerSimOptions& o) {
  if (o.pool.role != router::WorkerRole::kAggregated) {
    return InvalidArgumentError("planner sim: the pool must be aggregated");
  }
  KVMESH_ASSIGN_OR_RETURN(GpuSpec gpu, GpuByName(o.pool.gpu));
  KVMESH_ASSIGN_OR_RETURN(ModelSpec model, ModelByName(o.pool.model));
  KVMESH_ASSIGN_OR_RETURN(PerfModel perf, PerfModel::Make(gpu, model, o.pool.tp, o.pool.constants));
  // The planner's performance profile is the simulator's own model: TTFT of one prompt under an
  // M/M/1 prefill load, ITL of one decode step at a concurrency and mean context.
  auto shared_perf = std::make_shared<PerfModel>(perf);
  planner::CallbackPerfProfile::Options po;
  po.max_decode_concurrency = o.pool.max_batch;
  auto profile = std::make_shared<planner::CallbackPerfProfile>(
      [shared_perf](double isl, double tokens_per_s) {
        const uint32_t n = static_cast<uint32_t>(std::max(1.0, isl));
        const double service = shared_perf->PrefillSeconds(n, 0);
        const double rho = tokens_per_s * service / n;
        return rho < 1 ? service / (1 - rho) : 1e3;
      },
      [shared_perf](double context, double concurrency) {
        const uint32_t b = static_cast<uint32_t>(std::max(1.0, concurrency));
        return shared_perf->DecodeStepSeconds(b, static_cast<uint64_t>(b * std::max(1.0, context)));
      },
      po);
  KVMESH_ASSIGN_OR_RETURN(std::unique_ptr<planner::Planner> planner,
                          planner::Planner::Create(o.planner, profile));

  PlannerSimResult result;
  SimConfig config = o.base;
  config.pools = {o.pool};
  config.scale_interval_s = o.planner.interval_s;
  double last_isl = o.ramp.input_tokens, last_osl = o.ramp.output_tokens;
  config.scale = [&](const IntervalStats& st) {
    planner::LoadSample s;
    s.time_s = st.time_s;
    s.request_rate = static_cast<double>(st.arrivals) / st.interval_s;
    if (st.arrivals > 0) {
      last_isl = st.mean_isl;
      last_osl = st.mean_osl;
    }
    s.mean_isl = last_isl;  // no arrival: the last interval's lengths
    s.mean_osl = last_osl;
    s.ttft_p90_s = st.ttft_p90_s;
    s.itl_p90_s = st.itl_p90_s;
    s.prefill_replicas = 0;
    s.decode_replicas = static_cast<int32_t>(st.active[0]);
    const planner::Decision d = planner->Decide(st.time_s, s);
    result.timeline.push_back({st, d});
    return std::vector<uint32_t>{static_cast<uint32_t>(std::max(1, d.decode.replicas))};
  };
  RampOptions ramp = o.ramp;
  ramp.block_size = config.block_size;
  KVMESH_ASSIGN_OR_RETURN(auto wl, MakeRampWorkload(ramp));
  KVMESH_ASSIGN_OR_RETURN(result.sim, RunFleetSim(config, *wl, "planner"));
  return result;
}

std::string PlannerSimJson(const PlannerSimResult& r) {
  nlohmann::json timeline = nlohmann::json::array();
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  for (const PlannerTimelineEntry& e : r.timeline) {
    timeline.push_back({
        {"t", e.observed.time_s},
        {"rate", static_cast<double>(e.observed.arrivals) / e.observed.interval_s},
        {"mean_isl", e.observed.mean_isl},
        {"mean_osl", e.observed.mean_osl},
        {"completed", e.observed.completed},
        {"ttft_p90_s", num(e.observed.ttft_p90_s)},
        {"itl_p90_s", num(e.observed.itl_p90_s)},
        {"in_flight", e.observed.in_flight},
        {"active", e.observed.active.empty() ? 0u : e.observed.active[0]},
        {"draining", e.observed.draining.empty() ? 0u : e.observed.draining[0]},
        {"predicted_rate", num(e.decision.predicted_request_rate)},
        {"itl_correction", num(e.decision.itl_correction)},
        {"decode_needed", num(e.decision.decode.needed)},
        {"decode_replicas", e.decision.decode.replicas},
        {"direction", e.decision.decode.direction},
        {"reason", e.decision.decode.reason},
    });
  }
  nlohmann::json out = {{"sim", nlohmann::json::parse(SimResultJson(r.sim))}, {"timeline", timeline}};
  return out.dump();
}

int RunSimPlannerCommand(std::span<char* const> args) {
  const auto parsed = ParseCommandLine("kvmesh sim planner", ParsePlannerArgs, args, PlannerUsage);
  if (parsed.first) return *parsed.first;
  const PlannerSimOptions& o = parsed.second.options;
  const std::string& json_path = parsed.second.json;
  const bool quiet = parsed.second.quiet;
  auto r = RunPlannerSim(o);
  if (!r.ok()) {
    std::cerr << "kvmesh sim planner: " << r.status().ToString() << "\n";
    return r.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  const std::string json = PlannerSimJson(*r);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << json << "\n";
    if (!f) {
      std::cerr << "kvmesh sim planner: cannot write " << json_path << "\n";
      return 1;
    }
  }
  if (quiet) {
    std::cout << json << "\n";
    return 0;
  }
  char line[512];
  std::snprintf(line, sizeof(line), "%8s %8s %9s %9s %7s %7s %8s %9s  %s\n", "t_s", "rate",
                "ttft_p90", "itl_p90", "active", "drain", "decided", "direction", "reason");
  std::cout << line;
  for (const PlannerTimelineEntry& e : r->timeline) {
    std::snprintf(line, sizeof(line), "%8.0f %8.2f %9.3f %9.4f %7u %7u %8d %9s  %s\n",
                  e.observed.time_s, static_cast<double>(e.observed.arrivals) / e.observed.interval_s,
                  e.observed.ttft_p90_s, e.observed.itl_p90_s, e.observed.active[0],
                  e.observed.draining[0], e.decision.decode.replicas,
                  e.decision.decode.direction.c_str(), e.decision.decode.reason.c_str());
    std::cout << line;
  }
  const SimResult& s = r->sim;
  std::cout << "requests " << s.requests << " completed " << s.completed << " rejected " << s.rejected
            << " leaked_blocks " << s.leaked_blocks << " added " << s.instances_added << " removed "
            << s.instances_removed << " peak " << s.peak_instances << " gpu_s " << s.gpu_seconds
            << " ttft_p90 " << s.ttft_s.p90 << " itl_p90 " << s.itl_s.p90 << "\n";
  return 0;
}

}  // namespace kvmesh::sim
