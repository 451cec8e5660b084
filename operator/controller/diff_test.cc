// NeedsApply: an object the API server stored and decorated (resourceVersion, uid, managedFields,
// status, defaulted fields, canonical quantities) needs no apply; any change to a field the
// operator sets does.
#include "operator/controller/diff.h"

#include <gtest/gtest.h>

#include "operator/controller/desired_state.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

// What kube-apiserver adds to the objects the operator applies (defaults of apps/v1, v1 and
// policy/v1 types, metadata, status).
json Decorate(json o) {
  json& md = o["metadata"];
  md["uid"] = "6f1c0e4a-0000-4000-8000-000000000001";
  md["resourceVersion"] = "12345";
  md["generation"] = 2;
  md["creationTimestamp"] = "2026-11-30T06:00:00Z";
  md["managedFields"] = json::array({{{"manager", "kvmesh-operator"}, {"operation", "Apply"},
                                      {"apiVersion", o["apiVersion"]}, {"fieldsType", "FieldsV1"},
                                      {"fieldsV1", {{"f:metadata", json::object()}}}}});
  md["annotations"] = {{"deployment.kubernetes.io/revision", "1"}};
  const std::string kind = o["kind"];
  if (kind == "Deployment") {
    json& spec = o["spec"];
    spec["progressDeadlineSeconds"] = 600;
    spec["revisionHistoryLimit"] = 10;
    spec["strategy"] = {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxSurge", "25%"}, {"maxUnavailable", "25%"}}}};
    json& pod = spec["template"]["spec"];
    pod["dnsPolicy"] = "ClusterFirst";
    pod["restartPolicy"] = "Always";
    pod["schedulerName"] = "default-scheduler";
    for (json& c : pod["containers"]) {
      c["terminationMessagePath"] = "/dev/termination-log";
      c["terminationMessagePolicy"] = "File";
      for (const char* p : {"readinessProbe", "livenessProbe", "startupProbe"}) {
        c[p]["successThreshold"] = 1;
        c[p]["httpGet"]["scheme"] = "HTTP";
      }
      for (json& e : c["env"]) {
        if (e.contains("valueFrom")) e["valueFrom"]["fieldRef"]["apiVersion"] = "v1";
      }
    }
    for (json& v : pod["volumes"]) {
      if (v.contains("configMap")) v["configMap"]["defaultMode"] = 420;
      if (v.contains("secret")) v["secret"]["defaultMode"] = 420;
    }
    o["status"] = {{"observedGeneration", 2}, {"replicas", 1}, {"readyReplicas", 1}, {"updatedReplicas", 1}};
  } else if (kind == "Service") {
    json& spec = o["spec"];
    if (!spec.contains("clusterIP")) spec["clusterIP"] = "10.96.0.17";
    spec["clusterIPs"] = json::array({spec["clusterIP"]});
    spec["ipFamilies"] = json::array({"IPv4"});
    spec["ipFamilyPolicy"] = "SingleStack";
    spec["sessionAffinity"] = "None";
    spec["internalTrafficPolicy"] = "Cluster";
    if (!spec.contains("type")) spec["type"] = "ClusterIP";
    o["status"] = {{"loadBalancer", json::object()}};
  } else if (kind == "PodDisruptionBudget") {
    o["status"] = {{"currentHealthy", 2}, {"desiredHealthy", 1}, {"disruptionsAllowed", 1}, {"expectedPods", 2}};
  }
  // The server answers JSON text: numbers come back as unsigned integers.
  return json::parse(o.dump());
}

DesiredObjects Example() {
  auto g = graph::ParseInferenceGraphYaml(R"(
apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata: {name: g1, namespace: ns}
spec:
  model: {source: pvc://models/llama}
  prefill: {replicas: 2, gpusPerWorker: 1, requests: {cpu: "0.5", memory: 1Gi}}
  decode: {replicas: 3, gpusPerWorker: 1, limits: {cpu: "2", memory: 2048Mi}, extraArgs: [--engine.max-num-seqs, "32"]}
)");
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  OwnedGraph og;
  og.graph = *g;
  og.meta.name = "g1";
  og.meta.namespace_ = "ns";
  og.meta.uid = "uid-1";
  OperatorSettings s;
  s.router_api_keys_secret = "keys";
  return BuildDesired(og, s, {{"g1-decode-1", "10.1.0.4", "decode"}});
}

TEST(DiffTest, ServerDecoratedObjectsNeedNoApply) {
  for (const DesiredObject& d : Example()) {
    SCOPED_TRACE(d.Key());
    EXPECT_FALSE(NeedsApply(d.object, d.object));
    EXPECT_FALSE(NeedsApply(d.object, Decorate(d.object)));
  }
}

TEST(DiffTest, CanonicalQuantitiesAreEqual) {
  for (const DesiredObject& d : Example()) {
    if (d.object["kind"] != "Deployment") continue;
    json live = Decorate(d.object);
    json& res = live["spec"]["template"]["spec"]["containers"][0]["resources"];
    if (res.contains("requests") && res["requests"].contains("cpu")) res["requests"]["cpu"] = "500m";
    if (res.contains("limits") && res["limits"].contains("memory")) res["limits"]["memory"] = "2Gi";
    EXPECT_FALSE(NeedsApply(d.object, live)) << d.Key();
    if (res.contains("requests") && res["requests"].contains("cpu")) {
      res["requests"]["cpu"] = "600m";
      EXPECT_TRUE(NeedsApply(d.object, live)) << d.Key();
    }
  }
}

TEST(DiffTest, EveryOwnedChangeNeedsApply) {
  DesiredObjects objs = Example();
  const json* dep = nullptr;
  const json* cm = nullptr;
  for (const auto& d : objs) {
    if (d.object["kind"] == "Deployment" && dep == nullptr) dep = &d.object;
    if (d.object["kind"] == "ConfigMap") cm = &d.object;
  }
  ASSERT_TRUE(dep && cm);
  json live = Decorate(*dep);

  json l = live;
  l["spec"]["replicas"] = 7;  // someone scaled it by hand
  EXPECT_TRUE(NeedsApply(*dep, l));

  l = live;
  l["spec"]["template"]["spec"]["containers"][0]["args"][1] = "other";
  EXPECT_TRUE(NeedsApply(*dep, l));

  l = live;
  l["spec"]["template"]["spec"]["containers"][0]["args"].push_back("--extra");
  EXPECT_TRUE(NeedsApply(*dep, l));  // lists compare by length too

  l = live;
  l["spec"]["template"]["spec"]["containers"][0].erase("readinessProbe");
  EXPECT_TRUE(NeedsApply(*dep, l));

  l = live;
  l["metadata"]["labels"].erase("kvmesh.dev/graph");
  EXPECT_TRUE(NeedsApply(*dep, l));

  l = live;
  l["metadata"]["ownerReferences"][0]["uid"] = "someone-else";
  EXPECT_TRUE(NeedsApply(*dep, l));

  l = live;
  l["spec"]["template"]["spec"]["automountServiceAccountToken"] = true;
  EXPECT_TRUE(NeedsApply(*dep, l));

  json lc = Decorate(*cm);
  lc["data"]["workers.yaml"] = "workers: []\n";
  EXPECT_TRUE(NeedsApply(*cm, lc));
  // Extra labels or annotations someone else added are not ours to remove.
  lc = Decorate(*cm);
  lc["metadata"]["labels"]["team"] = "infra";
  lc["data"]["extra.txt"] = "x";
  EXPECT_FALSE(NeedsApply(*cm, lc));
}

TEST(DiffTest, ScalarRules) {
  EXPECT_FALSE(NeedsApply(json::parse(R"({"a": 1})"), json::parse(R"({"a": 1.0})")));
  EXPECT_TRUE(NeedsApply(json::parse(R"({"a": 1})"), json::parse(R"({"a": "1"})")));
  EXPECT_FALSE(NeedsApply(json::parse(R"({"a": {}, "b": [], "c": null})"), json::parse(R"({})")));
  EXPECT_TRUE(NeedsApply(json::parse(R"({"a": {"x": 1}})"), json::parse(R"({})")));
  EXPECT_TRUE(NeedsApply(json::parse(R"({"a": false})"), json::parse(R"({})")));
  EXPECT_TRUE(NeedsApply(json::parse(R"({"a": [1, 2]})"), json::parse(R"({"a": [2, 1]})")));
  // Quantities only compare by value under requests/limits.
  EXPECT_TRUE(NeedsApply(json::parse(R"({"x": "1Gi"})"), json::parse(R"({"x": "1024Mi"})")));
  EXPECT_FALSE(NeedsApply(json::parse(R"({"limits": {"memory": "1Gi"}})"),
                          json::parse(R"({"limits": {"memory": "1024Mi"}})")));
}

TEST(DiffTest, ParseQuantity) {
  long double v = 0;
  ASSERT_TRUE(ParseQuantity("500m", v));
  EXPECT_DOUBLE_EQ(static_cast<double>(v), 0.5);
  ASSERT_TRUE(ParseQuantity("2", v));
  EXPECT_DOUBLE_EQ(static_cast<double>(v), 2.0);
  ASSERT_TRUE(ParseQuantity("8Gi", v));
  EXPECT_DOUBLE_EQ(static_cast<double>(v), 8.0 * 1024 * 1024 * 1024);
  ASSERT_TRUE(ParseQuantity("1.5G", v));
  EXPECT_DOUBLE_EQ(static_cast<double>(v), 1.5e9);
  ASSERT_TRUE(ParseQuantity("1e3", v));
  EXPECT_DOUBLE_EQ(static_cast<double>(v), 1000.0);
  EXPECT_FALSE(ParseQuantity("", v));
  EXPECT_FALSE(ParseQuantity("abc", v));
  EXPECT_FALSE(ParseQuantity("1 Gi", v));
  EXPECT_FALSE(ParseQuantity("Gi", v));
}

}  // namespace
}  // namespace kvmesh::controller
