// Test exporter for tests/prometheus_scrape_test.sh: serves GET /metrics from
// kvmesh::DefaultMetricsRegistry() with HttpServer on a free loopback port and sets a counter, a
// labelled gauge and a histogram to known values, so a real Prometheus server can scrape it and
// the script can check what Prometheus stored.
//
// Usage: kvmesh_test_metrics_exporter [--port-file PATH]
// Prints "port=<N>" on stdout once listening (and writes N to PATH); runs until SIGTERM/SIGINT.
#include "tests/test_exporter.h"

int main(int argc, char** argv) {
  return kvmesh::testing::RunTestExporter(
      "metrics_exporter", argc, argv, [](kvmesh::MetricsRegistry& registry) -> kvmesh::Status {
        KVMESH_ASSIGN_OR_RETURN(auto* requests, registry.AddCounter("kvmesh_test_requests_total",
                                                                    "Requests seen by the test.", {}));
        KVMESH_ASSIGN_OR_RETURN(auto* depth, registry.AddGauge("kvmesh_test_queue_depth",
                                                               "Queue depth per pool.", {"pool"}));
        KVMESH_ASSIGN_OR_RETURN(auto* latency,
                                registry.AddHistogram("kvmesh_test_latency_seconds",
                                                      "Request latency.", {}, {0.1, 0.5, 1, 5}));
        requests->WithLabels({}).Inc(42);
        depth->WithLabels({"a"}).Set(3);
        depth->WithLabels({"b"}).Set(7.5);
        for (double v : {0.05, 0.2, 0.3, 2.0}) latency->WithLabels({}).Observe(v);
        return kvmesh::Status::Ok();
      });
}
