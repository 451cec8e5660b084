#include "kv/block_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvmesh::kv {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

class RecordingSink : public KvEventSink {
 public:
  void Emit(KvEvent event) override { events.push_back(std::move(event)); }
  std::vector<KvEvent> events;
};

// Records evictions and, at call time, checks that the hash has not been dropped yet.
class RecordingHandler : public BlockPoolEvictionHandler {
 public:
  explicit RecordingHandler(const BlockPool* pool) : pool_(pool) {}
  void OnEvict(BlockId block, BlockHash hash) override {
    EXPECT_EQ(pool_->HashOf(block), hash) << "hash dropped before the handler ran";
    EXPECT_EQ(pool_->Lookup(hash), block) << "prefix map entry dropped before the handler ran";
    EXPECT_EQ(pool_->RefCount(block), 0u);
    evicted.emplace_back(block, hash);
  }
  std::vector<std::pair<BlockId, BlockHash>> evicted;

 private:
  const BlockPool* pool_;
};

std::unique_ptr<BlockPool> MakePool(uint32_t num_blocks, KvEventSink* sink = nullptr,
                                    bool caching = true) {
  BlockPoolOptions options;
  options.num_blocks = num_blocks;
  options.block_size = 4;
  options.enable_prefix_caching = caching;
  auto pool = BlockPool::Create(options, sink);
  EXPECT_TRUE(pool.ok()) << pool.status().ToString();
  return std::move(pool).value();
}

// Hash of block `i` of prompt family `root` (distinct for distinct (root, i)).
BlockHash H(uint64_t root, uint64_t i) { return 0x1000000ull * (root + 1) + 7919 * i + 13; }

std::vector<BlockHash> Chain(uint64_t root, size_t n) {
  std::vector<BlockHash> out;
  for (size_t i = 0; i < n; ++i) out.push_back(H(root, i));
  return out;
}

// Commits `blocks[i]` under hashes[i] (parent = previous hash).
void CommitAll(BlockPool& pool, std::span<const BlockId> blocks, std::span<const BlockHash> hashes) {
  ASSERT_EQ(blocks.size(), hashes.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    std::optional<BlockHash> parent;
    if (i > 0) parent = hashes[i - 1];
    ASSERT_TRUE(pool.CommitBlock(blocks[i], hashes[i], parent, {}).ok());
  }
}

// Allocates a whole sequence of `hashes.size()` blocks and commits it; returns its blocks.
std::vector<BlockId> AddSequence(BlockPool& pool, const std::vector<BlockHash>& hashes) {
  auto alloc = pool.AllocateForSequence(hashes, hashes.size() - pool.PeekCachedPrefix(hashes));
  EXPECT_TRUE(alloc.has_value());
  if (!alloc) return {};
  std::vector<BlockId> blocks = alloc->cached;
  blocks.insert(blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
  for (size_t i = alloc->cached.size(); i < blocks.size(); ++i) {
    std::optional<BlockHash> parent;
    if (i > 0) parent = hashes[i - 1];
    EXPECT_TRUE(pool.CommitBlock(blocks[i], hashes[i], parent, {}).ok());
  }
  return blocks;
}

bool SameStats(const BlockPoolStats& a, const BlockPoolStats& b) {
  return a.lookups == b.lookups && a.hits == b.hits && a.misses == b.misses &&
         a.evictions == b.evictions && a.allocations == b.allocations && a.frees == b.frees;
}

TEST(BlockPoolTest, CreateRejectsBadOptions) {
  BlockPoolOptions options;
  options.num_blocks = 1;
  auto pool = BlockPool::Create(options);
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(pool.status().message(), ::testing::HasSubstr("num_blocks"));
  options.num_blocks = 8;
  options.block_size = 0;
  pool = BlockPool::Create(options);
  ASSERT_FALSE(pool.ok());
  EXPECT_THAT(pool.status().message(), ::testing::HasSubstr("block_size"));
  options.block_size = 16;
  EXPECT_TRUE(BlockPool::Create(options).ok());
}

TEST(BlockPoolTest, CapacityAndNullBlockNeverHandedOut) {
  auto pool = MakePool(9);
  EXPECT_EQ(pool->num_blocks_total(), 8u);
  EXPECT_EQ(pool->num_blocks_free(), 8u);
  EXPECT_DOUBLE_EQ(pool->usage_ratio(), 0.0);
  for (int round = 0; round < 3; ++round) {
    auto blocks = pool->Allocate(8);
    ASSERT_TRUE(blocks.has_value());
    std::vector<BlockId> sorted = *blocks;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_THAT(sorted, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
    EXPECT_EQ(pool->num_blocks_used(), 8u);
    EXPECT_DOUBLE_EQ(pool->usage_ratio(), 1.0);
    EXPECT_FALSE(pool->Allocate(1).has_value());
    EXPECT_FALSE(pool->AllocateForSequence({}, 1).has_value());
    pool->Free(*blocks);
    EXPECT_EQ(pool->num_blocks_free(), 8u);
  }
  EXPECT_EQ(pool->RefCount(kNullBlockId), 0u);
  EXPECT_EQ(pool->HashOf(kNullBlockId), std::nullopt);
  EXPECT_THAT(pool->Allocate(0).value(), IsEmpty());
  // The smallest pool has exactly one usable block.
  auto tiny = MakePool(2);
  EXPECT_EQ(tiny->num_blocks_total(), 1u);
  EXPECT_THAT(tiny->Allocate(1).value(), ElementsAre(1));
  EXPECT_FALSE(tiny->Allocate(1).has_value());
}

TEST(BlockPoolTest, NoRoomReturnsNulloptAndChangesNothing) {
  RecordingSink sink;
  auto pool = MakePool(9, &sink);
  RecordingHandler handler(pool.get());
  pool->SetEvictionHandler(&handler);
  // Two cached blocks, freed (they sit in the free queue), plus one block in use.
  auto seq = AddSequence(*pool, Chain(0, 2));
  pool->Free(seq);
  auto held = pool->Allocate(1).value();
  ASSERT_EQ(pool->num_blocks_free(), 7u);

  const BlockPoolStats stats_before = pool->stats();
  const auto queue_before = pool->FreeQueueSnapshot();
  std::vector<uint32_t> refs_before;
  for (BlockId b = 0; b <= 8; ++b) refs_before.push_back(pool->RefCount(b));
  const size_t events_before = sink.events.size();

  // The 2 hits are free, so they use 2 of the 7 free blocks: 5 fresh fit, 6 do not.
  EXPECT_FALSE(pool->AllocateForSequence(Chain(0, 2), 6).has_value());
  EXPECT_FALSE(pool->Allocate(8).has_value());
  EXPECT_FALSE(pool->AllocateForSequence({}, 8).has_value());

  EXPECT_TRUE(SameStats(pool->stats(), stats_before));
  EXPECT_EQ(pool->FreeQueueSnapshot(), queue_before);
  for (BlockId b = 0; b <= 8; ++b) EXPECT_EQ(pool->RefCount(b), refs_before[b]) << b;
  EXPECT_EQ(sink.events.size(), events_before);
  EXPECT_THAT(handler.evicted, IsEmpty());
  EXPECT_EQ(pool->PeekCachedPrefix(Chain(0, 2)), 2u);

  // Exactly at the boundary it fits, and the hits are not evicted by the fresh blocks.
  auto alloc = pool->AllocateForSequence(Chain(0, 2), 5);
  ASSERT_TRUE(alloc.has_value());
  EXPECT_THAT(alloc->cached, ElementsAreArray(seq));
  EXPECT_EQ(alloc->fresh.size(), 5u);
  EXPECT_EQ(pool->num_blocks_free(), 0u);
  EXPECT_THAT(handler.evicted, IsEmpty());
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, RepeatedHashInOnePrefixIsCountedOnce) {
  auto pool = MakePool(5);  // 4 usable blocks
  auto seq = AddSequence(*pool, Chain(8, 1));
  pool->Free(seq);
  // The same free cached block twice in one prefix takes one block from the free queue, so 3
  // fresh blocks still fit.
  const std::vector<BlockHash> twice = {H(8, 0), H(8, 0)};
  auto alloc = pool->AllocateForSequence(twice, 3);
  ASSERT_TRUE(alloc.has_value());
  EXPECT_THAT(alloc->cached, ElementsAre(seq[0], seq[0]));
  EXPECT_EQ(pool->RefCount(seq[0]), 2u);
  EXPECT_EQ(pool->num_blocks_free(), 0u);
  pool->Free(alloc->cached);
  pool->Free(alloc->fresh);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, PrefixReuseGetsSameBlocksAndCountsHits) {
  RecordingSink sink;
  auto pool = MakePool(17, &sink);
  const auto hashes = Chain(1, 5);
  auto a = pool->AllocateForSequence(hashes, 5);
  ASSERT_TRUE(a.has_value());
  EXPECT_THAT(a->cached, IsEmpty());
  EXPECT_EQ(pool->stats().lookups, 5u);
  EXPECT_EQ(pool->stats().misses, 5u);
  CommitAll(*pool, std::span(a->fresh).first(4), std::span(hashes).first(4));  // 4 full blocks

  // A second sequence sharing the 4-block prefix, plus a different 5th block.
  std::vector<BlockHash> b_hashes(hashes.begin(), hashes.begin() + 4);
  b_hashes.push_back(H(9, 9));
  EXPECT_EQ(pool->FindCachedPrefix(b_hashes), 4u);
  auto b = pool->AllocateForSequence(b_hashes, 1);
  ASSERT_TRUE(b.has_value());
  EXPECT_THAT(b->cached, ElementsAreArray(std::span(a->fresh).first(4)));
  ASSERT_EQ(b->fresh.size(), 1u);
  EXPECT_NE(b->fresh[0], a->fresh[4]);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(pool->RefCount(a->fresh[i]), 2u);
  EXPECT_EQ(pool->RefCount(a->fresh[4]), 1u);
  // lookups: 5 (a) + 5 (Find) + 5 (b); hits 4 + 4.
  EXPECT_EQ(pool->stats().lookups, 15u);
  EXPECT_EQ(pool->stats().hits, 8u);
  EXPECT_EQ(pool->stats().misses, 7u);
  EXPECT_EQ(pool->stats().allocations, 6u);
  EXPECT_EQ(pool->num_blocks_used(), 6u);

  // Freeing the first sequence leaves the shared blocks pinned by the second.
  std::vector<BlockId> a_blocks = a->fresh;
  pool->Free(a_blocks);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(pool->RefCount(a->fresh[i]), 1u);
  EXPECT_EQ(pool->RefCount(a->fresh[4]), 0u);
  EXPECT_EQ(pool->stats().frees, 1u);
  // The stored events carry the chain.
  ASSERT_EQ(sink.events.size(), 4u);
  const auto& stored = std::get<BlockStored>(sink.events[1]);
  EXPECT_EQ(stored.parent_hash, hashes[0]);
  EXPECT_THAT(stored.hashes, ElementsAre(hashes[1]));
  EXPECT_EQ(stored.block_size, 4u);
  EXPECT_EQ(stored.medium, Medium::kG1);
  EXPECT_EQ(std::get<BlockStored>(sink.events[0]).parent_hash, std::nullopt);
}

TEST(BlockPoolTest, FreeQueuesTailFirstSoHeadStaysCached) {
  auto pool = MakePool(5);  // 4 usable blocks
  const auto hashes = Chain(2, 4);
  auto seq = AddSequence(*pool, hashes);
  ASSERT_EQ(seq.size(), 4u);
  pool->Free(seq);
  EXPECT_THAT(pool->FreeQueueSnapshot(), ElementsAre(seq[3], seq[2], seq[1], seq[0]));
  // The next fresh block is the sequence's tail; the head stays cached.
  auto one = pool->Allocate(1).value();
  EXPECT_THAT(one, ElementsAre(seq[3]));
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 3u);
  auto two = pool->Allocate(2).value();
  EXPECT_THAT(two, ElementsAre(seq[2], seq[1]));
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 1u);
  EXPECT_EQ(pool->Lookup(hashes[0]), seq[0]);
  EXPECT_EQ(pool->stats().evictions, 3u);
}

TEST(BlockPoolTest, LeastRecentlyFreedSequenceIsEvictedFirst) {
  auto pool = MakePool(5);  // 4 usable blocks
  const auto ha = Chain(3, 2);
  const auto hb = Chain(4, 2);
  auto a = AddSequence(*pool, ha);
  auto b = AddSequence(*pool, hb);
  pool->Free(a);
  pool->Free(b);
  // Reuse A (a hit pulls its blocks out of the queue), then free it again: A is now newer than B.
  auto again = pool->AllocateForSequence(ha, 0);
  ASSERT_TRUE(again.has_value());
  EXPECT_THAT(again->cached, ElementsAreArray(a));
  pool->Free(again->cached);
  EXPECT_THAT(pool->FreeQueueSnapshot(), ElementsAre(b[1], b[0], a[1], a[0]));
  auto fresh = pool->Allocate(2).value();
  EXPECT_THAT(fresh, ElementsAre(b[1], b[0]));
  EXPECT_EQ(pool->PeekCachedPrefix(hb), 0u);
  EXPECT_EQ(pool->PeekCachedPrefix(ha), 2u);
}

TEST(BlockPoolTest, HitOnFreeCachedBlockPullsItOutOfTheFreeQueue) {
  auto pool = MakePool(5);
  RecordingHandler handler(pool.get());
  pool->SetEvictionHandler(&handler);
  const auto hashes = Chain(5, 2);
  auto seq = AddSequence(*pool, hashes);
  pool->Free(seq);
  EXPECT_EQ(pool->num_blocks_free(), 4u);
  auto hit = pool->AllocateForSequence(hashes, 0);
  ASSERT_TRUE(hit.has_value());
  EXPECT_THAT(hit->cached, ElementsAreArray(seq));
  EXPECT_EQ(pool->num_blocks_free(), 2u);
  const auto queue = pool->FreeQueueSnapshot();
  for (BlockId b : seq) EXPECT_EQ(std::count(queue.begin(), queue.end(), b), 0) << b;
  // Taking every other block cannot evict the pinned hits.
  auto rest = pool->Allocate(2).value();
  for (BlockId b : rest) EXPECT_EQ(std::count(seq.begin(), seq.end(), b), 0) << b;
  EXPECT_FALSE(pool->Allocate(1).has_value());
  EXPECT_THAT(handler.evicted, IsEmpty());
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 2u);
}

TEST(BlockPoolTest, AddRefPinsAFreeCachedBlockForATransfer) {
  auto pool = MakePool(3);
  const auto hashes = Chain(6, 1);
  auto seq = AddSequence(*pool, hashes);
  pool->Free(seq);
  ASSERT_EQ(pool->RefCount(seq[0]), 0u);
  pool->AddRef(seq);
  EXPECT_EQ(pool->RefCount(seq[0]), 1u);
  EXPECT_EQ(pool->num_blocks_free(), 1u);
  EXPECT_EQ(pool->Allocate(1).value()[0], BlockId{3 - seq[0]});  // the other block
  EXPECT_FALSE(pool->Allocate(1).has_value());
  pool->Free(seq);
  EXPECT_EQ(pool->Lookup(hashes[0]), seq[0]);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, EvictionCallsHandlerFirstThenEmitsBlockRemoved) {
  RecordingSink sink;
  BlockPoolOptions options;
  options.num_blocks = 4;
  options.block_size = 2;
  options.medium = Medium::kG1;
  auto pool = BlockPool::Create(options, &sink).value();
  RecordingHandler handler(pool.get());
  pool->SetEvictionHandler(&handler);

  auto blocks = pool->Allocate(3).value();
  const std::vector<uint32_t> tokens = {7, 8};
  ASSERT_TRUE(pool->CommitBlock(blocks[0], 111, std::nullopt, tokens).ok());
  ASSERT_TRUE(pool->CommitBlock(blocks[1], 222, 111, tokens).ok());
  // blocks[2] stays uncached (a partial block).
  pool->Free(blocks);  // queue: blocks[2], blocks[1], blocks[0]
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(std::get<BlockStored>(sink.events[0]).token_ids, tokens);

  auto first = pool->Allocate(1).value();  // the uncached block: no handler, no event
  EXPECT_THAT(first, ElementsAre(blocks[2]));
  EXPECT_THAT(handler.evicted, IsEmpty());
  EXPECT_EQ(sink.events.size(), 2u);

  auto second = pool->Allocate(1).value();
  EXPECT_THAT(second, ElementsAre(blocks[1]));
  ASSERT_EQ(handler.evicted.size(), 1u);
  EXPECT_EQ(handler.evicted[0], std::make_pair(blocks[1], BlockHash{222}));
  EXPECT_EQ(pool->HashOf(blocks[1]), std::nullopt);
  EXPECT_EQ(pool->Lookup(222), std::nullopt);
  ASSERT_EQ(sink.events.size(), 3u);
  EXPECT_EQ(std::get<BlockRemoved>(sink.events[2]), (BlockRemoved{{222}, Medium::kG1}));
  EXPECT_EQ(pool->stats().evictions, 1u);
  EXPECT_EQ(pool->Lookup(111), blocks[0]);
}

TEST(BlockPoolTest, EventsCarryTheConfiguredMedium) {
  RecordingSink sink;
  BlockPoolOptions options;
  options.num_blocks = 2;
  options.medium = Medium::kG2;
  auto pool = BlockPool::Create(options, &sink).value();
  auto b = pool->Allocate(1).value();
  ASSERT_TRUE(pool->CommitBlock(b[0], 5, std::nullopt, {}).ok());
  pool->Free(b);
  pool->Allocate(1).value();
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(std::get<BlockStored>(sink.events[0]).medium, Medium::kG2);
  EXPECT_EQ(std::get<BlockRemoved>(sink.events[1]), (BlockRemoved{{5}, Medium::kG2}));
}

TEST(BlockPoolTest, DuplicateHashCommitKeepsTheFirstBlock) {
  RecordingSink sink;
  auto pool = MakePool(5, &sink);
  auto blocks = pool->Allocate(2).value();
  ASSERT_TRUE(pool->CommitBlock(blocks[0], 42, std::nullopt, {}).ok());
  ASSERT_TRUE(pool->CommitBlock(blocks[1], 42, std::nullopt, {}).ok());
  EXPECT_EQ(pool->Lookup(42), blocks[0]);
  EXPECT_EQ(pool->HashOf(blocks[0]), BlockHash{42});
  EXPECT_EQ(pool->HashOf(blocks[1]), std::nullopt);
  EXPECT_EQ(pool->num_blocks_cached(), 1u);
  EXPECT_EQ(sink.events.size(), 1u);
  // The uncached duplicate can later be committed under another hash.
  ASSERT_TRUE(pool->CommitBlock(blocks[1], 43, std::nullopt, {}).ok());
  EXPECT_EQ(pool->Lookup(43), blocks[1]);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, CommitRejectsBadBlocks) {
  RecordingSink sink;
  auto pool = MakePool(5, &sink);
  auto blocks = pool->Allocate(1).value();
  EXPECT_EQ(pool->CommitBlock(kNullBlockId, 1, std::nullopt, {}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->CommitBlock(5, 1, std::nullopt, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->CommitBlock(99, 1, std::nullopt, {}).code(), StatusCode::kInvalidArgument);
  const BlockId free_block = blocks[0] == 1 ? 2 : 1;
  Status not_in_use = pool->CommitBlock(free_block, 1, std::nullopt, {});
  EXPECT_EQ(not_in_use.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(not_in_use.message(), ::testing::HasSubstr("not in use"));
  const std::vector<uint32_t> three_tokens = {1, 2, 3};  // block_size is 4
  EXPECT_EQ(pool->CommitBlock(blocks[0], 1, std::nullopt, three_tokens).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->Lookup(1), std::nullopt);
  EXPECT_THAT(sink.events, IsEmpty());
  EXPECT_EQ(pool->HashOf(blocks[0]), std::nullopt);
}

TEST(BlockPoolTest, ResetPrefixCacheOnlyWhenNothingIsInUse) {
  RecordingSink sink;
  auto pool = MakePool(9, &sink);
  RecordingHandler handler(pool.get());
  pool->SetEvictionHandler(&handler);
  const auto hashes = Chain(7, 3);
  auto seq = AddSequence(*pool, hashes);
  EXPECT_FALSE(pool->ResetPrefixCache());
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 3u);
  EXPECT_EQ(sink.events.size(), 3u);

  pool->Free(seq);
  const auto queue = pool->FreeQueueSnapshot();
  EXPECT_TRUE(pool->ResetPrefixCache());
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 0u);
  EXPECT_EQ(pool->num_blocks_cached(), 0u);
  for (BlockId b : seq) EXPECT_EQ(pool->HashOf(b), std::nullopt);
  EXPECT_EQ(pool->FreeQueueSnapshot(), queue);
  ASSERT_EQ(sink.events.size(), 4u);
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(sink.events[3]));
  EXPECT_THAT(handler.evicted, IsEmpty());
  // Reusing the blocks evicts nothing now, and the hashes can be cached again.
  auto again = AddSequence(*pool, hashes);
  EXPECT_THAT(handler.evicted, IsEmpty());
  EXPECT_EQ(pool->stats().evictions, 0u);
  EXPECT_EQ(pool->PeekCachedPrefix(hashes), 3u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, PrefixCachingDisabledCachesNothing) {
  RecordingSink sink;
  auto pool = MakePool(5, &sink, /*caching=*/false);
  auto blocks = pool->Allocate(2).value();
  EXPECT_TRUE(pool->CommitBlock(blocks[0], 1, std::nullopt, {}).ok());
  EXPECT_EQ(pool->Lookup(1), std::nullopt);
  EXPECT_EQ(pool->HashOf(blocks[0]), std::nullopt);
  const std::vector<BlockHash> hashes = {1};
  EXPECT_EQ(pool->FindCachedPrefix(hashes), 0u);
  auto alloc = pool->AllocateForSequence(hashes, 1);
  ASSERT_TRUE(alloc.has_value());
  EXPECT_THAT(alloc->cached, IsEmpty());
  EXPECT_EQ(pool->stats().lookups, 0u);
  EXPECT_THAT(sink.events, IsEmpty());
  // Bad ids are still rejected.
  EXPECT_EQ(pool->CommitBlock(0, 1, std::nullopt, {}).code(), StatusCode::kInvalidArgument);
}

TEST(BlockPoolTest, HashMapSurvivesHeavyChurn) {
  // Many inserts/erases through a small pool exercise the map's backward-shift deletion.
  auto pool = MakePool(33);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    auto blocks = pool->Allocate(1 + rng() % 8).value();
    for (BlockId b : blocks) ASSERT_TRUE(pool->CommitBlock(b, rng() % 4096, std::nullopt, {}).ok());
    pool->Free(blocks);
    ASSERT_TRUE(pool->CheckInvariants().ok()) << i;
  }
}

// ---- invariants that must kill the process -------------------------------------------------

using BlockPoolDeathTest = ::testing::Test;

TEST(BlockPoolDeathTest, RefcountUnderflowIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(5);
  auto blocks = pool->Allocate(1).value();
  pool->Free(blocks);
  EXPECT_DEATH(pool->Free(blocks), "refcount underflow");
  EXPECT_DEATH(pool->Free(std::vector<BlockId>{4}), "refcount underflow");  // never allocated
}

TEST(BlockPoolDeathTest, FreeingTheNullBlockIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(5);
  EXPECT_DEATH(pool->Free(std::vector<BlockId>{kNullBlockId}), "null block");
  EXPECT_DEATH(pool->AddRef(std::vector<BlockId>{kNullBlockId}), "null block");
  EXPECT_DEATH(pool->Free(std::vector<BlockId>{77}), "out of range");
}

TEST(BlockPoolDeathTest, DoubleHashIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(5);
  auto blocks = pool->Allocate(1).value();
  ASSERT_TRUE(pool->CommitBlock(blocks[0], 9, std::nullopt, {}).ok());
  EXPECT_DEATH((void)pool->CommitBlock(blocks[0], 10, std::nullopt, {}), "double hash");
  EXPECT_DEATH((void)pool->CommitBlock(blocks[0], 9, std::nullopt, {}), "double hash");
}

// ---- randomized model check ----------------------------------------------------------------

// A deliberately simple reference: std::list LRU, std::map prefix map, per-block vectors.
struct Model {
  explicit Model(uint32_t total) : ref(total + 1, 0), hash(total + 1) {
    for (BlockId b = 1; b <= total; ++b) lru.push_back(b);
  }
  std::vector<uint32_t> ref;
  std::vector<std::optional<BlockHash>> hash;
  std::map<BlockHash, BlockId> map;
  std::list<BlockId> lru;
  BlockPoolStats stats;
  std::vector<std::pair<BlockId, BlockHash>> evicted;

  void Pin(BlockId b) {
    if (ref[b]++ == 0) lru.remove(b);
  }
  BlockId Take() {
    BlockId b = lru.front();
    lru.pop_front();
    if (hash[b]) {
      evicted.emplace_back(b, *hash[b]);
      map.erase(*hash[b]);
      hash[b].reset();
      ++stats.evictions;
    }
    ref[b] = 1;
    ++stats.allocations;
    return b;
  }
  void Free(const std::vector<BlockId>& blocks) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
      if (--ref[*it] == 0) {
        lru.push_back(*it);
        ++stats.frees;
      }
    }
  }
};

struct LiveSequence {
  std::vector<BlockHash> hashes;  // the prompt's full-block hashes
  std::vector<BlockId> blocks;    // cached prefix, then fresh
  size_t committed = 0;           // blocks[0, committed) hold (or tried to hold) their hash
};

void RunModelCheck(uint64_t seed, int ops) {
  constexpr uint32_t kTotal = 48;
  RecordingSink sink;
  auto pool = MakePool(kTotal + 1, &sink);
  RecordingHandler handler(pool.get());
  pool->SetEvictionHandler(&handler);
  Model model(kTotal);
  std::mt19937_64 rng(seed);
  std::vector<LiveSequence> live;
  std::vector<BlockId> extra_pins;

  for (int op = 0; op < ops; ++op) {
    const int kind = static_cast<int>(rng() % 100);
    if (kind < 35) {  // admit a sequence
      LiveSequence seq;
      seq.hashes = Chain(rng() % 6, 1 + rng() % 10);
      size_t k = 0;
      std::vector<BlockId> hits;
      while (k < seq.hashes.size() && model.map.count(seq.hashes[k])) {
        hits.push_back(model.map[seq.hashes[k]]);
        ++k;
      }
      const size_t num_new = seq.hashes.size() - k + rng() % 3;
      std::vector<BlockId> distinct_free;
      for (BlockId b : hits) {
        if (model.ref[b] == 0 &&
            std::find(distinct_free.begin(), distinct_free.end(), b) == distinct_free.end()) {
          distinct_free.push_back(b);
        }
      }
      auto alloc = pool->AllocateForSequence(seq.hashes, num_new);
      if (num_new + distinct_free.size() > model.lru.size()) {
        ASSERT_FALSE(alloc.has_value()) << "op " << op;
        continue;
      }
      ASSERT_TRUE(alloc.has_value()) << "op " << op;
      model.stats.lookups += seq.hashes.size();
      model.stats.hits += k;
      model.stats.misses += seq.hashes.size() - k;
      ASSERT_EQ(alloc->cached, hits) << "op " << op;
      for (BlockId b : hits) model.Pin(b);
      std::vector<BlockId> fresh;
      for (size_t i = 0; i < num_new; ++i) fresh.push_back(model.Take());
      ASSERT_EQ(alloc->fresh, fresh) << "op " << op;
      seq.blocks = hits;
      seq.blocks.insert(seq.blocks.end(), fresh.begin(), fresh.end());
      seq.committed = k;
      live.push_back(std::move(seq));
    } else if (kind < 60) {  // commit the next full block of some sequence
      if (live.empty()) continue;
      LiveSequence& seq = live[rng() % live.size()];
      if (seq.committed >= seq.hashes.size()) continue;
      const size_t i = seq.committed++;
      const BlockId b = seq.blocks[i];
      const BlockHash h = seq.hashes[i];
      std::optional<BlockHash> parent;
      if (i > 0) parent = seq.hashes[i - 1];
      ASSERT_TRUE(pool->CommitBlock(b, h, parent, {}).ok());
      if (!model.map.count(h)) {
        model.map[h] = b;
        model.hash[b] = h;
      }
    } else if (kind < 85) {  // finish a sequence
      if (live.empty()) continue;
      const size_t idx = rng() % live.size();
      pool->Free(live[idx].blocks);
      model.Free(live[idx].blocks);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(idx));
    } else if (kind < 92) {  // pin or unpin a block for a "transfer"
      if (!extra_pins.empty() && rng() % 2 == 0) {
        std::vector<BlockId> one = {extra_pins.back()};
        extra_pins.pop_back();
        pool->Free(one);
        model.Free(one);
      } else {
        const BlockId b = static_cast<BlockId>(1 + rng() % kTotal);
        pool->AddRef(std::vector<BlockId>{b});
        model.Pin(b);
        extra_pins.push_back(b);
      }
    } else if (kind < 97) {  // plain allocation, freed at once
      const size_t n = rng() % 6;
      auto blocks = pool->Allocate(n);
      if (n > model.lru.size()) {
        ASSERT_FALSE(blocks.has_value());
        continue;
      }
      ASSERT_TRUE(blocks.has_value());
      std::vector<BlockId> want;
      for (size_t i = 0; i < n; ++i) want.push_back(model.Take());
      ASSERT_EQ(*blocks, want);
      pool->Free(*blocks);
      model.Free(want);
    } else {  // reset
      const bool idle = model.lru.size() == kTotal;
      ASSERT_EQ(pool->ResetPrefixCache(), idle);
      if (idle) {
        model.map.clear();
        for (auto& h : model.hash) h.reset();
      }
    }

    // Compare everything a user can observe.
    ASSERT_EQ(pool->num_blocks_free() + pool->num_blocks_used(), kTotal);
    ASSERT_EQ(pool->num_blocks_free(), model.lru.size()) << "op " << op;
    ASSERT_EQ(pool->FreeQueueSnapshot(), std::vector<BlockId>(model.lru.begin(), model.lru.end()))
        << "op " << op;
    for (BlockId b = 1; b <= kTotal; ++b) {
      ASSERT_EQ(pool->RefCount(b), model.ref[b]) << "block " << b << " op " << op;
      ASSERT_EQ(pool->HashOf(b), model.hash[b]) << "block " << b << " op " << op;
    }
    ASSERT_EQ(pool->num_blocks_cached(), model.map.size());
    for (const auto& [h, b] : model.map) {
      ASSERT_EQ(pool->Lookup(h), b);
      ASSERT_EQ(pool->HashOf(b), h);
    }
    ASSERT_TRUE(SameStats(pool->stats(), model.stats)) << "op " << op;
    ASSERT_EQ(handler.evicted, model.evicted);
    ASSERT_TRUE(pool->CheckInvariants().ok()) << pool->CheckInvariants().ToString();
  }
  // Every eviction produced exactly one BlockRemoved.
  size_t removed = 0;
  for (const auto& e : sink.events) removed += std::holds_alternative<BlockRemoved>(e);
  EXPECT_EQ(removed, model.stats.evictions);
  EXPECT_GT(model.stats.evictions, 0u);
  EXPECT_GT(model.stats.hits, 0u);
}

TEST(BlockPoolModelCheck, RandomOperationsMatchReferenceModel) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(seed);
    RunModelCheck(seed, 4000);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace kvmesh::kv
