// Replays a Mooncake trace into PrefixIndex and prints one JSON object (docs/prefix-index.md).
//
// Per block size (default 128 and 16 tokens):
//  1. Hashes: tokens are synthesized per 512-token hash id (same id -> same tokens), truncated
//     to input_length (kv/trace_loader.h) and hashed with ComputeSequenceHashes at the block size
//     (untimed).
//  2. Mixed replay in trace order: query the index (timed per request), route the request to
//     the worker with the lowest cost = blocks to prefill + recent-load penalty (untimed), run
//     that worker's LRU cache, build its event batch (BlockStored new, BlockRemoved evicted;
//     untimed) and apply it (timed per batch).
//  3. Ingest-only replay of the recorded batches into a fresh index (one thread, timed as a
//     whole), with the heap delta (mallinfo2 uordblks + hblkhd) per indexed block.
//  4. Every request queried again against the final (full) index.
//  5. Concurrent: one thread replays the batches into a fresh index while another queries.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <list>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/block_hash.h"
#include "kv/prefix_index.h"
#include "kv/trace_loader.h"

namespace kvmesh::kv {
namespace {

using Clock = std::chrono::steady_clock;

struct Recorded {
  WorkerId worker;
  uint64_t seq;
  KvEventBatch batch;
};

size_t HeapBytes() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

nlohmann::json Latency(std::vector<double> ns) {
  nlohmann::json j;
  j["count"] = ns.size();
  j["p50_us"] = Pct(ns, 0.50) / 1000;
  j["p90_us"] = Pct(ns, 0.90) / 1000;
  j["p99_us"] = Pct(ns, 0.99) / 1000;
  j["max_us"] = ns.empty() ? 0 : *std::max_element(ns.begin(), ns.end()) / 1000;
  return j;
}

// One worker's KV cache: an LRU of block hashes with a fixed capacity in blocks.
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity) {}
  // Touches hits, inserts misses, evicts from the cold end; fills the event lists.
  void Access(const std::vector<BlockHash>& hashes, std::vector<BlockHash>& stored,
              std::vector<BlockHash>& evicted) {
    // Like vLLM, a sequence's tail is evicted before its head: walk it backwards so that
    // block 0 ends up most recently used.
    size_t first_new = stored.size();
    for (auto h = hashes.rbegin(); h != hashes.rend(); ++h) {
      auto it = map_.find(*h);
      if (it != map_.end()) {
        order_.splice(order_.begin(), order_, it->second);
      } else {
        order_.push_front(*h);
        map_.emplace(*h, order_.begin());
        stored.push_back(*h);
      }
    }
    std::reverse(stored.begin() + static_cast<long>(first_new), stored.end());
    while (map_.size() > capacity_) {
      BlockHash victim = order_.back();
      order_.pop_back();
      map_.erase(victim);
      evicted.push_back(victim);
    }
  }

 private:
  size_t capacity_;
  std::list<BlockHash> order_;
  std::unordered_map<BlockHash, std::list<BlockHash>::iterator> map_;
};

constexpr uint32_t kVocabSize = 32000;  // token ids synthesized from the trace's hash ids

nlohmann::json RunBlockSize(const std::vector<TraceRecord>& trace, uint32_t block_size,
                            uint32_t workers, uint64_t cache_tokens, size_t max_blocks) {
  nlohmann::json out;
  out["block_size"] = block_size;
  const size_t cache_blocks = cache_tokens / block_size;
  out["cache_blocks_per_worker"] = cache_blocks;

  // 1. Hashes (untimed).
  std::vector<std::vector<BlockHash>> hashes(trace.size());
  uint64_t total_blocks = 0;
  {
    BlockHashOptions ho;
    ho.block_size = block_size;
    for (size_t r = 0; r < trace.size(); ++r) {
      auto h = ComputeSequenceHashes(MooncakePromptTokens(trace[r], kVocabSize), ho);
      if (!h.ok()) {
        std::fprintf(stderr, "hashing failed: %s\n", h.status().ToString().c_str());
        std::exit(1);
      }
      hashes[r] = std::move(h).value();
      total_blocks += hashes[r].size();
    }
  }
  out["request_blocks_total"] = total_blocks;
  const double avg_blocks = static_cast<double>(total_blocks) / static_cast<double>(trace.size());

  PrefixIndexOptions opts;
  opts.max_blocks = max_blocks;
  opts.initial_capacity = static_cast<size_t>(workers * cache_blocks / 0.7);

  // 2. Mixed replay.
  std::vector<Recorded> recorded;
  recorded.reserve(trace.size());
  std::vector<double> mixed_query_ns;
  mixed_query_ns.reserve(trace.size());
  uint64_t apply_ns = 0, apply_ops = 0, evictions = 0, hit_blocks = 0;
  {
    PrefixIndex index(opts);
    std::vector<LruCache> caches(workers, LruCache(cache_blocks));
    std::vector<uint64_t> seq(workers, 0);
    std::vector<uint32_t> recent(workers, 0);
    const size_t window = workers;  // load = requests routed among the last `workers`
    std::vector<uint32_t> recent_ring;
    QueryResult qr;
    std::vector<uint32_t> matched(workers, 0);
    std::vector<BlockHash> stored, evicted;
    for (size_t r = 0; r < trace.size(); ++r) {
      auto t0 = Clock::now();
      index.QueryInto(hashes[r], QueryOptions{}, qr);
      auto t1 = Clock::now();
      mixed_query_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());

      std::fill(matched.begin(), matched.end(), 0);
      for (const WorkerMatch& m : qr.workers) matched[m.worker] = m.matched_blocks;
      uint32_t best = 0;
      double best_cost = 1e300;
      for (uint32_t w = 0; w < workers; ++w) {
        double cost = static_cast<double>(hashes[r].size() - matched[w]) + avg_blocks * recent[w];
        if (cost < best_cost) {
          best_cost = cost;
          best = w;
        }
      }
      hit_blocks += matched[best];
      recent_ring.push_back(best);
      ++recent[best];
      if (recent_ring.size() > window) --recent[recent_ring[recent_ring.size() - 1 - window]];

      stored.clear();
      evicted.clear();
      caches[best].Access(hashes[r], stored, evicted);
      evictions += evicted.size();
      Recorded rec{best, seq[best]++, {}};
      if (!stored.empty()) {
        BlockStored s;
        s.hashes = stored;
        s.block_size = block_size;
        rec.batch.events.emplace_back(std::move(s));
      }
      if (!evicted.empty()) rec.batch.events.emplace_back(BlockRemoved{evicted, Medium::kG1});

      auto t2 = Clock::now();
      ApplyResult ar = index.ApplyBatch(rec.worker, rec.seq, rec.batch);
      auto t3 = Clock::now();
      if (ar.gap) std::fprintf(stderr, "unexpected gap\n");
      apply_ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t3 - t2).count());
      apply_ops += stored.size() + evicted.size();
      recorded.push_back(std::move(rec));
    }
    out["mixed"] = {
        {"query_latency", Latency(mixed_query_ns)},
        {"event_block_ops", apply_ops},
        {"event_block_ops_per_s", static_cast<double>(apply_ops) / (apply_ns * 1e-9)},
        {"lru_evictions", evictions},
        {"routed_hit_ratio", static_cast<double>(hit_blocks) / static_cast<double>(total_blocks)},
        {"blocks_indexed_end", index.Stats().blocks},
    };
  }

  // 3. Ingest-only replay + memory.
  {
    size_t heap0 = HeapBytes();
    auto index = std::make_unique<PrefixIndex>(opts);
    auto t0 = Clock::now();
    for (const Recorded& rec : recorded) index->ApplyBatch(rec.worker, rec.seq, rec.batch);
    auto t1 = Clock::now();
    size_t heap1 = HeapBytes();
    PrefixIndexStats st = index->Stats();
    double secs = std::chrono::duration<double>(t1 - t0).count();
    out["ingest_only"] = {
        {"block_ops", st.block_ops},
        {"batches", st.batches},
        {"seconds", secs},
        {"block_ops_per_s", static_cast<double>(st.block_ops) / secs},
        {"blocks_indexed", st.blocks},
        {"holders", st.holders},
        {"pruned_blocks", st.pruned_blocks},
        {"heap_bytes_delta", heap1 - heap0},
        {"heap_bytes_per_block", static_cast<double>(heap1 - heap0) / st.blocks},
        {"accounted_bytes_per_block", static_cast<double>(st.memory_bytes) / st.blocks},
        {"note", "table pre-sized to workers*cache_blocks/0.7 slots; the heap delta includes "
                 "that reservation"},
    };

    // 4. Queries against the full index.
    std::vector<double> ns;
    ns.reserve(trace.size());
    QueryResult qr;
    uint64_t matched_any = 0;
    std::vector<double> walked;  // blocks the walk visited = longest match (+1 if it ended early)
    double ns_total = 0, walked_total = 0, workers_returned = 0;
    for (const auto& h : hashes) {
      auto q0 = Clock::now();
      index->QueryInto(h, QueryOptions{}, qr);
      auto q1 = Clock::now();
      double t = std::chrono::duration<double, std::nano>(q1 - q0).count();
      ns.push_back(t);
      matched_any += !qr.workers.empty();
      uint32_t longest = 0;
      for (const WorkerMatch& m : qr.workers) longest = std::max(longest, m.matched_with_predicted);
      double w = std::min<double>(static_cast<double>(h.size()), longest + 1.0);
      walked.push_back(w);
      workers_returned += static_cast<double>(qr.workers.size());
      ns_total += t;
      walked_total += w;
    }
    out["full_index_query_latency"] = Latency(ns);
    // The fixed part of every query: the first (up to) 4 blocks, held by every worker here.
    {
      std::vector<double> ns4;
      ns4.reserve(hashes.size());
      for (const auto& h : hashes) {
        std::span<const BlockHash> head(h.data(), std::min<size_t>(h.size(), 4));
        auto q0 = Clock::now();
        index->QueryInto(head, QueryOptions{}, qr);
        auto q1 = Clock::now();
        ns4.push_back(std::chrono::duration<double, std::nano>(q1 - q0).count());
      }
      out["full_index_first4_blocks_query_latency"] = Latency(ns4);
    }
    out["full_index_queries_with_match"] = matched_any;
    out["full_index_walk_blocks"] = {{"mean", walked_total / static_cast<double>(walked.size())},
                                     {"p50", Pct(walked, 0.5)},
                                     {"p99", Pct(walked, 0.99)},
                                     {"ns_per_walked_block", ns_total / walked_total},
                                     {"mean_workers_returned",
                                      workers_returned / static_cast<double>(walked.size())}};
  }

  // 5. Concurrent ingest (thread A) + queries (thread B).
  {
    PrefixIndex index(opts);
    std::atomic<bool> done{false};
    std::vector<double> ns;
    ns.reserve(trace.size() * 4);
    std::thread querier([&] {
      QueryResult qr;
      size_t r = 0;
      while (!done.load(std::memory_order_relaxed)) {
        auto q0 = Clock::now();
        index.QueryInto(hashes[r], QueryOptions{}, qr);
        auto q1 = Clock::now();
        ns.push_back(std::chrono::duration<double, std::nano>(q1 - q0).count());
        r = (r + 1) % hashes.size();
      }
    });
    auto t0 = Clock::now();
    for (const Recorded& rec : recorded) index.ApplyBatch(rec.worker, rec.seq, rec.batch);
    auto t1 = Clock::now();
    done = true;
    querier.join();
    double secs = std::chrono::duration<double>(t1 - t0).count();
    out["concurrent"] = {
        {"ingest_block_ops_per_s", static_cast<double>(index.Stats().block_ops) / secs},
        {"queries", ns.size()},
        {"queries_per_s", static_cast<double>(ns.size()) / secs},
        {"query_latency", Latency(ns)},
    };
  }
  return out;
}

int Main(int argc, char** argv) {
  std::string trace_path = "/work/shared/data/traces/mooncake_conversation_trace.jsonl";
  uint32_t workers = 128;
  uint64_t cache_tokens = 524288;
  size_t limit = 0, max_blocks = 0;
  std::vector<uint32_t> block_sizes = {128, 16};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--trace") {
      trace_path = next();
    } else if (a == "--workers") {
      workers = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--cache-tokens") {
      cache_tokens = std::stoull(next());
    } else if (a == "--limit") {
      limit = std::stoull(next());
    } else if (a == "--max-blocks") {
      max_blocks = std::stoull(next());
    } else if (a == "--block-size") {
      block_sizes = {static_cast<uint32_t>(std::stoul(next()))};
    } else {
      std::fprintf(stderr,
                   "usage: %s [--trace PATH] [--workers N] [--cache-tokens N] [--limit N] "
                   "[--max-blocks N] [--block-size N]\n",
                   argv[0]);
      return 2;
    }
  }
  auto loaded = LoadMooncakeTrace(trace_path, limit);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const std::vector<TraceRecord>& trace = *loaded;
  nlohmann::json out;
  out["trace"] = trace_path;
  out["requests"] = trace.size();
  out["workers"] = workers;
  out["cache_tokens_per_worker"] = cache_tokens;
  out["max_blocks"] = max_blocks;
  out["hardware_threads"] = std::thread::hardware_concurrency();
  for (uint32_t bs : block_sizes) out["runs"].push_back(RunBlockSize(trace, bs, workers, cache_tokens, max_blocks));
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace kvmesh::kv

int main(int argc, char** argv) { return kvmesh::kv::Main(argc, argv); }
