// Linear layer: y[m, n] = x[m, k] . w[n, k]^T (+ bias[n] when bias != nullptr). Weights are
// row-major [out_features, in_features], as in PyTorch / Hugging Face checkpoints. All row-major and
// dense. `ref` calls OpenBLAS sgemm (sgemv when m == 1); `cuda` calls cuBLAS on the stream.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace kvmesh::kernels {
namespace ref {
void Linear(float* y, const float* x, const float* w, const float* bias, int64_t m, int64_t n,
            int64_t k, Stream stream);
// Element-wise y[i] += x[i] (residual connections).
void AddInPlace(float* y, const float* x, int64_t n, Stream stream);
}  // namespace ref
namespace cuda {
void Linear(float* y, const float* x, const float* w, const float* bias, int64_t m, int64_t n,
            int64_t k, Stream stream);
void AddInPlace(float* y, const float* x, int64_t n, Stream stream);
}  // namespace cuda
}  // namespace kvmesh::kernels
