// The hub controller against in-process test API servers (one hub, member clusters) over real
// HTTP through the operator's real client, with member routers that are real HTTP servers serving
// Prometheus text rendered by the project's metrics registry and an inventory. Time is a FakeClock.
#include "operator/placement/hub_controller.h"

#include <gtest/gtest.h>

#include <functional>

#include "common/http_client.h"
#include "common/http_server.h"
#include "operator/placement/member_clusters_testutil.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

using testing::LiveReplicas;
using testing::StartMember;
using testing::TestCluster;

// A member cluster's kvmesh-router as the hub sees it: /metrics in Prometheus text (rendered by a
// MetricsRegistry with the router's families) and /v1/kv/inventory.
// A member's heat source over real HTTP: GET /v1/kv/inventory with the blocks and roots set by
// the test (a FakeRouter or a FakeAgent adds the rest).
class FakeSource {
 public:
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  void SetHashes(std::vector<uint64_t> h) {
    std::lock_guard<std::mutex> lock(mu_);
    hashes_ = std::move(h);
  }
  // The summary's "roots" array (null: no roots key, an older router).
  void SetRoots(json roots) {
    std::lock_guard<std::mutex> lock(mu_);
    roots_ = std::move(roots);
  }
  int inventory_gets() {
    std::lock_guard<std::mutex> lock(mu_);
    return gets_;
  }
  void Stop() { server_->Stop(std::chrono::milliseconds(0)); }
  std::mutex& mu() { return mu_; }

 protected:
  // `extra` adds its fields to each inventory (called under mu_).
  void Start(std::function<void(json&)> extra) {
    server_ = std::make_unique<http::HttpServer>(http::HttpServerOptions{});
    server_->Route("GET", "/v1/kv/inventory", [this, extra](const http::HttpRequest&) {
      std::lock_guard<std::mutex> lock(mu_);
      ++gets_;
      json inv = {{"block_size", 16}, {"seq", 0},
                  {"tiers", json::array({{{"medium", "GPU"}, {"hashes", hashes_}}})}};
      if (!roots_.is_null()) inv["roots"] = roots_;
      extra(inv);
      return http::JsonResponse(200, inv.dump());
    });
    if (route_metrics_) route_metrics_(*server_);
    EXPECT_TRUE(server_->Start().ok());
  }
  std::function<void(http::HttpServer&)> route_metrics_;
  std::mutex mu_;

 private:
  int gets_ = 0;
  json roots_;
  std::vector<uint64_t> hashes_;
  std::unique_ptr<http::HttpServer> server_;
};

// A kvmesh-router: /metrics (Prometheus text from the metrics registry) and its prefix summary.
class FakeRouter : public FakeSource {
 public:
  FakeRouter() {
    requests_ = *registry_.AddCounter("kvmesh_router_requests_total", "Requests", {"endpoint", "result"});
    prompt_ = *registry_.AddCounter("kvmesh_router_prompt_tokens_total", "Prompt tokens", {});
    cached_ = *registry_.AddCounter("kvmesh_router_cached_tokens_total", "Cached tokens", {});
    completion_ = *registry_.AddCounter("kvmesh_router_completion_tokens_total", "Completion tokens", {});
    route_metrics_ = [this](http::HttpServer& server) {
      server.Route("GET", "/metrics", [this](const http::HttpRequest&) {
        http::HttpResponse r;
        r.content_type = "text/plain; version=0.0.4";
        r.body = registry_.Render();
        return r;
      });
    };
    Start([](json& inv) {
      inv["agent_id"] = "router";
      inv["kind"] = "router";
      inv["load"] = {{"inflight", 0}, {"ready_workers", 1}};
    });
  }
  ~FakeRouter() { Stop(); }  // before the registry goes
  // `n` more requests with these token counts each.
  void Serve(double n, double isl, double cached, double osl) {
    requests_->WithLabels({"chat_completions", "ok"}).Inc(n);
    requests_->WithLabels({"chat_completions", "unauthorized"}).Inc(7);  // never demand
    prompt_->WithLabels({}).Inc(n * isl);
    cached_->WithLabels({}).Inc(n * cached);
    completion_->WithLabels({}).Inc(n * osl);
  }

 private:
  MetricsRegistry registry_;
  CounterFamily* requests_;
  CounterFamily* prompt_;
  CounterFamily* cached_;
  CounterFamily* completion_;
};

// A kvmesh-agent: its inventory also carries "demand" (and "roots", empty until set). Its
// prefix-copy endpoints follow the agent's protocol (docs/kv-transfer.md) without moving KV: an
// export answers for the leading run of the chain that its hashes hold, an import adds the
// chain to its hashes (or fails while fail_imports is set); each request body is recorded.
class FakeAgent : public FakeSource {
 public:
  FakeAgent() {
    SetRoots(json::array());
    route_metrics_ = [this](http::HttpServer& server) {
      server.Route("POST", "/v1/kv/export", [this](const http::HttpRequest& req) {
        std::lock_guard<std::mutex> lock(mu_);
        const json body = json::parse(req.body);
        exports.push_back(body);
        json held = json::array();
        for (const json& h : body["hashes"]) {
          if (std::find(held_.begin(), held_.end(), h.get<uint64_t>()) == held_.end()) break;
          held.push_back(h);
        }
        if (held.empty()) return http::JsonErrorResponse(404, "not cached here", "invalid_request_error", "not_found");
        json params = {{"peer_url", url()}, {"agent_id", "agent-" + url()}, {"lease_id", 7},
                       {"num_tokens", 16 * held.size()}, {"block_size", 16}, {"first_token", 0}};
        return http::JsonResponse(200, json{{"kv_transfer_params", params}, {"hashes", held}}.dump());
      });
      server.Route("POST", "/v1/kv/import", [this](const http::HttpRequest& req) {
        std::lock_guard<std::mutex> lock(mu_);
        const json body = json::parse(req.body);
        imports.push_back(body);
        if (fail_imports) return http::JsonErrorResponse(503, "peer died", "server_error", "unavailable");
        int64_t n = 0;
        for (const json& h : body["hashes"]) {
          held_.push_back(h.get<uint64_t>());
          ++n;
        }
        return http::JsonResponse(200, json{{"imported_blocks", n}, {"already_cached_blocks", 0}, {"bytes", n * 1000}}.dump());
      });
      server.Route("POST", "/v1/kv/leases/release", [this](const http::HttpRequest& req) {
        std::lock_guard<std::mutex> lock(mu_);
        releases.push_back(json::parse(req.body));
        return http::JsonResponse(200, R"({"released":true})");
      });
    };
    Start([this](json& inv) {
      inv["agent_id"] = "agent";
      inv["demand"] = demand_;
      if (!held_.empty()) inv["tiers"][0]["hashes"] = held_;
    });
  }
  ~FakeAgent() { Stop(); }  // before demand_ goes
  // Blocks cached here (what the inventory lists and an export finds).
  void Hold(const std::vector<uint64_t>& hashes) {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = hashes;
  }
  size_t num_exports() { std::lock_guard<std::mutex> lock(mu_); return exports.size(); }
  size_t num_imports() { std::lock_guard<std::mutex> lock(mu_); return imports.size(); }
  json exports = json::array(), imports = json::array(), releases = json::array();  // under mu_
  bool fail_imports = false;                                                        // under mu_
  // `n` more requests prefilled here with these token counts each.
  void Serve(uint64_t n, uint64_t isl, uint64_t cached, uint64_t osl) {
    std::lock_guard<std::mutex> lock(mu_);
    auto add = [&](const char* k, uint64_t v) { demand_[k] = demand_[k].get<uint64_t>() + v; };
    add("requests", n);
    add("prompt_tokens", n * isl);
    add("cached_tokens", n * cached);
    add("completion_tokens", n * osl);
  }

 private:
  json demand_ = {{"requests", 0}, {"prompt_tokens", 0}, {"cached_tokens", 0}, {"completion_tokens", 0}};
  std::vector<uint64_t> held_;
};

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i < to; ++i) v.push_back(i * 7919 + 13);
  return v;
}

json RootsEntry(uint64_t requests, const std::vector<uint64_t>& blocks) {
  return json{{"root", blocks.front()}, {"requests", requests}, {"blocks", blocks}};
}

uint64_t WriteRequests(const testapi::TestApiServer& s) {
  http::HttpClient c;
  auto r = c.Get(s.url() + "/_test/stats");
  EXPECT_TRUE(r.ok());
  if (!r.ok()) return 0;
  return json::parse(r->body).value("write_requests", uint64_t{0});
}

class HubControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub_ = StartMember();
    ASSERT_TRUE(hub_.client);
    Status crd = controller::testing::InstallInferenceGraphCrd(*hub_.client);
    ASSERT_TRUE(crd.ok()) << crd.ToString();
    for (const std::string name : {"a", "b"}) AddMember(name);
  }

  void AddMember(const std::string& name, uint32_t port = 0) {
    members_[name] = StartMember("", port);
    ASSERT_TRUE(members_[name].server);
    auto kubeconfig = testing::KubeconfigOf(*members_[name].server);
    ASSERT_TRUE(kubeconfig.ok()) << kubeconfig.status().ToString();
    const json secret = testing::Secret("member-" + name, "kubeconfig", *kubeconfig);
    auto existing = hub_.client->Get(kube::Secrets(), "default", "member-" + name);
    if (existing.ok()) {
      ASSERT_TRUE(hub_.client->Delete(kube::Secrets(), "default", "member-" + name).ok());
    }
    ASSERT_TRUE(hub_.client->Create(kube::Secrets(), "default", secret).ok());
  }

  void CreateGraph(const std::string& policy, int prefill, int decode, const std::string& routers = "",
                   const std::string& agents = "") {
    json g = {{"apiVersion", "kvmesh.dev/v1alpha1"}, {"kind", "InferenceGraph"},
              {"metadata", {{"name", "chat"}, {"namespace", "default"}}},
              {"spec",
               {{"prefill", {{"replicas", prefill}, {"gpusPerWorker", 1}}},
                {"decode", {{"replicas", decode}, {"gpusPerWorker", 1}}},
                {"placement",
                 {{"policy", policy},
                  {"clusters", json::array({{{"name", "a"}, {"kubeconfigSecret", "member-a"}, {"region", "us-east"}, {"gpuCapacity", 8}},
                                            {{"name", "b"}, {"kubeconfigSecret", "member-b"}, {"region", "eu-west"}, {"gpuCapacity", 8}}})},
                  {"links", json::array({{{"from", "a"}, {"to", "b"}, {"bandwidthGbps", 100}, {"latencyMs", 40}}})}}}}}};
    if (!routers.empty()) g["metadata"]["annotations"] = {{kMemberRoutersAnnotation, routers}};
    if (!agents.empty()) g["metadata"]["annotations"][kMemberAgentsAnnotation] = agents;
    auto r = hub_.client->Create(kube::InferenceGraphs(), "default", g);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  std::unique_ptr<HubController> Controller(seconds unhealthy_after = seconds(120)) {
    HubControllerOptions o;
    o.config.unhealthy_after = unhealthy_after;
    o.config.member_timeout = std::chrono::milliseconds(2000);
    o.config.heat_max_age = seconds(300);
    o.clock = &clock_;
    o.metrics = &metrics_;
    return std::make_unique<HubController>(hub_.client.get(), o);
  }

  HubPassResult Pass(HubController& c) {
    auto obj = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
    EXPECT_TRUE(obj.ok()) << obj.status().ToString();
    auto r = c.SyncGraph(*obj);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HubPassResult{};
  }

  json StatusClusters() {
    auto obj = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
    EXPECT_TRUE(obj.ok());
    return obj.ok() ? (*obj)["status"].value("clusters", json::array()) : json();
  }

  static json Entry(const json& clusters, const std::string& name) {
    for (const json& c : clusters) if (c.value("name", "") == name) return c;
    return json();
  }

  TestCluster hub_;
  std::map<std::string, TestCluster> members_;
  kube::FakeClock clock_;
  MetricsRegistry metrics_;
};

TEST_F(HubControllerTest, WritesSharesAndStatusAndAnUnchangedPassWritesNothing) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller();
  HubPassResult r = Pass(*hub);
  ASSERT_FALSE(r.skipped);
  EXPECT_TRUE(r.status_written);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 2);
  EXPECT_EQ(LiveReplicas(*members_["b"].client, "chat-decode"), 2);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-prefill"), 1);
  json st = StatusClusters();
  ASSERT_EQ(st.size(), 2u) << st.dump();
  json a = Entry(st, "a");
  EXPECT_EQ(a["decode"]["replicas"], 2);
  EXPECT_EQ(a["prefill"]["replicas"], 1);
  EXPECT_EQ(a["reachable"], true);
  EXPECT_EQ(a["healthy"], true);
  EXPECT_EQ(a["region"], "us-east");
  EXPECT_GT(a["applied"].get<int>(), 0);
  EXPECT_EQ(a["heat"], "none");

  // Second pass: members unchanged (zero member writes); status records "unchanged" once.
  const uint64_t wa = WriteRequests(*members_["a"].server), wb = WriteRequests(*members_["b"].server);
  clock_.Advance(seconds(30));
  r = Pass(*hub);
  EXPECT_EQ(WriteRequests(*members_["a"].server), wa);
  EXPECT_EQ(WriteRequests(*members_["b"].server), wb);
  EXPECT_EQ(Entry(StatusClusters(), "a")["applied"], 0);
  EXPECT_GT(Entry(StatusClusters(), "a")["unchanged"].get<int>(), 0);

  // Third pass of an unchanged world: no write anywhere, the hub's status included.
  const uint64_t wh = WriteRequests(*hub_.server);
  clock_.Advance(seconds(30));
  r = Pass(*hub);
  EXPECT_FALSE(r.status_written);
  EXPECT_EQ(WriteRequests(*hub_.server), wh);
  EXPECT_EQ(WriteRequests(*members_["a"].server), wa);
  EXPECT_EQ(WriteRequests(*members_["b"].server), wb);
  EXPECT_NE(metrics_.Render().find("kvmesh_hub_sync_total{cluster=\"a\",result=\"ok\"} 3"), std::string::npos)
      << metrics_.Render();
}

// A member's pods (as its kubelet reports them) give status.clusters[].*.readyReplicas.
TEST_F(HubControllerTest, StatusReportsEachMembersReadyReplicas) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller();
  Pass(*hub);
  json a = Entry(StatusClusters(), "a");
  EXPECT_EQ(a["decode"]["readyReplicas"], 0) << a.dump();
  EXPECT_EQ(a["prefill"]["readyReplicas"], 0);
  // Member a: two decode pods Ready, one decode pod not Ready, one prefill pod Ready, one Ready
  // decode pod being deleted, and a Ready pod of another graph.
  auto pod = [&](const std::string& name, const std::string& graph, const std::string& component,
                 bool ready, bool deleting) {
    json p = {{"apiVersion", "v1"}, {"kind", "Pod"},
              {"metadata", {{"name", name}, {"namespace", "default"},
                            {"labels", {{controller::kGraphLabel, graph}, {controller::kComponentLabel, component}}}}},
              {"spec", {{"containers", json::array({{{"name", "w"}, {"image", "x"}}})}}}};
    if (deleting) p["metadata"]["finalizers"] = json::array({"test/hold"});
    auto created = members_["a"].client->Create(kube::Pods(), "default", p);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    json live = *created;
    live["status"] = {{"phase", "Running"},
                      {"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}};
    ASSERT_TRUE(members_["a"].client->UpdateStatus(kube::Pods(), live).ok());
    if (deleting) {
      ASSERT_TRUE(members_["a"].client->Delete(kube::Pods(), "default", name).ok());
    }
  };
  pod("d1", "chat", "decode", true, false);
  pod("d2", "chat", "decode", true, false);
  pod("d3", "chat", "decode", false, false);
  pod("p1", "chat", "prefill", true, false);
  pod("d4", "chat", "decode", true, true);
  pod("o1", "other", "decode", true, false);
  auto held = members_["a"].client->Get(kube::Pods(), "default", "d4");
  ASSERT_TRUE(held.ok()) << "the finalizer holds the deleted pod";
  EXPECT_TRUE((*held)["metadata"].contains("deletionTimestamp"));
  clock_.Advance(seconds(30));
  Pass(*hub);
  json st = StatusClusters();
  a = Entry(st, "a");
  EXPECT_EQ(a["decode"]["readyReplicas"], 2) << a.dump();
  EXPECT_EQ(a["prefill"]["readyReplicas"], 1);
  EXPECT_EQ(a["decode"]["replicas"], 2);
  json b = Entry(st, "b");
  EXPECT_EQ(b["decode"]["readyReplicas"], 0) << b.dump();

  // b unreachable: its ready counts are unknown, so they are left out (not reported as 0).
  members_["b"].server->Stop();
  clock_.Advance(seconds(30));
  Pass(*hub);
  b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["reachable"], false) << b.dump();
  EXPECT_FALSE(b["decode"].contains("readyReplicas")) << b.dump();
}

TEST_F(HubControllerTest, UnreachableMemberIsHeldThenItsShareMovesAfterTheGraceAndComesBack) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller(seconds(120));
  Pass(*hub);
  ASSERT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 2);
  const uint32_t b_port = members_["b"].server->port();
  members_["b"].server->Stop();

  // Unreachable, inside the grace period: b's share is held; a is unchanged.
  HubPassResult r = Pass(*hub);
  json b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["reachable"], false);
  EXPECT_EQ(b["healthy"], true);
  EXPECT_TRUE(b.contains("unreachableSince"));
  EXPECT_EQ(b["decode"]["replicas"], 2) << "held";
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 2);
  clock_.Advance(seconds(119));
  Pass(*hub);
  EXPECT_EQ(Entry(StatusClusters(), "b")["healthy"], true);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 2);

  // Past the grace period: b is unhealthy and its share moves to a in the same pass.
  clock_.Advance(seconds(2));
  r = Pass(*hub);
  b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["healthy"], false);
  EXPECT_EQ(b["decode"]["replicas"], 0);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 4);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-prefill"), 2);
  EXPECT_NE(metrics_.Render().find("kvmesh_hub_cluster_healthy{graph=\"default/chat\",cluster=\"b\"} 0"),
            std::string::npos);

  // b answers again (a fresh API server on its port): healthy at once, its share comes back.
  AddMember("b", b_port);
  clock_.Advance(seconds(30));
  Pass(*hub);
  b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["healthy"], true);
  EXPECT_EQ(b["reachable"], true);
  EXPECT_FALSE(b.contains("unreachableSince"));
  EXPECT_EQ(LiveReplicas(*members_["b"].client, "chat-decode"), 2);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), 2);
}

TEST_F(HubControllerTest, RouterHeatMovesReplicasUnderCacheLocality) {
  FakeRouter ra, rb;
  CreateGraph("cache-locality", 2, 6, "a=" + ra.url() + ", b=" + rb.url() + "/");
  auto hub = Controller();
  // First sample: caches known, rates not yet -> no demand -> placed as spread.
  HubPassResult r = Pass(*hub);
  EXPECT_EQ(r.heat["a"].state, HeatState::kWarming) << r.heat["a"].error;
  EXPECT_EQ(Entry(StatusClusters(), "a")["heat"], "warming");

  // Users in us-east (a's router) send 20 req/s with a 2000-token prefix cached in a.
  ra.SetHashes(Range(0, 125));
  ra.Serve(600, 3000, 2000, 150);
  rb.Serve(15, 3000, 0, 150);
  clock_.Advance(seconds(30));
  r = Pass(*hub);
  ASSERT_EQ(r.heat["a"].state, HeatState::kFresh);
  EXPECT_NEAR(r.heat["a"].request_rate, 20, 1e-9);
  EXPECT_NEAR(r.heat["a"].mean_isl, 3000, 1e-9);
  EXPECT_NEAR(r.heat["a"].cached_tokens_per_request, 2000, 1e-9);
  EXPECT_NEAR(r.heat["b"].request_rate, 0.5, 1e-9);
  const int a1 = r.placement.Find("a")->decode_replicas, b1 = r.placement.Find("b")->decode_replicas;
  EXPECT_GT(a1, b1) << PlacementResultToJson(r.placement);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), a1);

  // The heat moves: traffic and cache are now in eu-west (b).
  ra.SetHashes({});
  rb.SetHashes(Range(1000, 1125));
  ra.Serve(15, 3000, 0, 150);
  rb.Serve(600, 3000, 2000, 150);
  clock_.Advance(seconds(30));
  r = Pass(*hub);
  const int a2 = r.placement.Find("a")->decode_replicas, b2 = r.placement.Find("b")->decode_replicas;
  EXPECT_GT(b2, a2) << PlacementResultToJson(r.placement);
  EXPECT_EQ(LiveReplicas(*members_["b"].client, "chat-decode"), b2);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), a2);
}

// Heat per prefix root reaches the placement: both regions ask for one 2000-token document at the
// same rate (the routers list it as a root, as kvmesh-router does). The hub copies it from the
// cluster that caches it to the other one (a copy over the default link pays), and when the cache
// moves, the copy's direction follows.
TEST_F(HubControllerTest, RootHeatDecidesPrefixCopiesUnderCacheLocality) {
  FakeRouter ra, rb;
  auto root = [](uint64_t requests, const std::vector<uint64_t>& blocks) {
    return json{{"root", blocks.front()}, {"requests", requests}, {"blocks", blocks}};
  };
  const std::vector<uint64_t> doc = Range(0, 125);
  char name[32];
  std::snprintf(name, sizeof name, "root:%016llx", static_cast<unsigned long long>(doc[0]));
  uint64_t na = 1, nb = 1;
  ra.SetRoots(json::array({root(na, doc)}));
  rb.SetRoots(json::array({root(nb, doc)}));
  CreateGraph("cache-locality", 2, 6, "a=" + ra.url() + ",b=" + rb.url());
  auto hub = Controller();
  Pass(*hub);
  // 30 s of 10 req/s from each region, all of them starting with the document.
  auto serve = [&] {
    ra.Serve(300, 3000, 1000, 150);
    rb.Serve(300, 3000, 1000, 150);
    ra.SetRoots(json::array({root(na += 300, doc)}));
    rb.SetRoots(json::array({root(nb += 300, doc)}));
    clock_.Advance(seconds(30));
  };
  auto copy_of_doc = [&](const HubPassResult& r) -> const PrefixDecision* {
    for (const PrefixDecision& d : r.placement.prefixes) {
      if (d.root == name && d.action == PrefixAction::kReplicate) return &d;
    }
    return nullptr;
  };

  ra.SetHashes(doc);  // cached in a only
  serve();
  HubPassResult r = Pass(*hub);
  ASSERT_EQ(r.heat["a"].state, HeatState::kFresh);
  EXPECT_NEAR(r.heat["a"].roots.at(doc[0]).rate, 10, 1e-9);
  EXPECT_NEAR(r.heat["b"].roots.at(doc[0]).rate, 10, 1e-9);
  const PrefixDecision* d = copy_of_doc(r);
  ASSERT_NE(d, nullptr) << PlacementResultToJson(r.placement);
  EXPECT_EQ(d->source, "a");
  EXPECT_EQ(d->target, "b");
  EXPECT_NE(d->reason.find("20 req/s"), std::string::npos) << d->reason;

  ra.SetHashes({});  // the document now lives in b
  rb.SetHashes(doc);
  serve();
  r = Pass(*hub);
  d = copy_of_doc(r);
  ASSERT_NE(d, nullptr) << PlacementResultToJson(r.placement);
  EXPECT_EQ(d->source, "b");
  EXPECT_EQ(d->target, "a");
}

// A member without a kvmesh-router: its agents' inventories (kvmesh.dev/member-agents) give its
// heat, and the copy decision follows it as it does for routers.
TEST_F(HubControllerTest, AgentHeatStandsInForAMemberWithoutARouter) {
  FakeRouter ra;
  FakeAgent b0, b1;
  const std::vector<uint64_t> doc = Range(0, 125);
  char name[32];
  std::snprintf(name, sizeof name, "root:%016llx", static_cast<unsigned long long>(doc[0]));
  ra.SetRoots(json::array({RootsEntry(1, doc)}));
  b0.SetRoots(json::array({RootsEntry(1, doc)}));
  b1.SetRoots(json::array({RootsEntry(1, doc)}));
  ra.SetHashes(doc);  // cached in a only
  CreateGraph("cache-locality", 2, 6, "a=" + ra.url(), "b=" + b0.url() + ",b=" + b1.url() + ",a=" + b0.url());
  auto hub = Controller();
  Pass(*hub);
  EXPECT_NE(metrics_.Render().find("kvmesh_hub_cluster_request_rate{graph=\"default/chat\",cluster=\"b\"} NaN\n"),
            std::string::npos) << "one sample: warming, no rate yet";
  // 30 s: 10 req/s through a's router; 5 req/s on each of b's agents.
  ra.Serve(300, 3000, 1000, 150);
  ra.SetRoots(json::array({RootsEntry(301, doc)}));
  b0.Serve(150, 3000, 0, 150);
  b1.Serve(150, 3000, 0, 150);
  b0.SetRoots(json::array({RootsEntry(151, doc)}));
  b1.SetRoots(json::array({RootsEntry(151, doc)}));
  clock_.Advance(seconds(30));
  const int b0_gets = b0.inventory_gets();
  HubPassResult r = Pass(*hub);
  EXPECT_EQ(b0.inventory_gets(), b0_gets + 1) << "read once, for b; a has a router";
  ASSERT_EQ(r.heat["b"].state, HeatState::kFresh) << r.heat["b"].error;
  EXPECT_NEAR(r.heat["b"].request_rate, 10, 1e-9);
  EXPECT_NEAR(r.heat["b"].roots.at(doc[0]).rate, 10, 1e-9);
  EXPECT_NE(metrics_.Render().find("kvmesh_hub_cluster_request_rate{graph=\"default/chat\",cluster=\"b\"} 10\n"),
            std::string::npos) << metrics_.Render();
  const PrefixDecision* d = nullptr;
  for (const PrefixDecision& x : r.placement.prefixes) {
    if (x.root == name && x.action == PrefixAction::kReplicate) d = &x;
  }
  ASSERT_NE(d, nullptr) << PlacementResultToJson(r.placement);
  EXPECT_EQ(d->source, "a");
  EXPECT_EQ(d->target, "b");
  EXPECT_NE(d->reason.find("20 req/s"), std::string::npos) << d->reason;
  EXPECT_FALSE(Entry(StatusClusters(), "b").contains("heatError"));

  // One of b's agents dies: b's heat stays fresh from the other, and the status names the dead one.
  b1.Stop();
  clock_.Advance(seconds(30));
  r = Pass(*hub);
  EXPECT_EQ(r.heat["b"].state, HeatState::kFresh) << r.heat["b"].error;
  const json b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["heat"], "fresh");
  EXPECT_NE(b.value("heatError", "").find(b1.url()), std::string::npos) << b.dump();
}

// Acting on a replicate decision: the root's chain is exported by a's agent, imported by b's,
// and the export's lease released; a failed copy is reported and retried only after
// --hub.copy-interval; once b holds the root no copy is decided any more.
TEST_F(HubControllerTest, ReplicateDecisionsCopyTheRootFromAgentToAgent) {
  FakeAgent a0, b0;
  const std::vector<uint64_t> doc = Range(0, 125);
  a0.Hold(doc);
  a0.SetRoots(json::array({RootsEntry(1, doc)}));
  b0.SetRoots(json::array({RootsEntry(1, doc)}));
  CreateGraph("cache-locality", 2, 6, "", "a=" + a0.url() + ",b=" + b0.url());
  auto hub = Controller();
  auto serve = [&](int passes_so_far) {  // 30 s more of 10 req/s on each side, all under doc's root
    a0.Serve(300, 3000, 2000, 150);
    b0.Serve(300, 3000, 0, 150);
    a0.SetRoots(json::array({RootsEntry(301 * passes_so_far, doc)}));
    b0.SetRoots(json::array({RootsEntry(301 * passes_so_far, doc)}));
    clock_.Advance(seconds(30));
  };
  Pass(*hub);  // warming: no rates, no decisions, no copies
  EXPECT_EQ(a0.num_exports(), 0u);

  b0.fail_imports = true;
  serve(1);
  HubPassResult r = Pass(*hub);
  ASSERT_EQ(r.copies.size(), 1u) << PlacementResultToJson(r.placement);
  EXPECT_EQ(r.copies[0].source, "a");
  EXPECT_EQ(r.copies[0].target, "b");
  EXPECT_FALSE(r.copies[0].result.ok);
  EXPECT_NE(r.copies[0].result.error.find("HTTP 503: peer died"), std::string::npos) << r.copies[0].result.error;
  {
    std::lock_guard<std::mutex> lock(a0.mu());
    ASSERT_EQ(a0.exports.size(), 1u);
    EXPECT_EQ(a0.exports[0]["hashes"], json(doc));
    ASSERT_EQ(a0.releases.size(), 1u) << "the export's lease ends even when the import failed";
    EXPECT_EQ(a0.releases[0]["lease_id"], 7);
  }
  json b = Entry(StatusClusters(), "b");
  ASSERT_TRUE(b.contains("lastPrefixCopy")) << b.dump();
  EXPECT_EQ(b["lastPrefixCopy"]["result"], "error");
  EXPECT_EQ(b["lastPrefixCopy"]["source"], "a");
  EXPECT_EQ(b["lastPrefixCopy"]["exportedBlocks"], 125);
  EXPECT_NE(b["lastPrefixCopy"].value("error", "").find("peer died"), std::string::npos);
  EXPECT_FALSE(Entry(StatusClusters(), "a").contains("lastPrefixCopy"));

  // Inside the copy interval (300 s) the same copy is not tried again.
  b0.fail_imports = false;
  serve(2);
  r = Pass(*hub);
  EXPECT_TRUE(r.copies.empty());
  EXPECT_EQ(a0.num_exports(), 1u);
  for (int i = 3; i < 12; ++i) {  // 270 s more: 300 s after the first try
    serve(i);
    r = Pass(*hub);
  }
  ASSERT_EQ(r.copies.size(), 1u);
  EXPECT_TRUE(r.copies[0].result.ok) << r.copies[0].result.error;
  EXPECT_EQ(r.copies[0].result.source_agent, a0.url());
  EXPECT_EQ(r.copies[0].result.target_agent, b0.url());
  EXPECT_EQ(r.copies[0].result.imported_blocks, 125);
  {
    std::lock_guard<std::mutex> lock(b0.mu());
    ASSERT_EQ(b0.imports.size(), 2u);
    EXPECT_EQ(b0.imports[1]["hashes"], json(doc));
    EXPECT_EQ(b0.imports[1]["kv_transfer_params"]["agent_id"], "agent-" + a0.url());
  }
  b = Entry(StatusClusters(), "b");
  EXPECT_EQ(b["lastPrefixCopy"]["result"], "ok");
  EXPECT_EQ(b["lastPrefixCopy"]["importedBlocks"], 125);
  EXPECT_EQ(b["lastPrefixCopy"]["bytes"], 125000);
  EXPECT_FALSE(b["lastPrefixCopy"].contains("error"));
  const std::string m = metrics_.Render();
  EXPECT_NE(m.find("kvmesh_hub_prefix_copies_total{graph=\"default/chat\",cluster=\"b\",result=\"ok\"} 1\n"),
            std::string::npos) << m;
  EXPECT_NE(m.find("kvmesh_hub_prefix_copies_total{graph=\"default/chat\",cluster=\"b\",result=\"error\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("kvmesh_hub_prefix_copy_bytes_total{graph=\"default/chat\",cluster=\"b\"} 125000\n"),
            std::string::npos);

  // b holds the root now (its inventory lists the chain): no copy is decided, even after the interval.
  for (int i = 12; i < 24; ++i) {
    serve(i);
    r = Pass(*hub);
    EXPECT_TRUE(r.copies.empty()) << PlacementResultToJson(r.placement);
  }
  EXPECT_EQ(a0.num_exports(), 2u);
}

// Clean-up (kvmesh.dev/hub-members): a deleted graph leaves nothing in its members.
bool HasHubFinalizer(const json& obj) {
  const json& fins = obj["metadata"].value("finalizers", json::array());
  return std::find(fins.begin(), fins.end(), json(kHubFinalizer)) != fins.end();
}

// Objects the hub wrote into a member (label kvmesh.dev/member-cluster), over the kinds it writes.
size_t HubObjects(kube::KubeClient& c) {
  size_t n = 0;
  kube::ListOptions o;
  o.label_selector = kMemberClusterLabel;
  for (const kube::ResourceRef& r : {kube::Deployments(), kube::Services(), kube::ConfigMaps()}) {
    auto l = c.List(r, "default", o);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    if (l.ok()) n += l->items.size();
  }
  return n;
}

TEST_F(HubControllerTest, DeletedGraphIsRemovedFromEveryMemberBeforeItsFinalizerGoes) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller();
  Pass(*hub);
  auto obj = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
  ASSERT_TRUE(obj.ok());
  EXPECT_TRUE(HasHubFinalizer(*obj)) << "added before the first member write";
  ASSERT_GT(HubObjects(*members_["a"].client), 0u);
  ASSERT_GT(HubObjects(*members_["b"].client), 0u);

  ASSERT_TRUE(hub_.client->Delete(kube::InferenceGraphs(), "default", "chat").ok());
  obj = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
  ASSERT_TRUE(obj.ok()) << "held by the finalizer";
  auto r = hub->SyncGraph(*obj);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->cleanup);
  EXPECT_TRUE(r->finalizer_removed);
  EXPECT_TRUE(r->abandoned.empty());
  EXPECT_EQ(HubObjects(*members_["a"].client), 0u);
  EXPECT_EQ(HubObjects(*members_["b"].client), 0u);
  EXPECT_EQ(LiveReplicas(*members_["a"].client, "chat-decode"), -1);
  auto gone = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
  EXPECT_TRUE(!gone.ok() && kube::IsNotFound(gone.status())) << "no finalizer left: the graph is gone";
}

TEST_F(HubControllerTest, DeletionWaitsForAnUnreachableMemberThenGivesUpAfterTheGrace) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller(seconds(120));
  Pass(*hub);
  members_["b"].server->Stop();
  ASSERT_TRUE(hub_.client->Delete(kube::InferenceGraphs(), "default", "chat").ok());

  // Inside the grace period: a is cleaned, b holds the finalizer and is listed as still to clean.
  HubPassResult r = Pass(*hub);
  EXPECT_TRUE(r.cleanup);
  EXPECT_FALSE(r.finalizer_removed);
  EXPECT_EQ(HubObjects(*members_["a"].client), 0u);
  json st = StatusClusters();
  ASSERT_EQ(st.size(), 1u) << st.dump();
  EXPECT_EQ(st[0]["name"], "b");
  EXPECT_EQ(st[0]["reachable"], false);
  EXPECT_TRUE(st[0].contains("unreachableSince"));
  clock_.Advance(seconds(119));
  r = Pass(*hub);
  EXPECT_FALSE(r.finalizer_removed);

  // Past it: the hub gives up on b (counted), drops its finalizer, and the graph goes.
  clock_.Advance(seconds(2));
  r = Pass(*hub);
  EXPECT_TRUE(r.finalizer_removed);
  EXPECT_EQ(r.abandoned, std::vector<std::string>{"b"});
  EXPECT_NE(metrics_.Render().find("kvmesh_hub_members_abandoned_total{cluster=\"b\"} 1"), std::string::npos)
      << metrics_.Render();
  auto gone = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
  EXPECT_TRUE(!gone.ok() && kube::IsNotFound(gone.status()));
}

TEST_F(HubControllerTest, ClusterDroppedFromTheSpecIsCleanedThenForgotten) {
  AddMember("c");
  CreateGraph("spread", 2, 4);
  auto hub = Controller();
  Pass(*hub);
  ASSERT_EQ(LiveReplicas(*members_["b"].client, "chat-decode"), 2);
  EXPECT_EQ(Entry(StatusClusters(), "b")["kubeconfigSecret"], "member-b") << "recorded for a later clean-up";

  // b leaves the spec (c joins): the hub still reaches b through the Secret it recorded.
  json patch = {{"spec", {{"placement", {{"clusters", json::array({
      {{"name", "a"}, {"kubeconfigSecret", "member-a"}, {"region", "us-east"}, {"gpuCapacity", 8}},
      {{"name", "c"}, {"kubeconfigSecret", "member-c"}, {"region", "eu-west"}, {"gpuCapacity", 8}}})},
      {"links", json::array()}}}}}};
  ASSERT_TRUE(hub_.client->Patch(kube::InferenceGraphs(), "default", "chat", kube::PatchType::kMerge, patch, {}).ok());
  clock_.Advance(seconds(30));
  HubPassResult r = Pass(*hub);
  EXPECT_FALSE(r.cleanup);
  EXPECT_EQ(HubObjects(*members_["b"].client), 0u);
  EXPECT_EQ(LiveReplicas(*members_["c"].client, "chat-decode"), 2);
  json st = StatusClusters();
  EXPECT_TRUE(Entry(st, "b").is_null()) << st.dump();
  EXPECT_FALSE(Entry(st, "c").is_null());

  // Forgotten: the next pass does not touch b at all.
  const uint64_t wb = WriteRequests(*members_["b"].server);
  clock_.Advance(seconds(30));
  Pass(*hub);
  EXPECT_EQ(WriteRequests(*members_["b"].server), wb);
}

TEST_F(HubControllerTest, GraphThatStopsBeingMultiClusterIsCleanedAndReleased) {
  CreateGraph("spread", 2, 4);
  auto hub = Controller();
  Pass(*hub);
  json patch = {{"spec", {{"placement", {{"policy", "single"}, {"clusters", json::array()}, {"links", json::array()}}}}}};
  ASSERT_TRUE(hub_.client->Patch(kube::InferenceGraphs(), "default", "chat", kube::PatchType::kMerge, patch, {}).ok());
  HubPassResult r = Pass(*hub);
  EXPECT_TRUE(r.cleanup);
  EXPECT_TRUE(r.finalizer_removed);
  EXPECT_EQ(HubObjects(*members_["a"].client), 0u);
  EXPECT_EQ(HubObjects(*members_["b"].client), 0u);
  auto obj = hub_.client->Get(kube::InferenceGraphs(), "default", "chat");
  ASSERT_TRUE(obj.ok());
  EXPECT_FALSE(HasHubFinalizer(*obj));
  EXPECT_FALSE((*obj)["status"].contains("clusters")) << obj->dump();
  // Then it is not the hub's any more: skipped, no writes.
  const uint64_t wh = WriteRequests(*hub_.server);
  r = Pass(*hub);
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(WriteRequests(*hub_.server), wh);
}

// A fake clock, heat held for 60 s, 1 s per GET.
HeatCollectorOptions ShortAgeOptions(kube::FakeClock& clock) {
  HeatCollectorOptions o;
  o.clock = &clock;
  o.max_age = seconds(60);
  o.timeout = std::chrono::milliseconds(1000);
  return o;
}

TEST(HubHeatTest, UnreachableRouterHeatIsHeldThenUnknownNeverZero) {
  kube::FakeClock clock;
  const HeatCollectorOptions o = ShortAgeOptions(clock);
  HeatCollector collector(o);
  FakeRouter r;
  r.SetHashes(Range(0, 10));
  const std::map<std::string, std::string> routers = {{"a", r.url()}};
  ClusterHeat first = collector.Collect(routers)["a"];
  EXPECT_EQ(first.state, HeatState::kWarming) << first.error;
  r.Serve(100, 1000, 500, 10);
  clock.Advance(seconds(10));
  ClusterHeat h = collector.Collect(routers)["a"];
  ASSERT_EQ(h.state, HeatState::kFresh);
  EXPECT_NEAR(h.request_rate, 10, 1e-9);
  EXPECT_NEAR(h.mean_osl, 10, 1e-9);

  PlacementInput in;
  in.clusters = {{"a", "us-east", 8, true}, {"b", "eu-west", 8, true}};
  r.Stop();
  clock.Advance(seconds(30));
  h = collector.Collect(routers)["a"];
  EXPECT_EQ(h.state, HeatState::kStale);
  EXPECT_NEAR(h.request_rate, 10, 1e-9) << "held, not zero";
  EXPECT_NE(h.error, "");
  collector.FillInput({{"a", h}}, in);
  ASSERT_EQ(in.demand.size(), 1u);
  EXPECT_EQ(in.demand[0].region, "us-east");
  ASSERT_EQ(in.heat.size(), 1u);
  EXPECT_EQ(in.heat[0].root, "cache@a");
  EXPECT_NEAR(in.heat[0].tokens, 500, 1e-9);
  EXPECT_NEAR(in.heat[0].cached_bytes["a"], 500 * o.kv_bytes_per_token, 1e-3);

  clock.Advance(seconds(31));  // last good sample now 61 s old
  h = collector.Collect(routers)["a"];
  EXPECT_EQ(h.state, HeatState::kUnknown);
  PlacementInput in2;
  in2.clusters = in.clusters;
  collector.FillInput({{"a", h}}, in2);
  EXPECT_TRUE(in2.demand.empty());
  EXPECT_TRUE(in2.heat.empty());
}

TEST(HubHeatTest, SharedBlocksCountAsCachedInTheOtherCluster) {
  HeatCollector collector;
  PlacementInput in;
  in.clusters = {{"a", "us-east", 8, true}, {"b", "eu-west", 8, true}};
  ClusterHeat a, b;
  a.state = b.state = HeatState::kFresh;
  a.has_rates = b.has_rates = true;
  a.request_rate = 4;
  a.mean_isl = 1000;
  a.cached_tokens_per_request = 800;
  auto ha = Range(0, 100);
  a.hashes = std::set<uint64_t>(ha.begin(), ha.end());
  auto hb = Range(75, 200);  // holds a quarter of a's blocks
  b.hashes = std::set<uint64_t>(hb.begin(), hb.end());
  collector.FillInput({{"a", a}, {"b", b}}, in);
  ASSERT_EQ(in.heat.size(), 1u) << "b serves no requests with cached tokens";
  const PrefixHeat& p = in.heat[0];
  EXPECT_NEAR(p.cached_bytes.at("b") / p.bytes, 0.25, 1e-9);
  EXPECT_NEAR(p.rate_by_region.at("us-east"), 4, 1e-9);
  ASSERT_EQ(in.demand.size(), 1u) << "b's zero rate adds no region";
}

TEST(HubHeatTest, HeatPerPrefixRootFromTheRoutersRootCounters) {
  kube::FakeClock clock;
  HeatCollectorOptions o;
  o.clock = &clock;
  HeatCollector collector(o);
  FakeRouter a, b;
  // Root R (blocks r[0..9]) is asked for in both regions; a caches all of it, b half of the
  // part both clusters share. b's requests under R diverge after 6 blocks.
  const std::vector<uint64_t> r = Range(1000, 1010);
  std::vector<uint64_t> rb(r.begin(), r.begin() + 6);
  rb.push_back(424242);
  const std::vector<uint64_t> q = Range(2000, 2004);  // root Q: only in the second sample
  const std::vector<uint64_t> z = Range(3000, 3003);  // root Z: a's counter goes down
  a.SetHashes(r);
  b.SetHashes(std::vector<uint64_t>(r.begin(), r.begin() + 3));
  a.SetRoots(json::array({RootsEntry(100, r), RootsEntry(50, z)}));
  b.SetRoots(json::array({RootsEntry(10, rb)}));
  const std::map<std::string, std::string> routers = {{"a", a.url()}, {"b", b.url()}};
  auto first = collector.Collect(routers);
  ASSERT_EQ(first["a"].state, HeatState::kWarming) << first["a"].error;
  EXPECT_TRUE(first["a"].has_roots);
  EXPECT_FALSE(first["a"].roots.at(r[0]).has_rate) << "one sample: no rate yet";

  a.Serve(60, 1000, 500, 10);
  b.Serve(20, 1000, 500, 10);
  a.SetRoots(json::array({RootsEntry(150, r), RootsEntry(7, q), RootsEntry(20, z)}));
  b.SetRoots(json::array({RootsEntry(30, rb)}));
  clock.Advance(seconds(10));
  auto heat = collector.Collect(routers);
  ASSERT_EQ(heat["a"].state, HeatState::kFresh);
  EXPECT_NEAR(heat["a"].roots.at(r[0]).rate, 5, 1e-9);
  EXPECT_NEAR(heat["b"].roots.at(r[0]).rate, 2, 1e-9);
  EXPECT_FALSE(heat["a"].roots.at(q[0]).has_rate) << "a root new to the list starts a baseline";
  EXPECT_FALSE(heat["a"].roots.at(z[0]).has_rate) << "a counter that went down starts a baseline";

  PlacementInput in;
  in.clusters = {{"a", "us-east", 8, true}, {"b", "eu-west", 8, true}};
  collector.FillInput(heat, in);
  ASSERT_EQ(in.heat.size(), 1u) << "only R has a rate; no per-cluster cache@ family";
  const PrefixHeat& p = in.heat[0];
  char name[32];
  std::snprintf(name, sizeof name, "root:%016llx", static_cast<unsigned long long>(r[0]));
  EXPECT_EQ(p.root, name);
  EXPECT_NEAR(p.tokens, 6 * 16, 1e-9) << "the prefix both clusters' requests share";
  EXPECT_NEAR(p.bytes, 6 * 16 * o.kv_bytes_per_token, 1e-3);
  EXPECT_NEAR(p.rate_by_region.at("us-east"), 5, 1e-9);
  EXPECT_NEAR(p.rate_by_region.at("eu-west"), 2, 1e-9);
  EXPECT_NEAR(p.cached_bytes.at("a") / p.bytes, 1.0, 1e-9);
  EXPECT_NEAR(p.cached_bytes.at("b") / p.bytes, 0.5, 1e-9);
  ASSERT_EQ(in.demand.size(), 2u);

  // Third sample: Q now has a rate too; Z (counter 20 -> 26) as well.
  a.SetRoots(json::array({RootsEntry(170, r), RootsEntry(27, q), RootsEntry(26, z)}));
  clock.Advance(seconds(10));
  heat = collector.Collect(routers);
  EXPECT_NEAR(heat["a"].roots.at(q[0]).rate, 2, 1e-9);
  EXPECT_NEAR(heat["a"].roots.at(z[0]).rate, 0.6, 1e-9);
  EXPECT_NEAR(heat["b"].roots.at(r[0]).rate, 0, 1e-9) << "b's counter did not move";
  PlacementInput in3;
  in3.clusters = in.clusters;
  collector.FillInput(heat, in3);
  EXPECT_EQ(in3.heat.size(), 3u);
}

TEST(HubHeatTest, RouterWithoutRootsFallsBackToOneFamilyPerClusterCache) {
  kube::FakeClock clock;
  HeatCollectorOptions o;
  o.clock = &clock;
  HeatCollector collector(o);
  FakeRouter a, b;
  a.SetHashes(Range(0, 10));
  b.SetHashes(Range(0, 10));
  b.SetRoots(json::array());  // a kvmesh-router that has seen no request yet
  const std::map<std::string, std::string> routers = {{"a", a.url()}, {"b", b.url()}};
  collector.Collect(routers);
  a.Serve(10, 1000, 500, 10);
  b.Serve(10, 1000, 500, 10);
  clock.Advance(seconds(10));
  auto heat = collector.Collect(routers);
  EXPECT_FALSE(heat["a"].has_roots);
  EXPECT_TRUE(heat["b"].has_roots);
  PlacementInput in;
  in.clusters = {{"a", "us-east", 8, true}, {"b", "eu-west", 8, true}};
  collector.FillInput(heat, in);
  ASSERT_EQ(in.heat.size(), 1u);
  EXPECT_EQ(in.heat[0].root, "cache@a") << "b lists roots (none hot): no cache@b family";
  EXPECT_EQ(in.demand.size(), 2u);
}

TEST(HubHeatTest, AgentsOfAClusterWithoutARouterAreMergedIntoItsHeat) {
  kube::FakeClock clock;
  const HeatCollectorOptions o = ShortAgeOptions(clock);
  HeatCollector collector(o);
  FakeAgent a0, a1;
  // Root R: a0's requests share all 10 blocks, a1's only the first 6.
  const std::vector<uint64_t> r = Range(1000, 1010);
  std::vector<uint64_t> r1(r.begin(), r.begin() + 6);
  r1.push_back(77);
  a0.SetHashes(std::vector<uint64_t>(r.begin(), r.begin() + 5));
  a1.SetHashes(std::vector<uint64_t>(r.begin() + 5, r.end()));
  a0.SetRoots(json::array({RootsEntry(10, r)}));
  a1.SetRoots(json::array({RootsEntry(4, r1)}));
  const std::map<std::string, std::vector<std::string>> agents = {{"a", {a0.url(), a1.url()}}};
  EXPECT_EQ(collector.Collect({}, agents)["a"].state, HeatState::kWarming);

  a0.Serve(50, 1000, 400, 10);
  a1.Serve(30, 2000, 0, 20);
  a0.SetRoots(json::array({RootsEntry(60, r)}));
  a1.SetRoots(json::array({RootsEntry(34, r1)}));
  clock.Advance(seconds(10));
  ClusterHeat h = collector.Collect({}, agents)["a"];
  ASSERT_EQ(h.state, HeatState::kFresh) << h.error;
  EXPECT_NEAR(h.request_rate, 8, 1e-9);
  EXPECT_NEAR(h.mean_isl, (50 * 1000 + 30 * 2000) / 80.0, 1e-9);
  EXPECT_NEAR(h.mean_osl, (50 * 10 + 30 * 20) / 80.0, 1e-9);
  EXPECT_NEAR(h.cached_tokens_per_request, 50 * 400 / 80.0, 1e-9);
  EXPECT_EQ(h.hashes.size(), 10u) << "the union of the agents' blocks";
  ASSERT_TRUE(h.has_roots);
  EXPECT_NEAR(h.roots.at(r[0]).rate, 5 + 3, 1e-9);
  EXPECT_EQ(h.roots.at(r[0]).blocks.size(), 6u) << "the prefix both agents' requests share";
  PlacementInput in;
  in.clusters = {{"a", "us-east", 8, true}, {"b", "eu-west", 8, true}};
  collector.FillInput({{"a", h}}, in);
  ASSERT_EQ(in.heat.size(), 1u);
  EXPECT_NEAR(in.heat[0].rate_by_region.at("us-east"), 8, 1e-9);
  EXPECT_NEAR(in.heat[0].cached_bytes.at("a") / in.heat[0].bytes, 1.0, 1e-9) << "held across both agents";
  ASSERT_EQ(in.demand.size(), 1u);
  EXPECT_NEAR(in.demand[0].request_rate, 8, 1e-9);

  // a1 stops answering: its last rates are held (stale) next to a0's fresh ones ...
  a1.Stop();
  a0.Serve(30, 1000, 400, 10);
  a0.SetRoots(json::array({RootsEntry(90, r)}));
  clock.Advance(seconds(30));
  h = collector.Collect({}, agents)["a"];
  EXPECT_EQ(h.state, HeatState::kFresh);
  EXPECT_NEAR(h.request_rate, 1 + 3, 1e-9);
  EXPECT_NEAR(h.roots.at(r[0]).rate, 1 + 3, 1e-9);
  EXPECT_NE(h.error.find(a1.url()), std::string::npos) << h.error;
  // ... until they are older than max_age: then the cluster's heat is a0's alone.
  clock.Advance(seconds(31));
  h = collector.Collect({}, agents)["a"];
  EXPECT_EQ(h.state, HeatState::kFresh);
  EXPECT_NEAR(h.request_rate, 0, 1e-9);
  EXPECT_EQ(h.hashes.size(), 5u);
  EXPECT_EQ(h.roots.at(r[0]).blocks.size(), 10u);

  // A URL listed as an agent that is not one (no demand object): unknown, with the reason.
  FakeRouter router;
  ClusterHeat bad = collector.Collect({}, {{"c", {router.url()}}})["c"];
  EXPECT_EQ(bad.state, HeatState::kUnknown);
  EXPECT_NE(bad.error.find("no demand object"), std::string::npos) << bad.error;
}

TEST(HubHeatTest, ParsesAnnotationsMetricsAndInventories) {
  auto ok = ParseMemberRouters(" a=http://x:1/ , b=https://y ");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->at("a"), "http://x:1");
  EXPECT_EQ(ok->at("b"), "https://y");
  for (const char* bad : {"a", "=http://x", "a=ftp://x", "a=http://x,a=http://y", "a="}) {
    auto r = ParseMemberRouters(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto agents = ParseMemberAgents("a=http://p0:8000, a=http://d0:8000/ ,b=https://x");
  ASSERT_TRUE(agents.ok()) << agents.status().ToString();
  EXPECT_EQ(agents->at("a"), (std::vector<std::string>{"http://p0:8000", "http://d0:8000"}));
  EXPECT_EQ(agents->at("b"), (std::vector<std::string>{"https://x"}));
  for (const char* bad : {"a", "a=ftp://x", "a=http://x,a=http://x/", "=http://x"}) {
    EXPECT_EQ(ParseMemberAgents(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(CountersFromMetrics("kvmesh_agent_x_total 3\n").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(CountersFromMetrics("kvmesh_router_prompt_tokens_total 0\n").ok()) << "a router that served nothing";
  EXPECT_EQ(CountersFromMetrics("kvmesh_router_requests_total{ 3\n").status().code(), StatusCode::kInvalidArgument);
  auto c = CountersFromMetrics(
      "# TYPE kvmesh_router_requests_total counter\n"
      "kvmesh_router_requests_total{endpoint=\"completions\",result=\"ok\"} 5\n"
      "kvmesh_router_requests_total{endpoint=\"chat_completions\",result=\"shed\"} 2\n"
      "kvmesh_router_requests_total{endpoint=\"chat_completions\",result=\"rejected\"} 9\n"
      "kvmesh_router_prompt_tokens_total 70\n");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->requests, 7);
  EXPECT_EQ(c->prompt_tokens, 70);
  auto h = HashesFromInventory(R"({"tiers":[{"medium":"GPU","hashes":[1,18446744073709551615]},{"medium":"CPU","hashes":[1,2]}]})");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->size(), 3u);
  EXPECT_EQ(HashesFromInventory("{}").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HashesFromInventory("[").status().code(), StatusCode::kInvalidArgument);
  auto sum = SummaryFromInventory(
      R"({"block_size":32,"tiers":[{"medium":"GPU","hashes":[1,2]}],"roots":[{"root":5,"requests":3,"blocks":[5,6]}]})");
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->block_size, 32u);
  EXPECT_TRUE(sum->has_roots);
  ASSERT_EQ(sum->roots.size(), 1u);
  EXPECT_EQ(sum->roots.at(5).requests, 3u);
  EXPECT_EQ(sum->roots.at(5).blocks, (std::vector<uint64_t>{5, 6}));
  auto agent = SummaryFromInventory(
      R"({"tiers":[],"demand":{"requests":1,"prompt_tokens":2,"cached_tokens":3,"completion_tokens":4}})");
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  EXPECT_TRUE(agent->has_demand);
  EXPECT_EQ(agent->demand.requests, 1);
  EXPECT_EQ(agent->demand.completion_tokens, 4);
  auto old_router = SummaryFromInventory(R"({"tiers":[]})");
  ASSERT_TRUE(old_router.ok());
  EXPECT_FALSE(old_router->has_roots);
  EXPECT_FALSE(old_router->has_demand);
  EXPECT_EQ(old_router->block_size, 16u);
  for (const char* bad : {
           R"({"tiers":[],"roots":{}})",                                             // not an array
           R"({"tiers":[],"roots":[{"root":5,"requests":3}]})",                     // no blocks
           R"({"tiers":[],"roots":[{"root":5,"requests":3,"blocks":[]}]})",         // empty blocks
           R"({"tiers":[],"roots":[{"root":5,"requests":3,"blocks":[6,5]}]})",      // root not first
           R"({"tiers":[],"roots":[{"root":5,"requests":-1,"blocks":[5]}]})",       // negative count
           R"({"tiers":[],"roots":[{"root":5,"requests":1,"blocks":[5]},{"root":5,"requests":2,"blocks":[5]}]})",
           R"({"tiers":[],"block_size":0})",
           R"({"tiers":[],"demand":[]})",
           R"({"tiers":[],"demand":{"requests":1,"prompt_tokens":2,"cached_tokens":3}})",
           R"({"tiers":[],"demand":{"requests":-1,"prompt_tokens":2,"cached_tokens":3,"completion_tokens":4}})",
       }) {
    EXPECT_EQ(SummaryFromInventory(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(HubConfigTest, ValidateNamesTheBadField) {
  HubConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.interval = std::chrono::milliseconds(0);
  EXPECT_NE(c.Validate().message().find("hub.interval"), std::string::npos);
  c = HubConfig{};
  c.kv_bytes_per_token = 0;
  EXPECT_NE(c.Validate().message().find("kv_bytes_per_token"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::placement
