#include "kv/prefix_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>

namespace kvmesh::kv {
namespace {

using std::chrono::nanoseconds;
using std::chrono::seconds;

KvEventBatch Stored(std::vector<BlockHash> hashes, Medium m = Medium::kG1) {
  KvEventBatch b;
  BlockStored s;
  s.hashes = std::move(hashes);
  s.medium = m;
  b.events.emplace_back(std::move(s));
  return b;
}

KvEventBatch Removed(std::vector<BlockHash> hashes, Medium m = Medium::kG1) {
  KvEventBatch b;
  BlockRemoved r;
  r.hashes = std::move(hashes);
  r.medium = m;
  b.events.emplace_back(std::move(r));
  return b;
}

KvEventBatch Cleared() {
  KvEventBatch b;
  b.events.emplace_back(AllBlocksCleared{});
  return b;
}

// Applies batches with consecutive sequence numbers per worker.
class Feeder {
 public:
  explicit Feeder(PrefixIndex& index) : index_(index) {}
  ApplyResult Apply(WorkerId w, const KvEventBatch& b) { return index_.ApplyBatch(w, seq_[w]++, b); }

 private:
  PrefixIndex& index_;
  std::map<WorkerId, uint64_t> seq_;
};

std::map<WorkerId, WorkerMatch> ByWorker(const QueryResult& r) {
  std::map<WorkerId, WorkerMatch> m;
  for (const WorkerMatch& w : r.workers) {
    EXPECT_TRUE(m.emplace(w.worker, w).second) << "worker listed twice: " << w.worker;
  }
  return m;
}

TEST(PrefixIndexTest, LeadingMatchSemantics) {
  PrefixIndex index;
  Feeder f(index);
  f.Apply(1, Stored({10, 11, 12}));
  f.Apply(2, Stored({10, 11}));
  f.Apply(3, Stored({11, 12}));  // holds blocks 1 and 2 but not block 0
  auto m = ByWorker(index.Query(std::vector<BlockHash>{10, 11, 12, 13}));
  ASSERT_EQ(m.size(), 2u);  // worker 3 matches 0 leading blocks and is not listed
  EXPECT_EQ(m[1].matched_blocks, 3u);
  EXPECT_EQ(m[2].matched_blocks, 2u);
  EXPECT_EQ(m[1].total_blocks, 3u);
  EXPECT_EQ(m[2].total_blocks, 2u);

  // Diverging in the middle stops the run even if later blocks match.
  f.Apply(4, Stored({10, 12}));
  m = ByWorker(index.Query(std::vector<BlockHash>{10, 11, 12}));
  EXPECT_EQ(m[4].matched_blocks, 1u);

  // all_workers lists everyone, zero matches included.
  m = ByWorker(index.Query(std::vector<BlockHash>{10, 11}, QueryOptions{.all_workers = true}));
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[3].matched_blocks, 0u);
  EXPECT_EQ(m[3].total_blocks, 2u);

  EXPECT_TRUE(index.Query(std::vector<BlockHash>{99}).workers.empty());
  EXPECT_TRUE(index.Query(std::span<const BlockHash>{}).workers.empty());
}

TEST(PrefixIndexTest, PerTierCounts) {
  PrefixIndex index;
  Feeder f(index);
  f.Apply(1, Stored({1, 2}, Medium::kG1));
  f.Apply(1, Stored({2, 3, 4}, Medium::kG2));
  f.Apply(1, Stored({4, 5}, Medium::kG3));
  auto m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(m.size(), 1u);
  const WorkerMatch& w = m[1];
  EXPECT_EQ(w.matched_blocks, 5u);
  EXPECT_EQ(w.matched_tier[0], 2u);  // 1, 2
  EXPECT_EQ(w.matched_tier[1], 3u);  // 2, 3, 4
  EXPECT_EQ(w.matched_tier[2], 2u);  // 4, 5
  EXPECT_EQ(w.total_blocks, 5u);
  EXPECT_EQ(w.total_tier[0], 2u);
  EXPECT_EQ(w.total_tier[1], 3u);
  EXPECT_EQ(w.total_tier[2], 2u);

  // Removing block 3 from G2 ends the run at 2 blocks.
  f.Apply(1, Removed({3}, Medium::kG2));
  m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3, 4, 5}));
  EXPECT_EQ(m[1].matched_blocks, 2u);
  EXPECT_EQ(m[1].matched_tier[1], 1u);
  EXPECT_EQ(m[1].total_blocks, 4u);
  // Removing from a tier that does not hold it changes nothing and is counted.
  f.Apply(1, Removed({1}, Medium::kG3));
  EXPECT_EQ(index.Stats().removed_absent, 1u);
  EXPECT_EQ(ByWorker(index.Query(std::vector<BlockHash>{1}))[1].matched_blocks, 1u);
}

TEST(PrefixIndexTest, SameBlockOnManyWorkersAndIdempotence) {
  PrefixIndex index;
  Feeder f(index);
  for (WorkerId w = 0; w < 200; ++w) f.Apply(w * 7 + 3, Stored({5, 6}));
  f.Apply(3, Stored({5, 6}));  // duplicate store
  f.Apply(3, Removed({77}));   // absent
  auto m = ByWorker(index.Query(std::vector<BlockHash>{5, 6}));
  ASSERT_EQ(m.size(), 200u);
  for (const auto& [id, w] : m) {
    EXPECT_EQ(w.matched_blocks, 2u) << id;
    EXPECT_EQ(w.total_blocks, 2u) << id;
  }
  PrefixIndexStats s = index.Stats();
  EXPECT_EQ(s.blocks, 2u);
  EXPECT_EQ(s.holders, 400u);
  EXPECT_EQ(s.stored_duplicate, 2u);
  EXPECT_EQ(s.removed_absent, 1u);
  // Remove from half the workers: heap holder arrays shrink back correctly.
  for (WorkerId w = 0; w < 200; w += 2) f.Apply(w * 7 + 3, Removed({5}));
  m = ByWorker(index.Query(std::vector<BlockHash>{5, 6}));
  EXPECT_EQ(m.size(), 100u);
  EXPECT_EQ(index.Stats().holders, 300u);
}

TEST(PrefixIndexTest, RemoveAndClearWorker) {
  PrefixIndex index;
  Feeder f(index);
  std::vector<BlockHash> many;
  for (BlockHash h = 1; h <= 5000; ++h) many.push_back(h);
  f.Apply(1, Stored(many));
  f.Apply(2, Stored({1, 2, 3}));
  f.Apply(2, Stored({1}, Medium::kG2));
  EXPECT_EQ(index.Stats().blocks, 5000u);

  index.ClearWorker(1);
  auto m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3, 4}));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[2].matched_blocks, 3u);
  EXPECT_EQ(index.Stats().blocks, 3u);
  EXPECT_EQ(index.Stats().workers, 2u);
  // A cleared worker keeps its sequence baseline: seq 2 follows seq 0 => gap.
  EXPECT_TRUE(index.ApplyBatch(1, 2, Stored({1})).gap);

  // AllBlocksCleared from the worker itself.
  f.Apply(2, Cleared());
  m = ByWorker(index.Query(std::vector<BlockHash>{1, 2}));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[1].matched_blocks, 1u);

  index.RemoveWorker(1);
  EXPECT_TRUE(index.Query(std::vector<BlockHash>{1}).workers.empty());
  EXPECT_EQ(index.Stats().blocks, 0u);
  EXPECT_EQ(index.Workers(), std::vector<WorkerId>{2});
  // Removed worker starts over: any seq is a fresh baseline.
  EXPECT_FALSE(index.ApplyBatch(1, 100, Stored({1})).gap);
  auto w = ByWorker(index.Query(std::vector<BlockHash>{1}));
  EXPECT_EQ(w[1].total_blocks, 1u);  // slot reuse did not inherit old totals
}

// HeldBlocks: each confirmed block once (whoever holds it, in any tier), never predicted-only
// blocks; the cap is honoured.
TEST(PrefixIndexTest, HeldBlocksListsConfirmedBlocksOnce) {
  PrefixIndex index;
  Feeder f(index);
  f.Apply(1, Stored({1, 2, 3}));
  f.Apply(2, Stored({2, 3, 4}, Medium::kG3));
  index.AddPredicted(3, std::vector<BlockHash>{5, 6}, std::chrono::seconds(60));
  index.AddPredicted(3, std::vector<BlockHash>{1}, std::chrono::seconds(60));
  std::vector<BlockHash> held = index.HeldBlocks();
  std::sort(held.begin(), held.end());
  EXPECT_EQ(held, (std::vector<BlockHash>{1, 2, 3, 4}));
  EXPECT_EQ(index.HeldBlocks(2).size(), 2u);
  f.Apply(1, Cleared());
  held = index.HeldBlocks();
  std::sort(held.begin(), held.end());
  EXPECT_EQ(held, (std::vector<BlockHash>{2, 3, 4}));
}

TEST(PrefixIndexTest, GapDetectionAndResync) {
  PrefixIndex index;
  EXPECT_FALSE(index.ApplyBatch(7, 41, Stored({1})).gap);  // baseline
  EXPECT_FALSE(index.ApplyBatch(7, 42, Stored({2})).gap);
  ApplyResult r = index.ApplyBatch(7, 45, Stored({3}));
  EXPECT_TRUE(r.gap);
  EXPECT_EQ(r.expected_seq, 43u);
  EXPECT_EQ(r.got_seq, 45u);
  // The batch after a gap is still applied.
  EXPECT_EQ(ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3}))[7].matched_blocks, 3u);
  EXPECT_FALSE(index.ApplyBatch(7, 46, Stored({4})).gap);
  // A producer restart (seq goes back) is a gap too.
  EXPECT_TRUE(index.ApplyBatch(7, 0, Stored({5})).gap);
  EXPECT_EQ(index.Stats().gaps, 2u);
  // Other workers have their own sequences.
  EXPECT_FALSE(index.ApplyBatch(8, 0, Stored({1})).gap);

  // Resync from an inventory snapshot replaces everything and sets the baseline.
  index.ReplaceWorker(7, {std::vector<BlockHash>{1, 2}, std::vector<BlockHash>{2, 9}, {}}, 100);
  auto m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 9, 3}));
  EXPECT_EQ(m[7].matched_blocks, 3u);
  EXPECT_EQ(m[7].matched_tier[0], 2u);
  EXPECT_EQ(m[7].matched_tier[1], 2u);
  EXPECT_EQ(m[7].total_blocks, 3u);
  EXPECT_FALSE(index.ApplyBatch(7, 101, Stored({3})).gap);
}

TEST(PrefixIndexTest, PredictedEntriesExpire) {
  auto now = std::chrono::steady_clock::time_point{} + seconds(1000);
  PrefixIndexOptions opts;
  opts.clock = [&now] { return now; };
  PrefixIndex index(opts);
  Feeder f(index);
  f.Apply(1, Stored({1, 2}));
  index.AddPredicted(1, std::vector<BlockHash>{3, 4}, seconds(5));
  index.AddPredicted(2, std::vector<BlockHash>{1, 2, 3}, seconds(10));

  auto m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3, 4, 5}));
  EXPECT_EQ(m[1].matched_blocks, 2u);
  EXPECT_EQ(m[1].matched_with_predicted, 4u);
  EXPECT_EQ(m[1].total_blocks, 2u);  // predictions are not counted as cached
  EXPECT_EQ(m[2].matched_blocks, 0u);
  EXPECT_EQ(m[2].matched_with_predicted, 3u);
  EXPECT_EQ(index.Stats().predicted, 5u);

  now += seconds(5);  // worker 1's prediction expires exactly now (expiry is exclusive)
  m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3, 4}));
  EXPECT_EQ(m[1].matched_with_predicted, 2u);
  EXPECT_EQ(m[2].matched_with_predicted, 3u);

  // A confirmed store under a prediction keeps both; re-predicting extends the TTL.
  f.Apply(2, Stored({1}));
  index.AddPredicted(2, std::vector<BlockHash>{1, 2, 3}, seconds(20));
  now += seconds(10);
  index.ExpirePredicted();
  m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3}));
  EXPECT_EQ(m[2].matched_blocks, 1u);
  EXPECT_EQ(m[2].matched_with_predicted, 3u);
  EXPECT_EQ(index.Stats().predicted, 3u);
  EXPECT_EQ(index.Stats().predicted_expired, 2u);

  now += seconds(100);
  index.ExpirePredicted();
  m = ByWorker(index.Query(std::vector<BlockHash>{1, 2, 3}));
  EXPECT_EQ(m[2].matched_with_predicted, 1u);
  PrefixIndexStats s = index.Stats();
  EXPECT_EQ(s.predicted, 0u);
  EXPECT_EQ(s.blocks, 2u);  // predicted-only blocks 3 and 4 are gone
  EXPECT_EQ(s.holders, 3u);
}

TEST(PrefixIndexTest, MemoryBoundPrunesOldestAndKeepsTotals) {
  PrefixIndexOptions opts;
  opts.max_blocks = 100;
  PrefixIndex index(opts);
  Feeder f(index);
  for (BlockHash h = 0; h < 1000; ++h) f.Apply(static_cast<WorkerId>(h % 3), Stored({h}));
  PrefixIndexStats s = index.Stats();
  EXPECT_EQ(s.blocks, 100u);
  EXPECT_EQ(s.pruned_blocks, 900u);
  uint64_t total = 0;
  for (const WorkerMatch& w :
       index.Query(std::vector<BlockHash>{}, QueryOptions{.all_workers = true}).workers) {
    total += w.total_blocks;
  }
  EXPECT_EQ(total, 100u);
  // The newest 100 survive.
  EXPECT_TRUE(index.Query(std::vector<BlockHash>{0}).workers.empty());
  EXPECT_EQ(index.Query(std::vector<BlockHash>{999}).workers.size(), 1u);
  EXPECT_EQ(index.Query(std::vector<BlockHash>{900}).workers.size(), 1u);
  // Re-storing a block refreshes it: block 900 survives the next 99 new blocks.
  f.Apply(1, Stored({900}));
  for (BlockHash h = 2000; h < 2099; ++h) f.Apply(0, Stored({h}));
  EXPECT_EQ(index.Query(std::vector<BlockHash>{900}).workers.size(), 2u);
  EXPECT_TRUE(index.Query(std::vector<BlockHash>{901}).workers.empty());
  EXPECT_EQ(index.Stats().blocks, 100u);
  EXPECT_EQ(index.CheckInvariants(), "");
}

// Naive reference: worker -> (hash -> mask), predictions as (worker, hash) -> expiry.
class Reference {
 public:
  void Store(WorkerId w, BlockHash h, uint32_t bits) { held_[w][h] |= bits; }
  void Remove(WorkerId w, BlockHash h, uint32_t bits) {
    auto it = held_[w].find(h);
    if (it == held_[w].end()) return;
    it->second &= ~bits;
    if (it->second == 0) held_[w].erase(it);
  }
  void Clear(WorkerId w) {
    held_[w].clear();
    std::erase_if(pred_, [w](const auto& kv) { return kv.first.first == w; });
  }
  void Forget(WorkerId w) {
    Clear(w);
    held_.erase(w);
  }
  void Predict(WorkerId w, BlockHash h, int64_t expiry) {
    held_[w];
    auto& e = pred_[{w, h}];
    e = std::max(e, expiry);
  }
  std::map<WorkerId, WorkerMatch> Query(const std::vector<BlockHash>& hs, int64_t now) const {
    std::map<WorkerId, WorkerMatch> out;
    for (const auto& [w, blocks] : held_) {
      WorkerMatch m;
      m.worker = w;
      bool confirmed_run = true;
      for (size_t i = 0; i < hs.size(); ++i) {
        auto it = blocks.find(hs[i]);
        uint32_t mask = it == blocks.end() ? 0 : it->second;
        auto p = pred_.find({w, hs[i]});
        bool pred = p != pred_.end() && p->second > now;
        if (mask == 0 && !pred) break;
        m.matched_with_predicted = static_cast<uint32_t>(i + 1);
        if (mask != 0 && confirmed_run) {
          m.matched_blocks = static_cast<uint32_t>(i + 1);
          for (int t = 0; t < kNumMedia; ++t) m.matched_tier[t] += (mask >> t) & 1;
        } else {
          confirmed_run = false;
        }
      }
      for (const auto& [h, mask] : blocks) {
        ++m.total_blocks;
        for (int t = 0; t < kNumMedia; ++t) m.total_tier[t] += (mask >> t) & 1;
      }
      if (m.matched_with_predicted > 0) out[w] = m;
    }
    return out;
  }

 private:
  std::map<WorkerId, std::map<BlockHash, uint32_t>> held_;
  std::map<std::pair<WorkerId, BlockHash>, int64_t> pred_;
};

void ExpectSame(const std::map<WorkerId, WorkerMatch>& got,
                const std::map<WorkerId, WorkerMatch>& want, int step) {
  ASSERT_EQ(got.size(), want.size()) << "step " << step;
  for (const auto& [id, w] : want) {
    auto it = got.find(id);
    ASSERT_NE(it, got.end()) << "step " << step << " worker " << id;
    const WorkerMatch& g = it->second;
    EXPECT_EQ(g.matched_blocks, w.matched_blocks) << "step " << step << " worker " << id;
    EXPECT_EQ(g.matched_tier, w.matched_tier) << "step " << step << " worker " << id;
    EXPECT_EQ(g.matched_with_predicted, w.matched_with_predicted)
        << "step " << step << " worker " << id;
    EXPECT_EQ(g.total_blocks, w.total_blocks) << "step " << step << " worker " << id;
    EXPECT_EQ(g.total_tier, w.total_tier) << "step " << step << " worker " << id;
  }
}

// Random operations on `num_workers` workers, each step checked against the reference. With
// many workers most blocks get many holders, which exercises the per-entry worker bitsets
// (entries switch to them as holders grow past kMinBitsetCap, widen them when a higher worker
// slot joins, and drop back to inline holders); worker slots beyond 64 need multi-word bitsets.
// long_chains: stores, predictions and queries of up to ~80 blocks, longer than the query's
// lookahead pipeline (prefetch 16, find 8 ahead), so its ring wraps.
void RunModelCheck(int num_workers, int steps, uint64_t seed, bool long_chains = false) {
  int64_t now_ns = 1'000'000'000;
  PrefixIndexOptions opts;
  opts.clock = [&now_ns] { return std::chrono::steady_clock::time_point{nanoseconds(now_ns)}; };
  PrefixIndex index(opts);
  Reference ref;
  std::mt19937_64 rng(seed);
  std::map<WorkerId, uint64_t> seq;
  auto rand = [&rng](uint64_t n) { return rng() % n; };
  // A small universe of hashes so that blocks collide across workers; a chain structure so
  // queries have long matches.
  std::vector<BlockHash> universe;
  const size_t chain = long_chains ? 64 : 12;  // longest store
  for (size_t i = 0; i < (long_chains ? 160u : 64u); ++i) universe.push_back(rng() | 1);
  for (int step = 0; step < steps; ++step) {
    WorkerId w = static_cast<WorkerId>(rand(static_cast<uint64_t>(num_workers))) * 1000;
    uint64_t op = rand(100);
    if (op < 45) {
      std::vector<BlockHash> hs;
      size_t start = rand(8), len = 1 + rand(chain);
      for (size_t i = start; i < start + len; ++i) hs.push_back(universe[i % universe.size()]);
      Medium m = static_cast<Medium>(rand(3));
      for (BlockHash h : hs) ref.Store(w, h, 1u << static_cast<int>(m));
      index.ApplyBatch(w, seq[w]++, Stored(hs, m));
    } else if (op < 80) {
      std::vector<BlockHash> hs;
      for (int i = 0, n = 1 + static_cast<int>(rand(4)); i < n; ++i) {
        hs.push_back(universe[rand(24)]);
      }
      Medium m = static_cast<Medium>(rand(3));
      for (BlockHash h : hs) ref.Remove(w, h, 1u << static_cast<int>(m));
      index.ApplyBatch(w, seq[w]++, Removed(hs, m));
    } else if (op < 85) {
      std::vector<BlockHash> hs;
      size_t start = rand(8), len = 1 + rand(long_chains ? 40 : 6);
      for (size_t i = start; i < start + len; ++i) hs.push_back(universe[i]);
      int64_t ttl = static_cast<int64_t>(1 + rand(50)) * 1000;
      for (BlockHash h : hs) ref.Predict(w, h, now_ns + ttl);
      index.AddPredicted(w, hs, nanoseconds(ttl));
    } else if (op < 87) {
      ref.Clear(w);
      if (rand(2)) {
        index.ClearWorker(w);
      } else {
        index.ApplyBatch(w, seq[w]++, Cleared());
      }
    } else if (op < 88) {
      ref.Forget(w);
      index.RemoveWorker(w);
      seq.erase(w);
    } else {
      now_ns += static_cast<int64_t>(rand(5000));
      if (rand(4) == 0) index.ExpirePredicted();
    }
    std::vector<BlockHash> q;
    size_t qs = rand(3), ql = rand(long_chains ? 80 : 16);
    for (size_t i = qs; i < qs + ql; ++i) q.push_back(universe[i]);
    ExpectSame(ByWorker(index.Query(q)), ref.Query(q, now_ns), step);
    if (step % 16 == 0) {
      EXPECT_EQ(index.CheckInvariants(), "") << "step " << step;
    }
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_EQ(index.CheckInvariants(), "");
  EXPECT_EQ(index.Stats().gaps, 0u);
}

TEST(PrefixIndexTest, RandomModelCheckAgainstReference) { RunModelCheck(6, 6000, 12345); }

TEST(PrefixIndexTest, RandomModelCheckManyWorkersBitsets) {
  RunModelCheck(150, 4000, 777);
  if (::testing::Test::HasFailure()) return;
  RunModelCheck(70, 3000, 4242);
}

TEST(PrefixIndexTest, RandomModelCheckLongChains) {
  RunModelCheck(6, 3000, 99);
  if (::testing::Test::HasFailure()) return;
  RunModelCheck(6, 3000, 2024, /*long_chains=*/true);
  if (::testing::Test::HasFailure()) return;
  RunModelCheck(130, 1200, 31337, /*long_chains=*/true);
}

// More than 64 active bitset words (over 4,096 workers): the walk classifies the active words
// 64 at a time; words left with nobody (workers 4,500+ lack block C) drop out, tier exceptions
// (block B also in G2 on every 7th worker) are counted, and scattered drop-outs (every 5th worker
// lacks C) end their runs where they should.
void CheckQueryOverManyBitsetWords() {
  PrefixIndex index;
  constexpr BlockHash kA = 101, kB = 202, kC = 303, kD = 404;
  constexpr int kWorkers = 5000;
  for (int w = 0; w < kWorkers; ++w) {
    KvEventBatch batch = Stored({kA, kB});
    if (w % 7 == 0) batch.events.push_back(Stored({kB}, Medium::kG2).events[0]);
    std::vector<BlockHash> more;
    if (w < 4500 && w % 5 != 0) more.push_back(kC);
    if (w < 100) more.push_back(kD);
    if (!more.empty()) batch.events.push_back(Stored(more).events[0]);
    index.ApplyBatch(static_cast<WorkerId>(w + 1), 0, batch);
  }
  const auto m = ByWorker(index.Query(std::vector<BlockHash>{kA, kB, kC, kD}));
  ASSERT_EQ(m.size(), static_cast<size_t>(kWorkers));
  for (int w = 0; w < kWorkers; ++w) {
    const WorkerMatch& x = m.at(static_cast<WorkerId>(w + 1));
    const uint32_t want = (w >= 4500 || w % 5 == 0) ? 2 : (w < 100 ? 4 : 3);
    ASSERT_EQ(x.matched_blocks, want) << "worker " << w;
    EXPECT_EQ(x.matched_with_predicted, want) << "worker " << w;
    EXPECT_EQ(x.matched_tier[0], want) << "worker " << w;
    EXPECT_EQ(x.matched_tier[1], w % 7 == 0 ? 1u : 0u) << "worker " << w;
    EXPECT_EQ(x.matched_tier[2], 0u) << "worker " << w;
  }
}

TEST(PrefixIndexTest, QueryOverManyBitsetWords) { CheckQueryOverManyBitsetWords(); }

// Every implementation of the bitset-word classification (detail::QueryKernelName: AVX2 or SSE2
// on x86-64, chosen by the CPU, and the portable scalar one) gives the reference's answers: fleets
// of 300 workers (5 bitset words: vector body and tail) and 5,000 (79 words: chunks of 64).
TEST(PrefixIndexTest, EveryQueryKernelAgreesWithReference) {
  const std::string original(detail::QueryKernelName());
  int ran = 0;
  for (const char* kernel : {"scalar", "sse2", "avx2"}) {
    if (!detail::SelectQueryKernelForTest(kernel)) continue;
    SCOPED_TRACE(kernel);
    ++ran;
    RunModelCheck(300, 1500, 5150);
    CheckQueryOverManyBitsetWords();
    if (::testing::Test::HasFailure()) break;
  }
  ASSERT_TRUE(detail::SelectQueryKernelForTest(original));
  EXPECT_GE(ran, 1);
#if defined(__x86_64__)
  EXPECT_GE(ran, 2);  // SSE2 is part of x86-64
#endif
}

// A query that finds an expired prediction purges it (exclusive lock) before walking; the answer
// is the same as after ExpirePredicted(), and the purge is visible in Stats().
TEST(PrefixIndexTest, QueryIgnoresAndPurgesExpiredPredictions) {
  int64_t now_ns = 1'000'000'000;
  PrefixIndexOptions opts;
  opts.clock = [&now_ns] { return std::chrono::steady_clock::time_point{nanoseconds(now_ns)}; };
  PrefixIndex index(opts);
  std::vector<BlockHash> hs;
  for (BlockHash h = 1; h <= 40; ++h) hs.push_back(h * 7919);
  index.ApplyBatch(1, 0, Stored({hs.begin(), hs.begin() + 10}));
  index.AddPredicted(1, hs, nanoseconds(1000));                                  // to 1000
  index.AddPredicted(2, {hs.begin(), hs.begin() + 30}, nanoseconds(5000));       // to 5000
  auto m = ByWorker(index.Query(hs));
  EXPECT_EQ(m[1].matched_blocks, 10u);
  EXPECT_EQ(m[1].matched_with_predicted, 40u);
  EXPECT_EQ(m[2].matched_with_predicted, 30u);
  EXPECT_EQ(index.Stats().predicted, 70u);
  now_ns += 1000;  // worker 1's predictions expire exactly now (live while expiry > now)
  m = ByWorker(index.Query(hs));
  EXPECT_EQ(m[1].matched_blocks, 10u);
  EXPECT_EQ(m[1].matched_with_predicted, 10u);
  EXPECT_EQ(m[2].matched_with_predicted, 30u);
  EXPECT_EQ(index.Stats().predicted, 30u);  // purged by the query
  EXPECT_EQ(index.Stats().predicted_expired, 40u);
  now_ns += 4000;
  m = ByWorker(index.Query(hs));
  EXPECT_EQ(m.count(2), 0u);
  EXPECT_EQ(index.Stats().predicted, 0u);
}

// Past a shared prefix one worker is left, and the walk folds its blocks alone (the
// single-survivor step): tiers other than G1, and a block it holds only predicted, where its
// confirmed run ends while the predicted run goes on.
TEST(PrefixIndexTest, WalkWithOneWorkerLeft) {
  PrefixIndex index;
  Feeder feed(index);
  std::vector<BlockHash> hs;
  for (BlockHash h = 1; h <= 30; ++h) hs.push_back(h * 104729);
  // Workers 2-4 hold the prefix 0..4; worker 1 holds 0..29 but: block 10 in G2 only, block 12 in
  // G1 and G3, block 20 only predicted. Worker 5 holds 6..8 (never in the runs: it lacks 0).
  for (WorkerId w = 2; w <= 4; ++w) feed.Apply(w, Stored({hs.begin(), hs.begin() + 5}));
  std::vector<BlockHash> own(hs.begin(), hs.end());
  own.erase(own.begin() + 20);
  own.erase(own.begin() + 10);
  feed.Apply(1, Stored(own));
  feed.Apply(1, Stored({hs[10]}, Medium::kG2));
  feed.Apply(1, Stored({hs[12]}, Medium::kG3));
  feed.Apply(5, Stored({hs.begin() + 6, hs.begin() + 9}));
  index.AddPredicted(1, {&hs[20], 1}, seconds(60));
  auto m = ByWorker(index.Query(hs));
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[1].matched_blocks, 20u);
  EXPECT_EQ(m[1].matched_with_predicted, 30u);
  EXPECT_EQ(m[1].matched_tier, (std::array<uint32_t, kNumMedia>{19, 1, 1}));
  for (WorkerId w = 2; w <= 4; ++w) {
    EXPECT_EQ(m[w].matched_blocks, 5u) << w;
    EXPECT_EQ(m[w].matched_with_predicted, 5u) << w;
  }
  // A block it no longer holds ends the predicted run there.
  feed.Apply(1, Removed({hs[25]}));
  m = ByWorker(index.Query(hs));
  EXPECT_EQ(m[1].matched_blocks, 20u);
  EXPECT_EQ(m[1].matched_with_predicted, 25u);
}

// The same walks when predictions expire faster than the query can purge them: after two purges
// that each found another record expired, the query checks every predicted-only holder against
// its TTL, and a worker stops at its expired prediction. With one worker left past the prefix
// (the single-survivor step) and with two (the general fold).
void CheckWalkOverExpiredPredictions(bool two_left) {
  SCOPED_TRACE(two_left ? "two workers left" : "one worker left");
  const int64_t base = 1'000'000'000;
  int64_t ticks = -1;  // < 0: the clock stands at base; else each read moves it 1 us on
  PrefixIndexOptions opts;
  opts.clock = [&] {
    const int64_t t = ticks < 0 ? base : base + 1000 * ticks++;
    return std::chrono::steady_clock::time_point{nanoseconds(t)};
  };
  PrefixIndex index(opts);
  Feeder feed(index);
  std::vector<BlockHash> hs;
  for (BlockHash h = 1; h <= 20; ++h) hs.push_back(h * 7907);
  const std::vector<WorkerId> left =
      two_left ? std::vector<WorkerId>{1, 4} : std::vector<WorkerId>{1};
  for (WorkerId w : left) feed.Apply(w, Stored({hs.begin(), hs.begin() + 10}));
  feed.Apply(2, Stored({hs.begin(), hs.begin() + 5}));
  // Clock reads once armed: base + 1 us (check: expired), +2 us (purge), +3 us (check: expired
  // again), +4 us (purge), +5 us (the query's now). Expiries: worker 3's at base + 1 us and
  // base + 3 us make both checks fail; the predictions of block 12 expire at base + 4.5 us
  // (after the last purge, before the query), those of blocks 10, 11, 13 and 14 much later.
  const std::vector<BlockHash> unrelated = {991, 992};
  index.AddPredicted(3, {&unrelated[0], 1}, nanoseconds(1000));
  index.AddPredicted(3, {&unrelated[1], 1}, nanoseconds(3000));
  const std::vector<BlockHash> later = {hs[10], hs[11], hs[13], hs[14]};
  for (WorkerId w : left) {
    index.AddPredicted(w, {&hs[12], 1}, nanoseconds(4500));
    index.AddPredicted(w, later, seconds(60));
  }
  ticks = 1;
  auto m = ByWorker(index.Query(hs));
  EXPECT_EQ(ticks, 6) << "the query did not take the path this test is about";
  for (WorkerId w : left) {
    EXPECT_EQ(m[w].matched_blocks, 10u) << w;
    EXPECT_EQ(m[w].matched_with_predicted, 12u) << w;
  }
  EXPECT_EQ(m[2].matched_blocks, 5u);
}

TEST(PrefixIndexTest, WalkChecksPredictionsThatExpireDuringTheQuery) {
  CheckWalkOverExpiredPredictions(/*two_left=*/false);
  CheckWalkOverExpiredPredictions(/*two_left=*/true);
}

// Predictions with short real-clock TTLs expire while readers query: the readers' purges and
// the writers' mutations interleave under the lock without corrupting anything.
TEST(PrefixIndexTest, ConcurrentPredictionsExpireDuringQueries) {
  PrefixIndex index;
  std::vector<BlockHash> hs;
  for (BlockHash h = 1; h <= 24; ++h) hs.push_back(h * 104729);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3000; ++i) {
        const WorkerId w = static_cast<WorkerId>(t * 100 + i % 7);
        index.AddPredicted(w, {hs.begin(), hs.begin() + 1 + i % 24},
                           std::chrono::microseconds(1 + i % 50));
        if (i % 3 == 0) {
          index.ApplyBatch(w, static_cast<uint64_t>(i), Stored({hs.begin(), hs.begin() + i % 5}));
        }
      }
    });
  }
  std::atomic<uint64_t> queries{0};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      QueryResult out;
      while (!stop.load() || queries.load() < 200) {
        index.QueryInto(hs, {}, out);
        for (const WorkerMatch& w : out.workers) {
          ASSERT_LE(w.matched_blocks, w.matched_with_predicted);
          ASSERT_LE(w.matched_with_predicted, hs.size());
        }
        queries.fetch_add(1);
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop.store(true);
  for (size_t i = 2; i < threads.size(); ++i) threads[i].join();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  for (const WorkerMatch& w : index.Query(hs).workers) {
    EXPECT_EQ(w.matched_with_predicted, w.matched_blocks) << "worker " << w.worker;
  }
  EXPECT_EQ(index.Stats().predicted, 0u);
}

TEST(PrefixIndexTest, ConcurrentIngestAndQuery) {
  PrefixIndex index;
  constexpr int kWriters = 2;
  constexpr int kBatches = 2000;
  std::atomic<int> writers_done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&index, &writers_done, t] {
      for (int i = 0; i < kBatches; ++i) {
        BlockHash base = static_cast<BlockHash>(i % 50);
        index.ApplyBatch(static_cast<WorkerId>(t), static_cast<uint64_t>(2 * i),
                         Stored({base, base + 1, base + 2}));
        index.ApplyBatch(static_cast<WorkerId>(t), static_cast<uint64_t>(2 * i + 1),
                         Removed({base % 2 ? base : 1000}));
      }
      writers_done.fetch_add(1);
    });
  }
  std::atomic<uint64_t> queries{0};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      QueryResult out;
      std::vector<BlockHash> q = {1, 2, 3, 4, 5};
      while (writers_done.load() < kWriters || queries.load() < 100) {
        index.QueryInto(q, QueryOptions{.all_workers = true}, out);
        for (const WorkerMatch& w : out.workers) {
          ASSERT_LE(w.matched_blocks, q.size());
          ASSERT_LE(w.matched_blocks, w.total_blocks);
        }
        queries.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GE(queries.load(), 100u);
  // The last touch of block b <= 49 is base b: store (b even) or store+remove (b odd); 50 and
  // 51 are stored by bases 48/49. So each writer ends with the 25 even blocks 0..48 plus 50, 51.
  auto m = ByWorker(index.Query(std::vector<BlockHash>{0, 1, 2}));
  ASSERT_EQ(m.size(), 2u);
  for (const auto& [id, w] : m) {
    EXPECT_EQ(w.matched_blocks, 1u);
    EXPECT_EQ(w.total_blocks, 27u);
  }
  EXPECT_EQ(index.Stats().gaps, 0u);
  EXPECT_EQ(index.CheckInvariants(), "");
}

}  // namespace
}  // namespace kvmesh::kv
