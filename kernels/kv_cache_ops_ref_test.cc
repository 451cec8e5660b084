// Reference WriteKvCache, GatherBlocks and ScatterBlocks on a multi-layer block-major cache
// (layout from kernels/backend.h), checked element by element with independent index arithmetic.
// All copies are exact (tolerance 0).
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/kv_cache_ops.h"
#include "kernels/ref_test_util.h"

namespace kvmesh::kernels {
namespace {

using test_util::Random;

struct Case {
  int block_size;
  int num_kv_heads;
  int head_dim;
};

class KvCacheOpsTest : public ::testing::TestWithParam<Case> {};

TEST_P(KvCacheOpsTest, WriteKvCachePutsEachTokenAtItsSlotAndSkipsNegative) {
  const auto [block_size, heads, head_dim] = GetParam();
  const KvCacheLayout layout{3, 6, block_size, heads, head_dim};
  const int layer = 1;
  const int64_t row = static_cast<int64_t>(heads) * head_dim;
  const int64_t stride = row + 5;  // rows of a fused buffer: padding after the heads
  const int64_t tokens = 2 * block_size + 1;
  const auto k = Random(static_cast<size_t>(tokens * stride), 1);
  const auto v = Random(static_cast<size_t>(tokens * stride), 2);
  std::vector<float> cache(static_cast<size_t>(layout.total_elems()), -7.0f);
  // Tokens go to blocks 4, 2, 5 (non-contiguous); token 1 is skipped (slot -1).
  const int blocks[] = {4, 2, 5};
  std::vector<int64_t> slots(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    slots[t] = int64_t{blocks[t / block_size]} * block_size + t % block_size;
  }
  slots[1] = -1;
  float* k_cache = cache.data() + layout.layer_offset(layer, 0);
  float* v_cache = cache.data() + layout.layer_offset(layer, 1);
  ref::WriteKvCache(k.data(), stride, v.data(), stride, k_cache, v_cache, layout.block_stride(),
                    slots.data(), tokens, heads, head_dim, block_size, nullptr);
  std::vector<float> want(cache.size(), -7.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0) continue;
    const int64_t b = blocks[t / block_size], off = t % block_size;
    for (int64_t e = 0; e < row; ++e) {
      // cache[b][layer][kv][off][head][d], flattened
      const int64_t kidx = ((((b * 3 + layer) * 2 + 0) * block_size + off) * row) + e;
      const int64_t vidx = ((((b * 3 + layer) * 2 + 1) * block_size + off) * row) + e;
      want[kidx] = k[t * stride + e];
      want[vidx] = v[t * stride + e];
    }
  }
  EXPECT_EQ(cache, want);
}

TEST_P(KvCacheOpsTest, GatherThenScatterIntoOtherBlocksRoundTrips) {
  const auto [block_size, heads, head_dim] = GetParam();
  const KvCacheLayout layout{2, 9, block_size, heads, head_dim};
  const auto src_cache = Random(static_cast<size_t>(layout.total_elems()), 3);
  const std::vector<int32_t> src_ids = {7, 1, 4};
  const std::vector<int32_t> dst_ids = {2, 8, 3};
  const int64_t bytes = layout.block_bytes();
  std::vector<float> packed(static_cast<size_t>(3 * layout.block_stride()), NAN);
  ref::GatherBlocks(packed.data(), src_cache.data(), src_ids.data(), 3, bytes, bytes, nullptr);
  for (int i = 0; i < 3; ++i) {
    for (int64_t e = 0; e < layout.block_stride(); ++e) {
      ASSERT_EQ(packed[i * layout.block_stride() + e],
                src_cache[src_ids[i] * layout.block_stride() + e]);
    }
  }
  std::vector<float> dst_cache(static_cast<size_t>(layout.total_elems()), 0.5f);
  ref::ScatterBlocks(dst_cache.data(), packed.data(), dst_ids.data(), 3, bytes, bytes, nullptr);
  for (int b = 0; b < layout.num_blocks; ++b) {
    int from = -1;
    for (int i = 0; i < 3; ++i) {
      if (dst_ids[i] == b) from = src_ids[i];
    }
    for (int64_t e = 0; e < layout.block_stride(); ++e) {
      const float want = from < 0 ? 0.5f : src_cache[from * layout.block_stride() + e];
      ASSERT_EQ(dst_cache[b * layout.block_stride() + e], want) << "block " << b;
    }
  }
}

TEST(KvCacheOpsTest, GatherRespectsStrideLargerThanBlockBytes) {
  // Moving one layer's K of each block: block_bytes < block_stride_bytes.
  const KvCacheLayout layout{2, 4, 4, 2, 8};
  std::vector<float> cache(static_cast<size_t>(layout.total_elems()));
  std::iota(cache.begin(), cache.end(), 0.0f);
  const int64_t part = layout.layer_kv_elems();
  const int32_t ids[] = {3, 1};
  std::vector<float> packed(static_cast<size_t>(2 * part));
  ref::GatherBlocks(packed.data(), cache.data() + layout.layer_offset(1, 0), ids, 2,
                    part * sizeof(float), layout.block_bytes(), nullptr);
  for (int i = 0; i < 2; ++i) {
    for (int64_t e = 0; e < part; ++e) {
      EXPECT_EQ(packed[i * part + e],
                cache[ids[i] * layout.block_stride() + layout.layer_offset(1, 0) + e]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvCacheOpsTest,
                         ::testing::Values(Case{1, 1, 4}, Case{4, 2, 8}, Case{16, 3, 5},
                                           Case{16, 4, 64}));

}  // namespace
}  // namespace kvmesh::kernels
