// RouterMetrics: every kvmesh_router_* metric of the front door, declared in one table
// (router_metrics.cc) with its help text; docs/router.md lists them. The worker registry and the
// KV indexer register their own kvmesh_router_worker* / kvmesh_router_kv_events_* families.
// Updated where things happen (router.cc); all updates are lock-free.
#pragma once

#include <atomic>

#include "common/metrics.h"
#include "common/status.h"

namespace kvmesh::router {

struct RouterMetrics {
  // {endpoint: completions|chat_completions, result: ok|error|cancelled|rejected|unauthorized|shed}
  CounterFamily* requests = nullptr;
  Gauge* requests_in_flight = nullptr;
  Histogram* ttft = nullptr;  // seconds, request arrival -> first token sent to the client
  Histogram* itl = nullptr;   // seconds between tokens sent to the client
  Histogram* e2e = nullptr;   // seconds, arrival -> end of the response
  CounterFamily* routing_decisions = nullptr;  // {mode}
  Histogram* routing_decision_seconds = nullptr;
  Counter* overlap_predicted_blocks = nullptr;  // router's predicted overlap on the chosen worker
  Counter* overlap_actual_blocks = nullptr;     // worker-reported cached_tokens / block_size
  Counter* prompt_tokens = nullptr;
  Counter* cached_tokens = nullptr;
  Counter* completion_tokens = nullptr;
  Gauge* kv_hit_ratio = nullptr;                // cached / prompt tokens, process lifetime
  CounterFamily* prefills = nullptr;            // {where: local|remote, reason}
  CounterFamily* migrations = nullptr;          // {result: ok|failed}
  Counter* retries = nullptr;
  Counter* shed = nullptr;

  // Registers the table in `registry` (an existing identical family is reused). InternalError
  // if a name clashes (a bug).
  static StatusOr<RouterMetrics> Register(MetricsRegistry& registry);

  // Prompt/cached token accounting that also keeps kv_hit_ratio current.
  void AddTokens(uint64_t prompt, uint64_t cached);

 private:
  std::atomic<uint64_t>* prompt_total_ = nullptr;  // shared by copies of this struct
  std::atomic<uint64_t>* cached_total_ = nullptr;
};

}  // namespace kvmesh::router
