// The hub side of multi-cluster placement: turns a PlacementResult into pools inside each member
// cluster, through that cluster's own API server, and removes pools from clusters that lost their
// share. A member's objects are exactly what the single-cluster reconciler would own for a graph
// with that cluster's replica counts (controller::BuildDesired, reused), post-processed for a
// cluster the InferenceGraph does not live in:
//   - no ownerReferences (the owner lives in the hub: a member's garbage collector would delete
//     children of an owner it cannot find); instead the label kvmesh.dev/member-cluster=<name> and
//     the annotation kvmesh.dev/hub-graph=<namespace>/<name> mark them as the hub's;
//   - prefill and decode pods get a pod affinity to each other on the fabric-domain topology key
//     (default kvmesh.dev/fabric-domain), so KV transfers stay on the fast links of one domain.
// Writes are server-side apply with field manager kvmesh-hub, skipped when the live object already
// matches (controller::NeedsApply): a second sync of an unchanged world makes zero writes.
// A member that cannot be reached keeps whatever it runs (its share is held, nothing is deleted
// there); its MemberStatus says so, and the caller decides when to mark the cluster unhealthy so
// that Place() moves its share.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "operator/controller/desired_state.h"
#include "operator/kube/kube_client.h"
#include "operator/placement/placement.h"

namespace kvmesh::placement {

inline constexpr char kMemberClusterLabel[] = "kvmesh.dev/member-cluster";
inline constexpr char kHubGraphAnnotation[] = "kvmesh.dev/hub-graph";
inline constexpr char kDefaultFabricDomainKey[] = "kvmesh.dev/fabric-domain";
inline constexpr char kHubFieldManager[] = "kvmesh-hub";
// Keys of a kubeconfig Secret's data, tried in this order (kvmesh's own, then Cluster API's).
inline constexpr const char* kKubeconfigSecretKeys[] = {"kubeconfig", "value"};

struct MemberWriterOptions {
  std::string fabric_domain_key = kDefaultFabricDomainKey;
  // true: prefill pods REQUIRE a decode pod of the graph in their fabric domain (they stay Pending
  // until one runs; nodes must carry the label). false: both sides prefer it (weight 100).
  bool require_fabric_affinity = false;
};

// The objects `share` asks of one member cluster: BuildDesired for the graph with the share's
// replica counts, post-processed as above. `ready_workers` are the member's ready worker pods
// (they become its router's workers file). Empty when the share has no decode replica.
controller::DesiredObjects BuildMemberDesired(const controller::OwnedGraph& g, const ClusterShare& share,
                                              const controller::OperatorSettings& settings,
                                              const MemberWriterOptions& options,
                                              const std::vector<controller::WorkerPod>& ready_workers);

struct MemberStatus {
  std::string cluster;
  bool reachable = true;
  int32_t prefill_replicas = 0;  // the share written (or held, when unreachable)
  int32_t decode_replicas = 0;
  int applied = 0;    // objects written (server-side apply)
  int unchanged = 0;  // objects already as desired
  int deleted = 0;    // objects removed (pools this cluster lost)
  std::string error;  // first error, "" when the sync succeeded
  // Ready pods of the graph's prefill and decode pools in the member (pods with the graph label
  // and condition Ready=True, not being deleted), from the pod list the sync reads anyway; known
  // only when that list succeeded (the cluster has a share).
  bool ready_known = false;
  int32_t prefill_ready = 0;
  int32_t decode_ready = 0;
};

// Syncs every member in `members` (cluster name -> client): clusters in `placement` get their
// share, every other member (dropped from the spec, or at zero replicas) loses the graph's objects.
// Never stops at a failing member; each member's outcome is in its MemberStatus (input order of
// placement.clusters, then the remaining members by name).
std::vector<MemberStatus> SyncMembers(const controller::OwnedGraph& g, const PlacementResult& placement,
                                      const std::map<std::string, kube::KubeClient*>& members,
                                      const controller::OperatorSettings& settings,
                                      const MemberWriterOptions& options = {});

// The member's kubeconfig from the hub: Secret `secret` in `ns` read by name (get only), its data
// key kubeconfig (or value), base64-decoded and parsed. NotFound / InvalidArgument naming the
// Secret and the key.
StatusOr<kube::KubeConfig> MemberKubeConfigFromSecret(kube::KubeClient& hub, const std::string& ns,
                                                      const std::string& secret);

// One client per spec.placement.clusters entry, from its kubeconfigSecret. A cluster whose Secret
// or config fails is left out and named in the returned errors (cluster -> message).
struct MemberClients {
  std::map<std::string, std::unique_ptr<kube::KubeClient>> clients;
  std::map<std::string, std::string> errors;
  std::map<std::string, kube::KubeClient*> Pointers() const;
};
MemberClients ConnectMembers(kube::KubeClient& hub, const graph::InferenceGraph& g,
                             const kube::KubeClientOptions& options = {});

// Status JSON of a sync (for the graph's status.clusters and the placement tool).
std::string MemberStatusesToJson(const std::vector<MemberStatus>& statuses);

}  // namespace kvmesh::placement
