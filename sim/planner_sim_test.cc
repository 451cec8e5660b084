#include "sim/planner_sim.h"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::sim {
namespace {

// The documented small scenario (docs/simulator.md, "Planner in the simulator"): llama-3.1-70b
// tp4 on H100, 1 replica at the start, 2 -> 30 -> 2 req/s over 60 s up, 60 s hold, 60 s down,
// 60 s tail; ISL 1000, OSL 200; ITL p90 target 40 ms; 15 s interval; 60 s scale-down window.
PlannerSimOptions Small() { return DefaultPlannerSimOptions(); }

TEST(PlannerSimTest, ScalesUpWithTheLoadAndBackDownWithoutDroppingRequests) {
  auto r = RunPlannerSim(Small());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const SimResult& s = r->sim;
  EXPECT_GT(s.requests, 1000u);
  EXPECT_EQ(s.completed, s.requests);
  EXPECT_EQ(s.rejected, 0u);
  EXPECT_EQ(s.leaked_blocks, 0u);
  EXPECT_EQ(s.pool_errors, "");
  ASSERT_GE(r->timeline.size(), 10u);

  // Replicas decided at the peak (end of the hold) versus at the start and at the end.
  int32_t peak = 0;
  double peak_t = 0;
  for (const auto& e : r->timeline) {
    if (e.decision.decode.replicas > peak) {
      peak = e.decision.decode.replicas;
      peak_t = e.observed.time_s;
    }
  }
  const int32_t first = r->timeline.front().decision.decode.replicas;
  const int32_t last = r->timeline.back().decision.decode.replicas;
  EXPECT_GE(peak, 3) << "load x15 must need more decode replicas";
  EXPECT_LT(last, peak) << "load falls back: replicas must come down";
  EXPECT_LE(first, 2);
  EXPECT_GT(peak_t, 45);   // not before the ramp is well under way
  EXPECT_LT(peak_t, 200);  // and not after the ramp down
  // The fleet really changed: instances were added, and drained ones were removed.
  EXPECT_GT(s.instances_added, 0u);
  EXPECT_GT(s.instances_removed, 0u);
  EXPECT_EQ(s.peak_instances, static_cast<uint32_t>(std::max(peak, 1)));
  // Some decision said "up" and a later one "down".
  size_t up_at = r->timeline.size(), down_at = 0;
  for (size_t i = 0; i < r->timeline.size(); ++i) {
    if (r->timeline[i].decision.decode.direction == "up") up_at = std::min(up_at, i);
    if (r->timeline[i].decision.decode.direction == "down") down_at = i;
  }
  EXPECT_LT(up_at, down_at);
  // The observed sample follows the workload's rate: the busiest interval is near the peak.
  double max_rate = 0;
  for (const auto& e : r->timeline) {
    max_rate = std::max(max_rate, static_cast<double>(e.observed.arrivals) / e.observed.interval_s);
  }
  EXPECT_GT(max_rate, 20);
  EXPECT_LT(max_rate, 45);
}

TEST(PlannerSimTest, Deterministic) {
  auto a = RunPlannerSim(Small());
  auto b = RunPlannerSim(Small());
  ASSERT_TRUE(a.ok() && b.ok());
  a->sim.wall_s = b->sim.wall_s = 0;
  EXPECT_EQ(PlannerSimJson(*a), PlannerSimJson(*b));
}

TEST(PlannerSimTest, FixedFleetWithoutPlannerHasNoScaling) {
  // The same workload on a fixed 2-replica fleet: nothing added or removed (the hook is what
  // scales), and the peak overloads it: the router refuses requests the planner's fleet served.
  PlannerSimOptions o = Small();
  SimConfig c = o.base;
  o.pool.count = 2;
  c.pools = {o.pool};
  auto wl = MakeRampWorkload(o.ramp);
  ASSERT_TRUE(wl.ok());
  auto r = RunFleetSim(c, **wl, "fixed");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->instances_added, 0u);
  EXPECT_EQ(r->instances_removed, 0u);
  EXPECT_EQ(r->peak_instances, 2u);
  EXPECT_EQ(r->completed + r->rejected, r->requests);
  EXPECT_GT(r->rejected, 0u);
}

TEST(PlannerSimTest, RampWorkloadValidation) {
  RampOptions o;
  o.peak_rate = 0;
  EXPECT_FALSE(MakeRampWorkload(o).ok());
  o = RampOptions{};
  o.base_rate = 50;  // above the peak
  EXPECT_FALSE(MakeRampWorkload(o).ok());
  o = RampOptions{};
  o.output_tokens = 0;
  EXPECT_FALSE(MakeRampWorkload(o).ok());
  SimConfig c;
  c.pools = {PoolConfig{}};
  c.scale = [](const IntervalStats&) { return std::vector<uint32_t>{1}; };
  EXPECT_FALSE(c.Validate().ok());  // a hook needs an interval
}

}  // namespace
}  // namespace kvmesh::sim
