// The engine with the built-in tiny model and its tokenizer: streamed text equals the decode of
// all tokens, stop strings cut the text before the match and end the request, and a stop token
// ends the request without becoming text.
#include <gtest/gtest.h>

#include "agent/engine/engine_core.h"
#include "agent/engine/engine_test_util.h"
#include "agent/engine/model_preset.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::engine {
namespace {

class EngineTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test_util::TempDir();
    ASSERT_TRUE(CreatePresetModel("tiny", dir_->path() + "/tiny").ok());
    auto w = ModelWeights::Load(dir_->path() + "/tiny");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    weights_ = new std::shared_ptr<const ModelWeights>(std::move(*w));
    auto t = tokenizer::Tokenizer::FromFile(dir_->path() + "/tiny/tokenizer.json");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tok_ = new std::shared_ptr<const tokenizer::Tokenizer>(std::move(*t));
  }
  static void TearDownTestSuite() {
    delete weights_;
    delete tok_;
    delete dir_;
  }
  std::unique_ptr<EngineCore> Core() {
    EngineOptions o;
    o.num_kv_blocks = 64;
    auto c = EngineCore::Create(o, *weights_, RefKernelOps(), *tok_);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(*c);
  }
  GenerateRequest Req(const std::string& id, int max_tokens) {
    GenerateRequest r;
    r.id = id;
    r.prompt = (*tok_)->Encode("Once upon a time, in a land far away,", true);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.9f;
    r.sampling.seed = 42;
    r.ignore_eos = true;
    return r;
  }
  struct Run {
    std::vector<int32_t> tokens;
    std::string text;
    RequestOutput last;
  };
  static Run RunOne(EngineCore& core) {
    Run r;
    while (core.HasWork()) {
      for (const RequestOutput& o : core.Step()) {
        r.tokens.insert(r.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
        r.text += o.text;
        if (o.finished) r.last = o;
      }
    }
    return r;
  }
  static test_util::TempDir* dir_;
  static std::shared_ptr<const ModelWeights>* weights_;
  static std::shared_ptr<const tokenizer::Tokenizer>* tok_;
};
test_util::TempDir* EngineTextTest::dir_ = nullptr;
std::shared_ptr<const ModelWeights>* EngineTextTest::weights_ = nullptr;
std::shared_ptr<const tokenizer::Tokenizer>* EngineTextTest::tok_ = nullptr;

TEST_F(EngineTextTest, StreamedTextIsTheDecodeOfAllTokens) {
  auto core = Core();
  ASSERT_TRUE(core->AddRequest(Req("a", 40)).ok());
  Run r = RunOne(*core);
  ASSERT_EQ(r.tokens.size(), 40u);
  EXPECT_EQ(r.text, (*tok_)->Decode(r.tokens, true));
  EXPECT_FALSE(r.text.empty());
}

TEST_F(EngineTextTest, StopStringEndsTheRequestBeforeTheMatch) {
  auto core = Core();
  ASSERT_TRUE(core->AddRequest(Req("ref", 40)).ok());
  const Run ref = RunOne(*core);
  ASSERT_GT(ref.text.size(), 12u);
  // A stop string taken from the middle of the reference text (two bytes, at a char boundary).
  size_t at = ref.text.size() / 2;
  while (at > 0 && (static_cast<unsigned char>(ref.text[at]) & 0xC0) == 0x80) --at;
  const std::string stop = ref.text.substr(at, 2);
  GenerateRequest s = Req("stop", 40);
  s.stop = {stop, "a string that never appears \x01"};
  ASSERT_TRUE(core->AddRequest(s).ok());
  const Run r = RunOne(*core);
  EXPECT_EQ(r.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.text, ref.text.substr(0, ref.text.find(stop)));
  EXPECT_LT(r.tokens.size(), ref.tokens.size());
  EXPECT_EQ(core->block_pool().num_blocks_used(), 0u);
}

TEST_F(EngineTextTest, StopTokenEndsTheRequestAndIsNotText) {
  auto core = Core();
  ASSERT_FALSE((*weights_)->config().eos_token_ids.empty());
  ASSERT_TRUE(core->AddRequest(Req("ref", 24)).ok());
  const Run ref = RunOne(*core);
  // The 5th generated token as an extra stop id: the engine stops at its first occurrence and
  // does not emit it as text.
  GenerateRequest s = Req("eos", 24);
  s.ignore_eos = false;
  s.stop_token_ids = {ref.tokens[4]};
  ASSERT_TRUE(core->AddRequest(s).ok());
  const Run r = RunOne(*core);
  EXPECT_EQ(r.last.finish_reason, FinishReason::kStop);
  const size_t first = std::find(ref.tokens.begin(), ref.tokens.end(), ref.tokens[4]) - ref.tokens.begin();
  EXPECT_EQ(r.tokens.size(), first + 1);
  EXPECT_EQ(r.text, (*tok_)->Decode(std::span(ref.tokens.data(), first), true));
}

}  // namespace
}  // namespace kvmesh::engine
