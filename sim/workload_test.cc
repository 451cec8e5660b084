#include "sim/workload.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "kv/trace_loader.h"

namespace kvmesh::sim {
namespace {

namespace fs = std::filesystem;

std::vector<SimRequest> Drain(Workload& w, size_t limit = 10000000) {
  std::vector<SimRequest> out;
  while (out.size() < limit) {
    auto r = w.Next();
    if (!r) break;
    out.push_back(std::move(*r));
  }
  return out;
}

std::vector<SimRequest> Synthetic(const SyntheticOptions& o) {
  auto w = MakeSyntheticWorkload(o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return Drain(**w);
}

size_t CommonPrefix(const std::vector<kv::BlockHash>& a, const std::vector<kv::BlockHash>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

void CheckInvariants(const std::vector<SimRequest>& reqs, uint32_t block_size) {
  double prev = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const SimRequest& r = reqs[i];
    EXPECT_EQ(r.id, i);
    EXPECT_GE(r.arrival_s, prev) << i;
    prev = r.arrival_s;
    EXPECT_GE(r.input_tokens, 1u);
    EXPECT_GE(r.output_tokens, 1u);
    EXPECT_EQ(r.hashes.size(), r.input_tokens / block_size) << i;
  }
}

TEST(SyntheticWorkloadTest, DeterministicAndSeeded) {
  SyntheticOptions o;
  o.num_requests = 200;
  o.length_jitter = 0.3;
  o.shared_prefix_ratio = 0.4;
  o.num_prefixes = 5;
  o.multi_turn_ratio = 0.3;
  o.num_regions = 2;
  o.regional_affinity = 0.7;
  auto a = Synthetic(o);
  auto b = Synthetic(o);
  ASSERT_EQ(a.size(), 200u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].arrival_s, b[i].arrival_s);
    EXPECT_EQ(a[i].input_tokens, b[i].input_tokens);
    EXPECT_EQ(a[i].output_tokens, b[i].output_tokens);
    EXPECT_EQ(a[i].hashes, b[i].hashes);
    EXPECT_EQ(a[i].region, b[i].region);
  }
  CheckInvariants(a, o.block_size);
  o.seed = 2;
  auto c = Synthetic(o);
  EXPECT_NE(a[5].arrival_s, c[5].arrival_s);
  EXPECT_NE(a[5].hashes, c[5].hashes);
  auto w = MakeSyntheticWorkload(o);
  ASSERT_TRUE(w.ok());
  EXPECT_NE((*w)->Describe().find("synthetic poisson rate=10"), std::string::npos);
}

TEST(SyntheticWorkloadTest, FixedAndJitteredLengths) {
  SyntheticOptions o;
  o.num_requests = 500;
  o.block_size = 64;
  for (const SimRequest& r : Synthetic(o)) {
    EXPECT_EQ(r.input_tokens, 3000u);
    EXPECT_EQ(r.output_tokens, 150u);
    EXPECT_EQ(r.hashes.size(), 46u);  // 3000 / 64 full blocks
  }
  o.length_jitter = 0.5;
  auto reqs = Synthetic(o);
  CheckInvariants(reqs, 64);
  double sum = 0;
  std::set<uint32_t> distinct;
  for (const SimRequest& r : reqs) {
    EXPECT_GE(r.input_tokens, 1500u);
    EXPECT_LE(r.input_tokens, 4500u);
    sum += r.input_tokens;
    distinct.insert(r.input_tokens);
  }
  EXPECT_NEAR(sum / reqs.size(), 3000, 100);
  EXPECT_GT(distinct.size(), 100u);
}

TEST(SyntheticWorkloadTest, PoissonMeanRateAndExponentialGaps) {
  SyntheticOptions o;
  o.rate = 50;
  o.num_requests = 20000;
  o.input_tokens = 32;
  o.output_tokens = 1;
  auto reqs = Synthetic(o);
  // Mean gap 1/50 s: 20000 arrivals span ~400 s (sd of the sum ~ sqrt(20000)/50 = 2.8 s).
  EXPECT_NEAR(reqs.back().arrival_s, 400, 12);
  double sum = 0, sq = 0, prev = 0;
  for (const SimRequest& r : reqs) {
    const double gap = r.arrival_s - prev;
    prev = r.arrival_s;
    sum += gap;
    sq += gap * gap;
  }
  const double mean = sum / reqs.size();
  const double cv = std::sqrt(sq / reqs.size() - mean * mean) / mean;
  EXPECT_NEAR(cv, 1.0, 0.05);  // exponential gaps
  o.poisson = false;
  reqs = Synthetic(o);
  EXPECT_DOUBLE_EQ(reqs[1].arrival_s - reqs[0].arrival_s, 0.02);
  EXPECT_DOUBLE_EQ(reqs.back().arrival_s, 19999 / 50.0);
  o.rate = 0;
  for (const SimRequest& r : Synthetic(o)) EXPECT_EQ(r.arrival_s, 0);
}

TEST(SyntheticWorkloadTest, SharedPrefixGroupsShareExactlyTheirFullBlocks) {
  SyntheticOptions o;
  o.num_requests = 300;
  o.shared_prefix_ratio = 0.5;  // 1500 tokens = 93 full 16-token blocks
  o.num_prefixes = 3;
  auto reqs = Synthetic(o);
  std::map<kv::BlockHash, int> groups;
  for (const SimRequest& r : reqs) groups[r.hashes[0]]++;
  EXPECT_EQ(groups.size(), 3u);
  for (size_t i = 1; i < reqs.size(); ++i) {
    const size_t common = CommonPrefix(reqs[0].hashes, reqs[i].hashes);
    if (reqs[i].hashes[0] == reqs[0].hashes[0]) {
      EXPECT_EQ(common, 93u) << i;
    } else {
      EXPECT_EQ(common, 0u) << i;
    }
  }
  // Without sharing nobody shares a block.
  o.shared_prefix_ratio = 0;
  std::unordered_set<kv::BlockHash> seen;
  for (const SimRequest& r : Synthetic(o)) {
    for (kv::BlockHash h : r.hashes) EXPECT_TRUE(seen.insert(h).second);
  }
}

TEST(SyntheticWorkloadTest, ZipfSkewsGroupPopularity) {
  SyntheticOptions o;
  o.num_requests = 5000;
  o.input_tokens = 64;
  o.shared_prefix_ratio = 1.0;
  o.num_prefixes = 100;
  o.zipf_s = 1.2;
  std::map<kv::BlockHash, int> counts;
  for (const SimRequest& r : Synthetic(o)) counts[r.hashes[0]]++;
  int top = 0;
  for (auto& [h, c] : counts) top = std::max(top, c);
  // P(top) = 1 / sum_{k<=100} k^-1.2 = 0.2775 vs 0.01 uniform (sd ~0.006 at n = 5000).
  EXPECT_NEAR(top / 5000.0, 0.2775, 0.02);
  o.zipf_s = 0;
  counts.clear();
  for (const SimRequest& r : Synthetic(o)) counts[r.hashes[0]]++;
  top = 0;
  for (auto& [h, c] : counts) top = std::max(top, c);
  EXPECT_LT(top, 100);  // uniform: ~50 each
  EXPECT_GT(counts.size(), 95u);
}

TEST(SyntheticWorkloadTest, MultiTurnPromptsExtendEarlierTurns) {
  SyntheticOptions o;
  o.num_requests = 20;
  o.input_tokens = 1000;
  o.output_tokens = 100;
  o.turn_tokens = 50;
  o.multi_turn_ratio = 1.0;
  o.max_conversations = 1;  // one conversation: each request continues the previous one
  o.max_input_tokens = 100000;
  auto reqs = Synthetic(o);
  CheckInvariants(reqs, 16);
  for (size_t i = 1; i < reqs.size(); ++i) {
    EXPECT_EQ(reqs[i].input_tokens, reqs[i - 1].input_tokens + reqs[i - 1].output_tokens + 50) << i;
    EXPECT_EQ(CommonPrefix(reqs[i].hashes, reqs[i - 1].hashes), reqs[i - 1].hashes.size()) << i;
    EXPECT_GT(reqs[i].hashes.size(), reqs[i - 1].hashes.size());
  }
  // A conversation that would outgrow max_input_tokens starts over with a fresh prompt.
  o.max_input_tokens = 1500;
  reqs = Synthetic(o);
  EXPECT_EQ(reqs[1].input_tokens, 1150u);
  EXPECT_EQ(reqs[3].input_tokens, 1450u);
  EXPECT_EQ(reqs[4].input_tokens, 1000u);  // 1600 > 1500
  EXPECT_EQ(CommonPrefix(reqs[4].hashes, reqs[3].hashes), 0u);
  EXPECT_EQ(reqs[5].input_tokens, 1150u);
  // Mixed: about the ratio continue some open conversation.
  o.max_conversations = 64;
  o.max_input_tokens = 1 << 20;
  o.multi_turn_ratio = 0.5;
  o.num_requests = 2000;
  reqs = Synthetic(o);
  int continued = 0;
  for (const SimRequest& r : reqs) continued += r.input_tokens != 1000;
  EXPECT_NEAR(continued / 2000.0, 0.5, 0.05);
}

TEST(SyntheticWorkloadTest, RegionsFollowGroupsWithAffinity) {
  SyntheticOptions o;
  o.num_requests = 3000;
  o.input_tokens = 64;
  o.shared_prefix_ratio = 1.0;
  o.num_prefixes = 6;
  o.num_regions = 3;
  o.regional_affinity = 1.0;
  std::map<kv::BlockHash, std::set<uint32_t>> regions_of_group;
  std::set<uint32_t> all;
  for (const SimRequest& r : Synthetic(o)) {
    regions_of_group[r.hashes[0]].insert(r.region);
    all.insert(r.region);
    EXPECT_LT(r.region, 3u);
  }
  EXPECT_EQ(all, (std::set<uint32_t>{0, 1, 2}));
  for (auto& [g, rs] : regions_of_group) EXPECT_EQ(rs.size(), 1u);  // always the home region
  o.regional_affinity = 0.8;
  std::map<kv::BlockHash, std::map<uint32_t, int>> counts;
  for (const SimRequest& r : Synthetic(o)) counts[r.hashes[0]][r.region]++;
  for (auto& [g, by_region] : counts) {
    int total = 0, top = 0;
    for (auto& [reg, c] : by_region) {
      total += c;
      top = std::max(top, c);
    }
    EXPECT_NEAR(static_cast<double>(top) / total, 0.8, 0.07);
  }
}

TEST(SyntheticWorkloadTest, RejectsBadOptions) {
  auto check = [](auto mutate, const char* field) {
    SyntheticOptions o;
    mutate(o);
    auto w = MakeSyntheticWorkload(o);
    ASSERT_FALSE(w.ok()) << field;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(field), std::string::npos) << w.status().message();
  };
  check([](SyntheticOptions& o) { o.block_size = 0; }, "block_size");
  check([](SyntheticOptions& o) { o.shared_prefix_ratio = 1.5; }, "shared_prefix_ratio");
  check([](SyntheticOptions& o) { o.num_regions = 0; }, "num_regions");
  check([](SyntheticOptions& o) { o.input_tokens = 0; }, "input_tokens");
  check([](SyntheticOptions& o) { o.rate = NAN; }, "rate");
  check([](SyntheticOptions& o) { o.length_jitter = 1; }, "length_jitter");
}

class TraceWorkloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kvmesh-sim-workload-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (fs::path(dir_) / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::vector<SimRequest> Load(const TraceOptions& o) {
    auto w = MakeTraceWorkload(o);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    if (!w.ok()) return {};
    return Drain(**w);
  }
  std::string dir_;
};

constexpr char kMooncake[] =
    R"({"timestamp": 0, "input_length": 1024, "output_length": 10, "hash_ids": [0, 1]}
{"timestamp": 500, "input_length": 1500, "output_length": 20, "hash_ids": [0, 1, 2]}

{"timestamp": 1000, "input_length": 600, "output_length": 0, "hash_ids": [0, 3]}
)";

TEST_F(TraceWorkloadTest, MooncakeHashIdsExpandToChainedSubBlocks) {
  TraceOptions o;
  o.path = Write("t.jsonl", kMooncake);
  auto reqs = Load(o);
  ASSERT_EQ(reqs.size(), 3u);
  CheckInvariants(reqs, 16);
  EXPECT_EQ(reqs[0].hashes.size(), 64u);
  // 1500 tokens: 2 full ids (64 sub-blocks) + 476 tokens of the third = 29 full sub-blocks.
  EXPECT_EQ(reqs[1].hashes.size(), 93u);
  // Sharing hash ids [0, 1] = exactly 2 x 512 / 16 = 64 sequence hashes.
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[1].hashes), 64u);
  // Sharing only id 0 = 32 hashes.
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[2].hashes), 32u);
  EXPECT_EQ(reqs[2].hashes.size(), 37u);
  EXPECT_EQ(reqs[2].output_tokens, 1u);  // output 0 is replayed as 1 token
  EXPECT_DOUBLE_EQ(reqs[1].arrival_s, 0.5);
  EXPECT_DOUBLE_EQ(reqs[2].arrival_s, 1.0);
  // Larger engine blocks re-chunk the same ids.
  o.block_size = 64;
  auto coarse = Load(o);
  EXPECT_EQ(CommonPrefix(coarse[0].hashes, coarse[1].hashes), 16u);
  EXPECT_EQ(coarse[1].hashes.size(), 23u);
}

TEST_F(TraceWorkloadTest, MooncakeTimeScaleRepeatAndTruncation) {
  TraceOptions o;
  o.path = Write("t.jsonl", kMooncake);
  o.time_scale = 0.5;
  o.repeat = 3;
  auto reqs = Load(o);
  ASSERT_EQ(reqs.size(), 9u);
  CheckInvariants(reqs, 16);
  // Copies follow each other every span + mean gap = 1.5 trace seconds, scaled by 0.5.
  const double want[] = {0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0};
  for (size_t i = 0; i < 9; ++i) EXPECT_DOUBLE_EQ(reqs[i].arrival_s, want[i]) << i;
  // Each copy keeps the sharing structure but shares nothing with other copies.
  std::unordered_set<kv::BlockHash> first_copy;
  for (size_t i = 0; i < 3; ++i) first_copy.insert(reqs[i].hashes.begin(), reqs[i].hashes.end());
  for (size_t i = 3; i < 9; ++i) {
    EXPECT_EQ(reqs[i].input_tokens, reqs[i % 3].input_tokens);
    for (kv::BlockHash h : reqs[i].hashes) EXPECT_EQ(first_copy.count(h), 0u) << i;
  }
  EXPECT_EQ(CommonPrefix(reqs[3].hashes, reqs[4].hashes), 64u);
  EXPECT_NE(reqs[3].hashes[0], reqs[6].hashes[0]);
  o.max_requests = 4;
  EXPECT_EQ(Load(o).size(), 4u);
  o.repeat = 1;
  o.max_requests = 2;
  EXPECT_EQ(Load(o).size(), 2u);
  // Seeded: another seed gives other hashes, the same seed the same ones.
  o.max_requests = 0;
  auto a = Load(o);
  o.seed = 7;
  auto b = Load(o);
  EXPECT_NE(a[0].hashes[0], b[0].hashes[0]);
  o.seed = 1;
  EXPECT_EQ(Load(o)[1].hashes, a[1].hashes);
}

// Length scaling keeps the prefix structure: a hash id covers the scaled span (13/32 of 512
// tokens = 13 blocks of 16), so prompts share the same fraction of their scaled lengths.
TEST_F(TraceWorkloadTest, MooncakeLengthScaleKeepsThePrefixStructure) {
  TraceOptions o;
  o.path = Write("t.jsonl", kMooncake);
  o.input_scale = 13.0 / 32;
  o.output_scale = 4;
  auto reqs = Load(o);
  ASSERT_EQ(reqs.size(), 3u);
  CheckInvariants(reqs, 16);
  EXPECT_EQ(reqs[0].input_tokens, 416u);  // 1024 x 0.40625
  EXPECT_EQ(reqs[1].input_tokens, 609u);  // round(609.375)
  EXPECT_EQ(reqs[2].input_tokens, 244u);  // round(243.75)
  EXPECT_EQ(reqs[0].output_tokens, 40u);
  EXPECT_EQ(reqs[1].output_tokens, 80u);
  EXPECT_EQ(reqs[2].output_tokens, 1u);  // output 0 stays at the 1-token floor
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[1].hashes), 26u);  // ids [0, 1] = 2 x 13 blocks
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[2].hashes), 13u);  // id 0
  EXPECT_DOUBLE_EQ(reqs[1].arrival_s, 0.5);                       // arrivals unchanged
  EXPECT_NE((*MakeTraceWorkload(o))->Describe().find("input_scale=0.40625 output_scale=4"),
            std::string::npos);
  // A scale that does not give whole blocks per id rounds the span: 512 x 0.3 / 16 = 9.6 -> 10.
  o.input_scale = 0.3;
  o.output_scale = 1;
  reqs = Load(o);
  EXPECT_EQ(reqs[0].input_tokens, 307u);
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[1].hashes), 19u);  // all of the 19-block prompt
  EXPECT_EQ(CommonPrefix(reqs[0].hashes, reqs[2].hashes), 10u);
  // Unscaled replay is unchanged (and output 0 is still replayed as 1 token).
  o.input_scale = 1;
  EXPECT_EQ(Load(o)[2].output_tokens, 1u);
  for (double bad : {0.0, -1.0, 17.0, std::nan("")}) {
    o.input_scale = bad;
    EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kInvalidArgument) << bad;
    o.input_scale = 1;
    o.output_scale = bad;
    auto w = MakeTraceWorkload(o);
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument) << bad;
    if (!w.ok()) {
      EXPECT_NE(w.status().message().find("output_scale"), std::string::npos);
    }
    o.output_scale = 1;
  }
}

TEST_F(TraceWorkloadTest, AzureCsvParsesDatetimesAndSharesNothing) {
  // The first lines of AzureLLMInferenceTrace_conv_2023.csv, then a midnight crossing.
  TraceOptions o;
  o.path = Write("azure.csv",
                 "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n"
                 "2023-11-16 18:15:50.9951690,396,109\n"
                 "2023-11-16 18:15:51.2224670,879,55\r\n"
                 "2023-11-16 23:59:59.5000000,2048,0\n"
                 "2023-11-17 00:00:01.2500000,17,3");
  auto reqs = Load(o);
  ASSERT_EQ(reqs.size(), 5u);
  CheckInvariants(reqs, 16);
  EXPECT_DOUBLE_EQ(reqs[0].arrival_s, 0);
  EXPECT_NEAR(reqs[1].arrival_s, 4.314579, 1e-6);
  EXPECT_NEAR(reqs[2].arrival_s, 4.541877, 1e-6);
  EXPECT_NEAR(reqs[4].arrival_s - reqs[3].arrival_s, 1.75, 1e-6);
  EXPECT_NEAR(reqs[3].arrival_s, (23 - 18) * 3600.0 + (59 - 15) * 60 + 59.5 - 46.68059, 1e-6);
  EXPECT_EQ(reqs[0].input_tokens, 374u);
  EXPECT_EQ(reqs[0].output_tokens, 44u);
  EXPECT_EQ(reqs[2].input_tokens, 879u);
  EXPECT_EQ(reqs[3].output_tokens, 1u);
  EXPECT_EQ(reqs[0].hashes.size(), 23u);
  EXPECT_EQ(reqs[4].hashes.size(), 1u);
  std::unordered_set<kv::BlockHash> seen;
  for (const SimRequest& r : reqs) {
    for (kv::BlockHash h : r.hashes) EXPECT_TRUE(seen.insert(h).second);
  }
  auto w = MakeTraceWorkload(o);
  ASSERT_TRUE(w.ok());
  EXPECT_NE((*w)->Describe().find("trace azure"), std::string::npos);
}

TEST_F(TraceWorkloadTest, ErrorsNameTheFileAndLine) {
  TraceOptions o;
  o.path = (fs::path(dir_) / "missing.jsonl").string();
  auto w = MakeTraceWorkload(o);
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  o.path = (fs::path(dir_) / "missing.csv").string();
  EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kNotFound);

  o.path =
      Write("bad.jsonl",
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n"
            "{\"timestamp\": 1, \"input_length\": 10\n");
  w = MakeTraceWorkload(o);
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find(o.path + ":2"), std::string::npos) << w.status().message();

  o.path = Write("bad.csv",
                 "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,4808,10\n"
                 "2023-11-16 18:15:47,12x,10\n");
  w = MakeTraceWorkload(o);
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find(o.path + ":3: bad ContextTokens '12x'"), std::string::npos)
      << w.status().message();
  o.path = Write("bad2.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n16/11/2023 18:15,1,1\n");
  w = MakeTraceWorkload(o);
  EXPECT_NE(w.status().message().find(":2: bad TIMESTAMP"), std::string::npos)
      << w.status().message();
  o.path = Write("bad3.csv", "time,in,out\n");
  w = MakeTraceWorkload(o);
  EXPECT_NE(w.status().message().find(":1: header"), std::string::npos) << w.status().message();
  o.path = Write("bad4.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5\n");
  EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kInvalidArgument);
  o.path = Write("empty.csv", "");
  EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kInvalidArgument);
  o.path = Write("trace.txt", "x");
  EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kInvalidArgument);
  o.path = Write("ok.jsonl", kMooncake);
  o.block_size = 48;  // 512 is not a multiple of 48
  EXPECT_EQ(MakeTraceWorkload(o).status().code(), StatusCode::kInvalidArgument);
}

long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Memory and speed of replaying the shipped Mooncake trace 1M times over (docs/simulator.md).
// Not run by default (needs ../shared); run with --gtest_also_run_disabled_tests.
TEST(TraceWorkloadMeasure, DISABLED_MooncakeMillionRequestsRss) {
  auto path = kv::FindSharedTrace("mooncake_conversation_trace.jsonl");
  if (!path) GTEST_SKIP() << "shared trace not found";
  const long before = PeakRssKb();
  const auto t0 = std::chrono::steady_clock::now();
  TraceOptions o;
  o.path = *path;
  o.repeat = 84;  // 84 x 12,031 = 1,010,604
  o.max_requests = 1000000;
  auto w = MakeTraceWorkload(o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const long loaded = PeakRssKb();
  const auto t1 = std::chrono::steady_clock::now();
  uint64_t n = 0, hashes = 0;
  double last = 0;
  while (auto r = (*w)->Next()) {
    ++n;
    hashes += r->hashes.size();
    last = r->arrival_s;
  }
  const auto t2 = std::chrono::steady_clock::now();
  EXPECT_EQ(n, 1000000u);
  std::printf(
      "[measure] %s\n[measure] peak RSS before %ld kB, after load %ld kB, after 1M requests %ld "
      "kB; load %.2f s, iterate %.2f s (%llu hashes, last arrival %.0f s)\n",
      (*w)->Describe().c_str(), before, loaded, PeakRssKb(),
      std::chrono::duration<double>(t1 - t0).count(),
      std::chrono::duration<double>(t2 - t1).count(), static_cast<unsigned long long>(hashes),
      last);
}

}  // namespace
}  // namespace kvmesh::sim
