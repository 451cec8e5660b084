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

#ifndef KVMESH_SMALL_M
#define KVMESH_SMALL_M 16
#endif

namespace kvmesh::kernels::ref {
namespace {

constexpr int64_t kSmallM = KVMESH_SMALL_M;

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

// Register blocking: four weight rows x two input rows per inner loop (8 accumulators; 6 loads
// per 8 FMAs), so the loop is FMA-bound rather than load-bound. The four weight rows (4 x k floats)
// stay in L1 while every input row passes over them.
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
    int64_t r = 0;
    for (; r + 2 <= m; r += 2) {
      const float* xa = x + r * k;
      const float* xb = xa + k;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
             a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
             b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
      for (int64_t i = 0; i < k8; i += 8) {
        const __m256 xva = _mm256_loadu_ps(xa + i);
        const __m256 xvb = _mm256_loadu_ps(xb + i);
        const __m256 v0 = _mm256_loadu_ps(w0 + i);
        const __m256 v1 = _mm256_loadu_ps(w1 + i);
        const __m256 v2 = _mm256_loadu_ps(w2 + i);
        const __m256 v3 = _mm256_loadu_ps(w3 + i);
        a0 = _mm256_fmadd_ps(v0, xva, a0);
        a1 = _mm256_fmadd_ps(v1, xva, a1);
        a2 = _mm256_fmadd_ps(v2, xva, a2);
        a3 = _mm256_fmadd_ps(v3, xva, a3);
        b0 = _mm256_fmadd_ps(v0, xvb, b0);
        b1 = _mm256_fmadd_ps(v1, xvb, b1);
        b2 = _mm256_fmadd_ps(v2, xvb, b2);
        b3 = _mm256_fmadd_ps(v3, xvb, b3);
      }
      float sa[4] = {HorizontalSum(a0), HorizontalSum(a1), HorizontalSum(a2), HorizontalSum(a3)};
      float sb[4] = {HorizontalSum(b0), HorizontalSum(b1), HorizontalSum(b2), HorizontalSum(b3)};
      for (int64_t i = k8; i < k; ++i) {
        const float* ws[4] = {w0, w1, w2, w3};
        for (int q = 0; q < 4; ++q) {
          sa[q] += ws[q][i] * xa[i];
          sb[q] += ws[q][i] * xb[i];
        }
      }
      for (int q = 0; q < 4; ++q) {
        y[r * n + j + q] = sa[q];
        y[(r + 1) * n + j + q] = sb[q];
      }
    }
    for (; r < m; ++r) {
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
      float s[4] = {HorizontalSum(a0), HorizontalSum(a1), HorizontalSum(a2), HorizontalSum(a3)};
      for (int64_t i = k8; i < k; ++i) {
        s[0] += w0[i] * xr[i];
        s[1] += w1[i] * xr[i];
        s[2] += w2[i] * xr[i];
        s[3] += w3[i] * xr[i];
      }
      for (int q = 0; q < 4; ++q) y[r * n + j + q] = s[q];
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
