#include "agent/agent_metrics.h"

#include <string>
#include <vector>

namespace kvmesh::agent {

namespace {

std::vector<double> TokenLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5};
}

}  // namespace

StatusOr<AgentMetrics> AgentMetrics::Register(MetricsRegistry& r) {
  AgentMetrics m;
  auto counter = [&](const char* name, const char* help) -> StatusOr<Counter*> {
    KVMESH_ASSIGN_OR_RETURN(CounterFamily * f, r.AddCounter(name, help, {}));
    return &f->WithLabels({});
  };
  auto gauge = [&](const char* name, const char* help) -> StatusOr<Gauge*> {
    KVMESH_ASSIGN_OR_RETURN(GaugeFamily * f, r.AddGauge(name, help, {}));
    return &f->WithLabels({});
  };
  auto histogram = [&](const char* name, const char* help,
                       std::vector<double> buckets) -> StatusOr<Histogram*> {
    KVMESH_ASSIGN_OR_RETURN(HistogramFamily * f, r.AddHistogram(name, help, {}, std::move(buckets)));
    return &f->WithLabels({});
  };
  KVMESH_ASSIGN_OR_RETURN(m.requests, r.AddCounter("kvmesh_agent_requests_total",
      "Requests by endpoint and result (ok, error, cancelled, rejected)", {"endpoint", "result"}));
  KVMESH_ASSIGN_OR_RETURN(m.prompt_tokens, counter("kvmesh_agent_prompt_tokens_total", "Prompt tokens of admitted requests"));
  KVMESH_ASSIGN_OR_RETURN(m.generated_tokens, counter("kvmesh_agent_generated_tokens_total", "Tokens generated"));
  KVMESH_ASSIGN_OR_RETURN(m.cached_tokens, counter("kvmesh_agent_cached_tokens_total",
      "Prompt tokens served from the prefix cache (not recomputed)"));
  KVMESH_ASSIGN_OR_RETURN(m.ttft, histogram("kvmesh_agent_time_to_first_token_seconds",
      "Request arrival to first token", DefaultLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.itl, histogram("kvmesh_agent_inter_token_latency_seconds",
      "Time between consecutive tokens of one request", TokenLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.e2e, histogram("kvmesh_agent_request_duration_seconds",
      "Request arrival to last token", DefaultLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.requests_in_flight, gauge("kvmesh_agent_requests_in_flight",
      "Requests accepted and not finished"));
  KVMESH_ASSIGN_OR_RETURN(m.queue_depth, gauge("kvmesh_agent_queue_depth", "Requests waiting in the engine"));
  KVMESH_ASSIGN_OR_RETURN(m.batch_size, gauge("kvmesh_agent_running_requests",
      "Requests in the engine's running batch"));
  KVMESH_ASSIGN_OR_RETURN(m.kv_blocks_used, r.AddGauge("kvmesh_agent_kv_blocks_used",
      "KV blocks in use, by tier (GPU = G1, the engine's cache)", {"medium"}));
  KVMESH_ASSIGN_OR_RETURN(m.kv_blocks_free, r.AddGauge("kvmesh_agent_kv_blocks_free",
      "KV blocks free (cached blocks count as free), by tier", {"medium"}));
  KVMESH_ASSIGN_OR_RETURN(m.kv_usage_ratio, r.AddGauge("kvmesh_agent_kv_usage_ratio",
      "Used / total KV blocks, by tier", {"medium"}));
  KVMESH_ASSIGN_OR_RETURN(m.kv_blocks_pinned, gauge("kvmesh_agent_kv_pinned_results",
      "Prefill results whose blocks are pinned for a decode agent"));
  KVMESH_ASSIGN_OR_RETURN(m.prefix_hits, counter("kvmesh_agent_prefix_cache_hits_total",
      "Prefix-cache block lookups that hit"));
  KVMESH_ASSIGN_OR_RETURN(m.prefix_misses, counter("kvmesh_agent_prefix_cache_misses_total",
      "Prefix-cache block lookups that missed"));
  KVMESH_ASSIGN_OR_RETURN(m.preemptions, counter("kvmesh_agent_preemptions_total",
      "Requests preempted (blocks freed, recomputed later)"));
  KVMESH_ASSIGN_OR_RETURN(m.transfer_bytes, r.AddCounter("kvmesh_agent_kv_transfer_bytes_total",
      "KV bytes moved, by transport and direction (in = pulled from a peer)", {"transport", "direction"}));
  KVMESH_ASSIGN_OR_RETURN(m.transfer_seconds, r.AddHistogram("kvmesh_agent_kv_transfer_seconds",
      "Duration of one KV pull (handshake excluded)", {"transport", "direction"}, DefaultLatencyBuckets()));
  KVMESH_ASSIGN_OR_RETURN(m.transfer_failures, r.AddCounter("kvmesh_agent_kv_transfer_failures_total",
      "KV pulls that failed, by reason (handshake, layout, handle, transport, timeout)", {"reason"}));
  KVMESH_ASSIGN_OR_RETURN(m.leases_created, counter("kvmesh_agent_kv_leases_created_total",
      "KV leases handed out by this prefill agent"));
  KVMESH_ASSIGN_OR_RETURN(m.leases_released, counter("kvmesh_agent_kv_leases_released_total",
      "KV leases released by a decode agent"));
  KVMESH_ASSIGN_OR_RETURN(m.lease_expiries, counter("kvmesh_agent_kv_lease_expiries_total",
      "KV leases that expired unclaimed (their blocks were freed)"));
  KVMESH_ASSIGN_OR_RETURN(m.leases_active, gauge("kvmesh_agent_kv_leases_active", "KV leases held now"));
  KVMESH_ASSIGN_OR_RETURN(m.prefix_copies, r.AddCounter("kvmesh_agent_kv_prefix_copies_total",
      "Prefix copies between agents (POST /v1/kv/export and /v1/kv/import), by side and result",
      {"side", "result"}));
  KVMESH_ASSIGN_OR_RETURN(m.events_published, counter("kvmesh_agent_kv_events_published_total",
      "KV events published on the ZMQ PUB socket"));
  KVMESH_ASSIGN_OR_RETURN(m.event_batches_published, counter("kvmesh_agent_kv_event_batches_published_total",
      "KV event batches (sequence numbers) published"));
  KVMESH_ASSIGN_OR_RETURN(m.event_replay_requests, counter("kvmesh_agent_kv_event_replay_requests_total",
      "Replay requests answered"));
  KVMESH_ASSIGN_OR_RETURN(m.event_publish_errors, counter("kvmesh_agent_kv_event_publish_errors_total",
      "KV event batches that could not be sent (subscribers replay them)"));
  return m;
}

void AgentMetrics::RefreshEvents(uint64_t events, uint64_t batches, uint64_t replay_requests,
                                 uint64_t publish_errors) {
  const uint64_t now[4] = {events, batches, replay_requests, publish_errors};
  Counter* counters[4] = {events_published, event_batches_published, event_replay_requests, event_publish_errors};
  for (int i = 0; i < 4; ++i) {
    if (now[i] > last_events_[i]) counters[i]->Inc(static_cast<double>(now[i] - last_events_[i]));
    last_events_[i] = now[i];
  }
}

void AgentMetrics::Refresh(const engine::EngineStats& s) {
  queue_depth->Set(s.num_waiting);
  batch_size->Set(s.num_running);
  kv_blocks_used->WithLabels({"GPU"}).Set(s.kv_blocks_used);
  kv_blocks_free->WithLabels({"GPU"}).Set(s.kv_blocks_total - s.kv_blocks_used);
  kv_usage_ratio->WithLabels({"GPU"}).Set(
      s.kv_blocks_total == 0 ? 0.0 : static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total);
  kv_blocks_pinned->Set(s.num_pinned);
  auto advance = [](Counter* c, uint64_t now, uint64_t before) {
    if (now > before) c->Inc(static_cast<double>(now - before));
  };
  advance(prompt_tokens, s.prompt_tokens, last_.prompt_tokens);
  advance(cached_tokens, s.cached_prompt_tokens, last_.cached_prompt_tokens);
  advance(generated_tokens, s.generated_tokens, last_.generated_tokens);
  advance(prefix_hits, s.pool.hits, last_.pool.hits);
  advance(prefix_misses, s.pool.misses, last_.pool.misses);
  advance(preemptions, s.preemptions, last_.preemptions);
  last_ = s;
}

}  // namespace kvmesh::agent
