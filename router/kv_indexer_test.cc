#include "router/kv_indexer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/http_server.h"
#include "common/metrics.h"
#include "kv/kv_event_recorder.h"
#include "kv/kv_event_zmq.h"
#include "kv/block_hash.h"
#include "kv/prefix_index.h"

namespace kvmesh::router {
namespace {

using namespace std::chrono_literals;

bool WaitUntil(const std::function<bool()>& cond) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// A worker as the router sees it: a real KvEventRecorder + KvEventPublisher (PUB + replay
// ROUTER, served by a thread) and a real HTTP server answering GET /v1/kv/inventory from the
// set of blocks the test emitted. Publishing can be suppressed to simulate PUB drops.
class FakeAgent {
 public:
  struct Options {
    size_t replay_capacity = 1000;
    uint32_t block_size = 16;
    bool replay = true;
    bool inventory = true;
  };
  static Options WithReplayCapacity(size_t n) {
    Options o;
    o.replay_capacity = n;
    return o;
  }
  static Options WithBlockSize(uint32_t n) {
    Options o;
    o.block_size = n;
    return o;
  }
  static Options VllmLike() {
    Options o;
    o.replay = false;
    o.inventory = false;
    return o;
  }
  explicit FakeAgent(Options o) : options_(o) {
    server_ = std::make_unique<http::HttpServer>(http::HttpServerOptions{});
    server_->Route("GET", "/v1/kv/inventory", [this](const http::HttpRequest&) {
      inventory_requests_.fetch_add(1);
      if (!options_.inventory) return http::JsonErrorResponse(404, "no", "not_found_error", "nf");
      std::lock_guard lock(mu_);
      nlohmann::json j = {
          {"agent_id", agent_id_},
          {"block_size", options_.block_size},
          {"seq", static_cast<int64_t>((numbering_ ? numbering_ : recorder_)->next_seq()) - 1},
          {"events_endpoint", publisher_->endpoint()},
          {"replay_endpoint", publisher_->replay_endpoint()},
          {"topic", "kv-events"},
          {"tiers", nlohmann::json::array({{{"medium", "GPU"},
                                            {"num_blocks_total", 1000},
                                            {"num_blocks_used", held_.size()},
                                            {"hashes", std::vector<uint64_t>(held_.begin(),
                                                                             held_.end())}}})},
      };
      return http::JsonResponse(200, j.dump());
    });
    EXPECT_TRUE(server_->Start().ok());
    StartEvents("agent-1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0");
  }
  ~FakeAgent() {
    StopEvents();
    server_->Stop(0ms);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  std::string events_endpoint() const { return publisher_->endpoint(); }
  std::string replay_endpoint() const { return publisher_->replay_endpoint(); }
  int inventory_requests() const { return inventory_requests_.load(); }
  std::set<uint64_t> held() const {
    std::lock_guard lock(mu_);
    return held_;
  }

  // Emits one BlockStored of `hashes` (a chain) and flushes it as one batch.
  void Store(std::vector<uint64_t> hashes, bool publish = true) {
    kv::BlockStored e;
    e.hashes.assign(hashes.begin(), hashes.end());
    e.block_size = options_.block_size;
    Emit(kv::KvEvent(std::move(e)), hashes, {}, publish);
  }
  // A BlockStored as vLLM publishes it: its own hashes, the blocks' token ids, a parent hash.
  void StoreWithTokens(std::vector<uint64_t> hashes, std::vector<uint32_t> tokens,
                       std::optional<uint64_t> parent) {
    kv::BlockStored e;
    e.hashes.assign(hashes.begin(), hashes.end());
    e.token_ids = std::move(tokens);
    e.parent_hash = parent;
    e.block_size = options_.block_size;
    Emit(kv::KvEvent(std::move(e)), hashes, {}, true);
  }
  void Remove(std::vector<uint64_t> hashes, bool publish = true) {
    kv::BlockRemoved e;
    e.hashes.assign(hashes.begin(), hashes.end());
    Emit(kv::KvEvent(std::move(e)), {}, hashes, publish);
  }
  // Publishes a frame whose payload is not msgpack.
  void PublishGarbage() {
    std::lock_guard lock(mu_);
    ASSERT_TRUE(publisher_->Publish(777, std::string("\xc1\xc1 not msgpack", 14)).ok());
  }
  uint64_t next_seq() const {
    std::lock_guard lock(mu_);
    return (numbering_ ? numbering_ : recorder_)->next_seq();
  }

  // A restart whose first batches reach the subscriber on the live connection: numbering starts
  // at 0 again with a new agent_id and an empty cache, on the same PUB socket (replay keeps
  // answering from the old recorder, so the test must not cause gaps afterwards).
  void RestartInPlace() {
    std::lock_guard lock(mu_);
    numbering_ = std::make_unique<kv::KvEventRecorder>();
    agent_id_ = "agent-2";
    held_.clear();
  }

  // Process restart: same HTTP URL and event ports, new agent_id, empty cache, seqs from 0.
  void Restart() {
    const std::string ev = publisher_->endpoint(), rp = publisher_->replay_endpoint();
    StopEvents();
    {
      std::lock_guard lock(mu_);
      held_.clear();
      numbering_.reset();
    }
    StartEvents("agent-2", ev, rp);
  }

 private:
  void Emit(kv::KvEvent event, const std::vector<uint64_t>& add, const std::vector<uint64_t>& del,
            bool publish) {
    std::lock_guard lock(mu_);
    kv::KvEventRecorder& rec = numbering_ ? *numbering_ : *recorder_;
    rec.Emit(std::move(event));
    for (auto h : add) held_.insert(h);
    for (auto h : del) held_.erase(h);
    for (auto& b : rec.Flush(1700000000.0)) {
      if (publish) {
        ASSERT_TRUE(publisher_->Publish(b).ok());
      }
    }
  }
  void StartEvents(const std::string& agent_id, const std::string& ev, const std::string& rp) {
    std::lock_guard lock(mu_);
    agent_id_ = agent_id;
    kv::KvEventRecorderOptions ro;
    ro.replay_capacity = options_.replay_capacity;
    recorder_ = std::make_unique<kv::KvEventRecorder>(ro);
    kv::KvEventPublisherOptions po;
    po.endpoint = ev;
    po.replay_endpoint = options_.replay ? rp : "";
    po.topic = "kv-events";
    auto p = kv::KvEventPublisher::Create(po, recorder_.get());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    publisher_ = std::move(*p);
    stop_ = false;
    if (options_.replay) {
      replay_thread_ = std::thread([this] {
        while (!stop_.load()) (void)publisher_->ServeReplay(20);
      });
    }
  }
  void StopEvents() {
    stop_ = true;
    if (replay_thread_.joinable()) replay_thread_.join();
    std::lock_guard lock(mu_);
    publisher_.reset();
    recorder_.reset();
  }

  const Options options_;
  mutable std::mutex mu_;
  std::string agent_id_;
  std::unique_ptr<kv::KvEventRecorder> recorder_;
  std::unique_ptr<kv::KvEventRecorder> numbering_;  // set by RestartInPlace
  std::unique_ptr<kv::KvEventPublisher> publisher_;
  std::set<uint64_t> held_;
  std::atomic<bool> stop_{false};
  std::thread replay_thread_;
  std::atomic<int> inventory_requests_{0};
  std::unique_ptr<http::HttpServer> server_;
};

std::shared_ptr<WorkerState> Worker(kv::WorkerId id, const std::string& url) {
  auto w = std::make_shared<WorkerState>();
  w->id = id;
  w->spec.url = url;
  return w;
}

kv::QueryOptions AllWorkers() {
  kv::QueryOptions o;
  o.all_workers = true;
  return o;
}

uint64_t TotalBlocks(const kv::PrefixIndex& index, kv::WorkerId id) {
  auto r = index.Query({}, AllWorkers());
  for (const auto& m : r.workers) {
    if (m.worker == id) return m.total_blocks;
  }
  return 0;
}

bool Holds(const kv::PrefixIndex& index, kv::WorkerId id, uint64_t hash) {
  std::vector<kv::BlockHash> one{hash};
  for (const auto& m : index.Query(one).workers) {
    if (m.worker == id) return m.matched_blocks == 1;
  }
  return false;
}

// The index's view of worker `id` equals exactly `held`.
bool IndexEquals(const kv::PrefixIndex& index, kv::WorkerId id, const std::set<uint64_t>& held) {
  if (TotalBlocks(index, id) != held.size()) return false;
  for (auto h : held) {
    if (!Holds(index, id, h)) return false;
  }
  return true;
}

KvIndexerOptions FastOptions() {
  KvIndexerOptions o;
  o.retry_interval = 50ms;
  o.replay_timeout = 1000ms;
  o.inventory_timeout = 1000ms;
  return o;
}

// Publishes chains until the live stream demonstrably reaches the indexer (PUB/SUB slow joiner).
void WarmUp(FakeAgent& agent, kv::PrefixIndex& index, kv::WorkerId id, uint64_t base) {
  for (uint64_t k = 0; k < 100; ++k) {
    agent.Store({base + k});
    auto deadline = std::chrono::steady_clock::now() + 100ms;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Holds(index, id, base + k)) return;
      std::this_thread::sleep_for(2ms);
    }
  }
  FAIL() << "live events never reached the index";
}

TEST(KvIndexerTest, ColdStartFromInventoryThenLiveEvents) {
  FakeAgent agent({});
  agent.Store({1, 2, 3});  // published before anyone listens: only the inventory has them
  agent.Store({4});
  kv::PrefixIndex index;
  MetricsRegistry metrics;
  KvIndexer indexer(&index, FastOptions(), &metrics);
  indexer.AddWorker(Worker(7, agent.url()));
  indexer.AddWorker(Worker(7, agent.url()));  // no-op
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(7); }));
  EXPECT_TRUE(IndexEquals(index, 7, {1, 2, 3, 4}));
  EXPECT_EQ(indexer.Stats().resyncs, 1u);
  EXPECT_EQ(indexer.Stats().batches, 0u);
  std::vector<kv::BlockHash> chain{1, 2, 3};
  auto q = index.Query(chain);
  ASSERT_EQ(q.workers.size(), 1u);
  EXPECT_EQ(q.workers[0].matched_blocks, 3u);

  WarmUp(agent, index, 7, 100);
  agent.Store({10, 11});
  agent.Remove({2});
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 7, agent.held()); }));
  EXPECT_FALSE(Holds(index, 7, 2));
  EXPECT_GE(indexer.Stats().batches, 2u);
  EXPECT_EQ(indexer.Stats().decode_errors, 0u);
  ASSERT_TRUE(WaitUntil([&] {
    return metrics.Render().find("kvmesh_router_kv_event_batches_total") != std::string::npos;
  }));
  const std::string text = metrics.Render();
  EXPECT_NE(text.find("kvmesh_router_kv_event_resyncs_total 1"), std::string::npos) << text;
  EXPECT_NE(text.find("kvmesh_router_kv_index_blocks "), std::string::npos) << text;
}

TEST(KvIndexerTest, GapIsFilledByReplay) {
  FakeAgent agent({});
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, agent.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1); }));
  WarmUp(agent, index, 1, 1000);
  const KvIndexerStats before = indexer.Stats();

  agent.Store({20, 21}, /*publish=*/false);  // seq N: lost on the wire
  agent.Store({22});                         // seq N+1 arrives: gap -> replay N
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, agent.held()); }));
  const KvIndexerStats after = indexer.Stats();
  EXPECT_EQ(after.gaps - before.gaps, 1u);
  EXPECT_EQ(after.replays - before.replays, 1u);
  EXPECT_EQ(after.resyncs, before.resyncs);  // no inventory needed
}

TEST(KvIndexerTest, ReplayWindowExceededResyncsFromInventory) {
  FakeAgent agent(FakeAgent::WithReplayCapacity(3));
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, agent.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1); }));
  WarmUp(agent, index, 1, 1000);
  const KvIndexerStats before = indexer.Stats();
  const int inventories = agent.inventory_requests();

  for (uint64_t k = 0; k < 6; ++k) agent.Store({30 + k}, /*publish=*/false);  // 6 lost > 3 kept
  agent.Remove({1000}, /*publish=*/false);
  agent.Store({40});
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, agent.held()); }));
  const KvIndexerStats after = indexer.Stats();
  EXPECT_GE(after.gaps - before.gaps, 1u);
  EXPECT_EQ(after.replays, before.replays);
  EXPECT_EQ(after.resyncs - before.resyncs, 1u);
  EXPECT_GT(agent.inventory_requests(), inventories);
}

TEST(KvIndexerTest, CorruptFrameIsCountedAndIgnored) {
  FakeAgent agent({});
  FakeAgent other({});
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, agent.url()));
  indexer.AddWorker(Worker(2, other.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1) && indexer.Synced(2); }));
  WarmUp(agent, index, 1, 1000);
  WarmUp(other, index, 2, 5000);
  const KvIndexerStats before = indexer.Stats();

  agent.PublishGarbage();
  ASSERT_TRUE(WaitUntil([&] { return indexer.Stats().decode_errors == before.decode_errors + 1; }));
  agent.Store({50});
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, agent.held()); }));
  EXPECT_TRUE(IndexEquals(index, 2, other.held()));  // the other worker is untouched
  const KvIndexerStats after = indexer.Stats();
  EXPECT_EQ(after.resyncs, before.resyncs);  // nothing was actually lost
}

TEST(KvIndexerTest, WorkerRestartResyncs) {
  FakeAgent agent({});
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, agent.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1); }));
  WarmUp(agent, index, 1, 1000);
  for (uint64_t k = 0; k < 5; ++k) agent.Store({60 + k});
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, agent.held()); }));
  const uint64_t resyncs = indexer.Stats().resyncs;

  agent.Restart();  // seqs restart at 0, new agent_id, empty cache
  ASSERT_EQ(agent.next_seq(), 0u);
  agent.Store({70});
  agent.Store({71});
  // Seen either as seq going backwards or, when those batches were lost to the SUB's reconnect
  // (usual: the PUB socket is new), by the idle inventory check (new agent_id): both resync.
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, {70, 71}); }));
  EXPECT_GT(indexer.Stats().resyncs, resyncs);
  EXPECT_FALSE(Holds(index, 1, 60));
}

TEST(KvIndexerTest, SeqGoingBackwardsResyncs) {
  FakeAgent agent({});
  kv::PrefixIndex index;
  KvIndexerOptions o = FastOptions();
  o.retry_interval = 1000ms;  // idle check after 10 s: only the live seq can trigger the resync
  KvIndexer indexer(&index, o, nullptr);
  indexer.AddWorker(Worker(1, agent.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1); }));
  WarmUp(agent, index, 1, 1000);
  for (uint64_t k = 0; k < 5; ++k) agent.Store({60 + k});
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, agent.held()); }));
  const uint64_t resyncs = indexer.Stats().resyncs;

  agent.RestartInPlace();
  agent.Store({70});  // seq 0 again
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, {70}); }));
  EXPECT_EQ(indexer.Stats().resyncs, resyncs + 1);
  agent.Store({71});  // seq 1: applied live after the resync
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 1, {70, 71}); }));
}

TEST(KvIndexerTest, RemoveWorkerDropsOnlyItsBlocks) {
  FakeAgent a({}), b({});
  a.Store({1, 2, 3});
  b.Store({1, 2, 9});
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, a.url()));
  indexer.AddWorker(Worker(2, b.url()));
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(1) && indexer.Synced(2); }));
  ASSERT_TRUE(IndexEquals(index, 1, {1, 2, 3}));
  ASSERT_TRUE(IndexEquals(index, 2, {1, 2, 9}));
  indexer.RemoveWorker(1);
  EXPECT_FALSE(indexer.Synced(1));
  EXPECT_EQ(TotalBlocks(index, 1), 0u);
  EXPECT_FALSE(Holds(index, 1, 1));
  EXPECT_TRUE(IndexEquals(index, 2, {1, 2, 9}));
  // Events of the removed worker no longer reach the index.
  a.Store({4});
  WarmUp(b, index, 2, 5000);
  EXPECT_EQ(TotalBlocks(index, 1), 0u);
}

TEST(KvIndexerTest, BlockSizeMismatchIsNotIndexed) {
  FakeAgent agent(FakeAgent::WithBlockSize(32));
  agent.Store({1});
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);  // block_size 16
  indexer.AddWorker(Worker(1, agent.url()));
  // Endpoint lookup + at least two snapshot attempts: it keeps retrying, never indexes.
  ASSERT_TRUE(WaitUntil([&] { return agent.inventory_requests() >= 3; }));
  EXPECT_FALSE(indexer.Synced(1));
  EXPECT_EQ(TotalBlocks(index, 1), 0u);
}

TEST(KvIndexerTest, VllmStyleWorkerWithoutInventory) {
  FakeAgent agent(FakeAgent::VllmLike());
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  auto w = Worker(3, agent.url());
  w->spec.has_inventory = false;
  // A wildcard bind address as a vLLM pod would report it: the worker URL's host is used.
  const std::string ep = agent.events_endpoint();
  w->spec.events_endpoint = "tcp://*:" + ep.substr(ep.rfind(':') + 1);
  w->spec.topic = "kv-events";
  indexer.AddWorker(w);
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(3); }));
  WarmUp(agent, index, 3, 1000);
  agent.Store({80, 81});
  ASSERT_TRUE(WaitUntil([&] { return Holds(index, 3, 80) && Holds(index, 3, 81); }));
  EXPECT_EQ(agent.inventory_requests(), 0);
  const uint64_t resyncs = indexer.Stats().resyncs;

  // A gap with no replay and no inventory: clear the worker and continue from live events.
  agent.Store({82}, /*publish=*/false);
  agent.Store({83});
  ASSERT_TRUE(WaitUntil([&] { return Holds(index, 3, 83); }));
  EXPECT_FALSE(Holds(index, 3, 80));
  EXPECT_FALSE(Holds(index, 3, 82));
  EXPECT_EQ(TotalBlocks(index, 3), 1u);
  EXPECT_EQ(indexer.Stats().resyncs, resyncs + 1);
  EXPECT_EQ(agent.inventory_requests(), 0);
}

// vLLM hashes blocks its own way: the indexer re-hashes stored blocks from their token ids so the
// router's queries (Dynamo-compatible hashes) find them, and translates removals by vLLM's hash.
TEST(KvIndexerTest, VllmHashesAreTranslatedFromTokenIds) {
  FakeAgent agent(FakeAgent::VllmLike());
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  auto w = Worker(4, agent.url());
  w->spec.has_inventory = false;
  w->spec.events_endpoint = agent.events_endpoint();
  w->spec.topic = "kv-events";
  indexer.AddWorker(w);
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(4); }));
  WarmUp(agent, index, 4, 5000);  // no token ids: kept as published

  std::vector<uint32_t> tokens(48);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(100 + 7 * i);
  agent.StoreWithTokens({0xA1, 0xA2}, {tokens.begin(), tokens.begin() + 32}, std::nullopt);
  agent.StoreWithTokens({0xA3}, {tokens.begin() + 32, tokens.end()}, 0xA2);
  kv::BlockHashOptions ho;
  ho.block_size = 16;
  auto ours = kv::ComputeSequenceHashes(tokens, ho);
  ASSERT_TRUE(ours.ok());
  ASSERT_EQ(ours->size(), 3u);
  ASSERT_TRUE(WaitUntil([&] { return Holds(index, 4, (*ours)[2]); }));
  EXPECT_TRUE(Holds(index, 4, (*ours)[0]));
  EXPECT_TRUE(Holds(index, 4, (*ours)[1]));
  EXPECT_FALSE(Holds(index, 4, 0xA1));
  const kv::QueryResult q = index.Query(*ours);
  ASSERT_EQ(q.workers.size(), 1u);
  EXPECT_EQ(q.workers[0].worker, 4u);
  EXPECT_EQ(q.workers[0].matched_blocks, 3u);

  // Removal by vLLM's hash removes the router's; a stored block whose parent is unknown is skipped.
  agent.Remove({0xA2});
  ASSERT_TRUE(WaitUntil([&] { return !Holds(index, 4, (*ours)[1]); }));
  EXPECT_TRUE(Holds(index, 4, (*ours)[0]));
  agent.StoreWithTokens({0xB2}, {tokens.begin() + 16, tokens.begin() + 32}, 0xBEEF);
  agent.Store({5999});
  ASSERT_TRUE(WaitUntil([&] { return Holds(index, 4, 5999); }));
  EXPECT_FALSE(Holds(index, 4, 0xB2));
  EXPECT_FALSE(Holds(index, 4, (*ours)[1]));
}

// A cluster router (global tier) is indexed from its polled summary: each poll replaces the
// cluster's blocks, the configured key is sent, a failing poll keeps the last summary, and a
// block size mismatch leaves the cluster unindexed.
TEST(KvIndexerTest, ClusterRouterSummariesArePolledAndReplaced) {
  std::mutex mu;
  std::vector<uint64_t> blocks{1, 2, 3};
  int status = 200;
  uint32_t block_size = 16;
  std::string seen_auth;
  http::HttpServer server(http::HttpServerOptions{});
  server.Route("GET", "/v1/kv/inventory", [&](const http::HttpRequest& req) {
    std::lock_guard lock(mu);
    seen_auth = req.Header("authorization");
    if (status != 200) return http::JsonErrorResponse(status, "down", "server_error", "down");
    nlohmann::json j = {{"agent_id", "router-x"}, {"kind", "router"}, {"block_size", block_size},
                        {"seq", 1},
                        {"tiers", nlohmann::json::array({{{"medium", "GPU"}, {"hashes", blocks}}})}};
    return http::JsonResponse(200, j.dump());
  });
  ASSERT_TRUE(server.Start().ok());
  kv::PrefixIndex index;
  KvIndexerOptions o = FastOptions();
  o.summary_interval = 20ms;
  o.summary_authorization = "Bearer summary-key";
  KvIndexer indexer(&index, o, nullptr);
  auto w = Worker(3, "http://127.0.0.1:" + std::to_string(server.port()));
  w->spec.is_cluster_router = true;
  indexer.AddWorker(w);
  ASSERT_TRUE(WaitUntil([&] { return indexer.Synced(3) && IndexEquals(index, 3, {1, 2, 3}); }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(seen_auth, "Bearer summary-key");
    blocks = {2, 7};
  }
  ASSERT_TRUE(WaitUntil([&] { return IndexEquals(index, 3, {2, 7}); }));
  {
    std::lock_guard lock(mu);
    status = 503;
  }
  const uint64_t resyncs = indexer.Stats().resyncs;
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(IndexEquals(index, 3, {2, 7}));  // the last summary stays
  EXPECT_EQ(indexer.Stats().resyncs, resyncs);
  {
    std::lock_guard lock(mu);
    status = 200;
    block_size = 32;
  }
  ASSERT_TRUE(WaitUntil([&] { return !indexer.Synced(3) && TotalBlocks(index, 3) == 0; }));
  indexer.Stop();
  server.Stop(0ms);
}

TEST(KvIndexerTest, StopIsPromptWithUnreachableWorker) {
  kv::PrefixIndex index;
  KvIndexer indexer(&index, FastOptions(), nullptr);
  indexer.AddWorker(Worker(1, "http://127.0.0.1:1"));  // refused: retried every 50 ms
  auto w = Worker(2, "http://127.0.0.1:1");
  w->spec.has_inventory = false;  // and one without inventory or events endpoint
  indexer.AddWorker(w);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(indexer.Synced(1));
  EXPECT_FALSE(indexer.Synced(2));
  auto t0 = std::chrono::steady_clock::now();
  indexer.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  indexer.AddWorker(Worker(3, "http://127.0.0.1:1"));  // ignored after Stop
  EXPECT_FALSE(indexer.Synced(3));
}

}  // namespace
}  // namespace kvmesh::router
