#include "agent/lease_manager.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::agent {
namespace {

using std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

// A hand-advanced clock and a release function that counts calls per pin id.
class LeaseManagerTest : public ::testing::Test {
 protected:
  LeaseManagerTest()
      : leases_([this](uint64_t pin) { OnRelease(pin); }, [this] { return Now(); }) {}

  TimePoint Now() const { return TimePoint(milliseconds(now_ms_.load())); }
  void Advance(int64_t ms) { now_ms_ += ms; }

  void OnRelease(uint64_t pin) {
    std::lock_guard<std::mutex> lock(mu_);
    ++released_[pin];
  }
  int ReleasedCount(uint64_t pin) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = released_.find(pin);
    return it == released_.end() ? 0 : it->second;
  }
  size_t TotalReleases() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& [pin, c] : released_) n += static_cast<size_t>(c);
    return n;
  }

  std::atomic<int64_t> now_ms_{1'000'000};
  std::mutex mu_;
  std::map<uint64_t, int> released_;
  LeaseManager leases_;  // last: destroyed first, while the members it calls still exist
};

TEST_F(LeaseManagerTest, CreateGivesDistinctNonZeroIdsAndExpiry) {
  const int64_t wall_before = std::chrono::duration_cast<milliseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count();
  std::set<uint64_t> ids;
  for (uint64_t pin = 1; pin <= 100; ++pin) {
    Lease l = leases_.Create(pin, milliseconds(5000));
    EXPECT_NE(l.lease_id, 0u);
    EXPECT_EQ(l.pin_id, pin);
    EXPECT_EQ(l.expiry, Now() + milliseconds(5000));
    EXPECT_GE(l.expiry_unix_ms, wall_before + 5000);
    EXPECT_LT(l.expiry_unix_ms, wall_before + 5000 + 60'000);
    ids.insert(l.lease_id);
  }
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(leases_.Stats().active, 100u);
  EXPECT_EQ(leases_.Stats().created, 100u);
  EXPECT_EQ(TotalReleases(), 0u);
}

TEST_F(LeaseManagerTest, ReleaseOnceThenNotFound) {
  Lease a = leases_.Create(7, milliseconds(1000));
  Lease b = leases_.Create(8, milliseconds(1000));
  ASSERT_TRUE(leases_.Release(a.lease_id).ok());
  EXPECT_EQ(ReleasedCount(7), 1);
  EXPECT_EQ(ReleasedCount(8), 0);

  Status again = leases_.Release(a.lease_id);
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_NE(again.message().find(std::to_string(a.lease_id)), std::string::npos)
      << again.ToString();
  EXPECT_EQ(ReleasedCount(7), 1);

  LeaseStats s = leases_.Stats();
  EXPECT_EQ(s.created, 2u);
  EXPECT_EQ(s.released, 1u);
  EXPECT_EQ(s.active, 1u);
  (void)b;
}

TEST_F(LeaseManagerTest, ForgedIdIsNotFound) {
  Lease a = leases_.Create(1, milliseconds(1000));
  EXPECT_EQ(leases_.Release(0).code(), StatusCode::kNotFound);
  EXPECT_EQ(leases_.Release(a.lease_id ^ 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(leases_.Release(a.pin_id).code(), StatusCode::kNotFound);  // a pin id is no lease id
  EXPECT_EQ(TotalReleases(), 0u);
  EXPECT_EQ(leases_.Stats().active, 1u);
  EXPECT_EQ(leases_.Stats().released, 0u);
}

TEST_F(LeaseManagerTest, ExpireDueFreesExactlyTheDueOnes) {
  EXPECT_EQ(leases_.NextExpiry(), TimePoint::max());
  Lease short1 = leases_.Create(1, milliseconds(100));
  Lease short2 = leases_.Create(2, milliseconds(100));
  Lease mid = leases_.Create(3, milliseconds(200));
  Lease lng = leases_.Create(4, milliseconds(10'000));
  EXPECT_EQ(leases_.NextExpiry(), short1.expiry);

  Advance(99);
  EXPECT_EQ(leases_.ExpireDue(), 0u);
  EXPECT_EQ(TotalReleases(), 0u);

  Advance(1);  // exactly at expiry: due (expiry <= now)
  EXPECT_EQ(leases_.ExpireDue(), 2u);
  EXPECT_EQ(ReleasedCount(1), 1);
  EXPECT_EQ(ReleasedCount(2), 1);
  EXPECT_EQ(ReleasedCount(3), 0);
  EXPECT_EQ(ReleasedCount(4), 0);
  EXPECT_EQ(leases_.NextExpiry(), mid.expiry);

  // An expired lease can no longer be released.
  EXPECT_EQ(leases_.Release(short2.lease_id).code(), StatusCode::kNotFound);
  EXPECT_EQ(ReleasedCount(2), 1);

  Advance(150);
  EXPECT_EQ(leases_.ExpireDue(), 1u);
  EXPECT_EQ(ReleasedCount(3), 1);
  EXPECT_EQ(leases_.ExpireDue(), 0u);
  EXPECT_EQ(leases_.NextExpiry(), lng.expiry);
  ASSERT_TRUE(leases_.Release(lng.lease_id).ok());
  EXPECT_EQ(leases_.NextExpiry(), TimePoint::max());

  LeaseStats s = leases_.Stats();
  EXPECT_EQ(s.created, 4u);
  EXPECT_EQ(s.expired, 3u);
  EXPECT_EQ(s.released, 1u);
  EXPECT_EQ(s.dropped, 0u);
  EXPECT_EQ(s.active, 0u);
}

TEST_F(LeaseManagerTest, ExtendOnlyPushesExpiryLater) {
  Lease l = leases_.Create(1, milliseconds(100));
  Lease other = leases_.Create(2, milliseconds(100));

  // A hold shorter than what is left changes nothing.
  auto same = leases_.Extend(l.lease_id, milliseconds(50));
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->expiry, l.expiry);
  EXPECT_EQ(same->expiry_unix_ms, l.expiry_unix_ms);

  Advance(80);
  auto longer = leases_.Extend(l.lease_id, milliseconds(500));
  ASSERT_TRUE(longer.ok());
  EXPECT_EQ(longer->lease_id, l.lease_id);
  EXPECT_EQ(longer->pin_id, 1u);
  EXPECT_EQ(longer->expiry, Now() + milliseconds(500));
  EXPECT_GT(longer->expiry_unix_ms, l.expiry_unix_ms);
  EXPECT_EQ(leases_.NextExpiry(), other.expiry);

  Advance(20);  // the original expiry: only the other lease is due
  EXPECT_EQ(leases_.ExpireDue(), 1u);
  EXPECT_EQ(ReleasedCount(1), 0);
  EXPECT_EQ(ReleasedCount(2), 1);
  EXPECT_EQ(leases_.Extend(other.lease_id, milliseconds(500)).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(leases_.Extend(12345, milliseconds(500)).status().code(), StatusCode::kNotFound);

  Advance(480);  // now + 500 from the extension
  EXPECT_EQ(leases_.ExpireDue(), 1u);
  EXPECT_EQ(ReleasedCount(1), 1);
  EXPECT_EQ(leases_.Stats().expired, 2u);
}

TEST_F(LeaseManagerTest, ReleaseAllEndsEveryLeaseOnce) {
  for (uint64_t pin = 10; pin < 15; ++pin) leases_.Create(pin, milliseconds(1000));
  Lease gone = leases_.Create(99, milliseconds(1000));
  ASSERT_TRUE(leases_.Release(gone.lease_id).ok());
  EXPECT_EQ(leases_.ReleaseAll(), 5u);
  for (uint64_t pin = 10; pin < 15; ++pin) EXPECT_EQ(ReleasedCount(pin), 1) << pin;
  EXPECT_EQ(ReleasedCount(99), 1);
  EXPECT_EQ(leases_.ReleaseAll(), 0u);
  Advance(5000);
  EXPECT_EQ(leases_.ExpireDue(), 0u);
  EXPECT_EQ(TotalReleases(), 6u);
  LeaseStats s = leases_.Stats();
  EXPECT_EQ(s.dropped, 5u);
  EXPECT_EQ(s.released, 1u);
  EXPECT_EQ(s.active, 0u);
}

TEST(LeaseManagerDestructorTest, DestructorReleasesRemainingLeases) {
  std::vector<uint64_t> released;
  {
    LeaseManager m([&](uint64_t pin) { released.push_back(pin); });
    m.Create(5, milliseconds(60'000));
    m.Create(6, milliseconds(60'000));
    Lease l = m.Create(7, milliseconds(60'000));
    ASSERT_TRUE(m.Release(l.lease_id).ok());
    ASSERT_EQ(released, std::vector<uint64_t>{7});
  }
  std::sort(released.begin(), released.end());
  EXPECT_EQ(released, (std::vector<uint64_t>{5, 6, 7}));
}

TEST(LeaseManagerReentryTest, ReleaseFnMayCallBackIntoTheManager) {
  // The release function runs without the mutex held, so it may use the manager (e.g. log stats).
  LeaseManager* self = nullptr;
  size_t seen_active = 99;
  LeaseManager m([&](uint64_t) { seen_active = self->Stats().active; });
  self = &m;
  Lease l = m.Create(1, milliseconds(1000));
  ASSERT_TRUE(m.Release(l.lease_id).ok());
  EXPECT_EQ(seen_active, 0u);
}

// Several threads race Release, ExpireDue and ReleaseAll over the same leases: each lease must
// end exactly once, and the stats must add up.
TEST_F(LeaseManagerTest, ConcurrentEndingsReleaseEachPinExactlyOnce) {
  constexpr int kRounds = 20;
  constexpr int kLeasesPerRound = 200;
  uint64_t next_pin = 1;
  uint64_t total_ok_releases = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<Lease> ls;
    for (int i = 0; i < kLeasesPerRound; ++i) {
      // Half expire at once when the clock moves; the rest live long.
      ls.push_back(leases_.Create(next_pin++, milliseconds(i % 2 == 0 ? 10 : 1'000'000)));
    }
    Advance(10);
    std::atomic<uint64_t> ok_releases{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        // Each releaser walks all leases from a different offset, so they collide.
        for (int k = 0; k < kLeasesPerRound; ++k) {
          const auto& l = ls[static_cast<size_t>((k + t * 37) % kLeasesPerRound)];
          if (leases_.Release(l.lease_id).ok()) ++ok_releases;
        }
      });
    }
    threads.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int k = 0; k < 5; ++k) leases_.ExpireDue();
    });
    if (round % 4 == 3) {
      threads.emplace_back([&] {
        while (!go.load()) std::this_thread::yield();
        leases_.ReleaseAll();
      });
    }
    go = true;
    for (auto& th : threads) th.join();
    total_ok_releases += ok_releases.load();
    for (const auto& l : ls) ASSERT_EQ(ReleasedCount(l.pin_id), 1) << "pin " << l.pin_id;
    ASSERT_EQ(leases_.Stats().active, 0u);
  }
  LeaseStats s = leases_.Stats();
  EXPECT_EQ(s.created, static_cast<uint64_t>(kRounds * kLeasesPerRound));
  EXPECT_EQ(s.released, total_ok_releases);
  EXPECT_EQ(s.released + s.expired + s.dropped, s.created);
  EXPECT_EQ(TotalReleases(), s.created);
}

}  // namespace
}  // namespace kvmesh::agent
