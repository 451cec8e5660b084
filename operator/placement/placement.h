// Placement of an InferenceGraph's prefill and decode replicas over member clusters
// (spec.placement), and the per-prefix-root decision whether to replicate a hot prefix's KV cache
// into another cluster. A pure, deterministic function of its input: the same input gives the same
// result (clusters in spec order, prefix roots sorted, ties broken by spec order), so the hub
// operator can run it on every reconcile without flapping.
//
// Policies (docs/placement.md has the formulas):
//   single          every replica in the first cluster;
//   spread          replicas proportional to each cluster's GPU capacity (D'Hondt);
//   pack            fill clusters in spec order;
//   cache-locality  each replica goes where it lowers the fleet's expected TTFT most (queue +
//                   recompute of the uncached prefix + cross-cluster RTT for remote demand), after
//                   replicating a hot prefix root into a cluster only when the TTFT it saves
//                   (per second of traffic) beats its transfer time amortized over a window.
// Invariants of every result: a cluster never gets more GPUs than its gpu_capacity (replicas that
// fit nowhere are counted in unplaced_* with a note saying why); a prefill replica only goes to a
// cluster that also has a decode replica (prefill feeds the decode pool beside it, in the same
// fabric domain); an unhealthy cluster gets nothing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/inference_graph.h"
#include "common/status.h"

namespace kvmesh::placement {

struct Cluster {
  std::string name;
  std::string region;
  int32_t gpu_capacity = 0;  // GPUs this graph may use there
  bool healthy = true;       // false: the hub moves the cluster's share elsewhere (capacity 0)
};

// Network between two clusters. One entry serves both directions unless the reverse is listed too.
struct Link {
  std::string from;
  std::string to;
  double bandwidth_gbps = 0;  // 0 = no usable link for KV transfer
  double latency_ms = 0;      // one way
};

// Traffic arriving from one region (where its users are).
struct RegionDemand {
  std::string region;
  double request_rate = 0;  // requests/s
  double mean_isl = 0;      // prompt tokens
  double mean_osl = 0;      // output tokens
};

// One prefix root (the first block hash of a family of prompts: a system prompt, a document):
// how big its KV is, where it is cached, and who asks for it. From routers' and agents' inventories.
struct PrefixHeat {
  std::string root;
  double tokens = 0;  // prefix length in tokens
  double bytes = 0;   // KV bytes of one full copy
  std::map<std::string, double> cached_bytes;    // cluster -> bytes of this root held there
  std::map<std::string, double> rate_by_region;  // region -> requests/s that start with this root
  // The root's block hashes (its common prefix), when the heat came per root: what the hub copies
  // for a `replicate` decision. Empty for a cluster-cache family (nothing to copy by name).
  std::vector<uint64_t> blocks;
};

// What the planner asks for (today: spec.prefill/decode).
struct PoolRequest {
  int32_t prefill_replicas = 0;
  int32_t decode_replicas = 0;
  int32_t prefill_gpus_per_replica = 0;  // 0 = CPU workers (capacity does not bind)
  int32_t decode_gpus_per_replica = 0;
};

// Performance model of one replica and the knobs of the cache-locality policy.
struct PlacementModel {
  double prefill_tokens_per_s = 20000;  // prefill throughput of one prefill replica
  double decode_tokens_per_s = 2500;    // generated tokens/s of one decode replica (whole batch)
  double replication_window_s = 300;    // transfer cost of a prefix copy is amortized over this
  double hot_min_rate = 0.05;           // requests/s below which a root is not considered hot
  double default_rtt_ms = 100;          // between regions with no link
  double intra_region_rtt_ms = 1;       // demand served by a cluster in its own region
  double prompt_bytes_per_token = 4;    // request payload when a request is served remotely
  double overload_penalty_s = 10;       // TTFT charged per unit of utilization above 95%
  double unserved_penalty_s = 30;       // TTFT charged for demand no cluster can serve
};

struct PlacementInput {
  std::string policy = "single";  // single | spread | pack | cache-locality
  std::vector<Cluster> clusters;  // spec order
  std::vector<Link> links;
  std::vector<RegionDemand> demand;
  std::vector<PrefixHeat> heat;
  PoolRequest pools;
  PlacementModel model;
};

struct ClusterShare {
  std::string cluster;
  int32_t prefill_replicas = 0;
  int32_t decode_replicas = 0;
  int32_t gpus_used = 0;
  int32_t gpu_capacity = 0;
};

enum class PrefixAction {
  kServeInPlace,  // hot, and served where it already lives
  kReplicate,     // copy the root's KV from `source` into `target`
  kLeave,         // not hot, not worth moving, or nowhere to put it
};
const char* PrefixActionName(PrefixAction a);  // "serve-in-place" | "replicate" | "leave"

struct PrefixDecision {
  std::string root;
  PrefixAction action = PrefixAction::kLeave;
  std::string source;  // the cluster holding the most of it ("" if none)
  std::string target;  // kReplicate: where the copy goes
  double gain_s_per_s = 0;     // prefill seconds the copy saves in the target (once) / window
  double transfer_s = 0;       // bytes / link bandwidth + latency of one copy
  double cost_s_per_s = 0;     // transfer_s / replication_window_s
  std::string reason;
};

struct PlacementResult {
  std::string policy;
  std::vector<ClusterShare> clusters;  // one per input cluster, input order
  int32_t unplaced_prefill = 0;
  int32_t unplaced_decode = 0;
  std::vector<PrefixDecision> prefixes;  // one per hot root (plus replicate entries), sorted
  std::vector<std::string> notes;        // why replicas were unplaced, fallbacks taken

  const ClusterShare* Find(const std::string& cluster) const;
};

// InvalidArgument for an unknown policy, no clusters, duplicate or empty cluster names, negative
// replicas/capacity/rates, links naming unknown clusters.
StatusOr<PlacementResult> Place(const PlacementInput& input);

// The graph's clusters, links, policy and pool sizes (spec.prefill/decode replicas and GPUs per
// worker); demand and heat are left empty for the caller (routers' and agents' inventories).
PlacementInput InputFromGraph(const graph::InferenceGraph& g);

// The expected behaviour of `result` under `input`'s demand: every (region, prefix root) flow is
// routed, in small chunks, to the cluster that gives it the lowest TTFT at that moment (what a
// global router does), counting queueing, recompute of what is not cached there (or a KV pull
// from the holder when that is faster), and RTT. Replications in `result` count as cached copies
// at their target and as transferred bytes amortized over the window.
struct PlacementScore {
  double mean_ttft_s = 0;               // request-weighted, unserved demand at the penalty
  double cross_cluster_bytes_per_s = 0;  // KV pulls + prefix copies + remote request payloads
  double remote_request_ratio = 0;      // demand served outside its own region
  double unserved_rate = 0;             // requests/s with no cluster to serve them
};
PlacementScore Evaluate(const PlacementInput& input, const PlacementResult& result);

// Result as JSON text (for status, logs and the placement tool).
std::string PlacementResultToJson(const PlacementResult& result);

}  // namespace kvmesh::placement
