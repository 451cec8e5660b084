#include "tokenizer/byte_level_bpe_builder.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"
#include "tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::tokenizer {
namespace {

// Built once: training at vocab 1024 is the slow part of this suite.
const std::string& Built1024() {
  static const std::string json = BuildByteLevelBpeTokenizerJson(ByteLevelBpeSpec{});
  return json;
}

TEST(ByteLevelBpeBuilderTest, LoadsRoundTripsAndCompresses) {
  auto tok = Tokenizer::FromJson(Built1024(), "builtin");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto& t = **tok;
  EXPECT_EQ(t.vocab_size(), 1024);
  EXPECT_EQ(t.TokenToId("<|begin_of_text|>"), 1019);
  EXPECT_EQ(t.TokenToId("<|eot_id|>"), 1023);
  EXPECT_EQ(t.bos_id(), 1019);
  for (int32_t id = 1019; id < 1024; ++id) EXPECT_TRUE(t.IsSpecial(id));

  const std::string corpus(EmbeddedEnglishCorpus());
  const auto ids = t.Encode(corpus, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1019);
  EXPECT_LT(ids.size(), corpus.size() / 2) << "tokens=" << ids.size() << " bytes=" << corpus.size();
  EXPECT_EQ(t.Decode(ids, true), corpus);

  std::mt19937 rng(5);
  for (int i = 0; i < 50; ++i) {
    std::string s;
    for (int k = 0; k < 30; ++k) s.push_back(static_cast<char>(0x20 + rng() % 0x5F));
    s += "\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80";
    EXPECT_EQ(t.Decode(t.Encode(s, false), false), s);
  }
}

TEST(ByteLevelBpeBuilderTest, DeterministicAndPinned) {
  EXPECT_EQ(BuildByteLevelBpeTokenizerJson(ByteLevelBpeSpec{}), Built1024());
  // The committed copy (also fed to transformers.js for goldens) must equal the builder's output.
  // Regenerate: KVMESH_WRITE_BUILTIN_TOKENIZER=tokenizer/testdata/builtin_bpe_1024.json <this test>.
  if (const char* path = std::getenv("KVMESH_WRITE_BUILTIN_TOKENIZER")) {
    std::ofstream(path, std::ios::binary) << Built1024();
  }
  EXPECT_EQ(testing::ReadTestFile("builtin_bpe_1024.json"), Built1024());
}

TEST(ByteLevelBpeBuilderTest, VocabSizeIsAParameter) {
  ByteLevelBpeSpec spec;
  spec.vocab_size = 300;
  spec.special_tokens = {"<s>", "</s>"};
  spec.bos_token = "<s>";
  auto tok = Tokenizer::FromJson(BuildByteLevelBpeTokenizerJson(spec), "small");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->vocab_size(), 300);
  EXPECT_EQ((*tok)->bos_id(), 298);
  EXPECT_EQ((*tok)->Encode("hi", true).front(), 298);

  spec.vocab_size = 10;  // too small for merges: bytes + specials only
  spec.bos_token = "";
  tok = Tokenizer::FromJson(BuildByteLevelBpeTokenizerJson(spec), "tiny");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->vocab_size(), 258);
  EXPECT_EQ((*tok)->Encode("hi", true).size(), 2u);  // no BOS, two byte tokens
}

TEST(ByteLevelBpeBuilderTest, ConfigSelectsLlama3Template) {
  const ByteLevelBpeSpec spec;
  const std::string config = BuildTokenizerConfigJson(spec, 2048);
  auto j = nlohmann::json::parse(config);
  EXPECT_EQ(j["model_max_length"], 2048);
  EXPECT_EQ(j["bos_token"], "<|begin_of_text|>");
  EXPECT_EQ(j["eos_token"], "<|eot_id|>");
  auto tmpl = ChatTemplate::FromTokenizerConfig(config, "chatml");
  ASSERT_TRUE(tmpl.ok());
  EXPECT_EQ(tmpl->family(), "llama3");
  auto tok = Tokenizer::FromJson(Built1024(), "builtin");
  ASSERT_TRUE(tok.ok());
  ASSERT_TRUE((*tok)->ApplyTokenizerConfig(config).ok());
  EXPECT_EQ((*tok)->eos_id(), 1023);
  // A rendered prompt encodes its special tokens as single ids.
  auto prompt = tmpl->Apply(std::vector<ChatMessage>{{"user", "Hello"}}, true);
  ASSERT_TRUE(prompt.ok());
  const auto ids = (*tok)->Encode(*prompt, false);
  EXPECT_EQ(ids.front(), 1019);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1023), 1);
}

}  // namespace
}  // namespace kvmesh::tokenizer
