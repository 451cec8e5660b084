// OpenAI-compatible request parsing and response rendering (see openai_api.h for the rules and
// docs/openai-api.md for the user-facing description).
#include "common/openai_api.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <utility>

namespace kvmesh::openai {
namespace {

using Json = nlohmann::json;
// Responses keep OpenAI's key order (id, object, created, model, choices, usage).
using OJson = nlohmann::ordered_json;

// Deeper bodies are rejected before nlohmann builds them: no real request nests this deep, and it
// bounds the parser's work and the value's destruction.
constexpr int kMaxJsonDepth = 64;
// "got <value>" shows at most this many characters of the offending value.
constexpr size_t kMaxShownValueChars = 64;

// Invalid UTF-8 in a string becomes U+FFFD instead of throwing.
template <typename J>
std::string Dump(const J& j) {
  return j.dump(-1, ' ', false, J::error_handler_t::replace);
}

// The offending value as JSON text, truncated.
std::string Shown(const Json& v) {
  std::string s = Dump(v);
  if (s.size() > kMaxShownValueChars) {
    s.resize(kMaxShownValueChars);
    s += "...";
  }
  return s;
}

Status Bad(const std::string& field, const std::string& what, const Json& got) {
  return InvalidArgumentError(field + " " + what + ", got " + Shown(got));
}

// Nesting depth of '[' and '{' outside strings; stops early once the limit is passed.
bool DepthWithin(std::string_view body, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// Builds the DOM like nlohmann::json::parse, but records a syntax error's message instead of
// throwing it.
class ErrorCapturingSax : public nlohmann::detail::json_sax_dom_parser<Json> {
 public:
  explicit ErrorCapturingSax(Json& root) : json_sax_dom_parser(root, /*allow_exceptions_=*/false) {}

  template <class Exception>
  bool parse_error(std::size_t position, const std::string& last_token, const Exception& ex) {
    error_ = ex.what();
    failed_ = true;
    return json_sax_dom_parser::parse_error(position, last_token, ex);
  }
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

 private:
  bool failed_ = false;
  std::string error_ = "malformed";
};

// A JSON integer, or a float with an integral value (16.0), as int64. Anything else (strings,
// booleans, 16.5, values outside int64) is InvalidArgument.
StatusOr<int64_t> GetInt64(const Json& v, const std::string& field) {
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Bad(field, "must be <= " + std::to_string(std::numeric_limits<int64_t>::max()), v);
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // 2^63 is exactly representable; anything in [-2^63, 2^63) converts without UB.
    if (std::isfinite(d) && d == std::trunc(d) && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0) {
      return static_cast<int64_t>(d);
    }
  }
  return Bad(field, "must be an integer", v);
}

// An integer in [lo, hi].
StatusOr<int32_t> GetInt32In(const Json& v, const std::string& field, int64_t lo, int64_t hi) {
  KVMESH_ASSIGN_OR_RETURN(int64_t x, GetInt64(v, field));
  if (x < lo) return Bad(field, "must be >= " + std::to_string(lo), v);
  if (x > hi) return Bad(field, "must be <= " + std::to_string(hi), v);
  return static_cast<int32_t>(x);
}

StatusOr<double> GetNumber(const Json& v, const std::string& field) {
  // nlohmann rejects NaN/Infinity literals and overflowing numbers (1e999) at parse time, so a
  // parsed number is always finite; the check below keeps that true if the parser changes.
  if (!v.is_number()) return Bad(field, "must be a number", v);
  const double d = v.get<double>();
  if (!std::isfinite(d)) return Bad(field, "must be a finite number", v);
  return d;
}

StatusOr<bool> GetBool(const Json& v, const std::string& field) {
  if (!v.is_boolean()) return Bad(field, "must be a boolean", v);
  return v.get<bool>();
}

StatusOr<std::string> GetString(const Json& v, const std::string& field) {
  if (!v.is_string()) return Bad(field, "must be a string", v);
  return v.get<std::string>();
}

// The value of `key` in `obj` unless absent or null (clients send null for "not given").
const Json* Field(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

StatusOr<std::vector<int32_t>> GetTokenIds(const Json& v, const std::string& field,
                                           size_t max_count) {
  if (!v.is_array()) return Bad(field, "must be an array of token ids", v);
  if (v.size() > max_count) {
    return InvalidArgumentError(field + " has " + std::to_string(v.size()) +
                                " token ids, more than the limit " + std::to_string(max_count));
  }
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    KVMESH_ASSIGN_OR_RETURN(int32_t t,
                            GetInt32In(v[i], field + "[" + std::to_string(i) + "]", 0, kInt32Max));
    out.push_back(t);
  }
  return out;
}

bool IsTokenArray(const Json& v) {
  // An array whose first element is a number (an empty array is handled by the caller).
  return v.is_array() && !v.empty() && v[0].is_number();
}

Status ParsePrompt(const Json& body, const ParseLimits& limits, CompletionRequest& req) {
  const Json* p = Field(body, "prompt");
  if (p == nullptr) return InvalidArgumentError("prompt is required");
  const Json* one = p;
  if (p->is_array() && !p->empty() && !IsTokenArray(*p)) {
    // [string] or [[ints]]: a batch, of which only one prompt is supported.
    if (p->size() != 1) {
      return InvalidArgumentError("prompt: batches of prompts are not supported (got " +
                                  std::to_string(p->size()) + " prompts); send one per request");
    }
    one = &(*p)[0];
    if (!one->is_string() && !one->is_array()) {
      return Bad("prompt[0]", "must be a string or an array of token ids", *one);
    }
  }
  if (one->is_string()) {
    std::string text = one->get<std::string>();
    if (text.empty()) return InvalidArgumentError("prompt must not be empty");
    req.prompt_text = std::move(text);
    return Status::Ok();
  }
  if (one->is_array()) {
    if (one->empty()) return InvalidArgumentError("prompt must not be empty");
    const std::string field = one == p ? "prompt" : "prompt[0]";
    KVMESH_ASSIGN_OR_RETURN(auto ids, GetTokenIds(*one, field, limits.max_prompt_tokens));
    req.prompt_tokens = std::move(ids);
    return Status::Ok();
  }
  return Bad("prompt", "must be a string, an array of token ids, or a one-element array of either",
             *p);
}

StatusOr<std::string> ParseContent(const Json& msg, const std::string& field,
                                   const std::string& role) {
  const Json* c = Field(msg, "content");
  if (c == nullptr) {
    if (role == "assistant") return std::string();  // e.g. a turn that only carried tool calls
    return InvalidArgumentError(field + ".content is required for role \"" + role + "\"");
  }
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) {
    return Bad(field + ".content", "must be a string or an array of content parts", *c);
  }
  std::string joined;
  for (size_t i = 0; i < c->size(); ++i) {
    const std::string pf = field + ".content[" + std::to_string(i) + "]";
    const Json& part = (*c)[i];
    if (!part.is_object()) return Bad(pf, "must be an object", part);
    const Json* type = Field(part, "type");
    if (type == nullptr) return InvalidArgumentError(pf + ".type is required");
    if (!type->is_string() || type->get<std::string>() != "text") {
      return Bad(pf + ".type", "is not supported (only \"text\")", *type);
    }
    const Json* text = Field(part, "text");
    if (text == nullptr) return InvalidArgumentError(pf + ".text is required");
    KVMESH_ASSIGN_OR_RETURN(std::string t, GetString(*text, pf + ".text"));
    if (i > 0) joined += '\n';  // as vLLM joins text parts
    joined += t;
  }
  return joined;
}

Status ParseMessages(const Json& body, const ParseLimits& limits, CompletionRequest& req) {
  const Json* m = Field(body, "messages");
  if (m == nullptr) return InvalidArgumentError("messages is required");
  if (!m->is_array()) return Bad("messages", "must be an array", *m);
  if (m->empty()) return InvalidArgumentError("messages must not be empty");
  if (m->size() > limits.max_messages) {
    return InvalidArgumentError("messages has " + std::to_string(m->size()) +
                                " entries, more than the limit " +
                                std::to_string(limits.max_messages));
  }
  req.messages.reserve(m->size());
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string f = "messages[" + std::to_string(i) + "]";
    const Json& msg = (*m)[i];
    if (!msg.is_object()) return Bad(f, "must be an object", msg);
    const Json* r = Field(msg, "role");
    if (r == nullptr) return InvalidArgumentError(f + ".role is required");
    KVMESH_ASSIGN_OR_RETURN(std::string role, GetString(*r, f + ".role"));
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Bad(f + ".role", "must be one of system, developer, user, assistant, tool", *r);
    }
    KVMESH_ASSIGN_OR_RETURN(std::string content, ParseContent(msg, f, role));
    req.messages.push_back(ChatMessage{std::move(role), std::move(content)});
  }
  return Status::Ok();
}

Status ParseStop(const Json& body, const ParseLimits& limits, CompletionRequest& req) {
  const Json* s = Field(body, "stop");
  if (s == nullptr) return Status::Ok();
  std::vector<std::pair<std::string, const Json*>> items;
  if (s->is_string()) {
    items.emplace_back("stop", s);
  } else if (s->is_array()) {
    if (s->size() > limits.max_stop) {
      return InvalidArgumentError("stop has " + std::to_string(s->size()) +
                                  " strings, more than the limit " +
                                  std::to_string(limits.max_stop));
    }
    for (size_t i = 0; i < s->size(); ++i) {
      items.emplace_back("stop[" + std::to_string(i) + "]", &(*s)[i]);
    }
  } else {
    return Bad("stop", "must be a string or an array of strings", *s);
  }
  for (const auto& [field, v] : items) {
    KVMESH_ASSIGN_OR_RETURN(std::string str, GetString(*v, field));
    if (str.size() > limits.max_stop_bytes) {
      return InvalidArgumentError(field + " is " + std::to_string(str.size()) +
                                  " bytes, more than the limit " +
                                  std::to_string(limits.max_stop_bytes));
    }
    if (!str.empty()) req.stop.push_back(std::move(str));  // "" can never match: ignored
  }
  return Status::Ok();
}

// Features kvmesh does not implement: asking for them is an error rather than a silent no-op.
Status RejectUnsupported(const Json& body, ApiKind kind) {
  if (const Json* v = Field(body, "n")) {
    KVMESH_ASSIGN_OR_RETURN(int64_t n, GetInt64(*v, "n"));
    if (n != 1) return Bad("n", "must be 1 (one choice per request)", *v);
  }
  if (const Json* v = Field(body, "best_of")) {
    KVMESH_ASSIGN_OR_RETURN(int64_t b, GetInt64(*v, "best_of"));
    if (b != 1) return Bad("best_of", "must be 1 (best_of is not supported)", *v);
  }
  if (const Json* v = Field(body, "logprobs")) {
    // chat: a boolean; completions: an integer. false is "not asked for".
    if (!(v->is_boolean() && !v->get<bool>())) {
      if (kind == ApiKind::kChat && !v->is_boolean()) return Bad("logprobs", "must be a boolean", *v);
      if (kind == ApiKind::kCompletion && !v->is_boolean() && !v->is_number()) {
        return Bad("logprobs", "must be an integer", *v);
      }
      return Bad("logprobs", "is not supported", *v);
    }
  }
  if (const Json* v = Field(body, "top_logprobs")) {
    KVMESH_ASSIGN_OR_RETURN(int64_t t, GetInt64(*v, "top_logprobs"));
    if (t != 0) return Bad("top_logprobs", "is not supported", *v);
  }
  if (const Json* v = Field(body, "echo")) {
    KVMESH_ASSIGN_OR_RETURN(bool echo, GetBool(*v, "echo"));
    if (echo) return Bad("echo", "is not supported", *v);
  }
  if (const Json* v = Field(body, "suffix")) {
    KVMESH_ASSIGN_OR_RETURN(std::string s, GetString(*v, "suffix"));
    if (!s.empty()) return Bad("suffix", "is not supported", *v);
  }
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    if (const Json* v = Field(body, key)) {
      KVMESH_ASSIGN_OR_RETURN(double p, GetNumber(*v, key));
      if (p < -2.0 || p > 2.0) return Bad(key, "must be in [-2, 2]", *v);
      if (p != 0.0) return Bad(key, "is not supported (only 0)", *v);
    }
  }
  for (const char* key : {"tools", "functions"}) {
    if (const Json* v = Field(body, key)) {
      if (!v->is_array()) return Bad(key, "must be an array", *v);
      if (!v->empty()) return InvalidArgumentError(std::string(key) + " is not supported");
    }
  }
  if (const Json* v = Field(body, "tool_choice")) {
    if (!(v->is_string() && (*v == "none" || *v == "auto"))) {
      return Bad("tool_choice", "is not supported (only \"none\" or \"auto\" without tools)", *v);
    }
  }
  if (const Json* v = Field(body, "logit_bias")) {
    if (!v->is_object()) return Bad("logit_bias", "must be an object", *v);
    if (!v->empty()) return InvalidArgumentError("logit_bias is not supported");
  }
  if (const Json* v = Field(body, "response_format")) {
    if (!v->is_object()) return Bad("response_format", "must be an object", *v);
    const Json* type = Field(*v, "type");
    if (type != nullptr && !(type->is_string() && *type == "text")) {
      return Bad("response_format.type", "is not supported (only \"text\")", *type);
    }
  }
  return Status::Ok();
}

Status ParseSampling(const Json& body, ApiKind kind, const ParseLimits& limits,
                     CompletionRequest& req) {
  if (const Json* v = Field(body, "stream")) {
    KVMESH_ASSIGN_OR_RETURN(req.stream, GetBool(*v, "stream"));
  }
  if (const Json* v = Field(body, "stream_options")) {
    if (!v->is_object()) return Bad("stream_options", "must be an object", *v);
    if (!req.stream) {
      return InvalidArgumentError("stream_options is only allowed when stream is true");
    }
    if (const Json* u = Field(*v, "include_usage")) {
      KVMESH_ASSIGN_OR_RETURN(req.include_usage, GetBool(*u, "stream_options.include_usage"));
    }
  }
  // Chat: max_completion_tokens (current OpenAI name) wins over the deprecated max_tokens.
  const char* max_keys[] = {"max_tokens", "max_completion_tokens"};
  const int num_max_keys = kind == ApiKind::kChat ? 2 : 1;
  for (int i = 0; i < num_max_keys; ++i) {
    if (const Json* v = Field(body, max_keys[i])) {
      KVMESH_ASSIGN_OR_RETURN(req.max_tokens, GetInt32In(*v, max_keys[i], 1, kInt32Max));
    }
  }
  if (const Json* v = Field(body, "temperature")) {
    KVMESH_ASSIGN_OR_RETURN(double t, GetNumber(*v, "temperature"));
    if (t < 0.0 || t > 2.0) return Bad("temperature", "must be in [0, 2]", *v);
    req.temperature = t;
  }
  if (const Json* v = Field(body, "top_p")) {
    KVMESH_ASSIGN_OR_RETURN(double p, GetNumber(*v, "top_p"));
    if (!(p > 0.0) || p > 1.0) return Bad("top_p", "must be in (0, 1]", *v);
    req.top_p = p;
  }
  if (const Json* v = Field(body, "top_k")) {
    KVMESH_ASSIGN_OR_RETURN(int32_t k, GetInt32In(*v, "top_k", -1, kInt32Max));
    req.top_k = k == -1 ? 0 : k;
  }
  if (const Json* v = Field(body, "seed")) {
    if (v->is_number_unsigned()) {
      req.seed = v->get<uint64_t>();
    } else {
      KVMESH_ASSIGN_OR_RETURN(int64_t s, GetInt64(*v, "seed"));
      req.seed = static_cast<uint64_t>(s);
    }
  }
  KVMESH_RETURN_IF_ERROR(ParseStop(body, limits, req));
  if (const Json* v = Field(body, "stop_token_ids")) {
    KVMESH_ASSIGN_OR_RETURN(req.stop_token_ids,
                            GetTokenIds(*v, "stop_token_ids", limits.max_stop_token_ids));
  }
  if (const Json* v = Field(body, "ignore_eos")) {
    KVMESH_ASSIGN_OR_RETURN(req.ignore_eos, GetBool(*v, "ignore_eos"));
  }
  if (const Json* v = Field(body, "add_special_tokens")) {
    KVMESH_ASSIGN_OR_RETURN(bool b, GetBool(*v, "add_special_tokens"));
    req.add_special_tokens = b;
  }
  if (const Json* v = Field(body, "return_token_ids")) {
    KVMESH_ASSIGN_OR_RETURN(req.return_token_ids, GetBool(*v, "return_token_ids"));
  }
  if (const Json* v = Field(body, "cache_salt")) {
    KVMESH_ASSIGN_OR_RETURN(req.cache_salt, GetString(*v, "cache_salt"));
    if (req.cache_salt.empty()) return InvalidArgumentError("cache_salt must not be empty");
  }
  if (const Json* v = Field(body, "kv_transfer_params")) {
    if (!v->is_object()) return Bad("kv_transfer_params", "must be an object", *v);
    req.kv_transfer_params = *v;
  }
  if (const Json* v = Field(body, "user")) {
    KVMESH_ASSIGN_OR_RETURN(req.user, GetString(*v, "user"));
  }
  return Status::Ok();
}

StatusOr<CompletionRequest> ParseImpl(ApiKind kind, std::string_view body,
                                      const ParseLimits& limits) {
  if (!DepthWithin(body, kMaxJsonDepth)) {
    return InvalidArgumentError("request body nests deeper than " + std::to_string(kMaxJsonDepth) +
                                " levels");
  }
  // Strict RFC 8259: comments, trailing commas, the non-standard NaN/Infinity literals, numbers
  // that overflow a double (1e999) and invalid UTF-8 are all parse errors. Parsed through SAX so a
  // malformed body costs no exception (the fuzzer and hostile clients hit this path constantly).
  Json j;
  ErrorCapturingSax sax(j);
  if (!Json::sax_parse(body.begin(), body.end(), &sax, nlohmann::detail::input_format_t::json,
                       /*strict=*/true, /*ignore_comments=*/false) ||
      sax.failed()) {
    return InvalidArgumentError("request body is not valid JSON: " + sax.error());
  }
  if (!j.is_object()) return Bad("request body", "must be a JSON object", j);

  CompletionRequest req;
  req.kind = kind;
  const Json* model = Field(j, "model");
  if (model == nullptr) return InvalidArgumentError("model is required");
  KVMESH_ASSIGN_OR_RETURN(req.model, GetString(*model, "model"));
  if (req.model.empty()) return InvalidArgumentError("model must not be empty");

  if (kind == ApiKind::kCompletion) {
    KVMESH_RETURN_IF_ERROR(ParsePrompt(j, limits, req));
  } else {
    KVMESH_RETURN_IF_ERROR(ParseMessages(j, limits, req));
  }
  KVMESH_RETURN_IF_ERROR(ParseSampling(j, kind, limits, req));
  KVMESH_RETURN_IF_ERROR(RejectUnsupported(j, kind));
  return req;
}

OJson UsageJson(const Usage& usage) {
  return OJson{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", static_cast<int64_t>(usage.prompt_tokens) + usage.completion_tokens},
              {"prompt_tokens_details", OJson{{"cached_tokens", usage.cached_tokens}}}};
}

OJson FinishReason(std::string_view finish_reason) {
  if (finish_reason.empty()) return nullptr;
  return std::string(finish_reason);
}

OJson Header(const RenderOptions& options, bool chunk) {
  const char* object = options.kind == ApiKind::kChat
                           ? (chunk ? "chat.completion.chunk" : "chat.completion")
                           : "text_completion";
  return OJson{{"id", options.id},
              {"object", object},
              {"created", options.created},
              {"model", options.model}};
}

}  // namespace

StatusOr<CompletionRequest> ParseCompletionRequest(ApiKind kind, std::string_view body,
                                                   const ParseLimits& limits) {
  try {
    return ParseImpl(kind, body, limits);
  } catch (const std::exception& e) {  // nlohmann on an unforeseen path, or bad_alloc
    return InvalidArgumentError(std::string("request body could not be parsed: ") + e.what());
  }
}

std::string NewResponseId(ApiKind kind) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  const uint64_t hi = rng();
  const uint64_t lo = rng();
  char hex[25];
  std::snprintf(hex, sizeof(hex), "%08x%016llx", static_cast<unsigned>(hi & 0xffffffffu),
                static_cast<unsigned long long>(lo));
  return std::string(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-") + hex;
}

std::string RenderCompletion(const RenderOptions& options, const CompletionResult& result,
                             const Usage& usage, const nlohmann::json* kv_transfer_params) {
  OJson choice;
  choice["index"] = 0;
  if (options.kind == ApiKind::kChat) {
    choice["message"] = OJson{{"role", "assistant"}, {"content", result.text}};
  } else {
    choice["text"] = result.text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(result.finish_reason);
  if (options.return_token_ids) choice["token_ids"] = result.token_ids;

  OJson out = Header(options, /*chunk=*/false);
  out["choices"] = OJson::array({std::move(choice)});
  out["usage"] = UsageJson(usage);
  if (options.return_token_ids) out["prompt_token_ids"] = result.prompt_token_ids;
  if (kv_transfer_params != nullptr && !kv_transfer_params->is_null()) {
    out["kv_transfer_params"] = OJson(*kv_transfer_params);
  }
  return Dump(out);
}

std::string RenderChunk(const RenderOptions& options, std::string_view delta_text,
                        const std::vector<int32_t>& delta_token_ids,
                        std::string_view finish_reason, bool first) {
  OJson choice;
  choice["index"] = 0;
  if (options.kind == ApiKind::kChat) {
    OJson delta = OJson::object();
    if (first) delta["role"] = "assistant";
    if (first || !delta_text.empty()) delta["content"] = std::string(delta_text);
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = std::string(delta_text);
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(finish_reason);
  if (options.return_token_ids) choice["token_ids"] = delta_token_ids;

  OJson out = Header(options, /*chunk=*/true);
  out["choices"] = OJson::array({std::move(choice)});
  return Dump(out);
}

std::string RenderUsageChunk(const RenderOptions& options, const Usage& usage) {
  OJson out = Header(options, /*chunk=*/true);
  out["choices"] = OJson::array();
  out["usage"] = UsageJson(usage);
  return Dump(out);
}

std::string RenderModelList(const std::vector<std::string>& model_ids, int64_t created,
                            std::string_view owned_by) {
  OJson data = OJson::array();
  for (const auto& id : model_ids) {
    data.push_back(OJson{{"id", id},
                        {"object", "model"},
                        {"created", created},
                        {"owned_by", std::string(owned_by)}});
  }
  return Dump(OJson{{"object", "list"}, {"data", std::move(data)}});
}

}  // namespace kvmesh::openai
