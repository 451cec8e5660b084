// kvmesh-agent: the node agent. See docs/agent.md.
#include "agent/agent.h"
#include "common/service_runner.h"

int main(int argc, char** argv) {
  return kvmesh::RunService<kvmesh::agent::AgentConfig>(
      {.binary = "kvmesh-agent", .component = "agent", .env_prefix = "KVMESH_AGENT"}, argc, argv,
      [](const kvmesh::agent::AgentConfig& config) { return kvmesh::agent::Agent::Create(config); });
}
