#include "router/router.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/engine/model_config.h"
#include "agent/engine/model_preset.h"
#include "common/file_util.h"
#include "common/http_client.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/openai_api.h"
#include "kv/block_hash.h"
#include "kv/prefix_index.h"
#include "router/auth.h"
#include "router/kv_indexer.h"
#include "kv/prefix_roots.h"
#include "router/router_metrics.h"
#include "router/routing.h"
#include "router/worker_registry.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/stop_checker.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::router {

namespace {

constexpr char kComponent[] = "router";
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kRequestStackBytes = 2u << 20;  // sanitizers need far more stack
#else
constexpr size_t kRequestStackBytes = 256u << 10;
#endif

const char* EndpointLabel(openai::ApiKind kind) {
  return kind == openai::ApiKind::kChat ? "chat_completions" : "completions";
}

std::string ServedName(const RouterConfig& c) {
  if (!c.served_model_name.empty()) return c.served_model_name;
  constexpr std::string_view kBuiltin = "builtin:";
  if (c.model.rfind(kBuiltin, 0) == 0) return c.model.substr(kBuiltin.size());
  std::filesystem::path p(c.model);
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  return name.empty() ? c.model : name;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// One request's upstream connection and cancellation flags; shared with the disconnect callbacks
// and the watchdog (which only call Cancel()).
struct RequestCtx {
  explicit RequestCtx(http::HttpClientOptions o) : client(std::move(o)) {}
  http::HttpClient client;  // only the request thread calls it, except Abort()
  std::atomic<bool> cancelled{false};  // the client went away or the router is shutting down
  std::atomic<bool> timed_out{false};  // limits.request_timeout passed
  Clock::time_point deadline;
  void Cancel() {
    cancelled = true;
    client.Abort();
  }
  bool stopped() const { return cancelled.load() || timed_out.load(); }
};

}  // namespace

struct Router::Impl {
  explicit Impl(const RouterConfig& c) : config(c) {}

  // One client request being generated: what the client has been sent so far and how to render
  // the rest. Only the request's thread touches it.
  struct Gen {
    openai::ApiKind kind = openai::ApiKind::kCompletion;
    const char* endpoint = "";
    openai::RenderOptions render;
    openai::CompletionRequest req;
    const Tenant* tenant = nullptr;
    std::string authorization;  // the client's, forwarded to cluster routers (global tier)
    std::shared_ptr<http::Responder> responder;
    std::shared_ptr<http::StreamWriter> writer;  // once the stream started
    std::shared_ptr<RequestCtx> ctx;
    std::vector<int32_t> prompt;
    int32_t max_tokens = 0;
    std::unique_ptr<tokenizer::StopChecker> stop;
    std::vector<int32_t> generated;  // every token the client got (or will get in the response)
    std::string text;                // non-streaming: the text so far
    bool finished = false;
    std::string finish_reason;
    std::string final_delta;             // stream: text of the final chunk, sent at Complete()
    std::vector<int32_t> final_tokens;   // stream: tokens of the final chunk
    bool sent_first_chunk = false;
    int32_t cached_tokens = 0;
    bool cached_known = false;
    Clock::time_point arrival;
    Clock::time_point last_token;
  };

  enum class Outcome { kDone, kRetryable, kBroken, kHttpError, kCancelled };
  struct CallResult {
    Outcome outcome = Outcome::kDone;
    Status status;  // kRetryable/kBroken: what went wrong
    int http_status = 0;
    std::string body;
    std::string retry_after;
  };

  struct Pick {
    std::shared_ptr<WorkerState> decode;
    std::shared_ptr<WorkerState> prefill;  // remote prefill when set
    RouteChoice choice;
    PrefillPlan plan;
    uint32_t prefill_overlap = 0;  // predicted overlap on the worker that prefills
  };

  // ---- setup ----
  Status Init();
  void RegisterRoutes();
  Status WriteReadyFile() const;
  void Shutdown();

  // ---- request path ----
  void HandleCompletion(openai::ApiKind kind, const http::HttpRequest& req,
                        std::shared_ptr<http::Responder> responder);
  void Serve(openai::ApiKind kind, http::HttpRequest req, std::shared_ptr<http::Responder> responder,
             std::shared_ptr<RequestCtx> ctx, const Tenant* tenant);
  void Run(Gen& g);
  StatusOr<Pick> Choose(Gen& g, std::span<const int32_t> prompt, const std::vector<kv::BlockHash>& hashes,
                        const std::unordered_set<kv::WorkerId>& bad_decode,
                        const std::unordered_set<kv::WorkerId>& bad_prefill, bool allow_remote);
  json WorkerBody(const Gen& g, std::span<const int32_t> prompt, int32_t max_tokens, bool stream,
                  const json* kv_params) const;
  CallResult Prefill(Gen& g, WorkerState& w, int32_t* first_token, json* handle);
  CallResult Decode(Gen& g, WorkerState& w, const json& body, std::optional<int32_t> skip_first,
                    LoadGuard& guard);
  void ReleaseLease(Gen& g, const json& handle);
  void EmitToken(Gen& g, int32_t token, const std::string& worker_finish);
  void FinishGen(Gen& g, const std::string& reason);
  void Complete(Gen& g);
  void Fail(Gen& g, const Status& status, int http_status = 0, int retry_after = 0);
  void PassThrough(Gen& g, const CallResult& r);
  void Reject(const std::shared_ptr<http::Responder>& r, const char* endpoint, const char* result,
              http::HttpResponse resp);
  struct ThreadStart {
    Impl* impl;
    std::function<void()> fn;
  };
  bool StartThread(std::function<void()> fn);
  static void* ThreadMain(void* p);
  void WatchdogLoop();

  // ---- admin ----
  http::HttpResponse HandleReady();
  http::HttpResponse HandleWorkers(const http::HttpRequest& req);
  http::HttpResponse HandleIndex(const http::HttpRequest& req);
  http::HttpResponse HandleSummary(const http::HttpRequest& req);
  static std::vector<std::pair<std::string, std::string>> UpstreamHeaders(const Gen& g,
                                                                          const WorkerState& w);

  const RouterConfig config;
  std::string served_model;
  int64_t created_unix = 0;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  std::optional<tokenizer::ChatTemplate> chat_template;
  int32_t max_model_len = 0;
  std::vector<int32_t> eos_ids;
  std::optional<Auth> auth;
  RouterMetrics metrics;
  std::unique_ptr<kv::PrefixIndex> index;
  std::unique_ptr<KvIndexer> indexer;
  // This router's identity in the summaries it serves, and how many it served.
  std::string router_id = "router-" + std::to_string(std::random_device{}()) + "-" +
                          std::to_string(::getpid());
  std::atomic<uint64_t> summary_seq{0};
  // The prefix roots of this router's requests (first try of each), listed in the summary for
  // the placement hub's heat per root (docs/placement.md).
  kv::PrefixRoots roots;
  std::unique_ptr<WorkerRegistry> registry;
  std::unique_ptr<RoutingPolicy> policy;
  Counter* policy_decisions = nullptr;  // routing_decisions{mode=policy->name()}
  std::unique_ptr<http::HttpServer> http;

  std::atomic<bool> draining{false};
  std::atomic<bool> started{false};
  std::atomic<bool> shut_down{false};

  // Request threads: counted so Shutdown() can wait for them.
  std::mutex threads_mu;
  std::condition_variable threads_cv;
  int64_t threads = 0;  // guarded by threads_mu

  // Requests in flight, for the watchdog (request_timeout) and Shutdown's abort.
  std::mutex active_mu;
  std::unordered_map<RequestCtx*, std::weak_ptr<RequestCtx>> active;  // guarded by active_mu

  std::mutex watchdog_mu;
  std::condition_variable watchdog_cv;
  bool watchdog_stop = false;  // guarded by watchdog_mu
  std::thread watchdog;
};

// ---- setup ---------------------------------------------------------------------------------------

Status Router::Impl::Init() {
  served_model = ServedName(config);
  created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  KVMESH_ASSIGN_OR_RETURN(metrics, RouterMetrics::Register(DefaultMetricsRegistry()));

  KVMESH_ASSIGN_OR_RETURN(std::string dir, engine::ResolveModelSource(
      config.model, config.cache_dir.empty() ? engine::DefaultModelCacheDir() : config.cache_dir));
  KVMESH_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json"));
  tokenizer = std::shared_ptr<const tokenizer::Tokenizer>(std::move(tok));
  {
    std::ifstream in(dir + "/tokenizer_config.json");
    std::stringstream ss;
    if (in) ss << in.rdbuf();
    KVMESH_ASSIGN_OR_RETURN(auto tmpl, tokenizer::ChatTemplate::FromTokenizerConfig(in ? ss.str() : "{}", "llama3"));
    chat_template.emplace(std::move(tmpl));
  }
  KVMESH_ASSIGN_OR_RETURN(engine::ModelConfig mc, engine::ModelConfig::Load(dir + "/config.json"));
  max_model_len = mc.max_position_embeddings;
  for (int id : mc.eos_token_ids) eos_ids.push_back(static_cast<int32_t>(id));

  KVMESH_ASSIGN_OR_RETURN(Auth a, Auth::Create(config.auth));
  auth.emplace(std::move(a));

  std::random_device rd;
  KVMESH_ASSIGN_OR_RETURN(policy, CreateRoutingPolicy(config.routing, (uint64_t{rd()} << 32) ^ rd()));
  policy_decisions = &metrics.routing_decisions->WithLabels({policy->name()});

  index = std::make_unique<kv::PrefixIndex>();
  KvIndexerOptions io;
  io.block_size = config.block_size;
  io.summary_interval = config.global.summary_interval;
  if (!config.global.summary_api_key.empty()) {
    io.summary_authorization = "Bearer " + config.global.summary_api_key;
  }
  indexer = std::make_unique<KvIndexer>(index.get(), io, &DefaultMetricsRegistry());

  WorkerRegistryOptions ro;
  for (const std::string& u : config.workers.urls) {
    KVMESH_ASSIGN_OR_RETURN(WorkerSpec spec, ParseWorkerUrl(u));
    ro.static_workers.push_back(std::move(spec));
  }
  ro.file = config.workers.file;
  ro.file_poll_interval = config.workers.file_poll_interval;
  ro.health_interval = config.workers.health_interval;
  ro.health_timeout = config.workers.health_timeout;
  ro.breaker_failures = config.workers.breaker_failures;
  ro.breaker_open = config.workers.breaker_open;
  ro.max_inflight_per_worker = config.workers.max_inflight_per_worker;
  KvIndexer* ix = indexer.get();
  ro.on_change = [ix](const WorkerTable& added, const std::vector<kv::WorkerId>& removed) {
    for (const auto& w : added) ix->AddWorker(w);
    for (kv::WorkerId id : removed) ix->RemoveWorker(id);
  };
  KVMESH_ASSIGN_OR_RETURN(registry, WorkerRegistry::Create(std::move(ro), &DefaultMetricsRegistry()));

  http::HttpServerOptions ho;
  ho.host = config.host;
  ho.port = static_cast<uint16_t>(config.port);
  ho.num_threads = static_cast<int>(config.http_threads);
  ho.max_request_body_bytes = config.limits.max_body_bytes;
  ho.server_name = "kvmesh-router";
  KVMESH_RETURN_IF_ERROR(ho.Validate());
  http = std::make_unique<http::HttpServer>(ho);
  RegisterRoutes();
  KVMESH_LOG_INFO(kComponent, "router configured", {"model", config.model}, {"served_as", served_model},
                  {"context", static_cast<int64_t>(max_model_len)}, {"routing", policy->name()},
                  {"disaggregation", config.disaggregation.mode},
                  {"auth", auth->enabled() ? "api_keys" : "off (loopback only)"});
  return Status::Ok();
}

void Router::Impl::RegisterRoutes() {
  http->Route("GET", "/health", [](const http::HttpRequest&) {
    return http::JsonResponse(200, R"({"status":"ok"})");
  });
  http->Route("GET", "/ready", [this](const http::HttpRequest&) { return HandleReady(); });
  http->Route("GET", "/metrics", [](const http::HttpRequest&) {
    http::HttpResponse r;
    r.content_type = kPrometheusTextContentType;
    r.body = DefaultMetricsRegistry().Render();
    return r;
  });
  http->Route("GET", "/v1/models", [this](const http::HttpRequest& req) {
    auto t = auth->Authenticate(req.Header("authorization"));
    if (!t.ok()) return http::ErrorResponseFor(t.status());
    return http::JsonResponse(200, openai::RenderModelList({served_model}, created_unix));
  });
  http->Route("GET", "/admin/workers", [this](const http::HttpRequest& r) { return HandleWorkers(r); });
  http->Route("GET", "/debug/index", [this](const http::HttpRequest& r) { return HandleIndex(r); });
  http->Route("GET", "/v1/kv/inventory", [this](const http::HttpRequest& r) { return HandleSummary(r); });
  http->RouteAsync("POST", "/v1/completions",
                   [this](const http::HttpRequest& r, std::shared_ptr<http::Responder> resp) {
                     HandleCompletion(openai::ApiKind::kCompletion, r, std::move(resp));
                   });
  http->RouteAsync("POST", "/v1/chat/completions",
                   [this](const http::HttpRequest& r, std::shared_ptr<http::Responder> resp) {
                     HandleCompletion(openai::ApiKind::kChat, r, std::move(resp));
                   });
}

http::HttpResponse Router::Impl::HandleReady() {
  if (draining.load()) return http::JsonErrorResponse(503, "router is draining", "server_error", "draining");
  auto table = registry->Table();
  for (const auto& w : *table) {
    if (!w->removed.load() && CanDecode(w->spec.role) && w->ready.load()) {
      return http::JsonResponse(200, R"({"status":"ready"})");
    }
  }
  return http::JsonErrorResponse(503, "no decode-capable worker is ready", "server_error", "not_ready");
}

http::HttpResponse Router::Impl::HandleWorkers(const http::HttpRequest& req) {
  if (Status s = auth->AuthorizeAdmin(req.Header("authorization")); !s.ok()) return http::ErrorResponseFor(s);
  json arr = json::array();
  auto table = registry->Table();
  for (const auto& w : *table) {
    arr.push_back({{"id", w->id},
                   {"url", w->spec.url},
                   {"name", w->spec.name},
                   {"role", WorkerRoleName(w->spec.role)},
                   {"ready", w->ready.load()},
                   {"routable", registry->Routable(*w)},
                   {"breaker", BreakerStateName(w->breaker_state())},
                   {"consecutive_failures", w->consecutive_failures.load()},
                   {"inflight", w->inflight.load()},
                   {"prefills_inflight", w->prefills_inflight.load()},
                   {"prefill_tokens", w->prefill_tokens.load()},
                   {"decode_blocks", w->decode_blocks.load()},
                   {"index_synced", indexer->Synced(w->id)}});
  }
  return http::JsonResponse(200, Dump(json{{"workers", arr}}));
}

// The cluster's prefix summary for a global router: every block some worker of this router
// holds (confirmed, any tier), in the agents' inventory format (docs/global-routing.md), plus
// the router's load. seq counts the summaries served (each one replaces the previous).
http::HttpResponse Router::Impl::HandleSummary(const http::HttpRequest& req) {
  if (Status s = auth->AuthorizeAdmin(req.Header("authorization")); !s.ok()) return http::ErrorResponseFor(s);
  const std::vector<kv::BlockHash> blocks = index->HeldBlocks(config.global.summary_max_blocks);
  uint64_t inflight = 0;
  uint32_t ready = 0;
  auto table = registry->Table();
  for (const auto& w : *table) {
    if (w->removed.load()) continue;
    inflight += w->inflight.load();
    ready += w->ready.load() ? 1 : 0;
  }
  json j = {{"agent_id", router_id},
            {"kind", "router"},
            {"block_size", config.block_size},
            {"seq", summary_seq.fetch_add(1) + 1},
            {"tiers", json::array({json{{"medium", "GPU"}, {"hashes", blocks}}})},
            {"load", {{"inflight", inflight}, {"ready_workers", ready}}}};
  // The hottest prefix roots of this router's requests: requests counts only grow while a root
  // is listed (a root dropped and seen again restarts at 1).
  // With summary_max_roots 0 the key is left out, so a hub falls back to its per-cluster model.
  if (config.global.summary_max_roots > 0) {
    json roots_json = json::array();
    for (const kv::PrefixRoots::Root& r : roots.Top(config.global.summary_max_roots)) {
      roots_json.push_back(json{{"root", r.root}, {"requests", r.requests}, {"blocks", r.common}});
    }
    j["roots"] = std::move(roots_json);
  }
  return http::JsonResponse(200, Dump(j));
}

http::HttpResponse Router::Impl::HandleIndex(const http::HttpRequest& req) {
  if (Status s = auth->AuthorizeAdmin(req.Header("authorization")); !s.ok()) return http::ErrorResponseFor(s);
  const kv::PrefixIndexStats s = index->Stats();
  const KvIndexerStats e = indexer->Stats();
  json j = {{"index", {{"blocks", s.blocks},
                       {"holders", s.holders},
                       {"workers", s.workers},
                       {"predicted", s.predicted},
                       {"batches", s.batches},
                       {"block_ops", s.block_ops},
                       {"gaps", s.gaps},
                       {"pruned_blocks", s.pruned_blocks},
                       {"predicted_expired", s.predicted_expired},
                       {"memory_bytes", s.memory_bytes}}},
            {"events", {{"batches", e.batches},
                        {"gaps", e.gaps},
                        {"replays", e.replays},
                        {"resyncs", e.resyncs},
                        {"decode_errors", e.decode_errors}}}};
  return http::JsonResponse(200, Dump(j));
}

Status Router::Impl::WriteReadyFile() const {
  if (config.ready_file.empty()) return Status::Ok();
  json j = {{"http", "http://" + config.host + ":" + std::to_string(http->port())},
            {"port", http->port()},
            {"model", served_model},
            {"pid", static_cast<int64_t>(::getpid())}};
  return WriteFileAtomic(config.ready_file, j.dump() + "\n");
}

// ---- threads -------------------------------------------------------------------------------------

bool Router::Impl::StartThread(std::function<void()> fn) {
  auto* start = new ThreadStart{this, std::move(fn)};
  {
    std::lock_guard<std::mutex> lock(threads_mu);
    ++threads;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kRequestStackBytes);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t tid;
  const int rc = pthread_create(&tid, &attr, &Impl::ThreadMain, start);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    delete start;
    std::lock_guard<std::mutex> lock(threads_mu);
    --threads;
    threads_cv.notify_all();
    return false;
  }
  return true;
}

void* Router::Impl::ThreadMain(void* p) {
  std::unique_ptr<ThreadStart> s(static_cast<ThreadStart*>(p));
  Impl* impl = s->impl;
  s->fn();
  s.reset();  // the request's captures are gone before the count drops
  std::lock_guard<std::mutex> lock(impl->threads_mu);
  --impl->threads;
  impl->threads_cv.notify_all();
  return nullptr;
}

void Router::Impl::WatchdogLoop() {
  std::unique_lock<std::mutex> lock(watchdog_mu);
  while (!watchdog_stop) {
    watchdog_cv.wait_for(lock, std::chrono::milliseconds(100));
    if (watchdog_stop) break;
    const auto now = Clock::now();
    std::vector<std::shared_ptr<RequestCtx>> late;
    {
      std::lock_guard<std::mutex> al(active_mu);
      for (auto& [raw, weak] : active) {
        if (raw->deadline <= now && !raw->timed_out.load()) {
          if (auto c = weak.lock()) late.push_back(std::move(c));
        }
      }
    }
    for (auto& c : late) {
      c->timed_out = true;
      c->client.Abort();
    }
  }
}

// ---- request path --------------------------------------------------------------------------------

void Router::Impl::Reject(const std::shared_ptr<http::Responder>& r, const char* endpoint, const char* result,
                          http::HttpResponse resp) {
  metrics.requests->WithLabels({endpoint, result}).Inc();
  r->Respond(std::move(resp));
}

void Router::Impl::HandleCompletion(openai::ApiKind kind, const http::HttpRequest& req,
                                    std::shared_ptr<http::Responder> responder) {
  const char* endpoint = EndpointLabel(kind);
  const int retry_after = static_cast<int>(config.limits.retry_after_seconds);
  if (draining.load()) {
    Reject(responder, endpoint, "rejected", http::ErrorResponseFor(UnavailableError("router is draining"), retry_after));
    return;
  }
  auto tenant = auth->Authenticate(req.Header("authorization"));
  if (!tenant.ok()) {
    http::HttpResponse resp = http::ErrorResponseFor(tenant.status());
    resp.headers.emplace_back("WWW-Authenticate", "Bearer");
    Reject(responder, endpoint, "unauthorized", std::move(resp));
    return;
  }
  http::HttpClientOptions co;
  co.connect_timeout = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(5000), config.limits.request_timeout);
  co.read_timeout = config.limits.request_timeout;
  co.user_agent = "kvmesh-router";
  auto ctx = std::make_shared<RequestCtx>(co);
  ctx->deadline = Clock::now() + config.limits.request_timeout;
  std::weak_ptr<RequestCtx> weak = ctx;
  responder->SetOnDisconnect([weak] {
    if (auto c = weak.lock()) c->Cancel();
  });
  const Tenant* t = *tenant;
  // Copy what the thread needs: the request object belongs to the io thread.
  auto fn = [this, kind, req, responder, ctx, t]() mutable {
    Serve(kind, std::move(req), std::move(responder), std::move(ctx), t);
  };
  if (!StartThread(std::move(fn))) {
    Reject(responder, endpoint, "rejected",
           http::ErrorResponseFor(UnavailableError("router cannot start a request thread"), retry_after));
  }
}

void Router::Impl::Serve(openai::ApiKind kind, http::HttpRequest req, std::shared_ptr<http::Responder> responder,
                         std::shared_ptr<RequestCtx> ctx, const Tenant* tenant) {
  Gen g;
  g.kind = kind;
  g.endpoint = EndpointLabel(kind);
  g.arrival = Clock::now();
  g.responder = std::move(responder);
  g.ctx = ctx;
  g.tenant = tenant;
  g.authorization = std::string(req.Header("authorization"));
  auto parsed = openai::ParseCompletionRequest(kind, req.body);
  if (!parsed.ok()) {
    Reject(g.responder, g.endpoint, "rejected", http::ErrorResponseFor(parsed.status()));
    return;
  }
  g.req = std::move(*parsed);
  const openai::CompletionRequest& r = g.req;
  if (r.model != served_model) {
    Reject(g.responder, g.endpoint, "rejected", http::ErrorResponseFor(NotFoundError(
        "model '" + r.model + "' does not exist; this router serves '" + served_model + "'")));
    return;
  }
  // Tokenize as the agent does (Agent::PromptTokens).
  if (kind == openai::ApiKind::kCompletion) {
    g.prompt = r.prompt_tokens ? *r.prompt_tokens : tokenizer->Encode(*r.prompt_text, r.add_special_tokens.value_or(true));
  } else {
    std::vector<tokenizer::ChatMessage> msgs;
    msgs.reserve(r.messages.size());
    for (const openai::ChatMessage& m : r.messages) msgs.push_back({m.role, m.content});
    auto text = chat_template->Apply(msgs, /*add_generation_prompt=*/true);
    if (!text.ok()) {
      Reject(g.responder, g.endpoint, "rejected", http::ErrorResponseFor(InvalidArgumentError(text.status().message())));
      return;
    }
    g.prompt = tokenizer->Encode(*text, r.add_special_tokens.value_or(false));
  }
  const auto prompt_len = static_cast<int32_t>(g.prompt.size());
  if (prompt_len == 0) {
    Reject(g.responder, g.endpoint, "rejected", http::ErrorResponseFor(InvalidArgumentError("prompt is empty after tokenization")));
    return;
  }
  if (prompt_len >= max_model_len) {
    Reject(g.responder, g.endpoint, "rejected", http::ErrorResponseFor(InvalidArgumentError(
        "prompt has " + std::to_string(prompt_len) + " tokens; this model's context is " +
        std::to_string(max_model_len) + " tokens (prompt + completion)")));
    return;
  }
  const int32_t room = max_model_len - prompt_len;
  const int32_t default_max = kind == openai::ApiKind::kCompletion ? std::min(16, room) : room;
  g.max_tokens = r.max_tokens ? std::min(*r.max_tokens, room) : default_max;
  g.stop = std::make_unique<tokenizer::StopChecker>(*tokenizer, r.stop);
  g.render.kind = kind;
  g.render.id = openai::NewResponseId(kind);
  g.render.created = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  g.render.model = served_model;
  g.render.return_token_ids = r.return_token_ids;

  {
    std::lock_guard<std::mutex> lock(active_mu);
    active[ctx.get()] = ctx;
  }
  metrics.requests_in_flight->Inc();
  Run(g);
  metrics.requests_in_flight->Dec();
  {
    std::lock_guard<std::mutex> lock(active_mu);
    active.erase(ctx.get());
  }
  metrics.e2e->Observe(Seconds(Clock::now() - g.arrival));
}

StatusOr<Router::Impl::Pick> Router::Impl::Choose(Gen& g, std::span<const int32_t> prompt,
                                                  const std::vector<kv::BlockHash>& hashes,
                                                  const std::unordered_set<kv::WorkerId>& bad_decode,
                                                  const std::unordered_set<kv::WorkerId>& bad_prefill,
                                                  bool allow_remote) {
  const auto t0 = Clock::now();
  const std::shared_ptr<const WorkerView> view = registry->View();
  // Per-thread scratch: a decision does not allocate (it never suspends, so one thread's requests
  // do not share these at once).
  thread_local std::vector<WorkerState*> cands, excluded, pre;
  thread_local kv::QueryResult overlaps;
  RouteInput in;
  in.hashes = hashes;
  in.prompt_tokens = static_cast<uint32_t>(prompt.size());
  in.max_new_tokens = static_cast<uint32_t>(
      std::max<int64_t>(0, g.max_tokens - static_cast<int64_t>(g.generated.size())));
  in.block_size = config.block_size;
  // A first try chooses among the view's decode workers, the policy skipping unroutable ones; a
  // retry lists the candidates first, keeping the workers that failed it as the last resort.
  std::span<WorkerState* const> decode_from = view->decode;
  if (bad_decode.empty()) {
    in.routable_only = registry.get();
    in.loads = view->DecodeLoads();  // the kv policy reads the loads off the registry's board
  } else {
    registry->SelectCandidates(*view, CandidateKind::kDecode, bad_decode, nullptr, cands,
                               &excluded);
    if (cands.empty()) cands.swap(excluded);  // another worker when possible, else the same
    decode_from = cands;
  }
  const bool disagg = allow_remote && config.disaggregation.mode != "off";
  overlaps.workers.clear();
  Pick p;
  if (!decode_from.empty()) {
    if (policy->uses_overlap() || disagg) index->QueryInto(hashes, {}, overlaps);
    p.choice = policy->Choose(in, decode_from, overlaps);
  }
  if (p.choice.worker == nullptr) {  // no routable decode worker
    bool any_up = false;
    bool all_full = true;
    for (const WorkerState* w : view->decode) {
      if (w->removed.load() || !w->ready.load() || w->breaker_state() == BreakerState::kOpen) {
        continue;
      }
      any_up = true;
      if (w->inflight.load() < registry->max_inflight_per_worker()) all_full = false;
    }
    if (any_up && all_full) {
      return ResourceExhaustedError("every decode-capable worker has " +
                                    std::to_string(registry->max_inflight_per_worker()) +
                                    " requests in flight; retry later");
    }
    return UnavailableError("no decode-capable worker is ready");
  }
  if (disagg) {
    registry->SelectCandidates(*view, CandidateKind::kRemotePrefill, bad_prefill,
                               p.choice.worker, pre, nullptr);
    p.plan = PlanPrefill(config.disaggregation, in, p.choice, pre, overlaps, *policy);
  } else {
    const uint64_t cached = uint64_t{p.choice.overlap_blocks} * config.block_size;
    p.plan.uncached_tokens = cached >= prompt.size() ? 0 : static_cast<uint32_t>(prompt.size() - cached);
    p.plan.reason = config.disaggregation.mode == "off" ? "disabled" : "local_only";
  }
  p.decode = view->Find(p.choice.worker);
  if (p.plan.remote) p.prefill = view->Find(p.plan.prefill_worker);
  p.prefill_overlap = p.choice.overlap_predicted;
  if (p.prefill) {
    for (const kv::WorkerMatch& m : overlaps.workers) {
      if (m.worker == p.prefill->id) p.prefill_overlap = m.matched_with_predicted;
    }
  }
  policy_decisions->Inc();
  metrics.routing_decision_seconds->Observe(Seconds(Clock::now() - t0));
  if (!p.decode) return InternalError("routing policy chose a worker outside the candidates");
  return p;
}

// A cluster router (global tier) authenticates the client itself and derives the same tenant
// salt from the same key, so the client's Authorization header goes along; agents get none.
std::vector<std::pair<std::string, std::string>> Router::Impl::UpstreamHeaders(const Gen& g,
                                                                            const WorkerState& w) {
  std::vector<std::pair<std::string, std::string>> h;
  if (w.spec.is_cluster_router && !g.authorization.empty()) {
    h.emplace_back("Authorization", g.authorization);
  }
  return h;
}

json Router::Impl::WorkerBody(const Gen& g, std::span<const int32_t> prompt, int32_t max_tokens, bool stream,
                              const json* kv_params) const {
  const openai::CompletionRequest& r = g.req;
  json j = {{"model", served_model},
            {"prompt", std::vector<int32_t>(prompt.begin(), prompt.end())},
            {"max_tokens", max_tokens},
            {"stream", stream},
            {"return_token_ids", true},
            {"cache_salt", g.tenant->salt}};
  if (stream) j["stream_options"] = {{"include_usage", true}};
  if (r.temperature) j["temperature"] = *r.temperature;
  if (r.top_p) j["top_p"] = *r.top_p;
  if (r.top_k) j["top_k"] = *r.top_k;
  if (r.seed) j["seed"] = *r.seed;
  if (!r.stop.empty()) j["stop"] = r.stop;
  if (!r.stop_token_ids.empty()) j["stop_token_ids"] = r.stop_token_ids;
  if (r.ignore_eos) j["ignore_eos"] = true;
  if (kv_params) j["kv_transfer_params"] = *kv_params;
  return j;
}

namespace {

bool IsRetryableStatus(int s) { return s == 502 || s == 503 || s == 504; }

int32_t CachedTokensOf(const json& j) {
  auto u = j.find("usage");
  if (u == j.end() || !u->is_object()) return -1;
  auto d = u->find("prompt_tokens_details");
  if (d == u->end() || !d->is_object()) return -1;
  auto c = d->find("cached_tokens");
  if (c == d->end() || !c->is_number_integer()) return -1;
  return c->get<int32_t>();
}

}  // namespace

Router::Impl::CallResult Router::Impl::Prefill(Gen& g, WorkerState& w, int32_t* first_token, json* handle) {
  CallResult out;
  const json params = {{"do_remote_decode", true}};
  const json body = WorkerBody(g, g.prompt, 1, false, &params);
  auto resp = g.ctx->client.Post(w.spec.url + "/v1/completions", Dump(body), "application/json",
                                 UpstreamHeaders(g, w));
  if (g.ctx->stopped()) {
    out.outcome = Outcome::kCancelled;
    return out;
  }
  if (!resp.ok()) {
    out.outcome = Outcome::kRetryable;
    out.status = resp.status();
    return out;
  }
  if (resp->status != 200) {
    out.outcome = IsRetryableStatus(resp->status) ? Outcome::kRetryable : Outcome::kHttpError;
    out.status = UnavailableError("prefill worker " + w.spec.url + " answered " + std::to_string(resp->status));
    out.http_status = resp->status;
    out.body = resp->body;
    out.retry_after = resp->Header("retry-after");
    return out;
  }
  json j = json::parse(resp->body, nullptr, false);
  const json* ids = nullptr;
  if (j.is_object() && j.contains("choices") && j["choices"].is_array() && !j["choices"].empty() &&
      j["choices"][0].is_object() && j["choices"][0].contains("token_ids")) {
    ids = &j["choices"][0]["token_ids"];
  }
  if (ids == nullptr || !ids->is_array() || ids->empty() || !(*ids)[0].is_number_integer() ||
      !j.contains("kv_transfer_params") || !j["kv_transfer_params"].is_object()) {
    out.outcome = Outcome::kRetryable;
    out.status = DataLossError("prefill worker " + w.spec.url + " answered without token_ids / kv_transfer_params");
    return out;
  }
  *first_token = (*ids)[0].get<int32_t>();
  *handle = j["kv_transfer_params"];
  if (int32_t c = CachedTokensOf(j); c >= 0) {
    g.cached_tokens = c;
    g.cached_known = true;
  }
  return out;
}

void Router::Impl::ReleaseLease(Gen& g, const json& handle) {
  // The decode half will not run (the first token ended the request): free the prefill agent's
  // pinned blocks now instead of at lease expiry. Best effort.
  auto url = handle.find("peer_url");
  auto lease = handle.find("lease_id");
  if (url == handle.end() || !url->is_string() || lease == handle.end()) return;
  json body = {{"lease_id", *lease}};
  if (auto a = handle.find("agent_id"); a != handle.end()) body["agent_id"] = *a;
  (void)g.ctx->client.Post(url->get<std::string>() + "/v1/kv/leases/release", Dump(body));
}

void Router::Impl::FinishGen(Gen& g, const std::string& reason) {
  if (g.finished) return;
  g.finished = true;
  g.finish_reason = reason;
  std::string rest = g.stop->Flush();
  if (g.req.stream) {
    g.final_delta += rest;
  } else {
    g.text += rest;
  }
}

void Router::Impl::EmitToken(Gen& g, int32_t token, const std::string& worker_finish) {
  if (g.finished) return;
  const auto now = Clock::now();
  if (g.generated.empty()) {
    metrics.ttft->Observe(Seconds(now - g.arrival));
  } else {
    metrics.itl->Observe(Seconds(now - g.last_token));
  }
  g.last_token = now;
  g.generated.push_back(token);
  const openai::CompletionRequest& r = g.req;
  std::string delta;
  std::string reason;
  const bool eos = !r.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end();
  const bool stop_id = std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), token) != r.stop_token_ids.end();
  if (eos || stop_id) {
    reason = "stop";  // an EOS / stop token is not text (as in the engine)
  } else {
    tokenizer::StopChecker::Result sr = g.stop->Push(token);
    delta = std::move(sr.text);
    if (sr.stopped) reason = "stop";
    if (reason.empty() && (static_cast<int32_t>(g.generated.size()) >= g.max_tokens ||
                           static_cast<int32_t>(g.prompt.size() + g.generated.size()) >= max_model_len)) {
      reason = "length";
    }
  }
  if (reason.empty() && !worker_finish.empty()) reason = worker_finish;
  if (!g.req.stream) {
    g.text += delta;
    if (!reason.empty()) FinishGen(g, reason);
    return;
  }
  if (!g.writer) {
    g.writer = g.responder->StartStream(http::StreamWriter::Mode::kSse);
    if (!g.writer) {  // the client is gone
      g.ctx->Cancel();
      return;
    }
    std::weak_ptr<RequestCtx> weak = g.ctx;
    g.writer->SetOnDisconnect([weak] {
      if (auto c = weak.lock()) c->Cancel();
    });
  }
  if (!reason.empty()) {
    g.final_delta = std::move(delta);
    g.final_tokens = {token};
    FinishGen(g, reason);
    return;
  }
  if (!delta.empty() || r.return_token_ids) {
    g.writer->Send(openai::RenderChunk(g.render, delta, {token}, "", !g.sent_first_chunk));
    g.sent_first_chunk = true;
  }
}

Router::Impl::CallResult Router::Impl::Decode(Gen& g, WorkerState& w, const json& body,
                                               std::optional<int32_t> skip_first, LoadGuard& guard) {
  CallResult out;
  http::ClientRequest req;
  req.method = "POST";
  req.url = w.spec.url + "/v1/completions";
  req.headers = UpstreamHeaders(g, w);
  req.body = Dump(body);
  req.content_type = "application/json";
  size_t tokens = 0;
  bool worker_finished = false;
  bool router_stopped = false;
  bool error_event = false;
  std::string error_message;
  bool first_seen = false;
  auto resp = g.ctx->client.StreamSse(req, [&](const http::SseEvent& ev) {
    if (g.ctx->stopped()) return false;
    if (ev.data == "[DONE]") return true;
    json j = json::parse(ev.data, nullptr, false);
    if (!j.is_object()) {
      error_event = true;
      error_message = "worker sent an event that is not a JSON object";
      return false;
    }
    if (auto e = j.find("error"); e != j.end()) {
      error_event = true;
      error_message = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                          ? (*e)["message"].get<std::string>() : Dump(*e);
      return false;
    }
    if (int32_t c = CachedTokensOf(j); c >= 0 && !g.cached_known) {
      g.cached_tokens = c;
      g.cached_known = true;
    }
    auto ch = j.find("choices");
    if (ch == j.end() || !ch->is_array() || ch->empty() || !(*ch)[0].is_object()) return true;
    const json& c0 = (*ch)[0];
    std::string finish;
    if (auto f = c0.find("finish_reason"); f != c0.end() && f->is_string()) finish = f->get<std::string>();
    std::vector<int32_t> ids;
    if (auto t = c0.find("token_ids"); t != c0.end() && t->is_array()) {
      for (const json& x : *t) {
        if (x.is_number_integer()) ids.push_back(x.get<int32_t>());
      }
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!first_seen) {
        first_seen = true;
        guard.PrefillDone();
        if (skip_first && ids[i] == *skip_first) continue;  // the prefill worker's token, already sent
      }
      ++tokens;
      EmitToken(g, ids[i], i + 1 == ids.size() ? finish : std::string());
      if (g.ctx->stopped()) return false;
    }
    if (!finish.empty()) {
      worker_finished = true;
      if (!g.finished) FinishGen(g, finish);
    }
    if (g.finished && !worker_finished) {
      router_stopped = true;  // e.g. a stop string across a migration: the worker does not know
      return false;
    }
    return true;
  });
  if (g.ctx->stopped()) {
    out.outcome = Outcome::kCancelled;
    return out;
  }
  if (!resp.ok()) {
    out.outcome = tokens == 0 ? Outcome::kRetryable : Outcome::kBroken;
    out.status = resp.status();
    return out;
  }
  if (resp->status != 200) {
    out.outcome = IsRetryableStatus(resp->status) ? Outcome::kRetryable : Outcome::kHttpError;
    out.status = UnavailableError("worker " + w.spec.url + " answered " + std::to_string(resp->status));
    out.http_status = resp->status;
    out.body = resp->body;
    out.retry_after = resp->Header("retry-after");
    return out;
  }
  if (g.finished || router_stopped) return out;  // kDone
  out.outcome = tokens == 0 && !error_event ? Outcome::kRetryable : Outcome::kBroken;
  out.status = UnavailableError("stream from " + w.spec.url + " ended without a finish" +
                                (error_event ? ": " + error_message : std::string()));
  return out;
}

void Router::Impl::Complete(Gen& g) {
  openai::Usage usage;
  usage.prompt_tokens = static_cast<int32_t>(g.prompt.size());
  usage.completion_tokens = static_cast<int32_t>(g.generated.size());
  usage.cached_tokens = g.cached_tokens;
  metrics.completion_tokens->Inc(static_cast<double>(g.generated.size()));
  metrics.requests->WithLabels({g.endpoint, "ok"}).Inc();
  if (g.req.stream) {
    if (!g.writer) {
      g.writer = g.responder->StartStream(http::StreamWriter::Mode::kSse);
      if (!g.writer) return;
    }
    const std::vector<int32_t> tokens = g.render.return_token_ids ? g.final_tokens : std::vector<int32_t>{};
    g.writer->Send(openai::RenderChunk(g.render, g.final_delta, tokens, g.finish_reason, !g.sent_first_chunk));
    if (g.req.include_usage) g.writer->Send(openai::RenderUsageChunk(g.render, usage));
    g.writer->Send("[DONE]");
    g.writer->Close();
    return;
  }
  openai::CompletionResult result;
  result.text = g.text;
  result.finish_reason = g.finish_reason;
  if (g.render.return_token_ids) {
    result.token_ids = g.generated;
    result.prompt_token_ids = g.prompt;
  }
  g.responder->Respond(http::JsonResponse(200, openai::RenderCompletion(g.render, result, usage)));
}

void Router::Impl::Fail(Gen& g, const Status& status, int http_status, int retry_after) {
  const bool shed = http_status == 503 && status.code() == StatusCode::kResourceExhausted;
  metrics.requests->WithLabels({g.endpoint, shed ? "shed" : "error"}).Inc();
  KVMESH_LOG_WARN(kComponent, "request failed", {"id", g.render.id}, {"error", status.ToString()},
                  {"tokens_sent", static_cast<int64_t>(g.generated.size())});
  if (g.writer) {
    json err = {{"error", {{"message", status.message()}, {"type", "server_error"},
                           {"code", std::string(StatusCodeName(status.code()))}}}};
    g.writer->Send(Dump(err));
    g.writer->Send("[DONE]");
    g.writer->Close();
    return;
  }
  http::HttpResponse resp = http::ErrorResponseFor(status, retry_after);
  if (http_status != 0 && http_status != resp.status) {
    std::string code(StatusCodeName(status.code()));
    for (char& ch : code) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    resp = http::JsonErrorResponse(http_status, status.message(),
                                   http_status >= 500 ? "server_error" : "invalid_request_error", code);
    if (retry_after > 0) resp.headers.emplace_back("Retry-After", std::to_string(retry_after));
  }
  g.responder->Respond(std::move(resp));
}

void Router::Impl::PassThrough(Gen& g, const CallResult& r) {
  if (g.writer) {
    json j = json::parse(r.body, nullptr, false);
    std::string msg = "worker answered " + std::to_string(r.http_status);
    if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
        j["error"]["message"].is_string()) {
      msg = j["error"]["message"].get<std::string>();
    }
    Fail(g, UnavailableError(msg));
    return;
  }
  metrics.requests->WithLabels({g.endpoint, r.http_status < 500 ? "rejected" : "error"}).Inc();
  http::HttpResponse resp;
  resp.status = r.http_status;
  resp.content_type = "application/json";
  resp.body = r.body;
  if (!r.retry_after.empty()) resp.headers.emplace_back("Retry-After", r.retry_after);
  g.responder->Respond(std::move(resp));
}

void Router::Impl::Run(Gen& g) {
  const int retry_after = static_cast<int>(config.limits.retry_after_seconds);
  std::unordered_set<kv::WorkerId> bad_decode;
  std::unordered_set<kv::WorkerId> bad_prefill;
  uint32_t attempts = 0;
  uint32_t migrations = 0;
  bool prompt_counted = false;
  bool root_counted = false;
  bool remote_allowed = true;
  const char* local_reason = nullptr;  // why a remote plan was not followed
  for (;;) {
    if (g.ctx->cancelled.load()) break;
    if (g.ctx->timed_out.load()) {
      Fail(g, DeadlineExceededError("request exceeded limits.request_timeout"), 504);
      return;
    }
    // The prompt of this try: after tokens were generated (migration), they are part of it.
    std::vector<int32_t> prompt = g.prompt;
    prompt.insert(prompt.end(), g.generated.begin(), g.generated.end());
    const int32_t remaining = g.max_tokens - static_cast<int32_t>(g.generated.size());
    kv::BlockHashOptions ho;
    ho.block_size = config.block_size;
    ho.cache_salt = g.tenant->salt;
    std::vector<uint32_t> u32(prompt.begin(), prompt.end());
    auto hashes = kv::ComputeSequenceHashes(u32, ho);
    if (!hashes.ok()) {
      Fail(g, hashes.status());
      return;
    }
    const bool first_try = g.generated.empty();
    if (!root_counted) {  // once per client request, whatever retries and migrations follow
      root_counted = true;
      roots.Record(*hashes);
    }
    auto pick = Choose(g, prompt, *hashes, bad_decode, bad_prefill, first_try && remote_allowed);
    if (!pick.ok()) {
      if (pick.status().code() == StatusCode::kResourceExhausted) metrics.shed->Inc();
      Fail(g, pick.status(), 503, retry_after);
      if (migrations > 0) metrics.migrations->WithLabels({"failed"}).Inc();
      return;
    }
    WorkerState& dw = *pick->decode;
    const bool remote = pick->plan.remote && pick->prefill != nullptr;
    index->AddPredicted(dw.id, *hashes, config.routing.predicted_ttl);
    if (remote) index->AddPredicted(pick->prefill->id, *hashes, config.routing.predicted_ttl);
    if (!prompt_counted) {
      metrics.overlap_predicted_blocks->Inc(static_cast<double>(pick->prefill_overlap));
    }
    const uint64_t decode_blocks = (prompt.size() + static_cast<size_t>(std::max(remaining, 0)) + config.block_size - 1) /
                                   config.block_size;

    std::optional<int32_t> skip_first;
    json handle;
    if (remote) {
      WorkerState& pw = *pick->prefill;
      if (!registry->Admit(pw)) {
        bad_prefill.insert(pw.id);
        continue;
      }
      LoadGuard pguard(pick->prefill, pick->plan.uncached_tokens, 0, true);
      int32_t first = -1;
      CallResult pr = Prefill(g, pw, &first, &handle);
      pguard.Release();
      if (pr.outcome == Outcome::kCancelled) break;
      if (pr.outcome == Outcome::kHttpError && pr.http_status < 500) {
        registry->ReportSuccess(pw);  // the worker is fine; the request is not
        PassThrough(g, pr);
        return;
      }
      if (pr.outcome != Outcome::kDone) {
        registry->ReportFailure(pw);
        bad_prefill.insert(pw.id);
        KVMESH_LOG_WARN(kComponent, "remote prefill failed; trying elsewhere", {"worker", pw.spec.url},
                        {"error", pr.status.ToString()});
        if (++attempts >= config.limits.max_attempts) remote_allowed = false;
        local_reason = "prefill_failed";
        metrics.retries->Inc();
        continue;
      }
      registry->ReportSuccess(pw);
      metrics.prefills->WithLabels({"remote", pick->plan.reason}).Inc();
      if (!prompt_counted) {
        prompt_counted = true;
        metrics.AddTokens(g.prompt.size(), static_cast<uint64_t>(std::max(g.cached_tokens, 0)));
        metrics.overlap_actual_blocks->Inc(static_cast<double>(g.cached_tokens / static_cast<int32_t>(config.block_size)));
      }
      EmitToken(g, first, "");
      if (g.ctx->stopped()) break;
      if (g.finished) {
        ReleaseLease(g, handle);
        Complete(g);
        return;
      }
      skip_first = first;
    } else {
      const char* reason = local_reason ? local_reason : (g.generated.empty() ? pick->plan.reason : "migration");
      metrics.prefills->WithLabels({"local", reason}).Inc();
    }

    if (!registry->Admit(dw)) {
      bad_decode.insert(dw.id);
      if (remote) ReleaseLease(g, handle);
      if (++attempts >= config.limits.max_attempts + config.limits.max_migrations) {
        Fail(g, UnavailableError("no decode-capable worker admitted the request"), 503, retry_after);
        return;
      }
      continue;
    }
    LoadGuard dguard(pick->decode, remote ? 0 : pick->plan.uncached_tokens, decode_blocks, !remote);
    const json body = remote ? WorkerBody(g, g.prompt, g.max_tokens, true, &handle)
                             : WorkerBody(g, prompt, remaining, true, nullptr);
    const size_t before = g.generated.size();
    CallResult dr = Decode(g, dw, body, skip_first, dguard);
    dguard.Release();
    if (!prompt_counted && g.cached_known) {
      prompt_counted = true;
      metrics.AddTokens(g.prompt.size(), static_cast<uint64_t>(std::max(g.cached_tokens, 0)));
      metrics.overlap_actual_blocks->Inc(static_cast<double>(g.cached_tokens / static_cast<int32_t>(config.block_size)));
    }
    switch (dr.outcome) {
      case Outcome::kDone:
        registry->ReportSuccess(dw);
        if (!prompt_counted) {
          prompt_counted = true;
          metrics.AddTokens(g.prompt.size(), 0);
        }
        if (migrations > 0) metrics.migrations->WithLabels({"ok"}).Inc();
        Complete(g);
        return;
      case Outcome::kCancelled:
        break;
      case Outcome::kHttpError:
        if (dr.http_status >= 500) registry->ReportFailure(dw); else registry->ReportSuccess(dw);
        if (migrations > 0) metrics.migrations->WithLabels({"failed"}).Inc();
        PassThrough(g, dr);
        return;
      case Outcome::kRetryable:
      case Outcome::kBroken:
        registry->ReportFailure(dw);
        bad_decode.insert(dw.id);
        KVMESH_LOG_WARN(kComponent, "decode worker failed", {"worker", dw.spec.url}, {"error", dr.status.ToString()},
                        {"tokens_sent", static_cast<int64_t>(g.generated.size())},
                        {"new_tokens", static_cast<int64_t>(g.generated.size() - before)});
        if (g.generated.empty()) {
          // Nothing reached the client yet: a plain retry.
          if (++attempts >= config.limits.max_attempts) {
            Fail(g, UnavailableError("no worker could serve the request after " + std::to_string(attempts) +
                                     " attempts; last error: " + dr.status.message()), 503, retry_after);
            return;
          }
          metrics.retries->Inc();
          continue;
        }
        // The client has tokens: migrate (prompt + tokens so far, local prefill elsewhere).
        if (migrations >= config.limits.max_migrations) {
          metrics.migrations->WithLabels({"failed"}).Inc();
          Fail(g, UnavailableError("decode worker lost mid-stream and limits.max_migrations (" +
                                   std::to_string(config.limits.max_migrations) + ") reached: " + dr.status.message()));
          return;
        }
        ++migrations;
        local_reason = nullptr;
        KVMESH_LOG_INFO(kComponent, "migrating request", {"id", g.render.id}, {"from", dw.spec.url},
                        {"tokens_so_far", static_cast<int64_t>(g.generated.size())});
        continue;
    }
    break;  // cancelled
  }
  if (g.ctx->timed_out.load() && !g.ctx->cancelled.load()) {
    Fail(g, DeadlineExceededError("request exceeded limits.request_timeout"), 504);
    return;
  }
  // The client went away (or Shutdown aborted the request): nothing to send.
  metrics.requests->WithLabels({g.endpoint, "cancelled"}).Inc();
  if (g.writer) g.writer->Close();
}

// ---- lifecycle -----------------------------------------------------------------------------------

void Router::Impl::Shutdown() {
  if (shut_down.exchange(true)) return;
  draining = true;
  if (!started.load()) {
    if (registry) registry->Stop();
    if (indexer) indexer->Stop();
    return;
  }
  int64_t left = 0;
  {
    std::lock_guard<std::mutex> lock(threads_mu);
    left = threads;
  }
  KVMESH_LOG_INFO(kComponent, "shutting down: draining", {"in_flight", left},
                  {"drain_timeout_ms", static_cast<int64_t>(config.drain_timeout.count())});
  http->StopAccepting();
  {
    std::unique_lock<std::mutex> lock(threads_mu);
    threads_cv.wait_for(lock, config.drain_timeout, [this] { return threads == 0; });
  }
  // What is left is aborted: its upstream calls close, which cancels the work on the agents.
  for (;;) {
    std::vector<std::shared_ptr<RequestCtx>> all;
    {
      std::lock_guard<std::mutex> lock(active_mu);
      for (auto& [raw, weak] : active) {
        if (auto c = weak.lock()) all.push_back(std::move(c));
      }
    }
    for (auto& c : all) c->Cancel();
    std::unique_lock<std::mutex> lock(threads_mu);
    if (threads_cv.wait_for(lock, std::chrono::seconds(1), [this] { return threads == 0; })) break;
    KVMESH_LOG_WARN(kComponent, "waiting for request threads", {"left", threads});
  }
  http->Stop(std::chrono::milliseconds(500));
  {
    std::lock_guard<std::mutex> lock(watchdog_mu);
    watchdog_stop = true;
  }
  watchdog_cv.notify_all();
  if (watchdog.joinable()) watchdog.join();
  registry->Stop();
  indexer->Stop();
  KVMESH_LOG_INFO(kComponent, "router stopped");
}

// ---- Router --------------------------------------------------------------------------------------

Router::Router(const RouterConfig& config) : impl_(std::make_unique<Impl>(config)) {}

Router::~Router() { Shutdown(); }

StatusOr<std::unique_ptr<Router>> Router::Create(const RouterConfig& config) {
  KVMESH_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<Router> r(new Router(config));
  KVMESH_RETURN_IF_ERROR(r->impl_->Init());
  return r;
}

Status Router::Start() {
  Impl& impl = *impl_;
  if (impl.started.exchange(true)) return FailedPreconditionError("router already started");
  KVMESH_RETURN_IF_ERROR(impl.registry->Start());
  impl.watchdog = std::thread([&impl] { impl.WatchdogLoop(); });
  KVMESH_RETURN_IF_ERROR(impl.http->Start());
  KVMESH_LOG_INFO(kComponent, "router ready", {"url", base_url()},
                  {"workers", static_cast<int64_t>(impl.registry->Table()->size())});
  return impl.WriteReadyFile();
}

void Router::Shutdown() { impl_->Shutdown(); }

uint16_t Router::port() const { return impl_->http ? impl_->http->port() : 0; }

std::string Router::base_url() const { return "http://" + impl_->config.host + ":" + std::to_string(port()); }

}  // namespace kvmesh::router
