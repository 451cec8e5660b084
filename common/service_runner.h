// The main() of a long-running kvmesh service (kvmesh-agent, kvmesh-router): logging from the
// environment, the typed config from --config/flags/env (common/config.h), --help, then create,
// start, run until SIGTERM or SIGINT, shut down (drain) and exit.
//
// Exit codes and messages (every error line starts with "<binary>: "):
//   0  --help, or shut down after SIGTERM/SIGINT ("signal received" is logged first);
//   2  bad logging environment, bad config or flag ("(see --help)" follows), a positional
//      argument, or -- with ServiceInfo::create_invalid_argument_exits_2 -- InvalidArgument from
//      the service's Create;
//   1  any other Create failure, or Start failed (Shutdown() runs before the exit).
// SIGTERM and SIGINT are blocked before the service is created, so every thread it starts
// inherits the mask and the signal is taken synchronously by sigwait on the main thread: Shutdown
// runs in normal code, not in a signal handler. SIGPIPE is ignored (a closed socket is an error
// return, not a process kill).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"

namespace kvmesh {

struct ServiceInfo {
  std::string_view binary;      // "kvmesh-agent": prefixes error lines, names the usage line
  std::string_view component;   // "agent": log component of the effective config and signal lines
  std::string_view env_prefix;  // "KVMESH_AGENT": env vars of the config fields
  // When true, an InvalidArgument from Create exits 2 (a usage error) instead of 1.
  bool create_invalid_argument_exits_2 = false;
};

namespace service_internal {

// The running service, type-erased: start() once; shutdown() once, at a signal or after a failed
// start(). Owns the service object (destroyed after shutdown()).
struct Running {
  std::function<Status()> start;
  std::function<void()> shutdown;
};

// 2 after printing "<binary>: <status>" (+ "\n(see --help)" when `see_help`).
int UsageError(const ServiceInfo& info, const Status& status, bool see_help);

// Blocks SIGTERM/SIGINT, ignores SIGPIPE, calls `create`, starts the service and waits for a
// signal; returns the exit code (see the header comment).
int RunUntilSignal(const ServiceInfo& info, const std::function<StatusOr<Running>()>& create);

}  // namespace service_internal

// Runs the service `Config` configures until a signal; returns the process exit code.
// `create(const Config&)` returns StatusOr<std::unique_ptr<S>> where S has Status Start() and
// void Shutdown() (Shutdown must be safe after a failed or partial Start).
template <typename Config, typename CreateFn>
int RunService(const ServiceInfo& info, int argc, char** argv, CreateFn create) {
  if (Status s = ConfigureLoggingFromEnv(); !s.ok()) {
    return service_internal::UsageError(info, s, /*see_help=*/false);
  }
  auto loaded = LoadConfigWithArgs<Config>(std::span<char* const>(argv + 1, argc - 1),
                                           ProcessEnvLookup(), info.env_prefix);
  if (!loaded.ok()) return service_internal::UsageError(info, loaded.status(), /*see_help=*/true);
  if (loaded->help_requested) {
    std::printf("usage: %.*s [--config FILE] [flags]\n\n%s", static_cast<int>(info.binary.size()),
                info.binary.data(), RenderConfigHelp<Config>(info.env_prefix).c_str());
    return 0;
  }
  if (!loaded->positional.empty()) {
    std::fprintf(stderr, "%.*s: unexpected argument '%s'\n", static_cast<int>(info.binary.size()),
                 info.binary.data(), loaded->positional.front().c_str());
    return 2;
  }
  const Config& config = loaded->config;
  LogEffectiveConfig(info.component, config);
  return service_internal::RunUntilSignal(
      info, [&]() -> StatusOr<service_internal::Running> {
        auto created = create(config);
        if (!created.ok()) return created.status();
        // shared: both closures hold it; it dies with the last of them, after shutdown().
        std::shared_ptr service(std::move(created).value());
        return service_internal::Running{[service] { return service->Start(); },
                                         [service] { service->Shutdown(); }};
      });
}

}  // namespace kvmesh
