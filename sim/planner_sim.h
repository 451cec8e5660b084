// The SLA planner inside the fleet simulator (docs/simulator.md, "Planner in the simulator").
//
// A time-varying workload (Poisson arrivals whose rate rises linearly from base_rate to
// peak_rate, holds, then falls back) runs on one aggregated pool. Every planner interval the
// simulator's scaling hook (SimConfig::scale) hands the REAL planner::Planner::Decide() the load
// observed over the interval (request rate, mean ISL and OSL of the arrivals, TTFT p90 and ITL p90
// of the requests that finished), with a planner::CallbackPerfProfile backed by sim::PerfModel;
// the decided decode replicas become the pool's wanted size: new instances start cold, removed
// ones are drained first (no new requests; in-flight work finishes; then removed).
//
// Invariants: the run's requests all end (no request is dropped by a scale-down), the block
// pools end with 0 used blocks, and the same options give the same timeline.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "operator/planner/planner.h"
#include "sim/fleet_sim.h"

namespace kvmesh::sim {

struct RampOptions {
  double base_rate = 2;    // requests/s at the start and the end
  double peak_rate = 30;   // requests/s at the top
  double ramp_up_s = 60;   // base -> peak (linear)
  double hold_s = 60;      // at peak
  double ramp_down_s = 60; // peak -> base (linear)
  double tail_s = 60;      // at base after the ramp down
  uint32_t input_tokens = 1000;
  uint32_t output_tokens = 200;
  uint32_t block_size = 16;
  uint64_t seed = 1;
};

// Rate-varying Poisson workload (thinning), fixed lengths, prompts that share nothing.
// InvalidArgument for rates < 0, peak_rate 0, negative phases, zero lengths.
StatusOr<std::unique_ptr<Workload>> MakeRampWorkload(const RampOptions& options);

struct PlannerSimOptions {
  PoolConfig pool;                // aggregated; pool.count = replicas at the start
  planner::PlannerConfig planner; // interval_s is the scaling interval; prefill is disabled
  RampOptions ramp;
  SimConfig base;                 // routing etc. (pools and scale are set by RunPlannerSim)
};

// The documented defaults (docs/simulator.md): llama-3.1-70b tp4 on H100, 1 replica at the start,
// 1..12 replicas, ITL p90 target 40 ms, 15 s interval, 60 s scale-down window.
PlannerSimOptions DefaultPlannerSimOptions();

struct PlannerTimelineEntry {
  IntervalStats observed;
  planner::Decision decision;
};

struct PlannerSimResult {
  SimResult sim;
  std::vector<PlannerTimelineEntry> timeline;
};

StatusOr<PlannerSimResult> RunPlannerSim(const PlannerSimOptions& options);

// {"sim": {...}, "timeline": [{"t":..,"rate":..,..,"decode_replicas":..,"direction":..}, ...]}
std::string PlannerSimJson(const PlannerSimResult& r);

// `kvmesh sim planner [flags]` (also `kvmesh sim --planner ...`; flags: sim/sim_options.h,
// PlannerFlags); args exclude the subcommand. Exit code 0 ok, 1 runtime, 2 usage.
int RunSimPlannerCommand(std::span<char* const> args);

}  // namespace kvmesh::sim
