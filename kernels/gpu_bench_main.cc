// kvmesh_kernels_gpu_bench: CUDA kernel throughput, printed as one JSON object on stdout.
//
//   copy_d2d         cudaMemcpy device-to-device bandwidth (the yardstick, measured in this run)
//   kv_gather/scatter  GatherBlocks / ScatterBlocks of whole KV blocks (16 tokens x 8 kv heads x
//                    128 dim x 32 layers fp32 = 4 MiB per block) vs cudaMemcpy D2D of the same
//                    bytes, as GB/s (bytes moved once / time) and ratio_vs_memcpy
//   decode_attention PagedAttentionDecode effective bandwidth = K+V bytes read / time, vs the large
//                    D2D copy bandwidth
//   prefill_attention  PagedAttentionPrefill time and GFLOP/s (4 * q * ctx/2 * head_dim * heads)
//   linear           Linear (cuBLAS fp32) GFLOP/s
//   sample           Sample time per call
// With no usable device it prints {"skipped": "no CUDA device"} and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda_device.h"
#include "kernels/gemm.h"
#include "kernels/kv_cache_ops.h"
#include "kernels/sampling.h"

namespace kvmesh::kernels {
namespace {

// The JSON is collected here and printed only when every step succeeded; on an error stdout gets
// {"error": ...} alone and the partial results go to stderr.
std::string g_out;

void Emit(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  g_out += buf;
}

bool Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  std::fprintf(stderr, "partial results:\n%s\n", g_out.c_str());
  std::printf("{\"error\": \"%s: %s\"}\n", what, cudaGetErrorString(err));
  return false;
}

bool CheckOk(const Status& s) {
  if (s.ok()) return true;
  std::fprintf(stderr, "partial results:\n%s\n", g_out.c_str());
  std::string msg = s.ToString();
  std::replace(msg.begin(), msg.end(), '"', '\'');
  std::printf("{\"error\": \"%s\"}\n", msg.c_str());
  return false;
}

#define BENCH_CHECK(call)                \
  do {                                   \
    if (!Check((call), #call)) return 1; \
  } while (0)

// Mean seconds per call of fn over `iters` calls after `warmup` calls.
double TimeIt(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / 1e3 / iters;
}

std::vector<int32_t> DistinctIds(int n, int pool, uint32_t seed, int first = 0) {
  std::vector<int32_t> ids(static_cast<size_t>(pool - first));
  std::iota(ids.begin(), ids.end(), first);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  ids.resize(static_cast<size_t>(n));
  return ids;
}

template <typename T>
T* Upload(const std::vector<T>& v) {
  void* p = nullptr;
  if (cudaMalloc(&p, v.size() * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(p);
}

int Run() {
  cudaDeviceProp prop{};
  BENCH_CHECK(cudaGetDeviceProperties(&prop, 0));
  Emit("{\n  \"device\": \"%s\", \"sms\": %d,\n", prop.name, prop.multiProcessorCount);

  // ---- copy yardstick: 1 GiB D2D ----
  const size_t big = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  BENCH_CHECK(cudaMalloc(&a, big));
  BENCH_CHECK(cudaMalloc(&b, big));
  BENCH_CHECK(cudaMemset(a, 1, big));
  const double t_big = TimeIt([&] { cudaMemcpyAsync(b, a, big, cudaMemcpyDeviceToDevice); }, 2, 10);
  const double copy_gbps = big / t_big / 1e9;
  Emit("  \"copy_d2d\": {\"bytes\": %zu, \"gbps\": %.1f},\n", big, copy_gbps);
  cudaFree(b);

  // ---- KV block gather / scatter (pool reuses `a`: 256 blocks of 4 MiB) ----
  const int64_t block_bytes = 16LL * 8 * 128 * 32 * 2 * 4;
  const int pool_blocks = static_cast<int>(big / block_bytes);
  void* packed = nullptr;
  BENCH_CHECK(cudaMalloc(&packed, big / 2));
  Emit("  \"kv_block_bytes\": %lld,\n  \"kv_gather_scatter\": [", (long long)block_bytes);
  const int counts[] = {8, 32, 128};
  for (size_t ci = 0; ci < std::size(counts); ++ci) {
    const int n = counts[ci];
    int32_t* ids = Upload(DistinctIds(n, pool_blocks, 1 + ci));
    const size_t bytes = static_cast<size_t>(n) * block_bytes;
    const double t_g = TimeIt(
        [&] { cuda::GatherBlocks(packed, a, ids, n, block_bytes, block_bytes, nullptr); }, 3, 20);
    const double t_s = TimeIt(
        [&] { cuda::ScatterBlocks(a, packed, ids, n, block_bytes, block_bytes, nullptr); }, 3, 20);
    const double t_c =
        TimeIt([&] { cudaMemcpyAsync(packed, a, bytes, cudaMemcpyDeviceToDevice); }, 3, 20);
    Emit(
        "%s\n    {\"blocks\": %d, \"bytes\": %zu, \"gather_gbps\": %.1f, \"scatter_gbps\": %.1f, "
        "\"memcpy_gbps\": %.1f, \"gather_ratio_vs_memcpy\": %.3f, \"scatter_ratio_vs_memcpy\": "
        "%.3f}",
        ci ? "," : "", n, bytes, bytes / t_g / 1e9, bytes / t_s / 1e9, bytes / t_c / 1e9, t_c / t_g,
        t_c / t_s);
    cudaFree(ids);
  }
  Emit("\n  ],\n");
  cudaFree(packed);
  cudaFree(a);
  if (!CheckOk(cuda::LastError("gather/scatter"))) return 1;

  // ---- paged decode attention ----
  struct DecodeShape {
    int batch, ctx, nq, nkv, hd;
  };
  const DecodeShape shapes[] = {
      {64, 4096, 32, 8, 128}, {64, 4096, 32, 8, 64}, {8, 4096, 32, 8, 128}, {1, 32768, 32, 8, 128}};
  Emit("  \"decode_attention\": [");
  for (size_t si = 0; si < std::size(shapes); ++si) {
    const DecodeShape s = shapes[si];
    const int block_size = 16;
    const int per_seq = s.ctx / block_size;
    const int num_blocks = s.batch * per_seq + 1;
    const int64_t block_stride = 2LL * block_size * s.nkv * s.hd;  // one layer
    float* cache = nullptr;
    const size_t cache_bytes = static_cast<size_t>(num_blocks) * block_stride * sizeof(float);
    BENCH_CHECK(cudaMalloc(&cache, cache_bytes));
    BENCH_CHECK(cudaMemset(cache, 0, cache_bytes));
    int32_t* tables = Upload(DistinctIds(s.batch * per_seq, num_blocks, 7 + si, 1));
    int32_t* lens = Upload(std::vector<int32_t>(static_cast<size_t>(s.batch), s.ctx));
    const int64_t q_stride = static_cast<int64_t>(s.nq) * s.hd;
    float *q = nullptr, *out = nullptr;
    BENCH_CHECK(cudaMalloc(&q, sizeof(float) * s.batch * q_stride));
    BENCH_CHECK(cudaMalloc(&out, sizeof(float) * s.batch * q_stride));
    BENCH_CHECK(cudaMemset(q, 0, sizeof(float) * s.batch * q_stride));
    const float* k_cache = cache;
    const float* v_cache = cache + block_stride / 2;
    const double t = TimeIt(
        [&] {
          cuda::PagedAttentionDecode(out, q, q_stride, k_cache, v_cache, block_stride, tables,
                                     per_seq, lens, s.batch, s.nq, s.nkv, s.hd, block_size,
                                     1.0f / std::sqrt(static_cast<float>(s.hd)), nullptr);
        },
        3, 20);
    const double kv_bytes = 2.0 * s.batch * s.ctx * s.nkv * s.hd * sizeof(float);
    Emit(
        "%s\n    {\"batch\": %d, \"context\": %d, \"num_q_heads\": %d, \"num_kv_heads\": %d, "
        "\"head_dim\": %d, \"us\": %.1f, \"kv_gbps\": %.1f, \"ratio_vs_copy\": %.3f}",
        si ? "," : "", s.batch, s.ctx, s.nq, s.nkv, s.hd, t * 1e6, kv_bytes / t / 1e9,
        kv_bytes / t / 1e9 / copy_gbps);
    cudaFree(cache);
    cudaFree(tables);
    cudaFree(lens);
    cudaFree(q);
    cudaFree(out);
  }
  Emit("\n  ],\n");
  if (!CheckOk(cuda::LastError("decode"))) return 1;

  // ---- prefill attention: one sequence of 2048 new tokens ----
  {
    const int tokens = 2048, nq = 32, nkv = 8, hd = 128, block_size = 16;
    const int per_seq = tokens / block_size;
    const int64_t block_stride = 2LL * block_size * nkv * hd;
    float* cache = nullptr;
    const size_t cache_bytes = static_cast<size_t>(per_seq + 1) * block_stride * sizeof(float);
    BENCH_CHECK(cudaMalloc(&cache, cache_bytes));
    BENCH_CHECK(cudaMemset(cache, 0, cache_bytes));
    int32_t* tables = Upload(DistinctIds(per_seq, per_seq + 1, 11, 1));
    int32_t* lens = Upload(std::vector<int32_t>{tokens});
    int32_t* cu = Upload(std::vector<int32_t>{0, tokens});
    const int64_t q_stride = static_cast<int64_t>(nq) * hd;
    float *q = nullptr, *out = nullptr;
    BENCH_CHECK(cudaMalloc(&q, sizeof(float) * tokens * q_stride));
    BENCH_CHECK(cudaMalloc(&out, sizeof(float) * tokens * q_stride));
    BENCH_CHECK(cudaMemset(q, 0, sizeof(float) * tokens * q_stride));
    const double t = TimeIt(
        [&] {
          cuda::PagedAttentionPrefill(
              out, q, q_stride, cache, cache + block_stride / 2, block_stride, tables, per_seq, cu,
              lens, 1, nq, nkv, hd, block_size, 1.0f / std::sqrt(static_cast<float>(hd)), nullptr);
        },
        2, 5);
    const double flops = 4.0 * nq * hd * (static_cast<double>(tokens) * (tokens + 1) / 2);
    Emit(
        "  \"prefill_attention\": {\"tokens\": %d, \"num_q_heads\": %d, \"num_kv_heads\": %d, "
        "\"head_dim\": %d, \"ms\": %.3f, \"gflops\": %.1f},\n",
        tokens, nq, nkv, hd, t * 1e3, flops / t / 1e9);
    cudaFree(cache);
    cudaFree(tables);
    cudaFree(lens);
    cudaFree(cu);
    cudaFree(q);
    cudaFree(out);
  }
  if (!CheckOk(cuda::LastError("prefill"))) return 1;

  // ---- Linear (cuBLAS fp32) ----
  struct Gemm {
    int64_t m, n, k;
  };
  const Gemm gemms[] = {{1, 4096, 4096}, {64, 4096, 4096}, {512, 14336, 4096}, {2048, 4096, 4096}};
  Emit("  \"linear\": [");
  for (size_t gi = 0; gi < std::size(gemms); ++gi) {
    const Gemm g = gemms[gi];
    float *x = nullptr, *w = nullptr, *y = nullptr;
    BENCH_CHECK(cudaMalloc(&x, sizeof(float) * g.m * g.k));
    BENCH_CHECK(cudaMalloc(&w, sizeof(float) * g.n * g.k));
    BENCH_CHECK(cudaMalloc(&y, sizeof(float) * g.m * g.n));
    BENCH_CHECK(cudaMemset(x, 0, sizeof(float) * g.m * g.k));
    BENCH_CHECK(cudaMemset(w, 0, sizeof(float) * g.n * g.k));
    const double t = TimeIt([&] { cuda::Linear(y, x, w, nullptr, g.m, g.n, g.k, nullptr); }, 3, 20);
    Emit(
        "%s\n    {\"m\": %lld, \"n\": %lld, \"k\": %lld, \"us\": %.1f, \"gflops\": %.1f, "
        "\"weight_gbps\": %.1f}",
        gi ? "," : "", (long long)g.m, (long long)g.n, (long long)g.k, t * 1e6,
        2.0 * g.m * g.n * g.k / t / 1e9, 4.0 * g.n * g.k / t / 1e9);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
  }
  Emit("\n  ],\n");
  if (!CheckOk(cuda::LastError("linear"))) return 1;

  // ---- sampling: 64 rows x 128256 ----
  {
    const int64_t rows = 64, vocab = 128256;
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    std::mt19937 rng(3);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    for (auto& v : logits) v = dist(rng);
    float* d_logits = Upload(logits);
    float* ws = nullptr;
    BENCH_CHECK(cudaMalloc(&ws, sizeof(float) * cuda::SampleWorkspaceFloats(rows, vocab)));
    int32_t* out = nullptr;
    BENCH_CHECK(cudaMalloc(&out, sizeof(int32_t) * rows));
    Emit("  \"sample\": [");
    const SamplingRow kinds[] = {
        {0.0f, 0, 1.0f, 1, 0}, {0.8f, 50, 1.0f, 1, 0}, {0.8f, 0, 0.9f, 1, 0}};
    const char* names[] = {"greedy", "top_k_50", "top_p_0.9"};
    for (size_t ki = 0; ki < std::size(kinds); ++ki) {
      std::vector<SamplingRow> rs(static_cast<size_t>(rows), kinds[ki]);
      const double t =
          TimeIt([&] { cuda::Sample(out, d_logits, rs.data(), rows, vocab, ws, nullptr); }, 2, 10);
      Emit("%s\n    {\"kind\": \"%s\", \"rows\": %lld, \"vocab\": %lld, \"us\": %.1f}",
           ki ? "," : "", names[ki], (long long)rows, (long long)vocab, t * 1e6);
    }
    Emit("\n  ]\n}\n");
    cudaFree(d_logits);
    cudaFree(ws);
    cudaFree(out);
  }
  if (!CheckOk(cuda::LastError("sample"))) return 1;
  std::fputs(g_out.c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace kvmesh::kernels

int main() {
  if (kvmesh::kernels::cuda::UsableDeviceCount() == 0) {
    std::printf("{\"skipped\": \"no CUDA device\"}\n");
    return 0;
  }
  return kvmesh::kernels::Run();
}
