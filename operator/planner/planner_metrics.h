// PlannerMetrics: the planner's Prometheus metrics, declared in one table (planner_metrics.cc)
// with their help text; docs/planner.md lists them. Every family carries a `graph` label
// ("namespace/name", or the name alone for `kvmesh up`) so one operator can plan many graphs.
//
//   kvmesh_planner_desired_replicas{graph,pool}              gauge
//   kvmesh_planner_decisions_total{graph,pool,direction}     counter (up | down | hold)
//   kvmesh_planner_predicted_request_rate{graph}             gauge, requests/s
//   kvmesh_planner_correction_factor{graph,kind}             gauge, observed/expected (ttft | itl)
//   kvmesh_planner_metrics_errors_total{graph}               counter, decisions held for lack of metrics
#pragma once

#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "operator/planner/planner.h"

namespace kvmesh::planner {

struct PlannerMetrics {
  GaugeFamily* desired_replicas = nullptr;
  CounterFamily* decisions = nullptr;
  GaugeFamily* predicted_request_rate = nullptr;
  GaugeFamily* correction_factor = nullptr;
  CounterFamily* metrics_errors = nullptr;

  // Registers the table (an existing identical family is reused). Errors from the registry.
  static StatusOr<PlannerMetrics> Register(MetricsRegistry& registry);

  // Publishes one decision of `graph`.
  void Record(const std::string& graph, const Decision& decision) const;
};

}  // namespace kvmesh::planner
