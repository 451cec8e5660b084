// Reference paged attention against a naive double-precision attention over K/V gathered through
// the block table with independent index arithmetic. Covers GQA ratios 1/2/4, block sizes 1/4/16,
// odd head_dim, non-contiguous block tables, strided q, a non-zero layer, varlen batches,
// chunked prefill over a cached prefix (== one-shot prefill), and decode == last prefill row.
// Tolerance: 2e-5 absolute on outputs (|v| <= 1; fp32 softmax and accumulation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"

namespace kvmesh::kernels {
namespace {

constexpr double kTol = 2e-5;

struct Case {
  int group;  // num_q_heads / num_kv_heads
  int num_kv_heads;
  int head_dim;
  int block_size;
};

// A cache with random contents; each sequence gets a shuffled (non-contiguous) list of blocks.
struct Fixture {
  Fixture(const Case& c, const std::vector<int>& seq_lens, uint32_t seed)
      : c(c), num_q_heads(c.group * c.num_kv_heads) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int len : seq_lens)
      max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
    const int needed = max_blocks * static_cast<int>(seq_lens.size());
    layout = KvCacheLayout{2, needed + 3, c.block_size, c.num_kv_heads, c.head_dim};
    cache.resize(static_cast<size_t>(layout.total_elems()));
    for (auto& x : cache) x = dist(rng);
    std::vector<int32_t> ids(static_cast<size_t>(layout.num_blocks - 1));
    std::iota(ids.begin(), ids.end(), 1);  // block 0 is the null block
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(seq_lens.size() * max_blocks, 0);
    size_t next = 0;
    for (size_t s = 0; s < seq_lens.size(); ++s) {
      const int nb = (seq_lens[s] + c.block_size - 1) / c.block_size;
      for (int b = 0; b < nb; ++b) tables[s * max_blocks + b] = ids[next++];
    }
  }
  const float* k_cache() const { return cache.data() + layout.layer_offset(kLayer, 0); }
  const float* v_cache() const { return cache.data() + layout.layer_offset(kLayer, 1); }
  // Element d of head h of token j of sequence s, K (kv = 0) or V (kv = 1).
  float At(int s, int j, int h, int d, int kv) const {
    const int64_t block = tables[static_cast<size_t>(s) * max_blocks + j / c.block_size];
    const int64_t idx =
        ((((block * layout.num_layers + kLayer) * 2 + kv) * c.block_size + j % c.block_size) *
             c.num_kv_heads +
         h) *
            c.head_dim +
        d;
    return cache[static_cast<size_t>(idx)];
  }
  // Naive attention of query vector qv (head `head`) over tokens [0, limit) of sequence s.
  std::vector<double> Naive(int s, const float* qv, int head, int limit, float scale) const {
    const int kvh = head / c.group;
    std::vector<double> scores(static_cast<size_t>(limit));
    double mx = -1e300;
    for (int j = 0; j < limit; ++j) {
      double dot = 0;
      for (int d = 0; d < c.head_dim; ++d) dot += double(qv[d]) * At(s, j, kvh, d, 0);
      scores[j] = dot * scale;
      mx = std::max(mx, scores[j]);
    }
    double sum = 0;
    for (auto& x : scores) sum += (x = std::exp(x - mx));
    std::vector<double> out(static_cast<size_t>(c.head_dim), 0.0);
    for (int j = 0; j < limit; ++j) {
      for (int d = 0; d < c.head_dim; ++d) out[d] += scores[j] / sum * At(s, j, kvh, d, 1);
    }
    return out;
  }

  static constexpr int kLayer = 1;
  Case c;
  int num_q_heads;
  int max_blocks = 1;
  KvCacheLayout layout;
  std::vector<float> cache;
  std::vector<int32_t> tables;
};

std::vector<float> RandomQ(int64_t rows, int64_t stride, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> q(static_cast<size_t>(rows * stride));
  for (auto& x : q) x = dist(rng);
  return q;
}

class PagedAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttentionTest, DecodeMatchesNaive) {
  const Case c = GetParam();
  const std::vector<int> lens = {1, 7, 33, 50};
  Fixture f(c, lens, 11);
  const int width = f.num_q_heads * c.head_dim;
  const int64_t q_stride = width + 2 * c.num_kv_heads * c.head_dim;  // fused qkv rows
  const auto q = RandomQ(4, q_stride, 12);
  std::vector<float> out(static_cast<size_t>(4 * width), NAN);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ref::PagedAttentionDecode(out.data(), q.data(), q_stride, f.k_cache(), f.v_cache(),
                            f.layout.block_stride(), f.tables.data(), f.max_blocks, lens.data(), 4,
                            f.num_q_heads, c.num_kv_heads, c.head_dim, c.block_size, scale,
                            nullptr);
  for (int s = 0; s < 4; ++s) {
    for (int h = 0; h < f.num_q_heads; ++h) {
      const auto want = f.Naive(s, q.data() + s * q_stride + h * c.head_dim, h, lens[s], scale);
      for (int d = 0; d < c.head_dim; ++d) {
        ASSERT_NEAR(out[s * width + h * c.head_dim + d], want[d], kTol)
            << "seq " << s << " head " << h << " d " << d;
      }
    }
  }
}

TEST_P(PagedAttentionTest, VarlenPrefillMatchesNaiveCausal) {
  const Case c = GetParam();
  // Three sequences: full prefill of 21, a 5-token chunk over a 30-token prefix, 1 token over 17.
  const std::vector<int> lens = {21, 35, 18};
  const std::vector<int32_t> cu = {0, 21, 26, 27};
  Fixture f(c, lens, 21);
  const int width = f.num_q_heads * c.head_dim;
  const auto q = RandomQ(27, width, 22);
  std::vector<float> out(static_cast<size_t>(27 * width), NAN);
  const float scale = 0.3f;
  ref::PagedAttentionPrefill(out.data(), q.data(), width, f.k_cache(), f.v_cache(),
                             f.layout.block_stride(), f.tables.data(), f.max_blocks, cu.data(),
                             lens.data(), 3, f.num_q_heads, c.num_kv_heads, c.head_dim,
                             c.block_size, scale, nullptr);
  for (int s = 0; s < 3; ++s) {
    const int q_len = cu[s + 1] - cu[s];
    for (int i = 0; i < q_len; ++i) {
      const int row = cu[s] + i;
      const int limit = lens[s] - q_len + i + 1;
      for (int h = 0; h < f.num_q_heads; ++h) {
        const auto want = f.Naive(s, q.data() + row * width + h * c.head_dim, h, limit, scale);
        for (int d = 0; d < c.head_dim; ++d) {
          ASSERT_NEAR(out[row * width + h * c.head_dim + d], want[d], kTol)
              << "seq " << s << " row " << i << " head " << h;
        }
      }
    }
  }
}

TEST_P(PagedAttentionTest, ChunkedPrefillEqualsOneShotAndDecodeEqualsLastRow) {
  const Case c = GetParam();
  const int len = 40;
  const std::vector<int> lens = {len};
  Fixture f(c, lens, 31);
  const int width = f.num_q_heads * c.head_dim;
  const auto q = RandomQ(len, width, 32);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  auto prefill = [&](int begin, int end) {  // rows [begin, end) with context end
    std::vector<float> out(static_cast<size_t>((end - begin) * width));
    const int32_t cu[2] = {0, end - begin};
    const int32_t ctx = end;
    ref::PagedAttentionPrefill(out.data(), q.data() + begin * width, width, f.k_cache(),
                               f.v_cache(), f.layout.block_stride(), f.tables.data(), f.max_blocks,
                               cu, &ctx, 1, f.num_q_heads, c.num_kv_heads, c.head_dim, c.block_size,
                               scale, nullptr);
    return out;
  };
  const auto one_shot = prefill(0, len);
  // A cached prefix of 13 tokens, then chunks of 17 and 10 (not block aligned).
  const int bounds[] = {13, 30, 40};
  int begin = 13;
  for (int end : {bounds[1], bounds[2]}) {
    const auto chunk = prefill(begin, end);
    for (int64_t e = 0; e < static_cast<int64_t>(chunk.size()); ++e) {
      ASSERT_NEAR(chunk[e], one_shot[begin * width + e], 1e-6) << "chunk ending " << end;
    }
    begin = end;
  }
  std::vector<float> dec(static_cast<size_t>(width));
  const int32_t ctx = len;
  ref::PagedAttentionDecode(dec.data(), q.data() + (len - 1) * width, width, f.k_cache(),
                            f.v_cache(), f.layout.block_stride(), f.tables.data(), f.max_blocks,
                            &ctx, 1, f.num_q_heads, c.num_kv_heads, c.head_dim, c.block_size, scale,
                            nullptr);
  for (int e = 0; e < width; ++e) ASSERT_NEAR(dec[e], one_shot[(len - 1) * width + e], 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttentionTest,
                         ::testing::Values(Case{1, 1, 8, 1}, Case{1, 2, 16, 4}, Case{2, 2, 13, 16},
                                           Case{2, 1, 64, 4}, Case{4, 2, 32, 16}, Case{4, 1, 7, 1},
                                           Case{4, 3, 64, 16}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           const Case& c = i.param;
                           return "g" + std::to_string(c.group) + "_kv" +
                                  std::to_string(c.num_kv_heads) + "_d" +
                                  std::to_string(c.head_dim) + "_bs" + std::to_string(c.block_size);
                         });

TEST(PagedAttentionTest, LargeLogitsStayFinite) {
  // Scores around 1e3 would overflow exp() without max subtraction.
  const Case c{1, 1, 4, 4};
  const std::vector<int> lens = {9};
  Fixture f(c, lens, 41);
  std::vector<float> q = {400, -300, 200, 100};
  std::vector<float> out(4);
  ref::PagedAttentionDecode(out.data(), q.data(), 4, f.k_cache(), f.v_cache(),
                            f.layout.block_stride(), f.tables.data(), f.max_blocks, lens.data(), 1,
                            1, 1, 4, 4, 1.0f, nullptr);
  const auto want = f.Naive(0, q.data(), 0, 9, 1.0f);
  for (int d = 0; d < 4; ++d) {
    ASSERT_TRUE(std::isfinite(out[d]));
    EXPECT_NEAR(out[d], want[d], 1e-3);
  }
}

}  // namespace
}  // namespace kvmesh::kernels
