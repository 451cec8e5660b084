// Test exporter for tests/planner_prometheus_test.sh: registers the router's real metric table
// (router/router_metrics.cc) in the default registry, serves GET /metrics on a free loopback port,
// and generates router-like traffic at a known, steady pattern every 100 ms:
//   20 requests/s completed (result="ok"), plus 10 requests/s rejected (not load);
//   3000 prompt tokens and 150 completion tokens per completed request;
//   every TTFT observation 0.3 s (bucket (0.25, 0.5] -> p90 = 0.25 + 0.25 * 0.9 = 0.475 s);
//   every ITL observation 0.03 s (bucket (0.02, 0.04] -> p90 = 0.02 + 0.02 * 0.9 = 0.038 s).
//
// Usage: kvmesh_test_planner_exporter [--port-file PATH]; runs until SIGTERM/SIGINT.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "common/http_server.h"
#include "common/metrics.h"
#include "router/router_metrics.h"

int main(int argc, char** argv) {
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
      port_file = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--port-file PATH]\n", argv[0]);
      return 2;
    }
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  kvmesh::MetricsRegistry& registry = kvmesh::DefaultMetricsRegistry();
  auto metrics = kvmesh::router::RouterMetrics::Register(registry);
  if (!metrics.ok()) {
    std::fprintf(stderr, "planner_exporter: %s\n", metrics.status().ToString().c_str());
    return 1;
  }
  kvmesh::router::RouterMetrics m = *metrics;

  kvmesh::http::HttpServerOptions options;
  options.num_threads = 1;
  kvmesh::http::HttpServer server(options);
  server.Route("GET", "/metrics", [&registry](const kvmesh::http::HttpRequest&) {
    kvmesh::http::HttpResponse r;
    r.content_type = kvmesh::kPrometheusTextContentType;
    r.body = registry.Render();
    return r;
  });
  if (kvmesh::Status s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "planner_exporter: %s\n", s.ToString().c_str());
    return 1;
  }

  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    auto next = std::chrono::steady_clock::now();
    while (!stop.load()) {
      for (int i = 0; i < 2; ++i) {
        m.requests->WithLabels({"chat_completions", "ok"}).Inc();
        m.AddTokens(3000, 0);
        m.completion_tokens->Inc(150);
        m.ttft->Observe(0.3);
        for (int t = 0; t < 149; ++t) m.itl->Observe(0.03);
      }
      m.requests->WithLabels({"chat_completions", "rejected"}).Inc();
      next += std::chrono::milliseconds(100);
      std::this_thread::sleep_until(next);
    }
  });

  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << server.port() << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  std::printf("port=%u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  stop.store(true);
  traffic.join();
  server.Stop(std::chrono::seconds(2));
  return 0;
}
