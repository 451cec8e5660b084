#include "agent/agent_config.h"

#include <string>

namespace kvmesh::agent {

const char* AgentRoleName(AgentRole role) {
  switch (role) {
    case AgentRole::kAggregated: return "aggregated";
    case AgentRole::kPrefill: return "prefill";
    case AgentRole::kDecode: return "decode";
  }
  return "?";
}

Status AgentEngineConfig::Validate() const {
  if (block_size == 0 || block_size > 1024) {
    return InvalidArgumentError("engine.block_size must be in [1, 1024], got " + std::to_string(block_size));
  }
  if (kv_cache_mib == 0) return InvalidArgumentError("engine.kv_cache_mib must be > 0");
  if (max_num_seqs == 0) return InvalidArgumentError("engine.max_num_seqs must be > 0");
  if (max_num_batched_tokens == 0) return InvalidArgumentError("engine.max_num_batched_tokens must be > 0");
  return Status::Ok();
}

Status AgentLimitsConfig::Validate() const {
  if (max_body_bytes < 1024) {
    return InvalidArgumentError("limits.max_body_bytes must be >= 1024, got " + std::to_string(max_body_bytes));
  }
  if (max_waiting == 0) return InvalidArgumentError("limits.max_waiting must be > 0");
  return Status::Ok();
}

Status AgentTransferConfig::Validate() const {
  if (on_failure != "recompute" && on_failure != "fail") {
    return InvalidArgumentError("transfer.on_failure must be recompute or fail, got '" + on_failure + "'");
  }
  if (lease_ttl.count() <= 0) return InvalidArgumentError("transfer.lease_ttl must be > 0");
  if (timeout.count() <= 0) return InvalidArgumentError("transfer.timeout must be > 0");
  if (debug_pull_delay.count() < 0) return InvalidArgumentError("transfer.debug_pull_delay must be >= 0");
  return Status::Ok();
}

Status AgentEventsConfig::Validate() const {
  if (endpoint.empty()) return InvalidArgumentError("events.endpoint must not be empty");
  if (flush_interval.count() <= 0) return InvalidArgumentError("events.flush_interval must be > 0");
  return Status::Ok();
}

Status AgentConfig::Validate() const {
  if (role != "aggregated" && role != "prefill" && role != "decode") {
    return InvalidArgumentError("role must be aggregated, prefill or decode, got '" + role + "'");
  }
  if (model.empty()) return InvalidArgumentError("model must not be empty");
  if (port > 65535) return InvalidArgumentError("port must be <= 65535, got " + std::to_string(port));
  if (http_threads == 0 || http_threads > 64) {
    return InvalidArgumentError("http_threads must be in [1, 64], got " + std::to_string(http_threads));
  }
  if (drain_timeout.count() < 0) return InvalidArgumentError("drain_timeout must be >= 0");
  return Status::Ok();
}

AgentRole AgentConfig::parsed_role() const {
  if (role == "prefill") return AgentRole::kPrefill;
  if (role == "decode") return AgentRole::kDecode;
  return AgentRole::kAggregated;
}

engine::EngineOptions AgentConfig::ToEngineOptions() const {
  engine::EngineOptions o;
  o.block_size = static_cast<int32_t>(engine.block_size);
  o.kv_cache_bytes = static_cast<int64_t>(engine.kv_cache_mib) << 20;
  o.max_num_seqs = static_cast<int32_t>(engine.max_num_seqs);
  o.max_num_batched_tokens = static_cast<int32_t>(engine.max_num_batched_tokens);
  o.max_model_len = static_cast<int32_t>(engine.max_model_len);
  o.enable_prefix_caching = engine.enable_prefix_caching;
  o.debug_step_delay = std::chrono::duration_cast<std::chrono::microseconds>(engine.debug_step_delay);
  return o;
}

}  // namespace kvmesh::agent
