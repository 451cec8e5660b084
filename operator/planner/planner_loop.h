// PlannerLoop: the SLA planner inside kvmesh-operator. One Planner per InferenceGraph that has a
// spec.sla and at least one pool that autoscales (maxReplicas > max(1, minReplicas)); it is
// created when the graph first appears, re-created when the graph's metadata.generation changes
// (new targets or limits) and dropped when the graph goes (deleted, being deleted, no longer
// autoscaling, invalid spec). Every interval the loop samples the graph's load from a metrics
// source (Prometheus's HTTP API by default), asks the Planner, and
//   - keeps the decision as the desired replicas of each pool it owns (DesiredReplicas(), read by
//     the reconciler, which applies them to the pool's Deployment, clamped to the spec limits);
//   - appends an entry {time, pool, cluster, from, to, reason} to status.plannerDecisions, only
//     when a pool's replicas or its reason (ignoring the numbers in it) changed, newest last,
//     keeping the newest `max_decisions`;
//   - publishes PlannerMetrics (graph label "namespace/name").
//
// Ownership of replicas: a pool is planner-owned only while the loop can plan it: a metrics
// source and a performance profile are configured. Without either, DesiredReplicas() is nullopt
// (spec.replicas applies) and one hold entry says why. With both, a failing metrics source holds
// the replicas where they are (never scales). After an operator restart, the desired replicas
// start from the newest plannerDecisions entry of each pool (else spec.replicas), so a restart
// does not snap the pools back to spec.replicas.
//
// Time: Step() takes the graphs and reads `now` from the injected clock (seconds, monotonic);
// a graph is stepped when its interval has elapsed, so a test drives the loop with a fake clock
// and no sleeping. Thread-safety: Step() from one thread at a time; DesiredReplicas() from any
// thread (the reconcile workers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "operator/controller/desired_state.h"
#include "operator/controller/status.h"
#include "operator/kube/kube_client.h"
#include "operator/planner/metrics_source.h"
#include "operator/planner/perf_profile.h"
#include "operator/planner/planner.h"
#include "operator/planner/planner_metrics.h"

namespace kvmesh::planner {

struct PlannerLoopOptions {
  double interval_s = 30;  // seconds between two decisions of one graph
  // Prometheus base URL; "" = no metrics source (the loop only says so in the status).
  std::string prometheus_url;
  std::string prometheus_window = "1m";  // PromQL range of rate() and histogram_quantile()
  // Label matchers of one graph's router series; {namespace} and {name} are replaced.
  std::string selector = "namespace=\"{namespace}\",kvmesh_dev_graph=\"{name}\"";
  // The performance profile (TablePerfProfile JSON); null = none (the loop holds).
  std::shared_ptr<const PerfProfile> profile;
  double scale_down_window_s = 300;  // PlannerConfig::scale_down_window_s
  size_t max_decisions = 10;         // status.plannerDecisions entries kept
  // Seconds on a monotonic clock; default steady_clock.
  std::function<double()> clock;
  // Wall time of status entries; default system_clock.
  std::function<controller::SystemTime()> wall_clock;
  // The metrics source of one graph; default a PrometheusSource on prometheus_url with `selector`.
  // Tests may return a ScrapeSource.
  std::function<std::unique_ptr<MetricsSource>(const std::string& ns, const std::string& name)> source_factory;
};

// One decision worth recording (also what Step() reports).
struct PoolChange {
  std::string graph;  // namespace/name
  std::string pool;   // prefill | decode
  int32_t from = 0;
  int32_t to = 0;
  std::string reason;
};

class PlannerLoop {
 public:
  // `client` writes status.plannerDecisions and must outlive the loop; `metrics` may be null.
  // Errors: options (interval_s <= 0, max_decisions 0).
  static StatusOr<std::unique_ptr<PlannerLoop>> Create(kube::KubeClient& client, PlannerLoopOptions options,
                                                       const PlannerMetrics* metrics);
  ~PlannerLoop();
  PlannerLoop(const PlannerLoop&) = delete;
  PlannerLoop& operator=(const PlannerLoop&) = delete;

  // One pass over `graphs` (InferenceGraph objects as read, e.g. the informer's cache): syncs the
  // planners with them and steps those whose interval has elapsed. Returns the keys whose desired
  // replicas changed (the caller reconciles them). Status write failures are logged and retried
  // on the next step (the entries stay pending).
  std::vector<std::string> Step(const std::vector<nlohmann::json>& graphs);

  // The planner's replicas for `pool` ("prefill" | "decode") of graph `key` ("namespace/name");
  // nullopt = the planner does not own that pool (spec.replicas applies). The caller clamps the
  // value to the spec's current limits (the spec may be newer than the last Step()).
  std::optional<int32_t> DesiredReplicas(const std::string& key, const std::string& pool) const;

  // Graphs with a planner (tests, metrics).
  size_t num_graphs() const;

 private:
  struct GraphState;
  PlannerLoop(kube::KubeClient& client, PlannerLoopOptions options, const PlannerMetrics* metrics);
  // Creates, re-creates (new generation) or drops the state of one graph.
  void Sync(const std::string& key, const nlohmann::json& object);
  // One decision if the graph's interval has elapsed; appends changed keys.
  void StepGraph(const std::string& key, GraphState& st, std::vector<std::string>& changed);
  // Queues an entry if the pool's replicas or reason class changed since its newest entry.
  void Note(GraphState& st, const std::string& pool, int32_t from, int32_t to, const std::string& reason);
  // Appends the queued entries to status.plannerDecisions (GET + PUT status, 409 retried).
  Status WritePending(GraphState& st);
  void Publish(const std::string& key, const GraphState* st);  // desired_ of key (null: erase)
  double Now() const;

  kube::KubeClient& client_;
  PlannerLoopOptions options_;
  const PlannerMetrics* metrics_;
  std::map<std::string, std::unique_ptr<GraphState>> graphs_;  // only Step()'s thread
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, int32_t>> desired_;  // guarded by mu_
};

// The entry's reason with every number replaced by '#': two reasons that differ only in their
// numbers (a predicted rate, a correction factor) are the same reason for status purposes.
std::string ReasonClass(const std::string& reason);

// Replaces {namespace} and {name} in a selector template.
std::string ExpandSelector(const std::string& tmpl, const std::string& ns, const std::string& name);

}  // namespace kvmesh::planner
