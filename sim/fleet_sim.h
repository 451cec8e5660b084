// FleetSim: the discrete-event fleet simulator's engine (docs/simulator.md, "Engine").
//
// A fleet is a list of pools of identical instances (aggregated, prefill or decode role; one
// instance = one model replica on `tp` GPUs, timed by sim::PerfModel). Requests from a
// sim::Workload are routed by the REAL router code: router::CreateRoutingPolicy(...)->Choose() and
// router::PlanPrefill() over router::WorkerState objects whose load counters are kept by real
// router::LoadGuard objects exactly as kvmesh-router keeps them (router/router.cc). Each instance
// owns a REAL kv::BlockPool (prefix caching, LRU eviction); its KV events reach a REAL
// kv::PrefixIndex (the router's global index) after `event_delay_s` of simulated time, and the
// router adds predicted entries for what it just sent, on the simulated clock.
//
// Instance scheduler (vLLM-like continuous batching): a FCFS waiting queue; each engine step
// continues chunked prefills and admits waiting requests up to `max_prefill_tokens` new tokens
// and `max_batch` running sequences when their KV blocks can be allocated (cached prefix = hit),
// and runs one decode token for every decoding sequence. A mixed step costs the prefill part plus
// the decode part. When a decode sequence cannot get a block the most recently admitted sequence
// is preempted (blocks freed, recomputed later). A stable decode-only batch is advanced to its
// next change (earliest finish, block shortage) in ONE event; new work arriving meanwhile
// truncates that jump at the next step boundary, so results equal step-by-step simulation.
//
// Disaggregation: a remote prefill runs on a prefill instance (first token = TTFT there); the
// decode instance then allocates blocks (its own cached prefix is not sent) and the KV of the
// remaining prompt tokens moves over the link (PerfModel::TransferSeconds(KvBytes(tokens)));
// transfers into one decode instance are serialized (its inbound link).
//
// Clusters and regions (docs/simulator.md, "Placement comparison"): each pool belongs to a cluster
// (SimConfig::clusters, in a region). When clusters are given, a request from region r is routed
// over every cluster's instances with WorkerState::rtt_ms set, for that decision, to the round
// trip between r and the instance's cluster (the global tier's rtt-aware kvmesh cost); the round
// trip is added to its TTFT and end-to-end latency; a request served by a cluster outside its
// region counts its prompt and response payload as cross-cluster bytes; a disaggregated KV
// transfer between two clusters counts its KV bytes and runs over the inter-cluster link.
//
// Scaling (the planner in the simulator, docs/simulator.md "Planner in the simulator"): with
// SimConfig::scale set, every scale_interval_s of simulated time the hook gets the interval's
// observed load and returns the wanted instance count per pool. A pool grows by new (cold)
// instances; it shrinks by draining its most recently added instances: the router stops sending
// them requests at once, what they hold finishes, then they are removed (no request is dropped).
//
// Prefix seeds (SimConfig::prefix_seeds): at a given simulated time a block chain is written into
// the first live instance of a cluster as cached, evictable blocks (BlockStored reaches the index
// like any other event): a cache that is warm at the start, or a prefix copy from another cluster
// arriving (its KV bytes count as cross-cluster). Blocks already cached there are not copied again.
//
// Invariants: every request ends (finished, or rejected when every candidate is at the router's
// max_inflight_per_worker or the prompt can never fit an instance's KV); at the end every block
// pool has 0 used blocks and passes CheckInvariants() (SimResult::leaked_blocks, pool_errors).
// The same config, workload and seed give the same result (one thread, seeded RNGs, ties in the
// event queue broken by insertion order).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"
#include "router/router_config.h"
#include "router/worker_registry.h"
#include "sim/perf_model.h"
#include "sim/workload.h"

namespace kvmesh::sim {

struct PoolConfig {
  router::WorkerRole role = router::WorkerRole::kAggregated;
  uint32_t count = 1;                // instances
  std::string gpu = "h100";          // GpuByName
  std::string model = "llama-3.1-8b";  // ModelByName
  uint32_t tp = 1;                   // GPUs per instance
  uint32_t max_batch = 256;          // running sequences per instance (vLLM max_num_seqs)
  uint32_t max_prefill_tokens = 8192;  // new prefill tokens per engine step (chunk budget)
  uint32_t kv_blocks = 0;            // 0 = PerfModel::KvCapacityTokens() / block_size
  PerfConstants constants;
  uint32_t cluster = 0;              // index into SimConfig::clusters (0 when there are none)
};

// A cluster of the fleet (multi-region runs). Empty SimConfig::clusters = one cluster, no RTT.
struct SimCluster {
  std::string name;
  uint32_t region = 0;  // index into the run's regions (SimRequest::region)
};

// What the scaling hook sees at the end of one interval.
struct IntervalStats {
  double time_s = 0;          // end of the interval (simulated)
  double interval_s = 0;
  uint64_t arrivals = 0;      // requests that arrived in the interval
  double mean_isl = 0;        // of those (0 when none)
  double mean_osl = 0;
  uint64_t completed = 0;     // requests that finished in the interval
  double ttft_p90_s = 0;      // over those; NaN when none finished
  double itl_p90_s = 0;       // p90 over those of each request's mean inter-token gap; NaN if none
  double mean_decoding = 0;   // sequences decoding at once over the fleet (time average)
  uint64_t in_flight = 0;     // requests in the fleet at the end of the interval
  std::vector<uint32_t> active;    // per pool: instances taking new requests
  std::vector<uint32_t> draining;  // per pool: instances finishing their work before removal
};
// Returns the wanted instance count per pool (same size as SimConfig::pools; 0 is raised to 1
// for a pool that is the last to serve decode).
using ScaleFn = std::function<std::vector<uint32_t>(const IntervalStats&)>;

// A block chain written into one instance of `cluster` at `at_s` (see "Prefix seeds" above).
struct PrefixSeed {
  double at_s = 0;
  uint32_t cluster = 0;                 // index into SimConfig::clusters (0 when there are none)
  std::vector<kv::BlockHash> hashes;    // the chain, from block 0
  // The cluster the KV comes from: its bytes count as cross-cluster when it differs from
  // `cluster`. kNoSource: no transfer (the cache was warm already).
  static constexpr uint32_t kNoSource = UINT32_MAX;
  uint32_t from_cluster = kNoSource;
};

struct SimConfig {
  std::vector<PoolConfig> pools;
  std::string link = "nvlink";       // LinkByName: between prefill and decode instances
  router::RouterRoutingConfig routing;
  router::RouterDisaggregationConfig disaggregation;
  uint32_t max_inflight_per_worker = 256;  // router's workers.max_inflight_per_worker
  uint32_t block_size = 16;
  double event_delay_s = 0.005;      // KV event delivery delay to the router's index
  double sla_ttft_s = 2.0;           // goodput: TTFT <= this ...
  double sla_itl_s = 0.05;           // ... and mean inter-token latency <= this
  uint64_t seed = 1;
  // Closed loop (0 = open loop): keep this many requests in the fleet. The workload's arrival
  // times are ignored; `concurrency` requests enter at t = 0 and each one that ends (finished or
  // rejected) lets the workload's next request in at that moment, with no think time, as a
  // fixed-concurrency load generator does (genai-perf / Dynamo's benchmarks, `kvmesh bench
  // --concurrency`).
  uint32_t concurrency = 0;
  // Most decode steps one event may advance a stable batch by (1 = step by step: slower, same
  // result; tests compare the two).
  uint32_t max_jump_steps = 4096;

  // ---- multi-region fleets (all empty for a single cluster) ----
  std::vector<SimCluster> clusters;
  // region_rtt_ms[r][c]: round trip between users in region r and cluster c (ms). Needed (one row
  // per region of the workload, one column per cluster) when clusters are given.
  std::vector<std::vector<double>> region_rtt_ms;
  // cluster_links[a][b]: the link KV moves over from cluster a to cluster b (a != b); the
  // diagonal is unused (`link` inside a cluster). Needed when clusters are given.
  std::vector<std::vector<LinkSpec>> cluster_links;
  double payload_bytes_per_token = 4;  // request/response bytes per token served remotely
  // Remote prefill only on a prefill instance of the decode instance's cluster (a cluster's
  // router disaggregates locally); false = any prefill instance (cross-cluster KV transfers).
  bool cluster_local_prefill = true;
  // Chains cached at the start or copied in during the run (empty = every cache starts cold).
  std::vector<PrefixSeed> prefix_seeds;

  // ---- scaling (empty = fixed fleet) ----
  double scale_interval_s = 0;
  ScaleFn scale;

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

// "random", "round_robin", "least_loaded", "kv:dynamo", "kv:kvmesh" (also "kv" = kv:kvmesh)
// -> the router's routing config (other fields from `base`). InvalidArgument otherwise.
StatusOr<router::RouterRoutingConfig> RoutingForPolicy(std::string_view policy,
                                                       const router::RouterRoutingConfig& base);

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

struct SimResult {
  std::string policy;                // label given to Run()
  std::string workload;              // Workload::Describe()
  uint64_t requests = 0;             // arrived
  uint64_t completed = 0;
  uint64_t rejected = 0;             // router had no routable worker / prompt never fits
  uint32_t gpus = 0;
  uint32_t instances = 0;
  double duration_s = 0;             // first arrival to last completion (simulated)
  uint64_t prompt_tokens = 0;        // of completed requests
  uint64_t cached_prompt_tokens = 0; // of those, served from the prefix cache at first prefill
  uint64_t output_tokens = 0;
  double output_tokens_per_s = 0;
  double output_tokens_per_s_per_gpu = 0;
  double tokens_per_s_per_user = 0;  // mean over requests of (output - 1) / (e2e - ttft)
  Percentiles ttft_s, itl_s, e2e_s;  // ITL over every inter-token gap of every request
  double goodput_rps = 0;            // completed requests meeting both SLAs, per second
  double goodput_rps_per_gpu = 0;
  double sla_attainment = 0;         // fraction of completed requests meeting both SLAs
  double cache_hit_ratio = 0;        // cached_prompt_tokens / prompt_tokens
  uint64_t remote_prefills = 0;
  uint64_t transfer_bytes = 0;
  uint64_t preemptions = 0;
  uint64_t engine_steps = 0;         // simulated engine steps (all instances)
  uint64_t events = 0;               // discrete events processed
  uint64_t leaked_blocks = 0;        // blocks still used at the end (0 = no leak)
  // Multi-region runs (0 otherwise).
  uint64_t remote_requests = 0;      // completed requests served by a cluster outside their region
  uint64_t cross_cluster_bytes = 0;  // remote payloads + KV moved between clusters
  uint64_t cross_cluster_kv_bytes = 0;  // of those, KV of cross-cluster disaggregated transfers
  std::vector<uint64_t> completed_by_cluster;  // per SimConfig::clusters entry
  // Prefix seeds: applied (blocks written or already cached), skipped (no live instance in the
  // cluster, or no room), and the blocks and KV bytes of the cross-cluster ones (the bytes are in
  // cross_cluster_bytes too).
  uint64_t prefix_seeds_applied = 0;
  uint64_t prefix_seeds_skipped = 0;
  uint64_t prefix_copy_blocks = 0;
  uint64_t prefix_copy_bytes = 0;
  // Scaling runs.
  uint64_t instances_added = 0;
  uint64_t instances_removed = 0;    // drained and removed
  uint32_t peak_instances = 0;       // most instances present at once
  double gpu_seconds = 0;            // sum over instances of GPUs x time present (first arrival on)
  std::string pool_errors;           // first CheckInvariants failure, "" when all pools are ok
  double wall_s = 0;                 // real time the run took
};

// One JSON object (single line) with every field above.
std::string SimResultJson(const SimResult& r);
// A fixed-width comparison table, one row per result.
std::string SimResultTable(const std::vector<SimResult>& results);

// Runs the whole workload through a fresh fleet. InvalidArgument/NotFound for a bad config
// (unknown GPU/model/link, a model that does not fit); the workload is consumed.
StatusOr<SimResult> RunFleetSim(const SimConfig& config, Workload& workload,
                                std::string policy_label = "");

}  // namespace kvmesh::sim
