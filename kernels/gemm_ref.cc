// Reference Linear: y = x . w^T with w row-major [n, k].
//  - m == 1 (decode at batch 1): OpenBLAS sgemv, which streams the weights once at memory speed.
//  - 2 <= m <= kSmallM (decode at small batch): our own kernel. OpenBLAS sgemm packs the whole
//    weight matrix on every call, which made m = 8 4-7x slower than sgemv on the same weights
//    (kernels_bench, docs/benchmarks.md). Here every weight row is read from memory once and
//    dotted with all m input rows while it sits in L1; AVX2+FMA when the CPU has them (runtime
//    check), split over the CPU worker pool by output rows.
//  - larger m (prefill): OpenBLAS sgemm.
// The bias is added in a second pass. OpenBLAS threading follows OPENBLAS_NUM_THREADS.
#include <cblas.h>

#include <immintrin.h>

#include "kernels/cpu_parallel.h"
#include "kernels/gemm.h"

namespace kvmesh::kernels::ref {
namespace {

constexpr int64_t kSmallM = 16;

void SmallMScalar(float* y, const float* x, const float* w, int64_t m, int64_t n, int64_t k,
                  int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    const float* wr = w + j * k;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      float acc = 0.0f;
      for (int64_t i = 0; i < k; ++i) acc += wr[i] * xr[i];
      y[r * n + j] = acc;
    }
  }
}

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// Four weight rows at a time, each dotted with every input row.
__attribute__((target("avx2,fma"))) void SmallMAvx2(float* y, const float* x, const float* w,
                                                    int64_t m, int64_t n, int64_t k, int64_t j0,
                                                    int64_t j1) {
  const int64_t k8 = k & ~int64_t{7};
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    const float* w0 = w + j * k;
    const float* w1 = w0 + k;
    const float* w2 = w1 + k;
    const float* w3 = w2 + k;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
             a3 = _mm256_setzero_ps();
      for (int64_t i = 0; i < k8; i += 8) {
        const __m256 xv = _mm256_loadu_ps(xr + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
      }
      float s0 = HorizontalSum(a0), s1 = HorizontalSum(a1), s2 = HorizontalSum(a2),
            s3 = HorizontalSum(a3);
      for (int64_t i = k8; i < k; ++i) {
        s0 += w0[i] * xr[i];
        s1 += w1[i] * xr[i];
        s2 += w2[i] * xr[i];
        s3 += w3[i] * xr[i];
      }
      float* yr = y + r * n + j;
      yr[0] = s0;
      yr[1] = s1;
      yr[2] = s2;
      yr[3] = s3;
    }
  }
  if (j < j1) SmallMScalar(y, x, w, m, n, k, j, j1);
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace

void Linear(float* y, const float* x, const float* w, const float* bias, int64_t m, int64_t n,
            int64_t k, Stream /*stream*/) {
  if (m <= 0 || n <= 0) return;
  const auto bm = static_cast<blasint>(m);
  const auto bn = static_cast<blasint>(n);
  const auto bk = static_cast<blasint>(k);
  if (m == 1) {
    // y[n] = w[n, k] . x[k]
    cblas_sgemv(CblasRowMajor, CblasNoTrans, bn, bk, 1.0f, w, bk, x, 1, 0.0f, y, 1);
  } else if (m <= kSmallM) {
    const bool avx2 = HasAvx2Fma();
    ParallelFor(n, 64, [&](int64_t j0, int64_t j1) {
      if (avx2) {
        SmallMAvx2(y, x, w, m, n, k, j0, j1);
      } else {
        SmallMScalar(y, x, w, m, n, k, j0, j1);
      }
    });
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, bn, bk, 1.0f, x, bk, w, bk, 0.0f, y,
                bn);
  }
  if (bias != nullptr) {
    for (int64_t r = 0; r < m; ++r) {
      float* row = y + r * n;
      for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
    }
  }
}

void AddInPlace(float* y, const float* x, int64_t n, Stream /*stream*/) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace kvmesh::kernels::ref
