// Agent: the kvmesh-agent process minus main(): loads the model, runs the engine in one role,
// serves the worker API over HTTP, publishes KV events, and moves KV blocks to and from peers.
//
// Roles (docs/agent.md):
//  - aggregated: plain OpenAI requests (prefill + decode here); also accepts both remote-prefill
//    halves, so one agent can stand in for either pool.
//  - prefill: only requests with kv_transfer_params.do_remote_decode = true: prefill (reusing the
//    prefix cache), sample the first token, pin the blocks under a lease, answer with the first
//    token and a TransferHandle in kv_transfer_params. Other requests get 400.
//  - decode: plain requests (local prefill, when the router decides so) and requests carrying a
//    TransferHandle (kv_transfer_params.do_remote_prefill = true): allocate blocks, skip those held
//    locally, pull the rest from the prefill agent, release its lease, decode. The first token of
//    the response is the prefill agent's.
//
// Internal endpoints: GET /v1/kv/transfer_info (handshake), POST /v1/kv/leases/release,
// GET /v1/kv/inventory. Process endpoints: /health (live), /ready (model loaded and warmed up, not
// draining), /metrics.
//
// Lifecycle: Create() (load, allocate) -> Start() (listen, warm up, ready, ready file) ->
// Shutdown() (not ready, stop accepting, let in-flight requests finish within drain_timeout, then
// cancel the rest, release every lease, stop threads). Nothing is leaked on any path.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "agent/agent_config.h"
#include "agent/agent_metrics.h"
#include "agent/engine/engine.h"
#include "agent/kv_event_service.h"
#include "agent/lease_manager.h"
#include "agent/transfer/transfer_handle.h"
#include "agent/transfer_service.h"
#include "common/http_server.h"
#include "common/openai_api.h"
#include "common/status.h"
#include "kv/prefix_roots.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::agent {

class Agent {
 public:
  // Loads the model and allocates the KV cache, binds the event sockets. Errors name what failed
  // (bad model folder, UCX unavailable, port in use, ...).
  static StatusOr<std::unique_ptr<Agent>> Create(const AgentConfig& config);
  ~Agent();  // Shutdown() with no drain if still running

  // Starts HTTP, warms the engine up (one short request), marks ready, writes the ready file.
  Status Start();
  // Graceful stop; idempotent. Blocks up to drain_timeout + a few seconds.
  void Shutdown();

  uint16_t port() const { return http_ ? http_->port() : 0; }
  const std::string& agent_id() const { return agent_id_; }
  std::string base_url() const;

 private:
  struct RequestState;  // one in-flight worker API request (worker_api.cc)

  explicit Agent(const AgentConfig& config);
  Status Init();
  void RegisterRoutes();
  Status WarmUp();
  Status WriteReadyFile() const;

  // Internal endpoints (agent.cc).
  http::HttpResponse HandleTransferInfo(const http::HttpRequest& req);
  http::HttpResponse HandleLeaseRelease(const http::HttpRequest& req);
  http::HttpResponse HandleLeaseClaim(const http::HttpRequest& req);
  // Parses {"lease_id": u64, "agent_id": "...", ...}: the lease id and the whole body (for the
  // handler's other fields). NotFound when agent_id names another instance.
  struct LeaseRequest {
    uint64_t lease_id = 0;
    nlohmann::json body;
  };
  StatusOr<LeaseRequest> ParseLeaseRequest(const http::HttpRequest& req) const;
  http::HttpResponse HandleInventory(const http::HttpRequest& req);
  // Prefix copies (prefix_copy.cc).
  http::HttpResponse HandleKvExport(const http::HttpRequest& req);
  void HandleKvImport(const http::HttpRequest& req, std::shared_ptr<http::Responder> responder);
  size_t MaxChainBlocks() const;  // longest hash chain an export or import accepts
  // Records `pin` for lease claims, creates its lease and returns the handle a puller needs
  // (a prefill result's or a prefix export's).
  transfer::TransferHandle LeasePin(const engine::PinnedKv& pin, int32_t first_token);
  http::HttpResponse HandleMetrics(const http::HttpRequest& req);
  http::HttpResponse HandleModels(const http::HttpRequest& req);
  void LeaseLoop();

  // Worker API (worker_api.cc).
  void HandleCompletion(openai::ApiKind kind, const http::HttpRequest& req,
                        std::shared_ptr<http::Responder> responder);
  StatusOr<std::vector<int32_t>> PromptTokens(const openai::CompletionRequest& r) const;
  void OnOutput(const std::shared_ptr<RequestState>& st, const engine::RequestOutput& out);
  void Reject(const std::shared_ptr<http::Responder>& responder, const std::string& endpoint,
              const Status& status, int retry_after = 0);

  const AgentConfig config_;
  const AgentRole role_;
  std::string agent_id_;
  std::string served_model_;
  int64_t created_unix_ = 0;

  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  std::optional<tokenizer::ChatTemplate> chat_template_;
  AgentMetrics metrics_;
  std::mutex metrics_mu_;  // serializes AgentMetrics::Refresh

  // Destroyed in reverse order: http first (no new requests), leases, the engine, then the
  // transfer service (its transport allocated the KV cache), then events. Shutdown() stops the
  // threads earlier, transfers before the engine.
  std::unique_ptr<KvEventService> events_;
  std::unique_ptr<TransferService> transfers_;  // owns the KV cache memory: outlives the engine
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<LeaseManager> leases_;
  std::unique_ptr<http::HttpServer> http_;

  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> shut_down_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> next_request_{1};

  // Heat for the placement hub (GET /v1/kv/inventory "roots" and "demand"; docs/placement.md):
  // counted where a request's prefill runs (aggregated and prefill-only requests, not the decode
  // half of a remote prefill), so a cluster's agents count each request once.
  kv::PrefixRoots roots_;
  std::atomic<uint64_t> demand_requests_{0};
  std::atomic<uint64_t> demand_prompt_tokens_{0};
  std::atomic<uint64_t> demand_cached_tokens_{0};
  std::atomic<uint64_t> demand_completion_tokens_{0};  // counted where the request decodes

  // Blocks of every leased prefill result, by pin id (what /v1/kv/leases/claim answers); entries
  // are removed when the lease ends (the release function).
  std::mutex pins_mu_;
  std::unordered_map<uint64_t, engine::PinnedKv> pins_;  // guarded by pins_mu_

  std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  bool lease_stop_ = false;  // guarded by lease_mu_
  std::thread lease_thread_;
};

}  // namespace kvmesh::agent
