// kvmesh-operator with the hub controller: the single-cluster Manager (operator/manager) plus, with
// --hub.enabled, a HubController (hub_controller.h) on its own API client. The flags are the
// operator's, unchanged, plus --hub.* (HubConfig). With leader election on, the hub takes part
// in its own election on the Lease <leader_election.lease_name>-hub, so exactly one replica runs
// hub passes (it may be another replica than the one that runs the reconciler).
// Thread-safety: Start/Shutdown from one thread (the service runner's main thread).
#pragma once

#include <memory>

#include "common/status.h"
#include "operator/kube/kube_client.h"
#include "operator/kube/leader_election.h"
#include "operator/manager/manager.h"
#include "operator/manager/operator_config.h"
#include "operator/placement/hub_controller.h"

namespace kvmesh::placement {

struct HubOperatorConfig {
  op::OperatorConfig op;
  HubConfig hub;
  template <class V> void Visit(V& v) {
    op.Visit(v);  // the operator's keys stay top-level (--port, --leader-election.enabled, ...)
    v("hub", hub, "multi-cluster hub controller (docs/placement.md)");
  }
  Status Validate() const { return op.Validate(); }
};

class HubService {
 public:
  static StatusOr<std::unique_ptr<HubService>> Create(const HubOperatorConfig& config);
  ~HubService();
  HubService(const HubService&) = delete;
  HubService& operator=(const HubService&) = delete;

  Status Start();
  void Shutdown();

 private:
  HubService() = default;
  HubOperatorConfig config_;
  std::unique_ptr<op::Manager> manager_;
  std::unique_ptr<kube::KubeClient> hub_client_;
  std::unique_ptr<kube::LeaderElector> elector_;
  std::unique_ptr<HubController> hub_;
};

}  // namespace kvmesh::placement
