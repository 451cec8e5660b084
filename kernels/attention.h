// Attention over the paged KV cache (grouped-query: query head h reads KV head
// h / (num_q_heads / num_kv_heads)). The K/V of every token attended to, including the new tokens
// of this step, must already be in the cache (WriteKvCache runs first).
//
// Shared arguments:
//  - k_cache / v_cache / block_stride: one layer of the cache, see kernels/backend.h.
//  - block_tables: [num_seqs, max_blocks_per_seq] block ids; row s lists sequence s's blocks in
//    order, token j of the sequence sits in block block_tables[s][j / block_size] at offset
//    j % block_size.
//  - q rows have q_stride floats, the first num_q_heads * head_dim are the heads;
//    out is [rows, num_q_heads * head_dim], dense.
//  - scale: softmax scale, usually 1 / sqrt(head_dim). Softmax in fp32 with max subtraction.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
// Decode: one query token per sequence (row s of q), attending to the first context_lens[s]
// tokens of the sequence (its own new token included).
void PagedAttentionDecode(float* out, const float* q, int64_t q_stride, const float* k_cache,
                          const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, int num_seqs,
                          int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                          float scale, Stream stream);
// Prefill (varlen, chunked, over a cached prefix): sequence s owns query rows
// [cu_q_lens[s], cu_q_lens[s+1]); they are the LAST q_len tokens of its first context_lens[s]
// tokens, i.e. query row i of s sits at position context_lens[s] - q_len + i and attends causally
// to positions 0 .. that position. Positions before the chunk are a cached prefix or earlier
// chunks; they are only read.
void PagedAttentionPrefill(float* out, const float* q, int64_t q_stride, const float* k_cache,
                           const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* cu_q_lens,
                           const int32_t* context_lens, int num_seqs, int num_q_heads,
                           int num_kv_heads, int head_dim, int block_size, float scale,
                           Stream stream);
}  // namespace ref
namespace cuda {
void PagedAttentionDecode(float* out, const float* q, int64_t q_stride, const float* k_cache,
                          const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, int num_seqs,
                          int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                          float scale, Stream stream);
void PagedAttentionPrefill(float* out, const float* q, int64_t q_stride, const float* k_cache,
                           const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* cu_q_lens,
                           const int32_t* context_lens, int num_seqs, int num_q_heads,
                           int num_kv_heads, int head_dim, int block_size, float scale,
                           Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
