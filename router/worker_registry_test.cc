#include "router/worker_registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/http_server.h"
#include "common/metrics.h"

namespace kvmesh::router {
namespace {

using namespace std::chrono_literals;

// Polls `cond` until true or 5 s passed.
bool WaitUntil(const std::function<bool()>& cond) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// A real HTTP server whose GET /ready answer the test flips.
class FakeWorker {
 public:
  FakeWorker() {
    server_ = std::make_unique<http::HttpServer>(http::HttpServerOptions{});
    server_->Route("GET", "/ready", [this](const http::HttpRequest&) {
      probes_.fetch_add(1);
      http::HttpResponse r;
      r.status = status_.load();
      r.body = r.status == 200 ? "ready" : "not ready";
      return r;
    });
    EXPECT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }
  ~FakeWorker() { Stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void SetStatus(int s) { status_.store(s); }
  void Stop() {
    if (server_) {
      server_->Stop(0ms);
      server_.reset();
    }
  }
  int probes() const { return probes_.load(); }

 private:
  uint16_t port_ = 0;
  std::atomic<int> status_{200};
  std::atomic<int> probes_{0};
  std::unique_ptr<http::HttpServer> server_;
};

WorkerSpec Spec(std::string url, WorkerRole role = WorkerRole::kAggregated) {
  WorkerSpec s;
  s.url = std::move(url);
  s.role = role;
  return s;
}

// ---- parsing ---------------------------------------------------------------------------------

TEST(ParseWorkerUrlTest, AcceptsUrlAndRoleAndStripsSlash) {
  auto a = ParseWorkerUrl("http://127.0.0.1:8101/");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->url, "http://127.0.0.1:8101");
  EXPECT_EQ(a->role, WorkerRole::kAggregated);
  auto b = ParseWorkerUrl("https://decode-0.svc:9000=decode");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->url, "https://decode-0.svc:9000");
  EXPECT_EQ(b->role, WorkerRole::kDecode);
  auto c = ParseWorkerUrl("http://[::1]:81=prefill");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->url, "http://[::1]:81");
  EXPECT_EQ(c->role, WorkerRole::kPrefill);
}

TEST(ParseWorkerUrlTest, RejectsMalformed) {
  for (const char* bad : {"127.0.0.1:8000", "ftp://h:1", "http://h", "http://h:", "http://h:0",
                          "http://h:70000", "http://h:80/v1", "http://:80", "http://h:8x",
                          "http://h:80=router", "http://::1:80"}) {
    auto r = ParseWorkerUrl(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseWorkerUrl("http://h:80=router").status().message().find("router"),
            std::string::npos);
  EXPECT_NE(ParseWorkerUrl("http://h").status().message().find("port"), std::string::npos);
}

TEST(ParseWorkerFileTest, ParsesYamlWithAllFields) {
  auto r = ParseWorkerFile(R"(
workers:
  - url: http://127.0.0.1:8101/
    role: prefill
    name: prefill-0
  - url: http://10.0.0.7:8000
    role: decode
    kind: vllm
    events_endpoint: tcp://10.0.0.7:5557
    replay_endpoint: tcp://10.0.0.7:5558
    topic: kv
)");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].url, "http://127.0.0.1:8101");
  EXPECT_EQ((*r)[0].role, WorkerRole::kPrefill);
  EXPECT_EQ((*r)[0].name, "prefill-0");
  EXPECT_TRUE((*r)[0].has_inventory);
  EXPECT_EQ((*r)[1].role, WorkerRole::kDecode);
  EXPECT_FALSE((*r)[1].has_inventory);
  EXPECT_EQ((*r)[1].events_endpoint, "tcp://10.0.0.7:5557");
  EXPECT_EQ((*r)[1].replay_endpoint, "tcp://10.0.0.7:5558");
  EXPECT_EQ((*r)[1].topic, "kv");
}

TEST(ParseWorkerFileTest, JsonAndEmptyForms) {
  auto j = ParseWorkerFile(R"({"workers": [{"url": "http://a:1"}, {"url": "http://b:2", "role": "decode"}]})");
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  ASSERT_EQ(j->size(), 2u);
  EXPECT_EQ((*j)[1].role, WorkerRole::kDecode);
  auto e = ParseWorkerFile("");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
  auto e2 = ParseWorkerFile("workers: []");
  ASSERT_TRUE(e2.ok());
  EXPECT_TRUE(e2->empty());
}

TEST(ParseWorkerFileTest, ClusterRoutersWithRoundTrips) {
  auto w = ParseWorkerFile(
      "workers:\n"
      "  - url: http://10.0.0.1:8000\n"
      "    kind: router\n"
      "    rtt_ms: 12.5\n"
      "    region: eu-west\n"
      "  - url: http://10.0.0.2:8000\n");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->size(), 2u);
  EXPECT_TRUE((*w)[0].is_cluster_router);
  EXPECT_TRUE((*w)[0].has_inventory);
  EXPECT_EQ((*w)[0].rtt_ms, 12.5);
  EXPECT_EQ((*w)[0].region, "eu-west");
  EXPECT_FALSE((*w)[1].is_cluster_router);
  EXPECT_EQ((*w)[1].rtt_ms, 0);
  for (const char* bad : {"-1", "abc", "1e9", ""}) {
    auto r = ParseWorkerFile(std::string("workers:\n  - url: http://10.0.0.1:8000\n    rtt_ms: '") +
                             bad + "'\n");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("workers[0].rtt_ms"), std::string::npos) << r.status().ToString();
  }
}

TEST(ParseWorkerFileTest, ErrorsNameEntryAndField) {
  struct Case {
    const char* text;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{
           {"workers:\n  - url: http://a:1\n  - url: http://a:1/\n", "workers[1].url: duplicate"},
           {"workers:\n  - url: http://a:1\n  - role: decode\n", "workers[1].url: missing"},
           {"workers:\n  - url: http://a\n", "workers[0].url"},
           {"workers:\n  - url: http://a:1\n    role: boss\n", "workers[0].role"},
           {"workers:\n  - url: http://a:1\n    kind: tgi\n", "workers[0].kind"},
           {"workers:\n  - url: http://a:1\n    colour: red\n", "unknown field 'colour'"},
           {"workers:\n  - url: http://a:1\n    kind: vllm\n", "workers[0].events_endpoint"},
           {"workers:\n  - http://a:1\n", "workers[0]"},
           {"workers: {url: x}\n", "must be a list"},
           {"servers: []\n", "unknown top-level key 'servers'"},
           {"workers: [\n", "does not parse"},
       }) {
    auto r = ParseWorkerFile(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.want), std::string::npos)
        << c.text << " -> " << r.status().message();
  }
}

// ---- LoadGuard -------------------------------------------------------------------------------

TEST(LoadGuardTest, CountsExactlyThroughMovesAndRelease) {
  auto w = std::make_shared<WorkerState>();
  {
    LoadGuard g(w, 100, 7, true);
    EXPECT_EQ(w->inflight.load(), 1u);
    EXPECT_EQ(w->prefills_inflight.load(), 1u);
    EXPECT_EQ(w->prefill_tokens.load(), 100u);
    EXPECT_EQ(w->decode_blocks.load(), 7u);
    LoadGuard h(w, 50, 3, false);
    EXPECT_EQ(w->inflight.load(), 2u);
    EXPECT_EQ(w->prefills_inflight.load(), 1u);
    EXPECT_EQ(w->prefill_tokens.load(), 150u);

    LoadGuard moved(std::move(g));  // moving transfers, never double-counts
    EXPECT_EQ(g.worker(), nullptr);
    EXPECT_EQ(moved.worker(), w.get());
    EXPECT_EQ(w->inflight.load(), 2u);
    g.Release();  // moved-from: no effect
    EXPECT_EQ(w->inflight.load(), 2u);

    moved.PrefillDone();
    EXPECT_EQ(w->prefills_inflight.load(), 0u);
    EXPECT_EQ(w->prefill_tokens.load(), 50u);
    EXPECT_EQ(w->decode_blocks.load(), 10u);
    moved.PrefillDone();  // idempotent
    EXPECT_EQ(w->prefill_tokens.load(), 50u);

    // Move-assignment releases what the target held first.
    h = std::move(moved);
    EXPECT_EQ(w->inflight.load(), 1u);
    EXPECT_EQ(w->prefill_tokens.load(), 0u);
    EXPECT_EQ(w->decode_blocks.load(), 7u);
    h.Release();
    h.Release();
    EXPECT_EQ(w->inflight.load(), 0u);
    EXPECT_EQ(w->decode_blocks.load(), 0u);
  }
  EXPECT_EQ(w->inflight.load(), 0u);
  EXPECT_EQ(w->prefills_inflight.load(), 0u);
  EXPECT_EQ(w->prefill_tokens.load(), 0u);
  EXPECT_EQ(w->decode_blocks.load(), 0u);
  {
    LoadGuard empty;
    empty.PrefillDone();
    empty.Release();
    LoadGuard null_worker(nullptr, 5, 5, true);
  }
  // Counters never underflow, even if something else zeroed them meanwhile.
  {
    LoadGuard g(w, 10, 10, true);
    w->prefill_tokens.store(3);
    w->decode_blocks.store(0);
  }
  EXPECT_EQ(w->prefill_tokens.load(), 0u);
  EXPECT_EQ(w->decode_blocks.load(), 0u);
  EXPECT_EQ(w->inflight.load(), 0u);
}

// The registry's workers carry its LoadBoard, and their guards keep its cells equal to the
// counters (prefill tokens; decode blocks + 4 per request; decode blocks) through moves,
// PrefillDone and release. The view lists the decode workers' ids for it: consecutive while no
// worker in the middle has left, and whether any has a round trip.
TEST(LoadBoardTest, GuardsKeepTheBoardInStepAndTheViewListsIds) {
  WorkerRegistryOptions o;
  o.health_interval = 1h;
  auto reg = WorkerRegistry::Create(o, nullptr);
  ASSERT_TRUE(reg.ok());
  WorkerRegistry& r = **reg;
  WorkerSpec far = Spec("http://127.0.0.1:4");
  far.rtt_ms = 3;
  r.SetWorkers({Spec("http://127.0.0.1:1"), Spec("http://127.0.0.1:2"),
                Spec("http://127.0.0.1:3", WorkerRole::kPrefill)});
  auto view = r.View();
  ASSERT_EQ(view->table->size(), 3u);
  const std::shared_ptr<WorkerState> w = view->table->at(0);
  ASSERT_NE(w->board, nullptr);
  const LoadBoard& board = *w->board;
  auto cells_match = [&](const WorkerState& x) {
    return board.Get(x.id, LoadBoard::kPrefillTokens) == x.prefill_tokens.load() &&
           board.Get(x.id, LoadBoard::kQueueUnits) ==
               x.decode_blocks.load() + 4 * uint64_t{x.inflight.load()} &&
           board.Get(x.id, LoadBoard::kDecodeBlocks) == x.decode_blocks.load();
  };
  {
    LoadGuard g(w, 100, 7, true);
    LoadGuard h(w, 50, 3, false);
    EXPECT_TRUE(cells_match(*w));
    EXPECT_EQ(board.Get(w->id, LoadBoard::kQueueUnits), 10u + 8u);
    LoadGuard moved(std::move(g));
    moved.PrefillDone();
    EXPECT_TRUE(cells_match(*w));
    EXPECT_EQ(board.Get(w->id, LoadBoard::kPrefillTokens), 50u);
    h = std::move(moved);
    EXPECT_TRUE(cells_match(*w));
    LoadGuard other(view->table->at(1), 30, 2, false);
    EXPECT_TRUE(cells_match(*view->table->at(1)));
    EXPECT_EQ(board.Get(w->id, LoadBoard::kQueueUnits), 7u + 4u);
  }
  for (const auto& x : *view->table) {
    EXPECT_TRUE(cells_match(*x));
    EXPECT_EQ(board.Get(x->id, LoadBoard::kQueueUnits), 0u);
  }
  SetLoadForTesting(*w, 5, 6, 7);
  EXPECT_TRUE(cells_match(*w));
  SetLoadForTesting(*w, 0, 0, 0);

  // The view: decode workers only (the prefill worker is not a decode candidate).
  CandidateLoads loads = view->DecodeLoads();
  EXPECT_EQ(loads.board, &board);
  ASSERT_EQ(loads.ids.size(), view->decode.size());
  for (size_t i = 0; i < loads.ids.size(); ++i) EXPECT_EQ(loads.ids[i], view->decode[i]->id);
  EXPECT_EQ(loads.max_id, view->decode.back()->id);
  EXPECT_TRUE(loads.consecutive);
  EXPECT_FALSE(loads.any_rtt);

  // A decode worker in the middle leaves: no longer consecutive; a far worker joins.
  r.SetWorkers({Spec("http://127.0.0.1:1"), Spec("http://127.0.0.1:3", WorkerRole::kPrefill),
                Spec("http://127.0.0.1:5"), far});
  view = r.View();
  loads = view->DecodeLoads();
  ASSERT_EQ(loads.ids.size(), 3u);
  EXPECT_FALSE(loads.consecutive);
  EXPECT_TRUE(loads.any_rtt);
  EXPECT_EQ(loads.max_id, view->decode.back()->id);
  for (WorkerState* x : view->decode) EXPECT_EQ(x->board.get(), &board);
}

// ---- registry: health and breaker --------------------------------------------------------------

WorkerRegistryOptions OptionsFor(const std::vector<std::string>& urls) {
  WorkerRegistryOptions o;
  for (const auto& u : urls) {
    auto s = ParseWorkerUrl(u);
    EXPECT_TRUE(s.ok());
    o.static_workers.push_back(*s);
  }
  o.health_interval = 20ms;
  o.health_timeout = 500ms;
  return o;
}

TEST(WorkerRegistryTest, DetectsReadinessFlipsAndDeadServer) {
  FakeWorker fw;
  MetricsRegistry metrics;
  auto reg = WorkerRegistry::Create(OptionsFor({fw.url()}), &metrics);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  ASSERT_TRUE((*reg)->Start().ok());
  auto table = (*reg)->Table();
  ASSERT_EQ(table->size(), 1u);
  WorkerState& w = *(*table)[0];
  EXPECT_EQ(w.spec.name, fw.url().substr(7));  // host:port by default
  EXPECT_TRUE(w.ready.load());  // Start() probed once before returning
  EXPECT_TRUE((*reg)->Routable(w));
  EXPECT_NE(metrics.Render().find(R"(kvmesh_router_workers{role="aggregated",state="ready"} 1)"),
            std::string::npos);

  fw.SetStatus(503);
  ASSERT_TRUE(WaitUntil([&] { return !w.ready.load(); }));
  EXPECT_FALSE((*reg)->Routable(w));
  fw.SetStatus(200);
  ASSERT_TRUE(WaitUntil([&] { return w.ready.load() && (*reg)->Routable(w); }));
  fw.Stop();  // connection refused
  ASSERT_TRUE(WaitUntil([&] { return !w.ready.load(); }));
  EXPECT_FALSE((*reg)->Routable(w));
  ASSERT_TRUE(WaitUntil([&] {
    return metrics.Render().find("kvmesh_router_worker_probe_failures_total ") != std::string::npos;
  }));
  (*reg)->Stop();
}

TEST(WorkerRegistryTest, BreakerOpensHalfOpensAdmitsOneAndCloses) {
  FakeWorker fw;
  MetricsRegistry metrics;
  auto o = OptionsFor({fw.url()});
  o.health_interval = 1h;  // only Start()'s probe: the test drives the breaker alone
  o.breaker_failures = 3;
  o.breaker_open = 100ms;
  auto reg = WorkerRegistry::Create(o, &metrics);
  ASSERT_TRUE(reg.ok());
  WorkerRegistry& r = **reg;
  ASSERT_TRUE(r.Start().ok());
  auto w = r.Table()->at(0);
  ASSERT_TRUE(w->ready.load());

  // A success resets the consecutive count.
  r.ReportFailure(*w);
  r.ReportFailure(*w);
  r.ReportSuccess(*w);
  r.ReportFailure(*w);
  r.ReportFailure(*w);
  EXPECT_EQ(w->breaker_state(), BreakerState::kClosed);
  EXPECT_TRUE(r.Admit(*w));
  EXPECT_TRUE(r.Routable(*w));
  r.ReportFailure(*w);
  EXPECT_EQ(w->breaker_state(), BreakerState::kOpen);
  EXPECT_FALSE(r.Routable(*w));
  EXPECT_FALSE(r.Admit(*w));
  EXPECT_NE(metrics.Render().find(R"(kvmesh_router_workers{role="aggregated",state="open"} 1)"),
            std::string::npos);

  // After breaker_open: routable again, and exactly one request is admitted.
  ASSERT_TRUE(WaitUntil([&] { return r.Routable(*w); }));
  EXPECT_TRUE(r.Admit(*w));
  EXPECT_EQ(w->breaker_state(), BreakerState::kHalfOpen);
  EXPECT_FALSE(r.Admit(*w));
  EXPECT_FALSE(r.Routable(*w));
  // The trial fails: open again.
  r.ReportFailure(*w);
  EXPECT_EQ(w->breaker_state(), BreakerState::kOpen);
  EXPECT_FALSE(r.Admit(*w));

  ASSERT_TRUE(WaitUntil([&] { return r.Routable(*w); }));
  // Several threads race for the half-open slot: exactly one wins.
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i) {
    ts.emplace_back([&] {
      if (r.Admit(*w)) admitted.fetch_add(1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(admitted.load(), 1);
  r.ReportSuccess(*w);
  EXPECT_EQ(w->breaker_state(), BreakerState::kClosed);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(r.Admit(*w));
  EXPECT_TRUE(r.Routable(*w));

  const std::string text = metrics.Render();
  EXPECT_NE(text.find(R"(kvmesh_router_worker_breaker_transitions_total{to="open"} 2)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(kvmesh_router_worker_breaker_transitions_total{to="half_open"} 2)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(kvmesh_router_worker_breaker_transitions_total{to="closed"} 1)"),
            std::string::npos) << text;
}

TEST(WorkerRegistryTest, ProbesDriveTheBreaker) {
  FakeWorker fw;
  auto o = OptionsFor({fw.url()});
  o.breaker_failures = 2;
  o.breaker_open = 50ms;
  auto reg = WorkerRegistry::Create(o, nullptr);
  ASSERT_TRUE(reg.ok());
  WorkerRegistry& r = **reg;
  ASSERT_TRUE(r.Start().ok());
  auto w = r.Table()->at(0);
  fw.SetStatus(503);  // failing probes open the breaker
  ASSERT_TRUE(WaitUntil([&] { return w->breaker_state() == BreakerState::kOpen; }));
  fw.SetStatus(200);  // a half-open probe that succeeds closes it
  ASSERT_TRUE(WaitUntil([&] { return w->breaker_state() == BreakerState::kClosed; }));
  EXPECT_TRUE(r.Routable(*w));
}

TEST(WorkerRegistryTest, InflightLimitMakesUnroutable) {
  FakeWorker fw;
  auto o = OptionsFor({fw.url()});
  o.max_inflight_per_worker = 2;
  auto reg = WorkerRegistry::Create(o, nullptr);
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE((*reg)->Start().ok());
  auto w = (*reg)->Table()->at(0);
  LoadGuard a(w, 1, 1, true);
  EXPECT_TRUE((*reg)->Routable(*w));
  LoadGuard b(w, 1, 1, true);
  EXPECT_FALSE((*reg)->Routable(*w));
  b.Release();
  EXPECT_TRUE((*reg)->Routable(*w));
}

// ---- membership --------------------------------------------------------------------------------

TEST(WorkerRegistryTest, RejectsBadStaticWorkers) {
  WorkerRegistryOptions o;
  o.static_workers.push_back(Spec("http://a:1"));
  o.static_workers.push_back(Spec("http://a:1/"));
  auto r = WorkerRegistry::Create(o, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("duplicate"), std::string::npos);
  WorkerRegistryOptions o2;
  o2.static_workers.push_back(Spec("a:1"));
  EXPECT_FALSE(WorkerRegistry::Create(o2, nullptr).ok());
  WorkerRegistryOptions o3;
  o3.file = "/nonexistent/workers.yaml";
  EXPECT_FALSE(WorkerRegistry::Create(o3, nullptr).ok());
}

TEST(WorkerRegistryTest, SetWorkersKeepsIdsAndStaticWorkers) {
  auto o = OptionsFor({"http://127.0.0.1:1"});
  o.health_interval = 1h;
  std::mutex mu;
  std::vector<std::pair<std::vector<kv::WorkerId>, std::vector<kv::WorkerId>>> changes;
  o.on_change = [&](const WorkerTable& added, const std::vector<kv::WorkerId>& removed) {
    std::lock_guard lock(mu);
    std::vector<kv::WorkerId> a;
    for (const auto& w : added) a.push_back(w->id);
    changes.emplace_back(a, removed);
  };
  auto reg = WorkerRegistry::Create(o, nullptr);
  ASSERT_TRUE(reg.ok());
  WorkerRegistry& r = **reg;
  ASSERT_TRUE(r.Start().ok());
  const kv::WorkerId static_id = r.Table()->at(0)->id;
  ASSERT_EQ(changes.size(), 1u);  // the initial workers
  EXPECT_EQ(changes[0].first, std::vector<kv::WorkerId>{static_id});

  r.SetWorkers({Spec("http://127.0.0.1:2/"), Spec("http://127.0.0.1:3")});
  auto t = r.Table();
  ASSERT_EQ(t->size(), 3u);
  const kv::WorkerId id2 = t->at(1)->id, id3 = t->at(2)->id;
  EXPECT_EQ(t->at(1)->spec.url, "http://127.0.0.1:2");
  EXPECT_NE(id2, static_id);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[1].first.size(), 2u);

  // Same set again: no change, no callback.
  r.SetWorkers({Spec("http://127.0.0.1:3"), Spec("http://127.0.0.1:2")});
  EXPECT_EQ(changes.size(), 2u);
  EXPECT_EQ(r.Table(), t);  // the snapshot was not rebuilt

  // Drop :2, change :3's role (a new identity), keep static.
  auto old3 = r.Find(id3);
  r.SetWorkers({Spec("http://127.0.0.1:3", WorkerRole::kDecode)});
  auto t2 = r.Table();
  ASSERT_EQ(t2->size(), 2u);
  EXPECT_EQ(t2->at(0)->id, static_id);
  EXPECT_NE(t2->at(1)->id, id3);
  EXPECT_EQ(t2->at(1)->spec.role, WorkerRole::kDecode);
  EXPECT_TRUE(old3->removed.load());
  EXPECT_EQ(r.Find(id2), nullptr);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[2].second.size(), 2u);
  // The old snapshot is still intact for whoever holds it.
  EXPECT_EQ(t->size(), 3u);
  EXPECT_EQ(t->at(1)->id, id2);

  // Re-adding a removed URL never reuses an id.
  r.SetWorkers({Spec("http://127.0.0.1:2")});
  auto t3 = r.Table();
  ASSERT_EQ(t3->size(), 2u);
  EXPECT_GT(t3->at(1)->id, t2->at(1)->id);
}

// The per-request candidate scan: roles from the view, routability, exclusion and skip, in
// table order; the view follows membership changes and old views stay intact.
TEST(WorkerRegistryTest, ViewSelectsRoutableCandidatesByRole) {
  WorkerRegistryOptions o;
  o.health_interval = 1h;
  o.max_inflight_per_worker = 4;
  const WorkerRole roles[] = {WorkerRole::kAggregated, WorkerRole::kPrefill, WorkerRole::kDecode,
                              WorkerRole::kAggregated, WorkerRole::kPrefill, WorkerRole::kDecode,
                              WorkerRole::kDecode};
  for (size_t i = 0; i < std::size(roles); ++i) {
    o.static_workers.push_back(Spec("http://127.0.0.1:" + std::to_string(101 + i), roles[i]));
  }
  auto reg = WorkerRegistry::Create(o, nullptr);  // not started: readiness is set below
  ASSERT_TRUE(reg.ok());
  WorkerRegistry& r = **reg;
  const auto view = r.View();
  ASSERT_EQ(view->table, r.Table());
  const WorkerTable& t = *view->table;
  ASSERT_EQ(t.size(), std::size(roles));
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i]->role, roles[i]) << i;
  auto ids = [](const std::vector<WorkerState*>& ws) {
    std::vector<kv::WorkerId> out;
    for (const WorkerState* w : ws) out.push_back(w->id);
    return out;
  };
  const kv::WorkerId id0 = t[0]->id;
  auto id = [&](size_t i) { return id0 + static_cast<kv::WorkerId>(i); };
  EXPECT_EQ(ids(view->decode), (std::vector<kv::WorkerId>{id(0), id(2), id(3), id(5), id(6)}));
  EXPECT_EQ(ids(view->prefill), (std::vector<kv::WorkerId>{id(1), id(4)}));

  std::vector<WorkerState*> out{t[1].get()}, excluded{t[1].get()};
  const std::unordered_set<kv::WorkerId> none;
  r.SelectCandidates(*view, CandidateKind::kDecode, none, nullptr, out, &excluded);
  EXPECT_TRUE(out.empty());  // nobody is ready yet; both lists were cleared
  EXPECT_TRUE(excluded.empty());

  for (const auto& w : t) w->ready = true;
  t[2]->inflight = 4;                                                  // at the limit
  t[3]->breaker = static_cast<int>(BreakerState::kOpen);               // open for an hour
  t[3]->open_until_ns = std::numeric_limits<int64_t>::max();
  t[5]->breaker = static_cast<int>(BreakerState::kHalfOpen);           // probe slot free
  r.SelectCandidates(*view, CandidateKind::kDecode, none, nullptr, out, &excluded);
  EXPECT_EQ(ids(out), (std::vector<kv::WorkerId>{id(0), id(5), id(6)}));
  t[5]->half_open_probe_taken = true;
  const std::unordered_set<kv::WorkerId> bad{id(0), id(2)};
  r.SelectCandidates(*view, CandidateKind::kDecode, bad, t[6].get(), out, &excluded);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(ids(excluded), std::vector<kv::WorkerId>{id(0)});  // routable, but excluded
  r.SelectCandidates(*view, CandidateKind::kDecode, bad, nullptr, out, nullptr);
  EXPECT_EQ(ids(out), std::vector<kv::WorkerId>{id(6)});
  // The same as filtering the table with Routable().
  for (const WorkerState* w : out) EXPECT_TRUE(r.Routable(*w));
  r.SelectCandidates(*view, CandidateKind::kRemotePrefill, none, t[1].get(), out, nullptr);
  EXPECT_EQ(ids(out), std::vector<kv::WorkerId>{id(4)});

  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(view->Find(t[i].get()), t[i]) << i;
  WorkerState stranger;
  stranger.id = id(3);  // an id of the table, but not its object
  EXPECT_EQ(view->Find(&stranger), nullptr);
  EXPECT_EQ(view->Find(nullptr), nullptr);

  // A dynamic worker joins (its probe fails: not ready); the old view is unchanged.
  r.SetWorkers({Spec("http://127.0.0.1:1", WorkerRole::kPrefill)});
  const auto view2 = r.View();
  EXPECT_EQ(view2->table, r.Table());
  EXPECT_EQ(view2->table->size(), t.size() + 1);
  EXPECT_EQ(view2->prefill.size(), 3u);
  EXPECT_EQ(view2->prefill.back()->role, WorkerRole::kPrefill);
  EXPECT_EQ(view->prefill.size(), 2u);
  EXPECT_EQ(view2->Find(view2->prefill.back()), view2->table->back());
}

class WorkersFile {
 public:
  WorkersFile() {
    char tmpl[] = "/tmp/kvmesh_workers_XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/workers.yaml";
  }
  ~WorkersFile() { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return path_; }
  // Atomic replace (write + rename), as kvmesh up and the operator do.
  void Write(const std::string& text) {
    const std::string tmp = path_ + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
    }
    std::filesystem::rename(tmp, path_);
  }

 private:
  std::string dir_;
  std::string path_;
};

TEST(WorkerRegistryTest, WatchesWorkersFile) {
  FakeWorker a, b;
  WorkersFile file;
  file.Write("workers:\n  - url: " + a.url() + "\n");
  WorkerRegistryOptions o;
  o.file = file.path();
  o.file_poll_interval = 10ms;
  o.health_interval = 20ms;
  std::mutex mu;
  std::vector<kv::WorkerId> added_ids, removed_ids;
  o.on_change = [&](const WorkerTable& added, const std::vector<kv::WorkerId>& removed) {
    std::lock_guard lock(mu);
    for (const auto& w : added) added_ids.push_back(w->id);
    removed_ids.insert(removed_ids.end(), removed.begin(), removed.end());
  };
  auto reg = WorkerRegistry::Create(o, nullptr);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  WorkerRegistry& r = **reg;
  ASSERT_TRUE(r.Start().ok());
  ASSERT_EQ(r.Table()->size(), 1u);
  const kv::WorkerId id_a = r.Table()->at(0)->id;
  EXPECT_TRUE(r.Table()->at(0)->ready.load());

  // Add b.
  file.Write("workers:\n  - url: " + a.url() + "\n  - url: " + b.url() + "\n    role: decode\n");
  ASSERT_TRUE(WaitUntil([&] { return r.Table()->size() == 2; }));
  EXPECT_EQ(r.Table()->at(0)->id, id_a);
  auto wb = r.Table()->at(1);
  EXPECT_EQ(wb->spec.role, WorkerRole::kDecode);
  EXPECT_TRUE(WaitUntil([&] { return wb->ready.load(); }));

  // A file that does not parse is ignored: membership stays. (A negative: give the watcher
  // many poll intervals to act on it, then check nothing moved.)
  file.Write("workers: [\n  - url: oops");
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(r.Table()->size(), 2u);
  EXPECT_EQ(r.Table()->at(0)->id, id_a);
  EXPECT_EQ(r.Table()->at(1)->id, wb->id);
  // Duplicate URLs are a parse error too.
  file.Write("workers:\n  - url: " + a.url() + "\n  - url: " + a.url() + "/\n");
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(r.Table()->size(), 2u);

  // Remove a.
  file.Write("workers:\n  - url: " + b.url() + "\n    role: decode\n");
  ASSERT_TRUE(WaitUntil([&] { return r.Table()->size() == 1; }));
  EXPECT_EQ(r.Table()->at(0)->id, wb->id);
  // on_change runs after the new table is published (worker_registry.h), so the test can see
  // the table before the callback ran: wait for it.
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard lock(mu);
    return !removed_ids.empty();
  }));
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(removed_ids, std::vector<kv::WorkerId>{id_a});
    ASSERT_EQ(added_ids.size(), 2u);  // initial a, then b
  }
  r.Stop();
}

}  // namespace
}  // namespace kvmesh::router
