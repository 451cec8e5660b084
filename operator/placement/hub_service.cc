#include "operator/placement/hub_service.h"

#include <unistd.h>

#include <cstdlib>

namespace kvmesh::placement {

StatusOr<std::unique_ptr<HubService>> HubService::Create(const HubOperatorConfig& config) {
  std::unique_ptr<HubService> s(new HubService());
  s->config_ = config;
  KVMESH_ASSIGN_OR_RETURN(s->manager_, op::Manager::Create(config.op));
  if (!config.hub.enabled) return s;
  KVMESH_ASSIGN_OR_RETURN(kube::KubeConfig kc, kube::ResolveKubeConfig(config.op.kubeconfig, config.op.context));
  kube::KubeClientOptions co;
  co.timeout = config.op.api_timeout;
  co.user_agent = "kvmesh-hub";
  KVMESH_ASSIGN_OR_RETURN(s->hub_client_, kube::CreateKubeClient(kc, co));
  HubControllerOptions ho;
  ho.config = config.hub;
  ho.settings = config.op.pods.s;
  ho.watch_namespace = config.op.watch_namespace;
  const auto& le = config.op.leader_election;
  if (le.enabled) {
    kube::LeaderElectionConfig ec;
    const char* pod_ns = std::getenv("POD_NAMESPACE");
    ec.lease_namespace = !le.lease_namespace.empty() ? le.lease_namespace
                         : (pod_ns != nullptr && *pod_ns != '\0') ? pod_ns : "default";
    ec.lease_name = le.lease_name + "-hub";
    if (!le.identity.empty()) {
      ec.identity = le.identity + "-hub";
    } else {
      char host[256] = {};
      if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
      const char* pod = std::getenv("POD_NAME");
      ec.identity = std::string(pod != nullptr && *pod != '\0' ? pod : host[0] != '\0' ? host : "kvmesh-operator") +
                    "-" + std::to_string(getpid()) + "-hub";
    }
    ec.lease_duration = le.lease_duration;
    ec.renew_deadline = le.renew_deadline;
    ec.retry_period = le.retry_period;
    s->elector_ = std::make_unique<kube::LeaderElector>(s->hub_client_.get(), ec);
    kube::LeaderElector* elector = s->elector_.get();
    ho.leading = [elector] { return elector->IsLeader(); };
  }
  s->hub_ = std::make_unique<HubController>(s->hub_client_.get(), ho);
  return s;
}

HubService::~HubService() { Shutdown(); }

Status HubService::Start() {
  KVMESH_RETURN_IF_ERROR(manager_->Start());
  if (elector_) KVMESH_RETURN_IF_ERROR(elector_->Start());
  if (hub_) KVMESH_RETURN_IF_ERROR(hub_->Start());
  return Status::Ok();
}

void HubService::Shutdown() {
  if (hub_) hub_->Stop();
  if (elector_) elector_->Stop();
  if (manager_) manager_->Shutdown();
}

}  // namespace kvmesh::placement
