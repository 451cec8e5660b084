// kvmesh-agent: the node agent. See docs/agent.md.
#include <signal.h>

#include <cstdio>
#include <span>

#include "agent/agent.h"
#include "common/config.h"
#include "common/log.h"

namespace {

int Run(int argc, char** argv) {
  using kvmesh::agent::AgentConfig;
  if (kvmesh::Status s = kvmesh::ConfigureLoggingFromEnv(); !s.ok()) {
    std::fprintf(stderr, "kvmesh-agent: %s\n", s.ToString().c_str());
    return 2;
  }
  auto loaded = kvmesh::LoadConfigWithArgs<AgentConfig>(std::span<char* const>(argv + 1, argc - 1),
                                                        kvmesh::ProcessEnvLookup(), "KVMESH_AGENT");
  if (!loaded.ok()) {
    std::fprintf(stderr, "kvmesh-agent: %s\n(see --help)\n", loaded.status().ToString().c_str());
    return 2;
  }
  if (loaded->help_requested) {
    std::printf("usage: kvmesh-agent [--config FILE] [flags]\n\n%s",
                kvmesh::RenderConfigHelp<AgentConfig>("KVMESH_AGENT").c_str());
    return 0;
  }
  if (!loaded->positional.empty()) {
    std::fprintf(stderr, "kvmesh-agent: unexpected argument '%s'\n", loaded->positional.front().c_str());
    return 2;
  }
  const AgentConfig& config = loaded->config;
  kvmesh::LogEffectiveConfig("agent", config);

  // SIGTERM / SIGINT are taken synchronously by a waiting thread (sigwait), so the shutdown runs
  // in normal code, not in a signal handler. Block them before any thread starts.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto agent = kvmesh::agent::Agent::Create(config);
  if (!agent.ok()) {
    std::fprintf(stderr, "kvmesh-agent: %s\n", agent.status().ToString().c_str());
    return 1;
  }
  if (kvmesh::Status s = (*agent)->Start(); !s.ok()) {
    std::fprintf(stderr, "kvmesh-agent: %s\n", s.ToString().c_str());
    (*agent)->Shutdown();
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  KVMESH_LOG_INFO("agent", "signal received", {"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"});
  (*agent)->Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
