// Reference RMSNorm: one pass for the mean square (fp32, 8 partial sums), one pass to scale.
#include <cmath>

#include "kernels/ref_util.h"
#include "kernels/rmsnorm.h"

namespace kvmesh::kernels::ref {

void RmsNorm(float* out, const float* in, const float* weight, int64_t rows, int64_t dim, float eps,
             Stream /*stream*/) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * dim;
    float* y = out + r * dim;
    const float mean_sq = ref_internal::Dot(x, x, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean_sq + eps);
    for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * inv * weight[i];
  }
}

}  // namespace kvmesh::kernels::ref
