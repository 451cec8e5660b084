// kvmesh-operator: reconciles InferenceGraph resources into prefill/decode pools and a router.
// See docs/operator.md. With --hub.enabled it also runs the multi-cluster hub controller
// (operator/placement/hub_service.h, docs/placement.md).
#include "common/service_runner.h"
#include "operator/manager/manager.h"
#include "operator/placement/hub_service.h"

int main(int argc, char** argv) {
  return kvmesh::RunService<kvmesh::placement::HubOperatorConfig>(
      {.binary = "kvmesh-operator",
       .component = "operator",
       .env_prefix = "KVMESH_OPERATOR",
       .create_invalid_argument_exits_2 = true},
      argc, argv, [](const kvmesh::placement::HubOperatorConfig& config) {
        return kvmesh::placement::HubService::Create(config);
      });
}
