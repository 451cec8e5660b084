// CUDA WriteKvCache, GatherBlocks and ScatterBlocks against the reference: exact equality (they
// only move bytes). Covers skipped slots, strided k/v rows, the 16-byte vector path and the
// byte path (sizes or strides that are not multiples of 16), and block ids in any order.
#include <algorithm>
#include <cstdint>
#include <ostream>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda_test_util.h"
#include "kernels/kv_cache_ops.h"

namespace kvmesh::kernels {
namespace {

using cuda_test::DeviceVec;
using cuda_test::ExpectAllClose;
using cuda_test::ExpectLaunchOk;
using cuda_test::Random;

struct WriteCase {
  KvCacheLayout layout;
  int layer;
  int64_t tokens;
  int64_t extra_stride;
};
void PrintTo(const WriteCase& c, std::ostream* os) {
  *os << "L" << c.layout.num_layers << "_B" << c.layout.num_blocks << "_bs" << c.layout.block_size
      << "_kv" << c.layout.num_kv_heads << "_d" << c.layout.head_dim << "_layer" << c.layer << "_t"
      << c.tokens << "_x" << c.extra_stride;
}

class WriteKvCacheTest : public cuda_test::CudaParamTest<WriteCase> {};

TEST_P(WriteKvCacheTest, MatchesReference) {
  const WriteCase c = GetParam();
  const KvCacheLayout& l = c.layout;
  const int64_t row = static_cast<int64_t>(l.num_kv_heads) * l.head_dim;
  const int64_t stride = row + c.extra_stride;
  const auto k = Random(static_cast<size_t>(c.tokens * stride), 1);
  const auto v = Random(static_cast<size_t>(c.tokens * stride), 2);
  auto cache = Random(static_cast<size_t>(l.total_elems()), 3);
  // Distinct slots in blocks 1.. (block 0 is the null block), every 5th token skipped.
  std::vector<int64_t> slots(static_cast<size_t>((l.num_blocks - 1) * l.block_size));
  std::iota(slots.begin(), slots.end(), l.block_size);
  std::shuffle(slots.begin(), slots.end(), std::mt19937(4));
  slots.resize(static_cast<size_t>(c.tokens));
  for (size_t t = 4; t < slots.size(); t += 5) slots[t] = -1;

  DeviceVec<float> d_k(k), d_v(v), d_cache(cache);
  DeviceVec<int64_t> d_slots(slots);
  const int64_t k_off = l.layer_offset(c.layer, 0);
  const int64_t v_off = l.layer_offset(c.layer, 1);
  ref::WriteKvCache(k.data(), stride, v.data(), stride, cache.data() + k_off,
                    cache.data() + v_off, l.block_stride(), slots.data(), c.tokens,
                    l.num_kv_heads, l.head_dim, l.block_size, nullptr);
  cuda::WriteKvCache(d_k.get(), stride, d_v.get(), stride, d_cache.get() + k_off,
                     d_cache.get() + v_off, l.block_stride(), d_slots.get(), c.tokens,
                     l.num_kv_heads, l.head_dim, l.block_size, nullptr);
  ExpectLaunchOk("WriteKvCache");
  ExpectAllClose(cache, d_cache.ToHost(), 0.0, 0.0, "cache");
}

KvCacheLayout Layout(int layers, int blocks, int block_size, int kv_heads, int head_dim) {
  KvCacheLayout l;
  l.num_layers = layers;
  l.num_blocks = blocks;
  l.block_size = block_size;
  l.num_kv_heads = kv_heads;
  l.head_dim = head_dim;
  return l;
}

INSTANTIATE_TEST_SUITE_P(Cases, WriteKvCacheTest,
                         ::testing::Values(WriteCase{Layout(1, 2, 1, 1, 1), 0, 1, 0},
                                           WriteCase{Layout(4, 9, 16, 8, 128), 3, 100, 0},
                                           WriteCase{Layout(2, 33, 16, 2, 64), 1, 300, 2 * 128},
                                           WriteCase{Layout(3, 5, 7, 3, 10), 2, 20, 1}));

struct CopyCase {
  int64_t num_blocks;       // blocks moved
  int64_t pool_blocks;      // blocks in the strided pool
  int64_t block_bytes;
  int64_t block_stride_bytes;
};
void PrintTo(const CopyCase& c, std::ostream* os) {
  *os << "n" << c.num_blocks << "_pool" << c.pool_blocks << "_bytes" << c.block_bytes << "_stride"
      << c.block_stride_bytes;
}

class CopyBlocksTest : public cuda_test::CudaParamTest<CopyCase> {};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<float> AsFloats(const std::vector<uint8_t>& b) {  // exact compare via bit patterns
  std::vector<float> f(b.size());
  for (size_t i = 0; i < b.size(); ++i) f[i] = b[i];
  return f;
}

TEST_P(CopyBlocksTest, GatherAndScatterMatchReference) {
  const CopyCase c = GetParam();
  const auto pool = RandomBytes(static_cast<size_t>(c.pool_blocks * c.block_stride_bytes), 5);
  std::vector<int32_t> ids(static_cast<size_t>(c.pool_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(6));
  ids.resize(static_cast<size_t>(c.num_blocks));
  DeviceVec<uint8_t> d_pool(pool);
  DeviceVec<int32_t> d_ids(ids);

  std::vector<uint8_t> packed(static_cast<size_t>(c.num_blocks * c.block_bytes));
  ref::GatherBlocks(packed.data(), pool.data(), ids.data(), c.num_blocks, c.block_bytes,
                    c.block_stride_bytes, nullptr);
  DeviceVec<uint8_t> d_packed(packed.size());
  cuda::GatherBlocks(d_packed.get(), d_pool.get(), d_ids.get(), c.num_blocks, c.block_bytes,
                     c.block_stride_bytes, nullptr);
  ExpectLaunchOk("GatherBlocks");
  ExpectAllClose(AsFloats(packed), AsFloats(d_packed.ToHost()), 0.0, 0.0, "gather");

  // Scatter new contents into the pool; untouched blocks and the gaps between blocks stay.
  const auto src = RandomBytes(packed.size(), 7);
  auto want = pool;
  ref::ScatterBlocks(want.data(), src.data(), ids.data(), c.num_blocks, c.block_bytes,
                     c.block_stride_bytes, nullptr);
  DeviceVec<uint8_t> d_src(src);
  cuda::ScatterBlocks(d_pool.get(), d_src.get(), d_ids.get(), c.num_blocks, c.block_bytes,
                      c.block_stride_bytes, nullptr);
  ExpectLaunchOk("ScatterBlocks");
  ExpectAllClose(AsFloats(want), AsFloats(d_pool.ToHost()), 0.0, 0.0, "scatter");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CopyBlocksTest,
    ::testing::Values(CopyCase{1, 1, 16, 16}, CopyCase{3, 10, 4096, 4096},
                      CopyCase{7, 9, 4096, 8192},          // gaps between blocks
                      CopyCase{5, 8, 1000, 1000},          // not a multiple of 16: byte path
                      CopyCase{4, 6, 1024, 1028},          // stride not a multiple of 16
                      CopyCase{64, 80, 65536 + 16, 65536 + 32},
                      CopyCase{2, 3, 4 << 20, 4 << 20}));  // 4 MiB blocks (many chunks)

}  // namespace
}  // namespace kvmesh::kernels
