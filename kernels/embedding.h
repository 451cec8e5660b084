// Embedding lookup: out[t, :] = table[ids[t], :]. An id outside [0, vocab_size) writes a row of
// zeros (never reads outside the table); the engine rejects such ids before they get here.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
void EmbeddingLookup(float* out, const float* table, const int32_t* ids, int64_t num_tokens,
                     int64_t dim, int64_t vocab_size, Stream stream);
}  // namespace ref
namespace cuda {
void EmbeddingLookup(float* out, const float* table, const int32_t* ids, int64_t num_tokens,
                     int64_t dim, int64_t vocab_size, Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
