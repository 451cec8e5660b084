// Heat and demand for the hub's placement, read from the member clusters' live kvmesh-routers.
// Each member's router is named by the graph annotation kvmesh.dev/member-routers
// ("a=http://router.a:8000,b=http://router.b:8000"; docs/placement.md). Every pass the hub GETs
// from each router:
//   - /metrics (Prometheus text): the counters kvmesh_router_requests_total (completion endpoints),
//     kvmesh_router_prompt_tokens_total, kvmesh_router_cached_tokens_total and
//     kvmesh_router_completion_tokens_total. Two samples give the cluster's request rate, mean ISL,
//     mean OSL and mean cached tokens per request; the rate counts as demand of the cluster's
//     region (users reach the router of their region);
//   - /v1/kv/inventory (the router's prefix summary: the block hashes its workers hold).
// Heat model (the routers' summaries carry block hashes, not prefix roots): each cluster's cache is
// one prefix family "cache@<cluster>", as long as the tokens its requests find cached on average,
// asked for at the cluster's request rate from its region, and cached in every other cluster in
// proportion to the share of its block hashes that cluster also holds.
// Invariants: a router that does not answer keeps its last sample (heat "stale") until max_age
// passes, then its heat is "unknown": the cluster contributes no demand and no cache — never a
// zero rate or an empty cache measured as such. Counters that go backwards (router restart) start
// a new baseline. Time comes from an injectable clock.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/http_client.h"
#include "common/status.h"
#include "operator/kube/workqueue.h"
#include "operator/placement/placement.h"

namespace kvmesh::placement {

inline constexpr char kMemberRoutersAnnotation[] = "kvmesh.dev/member-routers";

// "a=http://x:1,b=http://y:2" -> {a: http://x:1, b: http://y:2}. InvalidArgument naming the bad
// entry (no '=', empty name or URL, a URL that is not http:// or https://, a repeated name).
StatusOr<std::map<std::string, std::string>> ParseMemberRouters(const std::string& text);

// One router's counters at one time.
struct RouterCounters {
  double requests = 0;           // completion requests answered (any result but unauthorized)
  double prompt_tokens = 0;
  double cached_tokens = 0;
  double completion_tokens = 0;
};
// The counters from Prometheus text. InvalidArgument for unparsable text or when
// kvmesh_router_requests_total is absent (not a kvmesh-router).
StatusOr<RouterCounters> CountersFromMetrics(const std::string& prometheus_text);
// The block hashes of an inventory (every tier). InvalidArgument for malformed JSON.
StatusOr<std::set<uint64_t>> HashesFromInventory(const std::string& inventory_json);

enum class HeatState {
  kNone,     // no router URL for this cluster
  kUnknown,  // never answered, or its last sample is older than max_age
  kWarming,  // one sample so far: cache known, rates not yet (they need two)
  kFresh,    // answered this pass
  kStale,    // did not answer this pass; last sample younger than max_age is used
};
const char* HeatStateName(HeatState s);  // "none" | "unknown" | "warming" | "fresh" | "stale"

// What one cluster's router told the hub (rates from the last two good samples).
struct ClusterHeat {
  HeatState state = HeatState::kNone;
  bool has_rates = false;
  double request_rate = 0;        // requests/s
  double mean_isl = 0;            // prompt tokens per request
  double mean_osl = 0;            // completion tokens per request
  double cached_tokens_per_request = 0;
  std::set<uint64_t> hashes;      // block hashes cached in the cluster
  std::string error;              // last fetch error ("" when fresh)
};

struct HeatCollectorOptions {
  std::chrono::milliseconds max_age{600000};  // a stale sample is used this long, then unknown
  std::chrono::milliseconds timeout{3000};    // per GET
  std::string router_api_key;                  // Authorization: Bearer (routers with API keys)
  double kv_bytes_per_token = 131072;           // KV bytes of one token (128 KiB: 8B-class fp16)
  kube::Clock* clock = nullptr;                 // nullptr = steady clock; not owned
};

// Keeps per-cluster samples between passes. Not thread-safe: one pass at a time.
class HeatCollector {
 public:
  explicit HeatCollector(HeatCollectorOptions options = {});
  ~HeatCollector();

  // Fetches every router in `routers` (cluster -> base URL) and updates the samples. Clusters not
  // in `routers` are forgotten. Returns the heat of every cluster in `routers`.
  std::map<std::string, ClusterHeat> Collect(const std::map<std::string, std::string>& routers);

  // Fills input.demand and input.heat from `heat` (clusters' regions from input.clusters); a
  // cluster with unknown or no heat contributes nothing.
  void FillInput(const std::map<std::string, ClusterHeat>& heat, PlacementInput& input) const;

 private:
  struct Sample {
    std::chrono::steady_clock::time_point time;
    RouterCounters counters;
  };
  struct State {
    bool has_sample = false;
    Sample last;
    std::chrono::steady_clock::time_point last_ok;
    ClusterHeat heat;
  };
  std::chrono::steady_clock::time_point Now() const;

  HeatCollectorOptions options_;
  std::unique_ptr<http::HttpClient> http_;
  std::map<std::string, State> states_;  // cluster -> state
};

}  // namespace kvmesh::placement
