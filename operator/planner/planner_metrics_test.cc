#include "operator/planner/planner_metrics.h"

#include <gtest/gtest.h>

namespace kvmesh::planner {
namespace {

TEST(PlannerMetricsTest, RecordsDecisionsAndHolds) {
  MetricsRegistry registry;
  auto m = PlannerMetrics::Register(registry);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(PlannerMetrics::Register(registry).ok()) << "registering twice reuses the families";

  Decision d;
  d.prefill = {1, 3, 2.6, "up", "scale_up: ..."};
  d.decode = {2, 2, 1.9, "hold", "hold: ..."};
  d.predicted_request_rate = 12.5;
  d.ttft_correction = 1.25;
  d.itl_correction = 0.8;
  m->Record("prod/llama", d);
  m->Record("prod/llama", d);
  Decision held = d;
  held.metrics_ok = false;
  held.prefill.direction = "hold";
  m->Record("prod/llama", held);

  const std::string text = registry.Render();
  for (const char* line : {
           "kvmesh_planner_desired_replicas{graph=\"prod/llama\",pool=\"prefill\"} 3\n",
           "kvmesh_planner_desired_replicas{graph=\"prod/llama\",pool=\"decode\"} 2\n",
           "kvmesh_planner_decisions_total{graph=\"prod/llama\",pool=\"prefill\",direction=\"up\"} 2\n",
           "kvmesh_planner_decisions_total{graph=\"prod/llama\",pool=\"prefill\",direction=\"hold\"} 1\n",
           "kvmesh_planner_decisions_total{graph=\"prod/llama\",pool=\"decode\",direction=\"hold\"} 3\n",
           "kvmesh_planner_predicted_request_rate{graph=\"prod/llama\"} 12.5\n",
           "kvmesh_planner_correction_factor{graph=\"prod/llama\",kind=\"ttft\"} 1.25\n",
           "kvmesh_planner_correction_factor{graph=\"prod/llama\",kind=\"itl\"} 0.8\n",
           "kvmesh_planner_metrics_errors_total{graph=\"prod/llama\"} 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "in:\n" << text;
  }
}

}  // namespace
}  // namespace kvmesh::planner
