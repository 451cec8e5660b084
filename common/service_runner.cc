#include "common/service_runner.h"

#include <signal.h>

namespace kvmesh::service_internal {
namespace {

int PrintError(const ServiceInfo& info, const Status& status, int code) {
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(info.binary.size()), info.binary.data(),
               status.ToString().c_str());
  return code;
}

}  // namespace

int UsageError(const ServiceInfo& info, const Status& status, bool see_help) {
  if (!see_help) return PrintError(info, status, 2);
  std::fprintf(stderr, "%.*s: %s\n(see --help)\n", static_cast<int>(info.binary.size()),
               info.binary.data(), status.ToString().c_str());
  return 2;
}

int RunUntilSignal(const ServiceInfo& info, const std::function<StatusOr<Running>()>& create) {
  // Block SIGTERM/SIGINT before any thread starts (threads inherit the mask); sigwait takes them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  StatusOr<Running> service = create();
  if (!service.ok()) {
    const bool usage = info.create_invalid_argument_exits_2 &&
                       service.status().code() == StatusCode::kInvalidArgument;
    return PrintError(info, service.status(), usage ? 2 : 1);
  }
  if (Status s = service->start(); !s.ok()) {
    PrintError(info, s, 1);
    service->shutdown();
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  KVMESH_LOG_INFO(info.component, "signal received", {"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"});
  service->shutdown();
  return 0;
}

}  // namespace kvmesh::service_internal
