// Routing policies: which worker gets a request, and whether its prefill goes remote.
//
// Modes (RouterRoutingConfig::mode):
//  - round_robin, random, least_loaded (fewest requests in flight, then fewest decode blocks;
//    ties at random): the baselines, blind to the KV cache.
//  - kv with kv_cost "dynamo": Dynamo's KV router cost per worker
//      prefill_blocks = ceil(prompt_tokens / block_size) - overlap_blocks   (blocks to compute)
//      decode_blocks  = the worker's active decode blocks (router-side load, WorkerState)
//      cost = overlap_weight * prefill_blocks + decode_blocks
//    temperature 0 -> lowest cost (ties at random); > 0 -> softmax over -cost/temperature of the
//    normalized costs.
//  - kv with kv_cost "kvmesh" (default): the same shape, improved where measurement showed it
//    matters (docs/router.md records what and why, bench numbers in docs/benchmarks.md):
//    tier-aware overlap (a G1 block is free; G2/G3 blocks cost their onboarding fraction),
//    predicted overlap from requests this router just sent (PrefixIndex predicted entries, so a
//    burst of one new prefix does not fan out before the first events arrive), and load that
//    includes the prefill tokens the router has in flight on the worker. Pure max-prefix is a known
//    trap (a shared system prompt piles every request onto one worker): the load terms must win
//    over a shared prefix once a worker is busier; a unit test proves traffic spreads.
//
// Policies are thread-safe and never block; a decision with 1,000 candidates and a populated
// index must take <= 50 us at p99 on one core (router/routing_bench.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"
#include "kv/prefix_index.h"
#include "router/router_config.h"
#include "router/worker_registry.h"

namespace kvmesh::router {

struct RouteInput {
  std::span<const kv::BlockHash> hashes;  // sequence hashes of the prompt's full blocks (salted)
  uint32_t prompt_tokens = 0;
  uint32_t max_new_tokens = 0;            // expected decode length (for decode-block estimates)
  uint32_t block_size = 16;
  // When set, the candidates may include workers that are not routable now: Choose() decides as
  // if they were not there (registry->Routable(w), read once per candidate), and returns a null
  // worker when none is. The router passes a role view's workers this way, so a request does not
  // build a candidate list first (the kv policy at temperature 0 checks in its one pass).
  const WorkerRegistry* routable_only = nullptr;
  // When set (board not null), the candidates' loads on the registry's LoadBoard, in candidate
  // order (WorkerView::DecodeLoads() for the view's decode list): the kv policy then reads them
  // there instead of from each WorkerState, with the same result. Only for that exact list.
  CandidateLoads loads;
};

struct RouteChoice {
  WorkerState* worker = nullptr;     // one of the candidates
  uint32_t overlap_blocks = 0;       // confirmed leading blocks cached on it (any tier)
  uint32_t overlap_predicted = 0;    // leading blocks counting router predictions
  double cost = 0;                   // the policy's cost (0 for the baselines)
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  virtual const char* name() const = 0;  // "kv", "round_robin", ... (metrics label)
  // Whether Choose() uses `overlaps` (the caller skips the index query otherwise).
  virtual bool uses_overlap() const = 0;
  // `candidates` is non-empty; `overlaps` is PrefixIndex::Query(input.hashes) (all_workers
  // false: workers absent from it have no overlap). The worker is null only when
  // input.routable_only left no candidate.
  virtual RouteChoice Choose(const RouteInput& input, std::span<WorkerState* const> candidates,
                             const kv::QueryResult& overlaps) = 0;
};

// InvalidArgument for an unknown mode / kv_cost.
StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(const RouterRoutingConfig& config,
                                                             uint64_t seed);

struct PrefillPlan {
  bool remote = false;
  WorkerState* prefill_worker = nullptr;  // when remote
  uint32_t uncached_tokens = 0;           // prompt tokens not cached on the decode worker
  const char* reason = "";                // metrics label: "disabled", "below_threshold",
                                          // "no_prefill_worker", "prefill_queue_full", "remote"
};

// Conditional disaggregation (ARCHITECTURE.md, request flow 3-4): given the chosen decode worker,
// decide local vs remote prefill and pick the prefill worker among `prefill_candidates`
// (routable, role prefill, other than the decode worker) by its own overlap and
// queue (prefills_inflight < max_prefill_queue), using `policy`. input.routable_only is ignored
// (the prefill candidates are routable already), so the caller may pass the decode input as is.
PrefillPlan PlanPrefill(const RouterDisaggregationConfig& config, const RouteInput& input,
                        const RouteChoice& decode, std::span<WorkerState* const> prefill_candidates,
                        const kv::QueryResult& overlaps, RoutingPolicy& policy);

namespace detail {
// The kernels of the kv policy's load-board pass over consecutive ids: "avx2" (when the CPU has
// it) or "scalar". Tests switch them; false when this CPU cannot run `name`.
std::string_view BoardKernelName();
bool SelectBoardKernelForTest(std::string_view name);
// The current kernel on n candidates (key(i) = (a[i] << sa) + (b[i] << sb), b may be null; only
// those with match[i] == 0): the smallest key, and in `at` the candidates at it, ascending.
int64_t BoardKernelForTest(uint64_t* a, uint64_t* b, const uint32_t* match, size_t n, int sa,
                           int sb, std::vector<uint32_t>& at);
}  // namespace detail

}  // namespace kvmesh::router
