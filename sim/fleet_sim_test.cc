#include "sim/fleet_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::sim {
namespace {

// A workload built in the test: exact arrivals, lengths and block hashes.
class VectorWorkload final : public Workload {
 public:
  explicit VectorWorkload(std::vector<SimRequest> requests) : requests_(std::move(requests)) {}
  std::optional<SimRequest> Next() override {
    if (next_ >= requests_.size()) return std::nullopt;
    return requests_[next_++];
  }
  std::string Describe() const override { return "vector(" + std::to_string(requests_.size()) + ")"; }

 private:
  std::vector<SimRequest> requests_;
  size_t next_ = 0;
};

uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Prompt of `isl` tokens whose first `shared_tokens` are group `group`'s prefix (identical
// sequence hashes across the group), the rest unique to request `id`.
SimRequest MakeRequest(uint64_t id, double t, uint32_t isl, uint32_t osl, uint32_t group,
                       uint32_t shared_tokens, uint32_t block_size = 16) {
  SimRequest r;
  r.id = id;
  r.arrival_s = t;
  r.input_tokens = isl;
  r.output_tokens = osl;
  const uint32_t shared_blocks = shared_tokens / block_size;
  uint64_t h = 0;
  for (uint32_t i = 0; i < isl / block_size; ++i) {
    h = i < shared_blocks ? Mix((uint64_t{group} << 32) | i) : Mix(h ^ Mix(id * 1000003 + i));
    r.hashes.push_back(h);
  }
  return r;
}

// Poisson-ish (deterministic) arrivals at `rate`, `groups` prefix groups chosen round robin.
std::vector<SimRequest> SharedPrefixRequests(uint32_t n, double rate, uint32_t isl, uint32_t osl,
                                             uint32_t groups, uint32_t shared_tokens) {
  std::vector<SimRequest> out;
  double t = 0;
  uint64_t s = 7;
  for (uint32_t i = 0; i < n; ++i) {
    s = Mix(s);
    const double u = (static_cast<double>(s >> 11) + 0.5) * 0x1.0p-53;
    t += -std::log(u) / rate;
    s = Mix(s);
    out.push_back(MakeRequest(i, t, isl, osl, static_cast<uint32_t>(s % groups), shared_tokens));
  }
  return out;
}

SimConfig AggFleet(uint32_t instances) {
  SimConfig c;
  PoolConfig p;
  p.role = router::WorkerRole::kAggregated;
  p.count = instances;
  p.gpu = "h100";
  p.model = "llama-3.1-8b";
  p.tp = 1;
  c.pools.push_back(p);
  return c;
}

SimConfig DisaggFleet(uint32_t prefill, uint32_t decode) {
  SimConfig c;
  PoolConfig p;
  p.gpu = "h100";
  p.model = "llama-3.1-8b";
  p.role = router::WorkerRole::kPrefill;
  p.count = prefill;
  c.pools.push_back(p);
  p.role = router::WorkerRole::kDecode;
  p.count = decode;
  c.pools.push_back(p);
  c.link = "ib400";
  return c;
}

SimResult Simulate(const SimConfig& c, std::vector<SimRequest> reqs, const std::string& policy) {
  SimConfig cc = c;
  auto routing = RoutingForPolicy(policy, cc.routing);
  EXPECT_TRUE(routing.ok()) << routing.status().ToString();
  cc.routing = *routing;
  VectorWorkload w(std::move(reqs));
  auto r = RunFleetSim(cc, w, policy);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : SimResult{};
}

void ExpectConserved(const SimResult& r) {
  EXPECT_EQ(r.completed + r.rejected, r.requests);
  EXPECT_EQ(r.leaked_blocks, 0u);
  EXPECT_EQ(r.pool_errors, "");
}

PerfModel Model8b() {
  auto m = PerfModel::Make(*GpuByName("h100"), *ModelByName("llama-3.1-8b"), 1);
  EXPECT_TRUE(m.ok());
  return *m;
}

TEST(FleetSimTest, IsolatedRequestMatchesThePerfModel) {
  const PerfModel m = Model8b();
  const uint32_t isl = 3000, osl = 20;
  SimResult r = Simulate(AggFleet(1), {MakeRequest(0, 1.0, isl, osl, 0, 0)}, "kv:kvmesh");
  ExpectConserved(r);
  ASSERT_EQ(r.completed, 1u);
  const double ttft = m.PrefillSeconds(isl, 0);
  EXPECT_NEAR(r.ttft_s.p50, ttft, 1e-9);
  double decode = 0;
  for (uint32_t i = 0; i + 1 < osl; ++i) decode += m.DecodeStepSeconds(1, isl + i);
  EXPECT_NEAR(r.e2e_s.p50, ttft + decode, 1e-9);
  EXPECT_NEAR(r.tokens_per_s_per_user, (osl - 1) / decode, 1e-6);
  EXPECT_EQ(r.cache_hit_ratio, 0);
  EXPECT_EQ(r.remote_prefills, 0u);
  EXPECT_EQ(r.engine_steps, osl);  // one prefill step + osl - 1 decode steps
  EXPECT_EQ(r.output_tokens, osl);
}

TEST(FleetSimTest, ClosedLoopOfOneRunsRequestsBackToBack) {
  const PerfModel m = Model8b();
  const uint32_t isl = 1000, osl = 10;
  // Arrival times far apart: a closed loop ignores them.
  std::vector<SimRequest> reqs;
  for (uint32_t i = 0; i < 5; ++i) reqs.push_back(MakeRequest(i, 100.0 * (i + 1), isl, osl, 0, 0));
  SimConfig c = AggFleet(1);
  c.concurrency = 1;
  SimResult r = Simulate(c, reqs, "kv:kvmesh");
  ExpectConserved(r);
  ASSERT_EQ(r.completed, 5u);
  double e2e = m.PrefillSeconds(isl, 0);
  for (uint32_t i = 0; i + 1 < osl; ++i) e2e += m.DecodeStepSeconds(1, isl + i);
  // Each one alone on the instance, the next entering as the previous finishes.
  EXPECT_NEAR(r.e2e_s.p50, e2e, 1e-9);
  EXPECT_NEAR(r.e2e_s.p99, e2e, 1e-9);
  EXPECT_NEAR(r.duration_s, 5 * e2e, 1e-9);
  EXPECT_NE(r.workload.find("closed loop at concurrency 1"), std::string::npos) << r.workload;
  // The same requests open loop: each arrives 100 s apart, the run spans their arrival times.
  c.concurrency = 0;
  r = Simulate(c, reqs, "kv:kvmesh");
  EXPECT_NEAR(r.duration_s, 400 + e2e, 1e-9);
}

TEST(FleetSimTest, ClosedLoopKeepsConcurrencyRequestsInTheFleet) {
  SimConfig c = AggFleet(2);
  c.concurrency = 8;
  c.scale_interval_s = 0.01;
  std::vector<uint64_t> in_flight;
  c.scale = [&](const IntervalStats& st) {
    in_flight.push_back(st.in_flight);
    return std::vector<uint32_t>{2};
  };
  // All 60 at t = 0 in the workload: open loop would put every one of them in the fleet at once.
  std::vector<SimRequest> reqs;
  for (uint32_t i = 0; i < 60; ++i) reqs.push_back(MakeRequest(i, 0, 512 + 16 * (i % 7), 8 + i % 5, 0, 0));
  SimResult r = Simulate(c, reqs, "round_robin");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 60u);
  ASSERT_GT(in_flight.size(), 10u);
  EXPECT_EQ(*std::max_element(in_flight.begin(), in_flight.end()), 8u);
  // Until the workload runs out the fleet holds 8 at every tick (60 - 8 requests enter later).
  EXPECT_EQ(in_flight[0], 8u);
  EXPECT_EQ(in_flight[in_flight.size() / 4], 8u);
  EXPECT_EQ(in_flight.back(), 0u);
}

TEST(FleetSimTest, IsolatedRemotePrefillAddsTheTransfer) {
  const PerfModel m = Model8b();
  const uint32_t isl = 2000, osl = 10;
  SimConfig c = DisaggFleet(1, 1);
  c.disaggregation.mode = "always";
  SimResult r = Simulate(c, {MakeRequest(0, 0.5, isl, osl, 0, 0)}, "kv:kvmesh");
  ExpectConserved(r);
  ASSERT_EQ(r.completed, 1u);
  EXPECT_EQ(r.remote_prefills, 1u);
  const double ttft = m.PrefillSeconds(isl, 0);
  EXPECT_NEAR(r.ttft_s.p50, ttft, 1e-9);
  // The whole prompt's KV moves (2000 = 125 full blocks, nothing cached on the decode side).
  EXPECT_EQ(r.transfer_bytes, m.KvBytes(isl));
  const double xfer = PerfModel::TransferSeconds(m.KvBytes(isl), *LinkByName("ib400"));
  double decode = 0;
  for (uint32_t i = 0; i + 1 < osl; ++i) decode += m.DecodeStepSeconds(1, isl + i);
  EXPECT_NEAR(r.e2e_s.p50, ttft + xfer + decode, 1e-9);
}

TEST(FleetSimTest, TransferSkipsWhatTheDecodeInstanceHolds) {
  const PerfModel m = Model8b();
  SimConfig c = DisaggFleet(1, 1);
  c.disaggregation.mode = "always";
  // The second prompt shares its first 512 tokens (32 blocks) with the first; by then the decode
  // instance holds the first prompt's blocks (committed after its transfer).
  std::vector<SimRequest> reqs = {MakeRequest(1, 0.0, 1000, 4, 5, 512),
                                  MakeRequest(2, 5.0, 1000, 4, 5, 512)};
  SimResult r = Simulate(c, reqs, "kv:kvmesh");
  ExpectConserved(r);
  ASSERT_EQ(r.completed, 2u);
  EXPECT_EQ(r.remote_prefills, 2u);
  EXPECT_EQ(r.transfer_bytes, m.KvBytes(1000) + m.KvBytes(1000 - 512));
  // The prefill instance also held the shared blocks: 512 of 2000 prompt tokens were cached.
  EXPECT_EQ(r.cached_prompt_tokens, 512u);
}

TEST(FleetSimTest, DisaggregationMovesKvBytesOfUncachedPrompts) {
  const PerfModel m = Model8b();
  SimConfig c = DisaggFleet(2, 2);
  std::vector<SimRequest> reqs = SharedPrefixRequests(200, 20, 1500, 30, 200, 0);
  uint64_t want = 0;
  for (const SimRequest& q : reqs) want += m.KvBytes(q.input_tokens);
  SimResult r = Simulate(c, reqs, "kv:kvmesh");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 200u);
  EXPECT_EQ(r.remote_prefills, 200u);  // unique prompts of 1500 tokens: always above 64
  EXPECT_EQ(r.transfer_bytes, want);
  EXPECT_EQ(r.cache_hit_ratio, 0);
}

TEST(FleetSimTest, SameSeedSameResult) {
  SimConfig c = AggFleet(8);
  c.seed = 42;
  const auto reqs = SharedPrefixRequests(400, 60, 1200, 60, 10, 800);
  for (const char* policy : {"random", "kv:kvmesh", "kv:dynamo"}) {
    SimResult a = Simulate(c, reqs, policy);
    SimResult b = Simulate(c, reqs, policy);
    a.wall_s = b.wall_s = 0;
    EXPECT_EQ(SimResultJson(a), SimResultJson(b)) << policy;
  }
  // A different seed changes random routing.
  SimConfig c2 = c;
  c2.seed = 43;
  SimResult a = Simulate(c, reqs, "random");
  SimResult b = Simulate(c2, reqs, "random");
  EXPECT_NE(a.ttft_s.mean, b.ttft_s.mean);
}

TEST(FleetSimTest, DecodeJumpsEqualStepByStep) {
  SimConfig c = AggFleet(4);
  const auto reqs = SharedPrefixRequests(300, 30, 800, 120, 6, 400);
  SimResult jump = Simulate(c, reqs, "kv:kvmesh");
  c.max_jump_steps = 1;
  SimResult step = Simulate(c, reqs, "kv:kvmesh");
  ExpectConserved(jump);
  ExpectConserved(step);
  EXPECT_EQ(jump.completed, step.completed);
  EXPECT_EQ(jump.engine_steps, step.engine_steps);
  EXPECT_EQ(jump.cached_prompt_tokens, step.cached_prompt_tokens);
  EXPECT_LT(jump.events, step.events);  // the point of jumping
  EXPECT_NEAR(jump.ttft_s.mean, step.ttft_s.mean, 1e-6 * step.ttft_s.mean);
  EXPECT_NEAR(jump.e2e_s.p99, step.e2e_s.p99, 1e-6 * step.e2e_s.p99);
  EXPECT_NEAR(jump.itl_s.mean, step.itl_s.mean, 1e-6 * step.itl_s.mean);
}

TEST(FleetSimTest, KvPressurePreemptsAndStillConserves) {
  SimConfig c = AggFleet(2);
  c.pools[0].kv_blocks = 400;  // 399 usable blocks = 6,384 tokens per instance
  c.pools[0].max_batch = 64;
  const auto reqs = SharedPrefixRequests(300, 200, 1000, 600, 300, 0);
  SimResult r = Simulate(c, reqs, "round_robin");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 300u);
  EXPECT_GT(r.preemptions, 0u);
}

TEST(FleetSimTest, DisaggUnderKvPressureConserves) {
  SimConfig c = DisaggFleet(1, 2);
  c.pools[0].kv_blocks = 300;
  c.pools[1].kv_blocks = 400;
  const auto reqs = SharedPrefixRequests(300, 100, 1000, 300, 4, 512);
  SimResult r = Simulate(c, reqs, "kv:kvmesh");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 300u);
}

TEST(FleetSimTest, RequestsThatNeverFitAreRejected) {
  SimConfig c = AggFleet(1);
  c.pools[0].kv_blocks = 101;  // 1,600 tokens
  std::vector<SimRequest> reqs = {MakeRequest(0, 0, 1000, 10, 0, 0),
                                  MakeRequest(1, 0.1, 5000, 10, 1, 0),
                                  MakeRequest(2, 0.2, 1000, 10, 2, 0)};
  SimResult r = Simulate(c, reqs, "random");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 2u);
  EXPECT_EQ(r.rejected, 1u);
  // Closed loop: a rejected request lets the next one in, as a finished one does.
  c.concurrency = 1;
  r = Simulate(c, reqs, "random");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 2u);
  EXPECT_EQ(r.rejected, 1u);
}

TEST(FleetSimTest, RouterInflightLimitRejects) {
  SimConfig c = AggFleet(2);
  c.max_inflight_per_worker = 3;
  std::vector<SimRequest> reqs;
  for (uint32_t i = 0; i < 10; ++i) reqs.push_back(MakeRequest(i, 0, 2000, 50, i, 0));
  SimResult r = Simulate(c, reqs, "least_loaded");
  ExpectConserved(r);
  EXPECT_EQ(r.completed, 6u);
  EXPECT_EQ(r.rejected, 4u);
}

// 32 prefix groups of 2,048 tokens; each instance holds about 3 of them. KV-aware routing keeps a
// group on few instances (high hit ratio); random spreads every group everywhere (LRU misses).
TEST(FleetSimTest, KvRoutingFindsSharedPrefixesRandomDoesNot) {
  SimConfig c = AggFleet(16);
  c.pools[0].kv_blocks = 600;
  const auto reqs = SharedPrefixRequests(3000, 100, 2304, 20, 32, 2048);
  SimResult kv = Simulate(c, reqs, "kv:kvmesh");
  SimResult rnd = Simulate(c, reqs, "random");
  ExpectConserved(kv);
  ExpectConserved(rnd);
  EXPECT_GT(kv.cache_hit_ratio, 0.6) << SimResultTable({kv, rnd});
  EXPECT_LT(rnd.cache_hit_ratio, 0.4) << SimResultTable({kv, rnd});
  EXPECT_LT(kv.ttft_s.p50, rnd.ttft_s.p50) << SimResultTable({kv, rnd});
}

// A shared-prefix workload loaded enough that prefill time matters: kvmesh's routing beats random
// on TTFT p50 (the requirement) and on hit ratio.
TEST(FleetSimTest, KvmeshBeatsRandomOnTtft) {
  SimConfig c = AggFleet(8);
  const auto reqs = SharedPrefixRequests(2000, 40, 4000, 100, 64, 3000);
  SimResult kvm = Simulate(c, reqs, "kv:kvmesh");
  SimResult rnd = Simulate(c, reqs, "random");
  ExpectConserved(kvm);
  ExpectConserved(rnd);
  EXPECT_LT(kvm.ttft_s.p50, rnd.ttft_s.p50) << SimResultTable({kvm, rnd});
  EXPECT_GT(kvm.cache_hit_ratio, rnd.cache_hit_ratio) << SimResultTable({kvm, rnd});
}

TEST(FleetSimTest, ConfigErrorsNameTheField) {
  SimConfig c = AggFleet(1);
  c.pools[0].gpu = "tpu";
  VectorWorkload w({});
  auto r = RunFleetSim(c, w);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pools[0]"), std::string::npos) << r.status().ToString();

  SimConfig c2 = AggFleet(1);
  c2.pools[0].role = router::WorkerRole::kPrefill;
  EXPECT_FALSE(c2.Validate().ok());
  SimConfig c3 = AggFleet(1);
  c3.block_size = 0;
  EXPECT_FALSE(c3.Validate().ok());
  EXPECT_FALSE(RoutingForPolicy("kv:magic", {}).ok());
  auto d = RoutingForPolicy("kv:dynamo", {});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->mode, "kv");
  EXPECT_EQ(d->kv_cost, "dynamo");
}

TEST(FleetSimTest, JsonHasEveryOutput) {
  SimResult r = Simulate(AggFleet(2), SharedPrefixRequests(50, 10, 500, 20, 2, 256), "least_loaded");
  const std::string j = SimResultJson(r);
  for (const char* key : {"\"policy\":\"least_loaded\"", "\"output_tokens_per_s_per_gpu\"",
                          "\"tokens_per_s_per_user\"", "\"ttft_s\"", "\"itl_s\"", "\"goodput_rps\"",
                          "\"cache_hit_ratio\"", "\"transfer_bytes\"", "\"remote_prefills\""}) {
    EXPECT_NE(j.find(key), std::string::npos) << key << " in " << j;
  }
  EXPECT_EQ(j.find('\n'), std::string::npos);
  EXPECT_NE(SimResultTable({r}).find("least_loaded"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::sim
