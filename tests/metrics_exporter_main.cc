// Test exporter for tests/prometheus_scrape_test.sh: serves GET /metrics from
// kvmesh::DefaultMetricsRegistry() with HttpServer on a free loopback port and sets a counter, a
// labelled gauge and a histogram to known values, so a real Prometheus server can scrape it and
// the script can check what Prometheus stored.
//
// Usage: kvmesh_test_metrics_exporter [--port-file PATH]
// Prints "port=<N>" on stdout once listening (and writes N to PATH); runs until SIGTERM/SIGINT.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "common/http_server.h"
#include "common/metrics.h"

namespace {

int Fail(const kvmesh::Status& s) {
  std::fprintf(stderr, "metrics_exporter: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

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
  // Block the stop signals before any thread starts so that only sigwait() sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  kvmesh::MetricsRegistry& registry = kvmesh::DefaultMetricsRegistry();
  auto requests = registry.AddCounter("kvmesh_test_requests_total", "Requests seen by the test.", {});
  if (!requests.ok()) return Fail(requests.status());
  auto depth = registry.AddGauge("kvmesh_test_queue_depth", "Queue depth per pool.", {"pool"});
  if (!depth.ok()) return Fail(depth.status());
  auto latency = registry.AddHistogram("kvmesh_test_latency_seconds", "Request latency.", {},
                                       {0.1, 0.5, 1, 5});
  if (!latency.ok()) return Fail(latency.status());

  (*requests)->WithLabels({}).Inc(42);
  (*depth)->WithLabels({"a"}).Set(3);
  (*depth)->WithLabels({"b"}).Set(7.5);
  for (double v : {0.05, 0.2, 0.3, 2.0}) (*latency)->WithLabels({}).Observe(v);

  kvmesh::http::HttpServerOptions options;
  options.num_threads = 1;
  kvmesh::http::HttpServer server(options);
  server.Route("GET", "/metrics", [&registry](const kvmesh::http::HttpRequest&) {
    kvmesh::http::HttpResponse r;
    r.content_type = kvmesh::kPrometheusTextContentType;
    r.body = registry.Render();
    return r;
  });
  server.Route("GET", "/healthz", [](const kvmesh::http::HttpRequest&) {
    return kvmesh::http::HttpResponse{200, "text/plain", {}, "ok\n"};
  });
  if (kvmesh::Status s = server.Start(); !s.ok()) return Fail(s);

  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << server.port() << "\n";
    std::rename(tmp.c_str(), port_file.c_str());  // readers never see a partial file
  }
  std::printf("port=%u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server.Stop(std::chrono::seconds(2));
  return 0;
}
