// Shared helpers of the kernels' unit tests (header-only, tests only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace kvmesh::kernels::test_util {

// n floats uniform in [-1, 1), deterministic for a seed.
inline std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace kvmesh::kernels::test_util
