#include "operator/planner/planner_metrics.h"

namespace kvmesh::planner {

StatusOr<PlannerMetrics> PlannerMetrics::Register(MetricsRegistry& r) {
  PlannerMetrics m;
  KVMESH_ASSIGN_OR_RETURN(m.desired_replicas, r.AddGauge("kvmesh_planner_desired_replicas",
      "Replicas the planner wants per pool (prefill, decode) after stabilization", {"graph", "pool"}));
  KVMESH_ASSIGN_OR_RETURN(m.decisions, r.AddCounter("kvmesh_planner_decisions_total",
      "Planner decisions per pool by direction (up, down, hold)", {"graph", "pool", "direction"}));
  KVMESH_ASSIGN_OR_RETURN(m.predicted_request_rate, r.AddGauge("kvmesh_planner_predicted_request_rate",
      "Request rate (requests/s) the planner predicts for the next interval", {"graph"}));
  KVMESH_ASSIGN_OR_RETURN(m.correction_factor, r.AddGauge("kvmesh_planner_correction_factor",
      "Observed / expected latency (smoothed) applied to the SLA target, by kind (ttft, itl)", {"graph", "kind"}));
  KVMESH_ASSIGN_OR_RETURN(m.metrics_errors, r.AddCounter("kvmesh_planner_metrics_errors_total",
      "Decisions held because the load metrics could not be read", {"graph"}));
  return m;
}

void PlannerMetrics::Record(const std::string& graph, const Decision& d) const {
  for (const auto& [pool, p] : {std::pair<const char*, const PoolDecision*>{"prefill", &d.prefill},
                                std::pair<const char*, const PoolDecision*>{"decode", &d.decode}}) {
    desired_replicas->WithLabels({graph, pool}).Set(p->replicas);
    decisions->WithLabels({graph, pool, p->direction}).Inc();
  }
  if (!d.metrics_ok) {
    metrics_errors->WithLabels({graph}).Inc();
    return;
  }
  predicted_request_rate->WithLabels({graph}).Set(d.predicted_request_rate);
  correction_factor->WithLabels({graph, "ttft"}).Set(d.ttft_correction);
  correction_factor->WithLabels({graph, "itl"}).Set(d.itl_correction);
}

}  // namespace kvmesh::planner
