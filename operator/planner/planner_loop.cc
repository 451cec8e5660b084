#include "operator/planner/planner_loop.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <set>
#include <utility>

#include "common/log.h"

namespace kvmesh::planner {
namespace {

using json = nlohmann::json;
constexpr char kComponent[] = "operator";

struct OwnedPool {
  const char* name;
  PoolLimits PlannerConfig::*limits;
  graph::PoolSpec graph::InferenceGraphSpec::*spec;
};
constexpr OwnedPool kPools[] = {
    {"prefill", &PlannerConfig::prefill, &graph::InferenceGraphSpec::prefill},
    {"decode", &PlannerConfig::decode, &graph::InferenceGraphSpec::decode},
};

bool Autoscales(const PoolLimits& l) { return l.enabled && l.max_replicas > l.min_replicas; }

}  // namespace

std::string ReasonClass(const std::string& reason) {
  auto at = [&](size_t i) { return i < reason.size() ? reason[i] : '\0'; };
  auto digit = [&](size_t i) { return std::isdigit(static_cast<unsigned char>(at(i))) != 0; };
  std::string out;
  out.reserve(reason.size());
  for (size_t i = 0; i < reason.size(); ++i) {
    if (!digit(i)) {
      out += reason[i];
      continue;
    }
    // One '#' per number: digits and '.', with an exponent (e5, e-05, E+3).
    for (;;) {
      if (digit(i + 1) || (at(i + 1) == '.' && digit(i + 2))) {
        ++i;
      } else if ((at(i + 1) == 'e' || at(i + 1) == 'E') &&
                 (digit(i + 2) || ((at(i + 2) == '-' || at(i + 2) == '+') && digit(i + 3)))) {
        i += digit(i + 2) ? 2 : 3;
      } else {
        break;
      }
    }
    out += '#';
  }
  return out;
}

std::string ExpandSelector(const std::string& tmpl, const std::string& ns, const std::string& name) {
  std::string out = tmpl;
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"{namespace}", ns}, {"{name}", name}}) {
    for (size_t at = out.find(from); at != std::string::npos; at = out.find(from, at + to.size())) {
      out.replace(at, from.size(), to);
    }
  }
  return out;
}

struct PlannerLoop::GraphState {
  std::string ns, name, uid;
  int64_t generation = -1;
  PlannerConfig config;
  graph::InferenceGraph graph;
  std::unique_ptr<Planner> planner;  // null while hold_reason is set
  std::unique_ptr<MetricsSource> source;
  std::string hold_reason;                 // "" = planning; else why the loop cannot plan
  std::map<std::string, int32_t> desired;  // planner-owned pools -> replicas (planning only)
  // pool -> (to, reason class) of its newest entry (written or pending).
  std::map<std::string, std::pair<int32_t, std::string>> last;
  std::vector<json> pending;  // entries not written yet, oldest first
  double origin_s = 0;        // the planner's time 0 on the loop's clock
  double next_step_s = 0;

  int32_t SpecReplicas(const char* pool) const {
    return std::string(pool) == "prefill" ? graph.spec.prefill.replicas : graph.spec.decode.replicas;
  }
  // What serves now: the planner's value for owned pools, else the spec's (0 for a disabled pool).
  int32_t Current(const OwnedPool& p) const {
    if (!(config.*p.limits).enabled) return 0;
    auto it = desired.find(p.name);
    return it != desired.end() ? it->second : SpecReplicas(p.name);
  }
};

PlannerLoop::PlannerLoop(kube::KubeClient& client, PlannerLoopOptions options, const PlannerMetrics* metrics)
    : client_(client), options_(std::move(options)), metrics_(metrics) {}

StatusOr<std::unique_ptr<PlannerLoop>> PlannerLoop::Create(kube::KubeClient& client, PlannerLoopOptions options,
                                                           const PlannerMetrics* metrics) {
  if (!(options.interval_s > 0)) return InvalidArgumentError("planner.interval: must be > 0");
  if (options.max_decisions == 0) return InvalidArgumentError("planner: max_decisions must be >= 1");
  if (!(options.scale_down_window_s >= 0)) return InvalidArgumentError("planner.scale_down_window: must be >= 0");
  if (!options.clock) {
    options.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  }
  if (!options.wall_clock) options.wall_clock = [] { return std::chrono::system_clock::now(); };
  if (!options.source_factory && !options.prometheus_url.empty()) {
    const PlannerLoopOptions o = options;
    options.source_factory = [o](const std::string& ns, const std::string& name) -> std::unique_ptr<MetricsSource> {
      PrometheusSource::Options po;
      po.url = o.prometheus_url;
      po.window = o.prometheus_window;
      po.selector = ExpandSelector(o.selector, ns, name);
      return std::make_unique<PrometheusSource>(po);
    };
  }
  return std::unique_ptr<PlannerLoop>(new PlannerLoop(client, std::move(options), metrics));
}

PlannerLoop::~PlannerLoop() = default;

double PlannerLoop::Now() const { return options_.clock(); }

size_t PlannerLoop::num_graphs() const { return graphs_.size(); }

std::optional<int32_t> PlannerLoop::DesiredReplicas(const std::string& key, const std::string& pool) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto g = desired_.find(key);
  if (g == desired_.end()) return std::nullopt;
  auto p = g->second.find(pool);
  if (p == g->second.end()) return std::nullopt;
  return p->second;
}

void PlannerLoop::Publish(const std::string& key, const GraphState* st) {
  std::lock_guard<std::mutex> lock(mu_);
  if (st == nullptr || st->desired.empty()) {
    desired_.erase(key);
  } else {
    desired_[key] = st->desired;
  }
}

std::vector<std::string> PlannerLoop::Step(const std::vector<json>& graphs) {
  std::set<std::string> seen;
  for (const json& object : graphs) {
    auto meta = controller::ReadGraphMeta(object);
    if (!meta.ok()) continue;
    const std::string key = meta->namespace_ + "/" + meta->name;
    seen.insert(key);
    Sync(key, object);
  }
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    if (seen.count(it->first) == 0) {
      KVMESH_LOG_INFO(kComponent, "planner: graph gone; planner removed", {"graph", it->first});
      Publish(it->first, nullptr);
      it = graphs_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::string> changed;
  for (auto& [key, st] : graphs_) StepGraph(key, *st, changed);
  return changed;
}

void PlannerLoop::Sync(const std::string& key, const json& object) {
  auto drop = [&](const char* why) {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return;
    KVMESH_LOG_INFO(kComponent, "planner removed", {"graph", key}, {"why", why});
    Publish(key, nullptr);
    graphs_.erase(it);
  };
  auto og = controller::ReadOwnedGraph(object);
  if (!og.ok()) return drop("invalid spec");
  if (!og->meta.deletion_timestamp.empty()) return drop("graph being deleted");
  const graph::InferenceGraph& g = og->graph;
  if (!(g.spec.sla.ttft_ms > 0 || g.spec.sla.itl_ms > 0)) return drop("no spec.sla");
  auto config = PlannerConfig::FromGraph(g);
  if (!config.ok()) return drop("planner config invalid");
  if (!controller::HasPrefillPool(g)) config->prefill.enabled = false;
  config->interval_s = options_.interval_s;
  config->scale_down_window_s = options_.scale_down_window_s;
  if (!Autoscales(config->prefill) && !Autoscales(config->decode)) return drop("no pool autoscales");

  auto it = graphs_.find(key);
  if (it != graphs_.end() && it->second->uid == og->meta.uid && it->second->generation == og->meta.generation) {
    return;  // unchanged spec: keep the planner and its history
  }
  auto st = std::make_unique<GraphState>();
  st->ns = og->meta.namespace_;
  st->name = og->meta.name;
  st->uid = og->meta.uid;
  st->generation = og->meta.generation;
  st->config = *config;
  st->graph = g;
  const bool same_graph = it != graphs_.end() && it->second->uid == og->meta.uid;
  if (same_graph) {  // new generation: keep what the pools run and what was recorded
    st->desired = std::move(it->second->desired);
    st->last = std::move(it->second->last);
    st->pending = std::move(it->second->pending);
  } else if (object.contains("status") && object["status"].is_object()) {
    // A restarted operator (or a new leader) continues from the newest recorded decisions.
    const json& decisions = object["status"].value("plannerDecisions", json::array());
    if (decisions.is_array()) {
      for (const json& e : decisions) {
        if (!e.is_object() || !e.contains("pool") || !e["pool"].is_string() || !e.contains("to") ||
            !e["to"].is_number_integer()) {
          continue;
        }
        const std::string pool = e["pool"].get<std::string>();
        const int32_t to = e["to"].get<int32_t>();
        st->last[pool] = {to, ReasonClass(e.value("reason", ""))};
        st->desired[pool] = to;  // newest last: the final value wins
      }
    }
  }

  if (!options_.source_factory) {
    st->hold_reason = "no metrics source: kvmesh-operator runs without --planner.prometheus-url";
  } else if (!options_.profile) {
    st->hold_reason = "no performance profile: kvmesh-operator runs without --planner.profile";
  } else {
    auto planner = Planner::Create(*config, options_.profile);
    if (!planner.ok()) {
      st->hold_reason = "planner: " + planner.status().message();
    } else {
      st->planner = std::move(*planner);
      st->source = options_.source_factory(st->ns, st->name);
    }
  }

  // Owned pools start from the previous/recorded value, else the spec, within the limits.
  std::map<std::string, int32_t> desired;
  if (st->hold_reason.empty()) {
    for (const OwnedPool& p : kPools) {
      const PoolLimits& l = st->config.*p.limits;
      if (!Autoscales(l)) continue;
      auto d = st->desired.find(p.name);
      const int32_t start = d != st->desired.end() ? d->second : st->SpecReplicas(p.name);
      desired[p.name] = std::clamp(start, l.min_replicas, l.max_replicas);
    }
  }
  st->desired = std::move(desired);
  const double now = Now();
  st->origin_s = now;
  st->next_step_s = now;  // decide at once: Prometheus already holds the recent past
  if (!st->hold_reason.empty()) {
    KVMESH_LOG_WARN(kComponent, "planner cannot plan this graph; its pools keep spec.replicas", {"graph", key},
                    {"reason", st->hold_reason});
    for (const OwnedPool& p : kPools) {
      if (!Autoscales(st->config.*p.limits)) continue;
      const int32_t r = st->SpecReplicas(p.name);
      Note(*st, p.name, r, r, "hold: " + st->hold_reason + "; keeping spec.replicas " + std::to_string(r));
    }
  } else {
    KVMESH_LOG_INFO(kComponent, "planner on", {"graph", key}, {"generation", og->meta.generation},
                    {"ttft_target_s", config->ttft_target_s}, {"itl_target_s", config->itl_target_s},
                    {"interval_s", options_.interval_s});
  }
  Publish(key, st.get());
  graphs_[key] = std::move(st);
}

void PlannerLoop::Note(GraphState& st, const std::string& pool, int32_t from, int32_t to, const std::string& reason) {
  const std::pair<int32_t, std::string> now = {to, ReasonClass(reason)};
  auto it = st.last.find(pool);
  if (it != st.last.end() && it->second == now) return;
  st.last[pool] = now;
  json e = {{"time", controller::FormatRfc3339(options_.wall_clock())},
            {"pool", pool},
            {"from", from},
            {"to", to},
            {"reason", reason.size() > 512 ? reason.substr(0, 509) + "..." : reason}};
  st.pending.push_back(std::move(e));
  if (st.pending.size() > options_.max_decisions) {
    st.pending.erase(st.pending.begin(), st.pending.end() - static_cast<std::ptrdiff_t>(options_.max_decisions));
  }
}

void PlannerLoop::StepGraph(const std::string& key, GraphState& st, std::vector<std::string>& changed) {
  const double now = Now();
  if (st.planner && now >= st.next_step_s) {
    // Next step one interval on from the planned time (no drift), but never in the past.
    st.next_step_s = std::max(st.next_step_s + options_.interval_s, now + options_.interval_s * 0.5);
    const double t = now - st.origin_s;
    auto sample = st.source->Sample(t);
    if (sample.ok() || sample.status().code() != StatusCode::kFailedPrecondition) {  // else: a baseline
      Decision d;
      const OwnedPool& pre = kPools[0];
      const OwnedPool& dec = kPools[1];
      if (sample.ok()) {
        sample->prefill_replicas = st.Current(pre);
        sample->decode_replicas = st.Current(dec);
        d = st.planner->Decide(t, *sample);
      } else {
        d = st.planner->Hold(t, sample.status());
        // Hold keeps what serves now (the planner alone would fall back to minReplicas before
        // its first sample).
        for (const auto& [p, pd] : {std::pair<const OwnedPool*, PoolDecision*>{&pre, &d.prefill}, {&dec, &d.decode}}) {
          pd->current = pd->replicas = st.Current(*p);
          pd->reason = "hold: metrics unavailable (" + sample.status().message() + "); keeping " +
                       std::to_string(pd->current) + " " + p->name + " replicas";
        }
        KVMESH_LOG_WARN(kComponent, "planner holds: metrics unavailable", {"graph", key},
                        {"error", sample.status().ToString()});
      }
      if (metrics_ != nullptr) metrics_->Record(key, d);
      bool moved = false;
      for (const auto& [p, pd] : {std::pair<const OwnedPool*, PoolDecision*>{&pre, &d.prefill}, {&dec, &d.decode}}) {
        auto it = st.desired.find(p->name);
        if (it == st.desired.end()) continue;  // not planner-owned
        const PoolLimits& l = st.config.*(p->limits);
        const int32_t from = it->second;
        const int32_t to = std::clamp(pd->replicas, l.min_replicas, l.max_replicas);
        if (to != from) {
          KVMESH_LOG_INFO(kComponent, "planner scales pool", {"graph", key}, {"pool", p->name}, {"from", from},
                          {"to", to}, {"reason", pd->reason});
          it->second = to;
          moved = true;
        }
        Note(st, p->name, from, to, pd->reason);
      }
      if (moved) {
        Publish(key, &st);
        changed.push_back(key);
      }
    }
  }
  if (!st.pending.empty()) {
    Status s = WritePending(st);
    if (!s.ok()) {
      KVMESH_LOG_WARN(kComponent, "planner: cannot write status.plannerDecisions; retrying next step",
                      {"graph", key}, {"error", s.ToString()});
    }
  }
}

Status PlannerLoop::WritePending(GraphState& st) {
  for (int attempt = 0;; ++attempt) {
    auto live = client_.Get(kube::InferenceGraphs(), st.ns, st.name);
    if (!live.ok()) {
      if (kube::IsNotFound(live.status())) {
        st.pending.clear();  // gone: nothing to record; the next Step drops the state
        return Status::Ok();
      }
      return live.status();
    }
    json object = std::move(*live);
    if (object["metadata"].value("uid", "") != st.uid) {
      st.pending.clear();  // a different graph of the same name
      return Status::Ok();
    }
    if (!object.contains("status") || !object["status"].is_object()) object["status"] = json::object();
    json list = object["status"].value("plannerDecisions", json::array());
    if (!list.is_array()) list = json::array();
    for (const json& e : st.pending) list.push_back(e);
    if (list.size() > options_.max_decisions) {
      list.erase(list.begin(), list.end() - static_cast<std::ptrdiff_t>(options_.max_decisions));
    }
    object["status"]["plannerDecisions"] = std::move(list);
    auto r = client_.UpdateStatus(kube::InferenceGraphs(), object);
    if (r.ok()) {
      st.pending.clear();
      return Status::Ok();
    }
    if (kube::IsNotFound(r.status())) {
      st.pending.clear();
      return Status::Ok();
    }
    if (!kube::IsConflict(r.status()) || attempt >= 3) return r.status();
  }
}

}  // namespace kvmesh::planner
