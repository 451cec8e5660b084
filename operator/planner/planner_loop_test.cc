// PlannerLoop against the project's test Kubernetes API server (tests/kube, in-process, real HTTP,
// the real CRD) through the operator's KubeClient, with real metrics sources: a ScrapeSource
// reading a /metrics page this test serves over HTTP (common/http_server) with router counters it
// advances, or a PrometheusSource pointed at a port where nothing listens. Time is a fake clock.
#include "operator/planner/planner_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "common/http_server.h"
#include "operator/controller/reconciler.h"
#include "operator/controller/graph_cluster_testutil.h"

namespace kvmesh::planner {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

// One replica: prefill 1000 prompt tok/s at TTFT 0.1 s; decode 10 tok/s within ITL 0.2 s.
std::shared_ptr<const PerfProfile> Profile() {
  auto t = TablePerfProfile::FromJson(R"({
    "prefill": [{"isl": 64, "prefill_tokens_per_s": 1000, "ttft_s": 0.1}],
    "decode": [{"concurrency": 1, "context": 64, "itl_s": 0.1, "tokens_per_s": 10},
               {"concurrency": 2, "context": 64, "itl_s": 0.2, "tokens_per_s": 10}]})");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::make_shared<const TablePerfProfile>(std::move(*t));
}

// A router's /metrics: cumulative counters the test advances by "seconds of traffic".
class FakeRouter {
 public:
  FakeRouter() {
    server_.Route("GET", "/metrics", [this](const http::HttpRequest&) {
      std::lock_guard<std::mutex> lock(mu_);
      http::HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = "# TYPE kvmesh_router_requests_total counter\n"
               "kvmesh_router_requests_total{endpoint=\"completions\",result=\"ok\"} " +
               std::to_string(requests_) +
               "\n# TYPE kvmesh_router_prompt_tokens_total counter\nkvmesh_router_prompt_tokens_total " +
               std::to_string(requests_ * 64) +
               "\n# TYPE kvmesh_router_completion_tokens_total counter\nkvmesh_router_completion_tokens_total " +
               std::to_string(requests_ * 10) + "\n";
      return r;
    });
  }
  Status Start() { return server_.Start(); }
  void Stop() { server_.Stop(milliseconds(500)); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()) + "/metrics"; }
  // `rate` requests/s (ISL 64, OSL 10) for `seconds`.
  void Run(double rate, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_ += static_cast<int64_t>(rate * seconds);
  }

 private:
  http::HttpServer server_{http::HttpServerOptions{}};
  std::mutex mu_;
  int64_t requests_ = 0;
};

class PlannerLoopTest : public controller::testing::GraphClusterTest {
 protected:
  PlannerLoopTest() : GraphClusterTest(/*client_max_retries=*/1) {}

  void SetUp() override {
    GraphClusterTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(router_.Start().ok());
  }
  void TearDown() override { router_.Stop(); }

  // Scrapes the fake router; decode pool 1..3, SLA set; scale-down at once.
  PlannerLoopOptions Options() {
    PlannerLoopOptions o;
    o.interval_s = 30;
    o.scale_down_window_s = 0;
    o.profile = Profile();
    o.clock = [this] { return now_s_.load(); };
    const std::string url = router_.url();
    o.source_factory = [url](const std::string&, const std::string&) -> std::unique_ptr<MetricsSource> {
      ScrapeSource::Options so;
      so.targets = {url};
      return std::make_unique<ScrapeSource>(so);
    };
    return o;
  }

  json CreateGraph(const std::string& name, int decode_max = 3, double itl_ms = 200, double ttft_ms = 500) {
    graph::InferenceGraph g = graph::DefaultLocalGraph();
    g.name = name;
    g.namespace_ = "default";
    g.spec.decode.replicas = 1;
    g.spec.decode.min_replicas = 1;
    g.spec.decode.max_replicas = decode_max;
    g.spec.sla.ttft_ms = ttft_ms;
    g.spec.sla.itl_ms = itl_ms;
    auto r = client_->Create(kube::InferenceGraphs(), "default", json::parse(graph::InferenceGraphToJson(g)));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : json();
  }

  std::vector<json> Graphs() {
    auto l = client_->List(kube::InferenceGraphs(), "default");
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return l.ok() ? l->items : std::vector<json>{};
  }
  json Get(const std::string& name) {
    auto r = client_->Get(kube::InferenceGraphs(), "default", name);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : json();
  }
  json Decisions(const std::string& name) {
    json g = Get(name);
    return g.contains("status") ? g["status"].value("plannerDecisions", json::array()) : json::array();
  }
  // Advances the fake clock by one interval of `rate` req/s and steps the loop.
  std::vector<std::string> Interval(PlannerLoop& loop, double rate) {
    router_.Run(rate, 30);
    now_s_ = now_s_.load() + 30;
    return loop.Step(Graphs());
  }

  FakeRouter router_;
  std::atomic<double> now_s_{1000};
};

TEST(ReasonClassTest, NumbersDoNotMakeANewReason) {
  EXPECT_EQ(ReasonClass("hold: predicted 3.25 req/s x OSL 10 needs 2.9 replicas; within 10% of 3"),
            ReasonClass("hold: predicted 2.5 req/s x OSL 12 needs 3.1 replicas; within 10% of 3"));
  EXPECT_NE(ReasonClass("hold: at maxReplicas 3"), ReasonClass("scale_up: 1 -> 3"));
  EXPECT_EQ(ReasonClass("x 1e-05 y 127.0.0.1:8080"), "x # y #:#");
  EXPECT_EQ(ExpandSelector("namespace=\"{namespace}\",g=\"{name}\"", "prod", "llama"), "namespace=\"prod\",g=\"llama\"");
}

TEST_F(PlannerLoopTest, ScalesDecodeUpThenDownAndRecordsOnlyChanges) {
  CreateGraph("g1");
  auto loop = PlannerLoop::Create(*client_, Options(), nullptr);
  ASSERT_TRUE(loop.ok()) << loop.status().ToString();
  PlannerLoop& l = **loop;

  // First pass: a planner for the graph, spec replicas as the start, the scrape is a baseline.
  EXPECT_TRUE(l.Step(Graphs()).empty());
  EXPECT_EQ(l.num_graphs(), 1u);
  EXPECT_EQ(l.DesiredReplicas("default/g1", "decode"), 1);
  EXPECT_EQ(l.DesiredReplicas("default/g1", "prefill"), std::nullopt);  // prefill does not autoscale
  EXPECT_TRUE(Decisions("g1").empty());

  // Not due yet: nothing happens.
  now_s_ = now_s_.load() + 10;
  EXPECT_TRUE(l.Step(Graphs()).empty());
  now_s_ = now_s_.load() - 10;

  // 3 req/s x 10 tokens at 10 tok/s per replica: 3 replicas.
  auto changed = Interval(l, 3);
  ASSERT_EQ(changed, std::vector<std::string>{"default/g1"});
  EXPECT_EQ(l.DesiredReplicas("default/g1", "decode"), 3);
  json d = Decisions("g1");
  ASSERT_EQ(d.size(), 1u) << d.dump();
  EXPECT_EQ(d[0]["pool"], "decode");
  EXPECT_EQ(d[0]["from"], 1);
  EXPECT_EQ(d[0]["to"], 3);
  EXPECT_TRUE(d[0]["reason"].get<std::string>().starts_with("scale_up")) << d[0].dump();
  EXPECT_TRUE(d[0].contains("time"));

  // Same load: a hold at the maximum is a new reason (one entry), then nothing new: no write.
  EXPECT_TRUE(Interval(l, 3).empty());
  d = Decisions("g1");
  ASSERT_EQ(d.size(), 2u) << d.dump();
  EXPECT_EQ(d[1]["from"], 3);
  EXPECT_EQ(d[1]["to"], 3);
  EXPECT_TRUE(d[1]["reason"].get<std::string>().starts_with("hold")) << d[1].dump();
  const std::string rv = Get("g1")["metadata"]["resourceVersion"];
  const uint64_t writes = client_->writes();
  EXPECT_TRUE(Interval(l, 3).empty());
  EXPECT_TRUE(Interval(l, 3).empty());
  EXPECT_EQ(Get("g1")["metadata"]["resourceVersion"], rv);
  EXPECT_EQ(client_->writes(), writes);

  // Load falls: down one replica per decision (max_scale_down_step 1) to the minimum.
  EXPECT_EQ(Interval(l, 0.2), std::vector<std::string>{"default/g1"});
  EXPECT_EQ(l.DesiredReplicas("default/g1", "decode"), 2);
  EXPECT_EQ(Interval(l, 0.2), std::vector<std::string>{"default/g1"});
  EXPECT_EQ(l.DesiredReplicas("default/g1", "decode"), 1);
  d = Decisions("g1");
  ASSERT_GE(d.size(), 4u) << d.dump();
  EXPECT_EQ(d[d.size() - 2]["from"], 3);
  EXPECT_EQ(d[d.size() - 2]["to"], 2);
  EXPECT_EQ(d.back()["from"], 2);
  EXPECT_EQ(d.back()["to"], 1);
  EXPECT_TRUE(d.back()["reason"].get<std::string>().starts_with("scale_down")) << d.back().dump();

  // A restarted operator continues from the recorded decisions, not from spec.replicas.
  for (int i = 0; i < 4 && l.DesiredReplicas("default/g1", "decode") != 3; ++i) Interval(l, 3);
  ASSERT_EQ(l.DesiredReplicas("default/g1", "decode"), 3);
  auto again = PlannerLoop::Create(*client_, Options(), nullptr);
  ASSERT_TRUE(again.ok());
  (*again)->Step(Graphs());
  EXPECT_EQ((*again)->DesiredReplicas("default/g1", "decode"), 3);
}

TEST_F(PlannerLoopTest, KeepsOnlyTheNewestDecisions) {
  CreateGraph("g2");
  PlannerLoopOptions o = Options();
  o.max_decisions = 3;
  auto loop = PlannerLoop::Create(*client_, o, nullptr);
  ASSERT_TRUE(loop.ok());
  (*loop)->Step(Graphs());
  for (double rate : {3.0, 0.2, 0.2, 3.0, 0.2}) Interval(**loop, rate);
  json d = Decisions("g2");
  ASSERT_EQ(d.size(), 3u) << d.dump();
  // Newest last and contiguous: each entry starts where the one before ended.
  EXPECT_EQ(d.back()["to"].get<int>(), (*loop)->DesiredReplicas("default/g2", "decode").value_or(-1)) << d.dump();
  for (size_t i = 1; i < d.size(); ++i) EXPECT_EQ(d[i]["from"], d[i - 1]["to"]) << d.dump();
}

TEST_F(PlannerLoopTest, ReconcilerAppliesThePlannersReplicasAndKeepsDecisions) {
  CreateGraph("g3");
  auto loop = PlannerLoop::Create(*client_, Options(), nullptr);
  ASSERT_TRUE(loop.ok());
  PlannerLoop* l = loop->get();
  controller::ReconcilerOptions ro;
  ro.desired_replicas = [l](const controller::GraphMeta& m, const std::string& pool) {
    return l->DesiredReplicas(m.namespace_ + "/" + m.name, pool);
  };
  controller::Reconciler reconciler(*client_, ro);
  auto decode_replicas = [&] {
    auto dep = client_->Get(kube::Deployments(), "default", "g3-decode");
    EXPECT_TRUE(dep.ok()) << dep.status().ToString();
    return dep.ok() ? dep->at("spec").value("replicas", -1) : -1;
  };
  ASSERT_TRUE(reconciler.Reconcile("default/g3").ok);
  EXPECT_EQ(decode_replicas(), 1);
  l->Step(Graphs());
  Interval(*l, 3);
  ASSERT_TRUE(reconciler.Reconcile("default/g3").ok);
  EXPECT_EQ(decode_replicas(), 3);
  json g = Get("g3");
  EXPECT_EQ(g["status"]["decode"]["replicas"], 3);
  ASSERT_EQ(g["status"]["plannerDecisions"].size(), 1u);  // the reconciler kept the planner's field
  // Editing spec.replicas does not fight the planner; lowering maxReplicas clamps at once.
  ASSERT_TRUE(client_->Patch(kube::InferenceGraphs(), "default", "g3", kube::PatchType::kMerge,
                             json{{"spec", {{"decode", {{"replicas", 1}}}}}})
                  .ok());
  ASSERT_TRUE(reconciler.Reconcile("default/g3").ok);
  EXPECT_EQ(decode_replicas(), 3);
  ASSERT_TRUE(client_->Patch(kube::InferenceGraphs(), "default", "g3", kube::PatchType::kMerge,
                             json{{"spec", {{"decode", {{"maxReplicas", 2}}}}}})
                  .ok());
  ASSERT_TRUE(reconciler.Reconcile("default/g3").ok);
  EXPECT_EQ(decode_replicas(), 2);
  l->Step(Graphs());  // new generation: the planner is rebuilt with the new limits
  EXPECT_EQ(l->DesiredReplicas("default/g3", "decode"), 2);
}

TEST_F(PlannerLoopTest, PrometheusDownHoldsAndSaysWhy) {
  CreateGraph("g4");
  PlannerLoopOptions o = Options();
  o.source_factory = nullptr;
  o.prometheus_url = "http://127.0.0.1:1";  // nothing listens on port 1
  auto loop = PlannerLoop::Create(*client_, o, nullptr);
  ASSERT_TRUE(loop.ok());
  EXPECT_TRUE((*loop)->Step(Graphs()).empty());
  EXPECT_EQ((*loop)->DesiredReplicas("default/g4", "decode"), 1);
  json d = Decisions("g4");
  ASSERT_EQ(d.size(), 1u) << d.dump();
  EXPECT_EQ(d[0]["from"], 1);
  EXPECT_EQ(d[0]["to"], 1);
  EXPECT_NE(d[0]["reason"].get<std::string>().find("hold: metrics unavailable"), std::string::npos) << d.dump();
  EXPECT_TRUE(Interval(**loop, 3).empty());  // still down: same reason, no new entry
  EXPECT_EQ(Decisions("g4").size(), 1u);
}

TEST_F(PlannerLoopTest, WithoutProfileOrPrometheusThePlannerDoesNotOwnReplicas) {
  CreateGraph("g5");
  PlannerLoopOptions o = Options();
  o.profile = nullptr;
  auto loop = PlannerLoop::Create(*client_, o, nullptr);
  ASSERT_TRUE(loop.ok());
  (*loop)->Step(Graphs());
  EXPECT_EQ((*loop)->DesiredReplicas("default/g5", "decode"), std::nullopt);
  json d = Decisions("g5");
  ASSERT_EQ(d.size(), 1u) << d.dump();
  EXPECT_NE(d[0]["reason"].get<std::string>().find("no performance profile"), std::string::npos) << d.dump();
  Interval(**loop, 3);
  EXPECT_EQ(Decisions("g5").size(), 1u);

  CreateGraph("g6");
  PlannerLoopOptions np = Options();
  np.source_factory = nullptr;  // and no prometheus_url
  auto loop2 = PlannerLoop::Create(*client_, np, nullptr);
  ASSERT_TRUE(loop2.ok());
  (*loop2)->Step(Graphs());
  EXPECT_EQ((*loop2)->DesiredReplicas("default/g6", "decode"), std::nullopt);
  d = Decisions("g6");
  ASSERT_EQ(d.size(), 1u) << d.dump();
  EXPECT_NE(d[0]["reason"].get<std::string>().find("--planner.prometheus-url"), std::string::npos) << d.dump();
}

TEST_F(PlannerLoopTest, GraphsWithoutSlaOrAutoscalingAreNotPlannedAndDeletedGraphsGo) {
  CreateGraph("fixed", /*decode_max=*/0);
  CreateGraph("nosla", 3, /*itl_ms=*/0, /*ttft_ms=*/0);
  CreateGraph("ttftonly", 3, /*itl_ms=*/0);  // an SLA (TTFT) and an autoscaled pool: planned
  CreateGraph("planned");
  auto loop = PlannerLoop::Create(*client_, Options(), nullptr);
  ASSERT_TRUE(loop.ok());
  (*loop)->Step(Graphs());
  EXPECT_EQ((*loop)->num_graphs(), 2u);
  EXPECT_EQ((*loop)->DesiredReplicas("default/fixed", "decode"), std::nullopt);
  EXPECT_EQ((*loop)->DesiredReplicas("default/nosla", "decode"), std::nullopt);
  EXPECT_EQ((*loop)->DesiredReplicas("default/ttftonly", "decode"), 1);
  EXPECT_TRUE(Decisions("fixed").empty());
  EXPECT_TRUE(Decisions("nosla").empty());
  ASSERT_TRUE(client_->Delete(kube::InferenceGraphs(), "default", "planned").ok());
  (*loop)->Step(Graphs());
  EXPECT_EQ((*loop)->num_graphs(), 1u);
  EXPECT_EQ((*loop)->DesiredReplicas("default/planned", "decode"), std::nullopt);
}

}  // namespace
}  // namespace kvmesh::planner
