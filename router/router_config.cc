#include "router/router_config.h"

#include <boost/asio/ip/address.hpp>
#include <string>

#include "router/worker_registry.h"

namespace kvmesh::router {

namespace {

std::string Quoted(const std::string& s) { return "'" + s + "'"; }

// True for 127.0.0.0/8 and ::1: addresses only this machine can reach.
bool IsLoopbackHost(const std::string& host) {
  boost::system::error_code ec;
  const auto addr = boost::asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

}  // namespace

Status RouterRoutingConfig::Validate() const {
  if (mode != "kv" && mode != "round_robin" && mode != "random" && mode != "least_loaded") {
    return InvalidArgumentError("routing.mode must be kv, round_robin, random or least_loaded, got " + Quoted(mode));
  }
  if (kv_cost != "kvmesh" && kv_cost != "dynamo") {
    return InvalidArgumentError("routing.kv_cost must be kvmesh or dynamo, got " + Quoted(kv_cost));
  }
  if (!(overlap_weight >= 0) || overlap_weight > 1e6) {
    return InvalidArgumentError("routing.overlap_weight must be in [0, 1e6], got " + std::to_string(overlap_weight));
  }
  if (!(temperature >= 0) || temperature > 1e6) {
    return InvalidArgumentError("routing.temperature must be in [0, 1e6], got " + std::to_string(temperature));
  }
  if (predicted_ttl.count() < 0) return InvalidArgumentError("routing.predicted_ttl must be >= 0");
  if (!(rtt_block_ms >= 0) || rtt_block_ms > 1e6) {
    return InvalidArgumentError("routing.rtt_block_ms must be in [0, 1e6], got " + std::to_string(rtt_block_ms));
  }
  return Status::Ok();
}

Status RouterDisaggregationConfig::Validate() const {
  if (mode != "off" && mode != "conditional" && mode != "always") {
    return InvalidArgumentError("disaggregation.mode must be off, conditional or always, got " + Quoted(mode));
  }
  if (max_prefill_queue == 0) return InvalidArgumentError("disaggregation.max_prefill_queue must be > 0");
  return Status::Ok();
}

Status RouterWorkersConfig::Validate() const {
  for (size_t i = 0; i < urls.size(); ++i) {
    auto spec = ParseWorkerUrl(urls[i]);
    if (!spec.ok()) {
      return InvalidArgumentError("workers.urls[" + std::to_string(i) + "] " + Quoted(urls[i]) + ": " +
                                  spec.status().message());
    }
  }
  if (file_poll_interval.count() <= 0) return InvalidArgumentError("workers.file_poll_interval must be > 0");
  if (health_interval.count() <= 0) return InvalidArgumentError("workers.health_interval must be > 0");
  if (health_timeout.count() <= 0) return InvalidArgumentError("workers.health_timeout must be > 0");
  if (breaker_failures == 0) return InvalidArgumentError("workers.breaker_failures must be > 0");
  if (breaker_open.count() <= 0) return InvalidArgumentError("workers.breaker_open must be > 0");
  if (max_inflight_per_worker == 0) return InvalidArgumentError("workers.max_inflight_per_worker must be > 0");
  return Status::Ok();
}

Status RouterLimitsConfig::Validate() const {
  if (max_body_bytes < 1024 || max_body_bytes > (uint64_t{1} << 30)) {
    return InvalidArgumentError("limits.max_body_bytes must be in [1024, 1 GiB], got " + std::to_string(max_body_bytes));
  }
  if (retry_after_seconds == 0 || retry_after_seconds > 3600) {
    return InvalidArgumentError("limits.retry_after_seconds must be in [1, 3600], got " +
                                std::to_string(retry_after_seconds));
  }
  if (max_migrations > 16) {
    return InvalidArgumentError("limits.max_migrations must be <= 16, got " + std::to_string(max_migrations));
  }
  if (max_attempts == 0 || max_attempts > 16) {
    return InvalidArgumentError("limits.max_attempts must be in [1, 16], got " + std::to_string(max_attempts));
  }
  if (request_timeout.count() <= 0) return InvalidArgumentError("limits.request_timeout must be > 0");
  return Status::Ok();
}

Status RouterConfig::Validate() const {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (ec) return InvalidArgumentError("host must be an IP address, got " + Quoted(host));
  if (!IsLoopbackHost(host) && auth.api_keys_file.empty()) {
    return InvalidArgumentError("host " + Quoted(host) +
                                " is not a loopback address: set auth.api_keys_file (API keys) to serve "
                                "beyond this machine, or use host 127.0.0.1");
  }
  if (port > 65535) return InvalidArgumentError("port must be <= 65535, got " + std::to_string(port));
  if (model.empty()) return InvalidArgumentError("model must not be empty");
  if (block_size == 0 || block_size > 1024) {
    return InvalidArgumentError("block_size must be in [1, 1024], got " + std::to_string(block_size));
  }
  if (http_threads == 0 || http_threads > 64) {
    return InvalidArgumentError("http_threads must be in [1, 64], got " + std::to_string(http_threads));
  }
  if (drain_timeout.count() < 0) return InvalidArgumentError("drain_timeout must be >= 0");
  KVMESH_RETURN_IF_ERROR(routing.Validate());
  KVMESH_RETURN_IF_ERROR(disaggregation.Validate());
  KVMESH_RETURN_IF_ERROR(workers.Validate());
  KVMESH_RETURN_IF_ERROR(limits.Validate());
  return Status::Ok();
}

}  // namespace kvmesh::router
