// AgentConfig: every setting of kvmesh-agent, declared once (flag, env KVMESH_AGENT_<KEY>, YAML key;
// common/config.h). Validate() names the bad field. docs/agent.md lists them all.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "agent/engine/engine_core.h"
#include "common/status.h"

namespace kvmesh::agent {

enum class AgentRole { kAggregated, kPrefill, kDecode };
const char* AgentRoleName(AgentRole role);  // "aggregated", "prefill", "decode"

enum class TransferFailurePolicy { kRecompute, kFail };

struct AgentEngineConfig {
  uint32_t block_size = 16;
  uint32_t kv_cache_mib = 256;            // G1 KV cache size (host memory on the CPU backend)
  uint32_t max_num_seqs = 64;
  uint32_t max_num_batched_tokens = 512;
  uint32_t max_model_len = 0;             // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  // Testing only: the engine sleeps this long after each step that produced tokens (so a test can
  // kill a worker mid-stream). 0 in production.
  std::chrono::milliseconds debug_step_delay{0};
  template <class V> void Visit(V& v) {
    v("block_size", block_size, "tokens per KV block (router and every agent must agree)");
    v("kv_cache_mib", kv_cache_mib, "KV cache size in MiB");
    v("max_num_seqs", max_num_seqs, "most requests in one batch");
    v("max_num_batched_tokens", max_num_batched_tokens, "token budget of one engine step (chunked prefill)");
    v("max_model_len", max_model_len, "context length; 0 = the model's");
    v("enable_prefix_caching", enable_prefix_caching, "reuse cached KV of shared prompt prefixes");
    v("debug_step_delay", debug_step_delay, "testing only: pause after each engine step that produced tokens");
  }
  Status Validate() const;
};

struct AgentLimitsConfig {
  uint64_t max_body_bytes = 1 << 20;  // larger request bodies -> 413
  uint32_t max_waiting = 256;         // requests admitted but not finished; more -> 503
  uint32_t retry_after_seconds = 1;   // Retry-After on 503
  template <class V> void Visit(V& v) {
    v("max_body_bytes", max_body_bytes, "largest accepted request body (bytes)");
    v("max_waiting", max_waiting, "most requests in flight before new ones get 503");
    v("retry_after_seconds", retry_after_seconds, "Retry-After value sent with 503");
  }
  Status Validate() const;
};

struct AgentTransferConfig {
  std::string ucx_tls;       // UCX transports ("tcp", "shm", "posix,sysv,cma,self"); "" = UCX default
  std::string ucx_net_devices;
  std::chrono::milliseconds lease_ttl{30000};
  std::chrono::milliseconds timeout{10000};  // one pull (handshake + reads) on the decode side
  std::string on_failure = "recompute";      // recompute | fail
  // Testing only: the decode side waits this long before posting each pull's reads (so a test can
  // kill the prefill agent mid-transfer). 0 in production.
  std::chrono::milliseconds debug_pull_delay{0};
  template <class V> void Visit(V& v) {
    v("ucx_tls", ucx_tls, "UCX transports for KV transfer (UCX_TLS syntax); empty = UCX default");
    v("ucx_net_devices", ucx_net_devices, "UCX network devices (UCX_NET_DEVICES syntax)");
    v("lease_ttl", lease_ttl, "how long a prefill agent keeps blocks pinned for a decode agent");
    v("timeout", timeout, "limit for one KV pull on the decode side");
    v("on_failure", on_failure, "decode side when a pull fails: recompute | fail");
    v("debug_pull_delay", debug_pull_delay, "testing only: delay before each pull's reads");
  }
  TransferFailurePolicy failure_policy() const {
    return on_failure == "fail" ? TransferFailurePolicy::kFail : TransferFailurePolicy::kRecompute;
  }
  Status Validate() const;
};

struct AgentEventsConfig {
  std::string endpoint = "tcp://127.0.0.1:0";
  std::string replay_endpoint = "tcp://127.0.0.1:0";  // "" disables replay
  std::string topic = "kv-events";
  std::chrono::milliseconds flush_interval{20};
  uint32_t replay_capacity = 10000;
  template <class V> void Visit(V& v) {
    v("endpoint", endpoint, "ZMQ PUB address for KV events (port 0 = free port)");
    v("replay_endpoint", replay_endpoint, "ZMQ ROUTER address for event replay; empty = off");
    v("topic", topic, "first frame of every event message");
    v("flush_interval", flush_interval, "how often pending events are published");
    v("replay_capacity", replay_capacity, "event batches kept for replay");
  }
  Status Validate() const;
};

struct AgentConfig {
  std::string role = "aggregated";  // aggregated | prefill | decode
  std::string model = "builtin:tiny";
  std::string served_model_name;    // "" = derived from the model source
  std::string host = "127.0.0.1";
  uint32_t port = 8100;             // 0 = free port
  std::string agent_id;             // "" = random per start
  std::string ready_file;           // written (atomically) once the agent is ready
  std::string cache_dir;            // for builtin models; "" = default cache dir
  uint32_t http_threads = 2;
  std::chrono::milliseconds drain_timeout{30000};
  AgentEngineConfig engine;
  AgentLimitsConfig limits;
  AgentTransferConfig transfer;
  AgentEventsConfig events;

  template <class V> void Visit(V& v) {
    v("role", role, "aggregated | prefill | decode");
    v("model", model, "model folder (Hugging Face layout) or builtin:tiny|small");
    v("served_model_name", served_model_name, "model id in the API; empty = derived from --model");
    v("host", host, "address to serve HTTP on");
    v("port", port, "HTTP port (0 = pick a free one)");
    v("agent_id", agent_id, "instance id in handles and inventory; empty = random");
    v("ready_file", ready_file, "write a JSON file with the endpoints once ready");
    v("cache_dir", cache_dir, "where builtin models are created; empty = default");
    v("http_threads", http_threads, "HTTP io threads");
    v("drain_timeout", drain_timeout, "on SIGTERM, how long in-flight requests may run");
    v("engine", engine, "engine settings");
    v("limits", limits, "request limits");
    v("transfer", transfer, "KV transfer settings");
    v("events", events, "KV event publisher settings");
  }
  Status Validate() const;

  AgentRole parsed_role() const;
  engine::EngineOptions ToEngineOptions() const;
};

}  // namespace kvmesh::agent
