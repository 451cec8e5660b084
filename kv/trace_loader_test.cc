#include "kv/trace_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace kvmesh::kv {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TraceLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kvmesh-trace-loader-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& text, const std::string& name = "t.jsonl") {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(TraceLoaderTest, LoadsRecordsSkipsBlankLinesAndStopsAtMax) {
  const std::string p = Write(
      "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n"
      "\n"
      "   \r\n"
      "{\"timestamp\": 250.5, \"input_length\": 10, \"output_length\": 7, \"hash_ids\": [0]}\n"
      "{\"input_length\": 10, \"output_length\": 7, \"hash_ids\": [3, 18446744073709551615]}\n");
  auto all = LoadMooncakeTrace(p, 0);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_DOUBLE_EQ((*all)[0].timestamp_ms, 0);
  EXPECT_EQ((*all)[0].input_length, 600u);
  EXPECT_EQ((*all)[0].output_length, 5u);
  EXPECT_EQ((*all)[0].hash_ids, (std::vector<uint64_t>{0, 1}));
  EXPECT_DOUBLE_EQ((*all)[1].timestamp_ms, 250.5);
  EXPECT_EQ((*all)[1].output_length, 7u);
  EXPECT_DOUBLE_EQ((*all)[2].timestamp_ms, 0);  // no timestamp: 0
  EXPECT_EQ((*all)[2].hash_ids, (std::vector<uint64_t>{3, 18446744073709551615ull}));
  auto two = LoadMooncakeTrace(p, 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2u);
}

TEST_F(TraceLoaderTest, StopsBeforeAMalformedLineAfterMax) {
  const std::string p = Write(
      "{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [0]}\n"
      "not json\n");
  auto one = LoadMooncakeTrace(p, 1);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->size(), 1u);
  EXPECT_FALSE(LoadMooncakeTrace(p, 0).ok());
}

TEST_F(TraceLoaderTest, MalformedLinesNamePathAndLine) {
  const std::string good =
      "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n";
  struct Case {
    std::string line;
    std::string what;  // expected in the message
  };
  const std::vector<Case> cases = {
      {"{\"timestamp\": 0, \"input_length\": 600, \"hash_ids\": [0, 1]}", "output_length"},
      {"{\"timestamp\": 0, \"output_length\": 5, \"hash_ids\": [0, 1]}", "input_length"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5}", "hash_ids"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": []}",
       "hash_ids is empty"},
      {"{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 5, \"hash_ids\": [1]}",
       "input_length is 0"},
      {"{\"timestamp\": -1, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [1]}",
       "negative timestamp"},
      {"{\"timestamp\": 0, \"input_length\": \"6\", \"output_length\": 5, \"hash_ids\": [1]}",
       "input_length is \"6\""},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": -5, \"hash_ids\": [1]}",
       "output_length is -5"},
      {"{\"timestamp\": 0, \"input_length\": 4294967296, \"output_length\": 5, \"hash_ids\": [1]}",
       "input_length is 4294967296"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [-1]}",
       "hash_ids holds -1"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [1.5]}",
       "hash_ids holds 1.5"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": 3}",
       "hash_ids is not an array"},
      {"{\"timestamp\": \"now\", \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [1]}",
       "timestamp"},
      {"{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 5, \"hash_ids\": [1]",
       "parse error"},
      {"[1, 2]", "not a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string p = Write(good + "\n" + c.line + "\n" + good);
    auto r = LoadMooncakeTrace(p, 0);
    ASSERT_FALSE(r.ok()) << c.line;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(r.status().message(), HasSubstr(p + ":3: ")) << c.line;
    EXPECT_THAT(r.status().message(), HasSubstr(c.what)) << c.line;
  }
}

TEST_F(TraceLoaderTest, MissingFileIsNotFoundNamingThePath) {
  const std::string p = (dir_ / "missing.jsonl").string();
  auto r = LoadMooncakeTrace(p, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(p));
}

TEST_F(TraceLoaderTest, EmptyFileHasNoRecords) {
  auto r = LoadMooncakeTrace(Write(""), 0);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
  auto blank = LoadMooncakeTrace(Write("\n\n  \n", "blank.jsonl"), 0);
  ASSERT_TRUE(blank.ok()) << blank.status().ToString();
  EXPECT_TRUE(blank->empty());
}

TEST(MooncakePromptTokens, LengthIsInputLengthCappedByTheBlocks) {
  TraceRecord r{0, 700, 1, {4, 9}};
  EXPECT_EQ(MooncakePromptTokens(r, 32000).size(), 700u);
  r.input_length = 5000;  // more than 2 blocks of 512 cover
  EXPECT_EQ(MooncakePromptTokens(r, 32000).size(), 1024u);
  r.input_length = 1;
  EXPECT_EQ(MooncakePromptTokens(r, 32000).size(), 1u);
}

TEST(MooncakePromptTokens, EqualIdsGiveEqualTokensAtEqualPositions) {
  const TraceRecord a{0, 1024 + 100, 1, {7, 8, 9}};
  const TraceRecord b{5, 1024 + 512, 1, {7, 8, 10}};
  const auto ta = MooncakePromptTokens(a, 128000), tb = MooncakePromptTokens(b, 128000);
  ASSERT_EQ(ta.size(), 1124u);
  ASSERT_EQ(tb.size(), 1536u);
  // The shared ids 7, 8 are a shared 1024-token prefix; the next block differs.
  EXPECT_TRUE(std::equal(ta.begin(), ta.begin() + 1024, tb.begin()));
  EXPECT_FALSE(std::equal(ta.begin() + 1024, ta.end(), tb.begin() + 1024));
  // A block's tokens depend on its id only, not on the record: id 9 alone is ta's third block.
  const auto t9 = MooncakePromptTokens(TraceRecord{0, 100, 1, {9}}, 128000);
  EXPECT_TRUE(std::equal(t9.begin(), t9.end(), ta.begin() + 1024));
  // The 512 tokens of one block are not all equal, and ids give different blocks.
  const auto t7 = MooncakePromptTokens(TraceRecord{0, 512, 1, {7}}, 128000);
  EXPECT_NE(std::count(t7.begin(), t7.end(), t7[0]), 512);
}

TEST(MooncakePromptTokens, KnownValuesAndVocabRange) {
  // Token t of id h is SplitMix64(h * 512 + t) % vocab: pinned so that a change to the formula,
  // which would change every replay's numbers, is caught here.
  const auto t = MooncakePromptTokens(TraceRecord{0, 3, 1, {0}}, 1u << 31);
  ASSERT_EQ(t.size(), 3u);
  // SplitMix64(0..2) = the first output of the SplitMix64 generator seeded with 0, 1, 2.
  EXPECT_EQ(t[0], static_cast<uint32_t>(0xE220A8397B1DCDAFull % (1u << 31)));
  EXPECT_EQ(t[1], static_cast<uint32_t>(0x910A2DEC89025CC1ull % (1u << 31)));
  EXPECT_EQ(t[2], static_cast<uint32_t>(0x975835DE1C9756CEull % (1u << 31)));
  // Id 5 at the prefix index benchmark's vocabulary (values computed in Python).
  EXPECT_EQ(MooncakePromptTokens(TraceRecord{0, 3, 1, {5}}, 32000),
            (std::vector<uint32_t>{6922, 31967, 17707}));
  for (uint32_t tok : MooncakePromptTokens(TraceRecord{0, 2048, 1, {1, 2, 3, 4}}, 7)) {
    ASSERT_LT(tok, 7u);
  }
}

TEST_F(TraceLoaderTest, FindSharedTraceHonoursKvmeshSharedDir) {
  fs::create_directories(dir_ / "data" / "traces");
  Write("", "data/traces/x.jsonl");
  const char* old = std::getenv("KVMESH_SHARED_DIR");
  const std::string saved = old ? old : "";
  ::setenv("KVMESH_SHARED_DIR", dir_.c_str(), 1);
  auto found = FindSharedTrace("x.jsonl");
  if (old) {
    ::setenv("KVMESH_SHARED_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("KVMESH_SHARED_DIR");
  }
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(*found, fs::weakly_canonical(dir_ / "data" / "traces" / "x.jsonl").string());
  EXPECT_FALSE(FindSharedTrace("no-such-trace-file.jsonl").has_value());
}

}  // namespace
}  // namespace kvmesh::kv
