#include "agent/kv_event_service.h"

#include <chrono>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <gtest/gtest.h>
#include "common/wait_for_testutil.h"

#include "kv/kv_event_zmq.h"

namespace kvmesh::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr int kTimeoutMs = 5000;

kv::KvEvent Stored(uint64_t i) {
  kv::BlockStored s;
  s.hashes = {i * 2 + 1, i * 2 + 2};
  s.parent_hash = i == 0 ? std::nullopt : std::optional<kv::BlockHash>(i * 2);
  s.block_size = 16;
  return s;
}
kv::KvEvent Removed(uint64_t i) { return kv::BlockRemoved{{i * 2 + 1}, kv::Medium::kG1}; }
kv::KvEvent Probe() { return kv::AllBlocksCleared{}; }
bool IsProbe(const kv::KvEvent& e) { return std::holds_alternative<kv::AllBlocksCleared>(e); }

// Appends the batch's events except probes (a probe emitted while subscribing may still be
// pending and land in a later batch).
void AppendData(const kv::KvEventBatch& b, std::vector<kv::KvEvent>& out) {
  for (const auto& e : b.events) {
    if (!IsProbe(e)) out.push_back(e);
  }
}

KvEventServiceOptions Options(bool replay, milliseconds flush = milliseconds(5)) {
  KvEventServiceOptions o;
  o.replay_endpoint = replay ? "tcp://127.0.0.1:0" : "";
  o.topic = "kv-test";
  o.flush_interval = flush;
  o.dp_rank = 0;
  return o;
}

std::unique_ptr<KvEventService> StartOrDie(const KvEventServiceOptions& o) {
  auto s = KvEventService::Start(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

// PUB/SUB drops messages until the subscription reaches the publisher (slow joiner). Emits a
// probe event until the subscriber sees one (deadline-bounded, no sleeps), then drains what is in
// flight. Returns the seq of the last message received: later batches start at that + 1.
uint64_t WaitSubscribed(KvEventService& svc, kv::KvEventSubscriber& sub) {
  const auto deadline = steady_clock::now() + milliseconds(kTimeoutMs);
  while (steady_clock::now() < deadline) {
    svc.sink()->Emit(Probe());
    auto got = sub.Receive(20);
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    if (!got.ok() || !got->has_value()) continue;
    uint64_t last = (*got)->seq;
    // Drain the probes still pending: stop once a flush interval passes with nothing new and the
    // recorder has nothing pending (next_seq - 1 is the last flushed seq).
    while (true) {
      auto more = sub.Receive(100);
      EXPECT_TRUE(more.ok());
      if (!more.ok()) return last;
      if (!more->has_value()) {
        if (svc.next_seq() == last + 1) return last;
        continue;
      }
      EXPECT_EQ((*more)->seq, last + 1);
      last = (*more)->seq;
    }
  }
  ADD_FAILURE() << "subscriber never saw a probe";
  return 0;
}

TEST(KvEventServiceTest, RejectsBadOptions) {
  auto o = Options(true);
  o.flush_interval = milliseconds(0);
  EXPECT_EQ(KvEventService::Start(o).status().code(), StatusCode::kInvalidArgument);
  o = Options(true);
  o.endpoint = "not-an-endpoint";
  EXPECT_FALSE(KvEventService::Start(o).ok());
}

TEST(KvEventServiceTest, ReportsResolvedEndpoints) {
  auto svc = StartOrDie(Options(true));
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->endpoint().rfind("tcp://127.0.0.1:", 0), 0u) << svc->endpoint();
  EXPECT_NE(svc->endpoint(), "tcp://127.0.0.1:0");
  EXPECT_EQ(svc->replay_endpoint().rfind("tcp://127.0.0.1:", 0), 0u);
  EXPECT_NE(svc->replay_endpoint(), svc->endpoint());
  EXPECT_EQ(svc->topic(), "kv-test");
  EXPECT_EQ(svc->next_seq(), 0u);

  auto no_replay = StartOrDie(Options(false));
  ASSERT_NE(no_replay, nullptr);
  EXPECT_EQ(no_replay->replay_endpoint(), "");
}

// Events emitted into sink() arrive in emission order, in batches with consecutive seqs, stamped
// with the wall clock; replay returns the same batches.
void CheckDeliveryAndReplay(bool replay) {
  auto svc = StartOrDie(Options(replay));
  ASSERT_NE(svc, nullptr);
  auto sub_or = kv::KvEventSubscriber::Create(svc->endpoint(), "kv-test");
  ASSERT_TRUE(sub_or.ok()) << sub_or.status().ToString();
  auto sub = std::move(sub_or).value();
  const uint64_t last_probe = WaitSubscribed(*svc, *sub);
  if (::testing::Test::HasFailure()) return;

  const double t0 = std::chrono::duration<double>(
      std::chrono::system_clock::now().time_since_epoch()).count();
  // Five bursts, each received before the next is emitted, so they land in separate batches.
  std::vector<kv::KvEvent> sent;
  std::vector<kv::KvEvent> got;
  uint64_t want_seq = last_probe + 1;
  for (int burst = 0; burst < 5; ++burst) {
    for (uint64_t i = 0; i < 60; ++i) {
      const uint64_t n = static_cast<uint64_t>(burst) * 60 + i;
      sent.push_back(n % 3 == 2 ? Removed(n) : Stored(n));
      svc->sink()->Emit(sent.back());
    }
    const auto deadline = steady_clock::now() + milliseconds(kTimeoutMs);
    while (got.size() < sent.size() && steady_clock::now() < deadline) {
      auto m = sub->Receive(100);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      if (!m->has_value()) continue;
      const auto& f = **m;
      EXPECT_EQ(f.topic, "kv-test");
      ASSERT_EQ(f.seq, want_seq) << "gap or reorder";
      ++want_seq;
      EXPECT_GE(f.batch.ts, t0 - 1.0);
      EXPECT_LT(f.batch.ts, t0 + 60.0);
      EXPECT_EQ(f.batch.dp_rank, std::optional<int64_t>(0));
      EXPECT_FALSE(f.batch.events.empty()) << "empty batches are not published";
      AppendData(f.batch, got);
    }
    ASSERT_EQ(got.size(), sent.size()) << "burst " << burst;
  }
  EXPECT_GE(want_seq, last_probe + 1 + 5);
  ASSERT_EQ(got, sent);
  EXPECT_EQ(svc->next_seq(), want_seq);
  // The counters move right after Publish(), which may be after the subscriber got the batch.
  test_util::WaitFor([&] { return svc->Stats().batches_published >= want_seq; },
                     milliseconds(kTimeoutMs));
  auto st = svc->Stats();
  EXPECT_EQ(st.batches_published, want_seq);
  EXPECT_EQ(st.publish_errors, 0u);

  if (!replay) return;
  // Replay from the first data batch: the same batches again, ending at the last seq.
  auto r = sub->Replay(svc->replay_endpoint(), last_probe + 1, kTimeoutMs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<kv::KvEvent> replayed;
  uint64_t seq = last_probe + 1;
  for (const auto& f : *r) {
    EXPECT_EQ(f.seq, seq++);
    AppendData(f.batch, replayed);
  }
  EXPECT_EQ(seq, want_seq);
  EXPECT_EQ(replayed, sent);
  // Like batches_published: the counter moves after ServeReplay() returns, i.e. after the reply
  // was sent, so the subscriber can hold the reply before the count.
  test_util::WaitFor([&] { return svc->Stats().replay_requests >= 1; }, milliseconds(kTimeoutMs));
  EXPECT_GE(svc->Stats().replay_requests, 1u);

  // Replay from the very start includes the probes; asking past the end gets nothing.
  auto all = sub->Replay(svc->replay_endpoint(), 0, kTimeoutMs);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), want_seq);
  EXPECT_EQ(all->front().seq, 0u);
  auto none = sub->Replay(svc->replay_endpoint(), want_seq + 5, kTimeoutMs);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
  size_t all_events = 0;
  for (const auto& f : *all) all_events += f.batch.events.size();
  EXPECT_EQ(svc->Stats().events_published, all_events);
}

TEST(KvEventServiceTest, DeliversInOrderAndReplays) { CheckDeliveryAndReplay(true); }

TEST(KvEventServiceTest, DeliversInOrderWithoutReplay) { CheckDeliveryAndReplay(false); }

// With a flush interval far longer than the test, only Stop() can publish: it must publish what
// was emitted before it, promptly (the loop's wait is interruptible), and only once.
void CheckStopPublishesPending(bool replay) {
  auto svc = StartOrDie(Options(replay, milliseconds(3'600'000)));
  ASSERT_NE(svc, nullptr);
  for (uint64_t i = 0; i < 10; ++i) svc->sink()->Emit(Stored(i));
  EXPECT_EQ(svc->next_seq(), 0u);
  EXPECT_EQ(svc->Stats().batches_published, 0u);

  const auto t0 = steady_clock::now();
  svc->Stop();
  EXPECT_LT(steady_clock::now() - t0, milliseconds(2000)) << "Stop() waited for the interval";
  EXPECT_EQ(svc->next_seq(), 1u);
  auto st = svc->Stats();
  EXPECT_EQ(st.batches_published, 1u);
  EXPECT_EQ(st.events_published, 10u);
  EXPECT_EQ(st.publish_errors, 0u);

  svc->Stop();  // idempotent
  svc->sink()->Emit(Stored(99));  // after Stop: buffered, never published
  svc->Stop();
  EXPECT_EQ(svc->Stats().batches_published, 1u);
  EXPECT_EQ(svc->next_seq(), 1u);
}

TEST(KvEventServiceTest, StopPublishesPendingWithReplay) { CheckStopPublishesPending(true); }

TEST(KvEventServiceTest, StopPublishesPendingWithoutReplay) { CheckStopPublishesPending(false); }

// Stop() publishes pending events to a connected subscriber: the subscription is established with
// probes at a short interval, then events emitted right before Stop() arrive.
TEST(KvEventServiceTest, StopDeliversPendingToSubscriber) {
  auto svc = StartOrDie(Options(false, milliseconds(200)));
  ASSERT_NE(svc, nullptr);
  auto sub_or = kv::KvEventSubscriber::Create(svc->endpoint(), "");
  ASSERT_TRUE(sub_or.ok());
  auto sub = std::move(sub_or).value();
  const uint64_t last_probe = WaitSubscribed(*svc, *sub);
  if (::testing::Test::HasFailure()) return;
  for (uint64_t i = 0; i < 5; ++i) svc->sink()->Emit(Removed(i));
  svc->Stop();
  std::vector<kv::KvEvent> got;
  while (got.size() < 5) {
    auto m = sub->Receive(kTimeoutMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_TRUE(m->has_value()) << "pending events were not published by Stop()";
    EXPECT_GT((*m)->seq, last_probe);
    AppendData((*m)->batch, got);
  }
  std::vector<kv::KvEvent> want;
  for (uint64_t i = 0; i < 5; ++i) want.push_back(Removed(i));
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace kvmesh::agent
