#include "kv/prefix_roots.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace kvmesh::kv {
namespace {

std::vector<BlockHash> Blocks(std::initializer_list<BlockHash> b) { return b; }

TEST(PrefixRootsTest, CountsRequestsPerRootAndCutsTheCommonPrefix) {
  PrefixRoots roots;
  roots.Record(Blocks({10, 11, 12, 13}));  // a system prompt 10,11,12 + the user's 13
  roots.Record(Blocks({10, 11, 12, 20, 21}));
  roots.Record(Blocks({10, 11, 12, 30}));
  roots.Record(Blocks({50, 51}));
  roots.Record({});  // shorter than a block: no root, not counted
  const auto top = roots.Top(10);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].root, 10u);
  EXPECT_EQ(top[0].requests, 3u);
  EXPECT_EQ(top[0].common, Blocks({10, 11, 12}));
  EXPECT_EQ(top[1].root, 50u);
  EXPECT_EQ(top[1].requests, 1u);
  EXPECT_EQ(top[1].common, Blocks({50, 51}));
  // A request sharing only the root cuts the prefix to the root; it never grows back.
  roots.Record(Blocks({10, 99}));
  roots.Record(Blocks({10, 11, 12}));
  EXPECT_EQ(roots.Top(1)[0].common, Blocks({10}));
  EXPECT_EQ(roots.Top(1)[0].requests, 5u);
  // A prompt shorter than the common prefix cuts it to its own length.
  roots.Record(Blocks({50}));
  EXPECT_EQ(roots.Top(2)[1].common, Blocks({50}));
}

TEST(PrefixRootsTest, TopOrdersByRequestsThenHashAndClampsK) {
  PrefixRoots roots;
  for (int i = 0; i < 3; ++i) roots.Record(Blocks({7}));
  roots.Record(Blocks({9}));
  roots.Record(Blocks({8}));
  const auto top = roots.Top(2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].root, 7u);
  EXPECT_EQ(top[1].root, 8u) << "ties: smaller hash first";
  EXPECT_EQ(roots.Top(100).size(), 3u);
  EXPECT_TRUE(roots.Top(0).empty());
}

TEST(PrefixRootsTest, BoundedMemoryKeepsTheHotRootsAndCapsThePrefix) {
  PrefixRoots roots({.max_roots = 8, .max_blocks = 4});
  std::vector<BlockHash> hot = {1, 2, 3, 4, 5, 6, 7};
  for (int i = 0; i < 100; ++i) roots.Record(hot);
  // 1,000 one-off prompts: the table never holds more than 8 roots, and the hot root survives.
  for (BlockHash r = 1000; r < 2000; ++r) {
    roots.Record(Blocks({r, r + 1}));
    ASSERT_LE(roots.size(), 8u);
  }
  const auto top = roots.Top(1);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].root, 1u);
  EXPECT_EQ(top[0].requests, 100u);
  EXPECT_EQ(top[0].common, Blocks({1, 2, 3, 4})) << "max_blocks caps the kept prefix";
}

TEST(PrefixRootsTest, ConcurrentRecordsAreAllCounted) {
  PrefixRoots roots;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&roots, t] {
      for (int i = 0; i < 1000; ++i) roots.Record(Blocks({42, 43, static_cast<BlockHash>(t)}));
    });
  }
  for (auto& th : threads) th.join();
  const auto top = roots.Top(1);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].requests, 4000u);
  EXPECT_EQ(top[0].common, Blocks({42, 43}));
}

}  // namespace
}  // namespace kvmesh::kv
