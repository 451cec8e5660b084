// CUDA RmsNorm, ApplyRope, SiluAndMul, EmbeddingLookup, Linear and AddInPlace against the reference
// backend on the same inputs (table-driven over shapes).
// Tolerances: element-wise ops 1e-5 relative + 1e-6 absolute (fp32 rounding, different
// summation order / expf / rsqrtf); RoPE 2e-5 absolute at positions up to 5000 (sincosf vs
// std::sin/cos of the same fp32 angle); Linear 1e-4 absolute + 1e-4 relative (different fp32
// summation order over k up to 4096 of values in [-1, 1]).
#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "kernels/activation.h"
#include "kernels/cuda_test_util.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace kvmesh::kernels {
namespace {

using cuda_test::DeviceVec;
using cuda_test::ExpectAllClose;
using cuda_test::ExpectLaunchOk;
using cuda_test::Random;

struct RowsDim {
  int64_t rows;
  int64_t dim;
};
void PrintTo(const RowsDim& c, std::ostream* os) { *os << c.rows << "x" << c.dim; }

class RowsDimTest : public cuda_test::CudaParamTest<RowsDim> {};

TEST_P(RowsDimTest, RmsNorm) {
  const auto [rows, dim] = GetParam();
  const auto in = Random(static_cast<size_t>(rows * dim), 1, -2.0f, 2.0f);
  const auto weight = Random(static_cast<size_t>(dim), 2, 0.5f, 1.5f);
  std::vector<float> want(in.size());
  ref::RmsNorm(want.data(), in.data(), weight.data(), rows, dim, 1e-5f, nullptr);
  DeviceVec<float> d_in(in), d_w(weight), d_out(in.size());
  cuda::RmsNorm(d_out.get(), d_in.get(), d_w.get(), rows, dim, 1e-5f, nullptr);
  ExpectLaunchOk("RmsNorm");
  ExpectAllClose(want, d_out.ToHost(), 1e-6, 1e-5, "RmsNorm");
  // In place (out aliases in).
  cuda::RmsNorm(d_in.get(), d_in.get(), d_w.get(), rows, dim, 1e-5f, nullptr);
  ExpectLaunchOk("RmsNorm in place");
  ExpectAllClose(want, d_in.ToHost(), 1e-6, 1e-5, "RmsNorm in place");
}

TEST_P(RowsDimTest, SiluAndMul) {
  const auto [rows, dim] = GetParam();
  const auto gate_up = Random(static_cast<size_t>(rows * 2 * dim), 3, -6.0f, 6.0f);
  std::vector<float> want(static_cast<size_t>(rows * dim));
  ref::SiluAndMul(want.data(), gate_up.data(), rows, dim, nullptr);
  DeviceVec<float> d_in(gate_up), d_out(want.size());
  cuda::SiluAndMul(d_out.get(), d_in.get(), rows, dim, nullptr);
  ExpectLaunchOk("SiluAndMul");
  ExpectAllClose(want, d_out.ToHost(), 1e-6, 1e-5, "SiluAndMul");
}

TEST_P(RowsDimTest, AddInPlace) {
  const auto [rows, dim] = GetParam();
  const int64_t n = rows * dim;
  auto y = Random(static_cast<size_t>(n), 4);
  const auto x = Random(static_cast<size_t>(n), 5);
  DeviceVec<float> d_y(y), d_x(x);
  ref::AddInPlace(y.data(), x.data(), n, nullptr);
  cuda::AddInPlace(d_y.get(), d_x.get(), n, nullptr);
  ExpectLaunchOk("AddInPlace");
  ExpectAllClose(y, d_y.ToHost(), 0.0, 0.0, "AddInPlace");
}

TEST_P(RowsDimTest, EmbeddingLookupWithOutOfRangeIds) {
  const auto [rows, dim] = GetParam();
  const int64_t vocab = 97;
  const auto table = Random(static_cast<size_t>(vocab * dim), 6);
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t t = 0; t < rows; ++t) {
    ids[static_cast<size_t>(t)] = static_cast<int32_t>((t * 37) % (vocab + 3)) - (t % 5 == 4);
  }  // covers -1, vocab, vocab + 1 and in-range ids
  std::vector<float> want(static_cast<size_t>(rows * dim));
  ref::EmbeddingLookup(want.data(), table.data(), ids.data(), rows, dim, vocab, nullptr);
  DeviceVec<float> d_table(table), d_out(want.size());
  DeviceVec<int32_t> d_ids(ids);
  cuda::EmbeddingLookup(d_out.get(), d_table.get(), d_ids.get(), rows, dim, vocab, nullptr);
  ExpectLaunchOk("EmbeddingLookup");
  ExpectAllClose(want, d_out.ToHost(), 0.0, 0.0, "EmbeddingLookup");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RowsDimTest,
                         ::testing::Values(RowsDim{1, 1}, RowsDim{1, 4096}, RowsDim{3, 17},
                                           RowsDim{7, 1000}, RowsDim{64, 2048}, RowsDim{5, 8192}));

struct RopeCase {
  int64_t tokens;
  int num_q_heads;
  int num_kv_heads;
  int head_dim;
  int extra_stride;  // floats after the heads in each row (fused qkv rows)
  const char* scaling;
};
void PrintTo(const RopeCase& c, std::ostream* os) {
  *os << "t" << c.tokens << "_q" << c.num_q_heads << "_kv" << c.num_kv_heads << "_d" << c.head_dim
      << "_x" << c.extra_stride << "_" << (*c.scaling ? c.scaling : "none");
}

class RopeTest : public cuda_test::CudaParamTest<RopeCase> {};

TEST_P(RopeTest, MatchesReference) {
  const RopeCase c = GetParam();
  RopeScaling scaling;
  scaling.type = c.scaling;
  if (scaling.type == "llama3") scaling.factor = 8.0f;
  const auto inv_freq = RopeInvFreq(c.head_dim, 500000.0f, scaling);
  const int64_t q_stride = static_cast<int64_t>(c.num_q_heads) * c.head_dim + c.extra_stride;
  const int64_t k_stride = static_cast<int64_t>(c.num_kv_heads) * c.head_dim + c.extra_stride;
  auto q = Random(static_cast<size_t>(c.tokens * q_stride), 7);
  auto k = Random(static_cast<size_t>(c.tokens * k_stride), 8);
  std::vector<int32_t> pos(static_cast<size_t>(c.tokens));
  for (int64_t t = 0; t < c.tokens; ++t)
    pos[static_cast<size_t>(t)] = static_cast<int32_t>((t * 131) % 5000);
  DeviceVec<float> d_q(q), d_k(k), d_inv(inv_freq);
  DeviceVec<int32_t> d_pos(pos);
  ref::ApplyRope(q.data(), q_stride, k.data(), k_stride, pos.data(), c.tokens, c.num_q_heads,
                 c.num_kv_heads, c.head_dim, inv_freq.data(), nullptr);
  cuda::ApplyRope(d_q.get(), q_stride, d_k.get(), k_stride, d_pos.get(), c.tokens, c.num_q_heads,
                  c.num_kv_heads, c.head_dim, d_inv.get(), nullptr);
  ExpectLaunchOk("ApplyRope");
  ExpectAllClose(q, d_q.ToHost(), 2e-5, 0.0, "q");  // also checks the extra floats are untouched
  ExpectAllClose(k, d_k.ToHost(), 2e-5, 0.0, "k");
}

INSTANTIATE_TEST_SUITE_P(Cases, RopeTest,
                         ::testing::Values(RopeCase{1, 1, 1, 2, 0, ""},
                                           RopeCase{5, 32, 8, 128, 0, "llama3"},
                                           RopeCase{17, 8, 2, 64, 2 * 2 * 64, "linear"},
                                           RopeCase{64, 12, 12, 80, 3, ""},
                                           RopeCase{3, 4, 1, 256, 0, "llama3"}));

struct LinearCase {
  int64_t m, n, k;
  bool bias;
};
void PrintTo(const LinearCase& c, std::ostream* os) {
  *os << "m" << c.m << "_n" << c.n << "_k" << c.k << (c.bias ? "_bias" : "");
}

class LinearTest : public cuda_test::CudaParamTest<LinearCase> {};

TEST_P(LinearTest, MatchesReference) {
  const LinearCase c = GetParam();
  const auto x = Random(static_cast<size_t>(c.m * c.k), 9);
  const auto w = Random(static_cast<size_t>(c.n * c.k), 10);
  const auto b = Random(static_cast<size_t>(c.n), 11);
  std::vector<float> want(static_cast<size_t>(c.m * c.n));
  ref::Linear(want.data(), x.data(), w.data(), c.bias ? b.data() : nullptr, c.m, c.n, c.k, nullptr);
  DeviceVec<float> d_x(x), d_w(w), d_b(b), d_y(want.size());
  cuda::Linear(d_y.get(), d_x.get(), d_w.get(), c.bias ? d_b.get() : nullptr, c.m, c.n, c.k,
               nullptr);
  ExpectLaunchOk("Linear");
  ExpectAllClose(want, d_y.ToHost(), 1e-4, 1e-4, "Linear");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTest,
    ::testing::Values(LinearCase{1, 1, 1, false}, LinearCase{1, 4096, 4096, false},
                      LinearCase{3, 17, 33, true}, LinearCase{64, 1024, 512, true},
                      LinearCase{129, 300, 2048, false}, LinearCase{7, 128256 / 16, 1024, true}));

TEST(LinearStreams, SecondStreamGetsItsOwnHandle) {
  if (cuda::UsableDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  // Two different (fake but distinct) stream values on one thread: the default stream and the
  // per-thread default stream (cudaStreamPerThread == 0x2) are both valid streams.
  const int64_t m = 4, n = 8, k = 16;
  const auto x = Random(static_cast<size_t>(m * k), 12);
  const auto w = Random(static_cast<size_t>(n * k), 13);
  std::vector<float> want(static_cast<size_t>(m * n));
  ref::Linear(want.data(), x.data(), w.data(), nullptr, m, n, k, nullptr);
  DeviceVec<float> d_x(x), d_w(w), d_y1(want.size()), d_y2(want.size());
  cuda::Linear(d_y1.get(), d_x.get(), d_w.get(), nullptr, m, n, k, nullptr);
  cuda::Linear(d_y2.get(), d_x.get(), d_w.get(), nullptr, m, n, k, reinterpret_cast<Stream>(0x2));
  ExpectLaunchOk("Linear on two streams");
  ExpectAllClose(want, d_y1.ToHost(), 1e-5, 1e-5, "default stream");
  ExpectAllClose(want, d_y2.ToHost(), 1e-5, 1e-5, "per-thread stream");
}

}  // namespace
}  // namespace kvmesh::kernels
