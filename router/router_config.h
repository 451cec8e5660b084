// RouterConfig: every setting of kvmesh-router, declared once (flag, env KVMESH_ROUTER_<KEY>, YAML
// key; common/config.h). Validate() names the bad field. docs/router.md lists them all.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace kvmesh::router {

struct RouterRoutingConfig {
  // kv (default: KV-aware, cost below) | round_robin | random | least_loaded
  std::string mode = "kv";
  // Cost function of mode kv: "kvmesh" (tier-aware overlap + load the router predicts from the
  // requests it just sent; the default, chosen by bench/routing_compare) or "dynamo" (Dynamo's
  // cost = overlap_weight * prefill_blocks + decode_blocks, softmax with `temperature`).
  std::string kv_cost = "kvmesh";
  double overlap_weight = 1.0;
  double temperature = 0.0;  // 0 = argmin (ties broken at random); > 0 = softmax sampling
  // How long the router assumes a worker holds the blocks of a request it just sent there
  // (predicted index entries) before the worker's own events confirm them.
  std::chrono::milliseconds predicted_ttl{2000};
  // kvmesh cost: a worker's rtt_ms (workers file; the global routing tier's cluster routers)
  // adds rtt_ms / rtt_block_ms blocks, i.e. the round trip is priced as the prefill time of
  // that many blocks. 0 = ignore rtt_ms.
  double rtt_block_ms = 1.0;
  template <class V> void Visit(V& v) {
    v("mode", mode, "kv | round_robin | random | least_loaded");
    v("kv_cost", kv_cost, "cost of mode kv: kvmesh | dynamo");
    v("overlap_weight", overlap_weight, "weight of blocks to prefill in the kv cost");
    v("temperature", temperature, "softmax temperature of the kv cost; 0 = lowest cost wins");
    v("predicted_ttl", predicted_ttl, "how long routed-but-unconfirmed blocks count as cached");
    v("rtt_block_ms", rtt_block_ms, "prefill ms of one block: prices a worker's rtt_ms in the kvmesh cost; 0 = ignore rtt");
  }
  Status Validate() const;
};

struct RouterDisaggregationConfig {
  // off: every request goes to one decode-capable worker; conditional: remote prefill when the
  // uncached prompt tokens on the chosen decode worker reach min_remote_prefill_tokens and a
  // prefill worker has queue room; always: remote prefill whenever a prefill worker is available.
  std::string mode = "conditional";
  uint32_t min_remote_prefill_tokens = 64;
  uint32_t max_prefill_queue = 8;  // requests the router has in flight on one prefill worker
  template <class V> void Visit(V& v) {
    v("mode", mode, "off | conditional | always");
    v("min_remote_prefill_tokens", min_remote_prefill_tokens, "uncached tokens from which prefill goes remote");
    v("max_prefill_queue", max_prefill_queue, "in-flight prefills per prefill worker counted as queue room");
  }
  Status Validate() const;
};

struct RouterWorkersConfig {
  // Static workers: "URL[=ROLE]" entries, e.g. "http://127.0.0.1:8101=prefill"; ROLE is
  // aggregated (default) | prefill | decode. Events endpoints are read from the worker's
  // GET /v1/kv/inventory (kvmesh agents) unless given in a workers file.
  std::vector<std::string> urls;
  // A YAML/JSON file listing workers (written by `kvmesh up` or the operator), watched and applied
  // without restart; see WorkerFile in worker_registry.h for the schema.
  std::string file;
  std::chrono::milliseconds file_poll_interval{1000};
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
  uint32_t breaker_failures = 3;               // consecutive failures that open the breaker
  std::chrono::milliseconds breaker_open{5000};  // open -> half-open (one probe request)
  uint32_t max_inflight_per_worker = 256;      // beyond it the worker counts as full (503 if all are)
  template <class V> void Visit(V& v) {
    v("urls", urls, "static workers: URL[=aggregated|prefill|decode], comma-separated");
    v("file", file, "workers file (YAML/JSON), watched for changes");
    v("file_poll_interval", file_poll_interval, "how often the workers file is checked");
    v("health_interval", health_interval, "GET /ready probe interval per worker");
    v("health_timeout", health_timeout, "probe timeout");
    v("breaker_failures", breaker_failures, "consecutive failures that open a worker's circuit breaker");
    v("breaker_open", breaker_open, "how long an open breaker waits before a half-open probe");
    v("max_inflight_per_worker", max_inflight_per_worker, "requests in flight per worker before it counts as full");
  }
  Status Validate() const;
};

struct RouterAuthConfig {
  // File with one "KEY TENANT" pair per line ('#' comments) or a YAML map {KEY: TENANT}. Empty =
  // no authentication (then the router refuses to bind anything but 127.0.0.1).
  std::string api_keys_file;
  std::string admin_key;  // needed for /admin/* and /debug/*; empty = those need any valid key
  // Secret mixed into every tenant's cache salt (salt = hex of the first 16 bytes of
  // HMAC-SHA256(secret, tenant); router/auth.h). Empty = a random secret per start (tenants'
  // caches then restart cold with the router).
  std::string salt_secret;
  template <class V> void Visit(V& v) {
    v("api_keys_file", api_keys_file, "API keys file: KEY TENANT per line; empty = no auth (127.0.0.1 only)");
    v("admin_key", admin_key, "key for admin/debug endpoints", kConfigSecret);
    v("salt_secret", salt_secret, "secret for tenants' cache salts; empty = random per start", kConfigSecret);
  }
};

struct RouterLimitsConfig {
  uint64_t max_body_bytes = 1 << 20;
  uint32_t retry_after_seconds = 1;
  uint32_t max_migrations = 2;   // per request, decode worker lost mid-stream
  uint32_t max_attempts = 3;     // per request before the first byte (connect errors, 502/503/504)
  std::chrono::milliseconds request_timeout{600000};  // whole request, first byte to [DONE]
  template <class V> void Visit(V& v) {
    v("max_body_bytes", max_body_bytes, "largest accepted request body (bytes)");
    v("retry_after_seconds", retry_after_seconds, "Retry-After value sent with 503");
    v("max_migrations", max_migrations, "times one request may move to another decode worker mid-stream");
    v("max_attempts", max_attempts, "tries per request before its first byte (connect errors, 502/503/504)");
    v("request_timeout", request_timeout, "limit for one request end to end");
  }
  Status Validate() const;
};

// The global routing tier (docs/global-routing.md): a router whose workers are other clusters'
// routers (workers file kind: router) and the summaries those routers serve.
struct RouterGlobalConfig {
  // How often each cluster router's prefix summary (GET /v1/kv/inventory) is fetched.
  std::chrono::milliseconds summary_interval{1000};
  // Key sent with those fetches (the cluster routers' admin key); empty = none.
  std::string summary_api_key;
  // This router's own summary: at most this many blocks (most clusters hold fewer).
  uint32_t summary_max_blocks = 1000000;
  // ... and at most this many prefix roots (the hottest; heat per root for the placement hub).
  uint32_t summary_max_roots = 32;
  template <class V> void Visit(V& v) {
    v("summary_interval", summary_interval, "how often cluster routers' prefix summaries are fetched");
    v("summary_api_key", summary_api_key, "key for fetching cluster routers' summaries", kConfigSecret);
    v("summary_max_blocks", summary_max_blocks, "most blocks this router lists in its own summary");
    v("summary_max_roots", summary_max_roots, "most prefix roots (the hottest) this router lists in its own summary");
  }
};

struct RouterConfig {
  std::string host = "127.0.0.1";
  uint32_t port = 8000;                // 0 = free port
  std::string model = "builtin:tiny";  // tokenizer + chat template source (folder or builtin:)
  std::string served_model_name;       // "" = derived like the agent's
  std::string cache_dir;               // for builtin: sources; "" = default cache dir
  uint32_t block_size = 16;            // must equal the agents'
  std::string ready_file;              // {http, port, pid} written once ready
  uint32_t http_threads = 2;
  std::chrono::milliseconds drain_timeout{30000};
  RouterRoutingConfig routing;
  RouterDisaggregationConfig disaggregation;
  RouterWorkersConfig workers;
  RouterAuthConfig auth;
  RouterLimitsConfig limits;
  RouterGlobalConfig global;

  template <class V> void Visit(V& v) {
    v("host", host, "address to serve HTTP on (non-loopback needs auth.api_keys_file)");
    v("port", port, "HTTP port (0 = pick a free one)");
    v("model", model, "model folder or builtin:tiny|small (tokenizer and chat template)");
    v("served_model_name", served_model_name, "model id in the API; empty = derived from --model");
    v("cache_dir", cache_dir, "where builtin models are created; empty = default");
    v("block_size", block_size, "tokens per KV block; must equal the agents'");
    v("ready_file", ready_file, "write a JSON file {http, port, pid} once ready");
    v("http_threads", http_threads, "HTTP io threads");
    v("drain_timeout", drain_timeout, "on SIGTERM, how long in-flight requests may run");
    v("routing", routing, "routing policy");
    v("disaggregation", disaggregation, "prefill/decode split");
    v("workers", workers, "worker discovery and health");
    v("auth", auth, "API keys and tenants");
    v("limits", limits, "request limits");
    v("global", global, "global routing tier (cluster routers as workers)");
  }
  Status Validate() const;
};

}  // namespace kvmesh::router
