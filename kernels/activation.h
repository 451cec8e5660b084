// SiLU-and-multiply (Llama MLP): gate_up is [rows, 2 * dim] with the gate in the first half and
// the up projection in the second; out[r, i] = silu(gate[r, i]) * up[r, i], out is [rows, dim].
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
void SiluAndMul(float* out, const float* gate_up, int64_t rows, int64_t dim, Stream stream);
}  // namespace ref
namespace cuda {
void SiluAndMul(float* out, const float* gate_up, int64_t rows, int64_t dim, Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
