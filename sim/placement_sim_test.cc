#include "sim/placement_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::sim {
namespace {

// The documented small scenario (docs/simulator.md, "Placement comparison"): 3 regions with one
// 4-GPU cluster each, 6 aggregated llama-3.1-8b tp1 H100 replicas, 600 requests at 30 req/s,
// ISL 3000 (60% a Zipf(1)-popular system prompt out of 12, homed round-robin over the regions),
// OSL 150, 90% regional affinity.
PlacementScenario SmallScenario() {
  PlacementScenario s = DefaultPlacementScenario();
  for (auto& c : s.clusters) c.gpu_capacity = 4;
  s.decode_replicas = 6;
  s.workload.num_requests = 600;
  s.workload.rate = 30;
  return s;
}

const PlacementRun& Find(const std::vector<PlacementRun>& runs, const std::string& policy) {
  for (const PlacementRun& r : runs) {
    if (r.policy == policy) return r;
  }
  ADD_FAILURE() << "no run " << policy;
  return runs.front();
}

void ExpectClean(const SimResult& r) {
  EXPECT_EQ(r.completed, r.requests) << r.policy;
  EXPECT_EQ(r.rejected, 0u) << r.policy;
  EXPECT_EQ(r.leaked_blocks, 0u) << r.policy;
  EXPECT_EQ(r.pool_errors, "") << r.policy;
}

TEST(PlacementSimTest, CacheLocalityBeatsSpreadOnTtftAndCrossClusterBytes) {
  const PlacementScenario s = SmallScenario();
  auto runs = RunPlacementComparison(s, {"spread", "pack", "cache-locality"});
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();
  const PlacementRun& spread = Find(*runs, "spread");
  const PlacementRun& pack = Find(*runs, "pack");
  const PlacementRun& local = Find(*runs, "cache-locality");
  for (const PlacementRun& r : *runs) {
    ExpectClean(r.sim);
    EXPECT_EQ(r.sim.requests, 600u);
  }
  // The real Place(): spread is capacity-proportional (2/2/2), pack fills us-east-1 first,
  // cache-locality follows the (us-heavy) demand.
  EXPECT_EQ(spread.placement.Find("us-east-1")->decode_replicas, 2);
  EXPECT_EQ(spread.placement.Find("ap-south-1")->decode_replicas, 2);
  EXPECT_EQ(pack.placement.Find("us-east-1")->decode_replicas, 4);
  EXPECT_GT(local.placement.Find("us-east-1")->decode_replicas, 2);

  EXPECT_LT(local.sim.ttft_s.mean, spread.sim.ttft_s.mean);
  EXPECT_LT(local.sim.cross_cluster_bytes, spread.sim.cross_cluster_bytes);
  EXPECT_LT(local.sim.remote_requests, spread.sim.remote_requests);
  // Everything pack serves outside us-east crosses clusters: the most remote traffic.
  EXPECT_GT(pack.sim.cross_cluster_bytes, spread.sim.cross_cluster_bytes);
  // Served-by-cluster counts add up and follow the placement (no replica, no request).
  for (const PlacementRun& r : *runs) {
    uint64_t sum = 0;
    for (size_t c = 0; c < r.sim.completed_by_cluster.size(); ++c) {
      sum += r.sim.completed_by_cluster[c];
      if (r.placement.clusters[c].decode_replicas == 0) {
        EXPECT_EQ(r.sim.completed_by_cluster[c], 0u);
      }
    }
    EXPECT_EQ(sum, r.sim.completed);
  }
}

TEST(PlacementSimTest, Deterministic) {
  const PlacementScenario s = SmallScenario();
  auto a = RunPlacementComparison(s, {"spread", "cache-locality"});
  auto b = RunPlacementComparison(s, {"spread", "cache-locality"});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i) {
    SimResult x = (*a)[i].sim, y = (*b)[i].sim;
    x.wall_s = y.wall_s = 0;
    EXPECT_EQ(SimResultJson(x), SimResultJson(y));
    EXPECT_EQ(placement::PlacementResultToJson((*a)[i].placement),
              placement::PlacementResultToJson((*b)[i].placement));
  }
}

TEST(PlacementSimTest, DemandAndHeatMeasuredOnTheWorkload) {
  const PlacementScenario s = SmallScenario();
  auto in = PlacementInputFor(s, "cache-locality");
  ASSERT_TRUE(in.ok()) << in.status().ToString();
  ASSERT_EQ(in->demand.size(), 3u);
  double total = 0;
  for (const auto& d : in->demand) total += d.request_rate;
  EXPECT_NEAR(total, 30, 3);
  // Zipf over 12 groups homed round-robin: us-east (groups 0, 3, 6, 9) gets the most.
  EXPECT_GT(in->demand[0].request_rate, in->demand[1].request_rate);
  EXPECT_GT(in->demand[1].request_rate, in->demand[2].request_rate);
  ASSERT_EQ(in->heat.size(), 12u);  // the 12 system prompts; unique prompts are not roots
  for (const auto& h : in->heat) {
    // 60% of 3000 +/- 20% jitter: the common prefix is at least 60% of the shortest prompt.
    EXPECT_GE(h.tokens, 0.6 * 2400 - 16);
    EXPECT_EQ(h.bytes, h.tokens * 131072);  // llama-3.1-8b KV bytes per token
    EXPECT_EQ(h.cached_bytes.size(), 1u);   // warm in its home cluster only
  }
  EXPECT_GT(in->model.prefill_tokens_per_s, 1000);
  EXPECT_GT(in->model.decode_tokens_per_s, 100);
}

class VectorWorkload final : public Workload {
 public:
  explicit VectorWorkload(std::vector<SimRequest> r) : r_(std::move(r)) {}
  std::optional<SimRequest> Next() override {
    if (i_ >= r_.size()) return std::nullopt;
    return r_[i_++];
  }
  std::string Describe() const override { return "vector"; }

 private:
  std::vector<SimRequest> r_;
  size_t i_ = 0;
};

SimRequest Req(uint64_t id, double t, uint32_t region, uint32_t isl = 512, uint32_t osl = 8) {
  SimRequest r;
  r.id = id;
  r.arrival_s = t;
  r.input_tokens = isl;
  r.output_tokens = osl;
  r.region = region;
  for (uint32_t i = 0; i < isl / 16; ++i) r.hashes.push_back(id * 100003 + i + 1);
  return r;
}

// Two clusters (region 0 and region 1), RTT 1 ms at home and 100 ms across.
SimConfig TwoClusters(uint32_t count0, uint32_t count1) {
  SimConfig c;
  c.disaggregation.mode = "off";
  c.clusters = {{"a", 0}, {"b", 1}};
  if (count0 > 0) {
    PoolConfig p;
    p.count = count0;
    p.cluster = 0;
    p.kv_blocks = 4096;
    c.pools.push_back(p);
  }
  if (count1 > 0) {
    PoolConfig p;
    p.count = count1;
    p.cluster = 1;
    p.kv_blocks = 4096;
    c.pools.push_back(p);
  }
  c.region_rtt_ms = {{1, 100}, {100, 1}};
  LinkSpec wan{"wan", 1.25, 50000};
  c.cluster_links = {{LinkSpec{}, wan}, {wan, LinkSpec{}}};
  return c;
}

TEST(FleetSimClustersTest, RoundTripAddedToTtftAndRemotePayloadCounted) {
  // Only cluster a has an instance: region-1 requests are served remotely. Requests are spaced
  // far apart (no queueing, distinct prompts), so the TTFTs differ by the RTT only.
  SimConfig c = TwoClusters(1, 0);
  std::vector<SimRequest> reqs;
  for (uint32_t i = 0; i < 10; ++i) reqs.push_back(Req(i, i * 10.0, i % 2));
  VectorWorkload wl(reqs);
  auto r = RunFleetSim(c, wl, "x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectClean(*r);
  EXPECT_EQ(r->remote_requests, 5u);
  EXPECT_EQ(r->cross_cluster_bytes, 5u * 4 * (512 + 8));
  EXPECT_EQ(r->cross_cluster_kv_bytes, 0u);
  ASSERT_EQ(r->completed_by_cluster.size(), 2u);
  EXPECT_EQ(r->completed_by_cluster[0], 10u);

  // The same requests on a single-cluster fleet: no RTT, nothing counted.
  SimConfig single = c;
  single.clusters.clear();
  single.region_rtt_ms.clear();
  single.cluster_links.clear();
  VectorWorkload wl2(reqs);
  auto s = RunFleetSim(single, wl2, "x");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->cross_cluster_bytes, 0u);
  // Five TTFTs are local + 0.001 s, five local + 0.100 s: the mean moves by their average.
  EXPECT_NEAR(r->ttft_s.mean - s->ttft_s.mean, (0.001 + 0.100) / 2, 1e-6);
  EXPECT_NEAR(r->ttft_s.p99 - s->ttft_s.p99, 0.100, 1e-6);
}

TEST(FleetSimClustersTest, RouterPrefersTheNearCluster) {
  SimConfig c = TwoClusters(1, 1);
  std::vector<SimRequest> reqs;
  for (uint32_t i = 0; i < 20; ++i) reqs.push_back(Req(i, i * 1.0, i % 2));
  VectorWorkload wl(reqs);
  auto r = RunFleetSim(c, wl, "kv");
  ASSERT_TRUE(r.ok());
  ExpectClean(*r);
  EXPECT_EQ(r->remote_requests, 0u);
  EXPECT_EQ(r->completed_by_cluster[0], 10u);
  EXPECT_EQ(r->completed_by_cluster[1], 10u);
}

TEST(FleetSimClustersTest, CrossClusterDisaggregatedTransferUsesTheWanLink) {
  // Prefill instance in cluster a, decode instance in cluster b, prefill allowed across clusters.
  SimConfig c = TwoClusters(0, 1);
  c.pools[0].role = router::WorkerRole::kDecode;
  PoolConfig p;
  p.role = router::WorkerRole::kPrefill;
  p.cluster = 0;
  p.kv_blocks = 4096;
  c.pools.push_back(p);
  c.disaggregation.mode = "always";
  c.cluster_local_prefill = false;
  std::vector<SimRequest> reqs = {Req(1, 0, 1, 1024, 4)};
  VectorWorkload wl(reqs);
  auto r = RunFleetSim(c, wl, "x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectClean(*r);
  ASSERT_EQ(r->remote_prefills, 1u);
  EXPECT_EQ(r->cross_cluster_kv_bytes, r->transfer_bytes);
  EXPECT_EQ(r->transfer_bytes, 1024u * 131072);
  // 134 MB over 1.25 GB/s + 50 ms before the second token: e2e far above TTFT.
  EXPECT_GT(r->e2e_s.p50 - r->ttft_s.p50, 0.05 + 1024.0 * 131072 / 1.25e9);

  // Cluster-local disaggregation: no prefill instance beside the decode one -> prefill locally.
  c.cluster_local_prefill = true;
  VectorWorkload wl2(reqs);
  auto l = RunFleetSim(c, wl2, "x");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->remote_prefills, 0u);
  EXPECT_EQ(l->cross_cluster_kv_bytes, 0u);
}

TEST(FleetSimClustersTest, ValidateRejectsBadClusterConfig) {
  SimConfig c = TwoClusters(1, 1);
  EXPECT_TRUE(c.Validate().ok());
  SimConfig bad = c;
  bad.pools[1].cluster = 2;
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.region_rtt_ms[1].pop_back();
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.cluster_links[0][1].bandwidth_gbps = 0;
  EXPECT_FALSE(bad.Validate().ok());
  // A request from a region with no RTT row is rejected, not routed blindly.
  std::vector<SimRequest> reqs = {Req(1, 0, 5)};
  VectorWorkload wl(reqs);
  auto r = RunFleetSim(c, wl, "x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rejected, 1u);
  EXPECT_NE(r->pool_errors, "");
}

TEST(FleetSimClustersTest, PrefixSeedsWarmACacheAndCountCopies) {
  // One request from region 1 at t = 1 s; its first 16 blocks (256 tokens) are copied from a
  // into b's instance at t = 0.2 s.
  const SimRequest req = Req(7, 1.0, 1);
  const std::vector<kv::BlockHash> head(req.hashes.begin(), req.hashes.begin() + 16);
  SimConfig c = TwoClusters(1, 1);
  c.prefix_seeds = {{0.2, 1, head, 0}};
  // The same chain again from a at 0.5 s: already cached in b, nothing moves.
  c.prefix_seeds.push_back({0.5, 1, head, 0});
  VectorWorkload wl({req});
  auto r = RunFleetSim(c, wl, "kv");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectClean(*r);
  EXPECT_EQ(r->completed_by_cluster[1], 1u);
  EXPECT_EQ(r->cached_prompt_tokens, 256u);
  EXPECT_EQ(r->prefix_seeds_applied, 2u);
  EXPECT_EQ(r->prefix_seeds_skipped, 0u);
  EXPECT_EQ(r->prefix_copy_blocks, 16u);
  EXPECT_EQ(r->prefix_copy_bytes, 256u * 131072);  // llama-3.1-8b KV bytes per token
  EXPECT_EQ(r->cross_cluster_bytes, r->prefix_copy_bytes);  // the request was served at home
  EXPECT_NE(SimResultJson(*r).find("\"prefix_copy_bytes\":33554432"), std::string::npos);

  // A warm start (no source) counts no bytes; without seeds nothing is cached.
  c.prefix_seeds = {{0, 1, head, PrefixSeed::kNoSource}};
  VectorWorkload wl2({req});
  auto warm = RunFleetSim(c, wl2, "kv");
  ASSERT_TRUE(warm.ok());
  EXPECT_EQ(warm->cached_prompt_tokens, 256u);
  EXPECT_EQ(warm->cross_cluster_bytes, 0u);
  c.prefix_seeds.clear();
  VectorWorkload wl3({req});
  auto cold = RunFleetSim(c, wl3, "kv");
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(cold->cached_prompt_tokens, 0u);
  EXPECT_GT(cold->ttft_s.p50, warm->ttft_s.p50);

  // A cluster with no instance: skipped, nothing counted.
  SimConfig empty_b = TwoClusters(1, 0);
  empty_b.prefix_seeds = {{0, 1, head, 0}};
  VectorWorkload wl4({req});
  auto skipped = RunFleetSim(empty_b, wl4, "kv");
  ASSERT_TRUE(skipped.ok());
  ExpectClean(*skipped);
  EXPECT_EQ(skipped->prefix_seeds_skipped, 1u);
  EXPECT_EQ(skipped->prefix_copy_bytes, 0u);

  // Bad seeds name the field.
  for (PrefixSeed bad : {PrefixSeed{-1, 1, head, 0}, PrefixSeed{0, 2, head, 0}, PrefixSeed{0, 1, head, 5},
                         PrefixSeed{0, 1, {}, 0}}) {
    c.prefix_seeds = {bad};
    const Status v = c.Validate();
    EXPECT_FALSE(v.ok());
    EXPECT_NE(v.message().find("prefix_seeds[0]"), std::string::npos) << v.ToString();
  }
}

TEST(PlacementSimTest, PrefixSeedsFollowTheHeatAndTheDecisions) {
  PlacementScenario s = SmallScenario();
  auto in = PlacementInputFor(s, "cache-locality");
  ASSERT_TRUE(in.ok()) << in.status().ToString();
  auto placed = placement::Place(*in);
  ASSERT_TRUE(placed.ok());
  // Add one replicate decision by hand: the first root from its home into the next cluster.
  const placement::PrefixHeat& h = in->heat[0];
  ASSERT_FALSE(h.blocks.empty());
  const std::string home = h.cached_bytes.begin()->first;
  size_t home_index = 0;
  while (s.clusters[home_index].name != home) ++home_index;
  const size_t target = (home_index + 1) % s.clusters.size();
  placement::PlacementResult result = *placed;
  result.prefixes.push_back({h.root, placement::PrefixAction::kReplicate, home, s.clusters[target].name,
                             1, 0.25, 0.25 / 300, "test"});
  std::vector<PrefixSeed> seeds = PrefixSeedsFor(s, *in, result);
  size_t copies = 0;
  ASSERT_EQ(seeds.size(), in->heat.size() + 1 + std::count_if(placed->prefixes.begin(), placed->prefixes.end(),
                                                               [](const placement::PrefixDecision& d) {
                                                                 return d.action == placement::PrefixAction::kReplicate;
                                                               }));
  for (const PrefixSeed& seed : seeds) {
    if (seed.from_cluster == PrefixSeed::kNoSource) {
      EXPECT_EQ(seed.at_s, 0);
      continue;
    }
    if (seed.hashes != h.blocks || seed.cluster != target) continue;
    ++copies;
    EXPECT_EQ(seed.from_cluster, home_index);
    EXPECT_EQ(seed.at_s, 0.25);
  }
  EXPECT_EQ(copies, 1u);
  // The home seed of that root carries its chain, in its home cluster.
  EXPECT_TRUE(std::any_of(seeds.begin(), seeds.end(), [&](const PrefixSeed& seed) {
    return seed.from_cluster == PrefixSeed::kNoSource && seed.cluster == home_index && seed.hashes == h.blocks;
  }));
  s.warm_homes = false;
  s.execute_copies = false;
  EXPECT_TRUE(PrefixSeedsFor(s, *in, result).empty());
}

int RunPlacementCli(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunSimPlacementCommand(argv);
}

TEST(PlacementSimTest, CommandLine) {
  EXPECT_EQ(RunPlacementCli({"--policies", "spread", "--bogus", "1"}), 2);
  EXPECT_EQ(RunPlacementCli({"--policies", "nowhere", "--requests", "10"}), 2);
  EXPECT_EQ(RunPlacementCli({"--policies", "spread", "--requests", "50", "--regions", "us-east:2,eu-west:2",
                             "--decode", "2"}),
            0);
}

}  // namespace
}  // namespace kvmesh::sim
