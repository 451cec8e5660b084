// Routing decision throughput and latency (docs/routing.md, issue target: >= 100k decisions/s and
// p99 <= 50 us per decision with 1,000 workers and a populated index, one core).
//
// Setup (untimed): `--workers` synthetic workers and a PrefixIndex holding
//  - `--prefixes` shared prefixes (system prompts / documents) of 8-64 blocks, each held by a
//    random 20-100 workers;
//  - per worker, `--conversations` conversations: a random shared prefix followed by 100 blocks
//    of its own (the prefix is then held by that worker too);
//  - 5% of the holders' blocks in G2 and 2% in G3, and `--predictions` router predictions (whole
//    recent requests on random workers);
//  - random router-side load on every worker (the workers are a real WorkerRegistry's).
// Requests of 2-8k tokens (block 16): half continue a conversation (prefix + conversation blocks
// + new blocks), half are new (a shared prefix + new blocks).
// Timed per decision (steady_clock), the router's per-request path (Router::Impl::Choose, first
// try): the registry's view, QueryInto (kv modes), Choose over the view's decode workers with
// RouteInput::routable_only and the registry's load board (RouteInput::loads; the `pointers` cases
// leave it out), the prefill candidates (SelectCandidates) and PlanPrefill
// (conditional), the chosen worker's table entry; for each mode; one JSON object per case. Then
// the hashing cost of a 4k-token prompt (ComputeSequenceHashes) for reference.
// `--ingest_threads N` runs N threads that keep writing the index while decisions are timed (as
// the router's ZMQ indexer threads do): each batch stores a fresh 8-block continuation of a
// random conversation on its worker and (next batch) removes the previous one, and routes it with a
// 20-100 us prediction (so predictions expire during queries). Their batches are reported; the
// index is checked for sequence gaps and block accounting at the end.
// Before and after the timed cases, `--stall_probe_ms` (default 1000; 0 = off) of a loop that
// only reads the clock reports the machine's own stalls on this core (case "host_stalls"), the
// same-run reference for the p99.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "kv/block_hash.h"
#include "kv/kv_event.h"
#include "kv/prefix_index.h"
#include "router/routing.h"

namespace kvmesh::router {
namespace {

using Clock = std::chrono::steady_clock;

struct Rng {
  uint64_t s;
  uint64_t Next() {
    s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  uint32_t Range(uint32_t lo, uint32_t hi) {  // [lo, hi]
    return lo + static_cast<uint32_t>(Next() % (uint64_t{hi} - lo + 1));
  }
};

struct Options {
  uint32_t workers = 1000;
  uint32_t prefill_workers = 0;  // of `workers`, how many have role prefill (0 = all aggregated)
  uint32_t prefixes = 200;
  uint32_t conversations = 4;
  uint32_t requests = 4096;      // distinct prompts, cycled
  uint64_t decisions = 200000;   // per mode
  uint32_t predictions = 1000;  // router predictions (recent requests) in the index
  uint64_t seed = 1;
  uint32_t ingest_threads = 0;   // threads writing the index during the timed decisions
  std::string only;              // run only this case
  int stall_probe_ms = 1000;     // host stall probe before and after the timed cases (0 = off)
};

struct Request {
  std::vector<kv::BlockHash> hashes;
  uint32_t prompt_tokens;
};

void Store(kv::PrefixIndex& index, kv::WorkerId w, uint64_t& seq,
           std::span<const kv::BlockHash> hashes, Rng& rng) {
  kv::KvEventBatch batch;
  kv::BlockStored g1, g2, g3;
  g2.medium = kv::Medium::kG2;
  g3.medium = kv::Medium::kG3;
  for (kv::BlockHash h : hashes) {
    const uint64_t r = rng.Next() % 100;
    (r < 2 ? g3 : r < 7 ? g2 : g1).hashes.push_back(h);
  }
  for (kv::BlockStored* s : {&g1, &g2, &g3}) {
    if (!s->hashes.empty()) batch.events.push_back(std::move(*s));
  }
  index.ApplyBatch(w, ++seq, batch);
}

double Percentile(const std::vector<uint32_t>& sorted_ns, double p) {
  const size_t i = std::min(sorted_ns.size() - 1, static_cast<size_t>(p * sorted_ns.size()));
  return sorted_ns[i] / 1000.0;
}

// Separates what a decision costs from when it ran: requests are cycled, so each distinct
// request is decided decisions / requests times. The p99 over the requests' median times is the
// cost of the slowest requests; a decision over 50 us whose request's median is under 20 us was
// slow because of when it ran (the machine), not what it computed.
struct RequestSpread {
  double median_p50_us = 0, median_p99_us = 0;
  uint64_t over_50us = 0, over_50us_fast = 0;
};

RequestSpread SpreadByRequest(const std::vector<uint32_t>& ns, size_t requests) {
  std::vector<std::vector<uint32_t>> per(std::min<size_t>(requests, ns.size()));
  if (per.empty()) return {};
  for (size_t i = 0; i < ns.size(); ++i) per[i % per.size()].push_back(ns[i]);
  std::vector<uint32_t> median(per.size());
  for (size_t k = 0; k < per.size(); ++k) {
    std::nth_element(per[k].begin(), per[k].begin() + per[k].size() / 2, per[k].end());
    median[k] = per[k][per[k].size() / 2];
  }
  RequestSpread r;
  for (size_t i = 0; i < ns.size(); ++i) {
    if (ns[i] <= 50000) continue;
    ++r.over_50us;
    if (median[i % per.size()] < 20000) ++r.over_50us_fast;
  }
  std::sort(median.begin(), median.end());
  r.median_p50_us = Percentile(median, 0.5);
  r.median_p99_us = Percentile(median, 0.99);
  return r;
}

// The machine's own stalls, as a loop that does nothing but read the clock on this core sees
// them (no memory traffic): gaps between consecutive reads over 20 / 40 us, per second, and the
// share of the time lost in them. On a shared VM these set a floor under any p99: a decision of
// d us overlaps a gap with probability ~ rate * d.
void PrintHostStalls(const char* when, int probe_ms) {
  if (probe_ms <= 0) return;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + std::chrono::milliseconds(probe_ms);
  Clock::time_point prev = start;
  uint64_t over20 = 0, over40 = 0;
  int64_t lost_ns = 0, longest_ns = 0;
  for (;;) {
    const Clock::time_point t = Clock::now();
    const int64_t gap = std::chrono::duration_cast<std::chrono::nanoseconds>(t - prev).count();
    prev = t;
    if (gap > 20000) {
      ++over20;
      lost_ns += gap;
      if (gap > 40000) ++over40;
      longest_ns = std::max(longest_ns, gap);
    }
    if (t >= end) break;
  }
  const double secs = std::chrono::duration<double>(prev - start).count();
  std::printf(
      "{\"case\": \"host_stalls\", \"when\": \"%s\", \"probe_s\": %.2f, "
      "\"gaps_over_20us_per_s\": %.0f, \"gaps_over_40us_per_s\": %.0f, "
      "\"stalled_fraction\": %.4f, \"longest_gap_us\": %.1f}\n",
      when, secs, over20 / secs, over40 / secs, lost_ns / 1e9 / secs, longest_ns / 1000.0);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--workers") o.workers = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--prefill_workers") o.prefill_workers = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--prefixes") o.prefixes = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--conversations") o.conversations = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--requests") o.requests = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--decisions") o.decisions = std::stoull(next());
    else if (a == "--predictions") o.predictions = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--seed") o.seed = std::stoull(next());
    else if (a == "--only") o.only = next();
    else if (a == "--ingest_threads") o.ingest_threads = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--stall_probe_ms") o.stall_probe_ms = std::stoi(next());
    else {
      std::fprintf(stderr,
                   "usage: %s [--workers N] [--prefill_workers N] [--prefixes N] "
                   "[--conversations N] [--requests N] [--predictions N] [--decisions N] [--seed N] "
                   "[--ingest_threads N] [--stall_probe_ms N] "
                   "[--only kv/kvmesh|kv/dynamo|round_robin|random|least_loaded|...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (o.workers == 0 || o.prefixes == 0 || o.requests == 0 || o.decisions == 0 ||
      o.prefill_workers >= o.workers) {
    std::fprintf(stderr, "workers, prefixes, requests, decisions must be > 0; prefill_workers < workers\n");
    return 2;
  }
  Rng rng{o.seed};
  auto fresh_chain = [&](kv::BlockHash parent, uint32_t n, std::vector<kv::BlockHash>& out) {
    for (uint32_t i = 0; i < n; ++i) {
      parent = kv::ChainSequenceHash(parent, rng.Next(), kv::kBlockHashSeed);
      out.push_back(parent);
    }
  };

  // Fleet: a real WorkerRegistry (not started: no health probes, so the bench marks every
  // worker ready itself) with random router-side load. Its ids are 1..workers.
  WorkerRegistryOptions ro;
  for (uint32_t i = 0; i < o.workers; ++i) {
    WorkerSpec spec;
    spec.url = "http://127.0.0.1:" + std::to_string(20000 + i);
    spec.role = i < o.prefill_workers ? WorkerRole::kPrefill
                : o.prefill_workers > 0 ? WorkerRole::kDecode
                                        : WorkerRole::kAggregated;
    ro.static_workers.push_back(std::move(spec));
  }
  auto created_registry = WorkerRegistry::Create(std::move(ro), nullptr);
  if (!created_registry.ok()) {
    std::fprintf(stderr, "%s\n", created_registry.status().ToString().c_str());
    return 1;
  }
  const WorkerRegistry& registry = **created_registry;
  const std::shared_ptr<const WorkerView> fleet = registry.View();
  for (const auto& w : *fleet->table) {
    w->ready = true;
    const uint32_t inflight = rng.Range(0, 32);
    w->prefills_inflight = rng.Range(0, 10);
    const uint64_t prefill_tokens = rng.Range(0, 20000);
    SetLoadForTesting(*w, prefill_tokens, rng.Range(0, 8000), inflight);
  }
  if (fleet->table->size() != o.workers || fleet->table->back()->id != o.workers) {
    std::fprintf(stderr, "the registry did not number the workers 1..%u\n", o.workers);
    return 1;
  }

  // The index.
  kv::PrefixIndex index;
  std::vector<uint64_t> seq(o.workers + 1, 0);
  std::vector<std::vector<kv::BlockHash>> prefixes(o.prefixes);
  for (auto& p : prefixes) {
    fresh_chain(0, rng.Range(8, 64), p);
    const uint32_t holders = rng.Range(20, 100);
    for (uint32_t k = 0; k < holders; ++k) {
      const kv::WorkerId w = rng.Range(1, o.workers);
      Store(index, w, seq[w], p, rng);
    }
  }
  struct Conversation {
    uint32_t prefix;
    std::vector<kv::BlockHash> blocks;  // prefix + own blocks
  };
  std::vector<Conversation> conversations;
  for (uint32_t w = 1; w <= o.workers; ++w) {
    for (uint32_t c = 0; c < o.conversations; ++c) {
      Conversation conv;
      conv.prefix = rng.Range(0, o.prefixes - 1);
      conv.blocks = prefixes[conv.prefix];
      fresh_chain(conv.blocks.back(), 100, conv.blocks);
      Store(index, w, seq[w], conv.blocks, rng);
      conversations.push_back(std::move(conv));
    }
  }
  // Requests.
  std::vector<Request> requests(o.requests);
  for (Request& r : requests) {
    const uint32_t blocks = rng.Range(2048, 8192) / 16;
    if (rng.Next() % 2 == 0) {
      const Conversation& c = conversations[rng.Next() % conversations.size()];
      r.hashes.assign(c.blocks.begin(), c.blocks.begin() + std::min<size_t>(c.blocks.size(), blocks));
    } else {
      r.hashes = prefixes[rng.Next() % prefixes.size()];
    }
    if (r.hashes.size() < blocks) fresh_chain(r.hashes.back(), blocks - static_cast<uint32_t>(r.hashes.size()), r.hashes);
    r.prompt_tokens = blocks * 16 + rng.Range(0, 15);  // a partial last block
  }
  // Router predictions: recent requests sent to random workers.
  for (uint32_t i = 0; i < o.predictions; ++i) {
    const Request& r = requests[rng.Next() % requests.size()];
    index.AddPredicted(rng.Range(1, o.workers), r.hashes, std::chrono::hours(1));
  }
  const kv::PrefixIndexStats stats = index.Stats();
  std::printf(
      "{\"case\": \"setup\", \"workers\": %u, \"prefill_workers\": %u, \"index_blocks\": %" PRIu64
      ", \"index_holders\": %" PRIu64 ", \"predicted\": %" PRIu64 ", \"index_memory_bytes\": %" PRIu64
      ", \"requests\": %u}\n",
      o.workers, o.prefill_workers, stats.blocks, stats.holders, stats.predicted, stats.memory_bytes,
      o.requests);
  std::fflush(stdout);

  struct Case {
    const char* name;
    const char* mode;
    const char* kv_cost;
    double temperature;
    bool listed = false;  // a retry's path: SelectCandidates first, then Choose over the list
    bool pointers = false;  // no RouteInput::loads: the policy reads each WorkerState
  };
  const Case cases[] = {
      {"kv/kvmesh", "kv", "kvmesh", 0},         {"kv/dynamo", "kv", "dynamo", 0},
      {"kv/kvmesh/t0.1", "kv", "kvmesh", 0.1},  {"kv/dynamo/t0.1", "kv", "dynamo", 0.1},
      {"round_robin", "round_robin", "", 0},    {"random", "random", "", 0},
      {"least_loaded", "least_loaded", "", 0},
      {"index_query_only", "kv", "kvmesh", 0},  // the view and QueryInto: the index's share
      {"kv/kvmesh/listed", "kv", "kvmesh", 0, true},
      {"kv/kvmesh/pointers", "kv", "kvmesh", 0, false, true},
      {"kv/dynamo/pointers", "kv", "dynamo", 0, false, true},
  };
  // Writers: thread t owns the workers w with w % ingest_threads == t (so each worker's batch
  // sequence stays in order), like the indexer's per-worker event streams.
  std::atomic<bool> stop_ingest{false};
  std::atomic<uint64_t> ingested{0};
  std::vector<std::thread> writers;
  for (uint32_t t = 0; t < o.ingest_threads; ++t) {
    writers.emplace_back([&, t] {
      Rng wr{o.seed * 7919 + t};
      std::vector<std::vector<kv::BlockHash>> last(o.workers + 1);
      while (!stop_ingest.load(std::memory_order_relaxed)) {
        kv::WorkerId w = wr.Range(1, o.workers);
        w -= w % o.ingest_threads;
        w += t;
        if (w == 0 || w > o.workers) continue;
        kv::BlockHash parent = 0;  // a new root when workers hold no conversations
        if (o.conversations > 0) {
          parent = conversations[(w - 1) * o.conversations + wr.Next() % o.conversations]
                       .blocks.back();
        }
        std::vector<kv::BlockHash> fresh;
        for (int i = 0; i < 8; ++i) {
          parent = kv::ChainSequenceHash(parent, wr.Next(), kv::kBlockHashSeed);
          fresh.push_back(parent);
        }
        kv::KvEventBatch stored_batch;
        kv::BlockStored stored;
        stored.hashes = fresh;
        stored_batch.events.push_back(std::move(stored));
        index.ApplyBatch(w, ++seq[w], stored_batch);
        if (!last[w].empty()) {
          kv::KvEventBatch removed_batch;
          removed_batch.events.emplace_back(std::in_place_type<kv::BlockRemoved>);
          std::get<kv::BlockRemoved>(removed_batch.events.back()).hashes = last[w];
          index.ApplyBatch(w, ++seq[w], removed_batch);
        }
        last[w] = fresh;
        index.AddPredicted(w, fresh, std::chrono::microseconds(wr.Range(20, 100)));
        ingested.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  const Clock::time_point ingest_start = Clock::now();

  RouterDisaggregationConfig disagg;  // conditional, 64 tokens, queue 8
  std::vector<uint32_t> ns(o.decisions);
  PrintHostStalls("before", o.stall_probe_ms);
  for (const Case& c : cases) {
    if (!o.only.empty() && o.only != c.name) continue;
    RouterRoutingConfig config;
    config.mode = c.mode;
    if (*c.kv_cost) config.kv_cost = c.kv_cost;
    config.temperature = c.temperature;
    auto created = CreateRoutingPolicy(config, o.seed);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
      return 1;
    }
    RoutingPolicy& policy = **created;
    const bool query_only = std::string(c.name) == "index_query_only";
    kv::QueryResult q;
    const std::unordered_set<kv::WorkerId> none;
    std::vector<WorkerState*> pre, cands, excluded;
    uint64_t overlap_sum = 0, remote = 0;
    // One decision as Router::Impl::Choose makes it on a first try: the membership view, the
    // index query, the policy over the view's decode workers (skipping unroutable ones), the
    // routable prefill candidates and the plan, the chosen worker's table entry. A `listed` case
    // lists the routable decode candidates first, as a retry does.
    auto decide = [&](const Request& r, RouteChoice& d, PrefillPlan& plan)
                      __attribute__((always_inline)) {
      const std::shared_ptr<const WorkerView> view = registry.View();
      RouteInput in;
      in.hashes = r.hashes;
      in.prompt_tokens = r.prompt_tokens;
      in.max_new_tokens = 256;
      in.block_size = 16;
      in.routable_only = c.listed ? nullptr : &registry;
      if (!c.listed && !c.pointers) in.loads = view->DecodeLoads();
      if (c.listed) {
        registry.SelectCandidates(*view, CandidateKind::kDecode, none, nullptr, cands,
                                  &excluded);
      }
      q.workers.clear();
      if (policy.uses_overlap()) index.QueryInto(r.hashes, {}, q);
      if (query_only) return;
      d = policy.Choose(in, c.listed ? std::span<WorkerState* const>(cands) : view->decode, q);
      registry.SelectCandidates(*view, CandidateKind::kRemotePrefill, none, d.worker, pre,
                                nullptr);
      plan = PlanPrefill(disagg, in, d, pre, q, policy);
      if (view->Find(d.worker) == nullptr) std::abort();  // the router's table entry lookup
    };
    // Warm-up (scratch buffers, caches), untimed.
    for (uint32_t i = 0; i < std::min<uint32_t>(o.requests, 2000); ++i) {
      RouteChoice d;
      PrefillPlan plan;
      decide(requests[i], d, plan);
    }
    const Clock::time_point start = Clock::now();
    for (uint64_t i = 0; i < o.decisions; ++i) {
      const Request& r = requests[i % requests.size()];
      RouteChoice d;
      PrefillPlan plan;
      const Clock::time_point t0 = Clock::now();
      decide(r, d, plan);
      const Clock::time_point t1 = Clock::now();
      ns[i] = static_cast<uint32_t>(std::min<int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), UINT32_MAX));
      overlap_sum += d.overlap_blocks;
      remote += plan.remote;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const RequestSpread spread = SpreadByRequest(ns, requests.size());
    std::sort(ns.begin(), ns.end());
    std::printf(
        "{\"case\": \"%s\", \"workers\": %u, \"decode_candidates\": %zu, \"prefill_candidates\": "
        "%zu, \"decisions\": %" PRIu64 ", \"decisions_per_s\": %.0f, \"p50_us\": %.2f, "
        "\"p99_us\": %.2f, \"p999_us\": %.2f, \"max_us\": %.2f, \"mean_overlap_blocks\": %.1f, "
        "\"remote_prefill_ratio\": %.3f, \"request_median_p50_us\": %.2f, "
        "\"request_median_p99_us\": %.2f, \"over_50us\": %" PRIu64
        ", \"over_50us_fast_request\": %" PRIu64 "}\n",
        c.name, o.workers, fleet->decode.size(), fleet->prefill.size(), o.decisions,
        o.decisions / secs, Percentile(ns, 0.5), Percentile(ns, 0.99), Percentile(ns, 0.999),
        ns.back() / 1000.0, static_cast<double>(overlap_sum) / o.decisions,
        static_cast<double>(remote) / o.decisions, spread.median_p50_us, spread.median_p99_us,
        spread.over_50us, spread.over_50us_fast);
    std::fflush(stdout);
  }
  PrintHostStalls("after", o.stall_probe_ms);

  if (!writers.empty()) {
    stop_ingest.store(true);
    for (std::thread& th : writers) th.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // every writer TTL has passed
    index.ExpirePredicted();
    const double secs = std::chrono::duration<double>(Clock::now() - ingest_start).count();
    const kv::PrefixIndexStats after = index.Stats();
    // Every worker's sequence stayed in order, the blocks the writers added are gone again but
    // for each worker's last continuation (8 blocks at most per worker), and the index's own
    // invariants hold.
    const std::string invariants = index.CheckInvariants();
    if (!invariants.empty()) std::fprintf(stderr, "index invariant: %s\n", invariants.c_str());
    const bool ok = after.gaps == 0 && after.blocks >= stats.blocks &&
                    after.blocks <= stats.blocks + 8ull * o.workers && invariants.empty();
    std::printf(
        "{\"case\": \"ingest\", \"threads\": %u, \"batches\": %" PRIu64
        ", \"batches_per_s\": %.0f, \"gaps\": %" PRIu64 ", \"index_blocks_before\": %" PRIu64
        ", \"index_blocks_after\": %" PRIu64 ", \"consistent\": %s}\n",
        o.ingest_threads, ingested.load(), ingested.load() / secs, after.gaps, stats.blocks,
        after.blocks, ok ? "true" : "false");
    std::fflush(stdout);
    if (!ok) return 1;
  }

  // Hashing a 4k-token prompt, for reference.
  if (o.only.empty() || o.only == "hash") {
    std::vector<uint32_t> tokens(4096);
    for (uint32_t& t : tokens) t = static_cast<uint32_t>(rng.Next() % 128000);
    kv::BlockHashOptions ho;
    ho.block_size = 16;
    const int kReps = 20000;
    std::vector<uint32_t> hns(kReps);
    uint64_t sink = 0;
    for (int i = 0; i < kReps; ++i) {
      tokens[0] = static_cast<uint32_t>(i);
      const Clock::time_point t0 = Clock::now();
      auto h = kv::ComputeSequenceHashes(tokens, ho);
      const Clock::time_point t1 = Clock::now();
      sink += h.ok() ? h->back() : 0;
      hns[i] = static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    }
    std::sort(hns.begin(), hns.end());
    std::printf(
        "{\"case\": \"hash_4k_tokens\", \"block_size\": 16, \"reps\": %d, \"p50_us\": %.2f, "
        "\"p99_us\": %.2f, \"sink\": %" PRIu64 "}\n",
        kReps, Percentile(hns, 0.5), Percentile(hns, 0.99), sink % 10);
  }
  return 0;
}

}  // namespace
}  // namespace kvmesh::router

int main(int argc, char** argv) { return kvmesh::router::Main(argc, argv); }
