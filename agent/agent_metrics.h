// AgentMetrics: every kvmesh_agent_* metric, declared in one table (agent_metrics.cc) with its
// help text; docs/agent.md lists them. Counters are updated where things happen (worker API,
// transfer service, leases); gauges that mirror engine state are refreshed from EngineStats on each
// /metrics scrape (Refresh).
#pragma once

#include "agent/engine/engine_core.h"
#include "common/metrics.h"
#include "common/status.h"

namespace kvmesh::agent {

struct AgentMetrics {
  // Requests by endpoint (completions|chat_completions) and result (ok|error|cancelled|rejected).
  CounterFamily* requests = nullptr;
  Counter* prompt_tokens = nullptr;
  Counter* generated_tokens = nullptr;
  Counter* cached_tokens = nullptr;
  Histogram* ttft = nullptr;           // seconds, request arrival -> first token
  Histogram* itl = nullptr;            // seconds between tokens of one request
  Histogram* e2e = nullptr;            // seconds, arrival -> last token
  Gauge* requests_in_flight = nullptr;
  Gauge* queue_depth = nullptr;        // waiting in the engine
  Gauge* batch_size = nullptr;         // running in the engine
  GaugeFamily* kv_blocks_used = nullptr;   // {medium}
  GaugeFamily* kv_blocks_free = nullptr;   // {medium}
  GaugeFamily* kv_usage_ratio = nullptr;   // {medium}
  Gauge* kv_blocks_pinned = nullptr;       // prefill results held under leases
  Counter* prefix_hits = nullptr;      // blocks (pool lookups)
  Counter* prefix_misses = nullptr;
  Counter* preemptions = nullptr;
  CounterFamily* transfer_bytes = nullptr;    // {transport, direction}
  HistogramFamily* transfer_seconds = nullptr;  // {transport, direction}
  CounterFamily* transfer_failures = nullptr;   // {reason}
  Counter* leases_created = nullptr;
  Counter* leases_released = nullptr;
  Counter* lease_expiries = nullptr;
  Gauge* leases_active = nullptr;
  CounterFamily* prefix_copies = nullptr;       // {side = export|import, result = ok|error}
  Counter* events_published = nullptr;
  Counter* event_batches_published = nullptr;
  Counter* event_replay_requests = nullptr;
  Counter* event_publish_errors = nullptr;

  // Registers the table in `registry`. InternalError if a name clashes (a bug).
  static StatusOr<AgentMetrics> Register(MetricsRegistry& registry);

  // Mirrors engine state into the gauges and counters that track EngineStats.
  void Refresh(const engine::EngineStats& stats);
  // Mirrors the event publisher's counters.
  void RefreshEvents(uint64_t events, uint64_t batches, uint64_t replay_requests, uint64_t publish_errors);

 private:
  engine::EngineStats last_;
  uint64_t last_events_[4] = {0, 0, 0, 0};  // counters are advanced by the difference since the last Refresh
};

}  // namespace kvmesh::agent
