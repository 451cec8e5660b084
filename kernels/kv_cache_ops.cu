// CUDA KV cache writes and block gather/scatter.
//
// WriteKvCache: one CTA per token copies its K and V rows (num_kv_heads * head_dim floats) into the
// slot's place in the block-major cache; negative slots are skipped.
//
// GatherBlocks / ScatterBlocks: one copy kernel, grid (chunk, block). CTA (c, i) copies chunks
// c, c + gridDim.x, ... of block i, each chunk kThreads * kUnroll 16-byte vectors: all loads of a
// chunk are issued before any store (kUnroll independent 16-byte loads in flight per thread). When
// a pointer, block_bytes or block_stride_bytes is not a multiple of 16 the same kernel runs on
// single bytes. block_ids live in device memory.
#include "kernels/cuda_util.cuh"
#include "kernels/kv_cache_ops.h"

namespace kvmesh::kernels::cuda {
namespace {

__global__ void WriteKvCacheKernel(const float* k, int64_t k_stride, const float* v,
                                   int64_t v_stride, float* k_cache, float* v_cache,
                                   int64_t block_stride, const int64_t* slot_mapping, int64_t row,
                                   int block_size) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  const int64_t block = slot / block_size;
  const int64_t offset = slot % block_size;
  const int64_t dst = block * block_stride + offset * row;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    k_cache[dst + i] = k[t * k_stride + i];
    v_cache[dst + i] = v[t * v_stride + i];
  }
}

constexpr int kCopyThreads = 256;
constexpr int kCopyUnroll = 4;

// Copies num_blocks blocks of `elems_per_block` T's. Block i's source is src + src_index(i) *
// src_stride and its destination dst + dst_index(i) * dst_stride, where the index is block_ids[i]
// on the strided side and i on the packed side.
template <typename T, bool kGather>
__global__ void CopyBlocksKernel(T* dst, const T* src, const int32_t* block_ids,
                                 int64_t num_blocks, int64_t elems_per_block,
                                 int64_t strided_elems) {
  constexpr int64_t kChunk = static_cast<int64_t>(kCopyThreads) * kCopyUnroll;
  for (int64_t i = blockIdx.y; i < num_blocks; i += gridDim.y) {
    const int64_t strided = static_cast<int64_t>(block_ids[i]) * strided_elems;
    const int64_t packed = i * elems_per_block;
    const T* in = src + (kGather ? strided : packed);
    T* out = dst + (kGather ? packed : strided);
    for (int64_t base = blockIdx.x * kChunk; base < elems_per_block;
         base += static_cast<int64_t>(gridDim.x) * kChunk) {
      T tmp[kCopyUnroll];
#pragma unroll
      for (int u = 0; u < kCopyUnroll; ++u) {
        const int64_t e = base + u * kCopyThreads + threadIdx.x;
        if (e < elems_per_block) tmp[u] = in[e];
      }
#pragma unroll
      for (int u = 0; u < kCopyUnroll; ++u) {
        const int64_t e = base + u * kCopyThreads + threadIdx.x;
        if (e < elems_per_block) out[e] = tmp[u];
      }
    }
  }
}

template <bool kGather>
void LaunchCopyBlocks(void* dst, const void* src, const int32_t* block_ids, int64_t num_blocks,
                      int64_t block_bytes, int64_t block_stride_bytes, Stream stream) {
  if (num_blocks <= 0 || block_bytes <= 0) return;
  const cudaStream_t s = internal::AsCudaStream(stream);
  const bool aligned = reinterpret_cast<uintptr_t>(dst) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(src) % 16 == 0 && block_bytes % 16 == 0 &&
                       block_stride_bytes % 16 == 0;
  const int64_t elem = aligned ? 16 : 1;
  const int64_t elems = block_bytes / elem;
  const int64_t chunks = internal::CeilDiv(elems, int64_t{kCopyThreads} * kCopyUnroll);
  // Enough CTAs to fill the GPU many times over, without a grid that is all launch overhead.
  const int64_t grid_x = chunks < 1024 ? chunks : 1024;
  const int64_t grid_y = num_blocks < 65535 ? num_blocks : 65535;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  if (aligned) {
    CopyBlocksKernel<uint4, kGather><<<grid, kCopyThreads, 0, s>>>(
        static_cast<uint4*>(dst), static_cast<const uint4*>(src), block_ids, num_blocks, elems,
        block_stride_bytes / 16);
  } else {
    CopyBlocksKernel<unsigned char, kGather><<<grid, kCopyThreads, 0, s>>>(
        static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), block_ids,
        num_blocks, elems, block_stride_bytes);
  }
}

}  // namespace

void WriteKvCache(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  float* k_cache, float* v_cache, int64_t block_stride, const int64_t* slot_mapping,
                  int64_t num_tokens, int num_kv_heads, int head_dim, int block_size,
                  Stream stream) {
  if (num_tokens <= 0) return;
  const int64_t row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const int threads = row >= 1024 ? 256 : 128;
  WriteKvCacheKernel<<<static_cast<unsigned>(num_tokens), threads, 0,
                       internal::AsCudaStream(stream)>>>(k, k_stride, v, v_stride, k_cache,
                                                         v_cache, block_stride, slot_mapping, row,
                                                         block_size);
}

void GatherBlocks(void* dst, const void* base, const int32_t* block_ids, int64_t num_blocks,
                  int64_t block_bytes, int64_t block_stride_bytes, Stream stream) {
  LaunchCopyBlocks<true>(dst, base, block_ids, num_blocks, block_bytes, block_stride_bytes,
                         stream);
}

void ScatterBlocks(void* base, const void* src, const int32_t* block_ids, int64_t num_blocks,
                   int64_t block_bytes, int64_t block_stride_bytes, Stream stream) {
  LaunchCopyBlocks<false>(base, src, block_ids, num_blocks, block_bytes, block_stride_bytes,
                          stream);
}

}  // namespace kvmesh::kernels::cuda
