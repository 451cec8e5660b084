// Reference sampling and the counter-based uniform shared by both backends.
//
// SampleUniform(seed, step) is output number `step` of a SplitMix64 generator seeded with `seed`:
//   z = seed + (step + 1) * 0x9E3779B97F4A7C15 (mod 2^64), then the SplitMix64 finalizer
//   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//   z ^= z >> 31; u = (z >> 40) * 2^-24, exactly representable in fp32, in [0, 1).
//
// Per row (see sampling.h): candidates are ordered by (scaled logit desc, id asc), a strict total
// order, so the result does not depend on the sort algorithm. With top_k > 0 only the k best are
// selected (nth_element, O(V)) and sorted (O(k log k)); otherwise all V are sorted. Weights are
// w_i = exp((x_i - x_max) / T) in that order; top_p keeps the shortest prefix whose cumulative
// weight >= top_p * sum(w) (at least one token); the draw picks the first kept token whose
// cumulative weight > u * sum(kept w), falling back to the last kept token if rounding leaves none.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/sampling.h"

namespace kvmesh::kernels {

float SampleUniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed + (step + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

namespace ref {
namespace {

int32_t Argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;  // strict: the lowest id wins ties
  }
  return static_cast<int32_t>(best);
}

int32_t SampleRow(const float* logits, const SamplingRow& row, int64_t vocab, float* weights,
                  std::vector<int32_t>& ids) {
  if (row.temperature <= 0.0f || row.top_k == 1) return Argmax(logits, vocab);
  const auto better = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  ids.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  int64_t k = vocab;
  if (row.top_k > 0 && row.top_k < vocab) {
    k = row.top_k;
    std::nth_element(ids.begin(), ids.begin() + (k - 1), ids.end(), better);
  }
  std::sort(ids.begin(), ids.begin() + k, better);

  // (x - x_max) / T keeps every exp() <= 1; the CUDA backend uses the same expression.
  const float x_max = logits[ids[0]];
  const float t = row.temperature;
  double total = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    const float w = std::exp((logits[ids[static_cast<size_t>(i)]] - x_max) / t);
    weights[i] = w;
    total += w;
  }
  int64_t kept = k;
  if (row.top_p < 1.0f) {
    const double threshold = static_cast<double>(row.top_p) * total;
    double cum = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      cum += weights[i];
      if (cum >= threshold) {
        kept = i + 1;
        break;
      }
    }
    total = 0.0;
    for (int64_t i = 0; i < kept; ++i) total += weights[i];
  }
  const double target = static_cast<double>(SampleUniform(row.seed, row.step)) * total;
  double cum = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    cum += weights[i];
    if (cum > target) return ids[static_cast<size_t>(i)];
  }
  return ids[static_cast<size_t>(kept - 1)];
}

}  // namespace

void Sample(int32_t* out_tokens, const float* logits, const SamplingRow* rows, int64_t num_rows,
            int64_t vocab_size, float* workspace, Stream /*stream*/) {
  thread_local std::vector<int32_t> ids;
  for (int64_t r = 0; r < num_rows; ++r) {
    out_tokens[r] = SampleRow(logits + r * vocab_size, rows[r], vocab_size, workspace, ids);
  }
}

int64_t SampleWorkspaceFloats(int64_t num_rows, int64_t vocab_size) {
  // Rows are sampled one after another and reuse the same vocab_size floats of weights.
  return num_rows > 0 ? vocab_size : 0;
}

}  // namespace ref
}  // namespace kvmesh::kernels
