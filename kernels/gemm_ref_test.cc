// Reference Linear (OpenBLAS sgemv / sgemm) and AddInPlace against a naive double dot product.
// Tolerance: |err| <= 2e-6 * k (+1e-5): fp32 accumulation of k products of values in [-1, 1].
// The output is pre-filled with NaN to check that Linear overwrites it (beta = 0 never reads y).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/ref_test_util.h"

namespace kvmesh::kernels {
namespace {

using test_util::Random;

struct Shape {
  int64_t m, n, k;
  bool bias;
};

class LinearTest : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearTest, MatchesNaiveDotProducts) {
  const auto [m, n, k, with_bias] = GetParam();
  const auto x = Random(static_cast<size_t>(m * k), 1);
  const auto w = Random(static_cast<size_t>(n * k), 2);
  const auto bias = Random(static_cast<size_t>(n), 3);
  std::vector<float> y(static_cast<size_t>(m * n), NAN);
  ref::Linear(y.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, m, n, k, nullptr);
  const double tol = 1e-5 + 2e-6 * static_cast<double>(k);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double want = with_bias ? bias[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) want += double(x[r * k + i]) * w[j * k + i];
      ASSERT_NEAR(y[r * n + j], want, tol) << "r=" << r << " j=" << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(Shape{1, 1, 1, false}, Shape{1, 17, 33, true},
                                           Shape{1, 256, 768, false}, Shape{1, 255, 767, true},
                                           Shape{2, 3, 5, true}, Shape{7, 31, 65, false},
                                           Shape{8, 64, 128, true}, Shape{3, 130, 771, true},
                                           Shape{16, 67, 64, false}, Shape{17, 33, 40, true},
                                           Shape{32, 96, 768, false}));

TEST(LinearTest, DecodeRowEqualsBatchedRow) {
  // The sgemv (m == 1) and sgemm (m > 1) paths agree on the same row within fp32 rounding.
  const int64_t n = 40, k = 300;
  const auto x = Random(static_cast<size_t>(4 * k), 5);
  const auto w = Random(static_cast<size_t>(n * k), 6);
  std::vector<float> batched(4 * n), single(n);
  ref::Linear(batched.data(), x.data(), w.data(), nullptr, 4, n, k, nullptr);
  ref::Linear(single.data(), x.data() + 2 * k, w.data(), nullptr, 1, n, k, nullptr);
  for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(single[j], batched[2 * n + j], 1e-4);
}

TEST(AddInPlaceTest, AddsElementwise) {
  for (int64_t n : {1, 7, 1000}) {
    auto y = Random(static_cast<size_t>(n), 7);
    const auto x = Random(static_cast<size_t>(n), 8);
    const auto before = y;
    ref::AddInPlace(y.data(), x.data(), n, nullptr);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[i], before[i] + x[i]);
  }
}

}  // namespace
}  // namespace kvmesh::kernels
