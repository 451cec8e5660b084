// Fuzz target for the OpenAI request parser: arbitrary bytes parsed as a /v1/completions and as a
// /v1/chat/completions body. Oracle: no crash or sanitizer report; a parsed request satisfies the
// invariants ParseCompletionRequest promises (openai_api.h); and rendering its strings (model,
// prompt, message contents, stop strings) as a response always yields valid JSON that carries
// them back unchanged.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/openai_api.h"

namespace {

using kvmesh::openai::ApiKind;
using kvmesh::openai::CompletionRequest;

void Require(bool cond) {
  if (!cond) std::abort();
}

void CheckInvariants(const CompletionRequest& r, ApiKind kind, const kvmesh::openai::ParseLimits& l) {
  Require(r.kind == kind);
  Require(!r.model.empty());
  if (kind == ApiKind::kCompletion) {
    Require(r.prompt_text.has_value() != r.prompt_tokens.has_value());
    if (r.prompt_text) Require(!r.prompt_text->empty());
    if (r.prompt_tokens) {
      Require(!r.prompt_tokens->empty() && r.prompt_tokens->size() <= l.max_prompt_tokens);
      for (int32_t t : *r.prompt_tokens) Require(t >= 0);
    }
    Require(r.messages.empty());
  } else {
    Require(!r.messages.empty() && r.messages.size() <= l.max_messages);
    for (const auto& m : r.messages) {
      Require(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool");
    }
  }
  Require(!r.include_usage || r.stream);
  if (r.max_tokens) Require(*r.max_tokens >= 1);
  if (r.temperature) Require(std::isfinite(*r.temperature) && *r.temperature >= 0 && *r.temperature <= 2);
  if (r.top_p) Require(*r.top_p > 0 && *r.top_p <= 1);
  if (r.top_k) Require(*r.top_k >= 0);
  Require(r.stop.size() <= l.max_stop);
  for (const auto& s : r.stop) Require(!s.empty() && s.size() <= l.max_stop_bytes);
  Require(r.stop_token_ids.size() <= l.max_stop_token_ids);
  for (int32_t t : r.stop_token_ids) Require(t >= 0);
  if (r.kv_transfer_params) Require(r.kv_transfer_params->is_object());
}

void CheckRender(const CompletionRequest& r) {
  kvmesh::openai::RenderOptions o;
  o.kind = r.kind;
  o.id = kvmesh::openai::NewResponseId(r.kind);
  o.model = r.model;
  o.return_token_ids = true;
  kvmesh::openai::CompletionResult res;
  res.text = r.prompt_text.value_or(r.messages.empty() ? "" : r.messages.back().content);
  res.finish_reason = r.stop.empty() ? "" : r.stop.front();
  res.prompt_token_ids = r.prompt_tokens.value_or(std::vector<int32_t>{});
  const std::string body = kvmesh::openai::RenderCompletion(
      o, res, {}, r.kv_transfer_params ? &*r.kv_transfer_params : nullptr);
  // The parser accepted these strings, so they are valid UTF-8 and must come back unchanged.
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  Require(!j.is_discarded());
  Require(j["model"] == r.model);
  const auto& choice = j["choices"][0];
  Require((r.kind == ApiKind::kChat ? choice["message"]["content"] : choice["text"]) == res.text);
  const std::string chunk = kvmesh::openai::RenderChunk(o, res.text, res.token_ids, "", true);
  Require(!nlohmann::json::parse(chunk, nullptr, false).is_discarded());
}

}  // namespace

std::vector<std::string> KvmeshFuzzSeeds() {
  return {
      R"({"model":"tiny","prompt":"Hello, my name is","max_tokens":16,"temperature":0})",
      R"({"model":"tiny","prompt":[1,2,3,4],"stream":true,"stream_options":{"include_usage":true}})",
      R"({"model":"tiny","prompt":[[5,6,7]],"stop":["\n","END"],"stop_token_ids":[2],"ignore_eos":true})",
      R"({"model":"tiny","prompt":["once"],"top_p":0.9,"top_k":-1,"seed":-7,"n":1,"echo":false,"return_token_ids":true})",
      R"({"model":"tiny","prompt":"x","kv_transfer_params":{"do_remote_decode":true,"ids":[1,[2]]},"cache_salt":"t1"})",
      R"({"model":"tiny","messages":[{"role":"user","content":"hi"}]})",
      R"({"model":"tiny","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null},{"role":"tool","content":"42"}],"max_completion_tokens":8,"stream":true,"stream_options":{"include_usage":false},"stop":"\u00e9\ud83d\ude00"})",
      R"({"messages":[{"content":"Say hi","role":"user"}],"model":"tiny","n":1,"seed":42,"logprobs":false,"tools":[],"tool_choice":"none","response_format":{"type":"text"},"user":"abc"})",
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  kvmesh::openai::ParseLimits limits;
  limits.max_stop = 4;
  limits.max_stop_bytes = 16;
  limits.max_prompt_tokens = 64;
  limits.max_messages = 8;
  limits.max_stop_token_ids = 8;
  for (ApiKind kind : {ApiKind::kCompletion, ApiKind::kChat}) {
    auto r = kvmesh::openai::ParseCompletionRequest(kind, in, limits);
    if (r.ok()) {
      CheckInvariants(*r, kind, limits);
      CheckRender(*r);
    } else {
      Require(r.status().code() == kvmesh::StatusCode::kInvalidArgument);
      Require(!r.status().message().empty());
    }
  }
  return 0;
}
