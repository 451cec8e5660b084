#include "agent/agent.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "agent/engine/kernel_ops.h"
#include "agent/engine/model_preset.h"
#include "agent/engine/model_weights.h"
#include "agent/transfer/transfer_handle.h"
#include "agent/transfer/ucx_transport.h"
#include "common/file_util.h"
#include "common/log.h"

namespace kvmesh::agent {

namespace {

constexpr char kComponent[] = "agent";
// Prefix roots listed in GET /v1/kv/inventory (the same default as the router's
// global.summary_max_roots).
constexpr size_t kInventoryMaxRoots = 32;

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd());
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rng() & 0xff);
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

std::string ServedName(const AgentConfig& c) {
  if (!c.served_model_name.empty()) return c.served_model_name;
  constexpr std::string_view kBuiltin = "builtin:";
  if (c.model.rfind(kBuiltin, 0) == 0) return c.model.substr(kBuiltin.size());
  std::filesystem::path p(c.model);
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  return name.empty() ? c.model : name;
}

}  // namespace

Agent::Agent(const AgentConfig& config) : config_(config), role_(config.parsed_role()) {}

Agent::~Agent() { Shutdown(); }

std::string Agent::base_url() const {
  return "http://" + config_.host + ":" + std::to_string(port());
}

StatusOr<std::unique_ptr<Agent>> Agent::Create(const AgentConfig& config) {
  KVMESH_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<Agent> agent(new Agent(config));
  KVMESH_RETURN_IF_ERROR(agent->Init());
  return agent;
}

Status Agent::Init() {
  agent_id_ = config_.agent_id.empty() ? RandomHex(8) : config_.agent_id;
  served_model_ = ServedName(config_);
  created_unix_ = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();

  KVMESH_ASSIGN_OR_RETURN(metrics_, AgentMetrics::Register(DefaultMetricsRegistry()));

  // UCX first, while this is the only thread: for shared memory CreateUcxTransport sets
  // UCX_POSIX_ERROR_HANDLING / UCX_SYSV_ERROR_HANDLING (setenv is not thread-safe).
  transfer::UcxTransportOptions uo;
  uo.tls = config_.transfer.ucx_tls;
  uo.net_devices = config_.transfer.ucx_net_devices;
  KVMESH_ASSIGN_OR_RETURN(auto transport, transfer::CreateUcxTransport(uo));

  // Model, tokenizer, chat template.
  KVMESH_ASSIGN_OR_RETURN(std::string dir, engine::ResolveModelSource(
      config_.model, config_.cache_dir.empty() ? engine::DefaultModelCacheDir() : config_.cache_dir));
  KVMESH_ASSIGN_OR_RETURN(auto weights, engine::ModelWeights::Load(dir));
  KVMESH_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json"));
  tokenizer_ = std::shared_ptr<const tokenizer::Tokenizer>(std::move(tok));
  {
    std::ifstream in(dir + "/tokenizer_config.json");
    std::stringstream ss;
    if (in) ss << in.rdbuf();
    KVMESH_ASSIGN_OR_RETURN(auto tmpl, tokenizer::ChatTemplate::FromTokenizerConfig(in ? ss.str() : "{}", "llama3"));
    chat_template_.emplace(std::move(tmpl));
  }
  KVMESH_LOG_INFO(kComponent, "model loaded", {"model", config_.model}, {"dir", dir}, {"served_as", served_model_},
                  {"backend", "cpu"});
  KVMESH_LOG_INFO(kComponent, "compute backend: CPU reference kernels (the GPU engine path is not built yet)",
                  {"CUDA_VISIBLE_DEVICES", std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : ""});

  // Events first: the engine emits into the recorder from its first commit.
  KvEventServiceOptions eo;
  eo.endpoint = config_.events.endpoint;
  eo.replay_endpoint = config_.events.replay_endpoint;
  eo.topic = config_.events.topic;
  eo.flush_interval = config_.events.flush_interval;
  eo.replay_capacity = config_.events.replay_capacity;
  KVMESH_ASSIGN_OR_RETURN(events_, KvEventService::Start(eo));

  // The engine, with the transfer service as its importer.
  TransferServiceOptions to;
  to.timeout = config_.transfer.timeout;
  to.debug_pull_delay = config_.transfer.debug_pull_delay;
  transfers_ = std::make_unique<TransferService>(std::move(transport), to, &metrics_);

  engine::EngineOptions opts = config_.ToEngineOptions();
  // The transport allocates the KV cache: on shared memory a peer then maps it and copies
  // directly instead of one cross-memory-attach syscall per read (docs/kv-transfer.md).
  TransferService* ts = transfers_.get();
  opts.kv_cache_allocator = [ts](const kernels::KvCacheLayout& l) -> StatusOr<float*> {
    return ts->AllocateRegion(static_cast<uint64_t>(l.block_bytes()), static_cast<uint32_t>(l.num_blocks));
  };
  std::shared_ptr<const engine::ModelWeights> shared_weights(std::move(weights));
  KVMESH_ASSIGN_OR_RETURN(auto core, engine::EngineCore::Create(opts, shared_weights, engine::RefKernelOps(),
                                                               tokenizer_, events_->sink(), transfers_.get()));
  engine_ = std::make_unique<engine::Engine>(std::move(core));
  const kernels::KvCacheLayout& layout = engine_->cache_layout();
  transfer::KvLayoutInfo li;
  li.block_size = layout.block_size;
  li.num_layers = layout.num_layers;
  li.num_kv_heads = layout.num_kv_heads;
  li.head_dim = layout.head_dim;
  li.dtype = "float32";
  li.block_bytes = static_cast<uint64_t>(layout.block_bytes());
  transfers_->SetLocalLayout(li);
  KVMESH_RETURN_IF_ERROR(transfers_->Start(engine_.get(), engine_->kv_cache_data(),
                                           static_cast<uint64_t>(layout.block_bytes()),
                                           static_cast<uint32_t>(layout.num_blocks)));

  leases_ = std::make_unique<LeaseManager>([this](uint64_t pin) {
    {
      std::lock_guard<std::mutex> lock(pins_mu_);
      pins_.erase(pin);
    }
    engine_->ReleasePinned(pin);
  });

  http::HttpServerOptions ho;
  ho.host = config_.host;
  ho.port = static_cast<uint16_t>(config_.port);
  ho.num_threads = static_cast<int>(config_.http_threads);
  ho.max_request_body_bytes = config_.limits.max_body_bytes;
  ho.server_name = "kvmesh-agent";
  KVMESH_RETURN_IF_ERROR(ho.Validate());
  http_ = std::make_unique<http::HttpServer>(ho);
  RegisterRoutes();
  return Status::Ok();
}

void Agent::RegisterRoutes() {
  http_->Route("GET", "/health", [](const http::HttpRequest&) {
    return http::JsonResponse(200, R"({"status":"ok"})");
  });
  http_->Route("GET", "/ready", [this](const http::HttpRequest&) {
    if (draining_.load()) return http::JsonErrorResponse(503, "agent is draining", "server_error", "draining");
    if (!ready_.load()) return http::JsonErrorResponse(503, "agent is warming up", "server_error", "not_ready");
    return http::JsonResponse(200, R"({"status":"ready"})");
  });
  http_->Route("GET", "/metrics", [this](const http::HttpRequest& r) { return HandleMetrics(r); });
  http_->Route("GET", "/v1/models", [this](const http::HttpRequest& r) { return HandleModels(r); });
  http_->Route("GET", "/v1/kv/transfer_info", [this](const http::HttpRequest& r) { return HandleTransferInfo(r); });
  http_->Route("POST", "/v1/kv/leases/release", [this](const http::HttpRequest& r) { return HandleLeaseRelease(r); });
  http_->Route("POST", "/v1/kv/leases/claim", [this](const http::HttpRequest& r) { return HandleLeaseClaim(r); });
  http_->Route("GET", "/v1/kv/inventory", [this](const http::HttpRequest& r) { return HandleInventory(r); });
  http_->Route("POST", "/v1/kv/export", [this](const http::HttpRequest& r) { return HandleKvExport(r); });
  http_->RouteAsync("POST", "/v1/kv/import",
                    [this](const http::HttpRequest& r, std::shared_ptr<http::Responder> resp) {
                      HandleKvImport(r, std::move(resp));
                    });
  http_->RouteAsync("POST", "/v1/completions",
                    [this](const http::HttpRequest& r, std::shared_ptr<http::Responder> resp) {
                      HandleCompletion(openai::ApiKind::kCompletion, r, std::move(resp));
                    });
  http_->RouteAsync("POST", "/v1/chat/completions",
                    [this](const http::HttpRequest& r, std::shared_ptr<http::Responder> resp) {
                      HandleCompletion(openai::ApiKind::kChat, r, std::move(resp));
                    });
}

Status Agent::WarmUp() {
  engine::GenerateRequest r;
  r.id = "warmup-" + agent_id_;
  r.prompt = tokenizer_->Encode("warm up", /*add_special_tokens=*/true);
  r.max_tokens = 2;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  auto done = std::make_shared<std::promise<Status>>();
  auto fut = done->get_future();
  KVMESH_RETURN_IF_ERROR(engine_->Submit(r, [done](const engine::RequestOutput& out) {
    if (out.finished) done->set_value(out.error);
  }));
  if (fut.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    return DeadlineExceededError("warm-up request did not finish within 60 s");
  }
  return fut.get();
}

Status Agent::Start() {
  KVMESH_RETURN_IF_ERROR(http_->Start());
  KVMESH_RETURN_IF_ERROR(WarmUp());
  lease_thread_ = std::thread([this] { LeaseLoop(); });
  ready_ = true;
  KVMESH_LOG_INFO(kComponent, "agent ready", {"role", AgentRoleName(role_)}, {"url", base_url()},
                  {"agent_id", agent_id_}, {"events", events_->endpoint()},
                  {"replay", events_->replay_endpoint()});
  return WriteReadyFile();
}

Status Agent::WriteReadyFile() const {
  if (config_.ready_file.empty()) return Status::Ok();
  nlohmann::json j = {
      {"http", base_url()},
      {"port", port()},
      {"agent_id", agent_id_},
      {"role", AgentRoleName(role_)},
      {"events_endpoint", events_->endpoint()},
      {"replay_endpoint", events_->replay_endpoint()},
      {"topic", events_->topic()},
      {"model", served_model_},
      {"pid", static_cast<int64_t>(::getpid())},
  };
  return WriteFileAtomic(config_.ready_file, j.dump() + "\n");
}

void Agent::LeaseLoop() {
  std::unique_lock<std::mutex> lock(lease_mu_);
  while (!lease_stop_) {
    const auto next = leases_->NextExpiry();
    const auto cap = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    lease_cv_.wait_until(lock, std::min(next, cap));
    if (lease_stop_) break;
    lock.unlock();
    const size_t n = leases_->ExpireDue();
    if (n > 0) {
      metrics_.lease_expiries->Inc(static_cast<double>(n));
      KVMESH_LOG_WARN(kComponent, "KV leases expired unclaimed; their blocks were freed",
                      {"count", static_cast<int64_t>(n)});
    }
    metrics_.leases_active->Set(static_cast<double>(leases_->Stats().active));
    lock.lock();
  }
}

void Agent::Shutdown() {
  if (shut_down_.exchange(true)) return;
  draining_ = true;
  ready_ = false;
  KVMESH_LOG_INFO(kComponent, "shutting down: draining", {"in_flight", in_flight_.load()},
                  {"drain_timeout_ms", static_cast<int64_t>(config_.drain_timeout.count())});
  if (http_) {
    http_->StopAccepting();
    const auto deadline = std::chrono::steady_clock::now() + config_.drain_timeout;
    while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    http_->Stop(std::chrono::milliseconds(500));  // closes what is left: their requests are cancelled
  }
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    lease_stop_ = true;
  }
  lease_cv_.notify_all();
  if (lease_thread_.joinable()) lease_thread_.join();
  if (leases_) {
    const size_t n = leases_->ReleaseAll();
    if (n > 0) KVMESH_LOG_INFO(kComponent, "released KV leases at shutdown", {"count", static_cast<int64_t>(n)});
  }
  if (transfers_) transfers_->Stop();  // no more writes into the KV cache
  if (engine_) engine_->Stop();
  if (events_) events_->Stop();
  KVMESH_LOG_INFO(kComponent, "agent stopped");
}

http::HttpResponse Agent::HandleMetrics(const http::HttpRequest&) {
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    metrics_.Refresh(engine_->Stats());
    metrics_.requests_in_flight->Set(static_cast<double>(in_flight_.load()));
    const KvEventServiceStats es = events_->Stats();
    metrics_.RefreshEvents(es.events_published, es.batches_published, es.replay_requests, es.publish_errors);
    const LeaseStats ls = leases_->Stats();
    metrics_.leases_active->Set(static_cast<double>(ls.active));
  }
  http::HttpResponse r;
  r.content_type = kPrometheusTextContentType;
  r.body = DefaultMetricsRegistry().Render();
  return r;
}

http::HttpResponse Agent::HandleModels(const http::HttpRequest&) {
  return http::JsonResponse(200, openai::RenderModelList({served_model_}, created_unix_));
}

http::HttpResponse Agent::HandleTransferInfo(const http::HttpRequest&) {
  auto info = transfers_->LocalInfo(agent_id_);
  if (!info.ok()) return http::ErrorResponseFor(info.status());
  return http::JsonResponse(200, transfer::TransferInfoToJson(*info).dump());
}

StatusOr<Agent::LeaseRequest> Agent::ParseLeaseRequest(const http::HttpRequest& req) const {
  nlohmann::json j = nlohmann::json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("body must be a JSON object");
  auto it = j.find("lease_id");
  if (it == j.end() || !it->is_number_unsigned()) return InvalidArgumentError("lease_id must be an unsigned integer");
  if (auto a = j.find("agent_id"); a != j.end() && (!a->is_string() || a->get<std::string>() != agent_id_)) {
    return NotFoundError("lease belongs to another agent instance (this one is '" + agent_id_ + "')");
  }
  return LeaseRequest{it->get<uint64_t>(), std::move(j)};
}

http::HttpResponse Agent::HandleLeaseRelease(const http::HttpRequest& req) {
  auto lr = ParseLeaseRequest(req);
  if (!lr.ok()) return http::ErrorResponseFor(lr.status());
  const nlohmann::json& body = lr->body;
  Status st = leases_->Release(lr->lease_id);
  if (!st.ok()) return http::ErrorResponseFor(st);
  metrics_.leases_released->Inc();
  // What the decode agent says it read from us (one-sided reads are invisible here); metrics only.
  if (auto b = body.find("bytes_read"); b != body.end() && b->is_number_unsigned()) {
    std::string transport = "ucx";
    if (auto t = body.find("transport"); t != body.end() && t->is_string() && t->get<std::string>() == "loopback") {
      transport = "loopback";
    }
    metrics_.transfer_bytes->WithLabels({transport, "out"}).Inc(static_cast<double>(b->get<uint64_t>()));
  }
  return http::JsonResponse(200, R"({"released":true})");
}

http::HttpResponse Agent::HandleLeaseClaim(const http::HttpRequest& req) {
  auto lr = ParseLeaseRequest(req);
  if (!lr.ok()) return http::ErrorResponseFor(lr.status());
  const nlohmann::json& body = lr->body;
  const uint64_t lease_id = lr->lease_id;
  int64_t hold_ms = config_.transfer.timeout.count() + 1000;
  if (auto h = body.find("hold_ms"); h != body.end()) {
    if (!h->is_number_unsigned() || h->get<uint64_t>() > 600000) {
      return http::ErrorResponseFor(InvalidArgumentError("hold_ms must be an integer in [0, 600000]"));
    }
    hold_ms = h->get<int64_t>();
  }
  auto lease = leases_->Extend(lease_id, std::chrono::milliseconds(hold_ms));
  if (!lease.ok()) return http::ErrorResponseFor(lease.status());
  std::lock_guard<std::mutex> lock(pins_mu_);
  auto it = pins_.find(lease->pin_id);
  if (it == pins_.end()) return http::ErrorResponseFor(NotFoundError("lease has no blocks"));
  nlohmann::json j = {{"lease_id", lease_id},
                      {"block_ids", it->second.blocks},
                      {"num_tokens", it->second.num_tokens},
                      {"hashes", it->second.hashes},
                      {"block_size", config_.engine.block_size},
                      {"lease_expiry_unix_ms", lease->expiry_unix_ms}};
  return http::JsonResponse(200, j.dump());
}

http::HttpResponse Agent::HandleInventory(const http::HttpRequest&) {
  struct Snapshot {
    std::vector<uint64_t> hashes;
    uint32_t total = 0;
    uint32_t used = 0;
    int64_t seq = -1;
  };
  auto promise = std::make_shared<std::promise<Snapshot>>();
  auto fut = promise->get_future();
  KvEventService* events = events_.get();
  const bool queued = engine_->RunOnEngineThread([promise, events](engine::EngineCore& core) {
    Snapshot s;
    const kv::BlockPool& pool = core.block_pool();
    // Taken on the engine thread, so no event is emitted meanwhile: every event with a seq below
    // next_seq is reflected, and pending (unflushed) ones are too.
    s.seq = static_cast<int64_t>(events->next_seq()) - 1;
    s.total = pool.num_blocks_total();
    s.used = pool.num_blocks_used();
    for (uint32_t b = 1; b <= pool.num_blocks_total(); ++b) {
      if (auto h = pool.HashOf(b)) s.hashes.push_back(*h);
    }
    promise->set_value(std::move(s));
  });
  if (!queued || fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    return http::ErrorResponseFor(UnavailableError("engine did not answer the inventory request"), 1);
  }
  Snapshot s = fut.get();
  std::sort(s.hashes.begin(), s.hashes.end());
  nlohmann::json j = {
      {"agent_id", agent_id_},
      {"block_size", config_.engine.block_size},
      {"seq", s.seq},
      {"events_endpoint", events_->endpoint()},
      {"replay_endpoint", events_->replay_endpoint()},
      {"topic", config_.events.topic},
      {"tiers", nlohmann::json::array({{{"medium", "GPU"},
                                        {"num_blocks_total", s.total},
                                        {"num_blocks_used", s.used},
                                        {"hashes", s.hashes}}})},
  };
  // Heat for the placement hub (docs/placement.md, "Heat from the members' agents"): the hottest roots
  // of the requests prefilled here and the counters of those requests. Counters only grow.
  nlohmann::json roots = nlohmann::json::array();
  for (const kv::PrefixRoots::Root& r : roots_.Top(kInventoryMaxRoots)) {
    roots.push_back({{"root", r.root}, {"requests", r.requests}, {"blocks", r.common}});
  }
  j["roots"] = std::move(roots);
  j["demand"] = {{"requests", demand_requests_.load(std::memory_order_relaxed)},
                 {"prompt_tokens", demand_prompt_tokens_.load(std::memory_order_relaxed)},
                 {"cached_tokens", demand_cached_tokens_.load(std::memory_order_relaxed)},
                 {"completion_tokens", demand_completion_tokens_.load(std::memory_order_relaxed)}};
  return http::JsonResponse(200, j.dump());
}

}  // namespace kvmesh::agent
