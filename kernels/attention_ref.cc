// Reference paged attention (decode and chunked prefill), fp32 with an online (block-by-block)
// softmax.
//
// Work unit: one sequence, one KV head, and a tile of up to kTileRows query rows of that sequence;
// all query heads of the KV head's group (GQA) and all rows of the tile are processed together, so
// each K/V block is read from memory once per tile and then stays in L1 while every query vector
// of the tile uses it. Per query vector we keep the running max m, the running sum l and the
// unnormalized output acc; for each KV block: m' = max(m, scores), acc = acc * e^(m - m') +
// sum_t e^(s_t - m') v_t, l likewise. Out = acc / l. Workspace is thread_local and only grows.
//
// A query row whose causal limit is 0 tokens (context_len 0) gets a zero output.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ref_util.h"

namespace kvmesh::kernels::ref {
namespace {

constexpr int kTileRows = 16;

struct Problem {
  const float* q;
  int64_t q_stride;
  const float* k_cache;
  const float* v_cache;
  int64_t block_stride;
  int num_q_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  float scale;
};

struct Workspace {
  std::vector<float> acc;     // [vectors][head_dim]
  std::vector<float> max;     // [vectors]
  std::vector<float> sum;     // [vectors]
  std::vector<float> scores;  // [block_size]
};

// Attends query rows q_row0 .. q_row0 + num_rows - 1 (row r at causal limit limits[r], i.e. it
// sees tokens [0, limits[r])) of one sequence to KV head `kv_head`, writing those rows' heads of
// the group into out (rows of num_q_heads * head_dim floats).
void AttendTile(const Problem& p, float* out, int64_t q_row0, const int* limits, int num_rows,
                const int32_t* block_table, int kv_head, Workspace& ws) {
  const int group = p.num_q_heads / p.num_kv_heads;
  const int hd = p.head_dim;
  const int vectors = num_rows * group;
  ws.acc.assign(static_cast<size_t>(vectors) * hd, 0.0f);
  ws.max.assign(static_cast<size_t>(vectors), -std::numeric_limits<float>::infinity());
  ws.sum.assign(static_cast<size_t>(vectors), 0.0f);
  ws.scores.resize(static_cast<size_t>(p.block_size));
  float* scores = ws.scores.data();

  int max_limit = 0;
  for (int r = 0; r < num_rows; ++r) max_limit = std::max(max_limit, limits[r]);
  const int num_blocks = (max_limit + p.block_size - 1) / p.block_size;
  const int64_t token_stride = static_cast<int64_t>(p.num_kv_heads) * hd;

  for (int b = 0; b < num_blocks; ++b) {
    const int64_t base = static_cast<int64_t>(block_table[b]) * p.block_stride + kv_head * hd;
    const float* kb = p.k_cache + base;
    const float* vb = p.v_cache + base;
    const int block_start = b * p.block_size;
    for (int r = 0; r < num_rows; ++r) {
      const int valid = std::min(p.block_size, limits[r] - block_start);
      if (valid <= 0) continue;
      const float* q_row = p.q + (q_row0 + r) * p.q_stride;
      for (int g = 0; g < group; ++g) {
        const int head = kv_head * group + g;
        const float* qv = q_row + static_cast<int64_t>(head) * hd;
        const int vec = r * group + g;
        float block_max = -std::numeric_limits<float>::infinity();
        for (int t = 0; t < valid; ++t) {
          const float s = ref_internal::Dot(qv, kb + t * token_stride, hd) * p.scale;
          scores[t] = s;
          block_max = std::max(block_max, s);
        }
        const float m_old = ws.max[static_cast<size_t>(vec)];
        const float m_new = std::max(m_old, block_max);
        const float correction = std::exp(m_old - m_new);  // 0 on the first block (m_old = -inf)
        float* acc = ws.acc.data() + static_cast<int64_t>(vec) * hd;
        float l = ws.sum[static_cast<size_t>(vec)] * correction;
        // The first token folds in the rescale of acc (acc * correction + w * v).
        const float w0 = std::exp(scores[0] - m_new);
        l += w0;
        ref_internal::ScaleAxpy(acc, correction, w0, vb, hd);
        for (int t = 1; t < valid; ++t) {
          const float w = std::exp(scores[t] - m_new);
          l += w;
          ref_internal::Axpy(acc, w, vb + t * token_stride, hd);
        }
        ws.sum[static_cast<size_t>(vec)] = l;
        ws.max[static_cast<size_t>(vec)] = m_new;
      }
    }
  }

  const int64_t out_stride = static_cast<int64_t>(p.num_q_heads) * hd;
  for (int r = 0; r < num_rows; ++r) {
    float* out_row = out + (q_row0 + r) * out_stride;
    for (int g = 0; g < group; ++g) {
      const int head = kv_head * group + g;
      const int vec = r * group + g;
      float* dst = out_row + static_cast<int64_t>(head) * hd;
      const float l = ws.sum[static_cast<size_t>(vec)];
      const float* acc = ws.acc.data() + static_cast<int64_t>(vec) * hd;
      if (l > 0.0f) {
        const float inv = 1.0f / l;
        for (int d = 0; d < hd; ++d) dst[d] = acc[d] * inv;
      } else {
        std::memset(dst, 0, static_cast<size_t>(hd) * sizeof(float));
      }
    }
  }
}

}  // namespace

void PagedAttentionDecode(float* out, const float* q, int64_t q_stride, const float* k_cache,
                          const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, int num_seqs,
                          int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                          float scale, Stream /*stream*/) {
  thread_local Workspace ws;
  const Problem p{q,           q_stride,     k_cache,  v_cache,    block_stride,
                  num_q_heads, num_kv_heads, head_dim, block_size, scale};
  for (int s = 0; s < num_seqs; ++s) {
    const int limit = context_lens[s];
    const int32_t* table = block_tables + static_cast<int64_t>(s) * max_blocks_per_seq;
    for (int h = 0; h < num_kv_heads; ++h) AttendTile(p, out, s, &limit, 1, table, h, ws);
  }
}

void PagedAttentionPrefill(float* out, const float* q, int64_t q_stride, const float* k_cache,
                           const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* cu_q_lens,
                           const int32_t* context_lens, int num_seqs, int num_q_heads,
                           int num_kv_heads, int head_dim, int block_size, float scale,
                           Stream /*stream*/) {
  thread_local Workspace ws;
  const Problem p{q,           q_stride,     k_cache,  v_cache,    block_stride,
                  num_q_heads, num_kv_heads, head_dim, block_size, scale};
  int limits[kTileRows];
  for (int s = 0; s < num_seqs; ++s) {
    const int row_begin = cu_q_lens[s];
    const int q_len = cu_q_lens[s + 1] - row_begin;
    const int first_pos = context_lens[s] - q_len;  // position of the sequence's first query row
    const int32_t* table = block_tables + static_cast<int64_t>(s) * max_blocks_per_seq;
    for (int r0 = 0; r0 < q_len; r0 += kTileRows) {
      const int rows = std::min(kTileRows, q_len - r0);
      for (int r = 0; r < rows; ++r) limits[r] = first_pos + r0 + r + 1;
      for (int h = 0; h < num_kv_heads; ++h) {
        AttendTile(p, out, row_begin + r0, limits, rows, table, h, ws);
      }
    }
  }
}

}  // namespace kvmesh::kernels::ref
