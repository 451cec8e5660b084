// Reference SiLU-and-multiply: silu(g) = g / (1 + exp(-g)), times the up projection.
#include <cmath>

#include "kernels/activation.h"

namespace kvmesh::kernels::ref {

void SiluAndMul(float* out, const float* gate_up, int64_t rows, int64_t dim, Stream /*stream*/) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * dim;
    const float* up = gate + dim;
    float* y = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const float g = gate[i];
      y[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

}  // namespace kvmesh::kernels::ref
