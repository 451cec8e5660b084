// ComputeStatus: conditions and reasons for each state of a graph, lastTransitionTime kept while
// a condition's status holds (unchanged world => identical status => no write), the degraded
// grace measured with an injected time, and fields other writers own kept.
#include "operator/controller/status.h"

#include <gtest/gtest.h>

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

SystemTime T0() { return *ParseRfc3339("2026-11-30T06:00:00Z"); }

OwnedGraph Graph(int prefill = 1, int decode = 2) {
  OwnedGraph og;
  og.graph = graph::DefaultLocalGraph();
  og.graph.spec.prefill.replicas = prefill;
  og.graph.spec.decode.replicas = decode;
  og.meta.name = "g";
  og.meta.namespace_ = "ns";
  og.meta.uid = "u";
  og.meta.generation = 4;
  return og;
}

json Cond(const json& status, const std::string& type) { return FindCondition(status, type); }

StatusResult Compute(const OwnedGraph& og, std::map<std::string, int32_t> ready, const json& prev, SystemTime now,
                     std::vector<json> deployments = {}, std::string write_error = "") {
  StatusInput in;
  in.graph = &og;
  in.ready = std::move(ready);
  in.previous = prev;
  in.now = now;
  in.deployments = std::move(deployments);
  in.write_error = std::move(write_error);
  StatusOptions o;
  o.degraded_grace = seconds(300);
  return ComputeStatus(in, o);
}

TEST(StatusTest, FreshGraphIsPendingAndProgressing) {
  OwnedGraph og = Graph();
  StatusResult r = Compute(og, {}, nullptr, T0());
  const json& s = r.status;
  EXPECT_EQ(s["phase"], "Pending");
  EXPECT_EQ(s["observedGeneration"], 4);
  EXPECT_EQ(s["routerEndpoint"], "http://g-router.ns.svc:8000");
  EXPECT_EQ(s["prefill"], json::parse(R"({"replicas":1,"readyReplicas":0})"));
  EXPECT_EQ(s["decode"], json::parse(R"({"replicas":2,"readyReplicas":0})"));
  EXPECT_EQ(Cond(s, "Available")["status"], "False");
  EXPECT_EQ(Cond(s, "Available")["reason"], "RouterUnavailable");
  EXPECT_EQ(Cond(s, "Progressing")["status"], "True");
  EXPECT_EQ(Cond(s, "Progressing")["reason"], "RolloutInProgress");
  EXPECT_EQ(Cond(s, "Degraded")["status"], "False");
  EXPECT_EQ(Cond(s, "Available")["lastTransitionTime"], "2026-11-30T06:00:00Z");
  EXPECT_EQ(Cond(s, "Available")["observedGeneration"], 4);
  ASSERT_TRUE(r.recheck_after.has_value());
  EXPECT_EQ(*r.recheck_after, seconds(300));
}

TEST(StatusTest, AllPoolsReadyIsAvailableAndStable) {
  OwnedGraph og = Graph();
  json s0 = Compute(og, {}, nullptr, T0()).status;
  StatusResult r = Compute(og, {{"router", 1}, {"prefill", 1}, {"decode", 2}}, s0, T0() + seconds(40));
  const json& s = r.status;
  EXPECT_EQ(s["phase"], "Ready");
  EXPECT_EQ(Cond(s, "Available")["status"], "True");
  EXPECT_EQ(Cond(s, "Available")["reason"], "AllPoolsReady");
  EXPECT_EQ(Cond(s, "Available")["lastTransitionTime"], "2026-11-30T06:00:40Z");
  EXPECT_EQ(Cond(s, "Progressing")["status"], "False");
  EXPECT_EQ(Cond(s, "Progressing")["reason"], "RolloutComplete");
  EXPECT_EQ(Cond(s, "Degraded")["status"], "False");
  // Degraded stayed False: its transition time is the first one.
  EXPECT_EQ(Cond(s, "Degraded")["lastTransitionTime"], "2026-11-30T06:00:00Z");
  EXPECT_FALSE(r.recheck_after.has_value());
  // An unchanged world an hour later: byte-identical status (so no write).
  json again = Compute(og, {{"router", 1}, {"prefill", 1}, {"decode", 2}}, json::parse(s.dump()),
                       T0() + seconds(3600)).status;
  EXPECT_EQ(again.dump(), s.dump());
}

TEST(StatusTest, PartialIsAvailableWithMinimumReplicas) {
  OwnedGraph og = Graph();
  json s = Compute(og, {{"router", 1}, {"decode", 1}}, nullptr, T0()).status;
  EXPECT_EQ(Cond(s, "Available")["status"], "True");
  EXPECT_EQ(Cond(s, "Available")["reason"], "MinimumReplicasAvailable");
  EXPECT_EQ(Cond(s, "Progressing")["status"], "True");
  EXPECT_EQ(s["phase"], "Ready");
  EXPECT_NE(Cond(s, "Available")["message"].get<std::string>().find("decode 1/2"), std::string::npos);
  json no_decode = Compute(og, {{"router", 1}, {"prefill", 1}}, nullptr, T0()).status;
  EXPECT_EQ(Cond(no_decode, "Available")["reason"], "NoDecodeWorkers");
}

TEST(StatusTest, EmptyPoolBecomesDegradedAfterGrace) {
  OwnedGraph og = Graph();
  json ok = Compute(og, {{"router", 1}, {"prefill", 1}, {"decode", 2}}, nullptr, T0()).status;
  // The decode pool loses every pod at T0+100.
  StatusResult r1 = Compute(og, {{"router", 1}, {"prefill", 1}}, ok, T0() + seconds(100));
  EXPECT_EQ(Cond(r1.status, "Degraded")["status"], "False");
  EXPECT_EQ(Cond(r1.status, "Progressing")["status"], "True");
  EXPECT_EQ(Cond(r1.status, "Progressing")["lastTransitionTime"], "2026-11-30T06:01:40Z");
  ASSERT_TRUE(r1.recheck_after.has_value());
  EXPECT_EQ(*r1.recheck_after, seconds(300));
  StatusResult r2 = Compute(og, {{"router", 1}, {"prefill", 1}}, r1.status, T0() + seconds(399));
  EXPECT_EQ(Cond(r2.status, "Degraded")["status"], "False");
  EXPECT_EQ(*r2.recheck_after, seconds(1));
  StatusResult r3 = Compute(og, {{"router", 1}, {"prefill", 1}}, r2.status, T0() + seconds(400));
  EXPECT_EQ(Cond(r3.status, "Degraded")["status"], "True");
  EXPECT_EQ(Cond(r3.status, "Degraded")["reason"], "PoolUnavailable");
  EXPECT_NE(Cond(r3.status, "Degraded")["message"].get<std::string>().find("decode"), std::string::npos);
  EXPECT_EQ(r3.status["phase"], "Degraded");
  EXPECT_FALSE(r3.recheck_after.has_value());
  // Staying degraded later: identical status.
  json r4 = Compute(og, {{"router", 1}, {"prefill", 1}}, r3.status, T0() + seconds(900)).status;
  EXPECT_EQ(r4.dump(), r3.status.dump());
  // Recovery clears it.
  json r5 = Compute(og, {{"router", 1}, {"prefill", 1}, {"decode", 2}}, r4, T0() + seconds(950)).status;
  EXPECT_EQ(Cond(r5, "Degraded")["status"], "False");
  EXPECT_EQ(r5["phase"], "Ready");
}

TEST(StatusTest, RolloutPendingDeploymentKeepsProgressing) {
  OwnedGraph og = Graph();
  json dep = {{"metadata", {{"name", "g-decode"}, {"generation", 3}}},
              {"spec", {{"replicas", 2}}},
              {"status", {{"observedGeneration", 2}, {"replicas", 2}, {"updatedReplicas", 2}}}};
  std::map<std::string, int32_t> all = {{"router", 1}, {"prefill", 1}, {"decode", 2}};
  EXPECT_EQ(Cond(Compute(og, all, nullptr, T0(), {dep}).status, "Progressing")["status"], "True");
  dep["status"]["observedGeneration"] = 3;
  dep["status"]["updatedReplicas"] = 1;
  EXPECT_EQ(Cond(Compute(og, all, nullptr, T0(), {dep}).status, "Progressing")["status"], "True");
  dep["status"]["updatedReplicas"] = 2;
  dep["status"]["replicas"] = 3;  // an old pod still terminating
  EXPECT_EQ(Cond(Compute(og, all, nullptr, T0(), {dep}).status, "Progressing")["status"], "True");
  dep["status"]["replicas"] = 2;
  EXPECT_EQ(Cond(Compute(og, all, nullptr, T0(), {dep}).status, "Progressing")["status"], "False");
}

TEST(StatusTest, WriteErrorIsDegradedAtOnce) {
  OwnedGraph og = Graph();
  json s = Compute(og, {{"router", 1}, {"prefill", 1}, {"decode", 2}}, nullptr, T0(), {},
                   "apply Deployment g-decode: forbidden").status;
  EXPECT_EQ(Cond(s, "Degraded")["status"], "True");
  EXPECT_EQ(Cond(s, "Degraded")["reason"], "ChildWriteFailed");
  EXPECT_EQ(Cond(s, "Degraded")["message"], "apply Deployment g-decode: forbidden");
  EXPECT_EQ(s["phase"], "Degraded");
}

TEST(StatusTest, NoPrefillPoolWhenDisaggregationOff) {
  OwnedGraph og = Graph(0, 1);
  og.graph.spec.disaggregation.mode = "off";
  json s = Compute(og, {{"router", 1}, {"decode", 1}, {"prefill", 3}}, nullptr, T0()).status;
  EXPECT_EQ(s["prefill"], json::parse(R"({"replicas":0,"readyReplicas":0})"));
  EXPECT_EQ(Cond(s, "Available")["reason"], "AllPoolsReady");
}

TEST(StatusTest, ForeignFieldsAndConditionsAreKept) {
  OwnedGraph og = Graph();
  json prev = {{"cacheHitRatio", 0.5},
               {"conditions", json::array({{{"type", "PlannerActive"}, {"status", "True"}}})}};
  json s = Compute(og, {}, prev, T0()).status;
  EXPECT_EQ(s["cacheHitRatio"], 0.5);
  ASSERT_EQ(s["conditions"].size(), 4u);
  EXPECT_EQ(s["conditions"][3]["type"], "PlannerActive");
}

TEST(StatusTest, InvalidSpecAndDeleting) {
  GraphMeta m;
  m.name = "g";
  m.generation = 9;
  json s = InvalidSpecStatus(m, "spec.decode.replicas: must be >= 1", nullptr, T0());
  EXPECT_EQ(s["phase"], "Degraded");
  EXPECT_EQ(s["observedGeneration"], 9);
  for (const char* t : {"Available", "Progressing", "Degraded"}) {
    EXPECT_EQ(Cond(s, t)["reason"], "InvalidSpec");
    EXPECT_EQ(Cond(s, t)["message"], "spec.decode.replicas: must be >= 1");
  }
  EXPECT_EQ(Cond(s, "Degraded")["status"], "True");
  EXPECT_EQ(InvalidSpecStatus(m, "spec.decode.replicas: must be >= 1", s, T0() + seconds(5)), s);
  json d = DeletingStatus(m, "draining", s, T0() + seconds(10));
  EXPECT_EQ(d["phase"], "Deleting");
  EXPECT_EQ(Cond(d, "Progressing")["reason"], "Draining");
  EXPECT_EQ(Cond(d, "Available")["lastTransitionTime"], "2026-11-30T06:00:00Z");  // was False already
}

TEST(StatusTest, Rfc3339) {
  EXPECT_EQ(FormatRfc3339(T0()), "2026-11-30T06:00:00Z");
  EXPECT_EQ(ParseRfc3339("2026-11-30T07:00:00+01:00"), T0());
  EXPECT_EQ(ParseRfc3339("2026-11-30T06:00:00.123456Z"), T0());
  EXPECT_FALSE(ParseRfc3339("yesterday").has_value());
  EXPECT_FALSE(ParseRfc3339("2026-11-30T06:00:00").has_value());
}

TEST(StatusTest, ReadyPodCounts) {
  auto pod = [](const std::string& component, bool ready, bool deleting) {
    json p = {{"metadata", {{"labels", {{"app.kubernetes.io/component", component}}}}},
              {"status", {{"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}}}};
    if (deleting) p["metadata"]["deletionTimestamp"] = "2026-11-30T06:00:00Z";
    return p;
  };
  auto c = ReadyPodCounts({pod("router", true, false), pod("decode", true, false), pod("decode", true, false),
                           pod("decode", false, false), pod("prefill", true, true)});
  EXPECT_EQ(c["router"], 1);
  EXPECT_EQ(c["decode"], 2);
  EXPECT_EQ(c.count("prefill"), 0u);
}

}  // namespace
}  // namespace kvmesh::controller
