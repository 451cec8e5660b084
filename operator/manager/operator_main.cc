// kvmesh-operator: reconciles InferenceGraph resources into prefill/decode pools and a router.
// See docs/operator.md.
#include "common/service_runner.h"
#include "operator/manager/manager.h"

int main(int argc, char** argv) {
  return kvmesh::RunService<kvmesh::op::OperatorConfig>(
      {.binary = "kvmesh-operator",
       .component = "operator",
       .env_prefix = "KVMESH_OPERATOR",
       .create_invalid_argument_exits_2 = true},
      argc, argv, [](const kvmesh::op::OperatorConfig& config) {
        return kvmesh::op::Manager::Create(config);
      });
}
