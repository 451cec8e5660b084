// CUDA token sampling with exactly the reference's rule (kernels/sampling.h, sampling_ref.cc), so
// both backends pick the same token for the same logits and (seed, step).
//
// One CTA of 512 threads per row. Candidates are ordered by a 64-bit key that sorts ascending in
// the reference's order: high 32 bits = the logit's bits mapped to an order-preserving unsigned
// value and inverted (higher logit first), low 32 bits = token id (lower id first on ties). The
// kernel never sorts; every "first position in sorted order where a prefix count/mass reaches a
// threshold" question is answered by a binary search over the key space, each probe one
// block-wide reduction over the row (64 probes at most):
//   greedy: the minimum key;  top_k: the smallest key K with #{key <= K} >= k;
//   top_p: the smallest K with sum{w : key <= K} >= top_p * total;
//   draw:  the smallest K with sum{w : key <= K} > u * kept_total (else the last kept token).
// Weights w = expf((x - x_max) / T) are computed once into the workspace; prefix masses are summed
// in double as the reference does (in a different order, so a tie at the exact boundary of a
// draw may in principle round differently; the tests compare token-for-token).
//
// Workspace (device floats): the SamplingRow array (copied from the host with cudaMemcpyAsync on
// the stream; pageable source, so the call returns once the rows are staged), then
// num_rows * vocab_size weights.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda_util.cuh"
#include "kernels/sampling.h"

namespace kvmesh::kernels::cuda {
namespace {

constexpr int kSampleThreads = 512;
constexpr int kSampleWarps = kSampleThreads / 32;

__device__ __forceinline__ float DeviceSampleUniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed + (step + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

__device__ __forceinline__ uint64_t OrderKey(float x, int64_t id) {
  if (x == 0.0f) x = 0.0f;  // -0 == +0 in the reference's comparison
  uint32_t u = __float_as_uint(x);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending with x
  return (static_cast<uint64_t>(~u) << 32) | static_cast<uint32_t>(id);
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MinOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? b : a; }
};

// Block-wide reduction; every thread gets the result. scratch: kSampleWarps T's.
template <typename T, typename Op>
__device__ T BlockReduce(T v, T* scratch, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kSampleWarps; ++w) r = op(r, scratch[w]);
  return r;
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(int32_t* out_tokens, const float* logits, const SamplingRow* rows,
                 int64_t vocab, float* weights_all) {
  __shared__ uint64_t s_u64[kSampleWarps];
  __shared__ double s_f64[kSampleWarps];
  const int64_t r = blockIdx.x;
  const float* x = logits + r * vocab;
  float* w = weights_all + r * vocab;
  const SamplingRow row = rows[r];

  // Best candidate (greedy answer, and x_max).
  uint64_t best = ~0ull;
  for (int64_t i = threadIdx.x; i < vocab; i += kSampleThreads) {
    const uint64_t key = OrderKey(x[i], i);
    best = key < best ? key : best;
  }
  best = BlockReduce(best, s_u64, MinOp());
  const int32_t best_id = static_cast<int32_t>(best & 0xffffffffu);
  if (row.temperature <= 0.0f || row.top_k == 1) {
    if (threadIdx.x == 0) out_tokens[r] = best_id;
    return;
  }

  // Smallest key K with pred(K) true, pred monotone and true at the top of the range.
  auto search = [&](auto pred) {
    uint64_t lo = 0, hi = ~0ull;
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (pred(mid)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  };

  // top_k: candidates are the keys <= k_limit.
  uint64_t k_limit = ~0ull;
  if (row.top_k > 0 && row.top_k < vocab) {
    const int64_t k = row.top_k;
    k_limit = search([&](uint64_t lim) {
      int64_t c = 0;
      for (int64_t i = threadIdx.x; i < vocab; i += kSampleThreads) c += OrderKey(x[i], i) <= lim;
      return BlockReduce(static_cast<unsigned long long>(c),
                         reinterpret_cast<unsigned long long*>(s_u64), SumOp()) >=
             static_cast<unsigned long long>(k);
    });
  }

  const float x_max = x[best_id];
  const float inv_t = 1.0f / row.temperature;
  double total = 0.0;
  uint64_t last_kept = 0;  // the largest candidate key
  for (int64_t i = threadIdx.x; i < vocab; i += kSampleThreads) {
    const uint64_t key = OrderKey(x[i], i);
    float wi = 0.0f;
    if (key <= k_limit) {
      wi = expf((x[i] - x_max) * inv_t);
      last_kept = key > last_kept ? key : last_kept;
    }
    w[i] = wi;
    total += wi;
  }
  total = BlockReduce(total, s_f64, SumOp());
  last_kept = BlockReduce(last_kept, s_u64, MaxOp());

  // Prefix mass of the candidates with key <= lim.
  auto mass = [&](uint64_t lim) {
    double m = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += kSampleThreads) {
      if (OrderKey(x[i], i) <= lim) m += w[i];
    }
    return BlockReduce(m, s_f64, SumOp());
  };

  if (row.top_p < 1.0f) {
    const double threshold = static_cast<double>(row.top_p) * total;
    if (mass(last_kept) >= threshold) {  // else rounding kept everything, as in the reference
      last_kept = search([&](uint64_t lim) { return mass(lim) >= threshold; });
      total = mass(last_kept);
    }
  }
  const double target = static_cast<double>(DeviceSampleUniform(row.seed, row.step)) * total;
  uint64_t pick = last_kept;
  if (mass(last_kept) > target) {
    pick = search([&](uint64_t lim) { return mass(lim) > target; });
  }
  if (threadIdx.x == 0) out_tokens[r] = static_cast<int32_t>(pick & 0xffffffffu);
}

int64_t RowFloats(int64_t num_rows) {
  const int64_t bytes = num_rows * static_cast<int64_t>(sizeof(SamplingRow));
  return internal::CeilDiv(internal::CeilDiv(bytes, sizeof(float)), 4) * 4;  // keep 16B alignment
}

}  // namespace

void Sample(int32_t* out_tokens, const float* logits, const SamplingRow* rows, int64_t num_rows,
            int64_t vocab_size, float* workspace, Stream stream) {
  if (num_rows <= 0 || vocab_size <= 0) return;
  const cudaStream_t s = internal::AsCudaStream(stream);
  auto* dev_rows = reinterpret_cast<SamplingRow*>(workspace);
  const cudaError_t err =
      cudaMemcpyAsync(dev_rows, rows, static_cast<size_t>(num_rows) * sizeof(SamplingRow),
                      cudaMemcpyHostToDevice, s);
  if (err != cudaSuccess) {
    internal::RecordLaunchError(internal::CudaErrorStatus(
        err, "cudaMemcpyAsync(sampling rows, HostToDevice)", __FILE__, __LINE__));
    return;
  }
  SampleKernel<<<static_cast<unsigned>(num_rows), kSampleThreads, 0, s>>>(
      out_tokens, logits, dev_rows, vocab_size, workspace + RowFloats(num_rows));
}

int64_t SampleWorkspaceFloats(int64_t num_rows, int64_t vocab_size) {
  if (num_rows <= 0) return 0;
  return RowFloats(num_rows) + num_rows * vocab_size;
}

}  // namespace kvmesh::kernels::cuda
