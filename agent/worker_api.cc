// The OpenAI-compatible worker API of the agent: POST /v1/completions and /v1/chat/completions,
// streaming and not, including the two halves of remote prefill (kv_transfer_params).
#include <chrono>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/agent.h"
#include "agent/transfer/transfer_handle.h"
#include "common/log.h"
#include "kv/block_hash.h"

namespace kvmesh::agent {

namespace {

constexpr char kComponent[] = "worker_api";
using Clock = std::chrono::steady_clock;

const char* EndpointLabel(openai::ApiKind kind) {
  return kind == openai::ApiKind::kChat ? "chat_completions" : "completions";
}

std::string FinishReasonText(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kStop: return "stop";
    case engine::FinishReason::kLength: return "length";
    case engine::FinishReason::kPrefilled: return "length";  // max_tokens = 1 on the prefill side
    default: return "";
  }
}

bool ParamIsTrue(const nlohmann::json& params, const char* key) {
  auto it = params.find(key);
  return it != params.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

struct Agent::RequestState {
  openai::ApiKind kind = openai::ApiKind::kCompletion;
  std::string engine_id;
  openai::RenderOptions render;
  bool stream = false;
  bool include_usage = false;
  bool prefill_only = false;
  bool imported_kv = false;  // the decode half of a remote prefill
  std::shared_ptr<http::Responder> responder;
  std::shared_ptr<http::StreamWriter> writer;  // stream only
  std::vector<int32_t> prompt;                 // for return_token_ids
  // Only the engine thread touches the fields below (OnOutput).
  std::string text;
  std::vector<int32_t> tokens;
  bool sent_first_chunk = false;
  bool done = false;
  Clock::time_point arrival;
  Clock::time_point last_token;
};

void Agent::Reject(const std::shared_ptr<http::Responder>& responder, const std::string& endpoint,
                   const Status& status, int retry_after) {
  metrics_.requests->WithLabels({endpoint, "rejected"}).Inc();
  responder->Respond(http::ErrorResponseFor(status, retry_after));
}

StatusOr<std::vector<int32_t>> Agent::PromptTokens(const openai::CompletionRequest& r) const {
  if (r.kind == openai::ApiKind::kCompletion) {
    if (r.prompt_tokens) return *r.prompt_tokens;
    return tokenizer_->Encode(*r.prompt_text, r.add_special_tokens.value_or(true));
  }
  std::vector<tokenizer::ChatMessage> msgs;
  msgs.reserve(r.messages.size());
  for (const openai::ChatMessage& m : r.messages) msgs.push_back({m.role, m.content});
  KVMESH_ASSIGN_OR_RETURN(std::string text, chat_template_->Apply(msgs, /*add_generation_prompt=*/true));
  return tokenizer_->Encode(text, r.add_special_tokens.value_or(false));
}

void Agent::HandleCompletion(openai::ApiKind kind, const http::HttpRequest& req,
                             std::shared_ptr<http::Responder> responder) {
  const std::string endpoint = EndpointLabel(kind);
  if (draining_.load()) {
    Reject(responder, endpoint, UnavailableError("agent is draining"), static_cast<int>(config_.limits.retry_after_seconds));
    return;
  }
  auto parsed = openai::ParseCompletionRequest(kind, req.body);
  if (!parsed.ok()) {
    Reject(responder, endpoint, parsed.status());
    return;
  }
  openai::CompletionRequest& r = *parsed;
  if (r.model != served_model_) {
    Reject(responder, endpoint, NotFoundError("model '" + r.model + "' does not exist; this agent serves '" +
                                              served_model_ + "'"));
    return;
  }

  // Which half of remote prefill, if any.
  bool prefill_only = false;
  std::optional<transfer::TransferHandle> handle;
  if (r.kv_transfer_params) {
    const nlohmann::json& p = *r.kv_transfer_params;
    if (ParamIsTrue(p, "do_remote_decode")) {
      prefill_only = true;
    } else if (ParamIsTrue(p, "do_remote_prefill")) {
      auto h = transfer::TransferHandleFromJson(p);
      if (!h.ok()) {
        Reject(responder, endpoint, InvalidArgumentError("kv_transfer_params: " + h.status().message()));
        return;
      }
      handle = std::move(*h);
    }
  }
  if (prefill_only && role_ == AgentRole::kDecode) {
    Reject(responder, endpoint, InvalidArgumentError("this agent has role decode: it does not serve prefill-only requests"));
    return;
  }
  if (handle && role_ == AgentRole::kPrefill) {
    Reject(responder, endpoint, InvalidArgumentError("this agent has role prefill: it does not decode remote-prefilled requests"));
    return;
  }
  if (!prefill_only && role_ == AgentRole::kPrefill) {
    Reject(responder, endpoint, InvalidArgumentError(
        "this agent has role prefill: send kv_transfer_params {\"do_remote_decode\": true}"));
    return;
  }
  if (prefill_only && r.stream) {
    Reject(responder, endpoint, InvalidArgumentError("prefill-only requests (do_remote_decode) cannot stream"));
    return;
  }

  auto prompt = PromptTokens(r);
  if (!prompt.ok()) {
    Reject(responder, endpoint, InvalidArgumentError(prompt.status().message()));
    return;
  }
  const int32_t max_len = engine_->max_model_len();
  const auto prompt_len = static_cast<int32_t>(prompt->size());
  if (prompt_len == 0) {
    Reject(responder, endpoint, InvalidArgumentError("prompt is empty after tokenization"));
    return;
  }
  if (prompt_len >= max_len) {
    Reject(responder, endpoint, InvalidArgumentError("prompt has " + std::to_string(prompt_len) +
                                                     " tokens; this model's context is " + std::to_string(max_len) +
                                                     " tokens (prompt + completion)"));
    return;
  }
  if (handle && handle->num_tokens != prompt_len) {
    Reject(responder, endpoint, InvalidArgumentError("kv_transfer_params covers " + std::to_string(handle->num_tokens) +
                                                     " tokens but the prompt has " + std::to_string(prompt_len)));
    return;
  }

  // Admission: bounded number of requests in flight.
  if (in_flight_.fetch_add(1) >= static_cast<int64_t>(config_.limits.max_waiting)) {
    in_flight_.fetch_sub(1);
    Reject(responder, endpoint,
           UnavailableError("agent is overloaded: " + std::to_string(config_.limits.max_waiting) +
                            " requests in flight; retry later"),
           static_cast<int>(config_.limits.retry_after_seconds));
    return;
  }

  auto st = std::make_shared<RequestState>();
  st->kind = kind;
  st->engine_id = "req-" + std::to_string(next_request_.fetch_add(1));
  st->render.kind = kind;
  st->render.id = openai::NewResponseId(kind);
  st->render.created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  st->render.model = served_model_;
  st->render.return_token_ids = r.return_token_ids;
  st->stream = r.stream;
  st->include_usage = r.include_usage;
  st->prefill_only = prefill_only;
  st->imported_kv = handle.has_value();
  st->responder = responder;
  st->arrival = Clock::now();
  if (r.return_token_ids) st->prompt = *prompt;

  // The prompt's block hashes as the engine computes them (tenant salt in the first block), for
  // the prefix-root heat; the decode half of a remote prefill is counted by its prefill agent.
  std::vector<kv::BlockHash> heat_hashes;
  if (!handle) {
    kv::BlockHashOptions ho;
    ho.block_size = static_cast<uint32_t>(config_.engine.block_size);
    ho.cache_salt = r.cache_salt;
    // Token ids are non-negative, so their int32 bits are the uint32 ids the engine hashes.
    std::span<const uint32_t> ids(reinterpret_cast<const uint32_t*>(prompt->data()), prompt->size());
    if (auto h = kv::ComputeSequenceHashes(ids, ho); h.ok()) heat_hashes = std::move(*h);
  }

  engine::GenerateRequest g;
  g.id = st->engine_id;
  g.prompt = std::move(*prompt);
  if (r.temperature) g.sampling.temperature = static_cast<float>(*r.temperature);
  if (r.top_p) g.sampling.top_p = static_cast<float>(*r.top_p);
  if (r.top_k) g.sampling.top_k = *r.top_k;
  g.sampling.seed = r.seed;
  const int32_t room = max_len - prompt_len;
  const int32_t default_max = kind == openai::ApiKind::kCompletion ? std::min(16, room) : room;
  g.max_tokens = r.max_tokens ? std::min(*r.max_tokens, room) : default_max;
  g.stop = r.stop;
  g.stop_token_ids = r.stop_token_ids;
  g.ignore_eos = r.ignore_eos;
  g.cache_salt = r.cache_salt;
  if (prefill_only) {
    g.mode = engine::RequestMode::kPrefillOnly;
    g.max_tokens = 1;
  } else if (handle) {
    g.mode = engine::RequestMode::kImportedKv;
    g.first_token = handle->first_token;
    g.recompute_on_import_failure = config_.transfer.failure_policy() == TransferFailurePolicy::kRecompute;
    transfers_->ExpectHandle(g.id, *handle);
  }

  if (st->stream) {
    st->writer = responder->StartStream(http::StreamWriter::Mode::kSse);
    if (!st->writer) {  // the client is already gone
      if (handle) transfers_->Forget(g.id);
      in_flight_.fetch_sub(1);
      metrics_.requests->WithLabels({endpoint, "cancelled"}).Inc();
      return;
    }
  }
  const std::string id = g.id;
  Status submitted = engine_->Submit(std::move(g), [this, st](const engine::RequestOutput& out) { OnOutput(st, out); });
  if (!submitted.ok()) {
    if (handle) transfers_->Forget(id);
    in_flight_.fetch_sub(1);
    metrics_.requests->WithLabels({endpoint, "rejected"}).Inc();
    if (st->writer) {
      nlohmann::json err = {{"error", {{"message", submitted.message()}, {"type", "invalid_request_error"},
                                       {"code", std::string(StatusCodeName(submitted.code()))}}}};
      st->writer->Send(err.dump());
      st->writer->Send("[DONE]");
      st->writer->Close();
    } else {
      responder->Respond(http::ErrorResponseFor(submitted));
    }
    return;
  }
  if (!st->imported_kv) {  // heat for the placement hub: where the prefill runs
    roots_.Record(heat_hashes);
    demand_requests_.fetch_add(1, std::memory_order_relaxed);
    demand_prompt_tokens_.fetch_add(static_cast<uint64_t>(prompt_len), std::memory_order_relaxed);
  }
  // A client that goes away cancels its request; the engine frees its blocks in its next step.
  engine::Engine* engine = engine_.get();
  auto on_gone = [engine, id] { engine->Cancel(id); };
  if (st->writer) st->writer->SetOnDisconnect(on_gone);
  responder->SetOnDisconnect(on_gone);
}

void Agent::OnOutput(const std::shared_ptr<RequestState>& st, const engine::RequestOutput& out) {
  if (st->done) return;
  const char* endpoint = EndpointLabel(st->kind);
  const Clock::time_point now = Clock::now();
  if (!out.new_tokens.empty()) {
    if (st->tokens.empty()) {
      metrics_.ttft->Observe(std::chrono::duration<double>(now - st->arrival).count());
    } else {
      const double gap = std::chrono::duration<double>(now - st->last_token).count();
      for (size_t i = 0; i < out.new_tokens.size(); ++i) metrics_.itl->Observe(gap / static_cast<double>(out.new_tokens.size()));
    }
    st->last_token = now;
    st->tokens.insert(st->tokens.end(), out.new_tokens.begin(), out.new_tokens.end());
  }
  st->text += out.text;

  if (st->stream && !out.finished && (!out.text.empty() || (st->render.return_token_ids && !out.new_tokens.empty()))) {
    st->writer->Send(openai::RenderChunk(st->render, out.text, out.new_tokens, "", !st->sent_first_chunk));
    st->sent_first_chunk = true;
  }
  if (!out.finished) return;
  st->done = true;
  in_flight_.fetch_sub(1);
  metrics_.e2e->Observe(std::chrono::duration<double>(now - st->arrival).count());

  if (out.finish_reason == engine::FinishReason::kCancelled) {
    metrics_.requests->WithLabels({endpoint, "cancelled"}).Inc();
    if (st->writer) st->writer->Close();
    st->responder->Respond(http::ErrorResponseFor(CancelledError("request was cancelled")));
    return;
  }
  if (out.finish_reason == engine::FinishReason::kError) {
    metrics_.requests->WithLabels({endpoint, "error"}).Inc();
    const Status err = out.error.ok() ? InternalError("request failed") : out.error;
    if (st->writer) {
      nlohmann::json j = {{"error", {{"message", err.message()}, {"type", "server_error"},
                                     {"code", std::string(StatusCodeName(err.code()))}}}};
      st->writer->Send(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      st->writer->Send("[DONE]");
      st->writer->Close();
    } else {
      st->responder->Respond(http::ErrorResponseFor(err));
    }
    return;
  }

  openai::Usage usage;
  usage.prompt_tokens = out.prompt_tokens;
  usage.completion_tokens = out.completion_tokens;
  usage.cached_tokens = out.cached_tokens;
  if (!st->imported_kv) demand_cached_tokens_.fetch_add(static_cast<uint64_t>(out.cached_tokens), std::memory_order_relaxed);
  if (!st->prefill_only) {
    demand_completion_tokens_.fetch_add(static_cast<uint64_t>(out.completion_tokens), std::memory_order_relaxed);
  }
  const std::string finish = FinishReasonText(out.finish_reason);
  metrics_.requests->WithLabels({endpoint, "ok"}).Inc();

  if (st->stream) {
    st->writer->Send(openai::RenderChunk(st->render, out.text, out.new_tokens, finish, !st->sent_first_chunk));
    if (st->include_usage) st->writer->Send(openai::RenderUsageChunk(st->render, usage));
    st->writer->Send("[DONE]");
    st->writer->Close();
    return;
  }

  openai::CompletionResult result;
  result.text = st->text;
  result.finish_reason = finish;
  if (st->render.return_token_ids) {
    result.token_ids = st->tokens;
    result.prompt_token_ids = st->prompt;
  }
  if (st->prefill_only && out.pinned) {
    const transfer::TransferHandle h = LeasePin(*out.pinned, st->tokens.empty() ? -1 : st->tokens.front());
    nlohmann::json params = transfer::TransferHandleToJson(h);
    params["do_remote_prefill"] = true;
    params["do_remote_decode"] = false;
    if (!st->responder->Respond(http::JsonResponse(200, openai::RenderCompletion(st->render, result, usage, &params)))) {
      // The caller is gone: nobody will pull these blocks.
      (void)leases_->Release(h.lease_id);
    }
    return;
  }
  if (st->prefill_only && !out.pinned) {
    KVMESH_LOG_WARN(kComponent, "prefill-only request finished without pinned blocks", {"request", st->engine_id});
  }
  st->responder->Respond(http::JsonResponse(200, openai::RenderCompletion(st->render, result, usage)));
}

}  // namespace kvmesh::agent
