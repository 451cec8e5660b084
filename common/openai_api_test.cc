#include "common/openai_api.h"

#include <cctype>
#include <cstdint>
#include <functional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kvmesh::openai {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr ApiKind kCmpl = ApiKind::kCompletion;
constexpr ApiKind kChat = ApiKind::kChat;

// A completion body with `extra` (JSON members text, may be empty) appended.
std::string CmplBody(const std::string& extra) {
  return R"({"model":"tiny","prompt":"hello")" + (extra.empty() ? "" : "," + extra) + "}";
}
std::string ChatBody(const std::string& extra) {
  return R"({"model":"tiny","messages":[{"role":"user","content":"hi"}])" +
         (extra.empty() ? "" : "," + extra) + "}";
}

struct RejectCase {
  ApiKind kind;
  std::string body;
  std::string message;  // expected substring of the error message
};

// ctest names each case by this: the expected message in a name-friendly form, plus a short
// hash of the body so that cases with the same message stay distinct.
void PrintTo(const RejectCase& c, std::ostream* os) {
  std::string name;
  for (char ch : c.message.substr(0, 48)) {
    name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  }
  *os << name << '_' << std::hash<std::string>{}(c.body) % 100000;
}

class OpenAiRejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(OpenAiRejectTest, IsInvalidArgumentNamingTheField) {
  const RejectCase& c = GetParam();
  auto r = ParseCompletionRequest(c.kind, c.body);
  ASSERT_FALSE(r.ok()) << c.body;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.body;
  EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.body;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, OpenAiRejectTest,
    ::testing::Values(
        // Body shape.
        RejectCase{kCmpl, "", "request body is not valid JSON"},
        RejectCase{kCmpl, "{\"model\":", "request body is not valid JSON"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":"a",})", "request body is not valid JSON"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":"a"} /* c */)",
                   "request body is not valid JSON"},
        RejectCase{kCmpl, "[1,2]", "request body must be a JSON object, got [1,2]"},
        RejectCase{kCmpl, "\"x\"", "request body must be a JSON object"},
        RejectCase{kCmpl, std::string(100, '[') + std::string(100, ']'), "nests deeper than 64"},
        RejectCase{kCmpl, "{\"model\":\"tiny\",\"prompt\":\"\xff\xfe\"}",
                   "request body is not valid JSON"},
        // Non-standard number literals and overflow.
        RejectCase{kCmpl, CmplBody(R"("temperature":NaN)"), "not valid JSON"},
        RejectCase{kCmpl, CmplBody(R"("temperature":Infinity)"), "not valid JSON"},
        RejectCase{kCmpl, CmplBody(R"("temperature":-Infinity)"), "not valid JSON"},
        RejectCase{kCmpl, CmplBody(R"("temperature":1e999)"), "not valid JSON"},
        // model.
        RejectCase{kCmpl, R"({"prompt":"a"})", "model is required"},
        RejectCase{kCmpl, R"({"model":null,"prompt":"a"})", "model is required"},
        RejectCase{kCmpl, R"({"model":"","prompt":"a"})", "model must not be empty"},
        RejectCase{kCmpl, R"({"model":7,"prompt":"a"})", "model must be a string, got 7"},
        // prompt.
        RejectCase{kCmpl, R"({"model":"tiny"})", "prompt is required"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":""})", "prompt must not be empty"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[]})", "prompt must not be empty"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[""]})", "prompt must not be empty"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[[]]})", "prompt must not be empty"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":5})", "prompt must be a string"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":{"a":1}})", "prompt must be a string"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":["a","b"]})", "got 2 prompts"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[[1],[2],[3]]})", "got 3 prompts"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[true]})",
                   "prompt[0] must be a string or an array of token ids, got true"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[1,-2,3]})", "prompt[1] must be >= 0, got -2"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[1,"x"]})",
                   "prompt[1] must be an integer, got \"x\""},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[1,2.5]})",
                   "prompt[1] must be an integer, got 2.5"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[2147483648]})",
                   "prompt[0] must be <= 2147483647, got 2147483648"},
        RejectCase{kCmpl, R"({"model":"tiny","prompt":[[4,-1]]})",
                   "prompt[0][1] must be >= 0, got -1"},
        // messages.
        RejectCase{kChat, R"({"model":"tiny"})", "messages is required"},
        RejectCase{kChat, R"({"model":"tiny","messages":[]})", "messages must not be empty"},
        RejectCase{kChat, R"({"model":"tiny","messages":"hi"})", "messages must be an array"},
        RejectCase{kChat, R"({"model":"tiny","messages":[1]})", "messages[0] must be an object"},
        RejectCase{kChat, R"({"model":"tiny","messages":[{"content":"x"}]})",
                   "messages[0].role is required"},
        RejectCase{kChat, R"({"model":"tiny","messages":[{"role":"robot","content":"x"}]})",
                   "messages[0].role must be one of"},
        RejectCase{kChat, R"({"model":"tiny","messages":[{"role":"user"}]})",
                   "messages[0].content is required for role \"user\""},
        RejectCase{kChat,
                   R"({"model":"tiny","messages":[{"role":"user","content":"a"},)"
                   R"({"role":"system","content":null}]})",
                   "messages[1].content is required for role \"system\""},
        RejectCase{kChat, R"({"model":"tiny","messages":[{"role":"user","content":5}]})",
                   "messages[0].content must be a string or an array of content parts, got 5"},
        RejectCase{kChat,
                   R"({"model":"tiny","messages":[{"role":"user","content":[)"
                   R"({"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]}]})",
                   "messages[0].content[1].type is not supported (only \"text\"), got \"image_url\""},
        RejectCase{kChat,
                   R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"text"}]}]})",
                   "messages[0].content[0].text is required"},
        RejectCase{kChat,
                   R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":1}]}]})",
                   "messages[0].content[0].text must be a string, got 1"},
        // Sampling parameters.
        RejectCase{kCmpl, CmplBody(R"("temperature":-1)"), "temperature must be in [0, 2], got -1"},
        RejectCase{kCmpl, CmplBody(R"("temperature":2.5)"), "temperature must be in [0, 2], got 2.5"},
        RejectCase{kCmpl, CmplBody(R"("temperature":"hot")"),
                   "temperature must be a number, got \"hot\""},
        RejectCase{kCmpl, CmplBody(R"("temperature":true)"), "temperature must be a number, got true"},
        RejectCase{kCmpl, CmplBody(R"("top_p":0)"), "top_p must be in (0, 1], got 0"},
        RejectCase{kCmpl, CmplBody(R"("top_p":1.01)"), "top_p must be in (0, 1], got 1.01"},
        RejectCase{kCmpl, CmplBody(R"("top_k":-2)"), "top_k must be >= -1, got -2"},
        RejectCase{kCmpl, CmplBody(R"("top_k":1.5)"), "top_k must be an integer, got 1.5"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":0)"), "max_tokens must be >= 1, got 0"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":-5)"), "max_tokens must be >= 1, got -5"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":"abc")"),
                   "max_tokens must be an integer, got \"abc\""},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":"16")"),
                   "max_tokens must be an integer, got \"16\""},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":16.5)"), "max_tokens must be an integer, got 16.5"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":3000000000)"),
                   "max_tokens must be <= 2147483647, got 3000000000"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":1e300)"), "max_tokens must be an integer"},
        RejectCase{kCmpl, CmplBody(R"("max_tokens":18446744073709551615)"),
                   "max_tokens must be <= 9223372036854775807"},
        RejectCase{kChat, ChatBody(R"("max_completion_tokens":0)"),
                   "max_completion_tokens must be >= 1, got 0"},
        RejectCase{kCmpl, CmplBody(R"("seed":"1")"), "seed must be an integer, got \"1\""},
        RejectCase{kCmpl, CmplBody(R"("seed":0.5)"), "seed must be an integer, got 0.5"},
        RejectCase{kCmpl, CmplBody(R"("stream":"yes")"), "stream must be a boolean, got \"yes\""},
        RejectCase{kCmpl, CmplBody(R"("stream":1)"), "stream must be a boolean, got 1"},
        RejectCase{kCmpl, CmplBody(R"("stream_options":{"include_usage":true})"),
                   "stream_options is only allowed when stream is true"},
        RejectCase{kChat, ChatBody(R"("stream":false,"stream_options":{"include_usage":true})"),
                   "stream_options is only allowed when stream is true"},
        RejectCase{kChat, ChatBody(R"("stream":true,"stream_options":true)"),
                   "stream_options must be an object, got true"},
        RejectCase{kChat, ChatBody(R"("stream":true,"stream_options":{"include_usage":"y"})"),
                   "stream_options.include_usage must be a boolean"},
        // stop.
        RejectCase{kCmpl, CmplBody(R"("stop":5)"), "stop must be a string or an array of strings, got 5"},
        RejectCase{kCmpl, CmplBody(R"("stop":["a",5])"), "stop[1] must be a string, got 5"},
        RejectCase{kCmpl,
                   CmplBody(R"("stop":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"])"),
                   "stop has 17 strings, more than the limit 16"},
        RejectCase{kCmpl, CmplBody("\"stop\":\"" + std::string(1025, 'x') + "\""),
                   "stop is 1025 bytes, more than the limit 1024"},
        RejectCase{kCmpl, CmplBody(R"("stop_token_ids":[1,-1])"), "stop_token_ids[1] must be >= 0, got -1"},
        RejectCase{kCmpl, CmplBody(R"("stop_token_ids":7)"), "stop_token_ids must be an array of token ids"},
        // Extensions.
        RejectCase{kCmpl, CmplBody(R"("ignore_eos":"true")"), "ignore_eos must be a boolean"},
        RejectCase{kCmpl, CmplBody(R"("add_special_tokens":0)"), "add_special_tokens must be a boolean"},
        RejectCase{kCmpl, CmplBody(R"("return_token_ids":null,"cache_salt":"")"),
                   "cache_salt must not be empty"},
        RejectCase{kCmpl, CmplBody(R"("cache_salt":1)"), "cache_salt must be a string, got 1"},
        RejectCase{kCmpl, CmplBody(R"("kv_transfer_params":[1])"),
                   "kv_transfer_params must be an object, got [1]"},
        RejectCase{kCmpl, CmplBody(R"("user":1)"), "user must be a string, got 1"},
        // Unsupported features.
        RejectCase{kCmpl, CmplBody(R"("n":2)"), "n must be 1 (one choice per request), got 2"},
        RejectCase{kCmpl, CmplBody(R"("n":0)"), "n must be 1"},
        RejectCase{kCmpl, CmplBody(R"("n":"1")"), "n must be an integer, got \"1\""},
        RejectCase{kCmpl, CmplBody(R"("best_of":3)"), "best_of must be 1"},
        RejectCase{kCmpl, CmplBody(R"("logprobs":1)"), "logprobs is not supported, got 1"},
        RejectCase{kCmpl, CmplBody(R"("logprobs":0)"), "logprobs is not supported, got 0"},
        RejectCase{kCmpl, CmplBody(R"("logprobs":"x")"), "logprobs must be an integer"},
        RejectCase{kChat, ChatBody(R"("logprobs":true)"), "logprobs is not supported, got true"},
        RejectCase{kChat, ChatBody(R"("logprobs":1)"), "logprobs must be a boolean, got 1"},
        RejectCase{kChat, ChatBody(R"("top_logprobs":2)"), "top_logprobs is not supported"},
        RejectCase{kCmpl, CmplBody(R"("echo":true)"), "echo is not supported"},
        RejectCase{kCmpl, CmplBody(R"("suffix":"end")"), "suffix is not supported"},
        RejectCase{kCmpl, CmplBody(R"("presence_penalty":0.5)"), "presence_penalty is not supported"},
        RejectCase{kCmpl, CmplBody(R"("frequency_penalty":-3)"),
                   "frequency_penalty must be in [-2, 2], got -3"},
        RejectCase{kChat, ChatBody(R"("tools":[{"type":"function","function":{"name":"f"}}])"),
                   "tools is not supported"},
        RejectCase{kChat, ChatBody(R"("tool_choice":"required")"), "tool_choice is not supported"},
        RejectCase{kCmpl, CmplBody(R"("logit_bias":{"50256":-100})"), "logit_bias is not supported"},
        RejectCase{kChat, ChatBody(R"("response_format":{"type":"json_object"})"),
                   "response_format.type is not supported (only \"text\"), got \"json_object\""}));

TEST(OpenAiParseLimitsTest, AreApplied) {
  ParseLimits limits;
  limits.max_stop = 1;
  limits.max_stop_bytes = 3;
  limits.max_prompt_tokens = 2;
  limits.max_messages = 1;
  limits.max_stop_token_ids = 1;
  EXPECT_THAT(ParseCompletionRequest(kCmpl, CmplBody(R"("stop":["a","b"])"), limits)
                  .status().message(),
              HasSubstr("stop has 2 strings, more than the limit 1"));
  EXPECT_THAT(ParseCompletionRequest(kCmpl, CmplBody(R"("stop":"abcd")"), limits)
                  .status().message(),
              HasSubstr("stop is 4 bytes, more than the limit 3"));
  EXPECT_TRUE(ParseCompletionRequest(kCmpl, CmplBody(R"("stop":"abc")"), limits).ok());
  EXPECT_THAT(ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":[1,2,3]})", limits)
                  .status().message(),
              HasSubstr("prompt has 3 token ids, more than the limit 2"));
  EXPECT_TRUE(ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":[[1,2]]})", limits).ok());
  EXPECT_THAT(ParseCompletionRequest(kChat,
                                     R"({"model":"m","messages":[{"role":"user","content":"a"},)"
                                     R"({"role":"user","content":"b"}]})",
                                     limits)
                  .status().message(),
              HasSubstr("messages has 2 entries, more than the limit 1"));
  EXPECT_THAT(ParseCompletionRequest(kCmpl, CmplBody(R"("stop_token_ids":[1,2])"), limits)
                  .status().message(),
              HasSubstr("stop_token_ids has 2 token ids, more than the limit 1"));
}

TEST(OpenAiParseTest, MinimalCompletionHasDefaults) {
  auto r = ParseCompletionRequest(kCmpl, R"({"model":"tiny","prompt":"Hello"})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, kCmpl);
  EXPECT_EQ(r->model, "tiny");
  ASSERT_TRUE(r->prompt_text.has_value());
  EXPECT_EQ(*r->prompt_text, "Hello");
  EXPECT_FALSE(r->prompt_tokens.has_value());
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->include_usage);
  EXPECT_FALSE(r->max_tokens.has_value());
  EXPECT_FALSE(r->temperature.has_value());
  EXPECT_FALSE(r->top_p.has_value());
  EXPECT_FALSE(r->top_k.has_value());
  EXPECT_FALSE(r->seed.has_value());
  EXPECT_TRUE(r->stop.empty());
  EXPECT_FALSE(r->ignore_eos);
  EXPECT_FALSE(r->add_special_tokens.has_value());
  EXPECT_FALSE(r->return_token_ids);
  EXPECT_FALSE(r->kv_transfer_params.has_value());
}

TEST(OpenAiParseTest, MalformedJsonSaysWhere) {
  auto r = ParseCompletionRequest(kCmpl, R"({"model":"tiny","prompt":"x","temperature":NaN})");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("parse error at line 1, column 44"));
  EXPECT_THAT(r.status().message(), HasSubstr("invalid literal"));
  auto trailing = ParseCompletionRequest(kCmpl, R"({"model":"tiny","prompt":"x"} {})");
  ASSERT_FALSE(trailing.ok());
  EXPECT_THAT(trailing.status().message(), HasSubstr("expected end of input"));
}

TEST(OpenAiParseTest, PromptForms) {
  auto text1 = ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":["only"]})");
  ASSERT_TRUE(text1.ok()) << text1.status().ToString();
  EXPECT_EQ(text1->prompt_text, std::optional<std::string>("only"));

  auto ids = ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":[1,0,2147483647]})");
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_FALSE(ids->prompt_text.has_value());
  EXPECT_EQ(ids->prompt_tokens, (std::vector<int32_t>{1, 0, 2147483647}));

  auto nested = ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":[[5,6]]})");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->prompt_tokens, (std::vector<int32_t>{5, 6}));

  // Integral floats are accepted as integers (as pydantic's lax mode in vLLM does).
  auto floats = ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":[7.0,8]})");
  ASSERT_TRUE(floats.ok()) << floats.status().ToString();
  EXPECT_EQ(floats->prompt_tokens, (std::vector<int32_t>{7, 8}));
}

TEST(OpenAiParseTest, ChatMessages) {
  auto r = ParseCompletionRequest(kChat, R"({"model":"m","messages":[
      {"role":"developer","content":"be brief"},
      {"role":"system","content":"sys"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"name":"x"},
      {"role":"assistant","content":null,"tool_calls":[]},
      {"role":"assistant"},
      {"role":"tool","content":"42","tool_call_id":"c1"},
      {"role":"user","content":""}]})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->messages.size(), 7u);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"system", "be brief"}, {"system", "sys"}, {"user", "a\nb"}, {"assistant", ""},
      {"assistant", ""},      {"tool", "42"},    {"user", ""}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(r->messages[i].role, want[i].first) << i;
    EXPECT_EQ(r->messages[i].content, want[i].second) << i;
  }
  EXPECT_FALSE(r->prompt_text.has_value());
  EXPECT_FALSE(r->prompt_tokens.has_value());
}

TEST(OpenAiParseTest, AllFieldsCompletion) {
  auto r = ParseCompletionRequest(kCmpl, R"({
      "model":"tiny","prompt":"p","stream":true,"stream_options":{"include_usage":true,"x":1},
      "max_tokens":16.0,"temperature":0,"top_p":1,"top_k":-1,"seed":-1,
      "stop":["a","","bc"],"stop_token_ids":[2,3],"ignore_eos":true,"add_special_tokens":false,
      "return_token_ids":true,"cache_salt":"tenant","kv_transfer_params":{"do_remote_decode":true},
      "user":"u","n":1,"best_of":1,"logprobs":null,"echo":false,"suffix":null,
      "presence_penalty":0,"frequency_penalty":0.0,"logit_bias":{},"unknown_field":[1,{"a":2}]})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->max_tokens, std::optional<int32_t>(16));
  EXPECT_EQ(r->temperature, std::optional<double>(0.0));
  EXPECT_EQ(r->top_p, std::optional<double>(1.0));
  EXPECT_EQ(r->top_k, std::optional<int32_t>(0));  // -1 normalized
  EXPECT_EQ(r->seed, std::optional<uint64_t>(UINT64_MAX));  // -1 reinterpreted
  EXPECT_EQ(r->stop, (std::vector<std::string>{"a", "bc"}));  // "" dropped
  EXPECT_EQ(r->stop_token_ids, (std::vector<int32_t>{2, 3}));
  EXPECT_TRUE(r->ignore_eos);
  EXPECT_EQ(r->add_special_tokens, std::optional<bool>(false));
  EXPECT_TRUE(r->return_token_ids);
  EXPECT_EQ(r->cache_salt, "tenant");
  ASSERT_TRUE(r->kv_transfer_params.has_value());
  EXPECT_EQ(*r->kv_transfer_params, Json::parse(R"({"do_remote_decode":true})"));
  EXPECT_EQ(r->user, "u");
}

TEST(OpenAiParseTest, ChatMaxCompletionTokensWinsAndNullsAreAbsent) {
  auto r = ParseCompletionRequest(
      kChat, ChatBody(R"("max_tokens":5,"max_completion_tokens":9,"temperature":null,)"
                      R"("stop":null,"stream":null,"stream_options":null,"seed":18446744073709551615,)"
                      R"("logprobs":false,"top_logprobs":0,"tools":[],"tool_choice":"none",)"
                      R"("response_format":{"type":"text"},"top_k":40)"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->max_tokens, std::optional<int32_t>(9));
  EXPECT_FALSE(r->temperature.has_value());
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->seed, std::optional<uint64_t>(UINT64_MAX));
  EXPECT_EQ(r->top_k, std::optional<int32_t>(40));

  auto only_old = ParseCompletionRequest(kChat, ChatBody(R"("max_tokens":5)"));
  ASSERT_TRUE(only_old.ok());
  EXPECT_EQ(only_old->max_tokens, std::optional<int32_t>(5));
}

// The bodies the official clients send (openai-python / openai-node serialize only what the
// caller set, plus stream_options on streaming calls).
TEST(OpenAiParseTest, OfficialClientBodies) {
  for (const char* body : {
           R"({"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Say hi"}],"model":"tiny","max_completion_tokens":32,"stream":true,"stream_options":{"include_usage":true},"temperature":0.7})",
           R"({"messages":[{"content":"Say hi","role":"user"}],"model":"tiny","n":1,"seed":42,"stop":["\n\n"],"top_p":0.95,"user":"abc","parallel_tool_calls":false,"store":false,"metadata":{}})",
       }) {
    auto r = ParseCompletionRequest(kChat, body);
    EXPECT_TRUE(r.ok()) << body << ": " << r.status().ToString();
  }
  auto c = ParseCompletionRequest(
      kCmpl, R"({"model":"tiny","prompt":"Once upon","max_tokens":16,"stream":false,"echo":false,"n":1})");
  EXPECT_TRUE(c.ok()) << c.status().ToString();
}

TEST(OpenAiParseTest, DeepButAllowedNestingInPassThrough) {
  std::string nested = "1";
  for (int i = 0; i < 40; ++i) nested = "[" + nested + "]";
  auto r = ParseCompletionRequest(kCmpl, CmplBody(R"("kv_transfer_params":{"x":)" + nested + "}"));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  // Brackets inside strings do not count toward the depth.
  auto s = ParseCompletionRequest(kCmpl, R"({"model":"m","prompt":")" + std::string(500, '[') +
                                             R"(\"\\"})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->prompt_text->size(), 502u);
}

// ---- Rendering -------------------------------------------------------------------------------

RenderOptions Options(ApiKind kind, bool return_token_ids = false) {
  RenderOptions o;
  o.kind = kind;
  o.id = kind == kChat ? "chatcmpl-abc" : "cmpl-abc";
  o.created = 1700000000;
  o.model = "tiny";
  o.return_token_ids = return_token_ids;
  return o;
}

std::set<std::string> Keys(const Json& j) {
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  return keys;
}

void ExpectUsage(const Json& u, int prompt, int completion, int cached) {
  EXPECT_EQ(Keys(u), (std::set<std::string>{"prompt_tokens", "completion_tokens", "total_tokens",
                                            "prompt_tokens_details"}));
  EXPECT_EQ(u["prompt_tokens"], prompt);
  EXPECT_EQ(u["completion_tokens"], completion);
  EXPECT_EQ(u["total_tokens"], prompt + completion);
  EXPECT_EQ(u["prompt_tokens_details"], Json::parse(R"({"cached_tokens":)" +
                                                    std::to_string(cached) + "}"));
}

TEST(OpenAiRenderTest, Completion) {
  CompletionResult res{"Hello \"world\"\n", "length", {5, 6}, {1, 2, 3}};
  const std::string body = RenderCompletion(Options(kCmpl), res, Usage{3, 2, 1});
  Json j = Json::parse(body);
  EXPECT_EQ(Keys(j), (std::set<std::string>{"id", "object", "created", "model", "choices", "usage"}));
  EXPECT_EQ(j["id"], "cmpl-abc");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_EQ(j["choices"].size(), 1u);
  const Json& c = j["choices"][0];
  EXPECT_EQ(Keys(c), (std::set<std::string>{"index", "text", "logprobs", "finish_reason"}));
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["text"], "Hello \"world\"\n");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["finish_reason"], "length");
  ExpectUsage(j["usage"], 3, 2, 1);
  // OpenAI's key order, for humans reading curl output.
  EXPECT_EQ(body.rfind(R"({"id":"cmpl-abc","object":"text_completion","created":1700000000,)", 0),
            0u) << body;
}

TEST(OpenAiRenderTest, ChatWithTokenIdsAndTransferParams) {
  CompletionResult res{"hi", "", {9}, {1, 2}};
  const Json params = Json::parse(R"({"remote_block_ids":[1,2],"remote_host":"h"})");
  Json j = Json::parse(RenderCompletion(Options(kChat, true), res, Usage{2, 1, 0}, &params));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "chatcmpl-abc");
  const Json& c = j["choices"][0];
  EXPECT_EQ(Keys(c),
            (std::set<std::string>{"index", "message", "logprobs", "finish_reason", "token_ids"}));
  EXPECT_EQ(c["message"], Json::parse(R"({"role":"assistant","content":"hi"})"));
  EXPECT_TRUE(c["finish_reason"].is_null());
  EXPECT_EQ(c["token_ids"], Json::parse("[9]"));
  EXPECT_EQ(j["prompt_token_ids"], Json::parse("[1,2]"));
  EXPECT_EQ(j["kv_transfer_params"], params);
  ExpectUsage(j["usage"], 2, 1, 0);
}

TEST(OpenAiRenderTest, InvalidUtf8IsReplacedNotThrown) {
  CompletionResult res{std::string("ok\xff\xc3"), "stop", {}, {}};
  RenderOptions o = Options(kCmpl);
  o.model = "m\xfe";
  std::string body = RenderCompletion(o, res, Usage{});
  Json j = Json::parse(body);  // valid JSON (parse would throw otherwise)
  EXPECT_EQ(j["choices"][0]["text"].get<std::string>().rfind("ok", 0), 0u);
  EXPECT_THAT(j["choices"][0]["text"].get<std::string>(), HasSubstr("\xEF\xBF\xBD"));  // U+FFFD
  Json chunk = Json::parse(RenderChunk(Options(kChat), "\x80", {}, "", false));
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "\xEF\xBF\xBD");
}

TEST(OpenAiRenderTest, CompletionChunks) {
  Json j = Json::parse(RenderChunk(Options(kCmpl, true), "ab", {4, 5}, "", true));
  EXPECT_EQ(Keys(j), (std::set<std::string>{"id", "object", "created", "model", "choices"}));
  EXPECT_EQ(j["object"], "text_completion");
  const Json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["text"], "ab");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_TRUE(c["finish_reason"].is_null());
  EXPECT_EQ(c["token_ids"], Json::parse("[4,5]"));

  Json last = Json::parse(RenderChunk(Options(kCmpl), "", {}, "stop", false));
  EXPECT_EQ(last["choices"][0]["text"], "");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(last["choices"][0].contains("token_ids"));
}

TEST(OpenAiRenderTest, ChatChunks) {
  Json first = Json::parse(RenderChunk(Options(kChat), "", {}, "", true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], Json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());

  Json mid = Json::parse(RenderChunk(Options(kChat), "lo", {}, "", false));
  EXPECT_EQ(mid["choices"][0]["delta"], Json::parse(R"({"content":"lo"})"));

  Json last = Json::parse(RenderChunk(Options(kChat), "", {}, "length", false));
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last.contains("usage"));
}

TEST(OpenAiRenderTest, UsageChunk) {
  for (ApiKind kind : {kCmpl, kChat}) {
    Json j = Json::parse(RenderUsageChunk(Options(kind), Usage{10, 4, 8}));
    EXPECT_EQ(j["object"], kind == kChat ? "chat.completion.chunk" : "text_completion");
    EXPECT_EQ(j["choices"], Json::array());
    ExpectUsage(j["usage"], 10, 4, 8);
  }
}

TEST(OpenAiRenderTest, ModelList) {
  Json j = Json::parse(RenderModelList({"tiny", "other"}, 123));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0], Json::parse(R"({"id":"tiny","object":"model","created":123,"owned_by":"kvmesh"})"));
  EXPECT_EQ(j["data"][1]["id"], "other");
  EXPECT_EQ(Json::parse(RenderModelList({}, 1, "me"))["data"], Json::array());
}

TEST(OpenAiNewResponseIdTest, PrefixAnd24HexAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    for (ApiKind kind : {kCmpl, kChat}) {
      const std::string id = NewResponseId(kind);
      const std::string prefix = kind == kChat ? "chatcmpl-" : "cmpl-";
      ASSERT_EQ(id.rfind(prefix, 0), 0u) << id;
      const std::string hex = id.substr(prefix.size());
      ASSERT_EQ(hex.size(), 24u) << id;
      EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
      EXPECT_TRUE(seen.insert(hex).second) << id;
    }
  }
}

// A request built with nlohmann, as a client library would, parses back field by field.
TEST(OpenAiParseTest, RoundTripOfRequestFields) {
  Json req = {{"model", "tiny"},     {"prompt", Json::array({1, 2, 3})}, {"max_tokens", 7},
              {"temperature", 0.5},  {"top_p", 0.9},                     {"stop", "x"},
              {"stream", true},      {"stream_options", {{"include_usage", true}}}};
  auto r = ParseCompletionRequest(kCmpl, req.dump());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r->max_tokens, std::optional<int32_t>(7));
  EXPECT_EQ(r->temperature, std::optional<double>(0.5));
  EXPECT_EQ(r->top_p, std::optional<double>(0.9));
  EXPECT_EQ(r->stop, (std::vector<std::string>{"x"}));
  EXPECT_TRUE(r->stream && r->include_usage);
}

}  // namespace
}  // namespace kvmesh::openai
