// Reconciler against the project's test Kubernetes API server (tests/kube, real HTTP, the real
// CRD from crds/ with schema validation and defaults, its Deployment controller and GC) through
// the operator's cpprestsdk KubeClient. The test plays the kubelet: it marks the pods the
// Deployment controller created Ready with a pod IP.
#include "operator/controller/reconciler.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/http_client.h"
#include "common/wait_for_testutil.h"
#include "operator/controller/graph_cluster_testutil.h"
#include "operator/kube/informer.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

// Reconciles take longer than the kube tests' waits: 10 s, polled every 10 ms.
bool WaitFor(const std::function<bool()>& pred, milliseconds timeout = milliseconds(10000)) {
  return test_util::WaitFor(pred, timeout, milliseconds(10));
}

class ReconcilerTest : public testing::GraphClusterTest {
 protected:
  ReconcilerTest() : GraphClusterTest(/*client_max_retries=*/2) {}

  void SetUp() override {
    GraphClusterTest::SetUp();
    if (HasFatalFailure()) return;
    ReconcilerOptions ro;
    ro.clock = [this] { return now_; };
    ro.drain_poll = milliseconds(20);
    ro.degraded_grace = std::chrono::seconds(300);
    reconciler_ = std::make_unique<Reconciler>(*client_, ro);
  }

  json Graph(const std::string& name, int prefill = 1, int decode = 1) {
    graph::InferenceGraph g = graph::DefaultLocalGraph();
    g.name = name;
    g.namespace_ = "default";
    g.spec.prefill.replicas = prefill;
    g.spec.decode.replicas = decode;
    return json::parse(graph::InferenceGraphToJson(g));
  }

  json Create(const json& graph) {
    auto r = client_->Create(kube::InferenceGraphs(), "default", graph);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : json();
  }

  json GetGraph(const std::string& name) {
    auto r = client_->Get(kube::InferenceGraphs(), "default", name);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : json();
  }

  StatusOr<json> Child(const char* resource, const std::string& name) {
    return client_->Get(ChildResource(resource), "default", name);
  }

  std::vector<json> Pods(const std::string& graph) {
    kube::ListOptions o;
    o.label_selector = "kvmesh.dev/graph=" + graph;
    auto l = client_->List(kube::Pods(), "default", o);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return l.ok() ? l->items : std::vector<json>{};
  }

  // The kubelet's part: every pod of the graph Running + Ready on its own loopback address.
  int MarkPodsReady(const std::string& graph) {
    int n = 0;
    for (json p : Pods(graph)) {
      if (p.contains("status") && p["status"].value("podIP", "") != "") continue;
      p["status"] = {{"phase", "Running"},
                     {"podIP", "127.0.0." + std::to_string(10 + next_ip_++)},
                     {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}};
      auto r = client_->UpdateStatus(kube::Pods(), p);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      ++n;
    }
    return n;
  }

  // Deployment controller caught up: pods exist for every replica and deployment status agrees.
  bool PodsMatchReplicas(const std::string& graph, int total) { return static_cast<int>(Pods(graph).size()) == total; }

  ReconcileResult Reconcile(const std::string& name) { return reconciler_->Reconcile("default/" + name); }

  std::vector<json> Events(const std::string& graph) {
    kube::ListOptions o;
    o.field_selector = "involvedObject.name=" + graph;
    auto l = client_->List(kube::Events(), "default", o);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return l.ok() ? l->items : std::vector<json>{};
  }
  bool HasEvent(const std::string& graph, const std::string& reason) {
    for (const json& e : Events(graph)) {
      if (e.value("reason", "") == reason) return true;
    }
    return false;
  }

  // Reconciles until the graph is Ready and a reconcile writes nothing; returns the writes of
  // the last pass (0 when it converged).
  uint64_t Converge(const std::string& name, int pods) {
    uint64_t last = 1;
    for (int i = 0; i < 50 && last != 0; ++i) {
      ReconcileResult r = Reconcile(name);
      EXPECT_TRUE(r.ok) << r.error.ToString();
      WaitFor([&] { return PodsMatchReplicas(name, pods); }, milliseconds(3000));
      MarkPodsReady(name);
      uint64_t before = client_->writes();
      r = Reconcile(name);
      EXPECT_TRUE(r.ok) << r.error.ToString();
      last = client_->writes() - before;
      if (last != 0) std::this_thread::sleep_for(milliseconds(30));
    }
    return last;
  }

  std::unique_ptr<Reconciler> reconciler_;
  SystemTime now_ = *ParseRfc3339("2026-11-30T06:00:00Z");
  int next_ip_ = 0;
};

TEST_F(ReconcilerTest, MissingGraphIsDone) {
  ReconcileResult r = Reconcile("nope");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.requeue_after.count(), 0);
  EXPECT_EQ(client_->writes(), 1u);  // the CRD only
}

TEST_F(ReconcilerTest, CreatesOwnedChildrenThenConvergesToZeroWrites) {
  json g = Create(Graph("g1"));
  ReconcileResult r = Reconcile("g1");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_GT(r.requeue_after.count(), 0);  // pools empty: look again when the grace runs out

  json live = GetGraph("g1");
  EXPECT_EQ(live["metadata"]["finalizers"], json::array({"kvmesh.dev/drain"}));
  const std::string uid = live["metadata"]["uid"];
  for (const auto& [resource, name] :
       std::vector<std::pair<const char*, std::string>>{{"configmaps", "g1-router"}, {"services", "g1-router"},
                                                        {"services", "g1-prefill"}, {"services", "g1-decode"},
                                                        {"deployments", "g1-prefill"}, {"deployments", "g1-decode"},
                                                        {"deployments", "g1-router"}}) {
    auto c = Child(resource, name);
    ASSERT_TRUE(c.ok()) << resource << "/" << name << ": " << c.status().ToString();
    const json& ref = (*c)["metadata"]["ownerReferences"][0];
    EXPECT_EQ(ref["uid"], uid);
    EXPECT_EQ(ref["controller"], true);
    EXPECT_EQ(ref["blockOwnerDeletion"], true);
  }
  EXPECT_FALSE(Child("poddisruptionbudgets", "g1-decode").ok());  // 1 replica: no PDB
  EXPECT_EQ(live["status"]["phase"], "Pending");
  EXPECT_EQ(live["status"]["observedGeneration"], live["metadata"]["generation"]);
  EXPECT_EQ(live["status"]["routerEndpoint"], "http://g1-router.default.svc:8000");
  EXPECT_TRUE(HasEvent("g1", "Created"));

  // Pods come up: the workers file lists them, status turns Ready, then nothing more to write.
  EXPECT_EQ(Converge("g1", 3), 0u);
  live = GetGraph("g1");
  EXPECT_EQ(live["status"]["phase"], "Ready");
  EXPECT_EQ(live["status"]["prefill"]["readyReplicas"], 1);
  EXPECT_EQ(live["status"]["decode"]["readyReplicas"], 1);
  json avail = FindCondition(live["status"], "Available");
  EXPECT_EQ(avail["status"], "True");
  EXPECT_EQ(avail["reason"], "AllPoolsReady");
  EXPECT_TRUE(HasEvent("g1", "Available"));
  auto cm = Child("configmaps", "g1-router");
  ASSERT_TRUE(cm.ok());
  const std::string workers = (*cm)["data"]["workers.yaml"];
  EXPECT_NE(workers.find("role: prefill"), std::string::npos) << workers;
  EXPECT_NE(workers.find("role: decode"), std::string::npos) << workers;
  EXPECT_NE(workers.find("http://127.0.0."), std::string::npos) << workers;

  // Steady state, time passing: reads only.
  for (int i = 0; i < 3; ++i) {
    now_ += std::chrono::hours(1);
    uint64_t writes = client_->writes(), reads = client_->reads();
    ReconcileResult again = Reconcile("g1");
    EXPECT_TRUE(again.ok) << again.error.ToString();
    EXPECT_EQ(again.requeue_after.count(), 0);
    EXPECT_EQ(client_->writes(), writes) << "a reconcile of an unchanged world wrote";
    EXPECT_GT(client_->reads(), reads);
  }
  ReconcilerStats s = reconciler_->stats();
  EXPECT_GE(s.applies, 7u);
  EXPECT_GE(s.status_updates, 2u);
  EXPECT_EQ(s.finalizer_updates, 1u);
  EXPECT_EQ(s.reconciles_error, 0u);
}

TEST_F(ReconcilerTest, ScalingAddsAndRemovesThePdbAndRecordsScaledPool) {
  Create(Graph("g2"));
  ASSERT_EQ(Converge("g2", 3), 0u);
  auto p = client_->Patch(kube::InferenceGraphs(), "default", "g2", kube::PatchType::kMerge,
                          json{{"spec", {{"decode", {{"replicas", 3}}}}}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ReconcileResult r = Reconcile("g2");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  auto d = Child("deployments", "g2-decode");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)["spec"]["replicas"], 3);
  auto pdb = Child("poddisruptionbudgets", "g2-decode");
  ASSERT_TRUE(pdb.ok()) << pdb.status().ToString();
  EXPECT_EQ((*pdb)["spec"]["maxUnavailable"], 1);
  EXPECT_TRUE(HasEvent("g2", "ScaledPool"));
  json st = GetGraph("g2")["status"];
  EXPECT_EQ(st["decode"]["replicas"], 3);
  EXPECT_EQ(FindCondition(st, "Progressing")["status"], "True");
  EXPECT_EQ(Converge("g2", 5), 0u);
  EXPECT_EQ(GetGraph("g2")["status"]["decode"]["readyReplicas"], 3);

  p = client_->Patch(kube::InferenceGraphs(), "default", "g2", kube::PatchType::kMerge,
                     json{{"spec", {{"decode", {{"replicas", 1}}}}}});
  ASSERT_TRUE(p.ok());
  r = Reconcile("g2");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_TRUE(kube::IsNotFound(Child("poddisruptionbudgets", "g2-decode").status()));
  EXPECT_EQ((*Child("deployments", "g2-decode"))["spec"]["replicas"], 1);
}

TEST_F(ReconcilerTest, InvalidSpecIsReportedAndNothingIsCreated) {
  json g = Graph("bad", 1, 1);
  g["spec"]["disaggregation"]["mode"] = "off";  // with prefill.replicas 1: the C++ parser refuses it
  Create(g);
  ReconcileResult r = Reconcile("bad");
  EXPECT_TRUE(r.ok) << r.error.ToString();  // terminal until the spec changes
  EXPECT_EQ(r.requeue_after.count(), 0);
  json st = GetGraph("bad")["status"];
  EXPECT_EQ(st["phase"], "Degraded");
  json deg = FindCondition(st, "Degraded");
  EXPECT_EQ(deg["status"], "True");
  EXPECT_EQ(deg["reason"], "InvalidSpec");
  EXPECT_NE(deg["message"].get<std::string>().find("spec.prefill.replicas"), std::string::npos) << deg;
  EXPECT_TRUE(HasEvent("bad", "InvalidSpec"));
  EXPECT_TRUE(kube::IsNotFound(Child("deployments", "bad-decode").status()));
  EXPECT_TRUE(kube::IsNotFound(Child("configmaps", "bad-router").status()));
  // Again: nothing to write, no second event.
  uint64_t writes = client_->writes();
  EXPECT_TRUE(Reconcile("bad").ok);
  EXPECT_EQ(client_->writes(), writes);
  // Fixed spec: children appear.
  auto p = client_->Patch(kube::InferenceGraphs(), "default", "bad", kube::PatchType::kMerge,
                          json{{"spec", {{"prefill", {{"replicas", 0}}}}}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(Reconcile("bad").ok);
  EXPECT_TRUE(Child("deployments", "bad-decode").ok());
  EXPECT_TRUE(kube::IsNotFound(Child("deployments", "bad-prefill").status()));
  EXPECT_EQ(FindCondition(GetGraph("bad")["status"], "Degraded")["status"], "False");
}

TEST_F(ReconcilerTest, ForeignObjectWithOurNameIsNotTouched) {
  json cm = {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", {{"name", "g3-router"}, {"namespace", "default"}}},
             {"data", {{"mine", "yes"}}}};
  ASSERT_TRUE(client_->Create(kube::ConfigMaps(), "default", cm).ok());
  Create(Graph("g3"));
  ReconcileResult r = Reconcile("g3");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.message().find("g3-router"), std::string::npos) << r.error.ToString();
  auto live = Child("configmaps", "g3-router");
  ASSERT_TRUE(live.ok());
  EXPECT_EQ((*live)["data"], json({{"mine", "yes"}}));
  json deg = FindCondition(GetGraph("g3")["status"], "Degraded");
  EXPECT_EQ(deg["status"], "True");
  EXPECT_EQ(deg["reason"], "ChildWriteFailed");
  EXPECT_TRUE(Child("deployments", "g3-decode").ok());  // the rest was still written
}

TEST_F(ReconcilerTest, StatusConflictIsRetried) {
  Create(Graph("g4"));
  ASSERT_TRUE(Reconcile("g4").ok);
  // A 409 on the next status write (as if another writer got there first).
  http::HttpClient http;
  auto k = http.Post(server_->url() + "/_test/fail-next?status=409&method=PUT&path=/apis/kvmesh.dev/v1alpha1/namespaces/default/inferencegraphs/g4/status", "");
  ASSERT_TRUE(k.ok() && k->status == 200) << (k.ok() ? k->body : k.status().ToString());
  WaitFor([&] { return PodsMatchReplicas("g4", 3); });
  MarkPodsReady("g4");
  uint64_t conflicts = reconciler_->stats().conflicts;
  ReconcileResult r = Reconcile("g4");
  EXPECT_TRUE(r.ok) << r.error.ToString();
  EXPECT_EQ(reconciler_->stats().conflicts, conflicts + 1);
  EXPECT_EQ(GetGraph("g4")["status"]["decode"]["readyReplicas"], 1);
}

TEST_F(ReconcilerTest, DeletionDrainsThenRemovesFinalizer) {
  Create(Graph("g5"));
  ASSERT_EQ(Converge("g5", 3), 0u);
  ASSERT_TRUE(client_->Delete(kube::InferenceGraphs(), "default", "g5").ok());
  json live = GetGraph("g5");  // still there: our finalizer holds it
  ASSERT_TRUE(live["metadata"].contains("deletionTimestamp"));
  now_ = *ParseRfc3339(live["metadata"]["deletionTimestamp"].get<std::string>());

  ReconcileResult r = Reconcile("g5");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  // While draining: the router stops routing and the pools are at 0. (On a slow machine the test
  // server's Deployment controller may already have removed the pods during this first pass, and
  // the drain completes at once; then only the end state below is checked.)
  if (r.requeue_after.count() > 0) {
    auto cm = Child("configmaps", "g5-router");
    ASSERT_TRUE(cm.ok());
    EXPECT_NE((*cm)["data"]["workers.yaml"].get<std::string>().find("workers: []"), std::string::npos);
    EXPECT_EQ((*Child("deployments", "g5-decode"))["spec"]["replicas"], 0);
    EXPECT_EQ((*Child("deployments", "g5-prefill"))["spec"]["replicas"], 0);
    EXPECT_EQ(GetGraph("g5")["status"]["phase"], "Deleting");
    EXPECT_TRUE(HasEvent("g5", "Draining"));
  }
  for (int i = 0; i < 200 && r.requeue_after.count() > 0; ++i) {
    std::this_thread::sleep_for(r.requeue_after);
    r = Reconcile("g5");
    ASSERT_TRUE(r.ok) << r.error.ToString();
  }
  EXPECT_EQ(r.requeue_after.count(), 0);
  EXPECT_TRUE(WaitFor([&] {
    return kube::IsNotFound(client_->Get(kube::InferenceGraphs(), "default", "g5").status());
  }));
  for (const char* d : {"g5-decode", "g5-prefill", "g5-router"}) {
    EXPECT_TRUE(WaitFor([&] { return kube::IsNotFound(Child("deployments", d).status()); })) << d;
  }
  EXPECT_TRUE(kube::IsNotFound(Child("services", "g5-router").status()));
  EXPECT_TRUE(HasEvent("g5", "Deleted"));
  EXPECT_TRUE(Reconcile("g5").ok);  // gone: done
}

TEST_F(ReconcilerTest, DrainTimeoutStillRemovesTheFinalizer) {
  ReconcilerOptions ro;
  ro.clock = [this] { return now_; };
  ro.drain_poll = milliseconds(20);
  ro.drain_timeout = std::chrono::seconds(60);
  reconciler_ = std::make_unique<Reconciler>(*client_, ro);
  Create(Graph("g6"));
  ASSERT_TRUE(Reconcile("g6").ok);
  WaitFor([&] { return PodsMatchReplicas("g6", 3); });
  // A pod that never goes away (someone else's finalizer holds it).
  std::vector<json> pods = Pods("g6");
  ASSERT_FALSE(pods.empty());
  const std::string stuck = pods[0]["metadata"]["name"];
  ASSERT_TRUE(client_->Patch(kube::Pods(), "default", stuck, kube::PatchType::kMerge,
                             json{{"metadata", {{"finalizers", json::array({"test.kvmesh.dev/keep"})}}}})
                  .ok());
  ASSERT_TRUE(client_->Delete(kube::InferenceGraphs(), "default", "g6").ok());
  now_ = *ParseRfc3339(GetGraph("g6")["metadata"]["deletionTimestamp"].get<std::string>());
  ReconcileResult r = Reconcile("g6");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_GT(r.requeue_after.count(), 0);  // waiting for the pods
  now_ += std::chrono::seconds(30);
  r = Reconcile("g6");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_GT(r.requeue_after.count(), 0);  // still within the drain timeout
  now_ += std::chrono::seconds(31);  // past it
  r = Reconcile("g6");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_EQ(r.requeue_after.count(), 0);
  EXPECT_TRUE(WaitFor([&] {
    return kube::IsNotFound(client_->Get(kube::InferenceGraphs(), "default", "g6").status());
  }));
}

// The operator binary's configuration: reads from informer caches (InformerObjectReader over
// informers on the graphs and the labelled children, indexed by graph), writes to the API server.
TEST_F(ReconcilerTest, ReadsFromInformerCachesAndNeverWritesOnAStaleRead) {
  std::vector<std::unique_ptr<kube::Informer>> informers;
  InformerObjectReader reader(*client_);
  auto add = [&](const kube::ResourceRef& r, const std::string& selector) {
    kube::InformerOptions o;
    o.resource = r;
    o.ns = "default";
    o.label_selector = selector;
    auto inf = std::make_unique<kube::Informer>(client_.get(), o);
    inf->AddIndex(kGraphIndex, GraphIndexValues);
    reader.Add(r, inf.get());
    informers.push_back(std::move(inf));
  };
  add(kube::InferenceGraphs(), "");
  for (const kube::ResourceRef& r : {kube::Deployments(), kube::Pods(), kube::Services(), kube::ConfigMaps(),
                                     kube::PodDisruptionBudgets()}) {
    add(r, "app.kubernetes.io/managed-by=kvmesh-operator");
  }
  auto start_all = [&] {
    for (auto& i : informers) ASSERT_TRUE(i->Start().ok());
    for (auto& i : informers) ASSERT_TRUE(i->WaitForSync(milliseconds(5000)));
  };
  start_all();
  ReconcilerOptions ro;
  ro.clock = [this] { return now_; };
  ro.degraded_grace = std::chrono::seconds(300);
  Reconciler rec(*client_, reader, ro);
  Create(Graph("c1"));
  ASSERT_TRUE(WaitFor([&] { return reader.Get(kube::InferenceGraphs(), "default", "c1").ok(); }));

  // Frozen caches (Stop keeps them readable): nothing the reconciler writes becomes visible to it.
  for (auto& i : informers) i->Stop();
  ReconcileResult r = rec.Reconcile("default/c1");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  const ReconcilerStats first = rec.stats();
  EXPECT_EQ(first.applies, 7u);
  EXPECT_EQ(first.finalizer_updates, 1u);
  EXPECT_EQ(first.status_updates, 1u);
  EXPECT_TRUE(HasEvent("c1", "Created"));
  const size_t events = Events("c1").size();

  // The caches still say "no children, no finalizer, no status"; the API server says "done".
  const uint64_t writes = client_->writes();
  r = rec.Reconcile("default/c1");
  ASSERT_TRUE(r.ok) << r.error.ToString();
  EXPECT_EQ(client_->writes(), writes) << "a stale cache made the reconciler write";
  const ReconcilerStats second = rec.stats();
  EXPECT_GT(second.stale_reads, first.stale_reads);
  EXPECT_EQ(second.applies, first.applies);
  EXPECT_EQ(second.conflicts, 0u);
  EXPECT_EQ(Events("c1").size(), events) << "an Event was recorded again";

  // Caches live again: once they have caught up, a reconcile makes no API request at all.
  start_all();
  ASSERT_TRUE(WaitFor([&] { return PodsMatchReplicas("c1", 3); }));
  bool zero_request_pass = false;
  for (int i = 0; i < 100 && !zero_request_pass; ++i) {
    std::this_thread::sleep_for(milliseconds(30));
    const uint64_t reads_before = client_->reads(), writes_before = client_->writes();
    r = rec.Reconcile("default/c1");
    ASSERT_TRUE(r.ok) << r.error.ToString();
    zero_request_pass = client_->reads() == reads_before && client_->writes() == writes_before;
  }
  EXPECT_TRUE(zero_request_pass) << "a reconcile from caches kept making API requests";
  // The pod list of a graph comes through the graph index and matches a LIST.
  auto cached = reader.List(kube::Pods(), "default", std::string(kGraphLabel) + "=c1");
  ASSERT_TRUE(cached.ok()) << cached.status().ToString();
  EXPECT_EQ(cached->size(), 3u);
  EXPECT_TRUE(reader.List(kube::Pods(), "default", std::string(kGraphLabel) + "=other")->empty());
  EXPECT_EQ(Events("c1").size(), events);
  for (auto& i : informers) i->Stop();
}

}  // namespace
}  // namespace kvmesh::controller
