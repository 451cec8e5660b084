// Token sampling from logits, one row per sequence.
//
// Per row: temperature <= 0 (or top_k == 1) is greedy (argmax, lowest id on ties). Otherwise:
// logits / temperature, keep the top_k highest (0 = all), softmax, keep the smallest set of highest
// probabilities whose mass reaches top_p (1 = all; the top token always stays), renormalize, and
// draw with one uniform u in [0, 1) from SampleUniform(seed, step): the token where the cumulative
// probability (in descending probability order, ties by lower id) first exceeds u * total.
// The draw depends only on (seed, step) and the row's logits, so a request samples the same tokens
// whether it runs alone or batched, and on either backend.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {

struct SamplingRow {
  float temperature = 0.0f;
  int32_t top_k = 0;     // 0 = no limit
  float top_p = 1.0f;    // (0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;     // index of the token being sampled within its request
};

// Counter-based: SplitMix64 of seed mixed with step; 24 random bits -> [0, 1).
float SampleUniform(uint64_t seed, uint64_t step);

namespace ref {
// logits: [num_rows, vocab_size] (read only). out_tokens: [num_rows]. workspace: at least
// SampleWorkspaceFloats(num_rows, vocab_size) floats of backend memory.
void Sample(int32_t* out_tokens, const float* logits, const SamplingRow* rows, int64_t num_rows,
            int64_t vocab_size, float* workspace, Stream stream);
int64_t SampleWorkspaceFloats(int64_t num_rows, int64_t vocab_size);
}  // namespace ref
namespace cuda {
// `rows` lives in host memory here (it is small and copied with the launch).
void Sample(int32_t* out_tokens, const float* logits, const SamplingRow* rows, int64_t num_rows,
            int64_t vocab_size, float* workspace, Stream stream);
int64_t SampleWorkspaceFloats(int64_t num_rows, int64_t vocab_size);
}  // namespace cuda
}  // namespace kvmesh::kernels
