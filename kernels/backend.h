// Shared declarations of the compute ops in kernels/.
//
// Every op has a header `<op>.h` that declares the same host launcher twice: in namespace
// `kvmesh::kernels::ref` (plain C++ in `<op>_ref.cc`, fp32 accumulation, runs everywhere) and in
// namespace `kvmesh::kernels::cuda` (in `<op>.cu`, only linked when KVMESH_CUDA is ON, via the
// target kvmesh_kernels_cuda). Both take the same arguments.
//
// Conventions for every launcher:
//  - All pointers point into the backend's memory: host memory for `ref`, device memory for `cuda`.
//  - Activations, weights and the KV cache are fp32 (see docs/engine.md for why the GPU path is
//    fp32 for now).
//  - `stream` is a cudaStream_t for `cuda` (nullptr = default stream) and ignored by `ref`.
//    CUDA launchers are asynchronous; they do not return errors: call cuda::LastError() after a
//    batch of launches (it checks cudaGetLastError and names the failing call).
//  - Inputs are trusted: shapes and ids are validated by the caller (the engine), never here.
//
// KV cache layout (block-major, one allocation for all layers, so that one block of one sequence is
// one contiguous range: KV transfer moves whole blocks with one RMA each):
//   cache[num_blocks][num_layers][2 (K, V)][block_size][num_kv_heads][head_dim]
// Kernels that read or write the cache for one layer take `k_cache` = cache + layer's K offset,
// `v_cache` = cache + layer's V offset and `block_stride` = elements from one block to the next.
#pragma once

#include <cstdint>

namespace kvmesh::kernels {

using Stream = void*;  // cudaStream_t for the CUDA backend; ignored by the reference backend

struct KvCacheLayout {
  int num_layers = 0;
  int num_blocks = 0;  // includes block 0 (the block pool's null block)
  int block_size = 0;  // tokens per block
  int num_kv_heads = 0;
  int head_dim = 0;

  // Elements of K (or V) of one layer in one block.
  int64_t layer_kv_elems() const {
    return static_cast<int64_t>(block_size) * num_kv_heads * head_dim;
  }
  // Elements from the start of one block to the start of the next.
  int64_t block_stride() const { return 2 * layer_kv_elems() * num_layers; }
  int64_t total_elems() const { return block_stride() * num_blocks; }
  int64_t block_bytes() const { return block_stride() * static_cast<int64_t>(sizeof(float)); }
  // Offset (elements) of layer `layer`'s K (kv = 0) or V (kv = 1) inside block 0.
  int64_t layer_offset(int layer, int kv) const {
    return (2 * static_cast<int64_t>(layer) + kv) * layer_kv_elems();
  }
};

}  // namespace kvmesh::kernels
