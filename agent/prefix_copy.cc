// Prefix copies between agents (docs/kv-transfer.md, "Prefix copies"): POST /v1/kv/export pins
// the cached head of a block-hash chain under a lease, POST /v1/kv/import pulls such an export
// into this agent's prefix cache over the KV transport. The placement hub uses the pair to act on
// its `replicate` decisions (docs/placement.md).
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/agent.h"
#include "agent/transfer/transfer_handle.h"
#include "common/log.h"

namespace kvmesh::agent {

namespace {

constexpr char kComponent[] = "prefix_copy";

// body["hashes"]: a non-empty array of unsigned integers, at most `max` of them.
StatusOr<std::vector<uint64_t>> ParseChain(const nlohmann::json& body, size_t max) {
  auto it = body.find("hashes");
  if (it == body.end() || !it->is_array() || it->empty()) {
    return InvalidArgumentError("hashes must be a non-empty array of block hashes");
  }
  if (it->size() > max) {
    return InvalidArgumentError("hashes lists " + std::to_string(it->size()) + " blocks; at most " +
                                std::to_string(max) + " fit in this agent's KV cache");
  }
  std::vector<uint64_t> chain;
  chain.reserve(it->size());
  for (const auto& v : *it) {
    if (!v.is_number_unsigned()) return InvalidArgumentError("hashes must hold unsigned 64-bit integers");
    chain.push_back(v.get<uint64_t>());
  }
  return chain;
}

StatusOr<nlohmann::json> ParseObject(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("body must be a JSON object");
  return j;
}

}  // namespace

transfer::TransferHandle Agent::LeasePin(const engine::PinnedKv& pin, int32_t first_token) {
  {
    std::lock_guard<std::mutex> lock(pins_mu_);
    pins_[pin.pin_id] = pin;
  }
  const Lease lease = leases_->Create(pin.pin_id, config_.transfer.lease_ttl);
  metrics_.leases_created->Inc();
  transfer::TransferHandle h;
  h.peer_url = base_url();
  h.agent_id = agent_id_;
  h.lease_id = lease.lease_id;
  h.lease_expiry_unix_ms = lease.expiry_unix_ms;
  h.num_tokens = pin.num_tokens;
  h.first_token = first_token;
  h.block_size = static_cast<int32_t>(config_.engine.block_size);
  h.block_ids.assign(pin.blocks.begin(), pin.blocks.end());
  return h;
}

size_t Agent::MaxChainBlocks() const {
  return std::min<size_t>(transfer::kMaxHandleBlocks, static_cast<size_t>(engine_->cache_layout().num_blocks));
}

http::HttpResponse Agent::HandleKvExport(const http::HttpRequest& req) {
  auto fail = [this](const Status& st) {
    metrics_.prefix_copies->WithLabels({"export", "error"}).Inc();
    return http::ErrorResponseFor(st);
  };
  auto body = ParseObject(req.body);
  if (!body.ok()) return fail(body.status());
  auto chain = ParseChain(*body, MaxChainBlocks());
  if (!chain.ok()) return fail(chain.status());

  auto promise = std::make_shared<std::promise<StatusOr<engine::PinnedKv>>>();
  auto fut = promise->get_future();
  auto hashes = std::make_shared<std::vector<uint64_t>>(std::move(*chain));
  const bool queued = engine_->RunOnEngineThread([promise, hashes](engine::EngineCore& core) {
    promise->set_value(core.PinCachedPrefix(*hashes));
  });
  if (!queued || fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // A pin taken after the wait gave up would never be released: only an engine that stopped
    // (queued false) or is stuck gets here, and a stuck engine frees nothing anyway.
    return fail(UnavailableError("engine did not answer the export request"));
  }
  StatusOr<engine::PinnedKv> pinned = fut.get();
  if (!pinned.ok()) return fail(pinned.status());
  const engine::PinnedKv& pin = *pinned;
  // No request behind a prefix export: first_token 0, which importers ignore.
  const transfer::TransferHandle h = LeasePin(pin, /*first_token=*/0);
  metrics_.prefix_copies->WithLabels({"export", "ok"}).Inc();
  nlohmann::json j = {{"kv_transfer_params", transfer::TransferHandleToJson(h)},
                      {"hashes", pin.hashes},
                      {"num_blocks", pin.blocks.size()},
                      {"block_bytes", engine_->cache_layout().block_bytes()}};
  KVMESH_LOG_INFO(kComponent, "prefix exported", {"blocks", std::to_string(pin.blocks.size())},
                  {"lease", std::to_string(h.lease_id)});
  return http::JsonResponse(200, j.dump());
}

void Agent::HandleKvImport(const http::HttpRequest& req, std::shared_ptr<http::Responder> responder) {
  auto fail = [this, &responder](const Status& st) {
    metrics_.prefix_copies->WithLabels({"import", "error"}).Inc();
    responder->Respond(http::ErrorResponseFor(st));
  };
  if (draining_.load()) return fail(UnavailableError("agent is draining"));
  auto body = ParseObject(req.body);
  if (!body.ok()) return fail(body.status());
  auto chain = ParseChain(*body, MaxChainBlocks());
  if (!chain.ok()) return fail(chain.status());
  auto params = body->find("kv_transfer_params");
  if (params == body->end() || !params->is_object()) {
    return fail(InvalidArgumentError("kv_transfer_params must be the object an export returned"));
  }
  auto handle = transfer::TransferHandleFromJson(*params);
  if (!handle.ok()) return fail(handle.status());
  if (handle->block_ids.size() != chain->size() ||
      static_cast<int64_t>(handle->num_tokens) != static_cast<int64_t>(chain->size()) * handle->block_size) {
    return fail(InvalidArgumentError("kv_transfer_params covers " + std::to_string(handle->block_ids.size()) +
                                     " blocks (" + std::to_string(handle->num_tokens) + " tokens) but hashes lists " +
                                     std::to_string(chain->size()) + " full blocks"));
  }
  if (handle->agent_id == agent_id_) return fail(InvalidArgumentError("the export is this agent's own"));

  const std::string id = "prefix-import-" + std::to_string(next_request_.fetch_add(1));
  transfers_->ExpectHandle(id, *handle, *chain);
  const auto start = std::chrono::steady_clock::now();
  const uint64_t block_bytes = static_cast<uint64_t>(engine_->cache_layout().block_bytes());
  auto hashes = std::make_shared<std::vector<uint64_t>>(std::move(*chain));
  AgentMetrics* metrics = &metrics_;
  TransferService* transfers = transfers_.get();
  const bool queued = engine_->RunOnEngineThread([=](engine::EngineCore& core) {
    core.ImportPrefix(id, std::move(*hashes), [=](const Status& st, int32_t imported, int32_t cached) {
      // An import refused before its pull started leaves the handle unused; the exporter's
      // lease then ends at its TTL (or when the caller releases it, as the hub does).
      transfers->Forget(id);
      metrics->prefix_copies->WithLabels({"import", st.ok() ? "ok" : "error"}).Inc();
      if (!st.ok()) {
        KVMESH_LOG_WARN(kComponent, "prefix import failed", {"import", id}, {"error", st.ToString()});
        responder->Respond(http::ErrorResponseFor(st));
        return;
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      KVMESH_LOG_INFO(kComponent, "prefix imported", {"import", id}, {"imported", std::to_string(imported)},
                      {"already_cached", std::to_string(cached)});
      nlohmann::json j = {{"imported_blocks", imported},
                          {"already_cached_blocks", cached},
                          {"bytes", static_cast<uint64_t>(imported) * block_bytes},
                          {"seconds", secs}};
      responder->Respond(http::JsonResponse(200, j.dump()));
    });
  });
  if (!queued) {
    transfers_->Forget(id);
    fail(UnavailableError("engine is stopping"));
  }
}

}  // namespace kvmesh::agent
