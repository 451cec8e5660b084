#include "kv/host_tier.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "kv/tier_test_util.h"

namespace kvmesh::kv {
namespace {

using testing::PatternFor;
using testing::SameBytes;
using testing::VectorSink;

constexpr size_t kBytes = 256;

class FailingCopier final : public BlockCopier {
 public:
  Status CopyToHost(void*, const void*, size_t) override { return InternalError("dma failed"); }
  Status CopyFromHost(void*, const void*, size_t) override { return InternalError("dma failed"); }
};

std::unique_ptr<HostTier> MakeTier(uint32_t capacity, VectorSink* sink) {
  HostTierOptions o;
  o.capacity_blocks = capacity;
  o.block_bytes = kBytes;
  auto t = HostTier::Create(o, sink);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(HostTierTest, StoreThenLoadRoundTripsBytesAndCountsHits) {
  VectorSink sink;
  auto tier = MakeTier(4, &sink);
  MemcpyBlockCopier copier;
  auto src = PatternFor(7, kBytes);
  ASSERT_TRUE(tier->Store(7, BlockHash{3}, 1, src.data(), copier).ok());
  EXPECT_TRUE(tier->Contains(7));
  EXPECT_TRUE(SameBytes(tier->Peek(7), src));

  std::vector<std::byte> dst(kBytes);
  auto hits = tier->Load(7, dst.data(), copier);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(*hits, 2u);  // 1 carried in + this load
  EXPECT_TRUE(SameBytes(dst, src));
  EXPECT_TRUE(tier->Contains(7));  // inclusive: G2 keeps its copy

  ASSERT_EQ(sink.events.size(), 1u);
  const auto& ev = std::get<BlockStored>(sink.events[0]);
  EXPECT_EQ(ev.medium, Medium::kG2);
  EXPECT_EQ(ev.hashes, std::vector<BlockHash>{7});
  EXPECT_EQ(ev.parent_hash, BlockHash{3});
  EXPECT_EQ(ev.block_size, 16u);
  EXPECT_EQ(tier->stats().stores, 1u);
  EXPECT_EQ(tier->stats().loads, 1u);
}

TEST(HostTierTest, LoadOfAbsentBlockIsNotFound) {
  auto tier = MakeTier(2, nullptr);
  MemcpyBlockCopier copier;
  std::vector<std::byte> dst(kBytes);
  EXPECT_EQ(tier->Load(99, dst.data(), copier).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(tier->stats().load_misses, 1u);
}

TEST(HostTierTest, EvictsLeastRecentlyUsedAtCapacity) {
  VectorSink sink;
  auto tier = MakeTier(3, &sink);
  MemcpyBlockCopier copier;
  std::vector<EvictedBlock> evicted;
  std::vector<std::vector<std::byte>> evicted_bytes;
  tier->SetEvictionHandler([&](const EvictedBlock& b) {
    evicted.push_back(b);
    evicted_bytes.emplace_back(b.bytes.begin(), b.bytes.end());
  });
  for (BlockHash h : {1, 2, 3}) {
    auto src = PatternFor(h, kBytes);
    ASSERT_TRUE(tier->Store(h, std::nullopt, 0, src.data(), copier).ok());
  }
  std::vector<std::byte> dst(kBytes);
  ASSERT_TRUE(tier->Load(1, dst.data(), copier).ok());  // 1 becomes most recent
  auto src4 = PatternFor(4, kBytes);
  ASSERT_TRUE(tier->Store(4, std::nullopt, 0, src4.data(), copier).ok());

  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].hash, 2u);
  EXPECT_TRUE(SameBytes(evicted_bytes[0], PatternFor(2, kBytes)));
  EXPECT_FALSE(tier->Contains(2));
  EXPECT_EQ(tier->size(), 3u);
  EXPECT_EQ(tier->LruSnapshot(), (std::vector<BlockHash>{3, 1, 4}));
  EXPECT_EQ(sink.Removed(Medium::kG2), std::vector<BlockHash>{2});
  EXPECT_EQ(sink.Stored(Medium::kG2), (std::vector<BlockHash>{1, 2, 3, 4}));
  // The reused slot holds the new block's bytes.
  EXPECT_TRUE(SameBytes(tier->Peek(4), src4));
}

TEST(HostTierTest, StoringAPresentBlockRefreshesWithoutCopyOrEvent) {
  VectorSink sink;
  auto tier = MakeTier(2, &sink);
  MemcpyBlockCopier copier;
  auto a = PatternFor(1, kBytes), b = PatternFor(2, kBytes);
  ASSERT_TRUE(tier->Store(1, std::nullopt, 1, a.data(), copier).ok());
  ASSERT_TRUE(tier->Store(2, std::nullopt, 0, b.data(), copier).ok());
  ASSERT_TRUE(tier->Store(1, std::nullopt, 5, b.data(), copier).ok());
  EXPECT_TRUE(SameBytes(tier->Peek(1), a));  // not overwritten
  EXPECT_EQ(tier->HitCount(1), 5u);
  EXPECT_EQ(tier->LruSnapshot(), (std::vector<BlockHash>{2, 1}));
  EXPECT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(tier->stats().store_refreshes, 1u);
}

TEST(HostTierTest, CopierErrorLeavesBlockUnstored) {
  VectorSink sink;
  auto tier = MakeTier(2, &sink);
  FailingCopier bad;
  auto a = PatternFor(1, kBytes);
  Status st = tier->Store(1, std::nullopt, 0, a.data(), bad);
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_FALSE(tier->Contains(1));
  EXPECT_EQ(tier->size(), 0u);
  EXPECT_TRUE(sink.events.empty());
  EXPECT_EQ(tier->stats().store_errors, 1u);
}

TEST(HostTierTest, RemoveEmitsBlockRemoved) {
  VectorSink sink;
  auto tier = MakeTier(2, &sink);
  MemcpyBlockCopier copier;
  auto a = PatternFor(1, kBytes);
  ASSERT_TRUE(tier->Store(1, std::nullopt, 0, a.data(), copier).ok());
  EXPECT_TRUE(tier->Remove(1));
  EXPECT_FALSE(tier->Remove(1));
  EXPECT_EQ(sink.Removed(Medium::kG2), std::vector<BlockHash>{1});
}

TEST(HostTierTest, ValidateRejectsBadOptions) {
  HostTierOptions o;
  o.block_bytes = 16;
  EXPECT_EQ(HostTier::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.capacity_blocks = 4;
  o.block_bytes = 0;
  EXPECT_EQ(HostTier::Create(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvmesh::kv
