// RopeInvFreq (none / linear / Llama 3.1) against values computed here from the published
// formulas, and ref::ApplyRope against a naive rotation plus the relative-position property.
// Tolerances: inv_freq 1e-6 relative (double formula rounded to fp32); rotation 1e-5 absolute on
// values in [-1, 1]; relative-position dot products 2e-3 absolute (fp32 angle pos * inv_freq at
// positions up to ~2000).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/rope.h"
#include "kernels/ref_test_util.h"

namespace kvmesh::kernels {
namespace {

constexpr double kPi = 3.14159265358979323846;

using test_util::Random;

TEST(RopeInvFreqTest, UnscaledIsThetaPower) {
  const auto f = RopeInvFreq(64, 10000.0f, RopeScaling{});
  ASSERT_EQ(f.size(), 32u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f[1], 1.0 / std::pow(10000.0, 2.0 / 64), 1e-7);
  EXPECT_NEAR(f[31], 1.0 / std::pow(10000.0, 62.0 / 64), 1e-10);
}

TEST(RopeInvFreqTest, LinearDividesByFactor) {
  RopeScaling s;
  s.type = "linear";
  s.factor = 4.0f;
  const auto f = RopeInvFreq(16, 10000.0f, s);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(f[i], 1.0 / std::pow(10000.0, 2.0 * i / 16) / 4.0, 1e-6 * f[i]);
  }
}

TEST(RopeInvFreqTest, Llama3MatchesTransformersFormula) {
  // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original 8192.
  RopeScaling s;
  s.type = "llama3";
  s.factor = 8.0f;
  s.low_freq_factor = 1.0f;
  s.high_freq_factor = 4.0f;
  s.original_max_position_embeddings = 8192;
  const auto f = RopeInvFreq(128, 500000.0f, s);
  ASSERT_EQ(f.size(), 64u);
  auto base = [](int i) { return 1.0 / std::pow(500000.0, 2.0 * i / 128); };
  // i = 0: wavelen 2*pi < 8192/4 -> high frequency, unchanged.
  EXPECT_NEAR(f[0], 1.0, 1e-7);
  // i = 10: wavelen = 2*pi*500000^(20/128) ~ 48 < 2048 -> unchanged.
  EXPECT_NEAR(f[10], base(10), 1e-6 * base(10));
  // i = 50: wavelen ~ 2*pi*500000^(100/128) ~ 1.8e5 > 8192 -> divided by 8.
  EXPECT_NEAR(f[50], base(50) / 8.0, 1e-6 * base(50) / 8.0);
  // i = 30: wavelen = 2*pi*500000^(60/128) ~ 2926, between 2048 and 8192 -> smoothed:
  // smooth = (8192 / wavelen - 1) / (4 - 1), inv = (1 - smooth) * inv / 8 + smooth * inv.
  const double inv30 = base(30);
  const double wavelen30 = 2 * kPi / inv30;
  ASSERT_GT(wavelen30, 2048.0);
  ASSERT_LT(wavelen30, 8192.0);
  const double smooth = (8192.0 / wavelen30 - 1.0) / 3.0;
  const double want30 = (1 - smooth) * inv30 / 8.0 + smooth * inv30;
  EXPECT_NEAR(f[30], want30, 1e-6 * want30);
  EXPECT_GT(f[30], base(30) / 8.0);
  EXPECT_LT(f[30], base(30));
  // Frequencies stay strictly decreasing across the bands.
  for (int i = 1; i < 64; ++i) EXPECT_LT(f[i], f[i - 1]) << i;
}

struct RopeCase {
  int num_tokens, q_heads, kv_heads, head_dim;
};

class ApplyRopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(ApplyRopeTest, MatchesNaiveRotateHalf) {
  const auto [tokens, qh, kvh, hd] = GetParam();
  const int64_t q_stride = static_cast<int64_t>(qh) * hd + 3;
  const int64_t k_stride = static_cast<int64_t>(kvh) * hd + 1;
  auto q = Random(static_cast<size_t>(tokens * q_stride), 1);
  auto k = Random(static_cast<size_t>(tokens * k_stride), 2);
  const auto q0 = q, k0 = k;
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (int t = 0; t < tokens; ++t) pos[t] = (t * 37) % 300;
  const auto inv = RopeInvFreq(hd, 10000.0f, RopeScaling{});
  ref::ApplyRope(q.data(), q_stride, k.data(), k_stride, pos.data(), tokens, qh, kvh, hd,
                 inv.data(), nullptr);
  auto check = [&](const std::vector<float>& before, const std::vector<float>& after,
                   int64_t stride, int heads) {
    const int half = hd / 2;
    for (int t = 0; t < tokens; ++t) {
      for (int h = 0; h < heads; ++h) {
        const int64_t o = t * stride + int64_t{h} * hd;
        for (int i = 0; i < half; ++i) {
          const double a = double(pos[t]) * inv[i];
          const double x1 = before[o + i], x2 = before[o + i + half];
          ASSERT_NEAR(after[o + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
          ASSERT_NEAR(after[o + i + half], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
        }
      }
      for (int64_t e = int64_t{heads} * hd; e < stride; ++e) {
        ASSERT_EQ(after[t * stride + e], before[t * stride + e]) << "padding touched";
      }
    }
  };
  check(q0, q, q_stride, qh);
  check(k0, k, k_stride, kvh);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ApplyRopeTest,
                         ::testing::Values(RopeCase{1, 1, 1, 2}, RopeCase{5, 4, 2, 8},
                                           RopeCase{9, 8, 2, 64}, RopeCase{3, 12, 12, 128}));

TEST(ApplyRopeTest, DotProductDependsOnlyOnRelativePosition) {
  const int hd = 64;
  RopeScaling s;
  s.type = "llama3";
  s.factor = 8.0f;
  s.original_max_position_embeddings = 64;  // puts some pairs in each band at this head_dim
  const auto inv = RopeInvFreq(hd, 10000.0f, s);
  const auto q_base = Random(hd, 3), k_base = Random(hd, 4);
  auto rotated_dot = [&](int m, int n) {
    auto q = q_base, k = k_base;
    std::vector<float> dummy(hd);
    const int32_t pm = m, pn = n;
    ref::ApplyRope(q.data(), hd, dummy.data(), hd, &pm, 1, 1, 1, hd, inv.data(), nullptr);
    ref::ApplyRope(k.data(), hd, dummy.data(), hd, &pn, 1, 1, 1, hd, inv.data(), nullptr);
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * k[i];
    return d;
  };
  for (int delta : {0, 1, 7, 100}) {
    const double ref_dot = rotated_dot(delta, 0);
    for (int n : {3, 250, 1900}) {
      EXPECT_NEAR(rotated_dot(n + delta, n), ref_dot, 2e-3) << "delta " << delta << " n " << n;
    }
  }
  // And it does depend on the distance (the rotation is not the identity).
  EXPECT_GT(std::fabs(rotated_dot(5, 0) - rotated_dot(0, 0)), 1e-2);
}

}  // namespace
}  // namespace kvmesh::kernels
