// RMSNorm (Llama): out[r, i] = in[r, i] / sqrt(mean_j(in[r, j]^2) + eps) * weight[i].
// `out` may alias `in`.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
void RmsNorm(float* out, const float* in, const float* weight, int64_t rows, int64_t dim, float eps,
             Stream stream);
}  // namespace ref
namespace cuda {
void RmsNorm(float* out, const float* in, const float* weight, int64_t rows, int64_t dim, float eps,
             Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
