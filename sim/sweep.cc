#include "sim/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sim/sim_options.h"
#include "sim/workload.h"

namespace kvmesh::sim {

const char* SweepLayoutName(SweepLayout layout) {
  return layout == SweepLayout::kAggregated ? "agg" : "disagg";
}

Status SweepOptions::Validate() const {
  if (gpus == 0) return InvalidArgumentError("gpus: must be > 0");
  if (tp.empty()) return InvalidArgumentError("tp: no TP size given");
  for (uint32_t t : tp) {
    if (t == 0) return InvalidArgumentError("tp: 0 is not a TP size");
  }
  if (!aggregated && !disaggregated) return InvalidArgumentError("layouts: neither agg nor disagg");
  for (const auto& [p, d] : pd_ratios) {
    if (p == 0 || d == 0) return InvalidArgumentError("pd_ratios: both sides must be >= 1");
  }
  if (max_batch.empty()) return InvalidArgumentError("max_batch: empty");
  for (uint32_t b : max_batch) {
    if (b == 0) return InvalidArgumentError("max_batch: 0");
  }
  if (max_prefill_tokens.empty()) return InvalidArgumentError("max_prefill_tokens: empty");
  for (uint32_t c : max_prefill_tokens) {
    if (c == 0) return InvalidArgumentError("max_prefill_tokens: 0");
  }
  if (prefill_max_batch == 0) return InvalidArgumentError("prefill_max_batch: 0");
  if (isl == 0 || osl == 0) return InvalidArgumentError("isl/osl: must be >= 1");
  if (!(shared_prefix_ratio >= 0 && shared_prefix_ratio <= 1)) {
    return InvalidArgumentError("shared_prefix_ratio: must be in [0, 1]");
  }
  if (num_prefixes == 0) return InvalidArgumentError("num_prefixes: 0");
  for (uint32_t n : concurrency) {
    if (n == 0) return InvalidArgumentError("concurrency: 0");
  }
  const std::vector<double>& r = rates.empty() ? rates_per_gpu : rates;
  if (r.empty() && concurrency.empty()) return InvalidArgumentError("rates: empty");
  for (double x : r) {
    if (!(x > 0) || !std::isfinite(x)) return InvalidArgumentError("rates: each rate must be > 0");
  }
  if (num_requests == 0) return InvalidArgumentError("num_requests: 0");
  if (disagg_mode != "conditional" && disagg_mode != "always") {
    return InvalidArgumentError("disagg_mode: '" + disagg_mode + "' (conditional | always)");
  }
  if (max_ttft_p90_s < 0 || !std::isfinite(max_ttft_p90_s)) {
    return InvalidArgumentError("max_ttft_p90_s: must be >= 0");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- frontier

std::vector<FrontierPoint> ParetoFrontier(std::span<const FrontierPoint> points) {
  std::vector<FrontierPoint> v;
  for (const FrontierPoint& p : points) {
    if (std::isfinite(p.user) && std::isfinite(p.gpu)) v.push_back(p);
  }
  // user descending, then gpu descending, then input order: a sweep from the right keeps each
  // point whose gpu beats every point at or to its right.
  std::stable_sort(v.begin(), v.end(), [](const FrontierPoint& a, const FrontierPoint& b) {
    if (a.user != b.user) return a.user > b.user;
    return a.gpu > b.gpu;
  });
  std::vector<FrontierPoint> out;
  double best = -std::numeric_limits<double>::infinity();
  for (const FrontierPoint& p : v) {
    if (p.gpu > best) {
      out.push_back(p);
      best = p.gpu;
    }
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::optional<double> ValueAt(std::span<const FrontierPoint> frontier, double user_rate,
                              FrontierRead read) {
  if (frontier.empty() || !(user_rate <= frontier.back().user)) return std::nullopt;
  if (user_rate <= frontier.front().user) return frontier.front().gpu;
  size_t i = 1;
  while (frontier[i].user < user_rate) ++i;  // terminates: back().user >= user_rate
  if (read == FrontierRead::kStep || frontier[i].user == user_rate) return frontier[i].gpu;
  const FrontierPoint& a = frontier[i - 1];
  const FrontierPoint& b = frontier[i];
  const double t = (user_rate - a.user) / (b.user - a.user);
  return a.gpu + t * (b.gpu - a.gpu);
}

// ---------------------------------------------------------------- plan and run

namespace {

std::string FormatRate(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", r);
  return buf;
}

void Label(SweepPoint& p) {
  std::string s = SweepLayoutName(p.layout);
  if (p.layout == SweepLayout::kAggregated) {
    s += " " + std::to_string(p.instances) + "xTP" + std::to_string(p.tp);
  } else {
    s += " " + std::to_string(p.prefill_instances) + "xTP" + std::to_string(p.prefill_tp) + " P + " +
         std::to_string(p.instances) + "xTP" + std::to_string(p.tp) + " D";
  }
  s += " b" + std::to_string(p.max_batch) + " c" + std::to_string(p.max_prefill_tokens) +
       (p.concurrency > 0 ? " n" + std::to_string(p.concurrency) : " r" + FormatRate(p.rate));
  p.label = std::move(s);
}

std::vector<double> Rates(const SweepOptions& o) {
  if (!o.rates.empty()) return o.rates;
  std::vector<double> r;
  for (double x : o.rates_per_gpu) r.push_back(x * o.gpus);
  return r;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

std::vector<SweepPoint> PlanSweep(const SweepOptions& o) {
  std::vector<SweepPoint> plan;
  const std::vector<double> rates = Rates(o);
  auto add = [&](SweepPoint base) {
    for (uint32_t chunk : o.max_prefill_tokens) {
      for (uint32_t b : o.max_batch) {
        auto push = [&](double r, uint32_t n) {
          SweepPoint p = base;
          p.max_prefill_tokens = chunk;
          p.max_batch = b;
          p.rate = r;
          p.concurrency = n;
          p.gpus = p.prefill_instances * p.prefill_tp + p.instances * p.tp;
          Label(p);
          plan.push_back(std::move(p));
        };
        if (o.concurrency.empty()) {
          for (double r : rates) push(r, 0);
        } else {
          for (uint32_t n : o.concurrency) push(0, n);
        }
      }
    }
  };
  if (o.aggregated) {
    for (uint32_t t : o.tp) {
      if (t == 0 || o.gpus % t != 0) continue;
      SweepPoint p;
      p.layout = SweepLayout::kAggregated;
      p.instances = o.gpus / t;
      p.tp = t;
      add(p);
    }
  }
  if (o.disaggregated) {
    for (uint32_t tp_p : o.tp) {
      for (uint32_t tp_d : o.tp) {
        if (tp_p == 0 || tp_d == 0) continue;
        std::vector<std::pair<uint32_t, uint32_t>> splits;
        if (o.pd_ratios.empty()) {
          for (uint32_t nd = 1; nd * tp_d < o.gpus; ++nd) {
            const uint32_t rest = o.gpus - nd * tp_d;
            if (rest % tp_p == 0) splits.emplace_back(rest / tp_p, nd);
          }
        } else {
          for (const auto& [a, b] : o.pd_ratios) {
            const uint64_t unit = uint64_t{a} * tp_p + uint64_t{b} * tp_d;
            if (unit == 0 || o.gpus % unit != 0) continue;
            const uint32_t k = static_cast<uint32_t>(o.gpus / unit);
            splits.emplace_back(a * k, b * k);
          }
        }
        for (const auto& [np, nd] : splits) {
          SweepPoint p;
          p.layout = SweepLayout::kDisaggregated;
          p.prefill_instances = np;
          p.prefill_tp = tp_p;
          p.instances = nd;
          p.tp = tp_d;
          add(p);
        }
      }
    }
  }
  return plan;
}

namespace {

SimConfig ConfigFor(const SweepOptions& o, const SweepPoint& p,
                    const router::RouterRoutingConfig& routing) {
  SimConfig c;
  PoolConfig base;
  base.gpu = o.gpu;
  base.model = o.model;
  base.constants = o.constants;
  if (o.fp8) base.constants.fp8_weights = true;
  base.max_prefill_tokens = p.max_prefill_tokens;
  if (p.layout == SweepLayout::kAggregated) {
    PoolConfig a = base;
    a.role = router::WorkerRole::kAggregated;
    a.count = p.instances;
    a.tp = p.tp;
    a.max_batch = p.max_batch;
    c.pools.push_back(a);
  } else {
    PoolConfig pf = base;
    pf.role = router::WorkerRole::kPrefill;
    pf.count = p.prefill_instances;
    pf.tp = p.prefill_tp;
    pf.max_batch = o.prefill_max_batch;
    c.pools.push_back(pf);
    PoolConfig d = base;
    d.role = router::WorkerRole::kDecode;
    d.count = p.instances;
    d.tp = p.tp;
    d.max_batch = p.max_batch;
    c.pools.push_back(d);
  }
  c.link = o.link;
  c.routing = routing;
  c.disaggregation.mode = o.disagg_mode;
  const uint32_t unbounded = static_cast<uint32_t>(
      std::min<uint64_t>(o.num_requests + 1, std::numeric_limits<uint32_t>::max()));
  c.disaggregation.max_prefill_queue = o.max_prefill_queue == 0 ? unbounded : o.max_prefill_queue;
  // A sweep measures capacity: the router never refuses a request for being busy.
  c.max_inflight_per_worker = unbounded;
  c.seed = o.seed;
  c.concurrency = p.concurrency;
  return c;
}

bool OnFrontierCandidate(const SweepOptions& o, const SweepPoint& p) {
  if (p.completed == 0 || p.rejected > 0) return false;
  if (o.max_ttft_p90_s > 0 && p.ttft_p90_s > o.max_ttft_p90_s) return false;
  return true;
}

}  // namespace

StatusOr<SweepResult> RunSweep(const SweepOptions& options,
                               const std::function<void(const SweepPoint&)>& on_point) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  KVMESH_ASSIGN_OR_RETURN(const router::RouterRoutingConfig routing,
                          RoutingForPolicy(options.policy, router::RouterRoutingConfig{}));
  const auto start = std::chrono::steady_clock::now();
  SweepResult result;
  result.options = options;
  for (SweepPoint p : PlanSweep(options)) {
    const SimConfig config = ConfigFor(options, p, routing);
    SyntheticOptions w;
    w.rate = p.concurrency > 0 ? 1.0 : p.rate;  // closed loop: arrival times are not used
    w.num_requests = options.num_requests;
    w.input_tokens = options.isl;
    w.output_tokens = options.osl;
    w.shared_prefix_ratio = options.shared_prefix_ratio;
    w.num_prefixes = options.num_prefixes;
    w.block_size = config.block_size;
    w.seed = options.seed;
    KVMESH_ASSIGN_OR_RETURN(auto workload, MakeSyntheticWorkload(w));
    auto r = RunFleetSim(config, *workload, p.label);
    if (!r.ok()) {
      const StatusCode code = r.status().code();
      if (code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound) {
        result.skipped.push_back(p.label + ": " + r.status().message());
        continue;
      }
      return r.status();
    }
    if (!r->pool_errors.empty() || r->leaked_blocks != 0) {
      return InternalError(p.label + ": block pool invariant broken: " + r->pool_errors + " (" +
                           std::to_string(r->leaked_blocks) + " leaked blocks)");
    }
    p.gpus = r->gpus;
    p.requests = r->requests;
    p.completed = r->completed;
    p.rejected = r->rejected;
    p.remote_prefills = r->remote_prefills;
    p.tokens_per_s_per_gpu = r->output_tokens_per_s_per_gpu;
    p.tokens_per_s_per_user = r->tokens_per_s_per_user;
    p.ttft_p50_s = r->ttft_s.p50;
    p.ttft_p90_s = r->ttft_s.p90;
    p.itl_p90_s = r->itl_s.p90;
    p.wall_s = r->wall_s;
    result.points.push_back(std::move(p));
    if (on_point) on_point(result.points.back());
  }
  for (SweepLayout layout : {SweepLayout::kAggregated, SweepLayout::kDisaggregated}) {
    std::vector<FrontierPoint> candidates;
    for (size_t i = 0; i < result.points.size(); ++i) {
      const SweepPoint& p = result.points[i];
      if (p.layout != layout || !OnFrontierCandidate(options, p)) continue;
      candidates.push_back({p.tokens_per_s_per_user, p.tokens_per_s_per_gpu, i});
    }
    std::vector<FrontierPoint> f = ParetoFrontier(candidates);
    for (const FrontierPoint& fp : f) result.points[fp.index].on_frontier = true;
    (layout == SweepLayout::kAggregated ? result.agg_frontier : result.disagg_frontier) = std::move(f);
  }
  result.wall_s = Seconds(std::chrono::steady_clock::now() - start);
  return result;
}

// ---------------------------------------------------------------- JSON

namespace {

nlohmann::json PointToJson(const SweepPoint& p) {
  nlohmann::json j;
  j["label"] = p.label;
  j["layout"] = SweepLayoutName(p.layout);
  j["prefill_instances"] = p.prefill_instances;
  j["prefill_tp"] = p.prefill_tp;
  j["instances"] = p.instances;
  j["tp"] = p.tp;
  j["gpus"] = p.gpus;
  j["max_batch"] = p.max_batch;
  j["max_prefill_tokens"] = p.max_prefill_tokens;
  j["rate"] = p.rate;
  j["concurrency"] = p.concurrency;
  j["requests"] = p.requests;
  j["completed"] = p.completed;
  j["rejected"] = p.rejected;
  j["remote_prefills"] = p.remote_prefills;
  j["tokens_per_s_per_gpu"] = p.tokens_per_s_per_gpu;
  j["tokens_per_s_per_user"] = p.tokens_per_s_per_user;
  j["ttft_p50_s"] = p.ttft_p50_s;
  j["ttft_p90_s"] = p.ttft_p90_s;
  j["itl_p90_s"] = p.itl_p90_s;
  j["on_frontier"] = p.on_frontier;
  j["wall_s"] = p.wall_s;
  return j;
}

nlohmann::json Opt(std::optional<double> v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

nlohmann::json SummaryToJson(const SweepResult& r, double user_rate) {
  nlohmann::json j;
  j["summary"] = true;
  j["gpu"] = r.options.gpu;
  j["model"] = r.options.model;
  j["fp8"] = r.options.fp8;
  j["gpus"] = r.options.gpus;
  j["isl"] = r.options.isl;
  j["osl"] = r.options.osl;
  j["user_rate"] = user_rate;
  const auto agg = ValueAt(r.agg_frontier, user_rate, FrontierRead::kLinear);
  const auto dis = ValueAt(r.disagg_frontier, user_rate, FrontierRead::kLinear);
  const auto agg_s = ValueAt(r.agg_frontier, user_rate, FrontierRead::kStep);
  const auto dis_s = ValueAt(r.disagg_frontier, user_rate, FrontierRead::kStep);
  j["agg_at"] = Opt(agg);
  j["disagg_at"] = Opt(dis);
  j["ratio"] = (agg && dis && *agg > 0) ? nlohmann::json(*dis / *agg) : nlohmann::json(nullptr);
  j["agg_at_step"] = Opt(agg_s);
  j["disagg_at_step"] = Opt(dis_s);
  j["ratio_step"] =
      (agg_s && dis_s && *agg_s > 0) ? nlohmann::json(*dis_s / *agg_s) : nlohmann::json(nullptr);
  // The frontier point that gives the step value: the config to deploy.
  auto best = [&](const std::vector<FrontierPoint>& f) -> nlohmann::json {
    for (const FrontierPoint& p : f) {
      if (p.user >= user_rate) return r.points[p.index].label;
    }
    return nullptr;
  };
  j["agg_best"] = best(r.agg_frontier);
  j["disagg_best"] = best(r.disagg_frontier);
  j["points"] = r.points.size();
  j["skipped"] = r.skipped.size();
  j["wall_s"] = r.wall_s;
  return j;
}

}  // namespace

std::string SweepPointJson(const SweepPoint& p) { return PointToJson(p).dump(); }

std::string SweepSummaryJson(const SweepResult& r, double user_rate) {
  return SummaryToJson(r, user_rate).dump();
}

std::string SweepResultJson(const SweepResult& r, double user_rate) {
  nlohmann::json j;
  const SweepOptions& o = r.options;
  nlohmann::json opts;
  opts["gpu"] = o.gpu;
  opts["model"] = o.model;
  opts["fp8"] = o.fp8;
  opts["gpus"] = o.gpus;
  opts["tp"] = o.tp;
  opts["aggregated"] = o.aggregated;
  opts["disaggregated"] = o.disaggregated;
  nlohmann::json pd = nlohmann::json::array();
  for (const auto& [a, b] : o.pd_ratios) pd.push_back(std::to_string(a) + ":" + std::to_string(b));
  opts["pd_ratios"] = pd;
  opts["max_batch"] = o.max_batch;
  opts["max_prefill_tokens"] = o.max_prefill_tokens;
  opts["prefill_max_batch"] = o.prefill_max_batch;
  opts["isl"] = o.isl;
  opts["osl"] = o.osl;
  opts["shared_prefix_ratio"] = o.shared_prefix_ratio;
  opts["rates"] = o.concurrency.empty() ? nlohmann::json(Rates(o)) : nlohmann::json::array();
  opts["concurrency"] = o.concurrency;
  opts["num_requests"] = o.num_requests;
  opts["link"] = o.link;
  opts["policy"] = o.policy;
  opts["disagg_mode"] = o.disagg_mode;
  opts["max_prefill_queue"] = o.max_prefill_queue;
  opts["seed"] = o.seed;
  opts["max_ttft_p90_s"] = o.max_ttft_p90_s;
  opts["step_overhead_s"] = o.constants.step_overhead_s;
  opts["prefill_mfu"] = o.constants.prefill_mfu;
  opts["decode_hbm_efficiency"] = o.constants.decode_hbm_efficiency;
  opts["allreduce_latency_s"] = o.constants.allreduce_latency_s;
  j["options"] = opts;
  j["points"] = nlohmann::json::array();
  for (const SweepPoint& p : r.points) j["points"].push_back(PointToJson(p));
  auto frontier = [&](const std::vector<FrontierPoint>& f) {
    nlohmann::json a = nlohmann::json::array();
    for (const FrontierPoint& p : f) {
      a.push_back({{"tokens_per_s_per_user", p.user},
                   {"tokens_per_s_per_gpu", p.gpu},
                   {"point", p.index},
                   {"label", r.points[p.index].label}});
    }
    return a;
  };
  j["agg_frontier"] = frontier(r.agg_frontier);
  j["disagg_frontier"] = frontier(r.disagg_frontier);
  j["skipped"] = r.skipped;
  j["summary"] = SummaryToJson(r, user_rate);
  return j.dump(1) + "\n";
}

// ---------------------------------------------------------------- SVG

namespace {

std::string Xml(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += ch;
    }
  }
  return out;
}

// Round tick positions (1, 2, 5 x 10^k) covering [0, hi].
std::vector<double> Ticks(double hi, int target) {
  if (!(hi > 0)) hi = 1;
  const double raw = hi / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> t;
  for (int i = 0;; ++i) {  // the last tick is the first at or above hi
    t.push_back(i * step);
    if (i * step >= hi * (1 - 1e-9)) break;
  }
  return t;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string TickLabel(double v) {
  char buf[32];
  if (v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

}  // namespace

std::string SweepSvg(const SweepResult& r, double user_rate, const std::string& title_in) {
  const double W = 760, H = 500, left = 70, right = 200, top = 40, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  double xmax = user_rate > 0 ? user_rate : 1, ymax = 1;
  for (const SweepPoint& p : r.points) {
    if (std::isfinite(p.tokens_per_s_per_user)) xmax = std::max(xmax, p.tokens_per_s_per_user);
    if (std::isfinite(p.tokens_per_s_per_gpu)) ymax = std::max(ymax, p.tokens_per_s_per_gpu);
  }
  const std::vector<double> xt = Ticks(xmax, 8), yt = Ticks(ymax, 6);
  xmax = xt.back();
  ymax = yt.back();
  auto X = [&](double v) { return left + pw * std::clamp(v / xmax, 0.0, 1.0); };
  auto Y = [&](double v) { return top + ph * (1 - std::clamp(v / ymax, 0.0, 1.0)); };
  const char* kAgg = "#1f77b4";
  const char* kDis = "#ff7f0e";
  std::string title = title_in;
  if (title.empty()) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s%s on %u x %s, ISL %u / OSL %u", r.options.model.c_str(),
                  r.options.fp8 ? " FP8" : "", r.options.gpus, r.options.gpu.c_str(), r.options.isl,
                  r.options.osl);
    title = buf;
  }
  std::ostringstream s;
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"white\"/>\n"
    << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\" font-weight=\"bold\">" << Xml(title)
    << "</text>\n";
  // Grid and ticks.
  for (double v : xt) {
    s << "<line x1=\"" << Num(X(v)) << "\" y1=\"" << Num(top) << "\" x2=\"" << Num(X(v)) << "\" y2=\""
      << Num(top + ph) << "\" stroke=\"#e0e0e0\"/>\n"
      << "<text x=\"" << Num(X(v)) << "\" y=\"" << Num(top + ph + 16)
      << "\" text-anchor=\"middle\">" << TickLabel(v) << "</text>\n";
  }
  for (double v : yt) {
    s << "<line x1=\"" << Num(left) << "\" y1=\"" << Num(Y(v)) << "\" x2=\"" << Num(left + pw)
      << "\" y2=\"" << Num(Y(v)) << "\" stroke=\"#e0e0e0\"/>\n"
      << "<text x=\"" << Num(left - 6) << "\" y=\"" << Num(Y(v) + 4) << "\" text-anchor=\"end\">"
      << TickLabel(v) << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<text x=\"" << Num(left + pw / 2) << "\" y=\"" << Num(H - 18)
    << "\" text-anchor=\"middle\">tokens/s/user</text>\n"
    << "<text x=\"18\" y=\"" << Num(top + ph / 2) << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
    << Num(top + ph / 2) << ")\">tokens/s/GPU</text>\n";
  if (user_rate > 0) {
    s << "<line x1=\"" << Num(X(user_rate)) << "\" y1=\"" << Num(top) << "\" x2=\"" << Num(X(user_rate))
      << "\" y2=\"" << Num(top + ph) << "\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n";
  }
  // Points (hover shows the config), then frontier lines on top.
  for (const SweepPoint& p : r.points) {
    if (!std::isfinite(p.tokens_per_s_per_user) || !std::isfinite(p.tokens_per_s_per_gpu)) continue;
    const bool agg = p.layout == SweepLayout::kAggregated;
    s << "<circle cx=\"" << Num(X(p.tokens_per_s_per_user)) << "\" cy=\""
      << Num(Y(p.tokens_per_s_per_gpu)) << "\" r=\"3\" fill=\"" << (agg ? kAgg : kDis)
      << "\" fill-opacity=\"0.35\"><title>" << Xml(p.label) << "</title></circle>\n";
  }
  auto line = [&](const std::vector<FrontierPoint>& f, const char* color) {
    if (f.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < f.size(); ++i) {
      s << (i ? " " : "") << Num(X(f[i].user)) << "," << Num(Y(f[i].gpu));
    }
    s << "\"/>\n";
    for (const FrontierPoint& p : f) {
      s << "<circle cx=\"" << Num(X(p.user)) << "\" cy=\"" << Num(Y(p.gpu)) << "\" r=\"4\" fill=\""
        << color << "\"><title>" << Xml(r.points[p.index].label) << "</title></circle>\n";
    }
  };
  line(r.agg_frontier, kAgg);
  line(r.disagg_frontier, kDis);
  // Legend with the values at user_rate.
  const double lx = left + pw + 16;
  auto value = [&](const std::vector<FrontierPoint>& f) {
    const auto v = ValueAt(f, user_rate);
    return v ? Num(*v) : std::string("n/a");
  };
  s << "<rect x=\"" << Num(lx - 6) << "\" y=\"" << top << "\" width=\"180\" height=\"104\" fill=\"white\" stroke=\"#ccc\"/>\n"
    << "<line x1=\"" << Num(lx) << "\" y1=\"" << Num(top + 16) << "\" x2=\"" << Num(lx + 20) << "\" y2=\""
    << Num(top + 16) << "\" stroke=\"" << kAgg << "\" stroke-width=\"2\"/>\n"
    << "<text x=\"" << Num(lx + 26) << "\" y=\"" << Num(top + 20) << "\">aggregated</text>\n"
    << "<line x1=\"" << Num(lx) << "\" y1=\"" << Num(top + 36) << "\" x2=\"" << Num(lx + 20) << "\" y2=\""
    << Num(top + 36) << "\" stroke=\"" << kDis << "\" stroke-width=\"2\"/>\n"
    << "<text x=\"" << Num(lx + 26) << "\" y=\"" << Num(top + 40) << "\">disaggregated</text>\n"
    << "<text x=\"" << Num(lx) << "\" y=\"" << Num(top + 62) << "\">at " << TickLabel(user_rate)
    << " tok/s/user:</text>\n"
    << "<text x=\"" << Num(lx) << "\" y=\"" << Num(top + 78) << "\">agg " << value(r.agg_frontier)
    << " tok/s/GPU</text>\n"
    << "<text x=\"" << Num(lx) << "\" y=\"" << Num(top + 94) << "\">disagg " << value(r.disagg_frontier)
    << " tok/s/GPU</text>\n"
    << "</svg>\n";
  return s.str();
}

// ---------------------------------------------------------------- command line

int RunSweepCommand(std::span<char* const> args) {
  const auto parsed = ParseCommandLine("kvmesh sim sweep", ParseSweepArgs, args, SweepUsage);
  if (parsed.first) return *parsed.first;
  const SweepCliOptions& o = parsed.second;
  auto result = RunSweep(o.sweep, [&](const SweepPoint& p) {
    if (o.quiet) return;
    std::printf("%s\n", SweepPointJson(p).c_str());
    std::fflush(stdout);
  });
  if (!result.ok()) {
    std::fprintf(stderr, "kvmesh sim sweep: %s\n", result.status().message().c_str());
    return result.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  for (const std::string& s : result->skipped) std::fprintf(stderr, "kvmesh sim sweep: skipped %s\n", s.c_str());
  std::printf("%s\n", SweepSummaryJson(*result, o.user_rate).c_str());
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream f(path);
    f << text;
    f.close();
    if (!f.good()) {
      std::fprintf(stderr, "kvmesh sim sweep: cannot write %s\n", path.c_str());
      return false;
    }
    return true;
  };
  if (!o.out.empty() && !write(o.out, SweepResultJson(*result, o.user_rate))) return 1;
  if (!o.svg.empty() && !write(o.svg, SweepSvg(*result, o.user_rate))) return 1;
  return 0;
}

}  // namespace kvmesh::sim
