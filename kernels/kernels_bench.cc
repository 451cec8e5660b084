// CPU kernel benchmarks for the reference backend, with a memory-bandwidth probe in the same
// binary so that kernel throughput can be read as a fraction of what the machine can stream.
//
//   BM_MemReadSum        : sums a 256 MiB float buffer (bytes read / s), 1 thread and all threads
//   BM_Memcpy            : 256 MiB memcpy (bytes copied / s; each byte is read once, written once)
//   BM_Linear/m/n/k      : ref::Linear at decode shapes; bytes_per_second = weight bytes read.
//                          Each iteration uses the next of several weight copies (>= 256 MiB in
//                          all), so the weights stream from DRAM as in a real decode step instead
//                          of sitting in the last-level cache.
//   BM_PagedDecode       : ref::PagedAttentionDecode, batch 8 x context 512, 12 q heads / 4 KV
//                          heads x 64, block 16; bytes_per_second = K+V bytes read. Iterations
//                          cycle over 12 layers of one cache (96 MiB) for the same reason.
//
// Run: build-kref/kernels/kvmesh_kernels_kernels_bench --benchmark_format=json
// OpenBLAS threads follow OPENBLAS_NUM_THREADS (default: all cores).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/ref_util.h"

namespace kvmesh::kernels {
namespace {

constexpr int64_t kProbeBytes = int64_t{256} << 20;

std::vector<float> Filled(int64_t n, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float>& ProbeBuffer() {
  static std::vector<float> buf = Filled(kProbeBytes / 4, 1);
  return buf;
}

void BM_MemReadSum(benchmark::State& state) {
  const auto& buf = ProbeBuffer();
  const int64_t n = static_cast<int64_t>(buf.size()) / state.threads();
  const float* p = buf.data() + n * state.thread_index();
  for (auto _ : state) {
    using ref_internal::Load4;
    ref_internal::Vec4 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t i = 0; i + 16 <= n; i += 16) {
      a0 += Load4(p + i);
      a1 += Load4(p + i + 4);
      a2 += Load4(p + i + 8);
      a3 += Load4(p + i + 12);
    }
    ref_internal::Vec4 acc = (a0 + a1) + (a2 + a3);
    benchmark::DoNotOptimize(acc);
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_MemReadSum)->Threads(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MemReadSum)
    ->Threads(static_cast<int>(std::max(2u, std::thread::hardware_concurrency())))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Memcpy(benchmark::State& state) {
  const auto& src = ProbeBuffer();
  std::vector<float> dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kProbeBytes);
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond);

void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const int64_t w_elems = n * k;
  const int64_t copies = std::max<int64_t>(2, kProbeBytes / (w_elems * 4));
  std::vector<float> w = Filled(w_elems * copies, 2);
  const auto x = Filled(m * k, 3);
  std::vector<float> y(static_cast<size_t>(m * n));
  int64_t i = 0;
  for (auto _ : state) {
    ref::Linear(y.data(), x.data(), w.data() + (i++ % copies) * w_elems, nullptr, m, n, k, nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * w_elems * 4);
  state.counters["FLOPS"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 2.0 * m * n * k, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"m", "n", "k"})
    ->Args({1, 2048, 768})
    ->Args({8, 2048, 768})
    ->Args({32, 2048, 768})
    ->Args({1, 1024, 768})
    ->Args({8, 1024, 768})
    ->Args({32, 1024, 768})
    ->UseRealTime();

void BM_PagedDecode(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const int ctx = static_cast<int>(state.range(1));
  const int q_heads = 12, kv_heads = 4, head_dim = 64, block_size = 16, layers = 12;
  const int blocks_per_seq = (ctx + block_size - 1) / block_size;
  const KvCacheLayout layout{layers, batch * blocks_per_seq + 1, block_size, kv_heads, head_dim};
  const auto cache = Filled(layout.total_elems(), 4);
  // Shuffled block tables, as after a while of serving.
  std::vector<int32_t> ids(static_cast<size_t>(batch * blocks_per_seq));
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(5));
  const std::vector<int32_t> lens(static_cast<size_t>(batch), ctx);
  const auto q = Filled(int64_t{batch} * q_heads * head_dim, 6);
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  int layer = 0;
  for (auto _ : state) {
    ref::PagedAttentionDecode(out.data(), q.data(), q_heads * head_dim,
                              cache.data() + layout.layer_offset(layer, 0),
                              cache.data() + layout.layer_offset(layer, 1), layout.block_stride(),
                              ids.data(), blocks_per_seq, lens.data(), batch, q_heads, kv_heads,
                              head_dim, block_size, scale, nullptr);
    benchmark::DoNotOptimize(out.data());
    layer = (layer + 1) % layers;
  }
  const int64_t kv_bytes = int64_t{2} * batch * ctx * kv_heads * head_dim * 4;
  state.SetBytesProcessed(state.iterations() * kv_bytes);
}
BENCHMARK(BM_PagedDecode)
    ->ArgNames({"batch", "ctx"})
    ->Args({8, 512})
    ->Args({1, 2048})
    ->UseRealTime();

}  // namespace
}  // namespace kvmesh::kernels

BENCHMARK_MAIN();
