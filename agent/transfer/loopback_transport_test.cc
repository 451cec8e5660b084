#include "agent/transfer/loopback_transport.h"

#include <cstring>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "agent/transfer/copy_plan.h"

namespace kvmesh::transfer {
namespace {

constexpr uint64_t kBlockBytes = 64;
constexpr uint32_t kBlocks = 16;

class LoopbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = CreateLoopbackTransport();
    b_ = CreateLoopbackTransport();
    mem_a_.assign(kBlockBytes * kBlocks, 0);
    mem_b_.resize(kBlockBytes * kBlocks);
    for (size_t i = 0; i < mem_b_.size(); ++i) mem_b_[i] = static_cast<uint8_t>(i / kBlockBytes + 1);
    ASSERT_TRUE(a_->RegisterLocal(mem_a_.data(), kBlockBytes, kBlocks).ok());
    ASSERT_TRUE(b_->RegisterLocal(mem_b_.data(), kBlockBytes, kBlocks).ok());
    auto d = b_->DescribeLocal();
    ASSERT_TRUE(d.ok());
    desc_b_ = *d;
    auto p = a_->Connect(desc_b_);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    peer_ = *p;
  }
  uint8_t BlockTagA(uint32_t block) const { return mem_a_[block * kBlockBytes]; }

  std::unique_ptr<KvTransport> a_, b_;
  std::vector<uint8_t> mem_a_, mem_b_;
  RegionDescriptor desc_b_;
  PeerId peer_ = 0;
};

TEST_F(LoopbackTest, ReadCopiesOnProgressAndCallsBackOnce) {
  std::vector<BlockCopy> copies = {{3, 0}, {4, 1}, {9, 7}};
  int calls = 0;
  auto id = a_->PostRead(peer_, copies, [&](TransferId got, const Status& s) {
    EXPECT_TRUE(s.ok());
    EXPECT_NE(got, 0u);
    ++calls;
  });
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(BlockTagA(0), 0);  // nothing moves inside Post*
  EXPECT_EQ(a_->Stats().in_flight, 1u);
  EXPECT_EQ(a_->Progress(0), 1);
  EXPECT_EQ(a_->Progress(0), 0);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(BlockTagA(0), 4);  // remote block 3 holds tag 4
  EXPECT_EQ(BlockTagA(1), 5);
  EXPECT_EQ(BlockTagA(7), 10);
  EXPECT_EQ(BlockTagA(2), 0);
  EXPECT_EQ(std::memcmp(mem_a_.data(), mem_b_.data() + 3 * kBlockBytes, 2 * kBlockBytes), 0);
  TransportStats s = a_->Stats();
  EXPECT_EQ(s.bytes_read, 3 * kBlockBytes);
  EXPECT_EQ(s.transfers_ok, 1u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.peers, 1u);
}

TEST_F(LoopbackTest, WriteCopiesLocalToRemote) {
  std::memset(mem_a_.data() + 2 * kBlockBytes, 0xab, kBlockBytes);
  std::vector<BlockCopy> copies = {{15, 2}};
  std::optional<Status> result;
  ASSERT_TRUE(a_->PostWrite(peer_, copies, [&](TransferId, const Status& s) { result = s; }).ok());
  a_->Progress(0);
  ASSERT_TRUE(result.has_value() && result->ok());
  EXPECT_EQ(mem_b_[15 * kBlockBytes], 0xab);
  EXPECT_EQ(mem_b_[14 * kBlockBytes], 15);
  EXPECT_EQ(a_->Stats().bytes_written, kBlockBytes);
}

TEST_F(LoopbackTest, BadListsAreRejectedNamingTheIdAndNothingMoves) {
  bool called = false;
  auto cb = [&](TransferId, const Status&) { called = true; };
  std::vector<BlockCopy> bad = {{0, 0}, {kBlocks, 1}};
  auto r = a_->PostRead(peer_, bad, cb);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("copies[1]: remote_block 16"), std::string::npos)
      << r.status().ToString();
  std::vector<BlockCopy> bad_local = {{0, kBlocks + 5}};
  auto w = a_->PostWrite(peer_, bad_local, cb);
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("local_block 21"), std::string::npos);
  EXPECT_EQ(a_->PostRead(999, {}, cb).status().code(), StatusCode::kNotFound);
  a_->Progress(0);
  EXPECT_FALSE(called);
  EXPECT_EQ(BlockTagA(0), 0);
  EXPECT_EQ(a_->Stats().in_flight, 0u);
}

TEST_F(LoopbackTest, BlockBytesMismatchIsRejected) {
  auto c = CreateLoopbackTransport();
  std::vector<uint8_t> mem(32 * kBlocks);
  ASSERT_TRUE(c->RegisterLocal(mem.data(), 32, kBlocks).ok());
  auto p = a_->Connect(*c->DescribeLocal());
  ASSERT_TRUE(p.ok());
  std::vector<BlockCopy> one = {{0, 0}};
  auto r = a_->PostRead(*p, one, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("block_bytes mismatch: local 64 vs remote 32"),
            std::string::npos);
}

TEST_F(LoopbackTest, ConnectValidatesDescriptors) {
  RegionDescriptor d = desc_b_;
  d.transport = "ucx";
  EXPECT_EQ(a_->Connect(d).status().code(), StatusCode::kInvalidArgument);
  d = desc_b_;
  d.block_bytes = 0;
  EXPECT_EQ(a_->Connect(d).status().code(), StatusCode::kInvalidArgument);
  d = desc_b_;
  d.num_blocks = kBlocks + 1;  // lies about the peer's size
  EXPECT_EQ(a_->Connect(d).status().code(), StatusCode::kInvalidArgument);
  d = desc_b_;
  d.worker_address = "loopback:999999";
  EXPECT_EQ(a_->Connect(d).status().code(), StatusCode::kUnavailable);
  d = desc_b_;
  d.worker_address.clear();
  EXPECT_EQ(a_->Connect(d).status().code(), StatusCode::kInvalidArgument);
  // A destroyed instance cannot be connected to.
  b_.reset();
  EXPECT_EQ(a_->Connect(desc_b_).status().code(), StatusCode::kUnavailable);
}

TEST_F(LoopbackTest, PeerDestroyedBeforeCompletionIsUnavailable) {
  std::vector<BlockCopy> one = {{0, 0}};
  std::optional<Status> result;
  ASSERT_TRUE(a_->PostRead(peer_, one, [&](TransferId, const Status& s) { result = s; }).ok());
  b_.reset();
  a_->Progress(0);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), StatusCode::kUnavailable);
  EXPECT_EQ(BlockTagA(0), 0);
}

TEST_F(LoopbackTest, HoldThenCancelRunsCallbackInCancelAndMovesNothing) {
  LoopbackHoldCompletions(a_.get(), true);
  std::vector<BlockCopy> one = {{5, 5}};
  std::optional<Status> result;
  auto id = a_->PostRead(peer_, one, [&](TransferId, const Status& s) { result = s; });
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(a_->Progress(0), 0);
  EXPECT_FALSE(result.has_value());
  a_->Cancel(*id);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), StatusCode::kCancelled);
  LoopbackHoldCompletions(a_.get(), false);
  EXPECT_EQ(a_->Progress(0), 0);
  EXPECT_EQ(BlockTagA(5), 0);
  a_->Cancel(*id);  // finished: ignored
  EXPECT_EQ(a_->Stats().transfers_failed, 1u);
}

TEST_F(LoopbackTest, HeldCompletionsRunAfterRelease) {
  LoopbackHoldCompletions(a_.get(), true);
  int calls = 0;
  ASSERT_TRUE(a_->PostRead(peer_, {}, [&](TransferId, const Status&) { ++calls; }).ok());
  a_->Progress(0);
  EXPECT_EQ(calls, 0);
  LoopbackHoldCompletions(a_.get(), false);
  EXPECT_EQ(a_->Progress(0), 1);
  EXPECT_EQ(calls, 1);
}

TEST_F(LoopbackTest, FailedPeerCompletesPendingAndFutureWithUnavailable) {
  std::vector<BlockCopy> one = {{1, 1}};
  std::vector<Status> results;
  auto cb = [&](TransferId, const Status& s) { results.push_back(s); };
  ASSERT_TRUE(a_->PostRead(peer_, one, cb).ok());
  LoopbackFailPeer(a_.get(), peer_);
  ASSERT_TRUE(a_->PostRead(peer_, one, cb).ok());
  a_->Progress(0);
  ASSERT_EQ(results.size(), 2u);
  for (const Status& s : results) EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(BlockTagA(1), 0);
}

TEST_F(LoopbackTest, DisconnectAndDestructionCancel) {
  std::vector<BlockCopy> one = {{1, 1}};
  std::vector<Status> results;
  auto cb = [&](TransferId, const Status& s) { results.push_back(s); };
  ASSERT_TRUE(a_->PostRead(peer_, one, cb).ok());
  a_->Disconnect(peer_);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].code(), StatusCode::kCancelled);
  EXPECT_EQ(a_->PostRead(peer_, one, cb).status().code(), StatusCode::kNotFound);
  a_->Disconnect(peer_);  // unknown: ignored
  auto p = a_->Connect(desc_b_);
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(a_->PostRead(*p, one, cb).ok());
  a_.reset();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].code(), StatusCode::kCancelled);
}

TEST_F(LoopbackTest, CallbackMayPostAgain) {
  std::vector<BlockCopy> one = {{2, 2}};
  int calls = 0;
  std::function<void(TransferId, const Status&)> cb = [&](TransferId, const Status& s) {
    EXPECT_TRUE(s.ok());
    if (++calls == 1) {
      ASSERT_TRUE(a_->PostRead(peer_, one, cb).ok());
    }
  };
  ASSERT_TRUE(a_->PostRead(peer_, one, cb).ok());
  EXPECT_EQ(a_->Progress(0), 1);  // the re-post completes on the next Progress
  EXPECT_EQ(a_->Progress(0), 1);
  EXPECT_EQ(calls, 2);
}

TEST(LoopbackRegisterTest, ValidatesAndRegistersOnce) {
  auto t = CreateLoopbackTransport();
  EXPECT_EQ(t->name(), "loopback");
  std::vector<uint8_t> mem(256);
  EXPECT_EQ(t->DescribeLocal().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(t->PostRead(1, {}, nullptr).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(t->RegisterLocal(nullptr, 16, 16).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->RegisterLocal(mem.data(), 16, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->RegisterLocal(mem.data(), ~0ull, 2).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(t->RegisterLocal(mem.data(), 16, 16).ok());
  EXPECT_EQ(t->RegisterLocal(mem.data(), 16, 16).code(), StatusCode::kFailedPrecondition);
}

TEST(CopyPlanTest, MergesContiguousRunsOnly) {
  std::vector<BlockCopy> copies = {{0, 10}, {1, 11}, {2, 12}, {3, 20}, {5, 21}, {6, 22}, {6, 23}};
  auto runs = PlanCopies(copies, {8, 32}, {8, 32});
  ASSERT_TRUE(runs.ok());
  std::vector<CopyRun> want = {{0, 80, 24}, {24, 160, 8}, {40, 168, 16}, {48, 184, 8}};
  EXPECT_EQ(*runs, want);
  EXPECT_TRUE(PlanCopies({}, {8, 1}, {8, 1})->empty());
}

}  // namespace
}  // namespace kvmesh::transfer
