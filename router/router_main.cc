// kvmesh-router: the OpenAI-compatible front door with KV-aware routing. See docs/router.md.
#include <sys/resource.h>

#include "common/service_runner.h"
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

}  // namespace

int main(int argc, char** argv) {
  return kvmesh::RunService<kvmesh::router::RouterConfig>(
      {.binary = "kvmesh-router",
       .component = "router",
       .env_prefix = "KVMESH_ROUTER",
       .create_invalid_argument_exits_2 = true},
      argc, argv, [](const kvmesh::router::RouterConfig& config) {
        RaiseFileLimit();
        return kvmesh::router::Router::Create(config);
      });
}
