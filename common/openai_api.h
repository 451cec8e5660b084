// The OpenAI-compatible HTTP API shared by the agent's worker API and the router: request parsing
// with validation, and response / stream-chunk rendering for /v1/completions,
// /v1/chat/completions and /v1/models. Model-agnostic: no tokenizer here; the caller applies the
// chat template and tokenizes.
//
// Parsing rules (docs/openai-api.md):
//  - The body must be a JSON object. Unknown fields are ignored (clients send many); a known field
//    with the wrong JSON type, or a value out of range, is InvalidArgument naming the field and the
//    value: negative or NaN numbers, temperature outside [0, 2], top_p outside (0, 1], top_k < -1
//    (-1 and 0 mean no limit), max_tokens < 1, n != 1, more than ParseLimits::max_stop stop
//    strings, empty prompt, unsupported features asked for (logprobs, echo, best_of > 1, suffix,
//    non-zero presence/frequency penalty, tools).
//  - /v1/completions: `prompt` is a string, an array of token ids, or a one-element array of either
//    (batches of prompts are InvalidArgument: n = 1 only). Token ids must be >= 0 (the vocabulary
//    bound is checked by the engine).
//  - /v1/chat/completions: `messages` is a non-empty array of {role, content}; role one of system,
//    user, assistant, developer (treated as system) or tool; content a string or an array of
//    {"type":"text","text":...} parts (joined); other part types are InvalidArgument.
//  - kvmesh extensions, as in vLLM: `kv_transfer_params` (object, passed through), `cache_salt`,
//    `ignore_eos`, `top_k`, `stop_token_ids`, `add_special_tokens`, `return_token_ids` (the
//    response carries `prompt_token_ids` and per-choice `token_ids`).
// Rendering produces exactly the OpenAI shapes (object, id, created, model, choices, usage with
// prompt_tokens_details.cached_tokens); stream chunks are the JSON of one SSE `data:` event.
// No function throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace kvmesh::openai {

enum class ApiKind { kCompletion, kChat };

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool" ("developer" becomes "system")
  std::string content;
};

struct ParseLimits {
  size_t max_stop = 16;             // stop strings
  size_t max_stop_bytes = 1024;     // per stop string
  size_t max_prompt_tokens = 1 << 20;
  size_t max_messages = 4096;
  size_t max_stop_token_ids = 256;
};

struct CompletionRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;  // required, non-empty
  // kCompletion: exactly one of prompt_text / prompt_tokens is set.
  std::optional<std::string> prompt_text;
  std::optional<std::vector<int32_t>> prompt_tokens;
  // kChat: non-empty.
  std::vector<ChatMessage> messages;

  bool stream = false;
  bool include_usage = false;               // stream_options.include_usage
  std::optional<int32_t> max_tokens;        // max_tokens, or max_completion_tokens for chat
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int32_t> top_k;             // -1 is normalized to 0 (no limit)
  std::optional<uint64_t> seed;             // any JSON integer; negative values are reinterpreted
  std::vector<std::string> stop;            // string or array of strings
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<bool> add_special_tokens;   // default: true for completions, false for chat
  bool return_token_ids = false;
  std::string cache_salt;
  std::optional<nlohmann::json> kv_transfer_params;  // an object when present
  std::string user;
};

// InvalidArgument (see the rules above) for anything malformed.
StatusOr<CompletionRequest> ParseCompletionRequest(ApiKind kind, std::string_view body,
                                                   const ParseLimits& limits = {});

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // usage.prompt_tokens_details.cached_tokens
};

struct CompletionResult {
  std::string text;
  std::string finish_reason;             // "stop", "length", ... ("" renders as null)
  std::vector<int32_t> token_ids;        // rendered only with return_token_ids
  std::vector<int32_t> prompt_token_ids;  // rendered only with return_token_ids
};

// "cmpl-<24 hex>" / "chatcmpl-<24 hex>", random.
std::string NewResponseId(ApiKind kind);

struct RenderOptions {
  ApiKind kind = ApiKind::kCompletion;
  std::string id;
  int64_t created = 0;  // unix seconds
  std::string model;
  bool return_token_ids = false;
};

// The non-streaming response body. `kv_transfer_params` (if non-null) is added at top level.
std::string RenderCompletion(const RenderOptions& options, const CompletionResult& result,
                             const Usage& usage, const nlohmann::json* kv_transfer_params = nullptr);

// One stream chunk (the JSON of one SSE data event). Chat: `first` adds delta.role = "assistant".
// finish_reason "" renders as null. With return_token_ids the choice carries `token_ids`.
// `usage`, when given, is rendered on this chunk (vLLM's continuous_usage_stats style is not used:
// pass it only on the final usage chunk).
std::string RenderChunk(const RenderOptions& options, std::string_view delta_text,
                        const std::vector<int32_t>& delta_token_ids,
                        std::string_view finish_reason, bool first);
// The final usage-only chunk of stream_options.include_usage ("choices": []).
std::string RenderUsageChunk(const RenderOptions& options, const Usage& usage);

// GET /v1/models body: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}.
std::string RenderModelList(const std::vector<std::string>& model_ids, int64_t created,
                            std::string_view owned_by = "kvmesh");

}  // namespace kvmesh::openai
