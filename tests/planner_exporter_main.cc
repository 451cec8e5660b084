// Test exporter for tests/planner_prometheus_test.sh: registers the router's real metric table
// (router/router_metrics.cc) in the default registry, serves GET /metrics on a free loopback port,
// and generates router-like traffic at a known, steady pattern every 100 ms:
//   20 requests/s completed (result="ok"), plus 10 requests/s rejected (not load);
//   3000 prompt tokens and 150 completion tokens per completed request;
//   every TTFT observation 0.3 s (bucket (0.25, 0.5] -> p90 = 0.25 + 0.25 * 0.9 = 0.475 s);
//   every ITL observation 0.03 s (bucket (0.02, 0.04] -> p90 = 0.02 + 0.02 * 0.9 = 0.038 s).
//
// Usage: kvmesh_test_planner_exporter [--port-file PATH]; runs until SIGTERM/SIGINT.
#include <chrono>
#include <optional>
#include <thread>

#include "router/router_metrics.h"
#include "tests/test_exporter.h"

int main(int argc, char** argv) {
  std::optional<kvmesh::router::RouterMetrics> m;
  return kvmesh::testing::RunTestExporter(
      "planner_exporter", argc, argv,
      [&m](kvmesh::MetricsRegistry& registry) -> kvmesh::Status {
        KVMESH_ASSIGN_OR_RETURN(m, kvmesh::router::RouterMetrics::Register(registry));
        return kvmesh::Status::Ok();
      },
      [&m](const std::atomic<bool>& stop) {
        auto next = std::chrono::steady_clock::now();
        while (!stop.load()) {
          for (int i = 0; i < 2; ++i) {
            m->requests->WithLabels({"chat_completions", "ok"}).Inc();
            m->AddTokens(3000, 0);
            m->completion_tokens->Inc(150);
            m->ttft->Observe(0.3);
            for (int t = 0; t < 149; ++t) m->itl->Observe(0.03);
          }
          m->requests->WithLabels({"chat_completions", "rejected"}).Inc();
          next += std::chrono::milliseconds(100);
          std::this_thread::sleep_until(next);
        }
      });
}
