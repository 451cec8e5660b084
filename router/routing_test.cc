#include "router/routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/block_hash.h"
#include "kv/kv_event.h"
#include "kv/prefix_index.h"
#include "router/worker_registry.h"

namespace kvmesh::router {
namespace {

constexpr uint32_t kBlock = 16;

// A fleet of plain WorkerState objects (the registry is not needed to route).
struct Fleet {
  std::vector<std::unique_ptr<WorkerState>> owned;
  std::vector<WorkerState*> all;

  explicit Fleet(size_t n, WorkerRole role = WorkerRole::kAggregated, kv::WorkerId first_id = 1,
                 kv::WorkerId id_step = 1) {
    for (size_t i = 0; i < n; ++i) Add(first_id + static_cast<kv::WorkerId>(i) * id_step, role);
  }
  WorkerState* Add(kv::WorkerId id, WorkerRole role) {
    auto w = std::make_unique<WorkerState>();
    w->id = id;
    w->spec.role = role;
    w->spec.url = "http://127.0.0.1:" + std::to_string(9000 + id % 1000);
    w->ready = true;
    all.push_back(w.get());
    owned.push_back(std::move(w));
    return all.back();
  }
  size_t IndexOf(const WorkerState* w) const {
    return static_cast<size_t>(std::find(all.begin(), all.end(), w) - all.begin());
  }
};

std::unique_ptr<RoutingPolicy> MakePolicy(const std::string& mode, const std::string& kv_cost = "kvmesh",
                                          double temperature = 0, double overlap_weight = 1,
                                          uint64_t seed = 42) {
  RouterRoutingConfig config;
  config.mode = mode;
  config.kv_cost = kv_cost;
  config.temperature = temperature;
  config.overlap_weight = overlap_weight;
  auto policy = CreateRoutingPolicy(config, seed);
  EXPECT_TRUE(policy.ok()) << policy.status().ToString();
  return std::move(policy).value();
}

// Token ids of `blocks` full blocks, distinct per `stream` (so equal streams share hashes).
std::vector<uint32_t> Tokens(uint32_t stream, uint32_t blocks) {
  std::vector<uint32_t> t(size_t{blocks} * kBlock);
  for (size_t i = 0; i < t.size(); ++i) t[i] = stream * 100003u + static_cast<uint32_t>(i);
  return t;
}

std::vector<kv::BlockHash> Hashes(const std::vector<uint32_t>& tokens) {
  kv::BlockHashOptions options;
  options.block_size = kBlock;
  auto hashes = kv::ComputeSequenceHashes(tokens, options);
  EXPECT_TRUE(hashes.ok());
  return std::move(hashes).value();
}

// A prompt: a shared part followed by a unique part.
std::vector<uint32_t> Prompt(uint32_t shared_stream, uint32_t shared_blocks, uint32_t unique_stream,
                             uint32_t unique_blocks) {
  std::vector<uint32_t> t = Tokens(shared_stream, shared_blocks);
  std::vector<uint32_t> u = Tokens(unique_stream, unique_blocks);
  t.insert(t.end(), u.begin(), u.end());
  return t;
}

// Feeds the index the way a worker's events would.
class Events {
 public:
  explicit Events(kv::PrefixIndex& index) : index_(index) {}
  void Store(kv::WorkerId w, std::span<const kv::BlockHash> hashes,
             kv::Medium medium = kv::Medium::kG1) {
    kv::BlockStored stored;
    stored.hashes.assign(hashes.begin(), hashes.end());
    stored.block_size = kBlock;
    stored.medium = medium;
    kv::KvEventBatch batch;
    batch.events.push_back(std::move(stored));
    index_.ApplyBatch(w, ++seq_[w], batch);
  }

 private:
  kv::PrefixIndex& index_;
  std::map<kv::WorkerId, uint64_t> seq_;
};

RouteInput Input(const std::vector<kv::BlockHash>& hashes, uint32_t prompt_tokens,
                 uint32_t max_new = 16) {
  RouteInput in;
  in.hashes = hashes;
  in.prompt_tokens = prompt_tokens;
  in.max_new_tokens = max_new;
  in.block_size = kBlock;
  return in;
}

TEST(RoutingTest, CreateValidatesModeAndCost) {
  RouterRoutingConfig config;
  for (const char* mode : {"kv", "round_robin", "random", "least_loaded"}) {
    config.mode = mode;
    auto policy = CreateRoutingPolicy(config, 1);
    ASSERT_TRUE(policy.ok()) << mode;
    EXPECT_STREQ((*policy)->name(), mode);
    EXPECT_EQ((*policy)->uses_overlap(), config.mode == "kv");
  }
  config.mode = "kv";
  config.kv_cost = "dynamo";
  EXPECT_TRUE(CreateRoutingPolicy(config, 1).ok());
  config.kv_cost = "magic";
  auto bad = CreateRoutingPolicy(config, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("magic"), std::string::npos);
  config.kv_cost = "kvmesh";
  config.temperature = -1;
  EXPECT_EQ(CreateRoutingPolicy(config, 1).status().code(), StatusCode::kInvalidArgument);
  config.temperature = 0;
  config.mode = "fastest";
  bad = CreateRoutingPolicy(config, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fastest"), std::string::npos);
}

TEST(RoutingTest, RoundRobinCyclesInOrder) {
  Fleet fleet(4);
  auto policy = MakePolicy("round_robin");
  kv::QueryResult none;
  RouteInput in;
  in.prompt_tokens = 10;
  for (size_t i = 0; i < 12; ++i) {
    RouteChoice c = policy->Choose(in, fleet.all, none);
    EXPECT_EQ(c.worker, fleet.all[i % 4]) << i;
    EXPECT_EQ(c.cost, 0);
  }
}

TEST(RoutingTest, RandomCoversAllAndIsSeeded) {
  Fleet fleet(8);
  auto a = MakePolicy("random", "kvmesh", 0, 1, 7);
  auto b = MakePolicy("random", "kvmesh", 0, 1, 7);
  auto other = MakePolicy("random", "kvmesh", 0, 1, 8);
  kv::QueryResult none;
  RouteInput in;
  std::vector<int> counts(8);
  bool differs = false;
  for (int i = 0; i < 4000; ++i) {
    WorkerState* w = a->Choose(in, fleet.all, none).worker;
    EXPECT_EQ(w, b->Choose(in, fleet.all, none).worker);  // same seed, same draws
    differs |= w != other->Choose(in, fleet.all, none).worker;
    ++counts[fleet.IndexOf(w)];
  }
  EXPECT_TRUE(differs);
  for (int c : counts) {  // expected 500 each
    EXPECT_GT(c, 350);
    EXPECT_LT(c, 650);
  }
}

TEST(RoutingTest, LeastLoadedPicksMinimumThenFewestBlocksTiesAtRandom) {
  Fleet fleet(5);
  const uint32_t inflight[] = {3, 1, 1, 2, 1};
  const uint64_t blocks[] = {0, 40, 12, 0, 30};
  for (size_t i = 0; i < 5; ++i) {
    fleet.all[i]->inflight = inflight[i];
    fleet.all[i]->decode_blocks = blocks[i];
  }
  auto policy = MakePolicy("least_loaded");
  kv::QueryResult none;
  RouteInput in;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(policy->Choose(in, fleet.all, none).worker, fleet.all[2]);

  fleet.all[4]->decode_blocks = 12;  // now workers 2 and 4 tie
  std::vector<int> counts(5);
  for (int i = 0; i < 400; ++i) ++counts[fleet.IndexOf(policy->Choose(in, fleet.all, none).worker)];
  EXPECT_EQ(counts[0] + counts[1] + counts[3], 0);
  EXPECT_GT(counts[2], 120);
  EXPECT_GT(counts[4], 120);
}

TEST(RoutingTest, DynamoCostByHand) {
  kv::PrefixIndex index;
  Events events(index);
  Fleet fleet(3);
  // Prompt of 100 tokens: ceil(100/16) = 7 blocks, 6 full blocks hashed.
  std::vector<uint32_t> tokens = Tokens(1, 7);
  tokens.resize(100);
  const std::vector<kv::BlockHash> h = Hashes(tokens);
  ASSERT_EQ(h.size(), 6u);
  events.Store(fleet.all[0]->id, std::span(h).first(4));           // overlap 4
  events.Store(fleet.all[2]->id, h, kv::Medium::kG3);               // overlap 6 (tier ignored)
  index.AddPredicted(fleet.all[1]->id, h, std::chrono::seconds(60));  // predictions ignored
  fleet.all[0]->decode_blocks = 10;
  fleet.all[1]->decode_blocks = 2;
  fleet.all[2]->decode_blocks = 5;
  fleet.all[1]->prefill_tokens = 5000;  // ignored by the dynamo cost
  const kv::QueryResult q = index.Query(h);
  auto policy = MakePolicy("kv", "dynamo", 0, /*overlap_weight=*/2.0);
  const RouteInput in = Input(h, 100);

  // cost = 2 * (7 - overlap) + decode_blocks
  const double expected[] = {2.0 * (7 - 4) + 10, 2.0 * 7 + 2, 2.0 * (7 - 6) + 5};
  for (size_t i = 0; i < 3; ++i) {
    WorkerState* one[] = {fleet.all[i]};
    EXPECT_EQ(policy->Choose(in, one, q).cost, expected[i]) << i;
  }
  RouteChoice c = policy->Choose(in, fleet.all, q);
  EXPECT_EQ(c.worker, fleet.all[2]);
  EXPECT_EQ(c.cost, 7.0);
  EXPECT_EQ(c.overlap_blocks, 6u);
  EXPECT_EQ(c.overlap_predicted, 6u);
}

TEST(RoutingTest, KvmeshCostByHand) {
  kv::PrefixIndex index;
  Events events(index);
  Fleet fleet(1);
  const std::vector<kv::BlockHash> h = Hashes(Tokens(3, 10));
  // Leading run: blocks 0-3 in G1, 4-5 in G2, 6-7 in G3, 8 predicted only; block 9 nowhere.
  events.Store(1, std::span(h).subspan(0, 4), kv::Medium::kG1);
  events.Store(1, std::span(h).subspan(4, 2), kv::Medium::kG2);
  events.Store(1, std::span(h).subspan(6, 2), kv::Medium::kG3);
  index.AddPredicted(1, std::span(h).first(9), std::chrono::seconds(60));
  WorkerState& w = *fleet.all[0];
  w.prefill_tokens = 64;  // 4 blocks queued
  w.decode_blocks = 7;
  w.inflight = 3;
  auto policy = MakePolicy("kv", "kvmesh", 0, /*overlap_weight=*/1.5);
  RouteChoice c = policy->Choose(Input(h, 160), fleet.all, index.Query(h));
  // cached = 4 + 0.75*2 + 0.5*2 + 0.5*1 = 7; prefill = 10 - 7 = 3
  // cost = 1.5 * 3 + 0.5 * 64/16 + 0.25 * 7 + 3
  EXPECT_DOUBLE_EQ(c.cost, 1.5 * 3 + 0.5 * 4 + 0.25 * 7 + 3);
  EXPECT_EQ(c.overlap_blocks, 8u);
  EXPECT_EQ(c.overlap_predicted, 9u);
}

// The global routing tier: each "worker" is a cluster router with a round trip. With equal
// overlap the nearer cluster wins; a long enough cached prefix wins over a longer round trip;
// rtt_block_ms 0 ignores the round trip.
TEST(RoutingTest, KvmeshCostPricesRoundTrips) {
  kv::PrefixIndex index;
  Events events(index);
  Fleet fleet(2);
  fleet.all[0]->rtt_ms = 40;  // far
  fleet.all[1]->rtt_ms = 2;   // near
  const std::vector<kv::BlockHash> h = Hashes(Tokens(5, 100));
  auto policy = MakePolicy("kv", "kvmesh");  // rtt_block_ms 1: 1 ms = 1 block
  RouteChoice c = policy->Choose(Input(h, 100 * kBlock), fleet.all, index.Query(h));
  EXPECT_EQ(c.worker, fleet.all[1]);
  EXPECT_DOUBLE_EQ(c.cost, 100 + 2);
  // The far cluster holds 60 of the 100 blocks: 40 + 40 < 100 + 2.
  events.Store(1, std::span(h).first(60));
  c = policy->Choose(Input(h, 100 * kBlock), fleet.all, index.Query(h));
  EXPECT_EQ(c.worker, fleet.all[0]);
  EXPECT_DOUBLE_EQ(c.cost, 40 + 40);
  // Priced at 0.5 ms per block, the same 40 ms is 80 blocks: the near cluster wins again.
  RouterRoutingConfig config;
  config.rtt_block_ms = 0.5;
  auto slow = CreateRoutingPolicy(config, 1);
  ASSERT_TRUE(slow.ok());
  c = (*slow)->Choose(Input(h, 100 * kBlock), fleet.all, index.Query(h));
  EXPECT_EQ(c.worker, fleet.all[1]);
  EXPECT_DOUBLE_EQ(c.cost, 100 + 4);
  config.rtt_block_ms = 0;  // ignore round trips
  auto blind = CreateRoutingPolicy(config, 1);
  ASSERT_TRUE(blind.ok());
  c = (*blind)->Choose(Input(h, 100 * kBlock), fleet.all, index.Query(h));
  EXPECT_EQ(c.worker, fleet.all[0]);
  EXPECT_DOUBLE_EQ(c.cost, 40);
  config.rtt_block_ms = -1;
  EXPECT_FALSE(CreateRoutingPolicy(config, 1).ok());
}

TEST(RoutingTest, SoftmaxFollowsTheExpectedDistribution) {
  Fleet fleet(3);
  fleet.all[1]->decode_blocks = 10;
  fleet.all[2]->decode_blocks = 20;
  kv::QueryResult none;
  const std::vector<kv::BlockHash> h;
  const RouteInput in = Input(h, kBlock);  // costs 1, 11, 21 -> normalized 0, 0.5, 1
  auto hot = MakePolicy("kv", "dynamo", /*temperature=*/0.5);
  std::vector<int> counts(3);
  const int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    RouteChoice c = hot->Choose(in, fleet.all, none);
    const size_t k = fleet.IndexOf(c.worker);
    ++counts[k];
    EXPECT_EQ(c.cost, 1.0 + 10.0 * static_cast<double>(k));
  }
  // P ~ exp(-normalized / 0.5) = 1, e^-1, e^-2.
  const double z = 1 + std::exp(-1.0) + std::exp(-2.0);
  const double p[] = {1 / z, std::exp(-1.0) / z, std::exp(-2.0) / z};
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NEAR(counts[k] / static_cast<double>(kDraws), p[k], 0.03) << k;
  }
  // Temperature 0: always the cheapest.
  auto cold = MakePolicy("kv", "dynamo", 0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cold->Choose(in, fleet.all, none).worker, fleet.all[0]);
  // Equal costs with temperature > 0: uniform.
  fleet.all[1]->decode_blocks = 0;
  fleet.all[2]->decode_blocks = 0;
  std::fill(counts.begin(), counts.end(), 0);
  for (int i = 0; i < 3000; ++i) ++counts[fleet.IndexOf(hot->Choose(in, fleet.all, none).worker)];
  for (int c : counts) EXPECT_GT(c, 800);
}

TEST(RoutingTest, KvmeshPrefersG1OverG2OverG3) {
  kv::PrefixIndex index;
  Events events(index);
  Fleet fleet(3);
  const std::vector<kv::BlockHash> h = Hashes(Tokens(5, 12));
  events.Store(fleet.all[0]->id, std::span(h).first(8), kv::Medium::kG3);
  events.Store(fleet.all[1]->id, std::span(h).first(8), kv::Medium::kG2);
  events.Store(fleet.all[2]->id, std::span(h).first(8), kv::Medium::kG1);
  const kv::QueryResult q = index.Query(h);
  const RouteInput in = Input(h, 12 * kBlock);
  auto kvmesh = MakePolicy("kv", "kvmesh");
  EXPECT_EQ(kvmesh->Choose(in, fleet.all, q).worker, fleet.all[2]);
  std::vector<WorkerState*> g2_g3 = {fleet.all[0], fleet.all[1]};
  EXPECT_EQ(kvmesh->Choose(in, g2_g3, q).worker, fleet.all[1]);
  // A G1 copy wins even against a G3 worker with slightly less load.
  fleet.all[0]->decode_blocks = 0;
  fleet.all[2]->decode_blocks = 3;  // G1 saves 8 * 0.5 = 4 blocks over G3
  std::vector<WorkerState*> g1_g3 = {fleet.all[0], fleet.all[2]};
  EXPECT_EQ(kvmesh->Choose(in, g1_g3, q).worker, fleet.all[2]);
  // Dynamo is tier-blind: then the lighter G3 worker wins.
  auto dynamo = MakePolicy("kv", "dynamo");
  EXPECT_EQ(dynamo->Choose(in, g1_g3, q).worker, fleet.all[0]);
}

TEST(RoutingTest, PredictedOverlapAttractsARepeatedNewPrefixBeforeEvents) {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  kv::PrefixIndexOptions options;
  options.clock = [&now] { return now; };
  kv::PrefixIndex index(options);
  Fleet fleet(4);
  for (WorkerState* w : fleet.all) w->decode_blocks = 100;  // an equally busy fleet
  auto kvmesh = MakePolicy("kv", "kvmesh");
  auto dynamo = MakePolicy("kv", "dynamo");
  int kvmesh_followed = 0, dynamo_followed = 0;
  const int kTrials = 40;
  for (int trial = 0; trial < kTrials; ++trial) {
    // A new 32-block document, asked about twice with different 1-block questions. The first
    // request (short: it finished already) went to `first`; its events have not arrived yet.
    const uint32_t doc = 1000 + static_cast<uint32_t>(trial);
    const std::vector<kv::BlockHash> h1 = Hashes(Prompt(doc, 32, 1, 1));
    const std::vector<kv::BlockHash> h2 = Hashes(Prompt(doc, 32, 2, 1));
    WorkerState* first = kvmesh->Choose(Input(h1, 33 * kBlock), fleet.all, index.Query(h1)).worker;
    index.AddPredicted(first->id, h1, std::chrono::seconds(2));  // what the router records

    const kv::QueryResult q = index.Query(h2);
    RouteChoice c = kvmesh->Choose(Input(h2, 33 * kBlock), fleet.all, q);
    kvmesh_followed += c.worker == first;
    EXPECT_EQ(c.overlap_blocks, 0u);
    EXPECT_EQ(c.worker == first ? c.overlap_predicted : 32u, 32u);
    dynamo_followed += dynamo->Choose(Input(h2, 33 * kBlock), fleet.all, q).worker == first;

    // Past the TTL the prediction no longer counts.
    now += std::chrono::seconds(3);
    const kv::QueryResult stale = index.Query(h2);
    WorkerState* only_first[] = {first};
    EXPECT_EQ(kvmesh->Choose(Input(h2, 33 * kBlock), only_first, stale).overlap_predicted, 0u);
  }
  EXPECT_EQ(kvmesh_followed, kTrials);
  EXPECT_LT(dynamo_followed, kTrials / 2);  // blind to predictions: ~1/4 by chance
}

// The trap: every request shares a long system prompt. Pure max-prefix routing sends them all
// to the first worker that cached it; the load terms must spread them.
struct TrapResult {
  std::vector<int> per_worker;
};

enum class Feed { kEvents, kPredicted };

// `policy` null = pure max-prefix (the trap), computed here.
TrapResult RunSharedPrefixStream(RoutingPolicy* policy, Feed feed) {
  constexpr int kWorkers = 8, kRequests = 400;
  constexpr uint32_t kSystemBlocks = 64, kUniqueBlocks = 4, kMaxNew = 64;
  constexpr int kPrefillSteps = 2, kLifetimeSteps = 24;  // ~3 requests in flight per worker
  kv::PrefixIndex index;
  Events events(index);
  Fleet fleet(kWorkers);
  struct Live {
    WorkerState* w;
    uint64_t prefill_tokens, decode_blocks;
    int born;
    bool prefilling;
  };
  std::deque<Live> live;
  TrapResult result;
  result.per_worker.assign(kWorkers, 0);
  kv::QueryResult q;
  for (int step = 0; step < kRequests; ++step) {
    // Requests progress: prefill ends after kPrefillSteps, the request after kLifetimeSteps.
    for (Live& r : live) {
      if (r.prefilling && step - r.born >= kPrefillSteps) {
        r.w->prefill_tokens -= r.prefill_tokens;
        r.w->prefills_inflight -= 1;
        r.prefilling = false;
      }
    }
    while (!live.empty() && step - live.front().born >= kLifetimeSteps) {
      Live& r = live.front();
      r.w->decode_blocks -= r.decode_blocks;
      r.w->inflight -= 1;
      live.pop_front();
    }
    const std::vector<uint32_t> tokens =
        Prompt(7, kSystemBlocks, 100 + static_cast<uint32_t>(step), kUniqueBlocks);
    const std::vector<kv::BlockHash> h = Hashes(tokens);
    const RouteInput in = Input(h, static_cast<uint32_t>(tokens.size()), kMaxNew);
    index.QueryInto(h, {}, q);
    RouteChoice c;
    if (policy != nullptr) {
      c = policy->Choose(in, fleet.all, q);
    } else {
      c.worker = fleet.all[0];
      for (WorkerState* w : fleet.all) {
        for (const kv::WorkerMatch& m : q.workers) {
          if (m.worker == w->id && m.matched_blocks > c.overlap_blocks) {
            c.worker = w;
            c.overlap_blocks = m.matched_blocks;
          }
        }
      }
    }
    // The load the router adds for it (what LoadGuard does).
    Live r{c.worker, 0, 0, step, true};
    r.prefill_tokens = in.prompt_tokens - std::min(in.prompt_tokens, c.overlap_blocks * kBlock);
    r.decode_blocks = (in.prompt_tokens + kMaxNew + kBlock - 1) / kBlock;
    c.worker->prefill_tokens += r.prefill_tokens;
    c.worker->prefills_inflight += 1;
    c.worker->decode_blocks += r.decode_blocks;
    c.worker->inflight += 1;
    live.push_back(r);
    // The chosen worker now holds the prompt's blocks.
    if (feed == Feed::kEvents) {
      events.Store(c.worker->id, h);
    } else {
      index.AddPredicted(c.worker->id, h, std::chrono::hours(1));
    }
    ++result.per_worker[fleet.IndexOf(c.worker)];
  }
  return result;
}

TEST(RoutingTest, SharedSystemPromptDoesNotPileOntoOneWorker) {
  constexpr int kFairShare = 400 / 8;
  const TrapResult trap = RunSharedPrefixStream(nullptr, Feed::kEvents);
  EXPECT_EQ(*std::max_element(trap.per_worker.begin(), trap.per_worker.end()), 400);

  for (const char* cost : {"kvmesh", "dynamo"}) {
    for (double temperature : {0.0, 0.2}) {
      for (Feed feed : {Feed::kEvents, Feed::kPredicted}) {
        auto policy = MakePolicy("kv", cost, temperature);
        const TrapResult r = RunSharedPrefixStream(policy.get(), feed);
        SCOPED_TRACE(std::string(cost) + " temperature " + std::to_string(temperature) +
                     (feed == Feed::kEvents ? " events" : " predicted"));
        // No worker takes more than twice its fair share, and at least half the fleet serves
        // (pure max-prefix: one worker takes all 400). Workers may stay idle while the ones
        // holding the 1,024-token prefix have room: computing it again costs more than a few
        // more requests in flight there.
        int used = 0;
        for (int n : r.per_worker) {
          EXPECT_LE(n, 2 * kFairShare);
          used += n > 0;
        }
        EXPECT_GE(used, 4) << ::testing::PrintToString(r.per_worker);
      }
    }
  }
}

TEST(RoutingTest, ThousandSparseIdsMapToTheirOverlaps) {
  kv::PrefixIndex index;
  Events events(index);
  // Sparse, large ids (the mapping must not assume small dense ids).
  Fleet fleet(1000, WorkerRole::kAggregated, 3'000'000'000u, 1'000'003u);
  const std::vector<kv::BlockHash> h = Hashes(Tokens(9, 20));
  for (size_t i = 0; i < fleet.all.size(); ++i) {
    events.Store(fleet.all[i]->id, std::span(h).first(1 + i % 10));  // overlap 1..10
  }
  events.Store(fleet.all[637]->id, h);      // the one full match
  events.Store(4242, h);                    // a worker that is not a candidate
  const kv::QueryResult q = index.Query(h);
  ASSERT_GE(q.workers.size(), 1001u);
  for (const char* cost : {"kvmesh", "dynamo"}) {
    auto policy = MakePolicy("kv", cost);
    RouteChoice c = policy->Choose(Input(h, 20 * kBlock), fleet.all, q);
    EXPECT_EQ(c.worker, fleet.all[637]) << cost;
    EXPECT_EQ(c.overlap_blocks, 20u);
    // Each worker's own overlap is found: the worker with 10 blocks beats those with fewer.
    std::vector<WorkerState*> some = {fleet.all[0], fleet.all[9], fleet.all[5]};
    RouteChoice d = policy->Choose(Input(h, 20 * kBlock), some, q);
    EXPECT_EQ(d.worker, fleet.all[9]);
    EXPECT_EQ(d.overlap_blocks, 10u);
  }
}

// The documented costs computed the straightforward way (a linear search for each candidate's
// match, one formula per worker), independent of Choose()'s two-pass layout.
double ReferenceCost(const std::string& cost, const WorkerState& w, const kv::QueryResult& q,
                     uint32_t prompt_tokens, double overlap_weight, double rtt_block_ms = 1.0,
                     uint32_t block_size = kBlock) {
  const kv::WorkerMatch* m = nullptr;
  for (const kv::WorkerMatch& x : q.workers) {
    if (x.worker == w.id) m = &x;
  }
  const double prompt_blocks =
      static_cast<double>((prompt_tokens + block_size - 1) / block_size);
  const double decode_blocks = static_cast<double>(w.decode_blocks.load());
  if (cost == "dynamo") {
    const double overlap = m ? m->matched_blocks : 0;
    return overlap_weight * std::max(0.0, prompt_blocks - overlap) + decode_blocks;
  }
  double cached = 0;
  if (m != nullptr) {
    const uint32_t g1 = std::min(m->matched_tier[0], m->matched_blocks);
    const uint32_t rest = m->matched_blocks - g1;
    const uint32_t g2 = std::min(m->matched_tier[1], rest);
    const uint32_t g3 = rest - g2;
    const uint32_t predicted = m->matched_with_predicted > m->matched_blocks
                                   ? m->matched_with_predicted - m->matched_blocks
                                   : 0;
    cached = g1 + 0.75 * g2 + 0.5 * g3 + 0.5 * predicted;
  }
  const double load = 0.5 * static_cast<double>(w.prefill_tokens.load()) / block_size +
                     0.25 * decode_blocks + 1.0 * static_cast<double>(w.inflight.load());
  return (overlap_weight * std::max(0.0, prompt_blocks - cached) + load) +
         (rtt_block_ms > 0 ? w.rtt_ms / rtt_block_ms : 0.0);
}

// Random fleets (dense and sparse ids, shuffled order, load ranges narrow enough for many ties)
// and random query results (matches on candidates and on other workers, fewer and more than 8):
// the chosen worker always has the minimum reference cost, its reported cost is that cost, and
// its overlaps are its own; tied workers are all reachable. Block sizes: powers of two below and
// above the 4 of the decode weight's 1/4 (the integer load sum) and others (the double sum).
TEST(RoutingTest, FastPassChoosesLikeTheStraightforwardComputation) {
  const uint32_t kBlockSizes[] = {16, 1, 2, 4, 12, 32, 7, 16};
  std::mt19937_64 rng(2026);
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  for (int trial = 0; trial < 300; ++trial) {
    const bool sparse = trial % 5 == 0;
    const size_t n = 1 + rand(trial % 7 == 0 ? 1200 : 200);
    Fleet fleet(n, WorkerRole::kAggregated,
                sparse ? 3'000'000'000u : static_cast<kv::WorkerId>(1 + rand(50)),
                sparse ? 1'000'003u : static_cast<kv::WorkerId>(1 + rand(3)));
    std::shuffle(fleet.all.begin(), fleet.all.end(), rng);
    const uint64_t range = trial % 2 ? 3 : 2000;
    for (WorkerState* w : fleet.all) {
      w->inflight = static_cast<uint32_t>(rand(range));
      w->prefill_tokens = rand(range) * (trial % 3 ? kBlock : 7);
      w->decode_blocks = rand(range);
      w->rtt_ms = trial % 6 == 1 ? static_cast<double>(rand(40)) / 2 : 0.0;
    }
    kv::QueryResult q;
    const size_t num_matches = trial % 3 == 0 ? rand(9) : rand(n + 20);
    std::set<kv::WorkerId> used;
    for (size_t k = 0; k < num_matches; ++k) {
      kv::WorkerMatch m;
      // A quarter are workers outside the candidates: ids that were candidates of earlier
      // trials (stale direct-table slots), other small ids, ids past the direct table.
      const uint64_t kind = rand(12);
      m.worker = kind == 0   ? static_cast<kv::WorkerId>(rand(4000))
                 : kind == 1 ? static_cast<kv::WorkerId>(100'000 + rand(1000))
                 : kind == 2 ? static_cast<kv::WorkerId>(2'000'000 + rand(1000))
                             : fleet.all[rand(n)]->id;
      if (!used.insert(m.worker).second) continue;
      m.matched_blocks = static_cast<uint32_t>(rand(60));
      for (uint32_t& t : m.matched_tier) t = static_cast<uint32_t>(rand(m.matched_blocks + 1));
      m.matched_with_predicted = m.matched_blocks + static_cast<uint32_t>(rand(6));
      q.workers.push_back(m);
    }
    const uint32_t prompt_tokens = static_cast<uint32_t>(1 + rand(1000));
    const uint32_t bs = kBlockSizes[trial % std::size(kBlockSizes)];
    const std::vector<kv::BlockHash> no_hashes;
    for (const char* cost : {"kvmesh", "dynamo"}) {
      const double ow = trial % 4 == 0 ? 0.5 + static_cast<double>(rand(8)) / 4 : 1.0;
      auto policy = MakePolicy("kv", cost, 0, ow, static_cast<uint64_t>(trial));
      std::vector<double> ref(n);
      for (size_t i = 0; i < n; ++i) {
        ref[i] = ReferenceCost(cost, *fleet.all[i], q, prompt_tokens, ow, 1.0, bs);
      }
      const double min_ref = *std::min_element(ref.begin(), ref.end());
      auto close = [](double a, double b) { return std::abs(a - b) <= 1e-9 * (1 + std::abs(b)); };
      size_t tied = 0;
      for (double c : ref) tied += close(c, min_ref);
      std::set<WorkerState*> chosen;
      for (int rep = 0; rep < (tied > 1 ? 40 : 1); ++rep) {
        RouteInput in = Input(no_hashes, prompt_tokens);
        in.block_size = bs;
        const RouteChoice c = policy->Choose(in, fleet.all, q);
        const size_t i = fleet.IndexOf(c.worker);
        ASSERT_LT(i, n);
        ASSERT_TRUE(close(c.cost, ref[i])) << "trial " << trial << " " << cost << " " << c.cost
                                           << " vs " << ref[i];
        ASSERT_TRUE(close(c.cost, min_ref)) << "trial " << trial << " " << cost << " " << c.cost
                                            << " vs min " << min_ref;
        const kv::WorkerMatch* m = nullptr;
        for (const kv::WorkerMatch& x : q.workers) {
          if (x.worker == c.worker->id) m = &x;
        }
        EXPECT_EQ(c.overlap_blocks, m ? m->matched_blocks : 0u);
        EXPECT_EQ(c.overlap_predicted, m ? m->matched_with_predicted : 0u);
        chosen.insert(c.worker);
      }
      if (tied > 1) {
        EXPECT_GT(chosen.size(), 1u) << "trial " << trial << ": ties never broken";
      }
    }
  }
}

// A registry that is only asked Routable() (which needs only its options).
std::unique_ptr<WorkerRegistry> RegistryForRoutable(uint32_t max_inflight_per_worker) {
  WorkerRegistryOptions ro;
  ro.max_inflight_per_worker = max_inflight_per_worker;
  auto registry = WorkerRegistry::Create(ro, nullptr);
  EXPECT_TRUE(registry.ok());
  return std::move(registry).value();
}

// RouteInput::routable_only: every policy, given all workers and the registry, chooses exactly
// what it chooses from the routable ones listed first (same seed, so the same draws), and returns
// no worker when none is routable.
TEST(RoutingTest, RoutableOnlyChoosesLikeAFilteredList) {
  const std::unique_ptr<WorkerRegistry> registry = RegistryForRoutable(6);
  const WorkerRegistry& reg = *registry;
  std::mt19937_64 rng(77);
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  struct Mode {
    const char* mode;
    const char* cost;
    double temperature;
  };
  const Mode modes[] = {{"kv", "kvmesh", 0},   {"kv", "dynamo", 0}, {"kv", "kvmesh", 0.5},
                        {"kv", "dynamo", 0.2}, {"round_robin", "", 0}, {"random", "", 0},
                        {"least_loaded", "", 0}};
  for (int trial = 0; trial < 120; ++trial) {
    const size_t n = 1 + rand(trial % 5 == 0 ? 1100 : 60);
    Fleet fleet(n, WorkerRole::kAggregated, static_cast<kv::WorkerId>(1 + rand(40)));
    const uint64_t unroutable_per_8 = trial % 10 == 0 ? 8 : rand(8);  // all of them, sometimes
    for (WorkerState* w : fleet.all) {
      w->inflight = static_cast<uint32_t>(rand(6));  // below the limit
      w->prefill_tokens = rand(4) * kBlock;
      w->decode_blocks = rand(4);
      if (rand(8) < unroutable_per_8) {
        switch (rand(4)) {
          case 0: w->ready = false; break;
          case 1: w->inflight = 6 + static_cast<uint32_t>(rand(3)); break;  // at the limit
          case 2:
            w->breaker = static_cast<int>(BreakerState::kOpen);
            w->open_until_ns = std::numeric_limits<int64_t>::max();
            break;
          default:
            w->breaker = static_cast<int>(BreakerState::kHalfOpen);
            w->half_open_probe_taken = true;
        }
      } else if (rand(10) == 0) {
        w->breaker = static_cast<int>(BreakerState::kHalfOpen);  // probe slot free: routable
      }
    }
    std::vector<WorkerState*> routable;
    for (WorkerState* w : fleet.all) {
      if (reg.Routable(*w)) routable.push_back(w);
    }
    kv::QueryResult q;
    for (size_t k = 0, m = rand(n + 1); k < m; ++k) {
      kv::WorkerMatch match;
      match.worker = fleet.all[k]->id;  // distinct
      match.matched_blocks = static_cast<uint32_t>(rand(8));
      match.matched_tier[0] = match.matched_blocks;
      match.matched_with_predicted = match.matched_blocks;
      q.workers.push_back(match);
    }
    const std::vector<kv::BlockHash> no_hashes;
    for (const Mode& m : modes) {
      auto fused = MakePolicy(m.mode, m.cost, m.temperature, 1, static_cast<uint64_t>(trial));
      auto listed = MakePolicy(m.mode, m.cost, m.temperature, 1, static_cast<uint64_t>(trial));
      RouteInput in = Input(no_hashes, 1 + static_cast<uint32_t>(rand(200)));
      RouteInput filtered_in = in;
      filtered_in.routable_only = &reg;
      for (int rep = 0; rep < 5; ++rep) {
        const RouteChoice a = fused->Choose(filtered_in, fleet.all, q);
        if (routable.empty()) {
          EXPECT_EQ(a.worker, nullptr) << m.mode << " " << m.cost;
          break;
        }
        const RouteChoice b = listed->Choose(in, routable, q);
        ASSERT_EQ(a.worker, b.worker) << "trial " << trial << " " << m.mode << " " << m.cost << " "
                                      << m.temperature;
        EXPECT_EQ(a.cost, b.cost);
        EXPECT_EQ(a.overlap_blocks, b.overlap_blocks);
        EXPECT_EQ(a.overlap_predicted, b.overlap_predicted);
        ASSERT_TRUE(reg.Routable(*a.worker));
      }
    }
  }
}

// RouteInput::loads: the kv policy decides on the registry's LoadBoard exactly as it does from
// the WorkerStates (same seed, so the same draws): the same worker, cost and overlaps, with
// consecutive ids (the vector kernels, each available one) and with gaps, with and without
// routable_only and unroutable workers, many ties (small load ranges), matches on candidates and
// on other workers, block sizes where the board applies and where it does not (the policy then
// reads the WorkerStates), and workers with round trips (likewise).
TEST(RoutingTest, LoadBoardChoosesExactlyLikeTheWorkerStates) {
  const std::unique_ptr<WorkerRegistry> registry = RegistryForRoutable(40);
  const WorkerRegistry& reg = *registry;
  auto board = std::make_shared<LoadBoard>();
  std::mt19937_64 rng(4242);
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  std::vector<std::string> kernels;
  for (const char* k : {"avx2", "scalar"}) {
    if (detail::SelectBoardKernelForTest(k)) kernels.push_back(k);
  }
  ASSERT_FALSE(kernels.empty());
  const std::string default_kernel = kernels.front();
  const uint32_t kBlockSizes[] = {16, 16, 1, 2, 4, 64, 12};
  size_t on_board_choices = 0, consecutive_trials = 0;
  for (int trial = 0; trial < 240; ++trial) {
    const std::string& kernel = kernels[static_cast<size_t>(trial) % kernels.size()];
    ASSERT_TRUE(detail::SelectBoardKernelForTest(kernel));
    const size_t n = 1 + rand(trial % 6 == 0 ? 1100 : 70);
    const bool consecutive = trial % 3 != 2;
    consecutive_trials += consecutive;
    // Ids from 1 up: consecutive, or with gaps of up to 3 (ids stay below the board's capacity).
    Fleet fleet(0);
    kv::WorkerId id = static_cast<kv::WorkerId>(1 + rand(5000));
    for (size_t i = 0; i < n; ++i) {
      WorkerState* w = fleet.Add(id, WorkerRole::kAggregated);
      w->board = board;
      id += consecutive ? 1 : static_cast<kv::WorkerId>(1 + rand(3));
    }
    const uint64_t range = trial % 2 ? 3 : 500;  // small ranges tie
    const uint64_t unroutable_per_16 = trial % 4 == 0 ? rand(16) : 0;
    for (WorkerState* w : fleet.all) {
      SetLoadForTesting(*w, rand(range) * (trial % 5 ? kBlock : 3), rand(range),
                        static_cast<uint32_t>(rand(std::min<uint64_t>(range, 30))));
      w->rtt_ms = trial % 7 == 3 && rand(4) == 0 ? 2.5 : 0.0;
      if (rand(16) < unroutable_per_16) {
        if (rand(2) == 0) {
          w->ready = false;
        } else {
          SetLoadForTesting(*w, w->prefill_tokens, w->decode_blocks, 40);  // at the limit
        }
      }
    }
    std::vector<kv::WorkerId> ids;
    kv::WorkerId max_id = 0;
    bool any_rtt = false;
    for (WorkerState* w : fleet.all) {
      ids.push_back(w->id);
      max_id = std::max(max_id, w->id);
      any_rtt |= w->rtt_ms != 0;
    }
    kv::QueryResult q;
    std::set<kv::WorkerId> used;
    for (size_t k = 0, m = trial % 3 == 0 ? rand(4) : rand(n + 10); k < m; ++k) {
      kv::WorkerMatch match;
      const uint64_t kind = rand(10);
      match.worker = kind == 0   ? static_cast<kv::WorkerId>(rand(8000))  // maybe not a candidate
                     : kind == 1 ? static_cast<kv::WorkerId>(2'000'000 + rand(100))
                                 : fleet.all[rand(n)]->id;
      if (!used.insert(match.worker).second) continue;
      match.matched_blocks = static_cast<uint32_t>(rand(trial % 2 ? 3 : 40));
      for (uint32_t& t : match.matched_tier) {
        t = static_cast<uint32_t>(rand(match.matched_blocks + 1));
      }
      match.matched_with_predicted = match.matched_blocks + static_cast<uint32_t>(rand(3));
      q.workers.push_back(match);
    }
    const uint32_t bs = kBlockSizes[trial % std::size(kBlockSizes)];
    const std::vector<kv::BlockHash> no_hashes;
    for (const char* cost : {"kvmesh", "dynamo"}) {
      for (const bool filtered : {false, true}) {
        const double ow = trial % 4 == 1 ? 0.25 * static_cast<double>(1 + rand(8)) : 1.0;
        auto on_board = MakePolicy("kv", cost, 0, ow, static_cast<uint64_t>(trial));
        auto from_states = MakePolicy("kv", cost, 0, ow, static_cast<uint64_t>(trial));
        RouteInput in = Input(no_hashes, static_cast<uint32_t>(1 + rand(3000)));
        in.block_size = bs;
        if (filtered) in.routable_only = &reg;
        RouteInput with_board = in;
        with_board.loads = {board.get(), ids, max_id, consecutive, any_rtt};
        for (int rep = 0; rep < 4; ++rep) {
          const RouteChoice a = on_board->Choose(with_board, fleet.all, q);
          const RouteChoice b = from_states->Choose(in, fleet.all, q);
          ASSERT_EQ(a.worker, b.worker) << "trial " << trial << " " << cost << " kernel " << kernel
                                        << " filtered " << filtered << " bs " << bs;
          EXPECT_EQ(a.cost, b.cost) << "trial " << trial << " " << cost;
          EXPECT_EQ(a.overlap_blocks, b.overlap_blocks);
          EXPECT_EQ(a.overlap_predicted, b.overlap_predicted);
          if (a.worker != nullptr && filtered) {
            EXPECT_TRUE(reg.Routable(*a.worker));
          }
          on_board_choices += a.worker != nullptr;
        }
      }
    }
  }
  ASSERT_TRUE(detail::SelectBoardKernelForTest(default_kernel));
  EXPECT_GT(consecutive_trials, 100u);
  EXPECT_GT(on_board_choices, 1000u);
}

// The kv pass really reads the board when RouteInput::loads is given, and only where it applies:
// the WorkerStates say every worker is equally loaded, the board (set apart from them on
// purpose) says one worker is idle, and that worker is chosen every time, with consecutive ids
// (each kernel) and with gaps; with a non-power-of-two block size, a temperature or a round trip,
// the WorkerStates decide (the draws then spread over all the equal workers).
TEST(RoutingTest, KvPassReadsTheBoardWhereItApplies) {
  const std::string kernel_before(detail::BoardKernelName());
  auto board = std::make_shared<LoadBoard>();
  const std::vector<kv::BlockHash> no_hashes;
  for (const bool consecutive : {true, false}) {
    Fleet fleet(0);
    std::vector<kv::WorkerId> ids;
    for (kv::WorkerId i = 0; i < 9; ++i) {
      WorkerState* w = fleet.Add(10 + i * (consecutive ? 1 : 2), WorkerRole::kAggregated);
      w->board = board;
      SetLoadForTesting(*w, 4 * kBlock, 4, 2);
      ids.push_back(w->id);
    }
    WorkerState* idle = fleet.all[6];
    for (LoadBoard::Field f :
         {LoadBoard::kPrefillTokens, LoadBoard::kQueueUnits, LoadBoard::kDecodeBlocks}) {
      board->Cell(idle->id, f).store(0);  // the board only
    }
    const CandidateLoads loads{board.get(), ids, ids.back(), consecutive, false};
    for (const char* kernel : {"avx2", "scalar"}) {
      if (!detail::SelectBoardKernelForTest(kernel)) continue;
      for (const char* cost : {"kvmesh", "dynamo"}) {
        for (uint64_t seed = 0; seed < 20; ++seed) {
          RouteInput in = Input(no_hashes, 100);
          in.loads = loads;
          EXPECT_EQ(MakePolicy("kv", cost, 0, 1, seed)->Choose(in, fleet.all, {}).worker, idle)
              << cost << " kernel " << kernel << " consecutive " << consecutive;
        }
      }
    }
    // Where the board does not apply, the WorkerStates' equal loads tie and the draw spreads.
    struct Case {
      uint32_t block_size;
      double temperature;
      bool any_rtt;
    };
    for (const Case& c : {Case{12, 0, false}, Case{16, 0.5, false}, Case{16, 0, true}}) {
      std::set<WorkerState*> chosen;
      for (uint64_t seed = 0; seed < 40; ++seed) {
        RouteInput in = Input(no_hashes, 100);
        in.block_size = c.block_size;
        in.loads = loads;
        in.loads.any_rtt = c.any_rtt;
        chosen.insert(
            MakePolicy("kv", "kvmesh", c.temperature, 1, seed)->Choose(in, fleet.all, {}).worker);
      }
      EXPECT_GT(chosen.size(), 3u) << "block size " << c.block_size << " temperature "
                                   << c.temperature << " rtt " << c.any_rtt;
    }
  }
  ASSERT_TRUE(detail::SelectBoardKernelForTest(kernel_before));
}

// Each board kernel against a plain loop: the smallest unmatched key and the candidates at it,
// on lengths 0-70 (vector bodies and tails), one or two arrays, shifts, many ties, matches.
TEST(RoutingTest, BoardKernelsFindTheMinimumAndItsCandidates) {
  const std::string kernel_before(detail::BoardKernelName());
  std::mt19937_64 rng(11);
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  size_t kernels = 0;
  for (const char* kernel : {"avx2", "scalar"}) {
    if (!detail::SelectBoardKernelForTest(kernel)) continue;
    ++kernels;
    for (int trial = 0; trial < 600; ++trial) {
      const size_t n = static_cast<size_t>(trial) % 71;
      const bool two = trial % 3 != 0;
      const int sa = static_cast<int>(rand(2)), sb = static_cast<int>(rand(4));
      std::vector<uint64_t> a(n), b(n);
      std::vector<uint32_t> match(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = rand(trial % 2 ? 4 : 1000);
        b[i] = rand(trial % 2 ? 4 : 1000);
        match[i] = rand(5) == 0 ? 1 + static_cast<uint32_t>(rand(9)) : 0;
      }
      int64_t want = std::numeric_limits<int64_t>::max();
      std::vector<uint32_t> want_at;
      for (size_t i = 0; i < n; ++i) {
        if (match[i] != 0) continue;
        const int64_t k = static_cast<int64_t>((a[i] << sa) + (two ? b[i] << sb : 0));
        if (k < want) want_at.clear();
        if (k <= want) want_at.push_back(static_cast<uint32_t>(i));
        want = std::min(want, k);
      }
      std::vector<uint32_t> at;
      const int64_t got = detail::BoardKernelForTest(a.data(), two ? b.data() : nullptr,
                                                     match.data(), n, sa, sb, at);
      ASSERT_EQ(got, want) << kernel << " trial " << trial;
      ASSERT_EQ(at, want_at) << kernel << " trial " << trial;
    }
  }
  EXPECT_GE(kernels, 1u);
  ASSERT_TRUE(detail::SelectBoardKernelForTest(kernel_before));
}

// The board kernels on runs of every length from 1 to 40 (vector bodies and scalar tails), with
// many ties and scattered matches: each available kernel leads to the choice the WorkerStates
// give (same seed).
TEST(RoutingTest, LoadBoardKernelsAgree) {
  const std::string kernel_before(detail::BoardKernelName());
  auto board = std::make_shared<LoadBoard>();
  std::mt19937_64 rng(7);
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  Fleet fleet(0);
  for (kv::WorkerId id = 1; id <= 40; ++id) fleet.Add(id, WorkerRole::kAggregated)->board = board;
  std::vector<kv::WorkerId> ids;
  for (WorkerState* w : fleet.all) ids.push_back(w->id);
  auto policy = MakePolicy("kv", "kvmesh");
  const std::vector<kv::BlockHash> no_hashes;
  for (int trial = 0; trial < 400; ++trial) {
    const size_t n = 1 + static_cast<size_t>(trial) % 40;
    for (WorkerState* w : fleet.all) {
      SetLoadForTesting(*w, rand(3) * kBlock, rand(3), static_cast<uint32_t>(rand(2)));
    }
    kv::QueryResult q;
    for (size_t i = 0; i < n; ++i) {
      if (rand(5) == 0) q.workers.push_back({.worker = fleet.all[i]->id});
    }
    std::span<WorkerState* const> cands(fleet.all.data(), n);
    RouteInput in = Input(no_hashes, 64);
    in.loads = {board.get(), std::span<const kv::WorkerId>(ids.data(), n), ids[n - 1], true,
                false};
    RouteInput from_states = in;
    from_states.loads = {};
    std::vector<WorkerState*> picks = {
        MakePolicy("kv", "kvmesh", 0, 1, static_cast<uint64_t>(trial))
            ->Choose(from_states, cands, q)
            .worker};
    for (const char* k : {"scalar", "avx2"}) {
      if (!detail::SelectBoardKernelForTest(k)) continue;
      auto p = MakePolicy("kv", "kvmesh", 0, 1, static_cast<uint64_t>(trial));
      picks.push_back(p->Choose(in, cands, q).worker);
    }
    for (WorkerState* w : picks) EXPECT_EQ(w, picks.front()) << "trial " << trial;
  }
  ASSERT_TRUE(detail::SelectBoardKernelForTest(kernel_before));
}

// ---------------------------------------------------------------------------------------------
// PlanPrefill.

class PlanPrefillTest : public ::testing::Test {
 protected:
  PlanPrefillTest() : decode_fleet(1, WorkerRole::kDecode, 1), prefill_fleet(2, WorkerRole::kPrefill, 10) {
    events = std::make_unique<Events>(index);
    hashes = Hashes(Tokens(11, 40));  // 640 tokens
    events->Store(1, std::span(hashes).first(30));  // decode worker: 30 blocks cached
    events->Store(11, std::span(hashes).first(20));  // prefill worker 11 has some of it
    config.mode = "conditional";
    config.min_remote_prefill_tokens = 64;
    config.max_prefill_queue = 2;
    policy = MakePolicy("kv", "kvmesh");
  }
  PrefillPlan Plan(uint32_t prompt_tokens) {
    prompt_hashes.assign(hashes.begin(), hashes.begin() + prompt_tokens / kBlock);
    const RouteInput in = Input(prompt_hashes, prompt_tokens);
    q = index.Query(prompt_hashes);
    decode = policy->Choose(in, decode_fleet.all, q);
    return PlanPrefill(config, in, decode, prefill_fleet.all, q, *policy);
  }

  kv::PrefixIndex index;
  std::unique_ptr<Events> events;
  Fleet decode_fleet, prefill_fleet;
  std::vector<kv::BlockHash> hashes;
  std::vector<kv::BlockHash> prompt_hashes;
  RouterDisaggregationConfig config;
  std::unique_ptr<RoutingPolicy> policy;
  kv::QueryResult q;
  RouteChoice decode;
};

TEST_F(PlanPrefillTest, Disabled) {
  config.mode = "off";
  PrefillPlan p = Plan(640);
  EXPECT_FALSE(p.remote);
  EXPECT_STREQ(p.reason, "disabled");
  EXPECT_EQ(p.uncached_tokens, 640u - 30 * kBlock);
}

TEST_F(PlanPrefillTest, BelowThreshold) {
  PrefillPlan p = Plan(30 * kBlock + 63);  // 63 uncached tokens on the decode worker
  EXPECT_EQ(decode.overlap_blocks, 30u);
  EXPECT_FALSE(p.remote);
  EXPECT_STREQ(p.reason, "below_threshold");
  EXPECT_EQ(p.uncached_tokens, 63u);
  EXPECT_EQ(p.prefill_worker, nullptr);
}

TEST_F(PlanPrefillTest, RemoteToThePrefillWorkerWithOverlap) {
  PrefillPlan p = Plan(30 * kBlock + 64);
  EXPECT_TRUE(p.remote);
  EXPECT_STREQ(p.reason, "remote");
  EXPECT_EQ(p.uncached_tokens, 64u);
  EXPECT_EQ(p.prefill_worker, prefill_fleet.all[1]);  // id 11 holds 20 blocks; id 10 none
  // Queue full on 11: the other prefill worker takes it.
  prefill_fleet.all[1]->prefills_inflight = 2;
  p = Plan(640);
  EXPECT_TRUE(p.remote);
  EXPECT_EQ(p.prefill_worker, prefill_fleet.all[0]);
}

TEST_F(PlanPrefillTest, QueueFull) {
  for (WorkerState* w : prefill_fleet.all) w->prefills_inflight = 2;
  PrefillPlan p = Plan(640);
  EXPECT_FALSE(p.remote);
  EXPECT_STREQ(p.reason, "prefill_queue_full");
  EXPECT_EQ(p.uncached_tokens, 640u - 30 * kBlock);
}

TEST_F(PlanPrefillTest, NoPrefillWorker) {
  const RouteInput in = Input(hashes, 640);
  q = index.Query(hashes);
  decode = policy->Choose(in, decode_fleet.all, q);
  PrefillPlan p = PlanPrefill(config, in, decode, {}, q, *policy);
  EXPECT_FALSE(p.remote);
  EXPECT_STREQ(p.reason, "no_prefill_worker");
  // The decode worker itself (an aggregated worker) is never its own remote prefill worker.
  Fleet agg(1);
  decode = policy->Choose(in, agg.all, q);
  p = PlanPrefill(config, in, decode, agg.all, q, *policy);
  EXPECT_STREQ(p.reason, "no_prefill_worker");
}

TEST_F(PlanPrefillTest, AlwaysGoesRemoteEvenWhenFullyCached) {
  config.mode = "always";
  PrefillPlan p = Plan(30 * kBlock);
  EXPECT_EQ(p.uncached_tokens, 0u);
  EXPECT_TRUE(p.remote);
  EXPECT_STREQ(p.reason, "remote");
  ASSERT_NE(p.prefill_worker, nullptr);
  for (WorkerState* w : prefill_fleet.all) w->prefills_inflight = 2;
  EXPECT_STREQ(Plan(30 * kBlock).reason, "prefill_queue_full");
}

}  // namespace
}  // namespace kvmesh::router
