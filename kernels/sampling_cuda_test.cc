// CUDA Sample against the reference, token for token: greedy (with ties), top-k, top-p, both, a
// flat row (every token tied), large vocabularies, many (seed, step) pairs per configuration.
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda_test_util.h"
#include "kernels/sampling.h"

namespace kvmesh::kernels {
namespace {

using cuda_test::DeviceVec;
using cuda_test::ExpectLaunchOk;

struct SampleCase {
  int64_t vocab;
  float temperature;
  int32_t top_k;
  float top_p;
  bool ties;  // logits rounded to a coarse grid so that many are equal
};
void PrintTo(const SampleCase& c, std::ostream* os) {
  *os << "V" << c.vocab << "_T" << c.temperature << "_k" << c.top_k << "_p" << c.top_p
      << (c.ties ? "_ties" : "");
}

class SampleTest : public cuda_test::CudaParamTest<SampleCase> {};

TEST_P(SampleTest, SameTokensAsReference) {
  const SampleCase c = GetParam();
  const int64_t num_rows = 48;
  std::mt19937 rng(31);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(num_rows * c.vocab));
  for (auto& x : logits) x = c.ties ? std::round(dist(rng)) : dist(rng);
  if (c.vocab > 1) logits[1] = logits[0];  // a tie at row 0's start in any case
  std::vector<SamplingRow> rows(static_cast<size_t>(num_rows));
  for (int64_t r = 0; r < num_rows; ++r) {
    SamplingRow& row = rows[static_cast<size_t>(r)];
    row.temperature = c.temperature;
    row.top_k = c.top_k;
    row.top_p = c.top_p;
    row.seed = 1000003ull * static_cast<uint64_t>(r % 7) + 17;
    row.step = static_cast<uint64_t>(r);
  }
  std::vector<float> ws(static_cast<size_t>(ref::SampleWorkspaceFloats(num_rows, c.vocab)));
  std::vector<int32_t> want(static_cast<size_t>(num_rows));
  ref::Sample(want.data(), logits.data(), rows.data(), num_rows, c.vocab, ws.data(), nullptr);

  DeviceVec<float> d_logits(logits);
  DeviceVec<float> d_ws(static_cast<size_t>(cuda::SampleWorkspaceFloats(num_rows, c.vocab)));
  DeviceVec<int32_t> d_out(static_cast<size_t>(num_rows));
  cuda::Sample(d_out.get(), d_logits.get(), rows.data(), num_rows, c.vocab, d_ws.get(), nullptr);
  ExpectLaunchOk("Sample");
  const std::vector<int32_t> got = d_out.ToHost();
  for (int64_t r = 0; r < num_rows; ++r) {
    EXPECT_EQ(got[static_cast<size_t>(r)], want[static_cast<size_t>(r)]) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SampleTest,
    ::testing::Values(SampleCase{1, 1.0f, 0, 1.0f, false},
                      SampleCase{7, 0.0f, 0, 1.0f, true},          // greedy with ties
                      SampleCase{1000, 0.7f, 1, 1.0f, false},      // top_k 1 = greedy
                      SampleCase{1000, 1.0f, 0, 1.0f, false},      // full distribution
                      SampleCase{1000, 0.8f, 40, 1.0f, true},
                      SampleCase{32000, 1.0f, 0, 0.9f, false},
                      SampleCase{32000, 0.6f, 50, 0.95f, true},
                      SampleCase{32000, 2.0f, 31999, 0.5f, false},
                      SampleCase{128256, 1.0f, 0, 1.0f, false},
                      SampleCase{128256, 0.7f, 20, 0.8f, false}));

TEST(SampleFlatRow, AllTiedFollowsIdOrder) {
  if (cuda::UsableDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  // Every logit equal: the order is by id, so the draw is token floor(u * V) up to rounding; the
  // reference decides the rounding and both must agree.
  const int64_t vocab = 5000, num_rows = 16;
  std::vector<float> logits(static_cast<size_t>(vocab * num_rows), 1.5f);
  std::vector<SamplingRow> rows(static_cast<size_t>(num_rows));
  for (int64_t r = 0; r < num_rows; ++r) {
    rows[static_cast<size_t>(r)] = SamplingRow{1.0f, 0, r % 2 ? 0.3f : 1.0f, 99,
                                               static_cast<uint64_t>(r)};
  }
  std::vector<float> ws(static_cast<size_t>(ref::SampleWorkspaceFloats(num_rows, vocab)));
  std::vector<int32_t> want(static_cast<size_t>(num_rows));
  ref::Sample(want.data(), logits.data(), rows.data(), num_rows, vocab, ws.data(), nullptr);
  DeviceVec<float> d_logits(logits);
  DeviceVec<float> d_ws(static_cast<size_t>(cuda::SampleWorkspaceFloats(num_rows, vocab)));
  DeviceVec<int32_t> d_out(static_cast<size_t>(num_rows));
  cuda::Sample(d_out.get(), d_logits.get(), rows.data(), num_rows, vocab, d_ws.get(), nullptr);
  ExpectLaunchOk("Sample");
  EXPECT_EQ(d_out.ToHost(), want);
}

}  // namespace
}  // namespace kvmesh::kernels
