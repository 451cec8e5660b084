// Compares kvmesh's tokenizer with goldens produced by an independent implementation
// (transformers.js, see testdata/gen_goldens.mjs) on four miniature real-world tokenizer layouts.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::tokenizer {
namespace {

using testing::ReadTestFile;

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, MatchesTransformersJs) {
  const std::string file = GetParam();
  auto goldens = nlohmann::json::parse(ReadTestFile("goldens.json"));
  ASSERT_TRUE(goldens["tokenizers"].contains(file)) << file;
  auto tok = Tokenizer::FromFile(testing::TestDataDir() + "/" + file);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  int cases = 0;
  for (const auto& g : goldens["tokenizers"][file]) {
    const std::string text = g["text"].get<std::string>();
    const auto want = g["ids"].get<std::vector<int32_t>>();
    const auto want_special = g["ids_with_special"].get<std::vector<int32_t>>();
    EXPECT_EQ((*tok)->Encode(text, false), want) << file << " text: " << text;
    EXPECT_EQ((*tok)->Encode(text, true), want_special) << file << " text: " << text;
    EXPECT_EQ((*tok)->Decode(want, false), g["decoded"].get<std::string>()) << file << " " << text;
    EXPECT_EQ((*tok)->Decode(want_special, true), g["decoded_skip_special"].get<std::string>())
        << file << " text: " << text;
    ++cases;
  }
  EXPECT_GE(cases, 30);
}

INSTANTIATE_TEST_SUITE_P(Files, GoldenTest,
                         ::testing::Values("llama3_bpe.json", "gpt2_bpe.json", "llama2_spm.json",
                                           "mistral_metaspace.json", "metaspace_split_always.json",
                                           "builtin_bpe_1024.json"),
                         [](const auto& info) {
                           std::string n = info.param.substr(0, info.param.find('.'));
                           return n;
                         });

}  // namespace
}  // namespace kvmesh::tokenizer
