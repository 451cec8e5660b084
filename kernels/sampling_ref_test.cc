// SampleUniform and ref::Sample: greedy and its tie rule, top_k = 1 == greedy, the empirical
// distribution of temperature sampling vs softmax (20000 draws of an 8-token vocabulary; each
// frequency within 0.015 of its probability, > 4 standard deviations for p <= 0.5), top_k and
// top_p exclusions, determinism in (seed, step) and independence from the row's batch position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/sampling.h"

namespace kvmesh::kernels {
namespace {

std::vector<int32_t> SampleAll(const std::vector<float>& logits,
                               const std::vector<SamplingRow>& rows, int64_t vocab) {
  const auto n = static_cast<int64_t>(rows.size());
  std::vector<float> ws(
      static_cast<size_t>(std::max<int64_t>(1, ref::SampleWorkspaceFloats(n, vocab))));
  std::vector<int32_t> out(rows.size(), -1);
  ref::Sample(out.data(), logits.data(), rows.data(), n, vocab, ws.data(), nullptr);
  return out;
}

int32_t SampleOne(const std::vector<float>& logits, const SamplingRow& row) {
  return SampleAll(logits, {row}, static_cast<int64_t>(logits.size()))[0];
}

std::vector<float> RandomLogits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(SampleUniformTest, IsSplitMix64OutputTopBits) {
  // SplitMix64 seeded with 0 first outputs 0xE220A8397B1DCDAF (Vigna's reference generator).
  EXPECT_EQ(SampleUniform(0, 0), static_cast<float>(0xE220A8) / 16777216.0f);
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = SampleUniform(42, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.01);
  EXPECT_EQ(SampleUniform(7, 3), SampleUniform(7, 3));
  EXPECT_NE(SampleUniform(7, 3), SampleUniform(7, 4));
  EXPECT_NE(SampleUniform(7, 3), SampleUniform(8, 3));
}

TEST(SampleTest, GreedyIsArgmaxWithLowestIdOnTies) {
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 3.0f, 1.0f, 3.0f, 3.0f};
  SamplingRow greedy;  // temperature 0
  EXPECT_EQ(SampleOne(logits, greedy), 3);
  logits[3] = 2.5f;
  EXPECT_EQ(SampleOne(logits, greedy), 5);
  SamplingRow negative_t;
  negative_t.temperature = -1.0f;
  EXPECT_EQ(SampleOne(logits, negative_t), 5);
  EXPECT_EQ(SampleOne({-5.0f, -5.0f}, greedy), 0);
}

TEST(SampleTest, TopKOneIsGreedyWhateverTheTemperature) {
  for (uint32_t s = 0; s < 20; ++s) {
    const auto logits = RandomLogits(1000 + s, s);
    const auto argmax =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    SamplingRow row{.temperature = 5.0f, .top_k = 1, .top_p = 0.9f, .seed = s, .step = 3};
    EXPECT_EQ(SampleOne(logits, row), argmax);
  }
}

std::vector<double> Frequencies(const std::vector<float>& logits, SamplingRow row, int draws) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    row.seed = 1000 + static_cast<uint64_t>(i) * 7919;
    row.step = static_cast<uint64_t>(i % 5);
    const int32_t t = SampleOne(logits, row);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(logits.size()));
    freq[static_cast<size_t>(t)] += 1.0 / draws;
  }
  return freq;
}

TEST(SampleTest, TemperatureSamplingFollowsSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
  for (float t : {0.7f, 1.0f, 2.0f}) {
    SamplingRow row{.temperature = t};
    const auto freq = Frequencies(logits, row, 20000);
    double z = 0;
    for (float x : logits) z += std::exp(x / t);
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_NEAR(freq[i], std::exp(logits[i] / t) / z, 0.015) << "T=" << t << " token " << i;
    }
  }
}

TEST(SampleTest, TopKKeepsOnlyTheKBestRenormalized) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
  SamplingRow row{.temperature = 1.0f, .top_k = 3};
  const auto freq = Frequencies(logits, row, 20000);
  const double z = std::exp(2.2) + std::exp(2.0) + std::exp(1.5);
  for (size_t i = 0; i < logits.size(); ++i) {
    const bool kept = i == 6 || i == 1 || i == 4;
    EXPECT_NEAR(freq[i], kept ? std::exp(logits[i]) / z : 0.0, kept ? 0.015 : 0.0) << i;
  }
}

TEST(SampleTest, TopPExcludesTheTail) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps {0, 1} (0.5 < 0.75 <= 0.8).
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingRow row{.temperature = 1.0f, .top_p = 0.75f};
  const auto freq = Frequencies(logits, row, 20000);
  EXPECT_EQ(freq[2], 0.0);
  EXPECT_EQ(freq[3], 0.0);
  EXPECT_NEAR(freq[0], 0.5 / 0.8, 0.015);
  EXPECT_NEAR(freq[1], 0.3 / 0.8, 0.015);
  // A tiny top_p still keeps the top token.
  row.top_p = 0.01f;
  for (uint64_t s = 0; s < 50; ++s) {
    row.seed = s;
    EXPECT_EQ(SampleOne(logits, row), 0);
  }
}

TEST(SampleTest, TopKAllEqualsNoTopKAndLargeVocabIsConsistent) {
  const int64_t vocab = 32000;
  const auto logits = RandomLogits(vocab, 5);
  for (uint64_t s = 0; s < 20; ++s) {
    SamplingRow all{.temperature = 0.8f, .top_k = 0, .top_p = 0.95f, .seed = s, .step = s};
    SamplingRow k_vocab = all;
    k_vocab.top_k = static_cast<int32_t>(vocab);
    SamplingRow k_big = all;
    k_big.top_k = static_cast<int32_t>(vocab) + 100;
    const int32_t a = SampleOne(logits, all);
    EXPECT_EQ(SampleOne(logits, k_vocab), a);
    EXPECT_EQ(SampleOne(logits, k_big), a);
    // With top_k = 50 the token is among the 50 highest logits.
    SamplingRow k50 = all;
    k50.top_k = 50;
    const int32_t t = SampleOne(logits, k50);
    const auto higher = std::count_if(logits.begin(), logits.end(),
                                      [&](float x) { return x > logits[static_cast<size_t>(t)]; });
    EXPECT_LT(higher, 50);
  }
}

TEST(SampleTest, SameSeedAndStepSameTokenAtAnyBatchPosition) {
  const int64_t vocab = 500;
  const SamplingRow target{.temperature = 1.3f, .top_k = 40, .top_p = 0.9f, .seed = 99, .step = 12};
  const auto row_logits = RandomLogits(vocab, 6);
  const int32_t alone = SampleOne(row_logits, target);
  EXPECT_EQ(SampleOne(row_logits, target), alone);
  for (int pos = 0; pos < 4; ++pos) {
    std::vector<float> batch;
    std::vector<SamplingRow> rows;
    for (int r = 0; r < 4; ++r) {
      const auto l = r == pos ? row_logits : RandomLogits(vocab, 100 + r);
      batch.insert(batch.end(), l.begin(), l.end());
      rows.push_back(r == pos ? target
                              : SamplingRow{.temperature = 0.5f, .seed = uint64_t(r), .step = 1});
    }
    EXPECT_EQ(SampleAll(batch, rows, vocab)[static_cast<size_t>(pos)], alone) << "pos " << pos;
  }
  // Different steps of the same seed do not all give the same token.
  std::vector<int32_t> seen;
  for (uint64_t step = 0; step < 30; ++step) {
    SamplingRow r = target;
    r.step = step;
    seen.push_back(SampleOne(row_logits, r));
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_GT(std::unique(seen.begin(), seen.end()) - seen.begin(), 3);
}

}  // namespace
}  // namespace kvmesh::kernels
