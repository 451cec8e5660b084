// kvmesh-router: the OpenAI-compatible front door with KV-aware routing. See docs/router.md.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <span>

#include "common/config.h"
#include "common/log.h"
#include "router/router.h"

namespace {

// Each streaming client holds a socket, and its request thread an upstream socket and an event
// loop: raise the open-file limit to the hard limit.
void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int Run(int argc, char** argv) {
  using kvmesh::router::RouterConfig;
  if (kvmesh::Status s = kvmesh::ConfigureLoggingFromEnv(); !s.ok()) {
    std::fprintf(stderr, "kvmesh-router: %s\n", s.ToString().c_str());
    return 2;
  }
  auto loaded = kvmesh::LoadConfigWithArgs<RouterConfig>(std::span<char* const>(argv + 1, argc - 1),
                                                         kvmesh::ProcessEnvLookup(), "KVMESH_ROUTER");
  if (!loaded.ok()) {
    std::fprintf(stderr, "kvmesh-router: %s\n(see --help)\n", loaded.status().ToString().c_str());
    return 2;
  }
  if (loaded->help_requested) {
    std::printf("usage: kvmesh-router [--config FILE] [flags]\n\n%s",
                kvmesh::RenderConfigHelp<RouterConfig>("KVMESH_ROUTER").c_str());
    return 0;
  }
  if (!loaded->positional.empty()) {
    std::fprintf(stderr, "kvmesh-router: unexpected argument '%s'\n", loaded->positional.front().c_str());
    return 2;
  }
  const RouterConfig& config = loaded->config;
  kvmesh::LogEffectiveConfig("router", config);
  RaiseFileLimit();

  // SIGTERM / SIGINT are taken synchronously by sigwait, so shutdown runs in normal code. Block
  // them before any thread starts (threads inherit the mask).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto router = kvmesh::router::Router::Create(config);
  if (!router.ok()) {
    std::fprintf(stderr, "kvmesh-router: %s\n", router.status().ToString().c_str());
    return router.status().code() == kvmesh::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (kvmesh::Status s = (*router)->Start(); !s.ok()) {
    std::fprintf(stderr, "kvmesh-router: %s\n", s.ToString().c_str());
    (*router)->Shutdown();
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  KVMESH_LOG_INFO("router", "signal received", {"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"});
  (*router)->Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
