// Heat and demand for the hub's placement, read from the member clusters' live kvmesh-routers.
// Each member's router is named by the graph annotation kvmesh.dev/member-routers
// ("a=http://router.a:8000,b=http://router.b:8000"; docs/placement.md). Every pass the hub GETs
// from each router:
//   - /metrics (Prometheus text): the counters kvmesh_router_requests_total (completion endpoints),
//     kvmesh_router_prompt_tokens_total, kvmesh_router_cached_tokens_total and
//     kvmesh_router_completion_tokens_total. Two samples give the cluster's request rate, mean ISL,
//     mean OSL and mean cached tokens per request; the rate counts as demand of the cluster's
//     region (users reach the router of their region);
//   - /v1/kv/inventory (the router's prefix summary: the block hashes its workers hold and the
//     hottest prefix roots of its requests: per root a request counter and the root's common
//     prefix as block hashes; router/prefix_roots.h).
// Heat model, per prefix root: a root's rate in a cluster is its counter's growth between two
// samples that both list it (a root new to the list, or whose counter went down, starts a new
// baseline); the rate counts for the cluster's region. Across clusters a root's prefix is the
// common prefix of the chains they report; its heat entry ("root:<16 hex digits>") is that many
// blocks long (block_size tokens each) and is cached in every cluster in proportion to the share
// of its blocks that cluster's summary holds.
// A router whose summary has no "roots" (older kvmesh-router) falls back to one prefix family per
// cluster cache, "cache@<cluster>": as long as the tokens its requests find cached on average,
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
inline constexpr char kMemberAgentsAnnotation[] = "kvmesh.dev/member-agents";

// "a=http://x:1,b=http://y:2" -> {a: http://x:1, b: http://y:2}. InvalidArgument naming the bad
// entry (no '=', empty name or URL, a URL that is not http:// or https://, a repeated name).
StatusOr<std::map<std::string, std::string>> ParseMemberRouters(const std::string& text);
// "a=http://p0:8000,a=http://d0:8000,b=http://x:8000" -> {a: [p0, d0], b: [x]}: a cluster may be
// listed once per agent. Same errors as ParseMemberRouters, except that a cluster may repeat (the
// same cluster and URL twice is an error).
StatusOr<std::map<std::string, std::vector<std::string>>> ParseMemberAgents(const std::string& text);

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

// One prefix root in a router's summary.
struct RootSample {
  uint64_t requests = 0;          // requests that started with it (grows while listed)
  std::vector<uint64_t> blocks;   // its common prefix, blocks[0] = the root
};
// A router's summary: block hashes (every tier), block size, and the prefix roots when listed.
struct InventorySummary {
  std::set<uint64_t> hashes;
  uint32_t block_size = 16;
  bool has_demand = false;                 // an agent's "demand" counters (kvmesh-agent)
  RouterCounters demand;
  bool has_roots = false;                  // the summary has a "roots" array
  std::map<uint64_t, RootSample> roots;    // root hash -> sample
};
// InvalidArgument for malformed JSON, a missing tiers array, a malformed roots entry (not an
// object with a root, a requests count and a non-empty blocks array starting with the root), or a
// demand object without its four unsigned counters.
StatusOr<InventorySummary> SummaryFromInventory(const std::string& inventory_json);

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
  // Fresh or stale: its sample is young enough to act on.
  bool Current() const { return state == HeatState::kFresh || state == HeatState::kStale; }
  // Current with request rates (a second sample came).
  bool RatesKnown() const { return Current() && has_rates; }
  bool has_rates = false;
  double request_rate = 0;        // requests/s
  double mean_isl = 0;            // prompt tokens per request
  double mean_osl = 0;            // completion tokens per request
  double cached_tokens_per_request = 0;
  std::set<uint64_t> hashes;      // block hashes cached in the cluster
  std::string error;              // last fetch error ("" when fresh)
  // Per prefix root (when the router lists them): requests/s of the roots listed in the last two
  // good samples, and each listed root's common prefix.
  bool has_roots = false;
  uint32_t block_size = 16;
  struct Root {
    bool has_rate = false;
    double rate = 0;
    std::vector<uint64_t> blocks;
  };
  std::map<uint64_t, Root> roots;
};

// One cluster's heat from several endpoints (its agents): the best state (fresh, stale, warming,
// unknown in that order); from the parts that are not unknown, the union of their block hashes,
// request rates added (ISL, OSL and cached tokens per request rate-weighted), and per root the
// rates added and the common prefix of their blocks; the parts' errors joined with "; ".
ClusterHeat MergeEndpointHeats(const std::vector<const ClusterHeat*>& parts);

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

  // Fetches every router in `routers` (cluster -> base URL) and, for clusters without a router,
  // every agent in `agents` (cluster -> agents' base URLs), and updates the samples. Endpoints not
  // listed are forgotten. Returns the heat of every cluster listed: its router's, or its agents'
  // merged (MergeEndpointHeats).
  std::map<std::string, ClusterHeat> Collect(const std::map<std::string, std::string>& routers,
                                             const std::map<std::string, std::vector<std::string>>& agents = {});

  // Fills input.demand and input.heat from `heat` (clusters' regions from input.clusters); a
  // cluster with unknown or no heat contributes nothing.
  void FillInput(const std::map<std::string, ClusterHeat>& heat, PlacementInput& input) const;

 private:
  struct Sample {
    std::chrono::steady_clock::time_point time;
    RouterCounters counters;
    std::map<uint64_t, uint64_t> root_requests;  // root -> its counter
  };
  struct State {
    bool agent = false;  // a kvmesh-agent (counters from its inventory's "demand"), else a router
    bool has_sample = false;
    Sample last;
    std::chrono::steady_clock::time_point last_ok;
    ClusterHeat heat;
  };
  std::chrono::steady_clock::time_point Now() const;
  // One fetch of one endpoint: updates st.heat and st's sample.
  void Sample(State& st, const std::string& url, std::chrono::steady_clock::time_point now,
              const std::vector<std::pair<std::string, std::string>>& headers);

  HeatCollectorOptions options_;
  std::unique_ptr<http::HttpClient> http_;
  std::map<std::pair<std::string, std::string>, State> states_;  // (cluster, URL) -> state
};

}  // namespace kvmesh::placement
