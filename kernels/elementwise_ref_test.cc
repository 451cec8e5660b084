// Reference RMSNorm, SiluAndMul and EmbeddingLookup against naive double-precision formulas.
// Tolerance: 1e-5 relative (+1e-6 absolute): fp32 rounding of O(dim) sums of values in [-2, 2].
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"

namespace kvmesh::kernels {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

void ExpectNear(double want, float got) { EXPECT_NEAR(got, want, 1e-6 + 1e-5 * std::fabs(want)); }

struct Shape {
  int64_t rows;
  int64_t dim;
};

class ElementwiseTest : public ::testing::TestWithParam<Shape> {};

TEST_P(ElementwiseTest, RmsNormMatchesFormulaAndMayAlias) {
  const auto [rows, dim] = GetParam();
  const float eps = 1e-5f;
  const auto in = Random(static_cast<size_t>(rows * dim), 1);
  const auto weight = Random(static_cast<size_t>(dim), 2, 0.5f, 1.5f);
  std::vector<float> out(in.size(), NAN);
  ref::RmsNorm(out.data(), in.data(), weight.data(), rows, dim, eps, nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(in[r * dim + i]) * in[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i)
      ExpectNear(in[r * dim + i] * inv * weight[i], out[r * dim + i]);
  }
  auto inplace = in;
  ref::RmsNorm(inplace.data(), inplace.data(), weight.data(), rows, dim, eps, nullptr);
  EXPECT_EQ(inplace, out);
}

TEST_P(ElementwiseTest, SiluAndMulMatchesFormula) {
  const auto [rows, dim] = GetParam();
  const auto gate_up = Random(static_cast<size_t>(rows * 2 * dim), 3, -8.0f, 8.0f);
  std::vector<float> out(static_cast<size_t>(rows * dim), NAN);
  ref::SiluAndMul(out.data(), gate_up.data(), rows, dim, nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      const double g = gate_up[r * 2 * dim + i];
      const double u = gate_up[r * 2 * dim + dim + i];
      ExpectNear(g / (1.0 + std::exp(-g)) * u, out[r * dim + i]);
    }
  }
}

TEST_P(ElementwiseTest, EmbeddingCopiesRowsAndZeroesBadIds) {
  const auto [rows, dim] = GetParam();
  const int64_t vocab = 11;
  const auto table = Random(static_cast<size_t>(vocab * dim), 4);
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t t = 0; t < rows; ++t) ids[t] = static_cast<int32_t>((t * 7) % (vocab + 3)) - 1;
  std::vector<float> out(static_cast<size_t>(rows * dim), NAN);
  ref::EmbeddingLookup(out.data(), table.data(), ids.data(), rows, dim, vocab, nullptr);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t i = 0; i < dim; ++i) {
      const bool valid = ids[t] >= 0 && ids[t] < vocab;
      EXPECT_EQ(out[t * dim + i], valid ? table[ids[t] * dim + i] : 0.0f) << "t=" << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ElementwiseTest,
                         ::testing::Values(Shape{1, 1}, Shape{1, 768}, Shape{3, 7}, Shape{5, 33},
                                           Shape{16, 2048}));

TEST(RmsNormTest, ConstantRowNormalizesToWeight) {
  std::vector<float> in(10, 3.0f), w(10, 2.0f), out(10);
  ref::RmsNorm(out.data(), in.data(), w.data(), 1, 10, 0.0f, nullptr);
  for (float y : out) EXPECT_NEAR(y, 2.0f, 1e-6);
}

}  // namespace
}  // namespace kvmesh::kernels
