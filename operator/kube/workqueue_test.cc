#include "operator/kube/workqueue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace kvmesh::kube {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(WorkQueueTest, DeduplicatesWaitingKeys) {
  WorkQueue q;
  q.Add("ns/a");
  q.Add("ns/b");
  q.Add("ns/a");
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(q.Get().key, "ns/a");
  EXPECT_EQ(q.Get().key, "ns/b");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueueTest, KeyAddedWhileProcessingIsQueuedAgainAfterDone) {
  WorkQueue q;
  q.Add("ns/a");
  auto item = q.Get();
  ASSERT_EQ(item.key, "ns/a");
  q.Add("ns/a");  // while processing: not handed to another worker
  q.Add("ns/a");
  EXPECT_EQ(q.Len(), 0u);
  q.Done("ns/a");
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(q.Get().key, "ns/a");
  q.Done("ns/a");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueueTest, NeverProcessesOneKeyTwiceAtOnce) {
  WorkQueue q;
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      for (;;) {
        auto item = q.Get();
        if (item.shutdown) return;
        int now = ++in_flight;
        int prev = max_in_flight.load();
        while (now > prev && !max_in_flight.compare_exchange_weak(prev, now)) {
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        --in_flight;
        ++processed;
        q.Done(item.key);
      }
    });
  }
  for (int i = 0; i < 300; ++i) {
    q.Add("ns/only");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  while (q.Len() > 0) std::this_thread::sleep_for(milliseconds(1));
  std::this_thread::sleep_for(milliseconds(20));
  q.ShutDown();
  for (auto& t : workers) t.join();
  EXPECT_EQ(max_in_flight.load(), 1);
  EXPECT_GE(processed.load(), 1);
  EXPECT_LT(processed.load(), 300);  // de-duplicated
}

TEST(WorkQueueTest, AddAfterWaitsForTheClock) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.clock = &clock});
  q.AddAfter("ns/a", milliseconds(100));
  q.AddAfter("ns/a", milliseconds(300));  // the earlier time stays
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.NumWaiting(), 1u);
  clock.Advance(milliseconds(99));
  EXPECT_EQ(q.Len(), 0u);
  clock.Advance(milliseconds(1));
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(q.NumWaiting(), 0u);
  EXPECT_EQ(q.Get().key, "ns/a");
}

TEST(WorkQueueTest, GetWakesWhenTheFakeClockPassesTheDelay) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.clock = &clock});
  q.AddAfter("ns/a", seconds(5));
  std::thread advancer([&] {
    std::this_thread::sleep_for(milliseconds(20));
    clock.Advance(seconds(5));
  });
  auto item = q.Get();
  advancer.join();
  EXPECT_EQ(item.key, "ns/a");
}

TEST(WorkQueueTest, PerItemBackoffDoublesToTheCapAndForgetResets) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.base_delay = milliseconds(5), .max_delay = milliseconds(40),
                               .qps = 1e9, .burst = 1000000, .clock = &clock});
  EXPECT_EQ(q.When("k"), milliseconds(5));
  EXPECT_EQ(q.When("k"), milliseconds(10));
  EXPECT_EQ(q.When("k"), milliseconds(20));
  EXPECT_EQ(q.When("k"), milliseconds(40));
  EXPECT_EQ(q.When("k"), milliseconds(40));  // capped
  EXPECT_EQ(q.NumRequeues("k"), 5);
  EXPECT_EQ(q.When("other"), milliseconds(5));  // per item
  q.Forget("k");
  EXPECT_EQ(q.NumRequeues("k"), 0);
  EXPECT_EQ(q.When("k"), milliseconds(5));
}

TEST(WorkQueueTest, DefaultCapIs1000Seconds) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.qps = 1e9, .burst = 1000000, .clock = &clock});
  std::chrono::nanoseconds d{0};
  for (int i = 0; i < 40; ++i) d = q.When("k");
  EXPECT_EQ(d, seconds(1000));
}

TEST(WorkQueueTest, TokenBucketLimitsOverallRateAfterBurst) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.base_delay = std::chrono::nanoseconds(1), .qps = 10, .burst = 100,
                               .clock = &clock});
  // 100 distinct keys: all within the burst, per-item delay ~0.
  for (int i = 0; i < 100; ++i) {
    EXPECT_LE(q.When("k" + std::to_string(i)), std::chrono::nanoseconds(1)) << i;
  }
  // The 101st and 102nd wait for the bucket: 100 ms, 200 ms at 10 qps.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(q.When("k100")), milliseconds(100));
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(q.When("k101")), milliseconds(200));
  clock.Advance(seconds(10));  // refills (up to the burst)
  EXPECT_LE(q.When("k102"), std::chrono::nanoseconds(1));
}

TEST(WorkQueueTest, AddRateLimitedQueuesAfterTheBackoff) {
  FakeClock clock;
  WorkQueue q(WorkQueueOptions{.base_delay = milliseconds(5), .clock = &clock});
  q.AddRateLimited("ns/a");
  q.AddRateLimited("ns/a");  // 10 ms now, but the pending 5 ms wins
  EXPECT_EQ(q.Len(), 0u);
  clock.Advance(milliseconds(5));
  EXPECT_EQ(q.Len(), 1u);
}

TEST(WorkQueueTest, ShutDownDrainsThenReportsShutdown) {
  WorkQueue q;
  q.Add("ns/a");
  std::atomic<bool> woke{false};
  q.ShutDown();
  q.Add("ns/b");  // ignored
  auto a = q.Get();
  EXPECT_FALSE(a.shutdown);
  EXPECT_EQ(a.key, "ns/a");
  auto end = q.Get();
  EXPECT_TRUE(end.shutdown);
  // A Get blocked on an empty queue returns on ShutDown.
  WorkQueue empty;
  std::thread waiter([&] {
    auto item = empty.Get();
    woke = item.shutdown;
  });
  std::this_thread::sleep_for(milliseconds(20));
  empty.ShutDown();
  waiter.join();
  EXPECT_TRUE(woke.load());
}

}  // namespace
}  // namespace kvmesh::kube
