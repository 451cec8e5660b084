#include "kv/block_hash.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace kvmesh::kv {
namespace {

using ::testing::ElementsAre;

std::vector<uint32_t> Iota(size_t n, uint32_t start = 0) {
  std::vector<uint32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<uint32_t> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> v(n);
  for (auto& t : v) t = static_cast<uint32_t>(rng());
  return v;
}

BlockHashOptions Opts(uint32_t block_size, std::string salt = "", std::string lora = "") {
  BlockHashOptions o;
  o.block_size = block_size;
  o.cache_salt = std::move(salt);
  o.lora_name = std::move(lora);
  return o;
}

// Fixed vectors computed independently with python3-xxhash (no kvmesh code), by
//   /usr/bin/python3 tests/block_hash_vectors.py vector --block-size 4 --tokens 1,2,3,4,5,6,7,8,9
//   ... (same) --salt tenant-a
//   ... (same) --lora my-lora
//   /usr/bin/python3 tests/block_hash_vectors.py vector --block-size 16 --tokens range:32
//   /usr/bin/python3 tests/block_hash_vectors.py vector --block-size 2
//       --tokens 4294967295,4294967294,0,4294967295
// tests/block_hash_vectors_test.sh compares hundreds more cases through `kvmesh hash`.
TEST(BlockHashVectors, PlainNineTokensBlockSizeFour) {
  auto h = ComputeBlockHashes(std::vector<uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}, Opts(4));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_THAT(h->local, ElementsAre(0xcb38e4d7fb2dca5cULL, 0xe8d3ec39b907b74cULL));
  EXPECT_THAT(h->sequence, ElementsAre(0xcb38e4d7fb2dca5cULL, 0x44a2b2379d6d3c3dULL));
}

TEST(BlockHashVectors, Salted) {
  auto h = ComputeBlockHashes(std::vector<uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}, Opts(4, "tenant-a"));
  ASSERT_TRUE(h.ok());
  // Only block 0's local hash changes; block 1's local hash is the unsalted one.
  EXPECT_THAT(h->local, ElementsAre(0x8ca6463e5bdebabfULL, 0xe8d3ec39b907b74cULL));
  EXPECT_THAT(h->sequence, ElementsAre(0x8ca6463e5bdebabfULL, 0x193daeaee7fc1735ULL));
}

TEST(BlockHashVectors, Lora) {
  EXPECT_EQ(SeedForLora("my-lora"), 12827409268353072861ULL);
  auto h = ComputeBlockHashes(std::vector<uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}, Opts(4, "", "my-lora"));
  ASSERT_TRUE(h.ok());
  EXPECT_THAT(h->local, ElementsAre(0xd97c824a0d4bdab1ULL, 0x6de6cbec6a335efeULL));
  EXPECT_THAT(h->sequence, ElementsAre(0xd97c824a0d4bdab1ULL, 0x233d46b8f673403dULL));
}

TEST(BlockHashVectors, DefaultBlockSize) {
  auto h = ComputeSequenceHashes(Iota(32), BlockHashOptions{});
  ASSERT_TRUE(h.ok());
  EXPECT_THAT(*h, ElementsAre(0xd47a8f41c833328aULL, 0xbf15dffb16447f38ULL));
}

TEST(BlockHashVectors, TokenIdsNearUint32Max) {
  auto h = ComputeBlockHashes(std::vector<uint32_t>{4294967295u, 4294967294u, 0, 4294967295u}, Opts(2));
  ASSERT_TRUE(h.ok());
  EXPECT_THAT(h->local, ElementsAre(0x1e0c810d50f6c7bbULL, 0x0125704d75a609f6ULL));
  EXPECT_THAT(h->sequence, ElementsAre(0x1e0c810d50f6c7bbULL, 0x4c94906d598c6b82ULL));
}

TEST(BlockHash, SeedWithoutLoraIs1337) { EXPECT_EQ(SeedForLora(""), kBlockHashSeed); }

TEST(BlockHash, PrefixStability) {
  const auto tokens = Random(16 * 40 + 7, 1);
  auto full = ComputeBlockHashes(tokens, Opts(16, "salt"));
  ASSERT_TRUE(full.ok());
  ASSERT_EQ(full->sequence.size(), 40u);
  for (size_t n : {0u, 1u, 15u, 16u, 17u, 160u, 333u, 640u}) {
    auto prefix = ComputeBlockHashes(std::span(tokens).first(n), Opts(16, "salt"));
    ASSERT_TRUE(prefix.ok());
    ASSERT_EQ(prefix->sequence.size(), n / 16) << n;
    for (size_t i = 0; i < prefix->sequence.size(); ++i) {
      EXPECT_EQ(prefix->sequence[i], full->sequence[i]) << "n=" << n << " block " << i;
      EXPECT_EQ(prefix->local[i], full->local[i]);
    }
  }
}

TEST(BlockHash, SequenceHashesMatchBlockHashes) {
  const auto tokens = Random(1000, 2);
  auto both = ComputeBlockHashes(tokens, Opts(64, "s", "l"));
  auto seq = ComputeSequenceHashes(tokens, Opts(64, "s", "l"));
  ASSERT_TRUE(both.ok());
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(both->sequence, *seq);
}

TEST(BlockHash, ChainDefinition) {
  const auto tokens = Random(48, 3);
  auto h = ComputeBlockHashes(tokens, Opts(16));
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->local.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(h->local[i], LocalBlockHash(std::span(tokens).subspan(i * 16, 16), kBlockHashSeed));
  }
  EXPECT_EQ(h->sequence[0], h->local[0]);
  EXPECT_EQ(h->sequence[1], ChainSequenceHash(h->sequence[0], h->local[1], kBlockHashSeed));
  EXPECT_EQ(h->sequence[2], ChainSequenceHash(h->sequence[1], h->local[2], kBlockHashSeed));
}

TEST(BlockHash, SaltChangesBlockZeroAndEverySequenceHash) {
  const auto tokens = Random(16 * 5, 4);
  auto plain = ComputeBlockHashes(tokens, Opts(16));
  auto a = ComputeBlockHashes(tokens, Opts(16, "tenant-a"));
  auto b = ComputeBlockHashes(tokens, Opts(16, "tenant-b"));
  ASSERT_TRUE(plain.ok() && a.ok() && b.ok());
  EXPECT_NE(a->local[0], plain->local[0]);
  EXPECT_NE(a->local[0], b->local[0]);
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(a->local[i], plain->local[i]) << i;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NE(a->sequence[i], plain->sequence[i]) << i;
    EXPECT_NE(a->sequence[i], b->sequence[i]) << i;
  }
  // The salt is appended to block 0's token bytes.
  EXPECT_EQ(a->local[0], LocalBlockHash(std::span(tokens).first(16), kBlockHashSeed, "tenant-a"));
}

TEST(BlockHash, LoraChangesSeedAndAllHashes) {
  const auto tokens = Random(16 * 3, 5);
  const uint64_t seed = SeedForLora("adapter-1");
  EXPECT_NE(seed, kBlockHashSeed);
  EXPECT_NE(seed, SeedForLora("adapter-2"));
  auto plain = ComputeBlockHashes(tokens, Opts(16));
  auto lora = ComputeBlockHashes(tokens, Opts(16, "", "adapter-1"));
  ASSERT_TRUE(plain.ok() && lora.ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NE(lora->local[i], plain->local[i]);
    EXPECT_EQ(lora->local[i], LocalBlockHash(std::span(tokens).subspan(i * 16, 16), seed));
  }
}

TEST(BlockHash, PartialTrailingBlockIgnored) {
  const auto tokens = Random(16 * 2 + 15, 6);
  auto with_tail = ComputeSequenceHashes(tokens, Opts(16));
  auto without = ComputeSequenceHashes(std::span(tokens).first(32), Opts(16));
  ASSERT_TRUE(with_tail.ok() && without.ok());
  EXPECT_EQ(with_tail->size(), 2u);
  EXPECT_EQ(*with_tail, *without);
  auto short_input = ComputeBlockHashes(std::span(tokens).first(15), Opts(16));
  ASSERT_TRUE(short_input.ok());
  EXPECT_TRUE(short_input->local.empty());
  EXPECT_TRUE(short_input->sequence.empty());
}

TEST(BlockHash, EmptyInputHasNoBlocks) {
  auto h = ComputeBlockHashes({}, Opts(16, "salt"));
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->sequence.empty());
}

TEST(BlockHash, BlockSizeZeroIsInvalidArgument) {
  const auto tokens = Iota(8);
  auto a = ComputeBlockHashes(tokens, Opts(0));
  auto b = ComputeSequenceHashes(tokens, Opts(0));
  ASSERT_FALSE(a.ok());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("block_size"), std::string::npos);
}

TEST(BlockHash, DifferentBlockSizesDiffer) {
  const auto tokens = Random(64, 7);
  auto a = ComputeSequenceHashes(tokens, Opts(16));
  auto b = ComputeSequenceHashes(tokens, Opts(32));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)[1], (*b)[0]);  // both cover the same 32 tokens
}

}  // namespace
}  // namespace kvmesh::kv
