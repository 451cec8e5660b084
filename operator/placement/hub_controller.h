// The hub controller: multi-cluster placement running inside kvmesh-operator (--hub.enabled).
// For every InferenceGraph with spec.placement.clusters it runs, every --hub.interval and whenever
// the graph changes, one pass:
//   1. connect to each member through its kubeconfig Secret (ConnectMembers);
//   2. probe members marked unreachable: one that answers is healthy again at once;
//   3. collect heat and demand from the members' routers (hub_heat.h) and run Place() with the
//      graph's policy; a member unreachable for --hub.unhealthy-after is placed healthy=false, so
//      its share moves to the others;
//   4. SyncMembers() (server-side apply; zero writes when every member already matches). When a
//      member's grace period ends during this pass, placement and sync run again at once; then
//      the `replicate` decisions are acted on: the root's KV is copied agent to agent
//      (hub_prefix_copy.h), each (root, target) at most once per --hub.copy-interval;
//   5. write status.clusters (merge patch of the /status subresource) only when it changed. Each
//      entry records the member's kubeconfigSecret, so a cluster later dropped from the spec can
//      still be reached to remove what the hub put there.
// Clean-up: a multi-cluster graph carries the finalizer kvmesh.dev/hub-members (added before the
// first member write). When the graph is deleted, or loses spec.placement.clusters, a pass removes
// the hub's objects from every member it placed into (spec and status), then drops the finalizer.
// A member that cannot be cleaned holds the finalizer until it has been unreachable for
// --hub.unhealthy-after; then the hub gives up on it (kvmesh_hub_members_abandoned_total, a
// warning naming the cluster: its objects stay there, labelled kvmesh.dev/member-cluster).
// A cluster dropped from the spec is cleaned the same way while the graph lives on.
// Invariants: a member is never marked unhealthy before it has failed for unhealthy_after on the
// injected clock; an unreachable member's share is held (not moved, nothing deleted there) until
// then; a pass of an unchanged world makes zero writes to the hub and to every member.
// Thread-safety: SyncGraph from one thread at a time; Start/Stop from one thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/metrics.h"
#include "common/status.h"
#include "operator/controller/desired_state.h"
#include "operator/kube/informer.h"
#include "operator/kube/kube_client.h"
#include "operator/kube/workqueue.h"
#include "operator/placement/hub_heat.h"
#include "operator/placement/hub_prefix_copy.h"
#include "operator/placement/member_clusters.h"

namespace kvmesh::placement {

inline constexpr char kHubFinalizer[] = "kvmesh.dev/hub-members";

// Flags --hub.* of kvmesh-operator (env KVMESH_OPERATOR_HUB_*).
struct HubConfig {
  bool enabled = false;
  std::chrono::milliseconds interval{30000};
  std::chrono::milliseconds unhealthy_after{120000};
  std::chrono::milliseconds heat_max_age{600000};
  std::chrono::milliseconds member_timeout{5000};
  std::string router_api_key;
  double kv_bytes_per_token = 131072;
  std::string fabric_domain_key = kDefaultFabricDomainKey;
  bool require_fabric_affinity = false;
  std::chrono::milliseconds copy_interval{300000};
  std::chrono::milliseconds copy_timeout{30000};
  template <class V> void Visit(V& v) {
    v("enabled", enabled, "run the hub controller: place graphs with spec.placement.clusters into member clusters");
    v("interval", interval, "how often every multi-cluster graph is placed and synced again");
    v("unhealthy_after", unhealthy_after, "a member unreachable this long is unhealthy: its share moves");
    v("heat_max_age", heat_max_age, "a router that stops answering keeps its last heat this long, then it is unknown");
    v("member_timeout", member_timeout, "timeout of one request to a member API server or router");
    v("router_api_key", router_api_key, "bearer key for the member routers' /v1/kv/inventory", kConfigSecret);
    v("kv_bytes_per_token", kv_bytes_per_token, "KV cache bytes of one token (prices prefix copies)");
    v("fabric_domain_key", fabric_domain_key, "node label of the fabric domain prefill/decode pods share");
    v("require_fabric_affinity", require_fabric_affinity, "prefill pods require a decode pod in their fabric domain");
    v("copy_interval", copy_interval,
      "act on replicate decisions: copy a root into a cluster at most once per this interval (0 = never copy)");
    v("copy_timeout", copy_timeout, "timeout of one prefix import (the target agent's pull of the copied blocks)");
  }
  Status Validate() const;
};

struct HubControllerOptions {
  HubConfig config;
  controller::OperatorSettings settings;  // how member pods are built (as the single-cluster operator)
  kube::Clock* clock = nullptr;           // nullptr = real clock; not owned
  MetricsRegistry* metrics = nullptr;     // nullptr = DefaultMetricsRegistry()
  std::string watch_namespace;            // "" = all namespaces
  // The loop runs passes only while this returns true (leader election); nullptr = always.
  std::function<bool()> leading;
};

// The outcome of one pass over one graph (for tests and logs).
struct HubPassResult {
  PlacementResult placement;
  std::vector<MemberStatus> members;
  std::map<std::string, ClusterHeat> heat;
  nlohmann::json status_clusters;  // what status.clusters is after the pass
  bool status_written = false;
  bool skipped = false;  // not a multi-cluster graph (and nothing of it left to clean)
  bool cleanup = false;  // a clean-up pass (graph deleted or no longer multi-cluster)
  bool finalizer_removed = false;  // the clean-up finished and kvmesh.dev/hub-members was dropped
  std::vector<std::string> abandoned;  // members given up on in this pass (past the grace period)
  struct Copy {
    std::string root, source, target;  // clusters
    PrefixCopyResult result;
  };
  std::vector<Copy> copies;  // prefix copies tried in this pass (replicate decisions acted on)
};

class HubController {
 public:
  // `hub` must outlive the controller.
  HubController(kube::KubeClient* hub, HubControllerOptions options);
  ~HubController();  // Stop()
  HubController(const HubController&) = delete;
  HubController& operator=(const HubController&) = delete;

  // One pass over one graph object (as read from the hub API server). Errors: the graph cannot be
  // parsed or validated, Place() refused the input, or the status write failed; member failures
  // are not errors (they are in the result and in status.clusters).
  StatusOr<HubPassResult> SyncGraph(const nlohmann::json& graph_object);

  // Watches InferenceGraphs and runs SyncGraph for each multi-cluster graph every interval and on
  // every spec or annotation change, on one thread.
  Status Start();
  void Stop();

 private:
  struct GraphState;
  // Of `members`, those that failed (unreachable, or an error) are recorded in st and those that
  // succeeded forgotten; true when a failed one is still inside its grace period. Those past it are
  // given up on (result.abandoned, metric, warning).
  bool TrackFailures(GraphState& st, const std::string& key, const std::vector<MemberStatus>& members,
                     std::chrono::steady_clock::time_point now, HubPassResult& result);
  StatusOr<HubPassResult> CleanUp(const nlohmann::json& graph_object, const controller::OwnedGraph& og,
                                  const MemberClients& clients, const std::map<std::string, std::string>& secret_of,
                                  GraphState& st, HubPassResult result);
  void CountSync(const MemberStatus& m);
  void SetShare(const std::string& key, const MemberStatus& m);
  // Acts on result.placement's replicate decisions (hub_prefix_copy.h): at most
  // kMaxCopiesPerPass copies, each (root, target) at most once per --hub.copy-interval.
  void CopyPrefixes(const std::string& key, const PlacementInput& input,
                    const std::map<std::string, std::vector<std::string>>& agents, GraphState& st,
                    std::chrono::steady_clock::time_point now, HubPassResult& result);
  // Merge-patches status.clusters when it differs (json() = remove it); NotFound is not an error.
  Status WriteStatusClusters(const nlohmann::json& graph_object, const std::string& key,
                             const nlohmann::json& clusters, HubPassResult& result);
  void Loop();
  void OnGraph(const nlohmann::json& obj);
  std::chrono::steady_clock::time_point Now() const;

  kube::KubeClient* const hub_;
  HubControllerOptions options_;
  std::map<std::string, std::unique_ptr<GraphState>> graphs_;  // key ns/name; only the pass thread
  std::map<std::string, std::chrono::steady_clock::time_point> next_due_;  // only the pass thread
  CounterFamily* sync_total_ = nullptr;
  CounterFamily* passes_total_ = nullptr;
  GaugeFamily* healthy_ = nullptr;
  GaugeFamily* share_ = nullptr;
  GaugeFamily* request_rate_ = nullptr;
  CounterFamily* abandoned_total_ = nullptr;
  CounterFamily* copies_total_ = nullptr;
  CounterFamily* copy_bytes_total_ = nullptr;

  std::unique_ptr<kube::Informer> informer_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;       // guarded by mu_
  std::set<std::string> dirty_;  // guarded by mu_: graphs changed since their last pass
};

}  // namespace kvmesh::placement
