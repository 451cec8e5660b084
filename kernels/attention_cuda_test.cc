// CUDA PagedAttentionDecode / PagedAttentionPrefill against the reference on the same random cache,
// block tables and queries. Cases cover GQA group sizes 1..12 (more than one CTA group chunk),
// head_dim 6 (scalar path), 36, 64, 128, 256, context 0 and 1, block_size 1..32, contexts long
// enough to use split-K, and chunked prefill over a cached prefix.
// Tolerance 3e-5 absolute + 1e-4 relative: outputs are convex combinations of values in [-1, 1];
// fp32 exp and sums in a different order differ by a few ulp per step.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/attention.h"
#include "kernels/cuda_test_util.h"

namespace kvmesh::kernels {
namespace {

using cuda_test::DeviceVec;
using cuda_test::ExpectAllClose;
using cuda_test::ExpectLaunchOk;
using cuda_test::Random;

struct AttnCase {
  int num_q_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  std::vector<int32_t> context_lens;
  std::vector<int32_t> q_lens;  // prefill only; empty = decode
};
void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "q" << c.num_q_heads << "_kv" << c.num_kv_heads << "_d" << c.head_dim << "_bs"
      << c.block_size << "_ctx";
  for (int32_t l : c.context_lens) *os << "-" << l;
  if (!c.q_lens.empty()) *os << "_qlen";
  for (int32_t l : c.q_lens) *os << "-" << l;
}

// Cache of 2 layers (the test uses layer 1), blocks assigned to sequences in a shuffled order.
struct Fixture {
  KvCacheLayout layout;
  std::vector<float> cache;
  std::vector<int32_t> tables;
  int max_blocks = 1;
};

Fixture MakeFixture(const AttnCase& c) {
  Fixture f;
  int total_blocks = 1;
  for (int32_t len : c.context_lens) {
    const int nb = (len + c.block_size - 1) / c.block_size;
    f.max_blocks = std::max(f.max_blocks, nb);
    total_blocks += nb;
  }
  f.layout.num_layers = 2;
  f.layout.num_blocks = total_blocks;
  f.layout.block_size = c.block_size;
  f.layout.num_kv_heads = c.num_kv_heads;
  f.layout.head_dim = c.head_dim;
  f.cache = Random(static_cast<size_t>(f.layout.total_elems()), 21);
  std::vector<int32_t> ids(static_cast<size_t>(total_blocks - 1));
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(22));
  f.tables.assign(c.context_lens.size() * static_cast<size_t>(f.max_blocks), 0);
  size_t next = 0;
  for (size_t s = 0; s < c.context_lens.size(); ++s) {
    const int nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int b = 0; b < nb; ++b) f.tables[s * f.max_blocks + b] = ids[next++];
  }
  return f;
}

class AttentionTest : public cuda_test::CudaParamTest<AttnCase> {};

TEST_P(AttentionTest, MatchesReference) {
  const AttnCase& c = GetParam();
  const Fixture f = MakeFixture(c);
  const int num_seqs = static_cast<int>(c.context_lens.size());
  const bool prefill = !c.q_lens.empty();
  std::vector<int32_t> cu_q(static_cast<size_t>(num_seqs) + 1, 0);
  for (int s = 0; s < num_seqs; ++s) cu_q[s + 1] = cu_q[s] + (prefill ? c.q_lens[s] : 1);
  const int64_t rows = cu_q.back();
  const int64_t heads = static_cast<int64_t>(c.num_q_heads) * c.head_dim;
  const int64_t q_stride = heads + 2 * static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const auto q = Random(static_cast<size_t>(rows * q_stride), 23, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int64_t k_off = f.layout.layer_offset(1, 0);
  const int64_t v_off = f.layout.layer_offset(1, 1);

  std::vector<float> want(static_cast<size_t>(rows * heads));
  DeviceVec<float> d_cache(f.cache), d_q(q), d_out(want.size());
  DeviceVec<int32_t> d_tables(f.tables), d_lens(c.context_lens), d_cu(cu_q);
  if (prefill) {
    ref::PagedAttentionPrefill(want.data(), q.data(), q_stride, f.cache.data() + k_off,
                               f.cache.data() + v_off, f.layout.block_stride(), f.tables.data(),
                               f.max_blocks, cu_q.data(), c.context_lens.data(), num_seqs,
                               c.num_q_heads, c.num_kv_heads, c.head_dim, c.block_size, scale,
                               nullptr);
    cuda::PagedAttentionPrefill(d_out.get(), d_q.get(), q_stride, d_cache.get() + k_off,
                                d_cache.get() + v_off, f.layout.block_stride(), d_tables.get(),
                                f.max_blocks, d_cu.get(), d_lens.get(), num_seqs, c.num_q_heads,
                                c.num_kv_heads, c.head_dim, c.block_size, scale, nullptr);
  } else {
    ref::PagedAttentionDecode(want.data(), q.data(), q_stride, f.cache.data() + k_off,
                              f.cache.data() + v_off, f.layout.block_stride(), f.tables.data(),
                              f.max_blocks, c.context_lens.data(), num_seqs, c.num_q_heads,
                              c.num_kv_heads, c.head_dim, c.block_size, scale, nullptr);
    cuda::PagedAttentionDecode(d_out.get(), d_q.get(), q_stride, d_cache.get() + k_off,
                               d_cache.get() + v_off, f.layout.block_stride(), d_tables.get(),
                               f.max_blocks, d_lens.get(), num_seqs, c.num_q_heads,
                               c.num_kv_heads, c.head_dim, c.block_size, scale, nullptr);
  }
  ExpectLaunchOk(prefill ? "PagedAttentionPrefill" : "PagedAttentionDecode");
  ExpectAllClose(want, d_out.ToHost(), 3e-5, 1e-4, prefill ? "prefill" : "decode");
}

INSTANTIATE_TEST_SUITE_P(
    Decode, AttentionTest,
    ::testing::Values(AttnCase{1, 1, 64, 16, {1}, {}},
                      AttnCase{4, 4, 128, 16, {0, 1, 17, 300}, {}},     // MHA, empty context
                      AttnCase{32, 8, 128, 16, {1000, 33, 4096}, {}},   // Llama-8B heads
                      AttnCase{12, 1, 64, 32, {700, 5}, {}},            // group 12: 2 chunks
                      AttnCase{8, 2, 256, 8, {129, 64}, {}},
                      AttnCase{6, 3, 36, 4, {50, 77, 3}, {}},           // tpt 8
                      AttnCase{2, 1, 6, 1, {9, 40}, {}},                // scalar path
                      AttnCase{8, 1, 128, 16, {8000}, {}}));            // split-K over 8000

INSTANTIATE_TEST_SUITE_P(
    Prefill, AttentionTest,
    ::testing::Values(AttnCase{1, 1, 64, 16, {1}, {1}},
                      AttnCase{4, 4, 128, 16, {40, 100}, {40, 37}},     // second: 63 cached
                      AttnCase{32, 8, 128, 16, {300}, {300}},
                      AttnCase{12, 4, 64, 32, {17, 200, 64}, {1, 150, 64}},
                      AttnCase{8, 2, 256, 8, {90}, {45}},               // > 48 KB shared
                      AttnCase{2, 1, 6, 3, {20, 7}, {20, 2}}));

}  // namespace
}  // namespace kvmesh::kernels
