// Micro-benchmarks of the G1 block pool on the engine's hot path: admit a 64-block sequence
// (prefix lookup + pin + fresh allocation, evicting cached blocks once the pool is warm), commit
// its new full blocks, free it. Pool: 64k blocks. Counter `per_block` = time per block handled.
//
//   ninja -C build kvmesh_kv_block_pool_bench && build/kv/kvmesh_kv_block_pool_bench
#include <benchmark/benchmark.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "kv/block_pool.h"

namespace kvmesh::kv {
namespace {

constexpr uint32_t kPoolBlocks = 65536;
constexpr size_t kSeqBlocks = 64;

std::unique_ptr<BlockPool> MakePool(bool caching, KvEventSink* sink = nullptr) {
  BlockPoolOptions options;
  options.num_blocks = kPoolBlocks;
  options.block_size = 16;
  options.enable_prefix_caching = caching;
  return BlockPool::Create(options, sink).value();
}

class CountingSink : public KvEventSink {
 public:
  void Emit(KvEvent event) override { benchmark::DoNotOptimize(event); ++count; }
  uint64_t count = 0;
};

void SetPerBlockCounter(benchmark::State& state) {
  state.counters["per_block"] = benchmark::Counter(
      static_cast<double>(kSeqBlocks),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kSeqBlocks));
}

// Arg 0: how many of the 64 blocks are a cached prefix shared by every sequence (0, 32, 64);
// the rest are unique to the sequence, allocated fresh and committed. Arg 1: emit events.
void BM_AdmitCommitFree(benchmark::State& state) {
  const size_t shared = static_cast<size_t>(state.range(0));
  CountingSink sink;
  auto pool = MakePool(true, state.range(1) != 0 ? &sink : nullptr);
  std::vector<BlockHash> hashes(kSeqBlocks);
  for (size_t i = 0; i < shared; ++i) hashes[i] = 0xABCD0000ull + i;
  {  // Warm the shared prefix.
    auto a = pool->AllocateForSequence(std::span(hashes).first(shared), shared).value();
    for (size_t i = 0; i < shared; ++i) (void)pool->CommitBlock(a.fresh[i], hashes[i], {}, {});
    pool->Free(a.fresh);
  }
  uint64_t next_unique = 1ull << 40;
  std::vector<BlockId> blocks;
  blocks.reserve(kSeqBlocks);
  for (auto _ : state) {
    for (size_t i = shared; i < kSeqBlocks; ++i) hashes[i] = next_unique++;
    auto alloc = pool->AllocateForSequence(hashes, kSeqBlocks - pool->PeekCachedPrefix(hashes));
    if (!alloc) {
      state.SkipWithError("no room");
      break;
    }
    blocks = alloc->cached;
    blocks.insert(blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
    for (size_t i = alloc->cached.size(); i < kSeqBlocks; ++i) {
      const std::optional<BlockHash> parent =
          i > 0 ? std::optional<BlockHash>(hashes[i - 1]) : std::nullopt;
      (void)pool->CommitBlock(blocks[i], hashes[i], parent, {});
    }
    pool->Free(blocks);
  }
  SetPerBlockCounter(state);
  state.counters["evictions"] = static_cast<double>(pool->stats().evictions);
  state.counters["hit_ratio"] =
      static_cast<double>(pool->stats().hits) / static_cast<double>(pool->stats().lookups);
}
BENCHMARK(BM_AdmitCommitFree)
    ->ArgNames({"shared", "events"})
    ->Args({0, 0})
    ->Args({32, 0})
    ->Args({64, 0})
    ->Args({0, 1});

// Baseline without prefix caching: Allocate(64) + Free.
void BM_AllocateFreeNoCaching(benchmark::State& state) {
  auto pool = MakePool(false);
  for (auto _ : state) {
    auto blocks = pool->Allocate(kSeqBlocks);
    benchmark::DoNotOptimize(blocks);
    pool->Free(*blocks);
  }
  SetPerBlockCounter(state);
}
BENCHMARK(BM_AllocateFreeNoCaching);

// Prefix lookup alone (64 cached hashes), no allocation.
void BM_FindCachedPrefix(benchmark::State& state) {
  auto pool = MakePool(true);
  std::vector<BlockHash> hashes(kSeqBlocks);
  for (size_t i = 0; i < kSeqBlocks; ++i) hashes[i] = 0x5000ull + i * 0x10001ull;
  auto a = pool->Allocate(kSeqBlocks).value();
  for (size_t i = 0; i < kSeqBlocks; ++i) (void)pool->CommitBlock(a[i], hashes[i], {}, {});
  for (auto _ : state) benchmark::DoNotOptimize(pool->FindCachedPrefix(hashes));
  SetPerBlockCounter(state);
}
BENCHMARK(BM_FindCachedPrefix);

}  // namespace
}  // namespace kvmesh::kv

BENCHMARK_MAIN();
