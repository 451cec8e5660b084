// Reference embedding lookup: one memcpy per token; an out-of-range id yields a zero row.
#include <cstring>

#include "kernels/embedding.h"

namespace kvmesh::kernels::ref {

void EmbeddingLookup(float* out, const float* table, const int32_t* ids, int64_t num_tokens,
                     int64_t dim, int64_t vocab_size, Stream /*stream*/) {
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t id = ids[t];
    float* dst = out + t * dim;
    if (id < 0 || id >= vocab_size) {
      std::memset(dst, 0, row_bytes);
    } else {
      std::memcpy(dst, table + id * dim, row_bytes);
    }
  }
}

}  // namespace kvmesh::kernels::ref
