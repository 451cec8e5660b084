// Reference KV cache writes and block gather/scatter: plain memcpy of contiguous ranges.
#include <cstring>

#include "kernels/kv_cache_ops.h"

namespace kvmesh::kernels::ref {

void WriteKvCache(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  float* k_cache, float* v_cache, int64_t block_stride, const int64_t* slot_mapping,
                  int64_t num_tokens, int num_kv_heads, int head_dim, int block_size,
                  Stream /*stream*/) {
  const int64_t row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(float);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    const int64_t block = slot / block_size;
    const int64_t offset = slot % block_size;
    const int64_t dst = block * block_stride + offset * row;
    std::memcpy(k_cache + dst, k + t * k_stride, row_bytes);
    std::memcpy(v_cache + dst, v + t * v_stride, row_bytes);
  }
}

void GatherBlocks(void* dst, const void* base, const int32_t* block_ids, int64_t num_blocks,
                  int64_t block_bytes, int64_t block_stride_bytes, Stream /*stream*/) {
  auto* out = static_cast<char*>(dst);
  const auto* in = static_cast<const char*>(base);
  for (int64_t i = 0; i < num_blocks; ++i) {
    std::memcpy(out + i * block_bytes, in + block_ids[i] * block_stride_bytes,
                static_cast<size_t>(block_bytes));
  }
}

void ScatterBlocks(void* base, const void* src, const int32_t* block_ids, int64_t num_blocks,
                   int64_t block_bytes, int64_t block_stride_bytes, Stream /*stream*/) {
  auto* out = static_cast<char*>(base);
  const auto* in = static_cast<const char*>(src);
  for (int64_t i = 0; i < num_blocks; ++i) {
    std::memcpy(out + block_ids[i] * block_stride_bytes, in + i * block_bytes,
                static_cast<size_t>(block_bytes));
  }
}

}  // namespace kvmesh::kernels::ref
