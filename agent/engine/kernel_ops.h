// KernelOps: the table of op launchers the model calls, so one layer loop runs on either backend.
// RefKernelOps() is the CPU reference backend (kernels/*_ref.cc). A CUDA table with the same
// signatures comes from kvmesh_kernels_cuda; the engine's GPU path (device memory for weights,
// cache and batch metadata) is not built yet, see docs/engine.md.
#pragma once

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/kv_cache_ops.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"

namespace kvmesh::engine {

struct KernelOps {
  decltype(&kernels::ref::RmsNorm) rms_norm;
  decltype(&kernels::ref::ApplyRope) apply_rope;
  decltype(&kernels::ref::SiluAndMul) silu_and_mul;
  decltype(&kernels::ref::EmbeddingLookup) embedding_lookup;
  decltype(&kernels::ref::Linear) linear;
  decltype(&kernels::ref::AddInPlace) add_in_place;
  decltype(&kernels::ref::WriteKvCache) write_kv_cache;
  decltype(&kernels::ref::PagedAttentionDecode) paged_attention_decode;
  decltype(&kernels::ref::PagedAttentionPrefill) paged_attention_prefill;
  decltype(&kernels::ref::Sample) sample;
  decltype(&kernels::ref::SampleWorkspaceFloats) sample_workspace_floats;
};

inline KernelOps RefKernelOps() {
  namespace r = kernels::ref;
  return KernelOps{&r::RmsNorm,    &r::ApplyRope,           &r::SiluAndMul,
                   &r::EmbeddingLookup, &r::Linear,         &r::AddInPlace,
                   &r::WriteKvCache, &r::PagedAttentionDecode, &r::PagedAttentionPrefill,
                   &r::Sample,     &r::SampleWorkspaceFloats};
}

}  // namespace kvmesh::engine
