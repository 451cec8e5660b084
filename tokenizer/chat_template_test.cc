#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvmesh::tokenizer {
namespace {

std::string MustApply(std::string_view family, const std::vector<ChatMessage>& m, bool gen) {
  auto t = ChatTemplate::ForFamily(family);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  auto out = t->Apply(m, gen);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? *out : "";
}

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."},
    {"user", " Hi there! "},
    {"assistant", "Hello."},
    {"user", "What is 2+2?"},
};

TEST(ChatTemplateTest, Llama3) {
  EXPECT_EQ(MustApply("llama3", kConversation, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(MustApply("llama3", {{"user", "x"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST(ChatTemplateTest, Llama2FoldsSystemIntoFirstUserTurn) {
  EXPECT_EQ(MustApply("llama2", kConversation, true),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n Hi there! [/INST] Hello. </s>"
            "<s>[INST] What is 2+2? [/INST]");
  EXPECT_EQ(MustApply("llama2", {{"user", " hi "}}, true), "<s>[INST] hi [/INST]");
}

TEST(ChatTemplateTest, Mistral) {
  EXPECT_EQ(MustApply("mistral", {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}}, true),
            "<s>[INST] Hi [/INST]Hello.</s>[INST] 2+2? [/INST]");
  EXPECT_EQ(MustApply("mistral", {{"system", "Be brief."}, {"user", "Hi"}}, false),
            "<s>[INST] Be brief.\n\nHi [/INST]");
}

TEST(ChatTemplateTest, ChatMlAddsQwen2DefaultSystemPrompt) {
  EXPECT_EQ(MustApply("chatml", {{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(MustApply("chatml", {{"system", "S"}, {"user", "U"}, {"assistant", "A"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
            "<|im_start|>assistant\nA<|im_end|>\n");
}

TEST(ChatTemplateTest, Errors) {
  for (const char* family : {"llama3", "llama2", "mistral", "chatml"}) {
    auto t = ChatTemplate::ForFamily(family);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->Apply({}, true).status().code(), StatusCode::kInvalidArgument) << family;
    std::vector<ChatMessage> bad_role = {{"wizard", "x"}};
    auto s = t->Apply(bad_role, true);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << family;
    EXPECT_NE(s.status().message().find("wizard"), std::string::npos);
  }
  for (const char* family : {"llama2", "mistral"}) {
    auto t = ChatTemplate::ForFamily(family);
    std::vector<ChatMessage> two_users = {{"user", "a"}, {"user", "b"}};
    EXPECT_EQ(t->Apply(two_users, true).status().code(), StatusCode::kInvalidArgument);
    std::vector<ChatMessage> starts_assistant = {{"assistant", "a"}};
    EXPECT_EQ(t->Apply(starts_assistant, true).status().code(), StatusCode::kInvalidArgument);
    std::vector<ChatMessage> late_system = {{"user", "a"}, {"system", "b"}};
    EXPECT_EQ(t->Apply(late_system, true).status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ChatTemplate::ForFamily("vicuna").status().code(), StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, FromTokenizerConfigSelectsFamilyByMarkers) {
  struct Case {
    const char* config;
    const char* family;
  } cases[] = {
      {R"({"chat_template": "{{ '<|start_header_id|>' }}"})", "llama3"},
      {R"({"chat_template": "[INST] <<SYS>> x"})", "llama2"},
      {R"({"chat_template": "{{ '[INST] ' + m }}"})", "mistral"},
      {R"({"chat_template": "{{'<|im_start|>'}}"})", "chatml"},
      {R"({"chat_template": [{"name": "tool_use", "template": "[INST]"},
                             {"name": "default", "template": "<|im_start|>"}]})", "chatml"},
      {R"({"chat_template": "unknown format"})", "llama2"},  // fallback
      {R"({})", "llama2"},                                   // fallback
  };
  for (const Case& c : cases) {
    auto t = ChatTemplate::FromTokenizerConfig(c.config, "llama2");
    ASSERT_TRUE(t.ok()) << c.config << " " << t.status().ToString();
    EXPECT_EQ(t->family(), c.family) << c.config;
  }
  auto t = ChatTemplate::FromTokenizerConfig(
      R"({"chat_template": "[INST]", "bos_token": {"content": "<B>"}, "eos_token": "<E>"})", "x");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->bos_token(), "<B>");
  EXPECT_EQ(t->eos_token(), "<E>");
  EXPECT_EQ(*t->Apply(std::vector<ChatMessage>{{"user", "q"}, {"assistant", "a"}}, false),
            "<B>[INST] q [/INST]a<E>");
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig("{not json", "llama3").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig("{}", "nope").status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvmesh::tokenizer
