// Placement comparison in the fleet simulator (docs/simulator.md, "Placement comparison"): the
// same multi-region workload served by the fleet that each placement policy builds.
//
// For every policy the REAL operator placement (placement::Place()) shares the requested replicas
// out over the scenario's clusters, given the demand per region and the prefix heat measured on
// the workload itself (per prefix root: its shared length, KV bytes from sim::PerfModel, requests/s
// per region; initial holder = the root's home cluster, the first cluster of the region most of
// its requests come from). The shares become per-cluster pools, and RunFleetSim() routes every
// request with the REAL router policy (kv:kvmesh by default) over all clusters' instances with
// rtt_ms = the round trip between the request's region and each cluster.
//
// Network: RTT(region r, cluster c) = intra_region_rtt_ms when c is in r, else the smallest
// 2 x latency_ms of a link from a cluster of r to c, else default_rtt_ms (the placement model's
// own definitions, so Place() and the simulator see the same network). KV moves between clusters
// at the link's bandwidth (Gbit/s / 8 = GB/s) plus its one-way latency.
//
// Invariants: the same scenario and policies give the same results (each run consumes a fresh,
// identically seeded workload); a policy's run fails (Status) when its placement leaves no decode
// replica anywhere.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "operator/placement/placement.h"
#include "sim/fleet_sim.h"
#include "sim/workload.h"

namespace kvmesh::sim {

struct PlacementScenario {
  std::vector<std::string> regions;         // workload region i = regions[i]
  std::vector<placement::Cluster> clusters; // each cluster's region must be one of `regions`
  std::vector<placement::Link> links;       // between clusters (one-way latency, Gbit/s)
  int32_t decode_replicas = 12;             // aggregated replicas when prefill_replicas == 0
  int32_t prefill_replicas = 0;
  PoolConfig decode_pool;                   // template: gpu, model, tp, batch (count/cluster set per run)
  PoolConfig prefill_pool;                  // template for prefill replicas
  SyntheticOptions workload;                // num_regions is set to regions.size()
  SimConfig base;                           // routing, disaggregation, block size, SLAs, seed
  std::string routing_policy = "kv:kvmesh"; // RoutingForPolicy name used for every placement
  placement::PlacementModel model;          // replica throughputs are filled from PerfModel
  // Each hot root's chain starts cached in one instance of its home cluster (what Place() is told:
  // PrefixHeat::cached_bytes), for every policy. false: every cache starts cold.
  bool warm_homes = true;
  // Place()'s `replicate` decisions run as prefix copies: the chain reaches one instance of the
  // target cluster after the decision's transfer_s, and its KV bytes count as cross-cluster.
  bool execute_copies = true;
};

// The documented default scenario (docs/simulator.md): 3 regions (us-east, eu-west, ap-south), one
// 16-GPU cluster in each, 12 aggregated llama-3.1-8b tp1 H100 replicas, Zipf(1.0)-popular system
// prompts homed round-robin over the regions (so demand is skewed: ~48% us, ~30% eu, ~22% ap),
// 90% regional affinity.
PlacementScenario DefaultPlacementScenario();

struct PlacementRun {
  std::string policy;
  placement::PlacementResult placement;
  placement::PlacementScore score;  // Place()'s own expected-TTFT model, for comparison
  SimResult sim;
};

// The PlacementInput for `policy`: clusters, links, pools, model, and the demand and heat measured
// on a fresh copy of the scenario's workload. InvalidArgument for a bad scenario.
StatusOr<placement::PlacementInput> PlacementInputFor(const PlacementScenario& scenario,
                                                      const std::string& policy);

// The fleet for a placement result: one pool per (cluster, role) with replicas, plus the RTT and
// link matrices. FailedPrecondition when no decode replica was placed.
StatusOr<SimConfig> FleetForPlacement(const PlacementScenario& scenario,
                                      const placement::PlacementResult& result);

// The prefix seeds of a placement: each hot root warm in its home cluster at t = 0 (when
// scenario.warm_homes) and each `replicate` decision as a copy arriving at its transfer_s (when
// scenario.execute_copies). Clusters are indices into scenario.clusters.
std::vector<PrefixSeed> PrefixSeedsFor(const PlacementScenario& scenario,
                                       const placement::PlacementInput& input,
                                       const placement::PlacementResult& result);

// Runs every policy on the same workload.
StatusOr<std::vector<PlacementRun>> RunPlacementComparison(const PlacementScenario& scenario,
                                                           const std::vector<std::string>& policies);

std::string PlacementRunsJson(const PlacementScenario& scenario, const std::vector<PlacementRun>& runs);
std::string PlacementRunsTable(const std::vector<PlacementRun>& runs);

// `kvmesh sim placement [flags]` (flags: sim/sim_options.h, PlacementFlags); args exclude
// "placement". Exit code 0 ok, 1 runtime, 2 usage.
int RunSimPlacementCommand(std::span<char* const> args);

}  // namespace kvmesh::sim
