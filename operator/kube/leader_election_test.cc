// LeaderElector against a scripted API server over real HTTP, with short timings
// (lease 1 s, renew deadline 600 ms, retry 100 ms).
#include "operator/kube/leader_election.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/wait_for_testutil.h"
#include "operator/kube/scripted_api_server_testutil.h"

namespace kvmesh::kube {
namespace {

using std::chrono::milliseconds;
using testing::ScriptedApiServer;

const char kLeases[] = "/apis/coordination.k8s.io/v1/namespaces/kvmesh-system/leases";

using test_util::WaitFor;

struct Candidate {
  std::unique_ptr<KubeClient> client;
  std::unique_ptr<LeaderElector> elector;
  std::atomic<int> started{0};
  std::atomic<int> stopped{0};
};

class LeaderElectionTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start().ok()); }

  std::unique_ptr<Candidate> Make(const std::string& id, bool release = true) {
    auto c = std::make_unique<Candidate>();
    KubeConfig config;
    config.server = server_.url();
    KubeClientOptions o;
    o.max_retries = 0;
    o.timeout = milliseconds(2000);
    o.user_agent = "elector-" + id;  // lets the server block one candidate's requests
    c->client = std::move(CreateKubeClient(config, o)).value();
    LeaderElectionConfig le;
    le.lease_namespace = "kvmesh-system";
    le.lease_name = "kvmesh-operator";
    le.identity = id;
    le.lease_duration = milliseconds(1000);
    le.renew_deadline = milliseconds(600);
    le.retry_period = milliseconds(100);
    le.release_on_stop = release;
    Candidate* raw = c.get();
    le.on_started_leading = [raw] { raw->started++; };
    le.on_stopped_leading = [raw] { raw->stopped++; };
    c->elector = std::make_unique<LeaderElector>(c->client.get(), le);
    return c;
  }

  nlohmann::json LeaseSpec() {
    auto lease = server_.Object(kLeases, "kvmesh-operator");
    return lease ? (*lease)["spec"] : nlohmann::json();
  }

  ScriptedApiServer server_{{kLeases}};
};

TEST_F(LeaderElectionTest, ConfigIsValidated) {
  LeaderElectionConfig c;
  c.lease_namespace = "ns";
  c.identity = "a";
  EXPECT_TRUE(c.Validate().ok());
  c.renew_deadline = c.lease_duration;
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c.renew_deadline = milliseconds(10000);
  c.retry_period = milliseconds(10000);
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c.retry_period = milliseconds(2000);
  c.identity = "";
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
}

TEST_F(LeaderElectionTest, SingleCandidateCreatesAndRenewsTheLease) {
  auto a = Make("a");
  ASSERT_TRUE(a->elector->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->elector->IsLeader(); }));
  // IsLeader() turns true just before the elector thread calls on_started_leading.
  ASSERT_TRUE(WaitFor([&] { return a->started.load() == 1; }));
  auto spec = LeaseSpec();
  EXPECT_EQ(spec["holderIdentity"], "a");
  EXPECT_EQ(spec["leaseTransitions"], 0);
  EXPECT_EQ(spec["leaseDurationSeconds"], 1);
  std::string renew1 = spec["renewTime"];
  ASSERT_TRUE(WaitFor([&] { return LeaseSpec()["renewTime"] != renew1; }, milliseconds(2000)));
  EXPECT_EQ(LeaseSpec()["acquireTime"], spec["acquireTime"]);  // renewals keep acquireTime
  EXPECT_TRUE(a->elector->IsLeader());
  a->elector->Stop();
  EXPECT_FALSE(a->elector->IsLeader());
  EXPECT_EQ(a->stopped.load(), 1);
  EXPECT_EQ(LeaseSpec()["holderIdentity"], "");  // released
}

TEST_F(LeaderElectionTest, OnlyOneLeaderAndReleaseHandsOverAtOnce) {
  auto a = Make("a");
  ASSERT_TRUE(a->elector->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->elector->IsLeader(); }));
  auto b = Make("b");
  ASSERT_TRUE(b->elector->Start().ok());
  // b keeps seeing a renewed lease: never leader meanwhile.
  for (int i = 0; i < 60; ++i) {
    ASSERT_FALSE(b->elector->IsLeader());
    std::this_thread::sleep_for(milliseconds(25));
  }
  EXPECT_EQ(b->elector->observed_leader(), "a");
  auto start = std::chrono::steady_clock::now();
  a->elector->Stop();  // clean shutdown releases the lease
  ASSERT_TRUE(WaitFor([&] { return b->elector->IsLeader(); }));
  // Taken over at b's next retry, well before the 1 s lease duration.
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(800));
  auto spec = LeaseSpec();
  EXPECT_EQ(spec["holderIdentity"], "b");
  EXPECT_EQ(spec["leaseTransitions"], 1);
  b->elector->Stop();
}

TEST_F(LeaderElectionTest, CrashedLeaderIsReplacedAfterTheLeaseDuration) {
  auto a = Make("a", /*release=*/false);
  ASSERT_TRUE(a->elector->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->elector->IsLeader(); }));
  auto b = Make("b");
  ASSERT_TRUE(b->elector->Start().ok());
  std::this_thread::sleep_for(milliseconds(300));
  auto start = std::chrono::steady_clock::now();
  a->elector->Stop();  // no release: like kill -9, the lease just stops being renewed
  EXPECT_EQ(LeaseSpec()["holderIdentity"], "a");
  ASSERT_TRUE(WaitFor([&] { return b->elector->IsLeader(); }, milliseconds(5000)));
  auto took = std::chrono::steady_clock::now() - start;
  // Not before the lease duration (measured from b's last observation of a change, which is at
  // most one retry before the stop), and within lease duration + a jittered retry + slack.
  EXPECT_GE(took, milliseconds(1000 - 250));
  EXPECT_LT(took, milliseconds(1000 + 220 + 500));
  EXPECT_EQ(LeaseSpec()["leaseTransitions"], 1);
  b->elector->Stop();
}

TEST_F(LeaderElectionTest, LeaderThatCannotRenewStepsDownBeforeTheDeadlineAndNeverOverlaps) {
  auto a = Make("a");
  ASSERT_TRUE(a->elector->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->elector->IsLeader(); }));
  auto b = Make("b");
  ASSERT_TRUE(b->elector->Start().ok());
  std::this_thread::sleep_for(milliseconds(200));
  auto blocked_at = std::chrono::steady_clock::now();
  server_.BlockAgent("elector-a");  // a's renewals fail from now on
  bool overlap = false;
  std::chrono::steady_clock::duration a_lost_after{};
  while (std::chrono::steady_clock::now() - blocked_at < milliseconds(3000)) {
    bool la = a->elector->IsLeader();
    bool lb = b->elector->IsLeader();
    if (la && lb) overlap = true;
    if (!la && a_lost_after == std::chrono::steady_clock::duration{}) {
      a_lost_after = std::chrono::steady_clock::now() - blocked_at;
    }
    if (lb) break;
    std::this_thread::sleep_for(milliseconds(2));
  }
  EXPECT_FALSE(overlap);
  EXPECT_TRUE(b->elector->IsLeader());
  // a stopped claiming leadership no later than the renew deadline after its last good renew
  // (which was before the block).
  EXPECT_GT(a_lost_after, std::chrono::steady_clock::duration{});
  EXPECT_LE(a_lost_after, milliseconds(600 + 20));
  ASSERT_TRUE(WaitFor([&] { return a->stopped.load() == 1; }));
  EXPECT_EQ(a->elector->losses(), 1u);
  EXPECT_EQ(LeaseSpec()["holderIdentity"], "b");
  server_.BlockAgent("");
  a->elector->Stop();
  b->elector->Stop();
}

}  // namespace
}  // namespace kvmesh::kube
