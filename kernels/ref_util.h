// Small helpers shared by the reference (CPU) kernels in kernels/*_ref.cc. Private to kernels/:
// nothing outside this folder includes it.
//
// Dot() and Axpy() use GCC/Clang vector extensions (4 floats: one SSE register on baseline x86-64,
// NEON on arm64; 16-byte vectors keep the ABI independent of -mavx) so that the hot loops of
// attention and RMSNorm are SIMD without -ffast-math. Dot() keeps 16 independent fp32 partial sums,
// so its result differs from a left-to-right sum by normal fp32 rounding only.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvmesh::kernels::ref_internal {

typedef float Vec4 __attribute__((vector_size(16)));

inline Vec4 Load4(const float* p) {
  Vec4 v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}

inline void Store4(float* p, Vec4 v) { std::memcpy(p, &v, sizeof(v)); }

inline float Dot(const float* a, const float* b, int64_t n) {
  Vec4 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += Load4(a + i) * Load4(b + i);
    acc1 += Load4(a + i + 4) * Load4(b + i + 4);
    acc2 += Load4(a + i + 8) * Load4(b + i + 8);
    acc3 += Load4(a + i + 12) * Load4(b + i + 12);
  }
  for (; i + 4 <= n; i += 4) acc0 += Load4(a + i) * Load4(b + i);
  const Vec4 acc = (acc0 + acc1) + (acc2 + acc3);
  float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[i] = y[i] * scale + a * x[i]
inline void ScaleAxpy(float* y, float scale, float a, const float* x, int64_t n) {
  const Vec4 vs = {scale, scale, scale, scale};
  const Vec4 va = {a, a, a, a};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) Store4(y + i, Load4(y + i) * vs + va * Load4(x + i));
  for (; i < n; ++i) y[i] = y[i] * scale + a * x[i];
}

// y[i] += a * x[i]
inline void Axpy(float* y, float a, const float* x, int64_t n) {
  const Vec4 va = {a, a, a, a};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) Store4(y + i, Load4(y + i) + va * Load4(x + i));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace kvmesh::kernels::ref_internal
