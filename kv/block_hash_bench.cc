// Block hashing throughput: a 128k-token prompt through ComputeSequenceHashes (block size 16 and
// 128), against the floor of raw XXH3-64 over the same 512 KiB in the same run: one call over the
// whole buffer, and one call per block (the minimum work the scheme needs before chaining).
//
//   ninja -C build kvmesh_kv_block_hash_bench && build/kv/kvmesh_kv_block_hash_bench
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kv/block_hash.h"

namespace {

constexpr size_t kPromptTokens = 128 * 1024;

const std::vector<uint32_t>& Prompt() {
  static const std::vector<uint32_t> tokens = [] {
    std::mt19937 rng(42);
    std::vector<uint32_t> v(kPromptTokens);
    for (auto& t : v) t = rng() % 152064;  // a Qwen-sized vocabulary
    return v;
  }();
  return tokens;
}

void SetBytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kPromptTokens * sizeof(uint32_t));
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kPromptTokens, benchmark::Counter::kIsRate);
}

void BM_ComputeSequenceHashes(benchmark::State& state) {
  const auto& tokens = Prompt();
  kvmesh::kv::BlockHashOptions opts;
  opts.block_size = static_cast<uint32_t>(state.range(0));
  opts.cache_salt = state.range(1) ? "tenant-salt" : "";
  for (auto _ : state) {
    auto h = kvmesh::kv::ComputeSequenceHashes(tokens, opts);
    benchmark::DoNotOptimize(h);
  }
  SetBytes(state);
}
BENCHMARK(BM_ComputeSequenceHashes)
    ->ArgNames({"block_size", "salt"})
    ->Args({16, 0})
    ->Args({16, 1})
    ->Args({128, 0})
    ->Unit(benchmark::kMicrosecond);

void BM_ComputeBlockHashes(benchmark::State& state) {
  const auto& tokens = Prompt();
  kvmesh::kv::BlockHashOptions opts;
  opts.block_size = static_cast<uint32_t>(state.range(0));
  for (auto _ : state) {
    auto h = kvmesh::kv::ComputeBlockHashes(tokens, opts);
    benchmark::DoNotOptimize(h);
  }
  SetBytes(state);
}
BENCHMARK(BM_ComputeBlockHashes)->ArgName("block_size")->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond);

// Floor 1: one XXH3-64 call over the whole 512 KiB.
void BM_RawXxh3WholeBuffer(benchmark::State& state) {
  const auto& tokens = Prompt();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        XXH3_64bits_withSeed(tokens.data(), tokens.size() * sizeof(uint32_t), kvmesh::kv::kBlockHashSeed));
  }
  SetBytes(state);
}
BENCHMARK(BM_RawXxh3WholeBuffer)->Unit(benchmark::kMicrosecond);

// Floor 2: one XXH3-64 call per block, results discarded (no chaining, no allocation).
void BM_RawXxh3PerBlock(benchmark::State& state) {
  const auto& tokens = Prompt();
  const size_t bs = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    uint64_t acc = 0;
    for (size_t i = 0; i + bs <= tokens.size(); i += bs) {
      acc ^= XXH3_64bits_withSeed(tokens.data() + i, bs * sizeof(uint32_t), kvmesh::kv::kBlockHashSeed);
    }
    benchmark::DoNotOptimize(acc);
  }
  SetBytes(state);
}
BENCHMARK(BM_RawXxh3PerBlock)->ArgName("block_size")->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
