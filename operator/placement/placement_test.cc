#include "operator/placement/placement.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>

namespace kvmesh::placement {
namespace {

constexpr double kKvBytesPerToken = 320 * 1024;  // Llama-3.1-70B, bf16

int32_t Prefill(const PlacementResult& r, const std::string& c) { return r.Find(c)->prefill_replicas; }
int32_t Decode(const PlacementResult& r, const std::string& c) { return r.Find(c)->decode_replicas; }

PlacementResult MustPlace(const PlacementInput& in) {
  auto r = Place(in);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : PlacementResult{};
}

// Every result: capacity respected, replicas conserved, prefill only beside decode.
void ExpectInvariants(const PlacementInput& in, const PlacementResult& r) {
  ASSERT_EQ(r.clusters.size(), in.clusters.size());
  int32_t prefill = r.unplaced_prefill, decode = r.unplaced_decode;
  for (size_t i = 0; i < in.clusters.size(); ++i) {
    const ClusterShare& s = r.clusters[i];
    EXPECT_EQ(s.cluster, in.clusters[i].name);
    EXPECT_EQ(s.gpus_used, s.prefill_replicas * in.pools.prefill_gpus_per_replica +
                               s.decode_replicas * in.pools.decode_gpus_per_replica);
    if (s.gpus_used > 0) {
      EXPECT_LE(s.gpus_used, in.clusters[i].gpu_capacity) << s.cluster;
    }
    if (s.prefill_replicas > 0) {
      EXPECT_GT(s.decode_replicas, 0) << s.cluster << ": prefill without decode";
    }
    if (!in.clusters[i].healthy) {
      EXPECT_EQ(s.prefill_replicas + s.decode_replicas, 0) << s.cluster;
    }
    prefill += s.prefill_replicas;
    decode += s.decode_replicas;
  }
  EXPECT_EQ(prefill, in.pools.prefill_replicas);
  EXPECT_EQ(decode, in.pools.decode_replicas);
  if (r.unplaced_prefill + r.unplaced_decode > 0) {
    EXPECT_FALSE(r.notes.empty());
  }
}

PlacementInput Clusters(std::vector<int32_t> caps) {
  PlacementInput in;
  const char* names[] = {"east", "west", "ap"};
  const char* regions[] = {"us-east", "eu-west", "ap-south"};
  for (size_t i = 0; i < caps.size(); ++i) in.clusters.push_back({names[i], regions[i], caps[i], true});
  in.links = {{"east", "west", 100, 40}};
  if (caps.size() > 2) in.links.insert(in.links.end(), {{"east", "ap", 10, 90}, {"west", "ap", 10, 80}});
  return in;
}

PrefixHeat Root(const std::string& name, double tokens, std::map<std::string, double> cached_fraction,
                std::map<std::string, double> rate) {
  PrefixHeat h{name, tokens, tokens * kKvBytesPerToken, {}, std::move(rate), {}};
  for (const auto& [c, f] : cached_fraction) h.cached_bytes[c] = f * h.bytes;
  return h;
}

TEST(PlacementTest, SinglePutsEverythingInTheFirstClusterUpToItsCapacity) {
  PlacementInput in = Clusters({4, 8});
  in.policy = "single";
  in.pools = {2, 4, 1, 1};
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  EXPECT_EQ(Decode(r, "east") + Prefill(r, "east"), 4);
  EXPECT_EQ(Decode(r, "west") + Prefill(r, "west"), 0);
  EXPECT_EQ(r.unplaced_decode + r.unplaced_prefill, 2);
  bool noted = false;
  for (const std::string& n : r.notes) noted |= n.find("fit in no cluster") != std::string::npos;
  EXPECT_TRUE(noted) << PlacementResultToJson(r);
}

TEST(PlacementTest, PackFillsClustersInOrderAndKeepsPrefillBesideDecode) {
  PlacementInput in = Clusters({4, 4, 4});
  in.policy = "pack";
  in.pools = {2, 4, 1, 1};
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  // Order D P D D | P D: east is full after four; the second prefill waits for west's decode.
  EXPECT_EQ(Decode(r, "east"), 3);
  EXPECT_EQ(Prefill(r, "east"), 1);
  EXPECT_EQ(Decode(r, "west"), 1);
  EXPECT_EQ(Prefill(r, "west"), 1);
  EXPECT_EQ(Decode(r, "ap") + Prefill(r, "ap"), 0);
  EXPECT_EQ(r.unplaced_decode + r.unplaced_prefill, 0);
}

TEST(PlacementTest, SpreadIsProportionalToCapacity) {
  PlacementInput in = Clusters({4, 4, 4});
  in.policy = "spread";
  in.pools = {3, 3, 1, 1};
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  for (const char* c : {"east", "west", "ap"}) {
    EXPECT_EQ(Decode(r, c), 1) << c;
    EXPECT_EQ(Prefill(r, c), 1) << c;
  }
  in = Clusters({8, 4, 4});
  in.policy = "spread";
  in.pools = {2, 4, 1, 1};
  r = MustPlace(in);
  ExpectInvariants(in, r);
  EXPECT_EQ(Decode(r, "east"), 2);  // D'Hondt 8:4:4 over 4 seats
  EXPECT_EQ(Decode(r, "west"), 1);
  EXPECT_EQ(Decode(r, "ap"), 1);
  EXPECT_EQ(Prefill(r, "east"), 2);  // 2 seats over 8:4 (ap's decode came last): east, then tie -> east
}

TEST(PlacementTest, CapacityIsNeverExceededForAnyPolicy) {
  uint64_t seed = 12345;
  auto next = [&](uint64_t mod) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>((seed >> 33) % mod);
  };
  for (int round = 0; round < 60; ++round) {
    for (const char* policy : {"single", "spread", "pack", "cache-locality"}) {
      PlacementInput in = Clusters({next(7), next(7), next(7)});
      in.policy = policy;
      in.pools = {next(6), next(8), next(3), next(3)};
      in.clusters[1].healthy = next(4) != 0;
      in.demand = {{"us-east", 1.0 * next(10), 3000, 150}, {"eu-west", 1.0 * next(10), 1000, 300}};
      in.heat = {Root("r" + std::to_string(round), 1024, {{"west", 1.0}}, {{"eu-west", 1.0 * next(3)}})};
      SCOPED_TRACE(std::string(policy) + " round " + std::to_string(round));
      ExpectInvariants(in, MustPlace(in));
    }
  }
}

TEST(PlacementTest, UnhealthyClusterGetsNothingAndItsShareMoves) {
  PlacementInput in = Clusters({4, 4, 4});
  in.policy = "spread";
  in.pools = {3, 3, 1, 1};
  in.clusters[2].healthy = false;
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  EXPECT_EQ(Decode(r, "ap") + Prefill(r, "ap"), 0);
  EXPECT_EQ(Decode(r, "east") + Decode(r, "west"), 3);
  EXPECT_EQ(Prefill(r, "east") + Prefill(r, "west"), 3);
}

// Most traffic comes from eu-west and its hot system prompt lives in west.
PlacementInput WestHeavy() {
  PlacementInput in = Clusters({8, 8, 8});
  in.policy = "cache-locality";
  in.pools = {2, 4, 1, 1};
  in.model.prefill_tokens_per_s = 10000;
  in.demand = {{"us-east", 1, 3000, 150}, {"eu-west", 8, 3000, 150}, {"ap-south", 0.5, 3000, 150}};
  in.heat = {Root("sys-west", 2048, {{"west", 1.0}}, {{"eu-west", 6}})};
  return in;
}

TEST(PlacementTest, CacheLocalityPutsReplicasWhereTheHeatAndDemandAre) {
  PlacementInput in = WestHeavy();
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  EXPECT_GT(Decode(r, "west"), Decode(r, "east")) << PlacementResultToJson(r);
  EXPECT_GT(Decode(r, "west"), Decode(r, "ap")) << PlacementResultToJson(r);
  EXPECT_GE(Prefill(r, "west"), 1) << PlacementResultToJson(r);
  ASSERT_EQ(r.prefixes.size(), 1u);
  EXPECT_EQ(r.prefixes[0].action, PrefixAction::kServeInPlace) << r.prefixes[0].reason;
  EXPECT_EQ(r.prefixes[0].source, "west");

  // The same demand from us-east with the prefix in east mirrors the placement.
  in.demand = {{"us-east", 8, 3000, 150}, {"eu-west", 1, 3000, 150}, {"ap-south", 0.5, 3000, 150}};
  in.heat = {Root("sys-east", 2048, {{"east", 1.0}}, {{"us-east", 6}})};
  r = MustPlace(in);
  ExpectInvariants(in, r);
  EXPECT_GT(Decode(r, "east"), Decode(r, "west")) << PlacementResultToJson(r);
}

TEST(PlacementTest, CacheLocalityIsDeterministic) {
  PlacementInput in = WestHeavy();
  const std::string first = PlacementResultToJson(MustPlace(in));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PlacementResultToJson(MustPlace(in)), first);
}

TEST(PlacementTest, CacheLocalityWithoutDemandFallsBackToSpread) {
  PlacementInput in = Clusters({4, 4, 4});
  in.policy = "cache-locality";
  in.pools = {3, 3, 1, 1};
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  for (const char* c : {"east", "west", "ap"}) EXPECT_EQ(Decode(r, c), 1) << c;
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("placed as spread"), std::string::npos);
}

// A long document (8k tokens, 2.7 GB of KV) cached in east, asked for from eu-west and ap-south.
// east<->west is 100 Gbps; east<->ap `ap_gbps`; west<->ap has no link.
PlacementInput HotDocument(double ap_gbps) {
  PlacementInput in = Clusters({8, 8, 8});
  in.links = {{"east", "west", 100, 40}, {"east", "ap", ap_gbps, 120}};
  in.policy = "cache-locality";
  in.pools = {0, 3, 0, 1};
  in.demand = {{"eu-west", 2, 8692, 200}, {"ap-south", 2, 8692, 200}};
  in.heat = {Root("doc", 8192, {{"east", 1.0}}, {{"eu-west", 2}, {"ap-south", 2}})};
  return in;
}

TEST(PlacementTest, ReplicatesAHotPrefixOverAFastLinkButNotOverASlowOne) {
  PlacementInput in = HotDocument(0.1);
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  bool to_west = false, to_ap = false;
  for (const PrefixDecision& d : r.prefixes) {
    if (d.action != PrefixAction::kReplicate) continue;
    EXPECT_EQ(d.source, "east");
    EXPECT_GT(d.gain_s_per_s, d.cost_s_per_s) << d.reason;
    EXPECT_NEAR(d.cost_s_per_s, d.transfer_s / in.model.replication_window_s, 1e-12);
    to_west |= d.target == "west";
    to_ap |= d.target == "ap";
  }
  EXPECT_TRUE(to_west) << PlacementResultToJson(r);
  EXPECT_FALSE(to_ap) << PlacementResultToJson(r);

  // Only ap asks for it and west has no room: no copy over the slow link, and the reason gives
  // the numbers.
  in.clusters[1].gpu_capacity = 0;
  in.demand = {{"ap-south", 2, 8692, 200}};
  in.heat = {Root("doc", 8192, {{"east", 1.0}}, {{"ap-south", 2}})};
  r = MustPlace(in);
  ASSERT_EQ(r.prefixes.size(), 1u) << PlacementResultToJson(r);
  const PrefixDecision& d = r.prefixes[0];
  EXPECT_EQ(d.action, PrefixAction::kServeInPlace);
  EXPECT_EQ(d.target, "ap");
  EXPECT_GT(d.cost_s_per_s, d.gain_s_per_s);
  EXPECT_GT(d.gain_s_per_s, 0);
  // 2.68 GB at 0.1 Gbps: ~215 s per copy.
  EXPECT_NEAR(d.transfer_s, 8192 * kKvBytesPerToken * 8 / 0.1e9 + 0.12, 1e-6);
  EXPECT_NE(d.reason.find("more than the"), std::string::npos) << d.reason;

  // The same demand over a fast east<->ap link: copied.
  in.links = {{"east", "west", 100, 40}, {"east", "ap", 100, 120}};
  r = MustPlace(in);
  ASSERT_EQ(r.prefixes.size(), 1u) << PlacementResultToJson(r);
  EXPECT_EQ(r.prefixes[0].action, PrefixAction::kReplicate) << r.prefixes[0].reason;
  EXPECT_EQ(r.prefixes[0].target, "ap");
}

TEST(PlacementTest, ColdRootsAreNotReportedAndUncachedHotRootsAreLeft) {
  PlacementInput in = HotDocument(100);
  in.heat.push_back(Root("cold", 512, {{"west", 1.0}}, {{"eu-west", 0.01}}));
  in.heat.push_back(Root("nowhere", 512, {}, {{"eu-west", 1}}));
  PlacementResult r = MustPlace(in);
  bool cold = false, nowhere = false;
  for (const PrefixDecision& d : r.prefixes) {
    cold |= d.root == "cold";
    if (d.root == "nowhere") {
      nowhere = true;
      EXPECT_EQ(d.action, PrefixAction::kLeave);
    }
  }
  EXPECT_FALSE(cold);
  EXPECT_TRUE(nowhere);
}

// Three regions with regional demand, each region's system prompt cached at home, and one shared
// document cached in east that every region reads.
PlacementInput MultiRegion(const std::string& policy) {
  PlacementInput in = Clusters({8, 8, 8});
  in.policy = policy;
  in.pools = {4, 8, 1, 1};
  in.model.prefill_tokens_per_s = 8000;
  in.demand = {{"us-east", 6, 3000, 150}, {"eu-west", 3, 3000, 150}, {"ap-south", 1, 3000, 150}};
  in.heat = {Root("east-sys", 2048, {{"east", 1.0}}, {{"us-east", 4}}),
             Root("west-sys", 2048, {{"west", 1.0}}, {{"eu-west", 1.5}}),
             Root("shared-doc", 2048, {{"east", 1.0}}, {{"us-east", 1}, {"eu-west", 1}, {"ap-south", 0.5}})};
  return in;
}

TEST(PlacementTest, CacheLocalityBeatsSpreadOnTtftAndCrossClusterBytes) {
  const PlacementInput cl_in = MultiRegion("cache-locality");
  const PlacementInput spread_in = MultiRegion("spread");
  const PlacementResult cl = MustPlace(cl_in);
  const PlacementResult spread = MustPlace(spread_in);
  ExpectInvariants(cl_in, cl);
  ExpectInvariants(spread_in, spread);
  const PlacementScore a = Evaluate(cl_in, cl);
  const PlacementScore b = Evaluate(spread_in, spread);
  EXPECT_EQ(a.unserved_rate, 0);
  EXPECT_EQ(b.unserved_rate, 0);
  EXPECT_LT(a.mean_ttft_s, b.mean_ttft_s) << PlacementResultToJson(cl) << PlacementResultToJson(spread);
  EXPECT_LT(a.cross_cluster_bytes_per_s, b.cross_cluster_bytes_per_s);
  std::cout << "cache-locality: mean TTFT " << a.mean_ttft_s * 1000 << " ms, cross-cluster "
            << a.cross_cluster_bytes_per_s / 1e6 << " MB/s, remote " << a.remote_request_ratio << "\n"
            << "spread:         mean TTFT " << b.mean_ttft_s * 1000 << " ms, cross-cluster "
            << b.cross_cluster_bytes_per_s / 1e6 << " MB/s, remote " << b.remote_request_ratio << "\n";
  // The single-cluster baseline is worse still on TTFT (everything served from east).
  PlacementInput single_in = MultiRegion("single");
  single_in.clusters[0].gpu_capacity = 12;
  EXPECT_LT(a.mean_ttft_s, Evaluate(single_in, MustPlace(single_in)).mean_ttft_s);
}

TEST(PlacementTest, EvaluateCountsUnservedDemand) {
  PlacementInput in = MultiRegion("spread");
  PlacementResult empty;
  for (const Cluster& c : in.clusters) empty.clusters.push_back({c.name, 0, 0, 0, c.gpu_capacity});
  const PlacementScore s = Evaluate(in, empty);
  EXPECT_NEAR(s.unserved_rate, 10, 1e-9);
  EXPECT_NEAR(s.mean_ttft_s, in.model.unserved_penalty_s, 1e-9);
}

// The M/M/1 prefill term by pool layout: one cluster, 10 req/s of 1,000-token prompts and
// 100-token outputs, replica rates 20,000 prefill / 2,500 decode tokens/s (decode utilization
// 1,000 / 10,000 = 0.1 with four decode-capable replicas). Service 0.05 s, RTT 1 ms.
TEST(PlacementTest, EvaluateGivesAggregatedReplicasTheirFullPrefillRate) {
  PlacementInput in = Clusters({8});
  in.demand = {{"us-east", 10, 1000, 100}};
  auto mean_ttft = [&](int32_t prefill, int32_t decode) {
    in.pools = {prefill, decode, 1, 1};
    PlacementResult r;
    r.clusters.push_back({"east", prefill, decode, prefill + decode, 8});
    return Evaluate(in, r).mean_ttft_s;
  };
  // Aggregated (no prefill pool): 4 x (1 - 0.1) x 20,000 = 72,000 tokens/s, rho = 10,000 / 72,000.
  const double rho_agg = 10000.0 / 72000;
  EXPECT_NEAR(mean_ttft(0, 4), 0.001 + 0.05 * rho_agg / (1 - rho_agg) + 0.05, 1e-9);
  // Disaggregated 2 + 2: (2 + 0.25 x 2) x 20,000 = 50,000 tokens/s (decode workers take only
  // short or overflow prompts), rho = 0.2.
  EXPECT_NEAR(mean_ttft(2, 2), 0.001 + 0.05 * 0.2 / 0.8 + 0.05, 1e-9);
}

TEST(PlacementTest, RejectsBadInput) {
  PlacementInput in = Clusters({4, 4});
  in.policy = "random";
  EXPECT_EQ(Place(in).status().code(), StatusCode::kInvalidArgument);
  in.policy = "spread";
  in.clusters.clear();
  EXPECT_EQ(Place(in).status().code(), StatusCode::kInvalidArgument);
  in = Clusters({4, 4});
  in.clusters[1].name = "east";
  EXPECT_NE(Place(in).status().message().find("duplicate"), std::string::npos);
  in = Clusters({4, 4});
  in.pools.decode_replicas = -1;
  EXPECT_FALSE(Place(in).ok());
  in = Clusters({4, 4});
  in.links.push_back({"east", "mars", 1, 1});
  EXPECT_NE(Place(in).status().message().find("mars"), std::string::npos);
}

TEST(PlacementTest, InputFromGraphReadsThePlacementSpecIncludingPack) {
  auto g = graph::ParseInferenceGraphYaml(R"(apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata: {name: llama}
spec:
  prefill: {replicas: 2, gpusPerWorker: 1}
  decode: {replicas: 3, gpusPerWorker: 2}
  placement:
    policy: pack
    clusters:
      - {name: east, kubeconfigSecret: east-kc, region: us-east-1, gpuCapacity: 4}
      - {name: west, kubeconfigSecret: west-kc, region: us-west-2, gpuCapacity: 8}
    links:
      - {from: east, to: west, bandwidthGbps: 100, latencyMs: 35}
    model: {prefillTokensPerS: 1500}
)");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  PlacementInput in = InputFromGraph(*g);
  EXPECT_EQ(in.policy, "pack");
  // spec.placement.model: a rate that is set replaces the default; the others keep theirs.
  EXPECT_DOUBLE_EQ(in.model.prefill_tokens_per_s, 1500);
  EXPECT_DOUBLE_EQ(in.model.decode_tokens_per_s, PlacementModel{}.decode_tokens_per_s);
  EXPECT_DOUBLE_EQ(in.model.replication_window_s, PlacementModel{}.replication_window_s);
  ASSERT_EQ(in.clusters.size(), 2u);
  EXPECT_EQ(in.clusters[1].gpu_capacity, 8);
  EXPECT_EQ(in.pools.prefill_replicas, 2);
  EXPECT_EQ(in.pools.decode_gpus_per_replica, 2);
  ASSERT_EQ(in.links.size(), 1u);
  PlacementResult r = MustPlace(in);
  ExpectInvariants(in, r);
  // Pack: D(2) P(1) -> east has 1 GPU left: no decode fits; P goes next to it.
  EXPECT_EQ(Decode(r, "east"), 1);
  EXPECT_EQ(Prefill(r, "east"), 2);
  EXPECT_EQ(Decode(r, "west"), 2);
}

}  // namespace
}  // namespace kvmesh::placement
