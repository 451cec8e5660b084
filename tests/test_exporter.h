// The shared main loop of the test exporters that a real Prometheus scrapes in tests/*_test.sh
// (kvmesh_test_metrics_exporter, kvmesh_test_planner_exporter): parse `--port-file PATH`, block
// SIGTERM/SIGINT before any thread starts, run the caller's setup (register and set metrics in
// kvmesh::DefaultMetricsRegistry()), serve GET /metrics and /healthz on a free 127.0.0.1 port,
// write the port to PATH atomically and print "port=<N>", run the optional background loop (e.g.
// steady traffic) until a stop signal, then stop the server. Header-only, test code.
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "common/http_server.h"
#include "common/metrics.h"

namespace kvmesh::testing {

// Returns the process exit code: 0 after a stop signal, 1 on a setup/listen error, 2 on bad flags.
inline int RunTestExporter(const char* name, int argc, char** argv,
                           const std::function<Status(MetricsRegistry&)>& setup,
                           const std::function<void(const std::atomic<bool>& stop)>& loop = nullptr) {
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
      port_file = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--port-file PATH]\n", argv[0]);
      return 2;
    }
  }
  auto fail = [name](const Status& s) {
    std::fprintf(stderr, "%s: %s\n", name, s.ToString().c_str());
    return 1;
  };
  // Block the stop signals before any thread starts so that only sigwait() sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  MetricsRegistry& registry = DefaultMetricsRegistry();
  if (Status s = setup(registry); !s.ok()) return fail(s);

  http::HttpServerOptions options;
  options.num_threads = 1;
  http::HttpServer server(options);
  server.Route("GET", "/metrics", [&registry](const http::HttpRequest&) {
    http::HttpResponse r;
    r.content_type = kPrometheusTextContentType;
    r.body = registry.Render();
    return r;
  });
  server.Route("GET", "/healthz", [](const http::HttpRequest&) {
    return http::HttpResponse{200, "text/plain", {}, "ok\n"};
  });
  if (Status s = server.Start(); !s.ok()) return fail(s);

  std::atomic<bool> stop{false};
  std::thread background;
  if (loop) background = std::thread([&] { loop(stop); });

  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << server.port() << "\n";
    std::rename(tmp.c_str(), port_file.c_str());  // readers never see a partial file
  }
  std::printf("port=%u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  stop.store(true);
  if (background.joinable()) background.join();
  server.Stop(std::chrono::seconds(2));
  return 0;
}

}  // namespace kvmesh::testing
