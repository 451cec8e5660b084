#include "cli/trace_workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

namespace kvmesh::bench {
namespace {

TEST(SyntheticWorkload, SameSeedSameRequestsOtherSeedOthers) {
  SyntheticOptions o;
  o.seed = 7;
  o.input = {100, LengthDist::kUniform, 0.5};
  o.output = {20, LengthDist::kNormal, 0.5};
  SyntheticOptions p = o;
  p.seed = 8;
  size_t differ = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    const BenchRequest a = SyntheticRequest(o, i), b = SyntheticRequest(o, i);
    EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
    EXPECT_EQ(a.max_tokens, b.max_tokens);
    EXPECT_EQ(a.prompt_tokens.size(), a.prompt_len);
    if (SyntheticRequest(p, i).prompt_tokens != a.prompt_tokens) ++differ;
  }
  EXPECT_EQ(differ, 50u);
  // Requests of one seed differ from each other.
  EXPECT_NE(SyntheticRequest(o, 0).prompt_tokens, SyntheticRequest(o, 1).prompt_tokens);
}

TEST(SyntheticWorkload, TokensInVocabAndLengthsInRange) {
  SyntheticOptions o;
  o.vocab_size = 50;
  o.input = {200, LengthDist::kUniform, 0.25};
  o.output = {10, LengthDist::kFixed, 0.5};
  uint32_t lo = UINT32_MAX, hi = 0;
  double sum = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    const BenchRequest r = SyntheticRequest(o, i);
    for (int32_t t : r.prompt_tokens) ASSERT_TRUE(t >= 0 && t < 50) << t;
    EXPECT_EQ(r.max_tokens, 10u);
    lo = std::min(lo, r.prompt_len);
    hi = std::max(hi, r.prompt_len);
    sum += r.prompt_len;
  }
  EXPECT_GE(lo, 150u);
  EXPECT_LE(hi, 250u);
  EXPECT_LT(lo, 160u);  // the range is actually used
  EXPECT_GT(hi, 240u);
  EXPECT_NEAR(sum / 2000, 200, 5);
}

TEST(SyntheticWorkload, NormalLengthsHaveTheMeanAndStayClipped) {
  LengthSpec s{100, LengthDist::kNormal, 0.5};  // stddev 25
  double sum = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const uint32_t v = SampleLength(s, static_cast<uint64_t>(i));
    ASSERT_GE(v, 1u);
    ASSERT_LE(v, 200u);
    sum += v;
    sq += double(v) * v;
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 100, 1.5);
  EXPECT_NEAR(sd, 25, 2);
}

TEST(SyntheticWorkload, SharedPrefixRatioAndGroups) {
  SyntheticOptions o;
  o.input = {400, LengthDist::kFixed, 0};
  o.shared_prefix_ratio = 0.75;
  o.num_prefixes = 4;
  std::map<int32_t, std::vector<int32_t>> prefix_of_group;
  std::map<int32_t, int> count;
  for (uint64_t i = 0; i < 400; ++i) {
    const BenchRequest r = SyntheticRequest(o, i);
    ASSERT_GE(r.prefix_group, 0);
    ASSERT_LT(r.prefix_group, 4);
    ASSERT_EQ(r.shared_prefix_len, 300u);
    std::vector<int32_t> prefix(r.prompt_tokens.begin(), r.prompt_tokens.begin() + 300);
    auto [it, inserted] = prefix_of_group.emplace(r.prefix_group, prefix);
    if (!inserted) {
      EXPECT_EQ(it->second, prefix) << "request " << i;
    }
    ++count[r.prefix_group];
  }
  ASSERT_EQ(prefix_of_group.size(), 4u);
  for (auto& [g, c] : count) EXPECT_GT(c, 60) << "group " << g;  // ~100 each
  // Groups differ, and the suffix after the shared part is not shared (position 300).
  EXPECT_NE(prefix_of_group[0], prefix_of_group[1]);
  std::set<std::vector<int32_t>> suffixes;
  for (uint64_t i = 0; i < 50; ++i) {
    const BenchRequest r = SyntheticRequest(o, i);
    suffixes.emplace(r.prompt_tokens.begin() + 300, r.prompt_tokens.end());
  }
  EXPECT_EQ(suffixes.size(), 50u);
}

TEST(SyntheticWorkload, NoPrefixMeansNoSharing) {
  SyntheticOptions o;
  o.input = {64, LengthDist::kFixed, 0};
  const BenchRequest a = SyntheticRequest(o, 0), b = SyntheticRequest(o, 1);
  EXPECT_EQ(a.prefix_group, -1);
  size_t same_leading = 0;
  while (same_leading < 64 && a.prompt_tokens[same_leading] == b.prompt_tokens[same_leading])
    ++same_leading;
  EXPECT_LT(same_leading, 4u);
}

TEST(SyntheticWorkload, TextModeBuildsWordsWithSharedPrefix) {
  SyntheticOptions o;
  o.text = true;
  o.input = {40, LengthDist::kFixed, 0};
  o.shared_prefix_ratio = 0.5;
  o.num_prefixes = 1;
  const BenchRequest a = SyntheticRequest(o, 0), b = SyntheticRequest(o, 1);
  EXPECT_TRUE(a.prompt_tokens.empty());
  auto words = [](const std::string& s) {
    std::vector<std::string> w;
    size_t p = 0;
    while (p <= s.size()) {
      size_t q = s.find(' ', p);
      if (q == std::string::npos) q = s.size();
      w.push_back(s.substr(p, q - p));
      p = q + 1;
    }
    return w;
  };
  const auto wa = words(a.prompt_text), wb = words(b.prompt_text);
  ASSERT_EQ(wa.size(), 40u);
  ASSERT_EQ(wb.size(), 40u);
  EXPECT_TRUE(std::equal(wa.begin(), wa.begin() + 20, wb.begin()));
  EXPECT_NE(a.prompt_text, b.prompt_text);
}

TEST(SyntheticWorkload, ValidateNamesTheField) {
  SyntheticOptions o;
  o.shared_prefix_ratio = 1.0;
  EXPECT_NE(o.Validate().message().find("shared_prefix_ratio"), std::string::npos);
  o = {};
  o.input.mean = 0;
  EXPECT_NE(o.Validate().message().find("input_len"), std::string::npos);
  o = {};
  o.vocab_size = 1;
  EXPECT_FALSE(o.Validate().ok());
  EXPECT_TRUE(SyntheticOptions{}.Validate().ok());
  EXPECT_FALSE(ParseLengthDist("zipf").ok());
  EXPECT_EQ(*ParseLengthDist("normal"), LengthDist::kNormal);
}

TEST(PoissonArrivals, DeterministicWithTheRightRate) {
  const auto a = PoissonArrivals(20, 3, 5000), b = PoissonArrivals(20, 3, 5000);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, PoissonArrivals(20, 4, 5000));
  EXPECT_EQ(a[0], 0);
  for (size_t i = 1; i < a.size(); ++i) ASSERT_GE(a[i], a[i - 1]);
  // 5000 arrivals at 20/s take ~250 s; the mean gap is 1/20 with sd 1/20/sqrt(5000) ~ 0.0007.
  EXPECT_NEAR(a.back() / 4999, 0.05, 0.003);
  // Exponential gaps: about e^-1 of them exceed the mean.
  size_t longer = 0;
  for (size_t i = 1; i < a.size(); ++i) longer += (a[i] - a[i - 1]) > 0.05;
  EXPECT_NEAR(double(longer) / 4999, std::exp(-1.0), 0.03);
  EXPECT_EQ(PoissonArrivals(0, 1, 3), (std::vector<double>{0, 0, 0}));
}

TEST(TraceMapping, EqualHashIdsGiveEqualTokens) {
  TraceMapping m;
  m.length_scale = 16.0 / 512;
  m.vocab_size = 1000;
  ASSERT_TRUE(m.Validate().ok());
  ASSERT_EQ(m.ScaledBlockTokens(), 16u);
  TraceRecord a{0, 512 * 2 + 100, 500, {0, 1, 2}};
  TraceRecord b{1000, 512 * 3 + 512, 30, {0, 1, 7, 8}};
  const BenchRequest ra = TraceRecordToRequest(a, m, 0), rb = TraceRecordToRequest(b, m, 1);
  // a: 2 full blocks + ceil(100/32)=4 tokens; b: 4 full blocks.
  ASSERT_EQ(ra.prompt_tokens.size(), 16u * 2 + 4);
  ASSERT_EQ(rb.prompt_tokens.size(), 16u * 4);
  EXPECT_TRUE(std::equal(ra.prompt_tokens.begin(), ra.prompt_tokens.begin() + 32,
                         rb.prompt_tokens.begin()));
  EXPECT_NE(std::vector<int32_t>(ra.prompt_tokens.begin() + 32, ra.prompt_tokens.end()),
            std::vector<int32_t>(rb.prompt_tokens.begin() + 32, rb.prompt_tokens.begin() + 36));
  // A block's tokens are a pure function of its id: the partial last block is a prefix of the full.
  const auto full = HashIdTokens(2, 16, 1000);
  EXPECT_TRUE(std::equal(ra.prompt_tokens.begin() + 32, ra.prompt_tokens.end(), full.begin()));
  EXPECT_EQ(HashIdTokens(12345, 16, 1000), HashIdTokens(12345, 16, 1000));
  EXPECT_NE(HashIdTokens(1, 16, 1000), HashIdTokens(2, 16, 1000));
  for (int32_t t : HashIdTokens(99, 512, 7)) ASSERT_TRUE(t >= 0 && t < 7);
  // Output and time scaling.
  EXPECT_EQ(ra.max_tokens, 16u);  // round(500/32)
  EXPECT_EQ(rb.max_tokens, 1u);   // round(30/32), at least 1
  EXPECT_DOUBLE_EQ(*rb.arrival_s, 1.0);
  m.time_scale = 0.5;
  m.max_output_tokens = 8;
  EXPECT_DOUBLE_EQ(*TraceRecordToRequest(b, m, 1).arrival_s, 0.5);
  EXPECT_EQ(TraceRecordToRequest(a, m, 0).max_tokens, 8u);
}

TEST(TraceMapping, UnscaledKeepsTraceLengths) {
  TraceMapping m;  // 512 tokens per block
  TraceRecord r{0, 6755, 500, {}};
  for (uint64_t i = 0; i < 14; ++i) r.hash_ids.push_back(i);
  const BenchRequest q = TraceRecordToRequest(r, m, 0);
  EXPECT_EQ(q.prompt_tokens.size(), 6755u);
  EXPECT_EQ(q.max_tokens, 500u);
  // input_length larger than the blocks allow: the last block is full, not longer.
  r.input_length = 100000;
  EXPECT_EQ(TraceRecordToRequest(r, m, 0).prompt_tokens.size(), 14u * 512);
  TraceMapping bad;
  bad.length_scale = 0;
  EXPECT_FALSE(bad.Validate().ok());
  bad = {};
  bad.time_scale = -1;
  EXPECT_FALSE(bad.Validate().ok());
}

// The trace file itself (LoadMooncakeTrace, FindSharedTrace): kv/trace_loader_test.cc.

TEST(TraceMapping, SharedTraceMapsPrefixSharingOfTheRealFile) {
  auto path = FindSharedTrace("mooncake_conversation_trace.jsonl");
  if (!path) GTEST_SKIP() << "shared trace not present";
  auto records = LoadMooncakeTrace(*path, 200);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 200u);
  TraceMapping m;
  m.length_scale = 16.0 / 512;
  // Any two records that share their first hash id share their first 16 tokens, and vice versa.
  std::map<uint64_t, std::vector<int32_t>> first_block;
  for (size_t i = 0; i < records->size(); ++i) {
    const BenchRequest r = TraceRecordToRequest((*records)[i], m, i);
    ASSERT_GE(r.prompt_tokens.size(), 1u);
    if ((*records)[i].hash_ids.size() < 2) continue;
    std::vector<int32_t> fb(r.prompt_tokens.begin(), r.prompt_tokens.begin() + 16);
    auto [it, inserted] = first_block.emplace((*records)[i].hash_ids[0], fb);
    if (!inserted) {
      EXPECT_EQ(it->second, fb);
    }
  }
  std::set<std::vector<int32_t>> distinct;
  for (auto& [id, fb] : first_block) distinct.insert(fb);
  EXPECT_EQ(distinct.size(), first_block.size());
}

}  // namespace
}  // namespace kvmesh::bench
