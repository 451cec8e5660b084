// The hub's member writer against three in-process test API servers (tests/kube) over real HTTP,
// through the operator's real KubeClient.
#include "operator/placement/member_clusters.h"

#include <gtest/gtest.h>

#include "operator/placement/member_clusters_testutil.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;

using testing::LiveReplicas;
using testing::StartMember;
using Member = testing::TestCluster;

controller::OwnedGraph Graph(const std::string& policy) {
  auto g = graph::ParseInferenceGraphYaml(R"(apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata: {name: chat, namespace: default}
spec:
  prefill: {replicas: 3, gpusPerWorker: 1}
  decode: {replicas: 3, gpusPerWorker: 1}
  placement:
    policy: )" + policy + R"(
    clusters:
      - {name: a, kubeconfigSecret: member-a, region: us-east, gpuCapacity: 4}
      - {name: b, kubeconfigSecret: member-b, region: eu-west, gpuCapacity: 4}
      - {name: c, kubeconfigSecret: member-c, region: ap-south, gpuCapacity: 4}
    links:
      - {from: a, to: b, bandwidthGbps: 100, latencyMs: 40}
)");
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  controller::OwnedGraph og;
  og.meta.name = g->name;
  og.meta.namespace_ = "default";
  og.meta.uid = "hub-uid-1";
  og.graph = *g;
  return og;
}

const controller::DesiredObject* FindObject(const controller::DesiredObjects& objs, const std::string& key) {
  for (const auto& o : objs) if (o.Key() == key) return &o;
  return nullptr;
}

TEST(MemberClustersTest, MemberObjectsHaveTheSharesReplicasNoOwnerAndFabricAffinity) {
  const controller::OwnedGraph g = Graph("spread");
  const ClusterShare share{"b", 2, 3, 5, 8};
  MemberWriterOptions options;
  const auto objs = BuildMemberDesired(g, share, controller::OperatorSettings{}, options, {});
  ASSERT_FALSE(objs.empty());
  for (const auto& o : objs) {
    const json& meta = o.object["metadata"];
    EXPECT_FALSE(meta.contains("ownerReferences")) << o.Key();
    EXPECT_EQ(meta["labels"][kMemberClusterLabel], "b") << o.Key();
    EXPECT_EQ(meta["annotations"][kHubGraphAnnotation], "default/chat") << o.Key();
  }
  const auto* prefill = FindObject(objs, "deployments/chat-prefill");
  const auto* decode = FindObject(objs, "deployments/chat-decode");
  ASSERT_TRUE(prefill && decode && FindObject(objs, "deployments/chat-router"));
  EXPECT_EQ(prefill->object["spec"]["replicas"], 2);
  EXPECT_EQ(decode->object["spec"]["replicas"], 3);
  const json& pa = prefill->object["spec"]["template"]["spec"]["affinity"];
  ASSERT_TRUE(pa.contains("podAntiAffinity")) << "BuildDesired's spreading is kept";
  const json& term = pa["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
  EXPECT_EQ(term["topologyKey"], kDefaultFabricDomainKey);
  EXPECT_EQ(term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "decode");
  EXPECT_EQ(term["labelSelector"]["matchLabels"]["kvmesh.dev/graph"], "chat");
  const json& da = decode->object["spec"]["template"]["spec"]["affinity"]["podAffinity"];
  EXPECT_EQ(da["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
              ["app.kubernetes.io/component"],
            "prefill");

  options.require_fabric_affinity = true;
  options.fabric_domain_key = "example.com/nvlink-domain";
  const auto strict = BuildMemberDesired(g, share, controller::OperatorSettings{}, options, {});
  const json& req = FindObject(strict, "deployments/chat-prefill")
                        ->object["spec"]["template"]["spec"]["affinity"]["podAffinity"]
                                ["requiredDuringSchedulingIgnoredDuringExecution"];
  ASSERT_TRUE(req.is_array());
  EXPECT_EQ(req[0]["topologyKey"], "example.com/nvlink-domain");

  EXPECT_TRUE(BuildMemberDesired(g, ClusterShare{"c", 0, 0, 0, 4}, {}, {}, {}).empty());
}

size_t CountGraphObjects(kube::KubeClient& c) {
  kube::ListOptions lo;
  lo.label_selector = "kvmesh.dev/graph=chat";
  size_t n = 0;
  for (const auto& r : {kube::Deployments(), kube::Services(), kube::ConfigMaps(), kube::PodDisruptionBudgets()}) {
    auto l = c.List(r, "default", lo);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    if (l.ok()) n += l->items.size();
  }
  return n;
}

TEST(MemberClustersTest, SyncWritesSharesIsIdempotentAndDeletesWhatAClusterLost) {
  Member a = StartMember(), b = StartMember(), c = StartMember();
  std::map<std::string, kube::KubeClient*> members = {{"a", a.client.get()}, {"b", b.client.get()}, {"c", c.client.get()}};
  const controller::OwnedGraph g = Graph("spread");
  auto spread = Place(InputFromGraph(g.graph));
  ASSERT_TRUE(spread.ok());
  auto st = SyncMembers(g, *spread, members, {});
  ASSERT_EQ(st.size(), 3u);
  for (const MemberStatus& s : st) {
    EXPECT_TRUE(s.reachable) << s.cluster;
    EXPECT_EQ(s.error, "") << s.cluster;
    EXPECT_GT(s.applied, 0) << s.cluster;
  }
  for (Member* m : {&a, &b, &c}) {
    EXPECT_EQ(LiveReplicas(*m->client, "chat-prefill"), 1);
    EXPECT_EQ(LiveReplicas(*m->client, "chat-decode"), 1);
    EXPECT_EQ(LiveReplicas(*m->client, "chat-router"), 1);
    auto d = m->client->Get(kube::Deployments(), "default", "chat-decode");
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE((*d)["metadata"].contains("ownerReferences"));
  }

  // Nothing changed: zero writes.
  st = SyncMembers(g, *spread, members, {});
  for (const MemberStatus& s : st) {
    EXPECT_EQ(s.applied, 0) << s.cluster;
    EXPECT_GT(s.unchanged, 0) << s.cluster;
    EXPECT_EQ(s.deleted, 0) << s.cluster;
  }

  // c becomes unhealthy: its share moves to a and b, and its objects go.
  PlacementInput in = InputFromGraph(g.graph);
  in.clusters[2].healthy = false;
  auto moved = Place(in);
  ASSERT_TRUE(moved.ok());
  ASSERT_EQ(moved->Find("c")->decode_replicas, 0);
  st = SyncMembers(g, *moved, members, {});
  EXPECT_EQ(st[2].cluster, "c");
  EXPECT_GT(st[2].deleted, 0);
  EXPECT_EQ(CountGraphObjects(*c.client), 0u);
  EXPECT_EQ(LiveReplicas(*a.client, "chat-decode") + LiveReplicas(*b.client, "chat-decode"), 3);
  EXPECT_EQ(LiveReplicas(*a.client, "chat-prefill") + LiveReplicas(*b.client, "chat-prefill"), 3);
  // Two replicas in one pool: a PodDisruptionBudget appears there, as in a single cluster.
  EXPECT_TRUE(a.client->Get(kube::PodDisruptionBudgets(), "default", "chat-decode").ok() ||
              b.client->Get(kube::PodDisruptionBudgets(), "default", "chat-decode").ok());

  // A member dropped from the spec (not in the placement) loses the graph too; objects the hub
  // did not write (no member label) are left alone.
  json foreign = {{"apiVersion", "v1"}, {"kind", "ConfigMap"},
                  {"metadata", {{"name", "chat-router"}, {"labels", {{"kvmesh.dev/graph", "chat"}}}}},
                  {"data", {{"x", "y"}}}};
  ASSERT_TRUE(c.client->Create(kube::ConfigMaps(), "default", foreign).ok());
  PlacementResult only_a = *moved;
  only_a.clusters = {*moved->Find("a")};
  st = SyncMembers(g, only_a, members, {});
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[1].cluster, "b");
  EXPECT_EQ(CountGraphObjects(*b.client), 0u);
  EXPECT_TRUE(c.client->Get(kube::ConfigMaps(), "default", "chat-router").ok());
}

TEST(MemberClustersTest, UnreachableMemberIsReportedAndTheOthersStillSync) {
  Member a = StartMember(), b = StartMember();
  std::map<std::string, kube::KubeClient*> members = {{"a", a.client.get()}, {"b", b.client.get()}};
  controller::OwnedGraph g = Graph("spread");
  auto r = Place(InputFromGraph(g.graph));
  ASSERT_TRUE(r.ok());
  b.server->Stop();
  auto st = SyncMembers(g, *r, members, {});
  ASSERT_EQ(st.size(), 3u);
  EXPECT_TRUE(st[0].reachable);
  EXPECT_EQ(st[0].error, "");
  EXPECT_EQ(LiveReplicas(*a.client, "chat-decode"), 1);
  EXPECT_FALSE(st[1].reachable);
  EXPECT_NE(st[1].error, "");
  EXPECT_EQ(st[1].decode_replicas, 1) << "the share is held, not dropped";
  EXPECT_FALSE(st[2].reachable);  // c: no client at all
  EXPECT_NE(st[2].error.find("no client"), std::string::npos);
}

TEST(MemberClustersTest, MembersAreReachedThroughKubeconfigSecretsOnTheHub) {
  Member hub = StartMember();
  Member secure = StartMember("s3cret-token");
  auto kubeconfig = testing::KubeconfigOf(*secure.server);
  ASSERT_TRUE(kubeconfig.ok()) << kubeconfig.status().ToString();

  for (const json& secret : {testing::Secret("member-b", "kubeconfig", *kubeconfig),
                             testing::Secret("member-a", "value", *kubeconfig),  // Cluster API's key
                             testing::Secret("member-c", "other", "x")}) {
    ASSERT_TRUE(hub.client->Create(kube::Secrets(), "default", secret).ok()) << secret.dump();
  }

  auto kc = MemberKubeConfigFromSecret(*hub.client, "default", "member-b");
  ASSERT_TRUE(kc.ok()) << kc.status().ToString();
  EXPECT_EQ(kc->server, secure.server->url());
  EXPECT_EQ(kc->token, "s3cret-token");

  controller::OwnedGraph g = Graph("spread");
  MemberClients clients = ConnectMembers(*hub.client, g.graph, testing::FastOptions());
  EXPECT_EQ(clients.clients.size(), 2u);
  ASSERT_EQ(clients.errors.count("c"), 1u);
  EXPECT_NE(clients.errors["c"].find("no data key kubeconfig"), std::string::npos) << clients.errors["c"];
  // The token from the Secret authenticates: listing works on the protected member.
  ASSERT_TRUE(clients.clients.count("b"));
  EXPECT_TRUE(clients.clients["b"]->List(kube::Deployments(), "default").ok());

  auto missing = MemberKubeConfigFromSecret(*hub.client, "default", "nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("default/nope"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::placement
