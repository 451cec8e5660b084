// Router: kvmesh-router's OpenAI-compatible front door (docs/router.md).
//
// Per request: authenticate (Bearer key -> tenant; no keys configured = loopback-only, one
// anonymous tenant), parse with common/openai_api.h (same limits and error rules as the agent;
// client-sent cache_salt and kv_transfer_params are ignored), apply the chat template and
// tokenize (the model folder's tokenizer, as the engine does), hash blocks with the tenant's
// server-derived salt, pick the decode worker (routing.h), plan local vs remote prefill, then:
//  - remote: POST the prefill worker (kv_transfer_params {do_remote_decode: true}), stream its
//    first token to the client at once, POST the decode worker with the returned handle;
//  - local: POST the decode-capable worker.
// Workers are always called with prompt token ids, stream: true (decode) and return_token_ids:
// true, so the router detokenizes itself (one StopChecker per request) and knows every token the
// client has seen. A decode worker lost mid-stream (connection error, stream ended without a
// finish) -> migration: prompt + tokens so far go to another worker as the new prompt with the
// remaining max_tokens, at most limits.max_migrations times; the client's stream continues
// with no token lost or repeated. Before the first byte, connect errors and 502/503/504 are
// retried on another worker (limits.max_attempts). Every worker over its limit -> 503 +
// Retry-After. A client that disconnects aborts the upstream calls, which cancels the work on
// the agents (prefill and decode).
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
// GET /ready (200 when a decode-capable worker is ready), GET /metrics, GET /admin/workers
// (worker table, states, loads; admin key), GET /debug/index (index stats; admin key).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "router/router_config.h"

namespace kvmesh::router {

class Router {
 public:
  // Loads the tokenizer/chat template, the API keys, the worker list. Errors name the field.
  static StatusOr<std::unique_ptr<Router>> Create(const RouterConfig& config);
  ~Router();  // Shutdown()
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Binds, starts health checks and event ingestion, writes the ready file.
  Status Start();
  // Graceful: /ready 503, stop accepting, let in-flight requests finish for drain_timeout, then
  // abort the rest. Idempotent.
  void Shutdown();

  uint16_t port() const;
  std::string base_url() const;  // http://host:port

 private:
  explicit Router(const RouterConfig& config);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::router
