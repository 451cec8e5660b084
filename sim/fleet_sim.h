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
  // Most decode steps one event may advance a stable batch by (1 = step by step: slower, same
  // result; tests compare the two).
  uint32_t max_jump_steps = 4096;

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
