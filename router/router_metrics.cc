#include "router/router_metrics.h"

#include <vector>

namespace kvmesh::router {

namespace {

std::vector<double> TokenLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5};
}

std::vector<double> DecisionBuckets() {  // 1 us .. ~16 ms
  return ExponentialBuckets(1e-6, 2, 15);
}

// Process-wide totals behind kv_hit_ratio (one router per process; tests with several share it,
// as they share the registry's counters).
std::atomic<uint64_t> g_prompt_total{0};
std::atomic<uint64_t> g_cached_total{0};

}  // namespace

StatusOr<RouterMetrics> RouterMetrics::Register(MetricsRegistry& r) {
  RouterMetrics m;
  auto counter = [&](const char* name, const char* help) -> StatusOr<Counter*> {
    KVMESH_ASSIGN_OR_RETURN(CounterFamily * f, r.AddCounter(name, help, {}));
    return &f->WithLabels({});
  };
  auto gauge = [&](const char* name, const char* help) -> StatusOr<Gauge*> {
    KVMESH_ASSIGN_OR_RETURN(GaugeFamily * f, r.AddGauge(name, help, {}));
    return &f->WithLabels({});
  };
  auto histogram = [&](const char* name, const char* help, std::vector<double> b) -> StatusOr<Histogram*> {
    KVMESH_ASSIGN_OR_RETURN(HistogramFamily * f, r.AddHistogram(name, help, {}, std::move(b)));
    return &f->WithLabels({});
  };
  KVMESH_ASSIGN_OR_RETURN(m.requests, r.AddCounter("kvmesh_router_requests_total",
      "Requests by endpoint and result (ok, error, cancelled, rejected, unauthorized, shed)",
      {"endpoint", "result"}));
  KVMESH_ASSIGN_OR_RETURN(m.requests_in_flight, gauge("kvmesh_router_requests_in_flight",
      "Completion requests being served"));
  KVMESH_ASSIGN_OR_RETURN(m.ttft, histogram("kvmesh_router_time_to_first_token_seconds",
      "Request arrival to the first token sent to the client", DefaultLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.itl, histogram("kvmesh_router_inter_token_latency_seconds",
      "Time between consecutive tokens sent to one client", TokenLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.e2e, histogram("kvmesh_router_request_duration_seconds",
      "Request arrival to the end of the response", DefaultLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.routing_decisions, r.AddCounter("kvmesh_router_routing_decisions_total",
      "Routing decisions by policy mode", {"mode"}));
  KVMESH_ASSIGN_OR_RETURN(m.routing_decision_seconds, histogram("kvmesh_router_routing_decision_seconds",
      "Time to pick a worker (index query + policy + prefill plan)", DecisionBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.overlap_predicted_blocks, counter("kvmesh_router_overlap_predicted_blocks_total",
      "Prompt blocks the router expected cached on the worker that prefilled"));
  KVMESH_ASSIGN_OR_RETURN(m.overlap_actual_blocks, counter("kvmesh_router_overlap_actual_blocks_total",
      "Prompt blocks the worker that prefilled reported cached (cached_tokens / block_size)"));
  KVMESH_ASSIGN_OR_RETURN(m.prompt_tokens, counter("kvmesh_router_prompt_tokens_total",
      "Prompt tokens of routed requests (router's count)"));
  KVMESH_ASSIGN_OR_RETURN(m.cached_tokens, counter("kvmesh_router_cached_tokens_total",
      "Prompt tokens the workers served from their prefix cache"));
  KVMESH_ASSIGN_OR_RETURN(m.completion_tokens, counter("kvmesh_router_completion_tokens_total",
      "Tokens sent to clients"));
  KVMESH_ASSIGN_OR_RETURN(m.kv_hit_ratio, gauge("kvmesh_router_kv_hit_ratio",
      "Cached / prompt tokens over the process lifetime"));
  KVMESH_ASSIGN_OR_RETURN(m.prefills, r.AddCounter("kvmesh_router_prefills_total",
      "Prefills by where they ran (local = on the decode worker, remote = on a prefill worker) and why",
      {"where", "reason"}));
  KVMESH_ASSIGN_OR_RETURN(m.migrations, r.AddCounter("kvmesh_router_migrations_total",
      "Requests moved to another decode worker after their stream broke, by result", {"result"}));
  KVMESH_ASSIGN_OR_RETURN(m.retries, counter("kvmesh_router_retries_total",
      "Requests retried on another worker before their first byte (connect error, 502/503/504)"));
  KVMESH_ASSIGN_OR_RETURN(m.shed, counter("kvmesh_router_shed_total",
      "Requests refused with 503 because every decode-capable worker was at its in-flight limit"));
  m.prompt_total_ = &g_prompt_total;
  m.cached_total_ = &g_cached_total;
  return m;
}

void RouterMetrics::AddTokens(uint64_t prompt, uint64_t cached) {
  prompt_tokens->Inc(static_cast<double>(prompt));
  cached_tokens->Inc(static_cast<double>(cached));
  const uint64_t p = prompt_total_->fetch_add(prompt) + prompt;
  const uint64_t c = cached_total_->fetch_add(cached) + cached;
  if (p > 0) kv_hit_ratio->Set(static_cast<double>(c) / static_cast<double>(p));
}

}  // namespace kvmesh::router
