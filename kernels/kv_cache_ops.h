// Writing new K/V into the paged cache, and KV block gather/scatter for the transfer path.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
// For each token t: slot = slot_mapping[t] (block * block_size + offset in block; negative = skip),
// copies k[t, 0 : num_kv_heads*head_dim] (rows of k_stride floats) into
// k_cache + block * block_stride + offset * num_kv_heads * head_dim, and v likewise into v_cache.
void WriteKvCache(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  float* k_cache, float* v_cache, int64_t block_stride, const int64_t* slot_mapping,
                  int64_t num_tokens, int num_kv_heads, int head_dim, int block_size,
                  Stream stream);
// Packs `num_blocks` blocks into `dst` back to back: dst[i * block_bytes ...] =
// base[block_ids[i] * block_stride_bytes ...] (block_bytes each).
void GatherBlocks(void* dst, const void* base, const int32_t* block_ids, int64_t num_blocks,
                  int64_t block_bytes, int64_t block_stride_bytes, Stream stream);
// The inverse: base[block_ids[i] * block_stride_bytes ...] = src[i * block_bytes ...].
void ScatterBlocks(void* base, const void* src, const int32_t* block_ids, int64_t num_blocks,
                   int64_t block_bytes, int64_t block_stride_bytes, Stream stream);
}  // namespace ref
namespace cuda {
void WriteKvCache(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  float* k_cache, float* v_cache, int64_t block_stride, const int64_t* slot_mapping,
                  int64_t num_tokens, int num_kv_heads, int head_dim, int block_size,
                  Stream stream);
void GatherBlocks(void* dst, const void* base, const int32_t* block_ids, int64_t num_blocks,
                  int64_t block_bytes, int64_t block_stride_bytes, Stream stream);
void ScatterBlocks(void* base, const void* src, const int32_t* block_ids, int64_t num_blocks,
                   int64_t block_bytes, int64_t block_stride_bytes, Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
