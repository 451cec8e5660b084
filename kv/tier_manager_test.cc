#include "kv/tier_manager.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "kv/tier_test_util.h"

namespace kvmesh::kv {
namespace {

namespace fs = std::filesystem;
using testing::PatternFor;
using testing::SameBytes;
using testing::VectorSink;

constexpr size_t kBytes = 128;
constexpr uint32_t kG1Blocks = 4;  // usable; the pool adds the null block

class TierManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvmesh_tier_manager_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    mgr_.reset();
    pool_.reset();
    fs::remove_all(dir_);
  }
  void Init(uint32_t g2 = 2, uint32_t g3 = 4, uint32_t min_hits = 2) {
    BlockPoolOptions po;
    po.num_blocks = kG1Blocks + 1;
    po.block_size = 4;
    auto pool = BlockPool::Create(po, &sink_);
    ASSERT_TRUE(pool.ok()) << pool.status().ToString();
    pool_ = std::move(pool).value();
    memory_ = std::make_unique<HostBlockMemory>(kG1Blocks + 1, kBytes);
    TierManagerOptions o;
    o.g2_blocks = g2;
    o.g3_blocks = g3;
    o.g3_dir = dir_ + "/g3";
    o.g3_min_hits = min_hits;
    auto m = TierManager::Create(o, pool_.get(), memory_.get(), &copier_, &sink_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    mgr_ = std::move(m).value();
  }
  // Runs a request: allocates, verifies the cached blocks' bytes, "computes" the rest and
  // commits them, then frees everything. Returns the allocation.
  TieredAllocation Run(const std::vector<BlockHash>& hashes) {
    auto a = mgr_->AllocateForSequence(hashes, {}, hashes.size());
    EXPECT_TRUE(a.has_value());
    if (!a) return {};
    for (size_t j = 0; j < a->num_cached(); ++j) {
      EXPECT_TRUE(SameBytes(memory_->BlockBytes(a->blocks[j]), PatternFor(hashes[j], kBytes)))
          << "block " << j << " of hash " << hashes[j] << " served wrong bytes";
    }
    for (size_t j = a->num_cached(); j < hashes.size(); ++j) {
      auto p = PatternFor(hashes[j], kBytes);
      std::copy(p.begin(), p.end(), memory_->BlockBytes(a->blocks[j]).begin());
      std::optional<BlockHash> parent;
      if (j > 0) parent = hashes[j - 1];
      EXPECT_TRUE(mgr_->CommitBlock(a->blocks[j], hashes[j], parent, {}).ok());
    }
    pool_->Free(a->blocks);
    return *a;
  }

  std::string dir_;
  VectorSink sink_;
  MemcpyBlockCopier copier_;
  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<HostBlockMemory> memory_;
  std::unique_ptr<TierManager> mgr_;
};

TEST_F(TierManagerTest, LookupContinuesFromG1IntoG2ThenG3AndOnboardsBytes) {
  Init();
  Run({101});
  auto b = PatternFor(102, kBytes);
  ASSERT_TRUE(mgr_->host_tier()->Store(102, BlockHash{101}, 0, b.data(), copier_).ok());
  ASSERT_TRUE(mgr_->disk_tier()->Store(103, BlockHash{102}, 2, PatternFor(103, kBytes)).ok());

  const std::vector<BlockHash> seq = {101, 102, 103, 104};
  TierPrefix p = mgr_->FindPrefix(seq);
  EXPECT_EQ(p.g1, 1u);
  EXPECT_EQ(p.g2, 1u);
  EXPECT_EQ(p.g3, 1u);

  TieredAllocation a = Run(seq);  // verifies bytes of every cached block
  EXPECT_EQ(a.num_g1, 1u);
  EXPECT_EQ(a.num_g2, 1u);
  EXPECT_EQ(a.num_g3, 1u);
  EXPECT_EQ(a.blocks.size(), 4u);
  EXPECT_EQ(pool_->Lookup(102), a.blocks[1]);  // onboarded blocks are committed in G1
  EXPECT_EQ(pool_->Lookup(103), a.blocks[2]);
  auto g1_stored = sink_.Stored(Medium::kG1);
  EXPECT_NE(std::find(g1_stored.begin(), g1_stored.end(), 103), g1_stored.end());
  EXPECT_EQ(mgr_->stats().g2_hit_blocks, 1u);
  EXPECT_EQ(mgr_->stats().g3_hit_blocks, 1u);
  EXPECT_EQ(mgr_->stats().onboarded_bytes, 2 * kBytes);
  // Inclusive tiers: the lower copies stay.
  EXPECT_TRUE(mgr_->host_tier()->Contains(102));
  EXPECT_TRUE(mgr_->disk_tier()->Contains(103));
}

TEST_F(TierManagerTest, EvictionFromG1OffloadsToG2AndOnboardsBack) {
  Init(/*g2=*/2);
  Run({1, 2});
  EXPECT_TRUE(sink_.Stored(Medium::kG2).empty());
  Run({11, 12, 13, 14});  // needs all of G1: evicts 1 and 2 (tail first) into G2
  EXPECT_EQ(sink_.Stored(Medium::kG2), (std::vector<BlockHash>{2, 1}));
  EXPECT_EQ(mgr_->stats().offloaded_blocks, 2u);
  EXPECT_EQ(mgr_->stats().offloaded_bytes, 2 * kBytes);
  EXPECT_TRUE(SameBytes(mgr_->host_tier()->Peek(1), PatternFor(1, kBytes)));

  // Onboarding {1, 2} evicts two G1 blocks into the full G2; the pinned 1 and 2 survive.
  TieredAllocation a = Run({1, 2});
  EXPECT_EQ(a.num_g1, 0u);
  EXPECT_EQ(a.num_g2, 2u);
  EXPECT_EQ(mgr_->stats().onboard_failures, 0u);
  EXPECT_EQ(mgr_->host_tier()->HitCount(1), 1u);
}

TEST_F(TierManagerTest, OnlyBlocksHitTwiceGoFromG2ToG3) {
  Init(/*g2=*/2, /*g3=*/4, /*min_hits=*/2);
  Run({1});
  Run({1});  // G1 hit 1
  Run({1});  // G1 hit 2
  Run({2});
  Run({2});  // G1 hit 1
  Run({3});  // never hit
  Run({11, 12, 13, 14});  // 1, 2, 3 go to G2 (3 is evicted from G1 first; G2 holds 2)
  Run({21, 22, 23, 24});  // G2 overflows: everything above leaves G2
  Run({31, 32, 33, 34});
  const DiskTier& disk = *mgr_->disk_tier();
  EXPECT_TRUE(disk.Contains(1));
  EXPECT_FALSE(disk.Contains(2));
  EXPECT_FALSE(disk.Contains(3));
  EXPECT_EQ(disk.HitCount(1), 2u);
  EXPECT_EQ(sink_.Stored(Medium::kG3), std::vector<BlockHash>{1});
  EXPECT_GE(mgr_->stats().g2_dropped_blocks, 2u);
  EXPECT_EQ(mgr_->stats().g2_to_g3_blocks, 1u);

  TieredAllocation a = Run({1});
  EXPECT_EQ(a.num_g3, 1u);  // served from disk, bytes verified in Run()
}

TEST_F(TierManagerTest, ThresholdIsConfigurable) {
  Init(/*g2=*/1, /*g3=*/4, /*min_hits=*/0);
  Run({1});
  Run({11, 12, 13, 14});  // 1 -> G2
  Run({21, 22, 23, 24});  // G2 overflows: 1 -> G3 although never hit
  EXPECT_TRUE(mgr_->disk_tier()->Contains(1));
}

TEST_F(TierManagerTest, CorruptDiskBlockIsRecomputedNeverServed) {
  Init();
  ASSERT_TRUE(mgr_->disk_tier()->Store(7, std::nullopt, 2, PatternFor(7, kBytes)).ok());
  ASSERT_TRUE(mgr_->disk_tier()->Store(8, BlockHash{7}, 2, PatternFor(8, kBytes)).ok());
  {
    std::fstream f(mgr_->disk_tier()->PathFor(7), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kDiskBlockHeaderBytes + 5);
    f.put('\x42');
  }
  TierPrefix p = mgr_->FindPrefix(std::vector<BlockHash>{7, 8});
  EXPECT_EQ(p.g3, 2u);  // looks present until read
  TieredAllocation a = Run({7, 8});
  EXPECT_EQ(a.num_cached(), 0u);  // 7 failed verification; 8 is recomputed behind it
  EXPECT_EQ(mgr_->stats().onboard_failures, 1u);
  EXPECT_EQ(mgr_->disk_tier()->stats().corrupt_dropped, 1u);
  EXPECT_FALSE(mgr_->disk_tier()->Contains(7));
  EXPECT_EQ(sink_.Removed(Medium::kG3), std::vector<BlockHash>{7});
  EXPECT_EQ(pool_->Lookup(7).has_value(), true);  // recomputed and committed by Run()
}

TEST_F(TierManagerTest, NoRoomReturnsNulloptAndChangesNothing) {
  Init();
  auto held = mgr_->AllocateForSequence(std::vector<BlockHash>{1, 2, 3}, {}, 3);
  ASSERT_TRUE(held.has_value());
  auto b = PatternFor(50, kBytes);
  ASSERT_TRUE(mgr_->host_tier()->Store(50, std::nullopt, 0, b.data(), copier_).ok());
  auto none = mgr_->AllocateForSequence(std::vector<BlockHash>{50, 51}, {}, 2);
  EXPECT_FALSE(none.has_value());
  EXPECT_EQ(mgr_->stats().allocations, 1u);
  // The pin taken for the attempt was released: 50 can be evicted again.
  auto c = PatternFor(60, kBytes), d = PatternFor(61, kBytes);
  ASSERT_TRUE(mgr_->host_tier()->Store(60, std::nullopt, 0, c.data(), copier_).ok());
  ASSERT_TRUE(mgr_->host_tier()->Store(61, std::nullopt, 0, d.data(), copier_).ok());
  EXPECT_FALSE(mgr_->host_tier()->Contains(50));
  pool_->Free(held->blocks);
}

TEST_F(TierManagerTest, WithoutLowerTiersItIsJustThePool) {
  Init(/*g2=*/0, /*g3=*/0);
  EXPECT_EQ(mgr_->host_tier(), nullptr);
  EXPECT_EQ(mgr_->disk_tier(), nullptr);
  Run({1});
  Run({11, 12, 13, 14});
  TieredAllocation a = Run({1});
  EXPECT_EQ(a.num_cached(), 0u);
}

TEST(TierManagerOptionsTest, ValidateNamesBadField) {
  TierManagerOptions o;
  o.g2_blocks = 1;
  o.g3_blocks = 1;
  EXPECT_NE(o.Validate().message().find("g3_dir"), std::string::npos);
  o.g3_dir = "/tmp/x";
  o.g2_blocks = 0;
  EXPECT_NE(o.Validate().message().find("g2_blocks"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::kv
