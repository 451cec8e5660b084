#include "kv/kv_event_recorder.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kv/kv_event_codec.h"

namespace kvmesh::kv {
namespace {

KvEvent Removed(uint64_t h) { return BlockRemoved{{h}, Medium::kG1}; }

TEST(KvEventRecorder, NumbersBatchesConsecutivelyFromFirstSeq) {
  KvEventRecorder rec({.first_seq = 5, .dp_rank = 2});
  EXPECT_TRUE(rec.Flush(1.0).empty());  // nothing emitted: no batch, no seq consumed
  EXPECT_EQ(rec.next_seq(), 5u);
  rec.Emit(Removed(1));
  rec.Emit(AllBlocksCleared{});
  EXPECT_EQ(rec.num_pending_events(), 2u);
  auto a = rec.Flush(10.5);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].seq, 5u);
  EXPECT_EQ(a[0].batch.ts, 10.5);
  EXPECT_EQ(a[0].batch.dp_rank, 2);
  EXPECT_EQ(a[0].batch.events, (std::vector<KvEvent>{Removed(1), AllBlocksCleared{}}));
  EXPECT_EQ(rec.num_pending_events(), 0u);
  auto decoded = DecodeKvEventBatch(a[0].payload);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, a[0].batch);
  rec.Emit(Removed(2));
  auto b = rec.Flush(11);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].seq, 6u);
  EXPECT_EQ(rec.next_seq(), 7u);
}

TEST(KvEventRecorder, SplitsBacklogIntoBoundedBatchesInOrder) {
  KvEventRecorder rec({.max_events_per_batch = 3, .dp_rank = {}});
  for (uint64_t i = 0; i < 7; ++i) rec.Emit(Removed(i));
  auto out = rec.Flush(1);
  ASSERT_EQ(out.size(), 3u);
  uint64_t next_hash = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].seq, i);
    EXPECT_LE(out[i].batch.events.size(), 3u);
    for (const KvEvent& e : out[i].batch.events) {
      EXPECT_EQ(std::get<BlockRemoved>(e).hashes[0], next_hash++);
    }
  }
  EXPECT_EQ(next_hash, 7u);
}

TEST(KvEventRecorder, ReplaysRetainedBatchesAndRejectsTooOldOrFutureSeqs) {
  KvEventRecorder rec({.replay_capacity = 3, .dp_rank = {}});
  std::vector<SequencedKvEventBatch> all;
  for (uint64_t i = 0; i < 5; ++i) {
    rec.Emit(Removed(i));
    auto b = rec.Flush(static_cast<double>(i));
    all.push_back(b.at(0));
  }
  EXPECT_EQ(rec.num_replay_batches(), 3u);  // seqs 2, 3, 4
  auto r = rec.Replay(3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0], (ReplayedKvEventBatch{3, all[3].payload}));
  EXPECT_EQ((*r)[1], (ReplayedKvEventBatch{4, all[4].payload}));
  EXPECT_EQ(rec.Replay(2)->size(), 3u);
  EXPECT_TRUE(rec.Replay(5)->empty());  // caught up

  auto old = rec.Replay(1);
  EXPECT_EQ(old.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(old.status().message().find("oldest retained seq 2"), std::string::npos);
  auto future = rec.Replay(6);
  EXPECT_EQ(future.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(future.status().message().find("ahead of the next seq 5"), std::string::npos);
}

TEST(KvEventRecorder, ReplayDisabledKeepsNothing) {
  KvEventRecorder rec({.replay_capacity = 0, .dp_rank = {}});
  rec.Emit(AllBlocksCleared{});
  ASSERT_EQ(rec.Flush(1).size(), 1u);
  EXPECT_EQ(rec.num_replay_batches(), 0u);
  EXPECT_TRUE(rec.Replay(1)->empty());
  EXPECT_EQ(rec.Replay(0).status().code(), StatusCode::kOutOfRange);
}

TEST(KvEventRecorder, EngineThreadEmitsWhilePublisherFlushes) {
  KvEventRecorder rec({.max_events_per_batch = 16, .replay_capacity = 1 << 20, .dp_rank = {}});
  constexpr uint64_t kEvents = 20000;
  std::thread engine([&] {
    for (uint64_t i = 0; i < kEvents; ++i) rec.Emit(Removed(i));
  });
  std::vector<SequencedKvEventBatch> got;
  bool engine_done = false;
  while (true) {
    for (auto& b : rec.Flush(0)) got.push_back(std::move(b));
    if (engine_done) break;
    if (rec.num_pending_events() == 0 && got.size() > 0 &&
        std::get<BlockRemoved>(got.back().batch.events.back()).hashes[0] == kEvents - 1) {
      engine_done = true;  // one more flush to be sure nothing is left
    }
  }
  engine.join();
  uint64_t next_hash = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].seq, i);
    for (const KvEvent& e : got[i].batch.events) {
      ASSERT_EQ(std::get<BlockRemoved>(e).hashes[0], next_hash++);
    }
  }
  EXPECT_EQ(next_hash, kEvents);
  EXPECT_EQ(rec.Replay(0)->size(), got.size());
}

}  // namespace
}  // namespace kvmesh::kv
