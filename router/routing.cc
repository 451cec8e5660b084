#include "router/routing.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/check.h"

namespace kvmesh::router {
namespace {

// ---------------------------------------------------------------------------------------------
// Random numbers: splitmix64. The shared state advances with one atomic fetch_add per decision
// (lock-free, deterministic for a given seed on one thread); draws within a decision use a local
// copy of the stream.

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class SharedRng {
 public:
  explicit SharedRng(uint64_t seed) : state_(seed) {}
  // A fresh 64-bit seed for one decision's local stream.
  uint64_t Next() { return Mix64(state_.fetch_add(kGolden, std::memory_order_relaxed) + kGolden); }

 private:
  std::atomic<uint64_t> state_;
};

struct LocalRng {
  uint64_t s;
  uint64_t Next() {
    s += kGolden;
    return Mix64(s);
  }
  // Uniform in [0, n).
  uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
};

// ---------------------------------------------------------------------------------------------
// Per-thread scratch, reused across decisions (no allocation once warmed).

// WorkerId -> index into QueryResult::workers. Open addressing with generation stamps, so a
// decision clears nothing: O(matches) to fill, O(1) per candidate lookup, any id values.
class MatchMap {
 public:
  void Build(const kv::QueryResult& overlaps) {
    const size_t n = overlaps.workers.size();
    size_t want = 16;
    while (want < 2 * n) want <<= 1;
    if (want > keys_.size()) {
      keys_.assign(want, 0);
      vals_.assign(want, 0);
      gens_.assign(want, 0);
      gen_ = 0;
    }
    mask_ = keys_.size() - 1;
    if (++gen_ == 0) {  // wrapped: stamps of 2^32 decisions ago would look live
      std::fill(gens_.begin(), gens_.end(), 0);
      gen_ = 1;
    }
    for (size_t i = 0; i < n; ++i) {
      const kv::WorkerId id = overlaps.workers[i].worker;
      size_t h = Hash(id);
      while (gens_[h] == gen_ && keys_[h] != id) h = (h + 1) & mask_;
      keys_[h] = id;
      vals_[h] = static_cast<uint32_t>(i);
      gens_[h] = gen_;
    }
  }
  // Index into overlaps.workers, or -1.
  int64_t Find(kv::WorkerId id) const {
    size_t h = Hash(id);
    while (gens_[h] == gen_) {
      if (keys_[h] == id) return vals_[h];
      h = (h + 1) & mask_;
    }
    return -1;
  }

 private:
  size_t Hash(kv::WorkerId id) const {
    return static_cast<size_t>((uint64_t{id} * kGolden) >> 32) & mask_;
  }
  std::vector<kv::WorkerId> keys_;
  std::vector<uint32_t> vals_;
  std::vector<uint32_t> gens_;
  uint32_t gen_ = 0;
  size_t mask_ = 0;
};

// Worker ids below this are placed in a direct table by the kv pass (router ids are small: the
// registry counts them up); larger ids fall back to hashing.
constexpr kv::WorkerId kMaxDenseId = kv::WorkerId{1} << 20;

struct Scratch {
  MatchMap matches;
  std::vector<uint32_t> mpos;  // worker id -> 1 + index into the matches (all 0 between calls)
  std::vector<uint32_t> ties;  // candidate indices tied at the running minimum cost
  std::vector<double> prefill_of;  // 1 + match index -> prefill term of the cost
  std::vector<double> costs;
  std::vector<double> weights;
  std::vector<WorkerState*> prefill_room;
  std::vector<WorkerState*> routable;
  std::vector<uint32_t> matched_at;  // board pass: matched candidates' indices
  std::vector<double> matched_cost;  // ... and their costs
  std::vector<uint32_t> merged;      // board pass: the tied candidates' indices
  std::vector<uint64_t> matched_bits;  // board pass, consecutive ids: matched positions
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// RouteInput::routable_only for the policies that filter first: the routable ones of
// `candidates`, in order (per-thread scratch, valid until the thread's next call); `candidates`
// itself when input.routable_only is null.
std::span<WorkerState* const> RoutableOnly(const RouteInput& input,
                                           std::span<WorkerState* const> candidates) {
  if (input.routable_only == nullptr) return candidates;
  std::vector<WorkerState*>& out = ThreadScratch().routable;
  out.clear();
  for (WorkerState* w : candidates) {
    if (input.routable_only->Routable(*w)) out.push_back(w);
  }
  return out;
}

const kv::WorkerMatch* FindMatch(const kv::QueryResult& overlaps, kv::WorkerId id) {
  for (const kv::WorkerMatch& m : overlaps.workers) {
    if (m.worker == id) return &m;
  }
  return nullptr;
}

// A baseline's choice: fills the overlap fields from `overlaps` when the caller queried anyway.
RouteChoice BaselineChoice(WorkerState* w, const kv::QueryResult& overlaps) {
  RouteChoice c;
  c.worker = w;
  if (const kv::WorkerMatch* m = FindMatch(overlaps, w->id)) {
    c.overlap_blocks = m->matched_blocks;
    c.overlap_predicted = m->matched_with_predicted;
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Board kernels: the kv policy's pass over candidates with consecutive ids reads each load field
// of the LoadBoard as one array. key(i) = (int64)((a[i] << sa) + (b[i] << sb)) (b null: a[i] <<
// sa), the kvmesh load sum (its multipliers are powers of two at a power-of-two block size) or
// dynamo's decode blocks; only unmatched candidates (match[i] == 0) count.
// The AVX2 kernels read the board with vector loads rather than atomic ones: each aligned 8-byte
// word is still read whole (x86-64), a value some LoadGuard wrote. A decision reads a moment's
// loads either way; the scalar pass's relaxed loads are no more consistent across workers.

struct BoardRun {
  uint64_t* a;
  uint64_t* b;  // null: key = a << sa
  const uint32_t* match;
  size_t n;
  int sa, sb;
};

inline uint64_t LoadWord(uint64_t* p) {
  return std::atomic_ref<uint64_t>(*p).load(std::memory_order_relaxed);
}

inline int64_t KeyAt(const BoardRun& r, size_t i) {
  uint64_t k = LoadWord(r.a + i) << r.sa;
  if (r.b != nullptr) k += LoadWord(r.b + i) << r.sb;
  return static_cast<int64_t>(k);
}

// The smallest unmatched key, INT64_MAX when none is smaller.
using MinKeyFn = int64_t (*)(const BoardRun& r);
// Writes the unmatched i with key(i) == key (not INT64_MAX) to out, ascending; returns how many.
using KeysAtFn = size_t (*)(const BoardRun& r, int64_t key, uint32_t* out);

[[gnu::noinline]] int64_t MinKeyScalar(const BoardRun& r) {
  int64_t m = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < r.n; ++i) {
    const int64_t k = KeyAt(r, i);
    if (r.match[i] == 0 && k < m) m = k;
  }
  return m;
}

[[gnu::noinline]] size_t KeysAtScalar(const BoardRun& r, int64_t key, uint32_t* out) {
  size_t t = 0;
  for (size_t i = 0; i < r.n; ++i) {
    if (r.match[i] == 0 && KeyAt(r, i) == key) out[t++] = static_cast<uint32_t>(i);
  }
  return t;
}

#if defined(__x86_64__)
// Keys of candidates i..i+3, matched ones replaced by INT64_MAX.
[[gnu::always_inline, gnu::target("avx2")]] inline __m256i Keys4Avx2(const BoardRun& r, size_t i,
                                                                     __m128i sa, __m128i sb) {
  __m256i k = _mm256_sll_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.a + i)), sa);
  if (r.b != nullptr) {
    k = _mm256_add_epi64(
        k, _mm256_sll_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.b + i)), sb));
  }
  const __m256i m =
      _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r.match + i)));
  const __m256i unmatched = _mm256_cmpeq_epi64(m, _mm256_setzero_si256());
  return _mm256_blendv_epi8(_mm256_set1_epi64x(std::numeric_limits<int64_t>::max()), k,
                            unmatched);
}

// Lane-wise minimum of signed 64-bit lanes.
[[gnu::always_inline, gnu::target("avx2")]] inline __m256i Min4Avx2(__m256i x, __m256i y) {
  return _mm256_blendv_epi8(x, y, _mm256_cmpgt_epi64(x, y));
}

[[gnu::noinline, gnu::target("avx2")]] int64_t MinKeyAvx2(const BoardRun& r) {
  const __m128i sa = _mm_cvtsi32_si128(r.sa), sb = _mm_cvtsi32_si128(r.sb);
  // AVX2 has no 64-bit min: a compare and a blend, whose latency would bound a loop with one
  // running minimum. Four independent minima (16 candidates per step) keep the loads busy.
  const __m256i max = _mm256_set1_epi64x(std::numeric_limits<int64_t>::max());
  __m256i lo = max, lo1 = max, lo2 = max, lo3 = max;
  size_t i = 0;
  for (; i + 16 <= r.n; i += 16) {
    lo = Min4Avx2(lo, Keys4Avx2(r, i, sa, sb));
    lo1 = Min4Avx2(lo1, Keys4Avx2(r, i + 4, sa, sb));
    lo2 = Min4Avx2(lo2, Keys4Avx2(r, i + 8, sa, sb));
    lo3 = Min4Avx2(lo3, Keys4Avx2(r, i + 12, sa, sb));
  }
  for (; i + 4 <= r.n; i += 4) lo = Min4Avx2(lo, Keys4Avx2(r, i, sa, sb));
  lo = Min4Avx2(Min4Avx2(lo, lo1), Min4Avx2(lo2, lo3));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), lo);
  int64_t m = std::min(std::min(lanes[0], lanes[1]), std::min(lanes[2], lanes[3]));
  for (; i < r.n; ++i) {
    const int64_t k = KeyAt(r, i);
    if (r.match[i] == 0 && k < m) m = k;
  }
  return m;
}

[[gnu::noinline, gnu::target("avx2")]] size_t KeysAtAvx2(const BoardRun& r, int64_t key,
                                                          uint32_t* out) {
  const __m128i sa = _mm_cvtsi32_si128(r.sa), sb = _mm_cvtsi32_si128(r.sb);
  const __m256i want = _mm256_set1_epi64x(key);
  size_t t = 0, i = 0;
  for (; i + 4 <= r.n; i += 4) {
    const __m256i eq = _mm256_cmpeq_epi64(Keys4Avx2(r, i, sa, sb), want);
    for (uint32_t bits = static_cast<uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(eq)));
         bits != 0; bits &= bits - 1) {
      out[t++] = static_cast<uint32_t>(i + std::countr_zero(bits));
    }
  }
  for (; i < r.n; ++i) {
    if (r.match[i] == 0 && KeyAt(r, i) == key) out[t++] = static_cast<uint32_t>(i);
  }
  return t;
}
#endif

struct BoardKernel {
  const char* name;
  MinKeyFn min_key;
  KeysAtFn keys_at;
};

// The kernels this CPU can run, fastest first.
std::vector<BoardKernel> AvailableBoardKernels() {
  std::vector<BoardKernel> kernels;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) kernels.push_back({"avx2", MinKeyAvx2, KeysAtAvx2});
#endif
  kernels.push_back({"scalar", MinKeyScalar, KeysAtScalar});
  return kernels;
}

// Set once at startup (tests may switch it: detail::SelectBoardKernelForTest).
BoardKernel g_board_kernel = AvailableBoardKernels().front();

// ---------------------------------------------------------------------------------------------
// Baselines.

class RoundRobinPolicy final : public RoutingPolicy {
 public:
  const char* name() const override { return "round_robin"; }
  bool uses_overlap() const override { return false; }
  RouteChoice Choose(const RouteInput& input, std::span<WorkerState* const> candidates,
                     const kv::QueryResult& overlaps) override {
    candidates = RoutableOnly(input, candidates);
    if (candidates.empty()) return {};
    const uint64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    return BaselineChoice(candidates[i % candidates.size()], overlaps);
  }

 private:
  std::atomic<uint64_t> next_{0};
};

class RandomPolicy final : public RoutingPolicy {
 public:
  explicit RandomPolicy(uint64_t seed) : rng_(seed) {}
  const char* name() const override { return "random"; }
  bool uses_overlap() const override { return false; }
  RouteChoice Choose(const RouteInput& input, std::span<WorkerState* const> candidates,
                     const kv::QueryResult& overlaps) override {
    candidates = RoutableOnly(input, candidates);
    if (candidates.empty()) return {};
    LocalRng local{rng_.Next()};
    const uint32_t i = local.Below(static_cast<uint32_t>(candidates.size()));
    return BaselineChoice(candidates[i], overlaps);
  }

 private:
  SharedRng rng_;
};

class LeastLoadedPolicy final : public RoutingPolicy {
 public:
  explicit LeastLoadedPolicy(uint64_t seed) : rng_(seed) {}
  const char* name() const override { return "least_loaded"; }
  bool uses_overlap() const override { return false; }
  RouteChoice Choose(const RouteInput& input, std::span<WorkerState* const> candidates,
                     const kv::QueryResult& overlaps) override {
    candidates = RoutableOnly(input, candidates);
    if (candidates.empty()) return {};
    LocalRng local{rng_.Next()};
    WorkerState* best = nullptr;
    uint32_t best_inflight = 0;
    uint64_t best_blocks = 0;
    uint32_t ties = 0;
    for (WorkerState* w : candidates) {
      const uint32_t inflight = w->inflight.load(std::memory_order_relaxed);
      const uint64_t blocks = w->decode_blocks.load(std::memory_order_relaxed);
      if (best == nullptr || inflight < best_inflight ||
          (inflight == best_inflight && blocks < best_blocks)) {
        best = w;
        best_inflight = inflight;
        best_blocks = blocks;
        ties = 1;
      } else if (inflight == best_inflight && blocks == best_blocks) {
        // Reservoir sampling: each of the k tied workers ends up chosen with probability 1/k.
        if (local.Below(++ties) == 0) best = w;
      }
    }
    return BaselineChoice(best, overlaps);
  }

 private:
  SharedRng rng_;
};

// ---------------------------------------------------------------------------------------------
// KV-aware policy: a cost per candidate, then argmin (temperature 0) or softmax sampling.

enum class KvCost { kDynamo, kKvmesh };

class KvPolicy final : public RoutingPolicy {
 public:
  KvPolicy(KvCost cost, double overlap_weight, double temperature, double rtt_block_ms,
           uint64_t seed)
      : cost_(cost),
        overlap_weight_(overlap_weight),
        temperature_(temperature),
        rtt_blocks_per_ms_(rtt_block_ms > 0 ? 1.0 / rtt_block_ms : 0.0),
        rng_(seed) {}
  const char* name() const override { return "kv"; }
  bool uses_overlap() const override { return true; }

  RouteChoice Choose(const RouteInput& input, std::span<WorkerState* const> candidates,
                     const kv::QueryResult& overlaps) override {
    // One pass over the candidates computes each one's final cost: a matched worker (one
    // holding block 0: usually a few dozen) is found through a direct table id -> match index
    // filled from `overlaps` beforehand (a hash map for ids >= kMaxDenseId). The same pass keeps
    // the running minimum and the candidates tied at it, so temperature 0 writes no per-candidate
    // cost and needs no second pass; the tie-break then draws exactly as "for each candidate in
    // order at the minimum: ++ties, take it with probability 1/ties" would. The arithmetic gives
    // the documented cost's doubles (the same operations in the same order, except kvmesh's load
    // at a power-of-two block size: an exact integer sum, see below): routing_test compares the
    // choice and cost with a straightforward computation on random fleets and results.
    // Candidates are distinct workers (distinct ids); so are matches.
    // With input.routable_only the pass skips unroutable candidates itself (temperature 0; the
    // softmax path filters first), so the router need not build a candidate list per request;
    // it checks only the candidates that reach the running minimum.
    Scratch& s = ThreadScratch();
    const bool keep_costs = temperature_ > 0;  // the softmax needs every cost
    const WorkerRegistry* filter = input.routable_only;
    if (filter != nullptr && keep_costs) {
      candidates = RoutableOnly(input, candidates);
      filter = nullptr;
    }
    if (candidates.empty()) return {};
    const size_t n = candidates.size();
    if (keep_costs) s.costs.resize(n);
    if (s.ties.size() < n) s.ties.resize(n);
    const uint32_t bs = std::max<uint32_t>(input.block_size, 1);
    const double prompt_blocks = static_cast<double>((uint64_t{input.prompt_tokens} + bs - 1) / bs);
    const bool dynamo = cost_ == KvCost::kDynamo;
    const double ow = overlap_weight_;
    // With nothing cached, prefill_blocks = max(0, prompt_blocks - 0) = prompt_blocks.
    const double unmatched_prefill = ow * prompt_blocks;
    // kvmesh's router-side load in blocks: kPrefillInFlightWeight * prefill_tokens / bs +
    // kDecodeBlockWeight * decode_blocks + kQueueBlocksPerRequest * inflight. With bs a power of
    // two every term is a multiple of 1 / den (den = max(2 * bs, 4)), so the load is one integer
    // sum (tokens * den/(2 bs) + decode * den/4 + inflight * den) times 1 / den: one conversion
    // and one multiply per candidate, and exactly the sum of the three terms (below 2^53 / den
    // blocks).
    static_assert(kPrefillInFlightWeight == 0.5 && kDecodeBlockWeight == 0.25 &&
                      kQueueBlocksPerRequest == 1.0,
                  "the integer load sum below assumes these weights");
    const bool bs_pow2 = std::has_single_bit(bs);
    const uint64_t den = std::max<uint64_t>(2 * uint64_t{bs}, 4);
    const uint64_t tok_mul = den / (2 * uint64_t{bs}), dec_mul = den / 4;
    const double inv_den = 1.0 / static_cast<double>(den);
    const double rtt_scale = rtt_blocks_per_ms_;
    double* const costs = s.costs.data();
    uint32_t* const ties = s.ties.data();
    WorkerState* const* const cand = candidates.data();
    // Load counters go to double through int64 (one instruction on x86-64, where uint64 takes a
    // branch and several): the same value below 2^63, which a count never reaches.
    auto count = [](const auto& counter) __attribute__((always_inline)) {
      return static_cast<double>(
          static_cast<int64_t>(counter.load(std::memory_order_relaxed)));
    };
    // dyn: std::bool_constant<dynamo>; pow2: std::bool_constant<bs_pow2> (kvmesh only), so each
    // pass compiles without the branches.
    auto cost_of = [&](auto dyn, auto pow2, const WorkerState& w, double prefill)
                       __attribute__((always_inline)) {
      if constexpr (decltype(dyn)::value) {
        return prefill + count(w.decode_blocks);
      } else {
        double load;
        if constexpr (decltype(pow2)::value) {
          // inflight * den = inflight * 4 * dec_mul, so the last two terms share one multiply
          // (the same sum mod 2^64).
          const uint64_t units =
              w.prefill_tokens.load(std::memory_order_relaxed) * tok_mul +
              (w.decode_blocks.load(std::memory_order_relaxed) +
               uint64_t{w.inflight.load(std::memory_order_relaxed)} * 4) *
                  dec_mul;
          load = static_cast<double>(static_cast<int64_t>(units)) * inv_den;
        } else {
          load = kPrefillInFlightWeight * count(w.prefill_tokens) / bs +
                 kDecodeBlockWeight * count(w.decode_blocks) +
                 kQueueBlocksPerRequest * count(w.inflight);
        }
        return (prefill + load) + rtt_scale * w.rtt_ms;
      }
    };
    auto matched_prefill = [&](const kv::WorkerMatch& m) __attribute__((always_inline)) {
      const double cached = dynamo ? static_cast<double>(m.matched_blocks) : CachedBlocks(&m);
      return ow * std::max(0.0, prompt_blocks - cached);
    };
    const std::vector<kv::WorkerMatch>& matches = overlaps.workers;
    // mpos[id] = 1 + index into matches for the matches' ids below kMaxDenseId, 0 elsewhere
    // (restored to all zeros before returning).
    std::vector<uint32_t>& mpos_vec = s.mpos;
    // The board pass (below) reads mpos for every candidate without a bounds check.
    static_assert(LoadBoard::kCapacity <= kMaxDenseId, "board ids are direct-table ids");
    const bool on_board = input.loads.board != nullptr && input.loads.ids.size() == n &&
                          !keep_costs && (dynamo || bs_pow2) && !input.loads.any_rtt &&
                          std::isfinite(rtt_scale) && input.loads.max_id < LoadBoard::kCapacity;
    if (on_board && mpos_vec.size() <= input.loads.max_id) mpos_vec.resize(input.loads.max_id + 1);
    bool large_ids = false;
    for (size_t k = 0; k < matches.size(); ++k) {
      const kv::WorkerId id = matches[k].worker;
      if (id >= kMaxDenseId) {
        large_ids = true;
        continue;
      }
      if (id >= mpos_vec.size()) {
        mpos_vec.resize(
            std::min<size_t>(std::max<size_t>(size_t{id} + 1, 2 * mpos_vec.size()), kMaxDenseId));
      }
      mpos_vec[id] = static_cast<uint32_t>(k + 1);
    }
    if (large_ids) s.matches.Build(overlaps);
    // prefill_of[k]: the prefill term of a candidate whose match_of() is k (0: unmatched), so
    // the pass picks it with a load, not a branch (matched candidates are scattered at random).
    s.prefill_of.resize(matches.size() + 1);
    double* const prefill_of = s.prefill_of.data();
    prefill_of[0] = unmatched_prefill;
    for (size_t k = 0; k < matches.size(); ++k) prefill_of[k + 1] = matched_prefill(matches[k]);
    const uint32_t* const mpos = mpos_vec.data();
    const size_t mpos_size = mpos_vec.size();
    // 1 + index into matches of candidate id, or 0.
    auto match_of = [&](kv::WorkerId id) __attribute__((always_inline)) -> uint32_t {
      if (id < mpos_size) [[likely]] return mpos[id];
      if (!large_ids || id < kMaxDenseId) return 0;
      return static_cast<uint32_t>(s.matches.Find(id) + 1);  // Find: -1 when absent
    };
    double min_cost = std::numeric_limits<double>::infinity();
    size_t num_ties = 0;
    const uint32_t* tie_at = ties;  // indices of the candidates tied at min_cost, ascending
    // keep: std::bool_constant<keep_costs>; filt: std::bool_constant<filter != nullptr>.
    auto pass = [&](auto dyn, auto pow2, auto keep, auto filt) __attribute__((always_inline)) {
      double min1 = std::numeric_limits<double>::infinity();
      size_t nt = 0;
      for (size_t i = 0; i < n; ++i) {
        const WorkerState& w = *cand[i];
        const double c = cost_of(dyn, pow2, w, prefill_of[match_of(w.id)]);
        if constexpr (decltype(keep)::value) costs[i] = c;
        // Most candidates cost more than the running minimum: one compare rejects them (NaN
        // too: it compares false). With a filter only a candidate that would be kept is checked:
        // an unroutable one never sets the minimum, so the minimum and the ties are those of the
        // routable candidates, and the check costs nothing for the others.
        if (c <= min1) [[unlikely]] {
          if constexpr (decltype(filt)::value) {
            if (!filter->Routable(w)) continue;
          }
          if (c < min1) {
            min1 = c;
            nt = 0;
          }
          ties[nt++] = static_cast<uint32_t>(i);
        }
      }
      min_cost = min1;
      num_ties = nt;
    };
    // The board pass (input.loads, temperature 0, no round-trip term): the same minimum and ties
    // from the registry's LoadBoard. A candidate's load is an integer key there (dynamo: decode
    // blocks; kvmesh: the load sum above, from two cells), and its cost, prefill + key (dynamo)
    // or prefill + key / den (kvmesh), does not decrease with the key. So the unmatched
    // candidates, which share one prefill term, are compared by key alone (an integer compare,
    // no conversion), and the few matched ones (found by id in mpos) get their cost afterwards.
    // The ties are then merged in candidate order, so the draw below is the pointer pass's.
    // Returns false (the pointer pass decides) if a larger key could round to the same cost, or
    // a cost is NaN: the pointer pass's semantics, never met at real loads.
    auto board_pass = [&](auto dyn) __attribute__((always_inline)) -> bool {
      uint64_t* const cells = input.loads.board->cells();  // in a register for the loop
      const kv::WorkerId* const ids = input.loads.ids.data();
      auto get = [cells](kv::WorkerId id, LoadBoard::Field f) __attribute__((always_inline)) {
        return LoadBoard::Get(cells, id, f);
      };
      auto key_of = [&](kv::WorkerId id) __attribute__((always_inline)) {
        if constexpr (decltype(dyn)::value) {
          return static_cast<int64_t>(get(id, LoadBoard::kDecodeBlocks));
        } else {
          return static_cast<int64_t>(get(id, LoadBoard::kPrefillTokens) * tok_mul +
                                      get(id, LoadBoard::kQueueUnits) * dec_mul);
        }
      };
      // cost_of's value: count() and the int64 conversion above; the round-trip term is +0.
      auto cost_at = [&](double prefill, int64_t key) __attribute__((always_inline)) {
        if constexpr (decltype(dyn)::value) {
          return prefill + static_cast<double>(key);
        } else {
          return prefill + static_cast<double>(key) * inv_den;
        }
      };
      s.matched_at.resize(std::max(s.matched_at.size(), matches.size() + 1));
      s.matched_cost.resize(std::max(s.matched_cost.size(), matches.size()));
      uint32_t* const matched_at = s.matched_at.data();
      double* const matched_cost = s.matched_cost.data();
      int64_t key_min = std::numeric_limits<int64_t>::max();
      size_t nu = 0;  // unmatched routable candidates at key_min: ties[0, nu)
      size_t nm = 0;  // matched candidates: matched_at[0, nm), ascending
      bool found = false;
      if (input.loads.consecutive) {
        // Consecutive ids: each field is one array. The smallest unmatched key and the
        // candidates at it come from vector kernels; the routable ones among those are the ties
        // (if none is routable, the general loop below decides). Matched positions come from
        // the matches themselves, ordered through a bitset.
        const kv::WorkerId id0 = ids[0];
        for (size_t i = 0; i < n; ++i) KVMESH_DCHECK(ids[i] == id0 + i && cand[i]->id == ids[i]);
        BoardRun run;
        if constexpr (decltype(dyn)::value) {
          run = {cells + size_t{LoadBoard::kDecodeBlocks} * LoadBoard::kCapacity + id0, nullptr,
                 mpos + id0, n, 0, 0};
        } else {
          run = {cells + size_t{LoadBoard::kPrefillTokens} * LoadBoard::kCapacity + id0,
                 cells + size_t{LoadBoard::kQueueUnits} * LoadBoard::kCapacity + id0, mpos + id0,
                 n, std::countr_zero(tok_mul), std::countr_zero(dec_mul)};
        }
        key_min = g_board_kernel.min_key(run);
        if (key_min != std::numeric_limits<int64_t>::max()) {
          nu = g_board_kernel.keys_at(run, key_min, ties);
          if (filter != nullptr) {
            size_t kept = 0;
            for (size_t j = 0; j < nu; ++j) {
              if (filter->Routable(*cand[ties[j]])) ties[kept++] = ties[j];
            }
            nu = kept;
          }
        }
        if (nu != 0) {
          found = true;
          std::vector<uint64_t>& bits = s.matched_bits;
          bits.assign((n + 63) / 64, 0);
          for (const kv::WorkerMatch& m : matches) {
            const uint64_t at = uint64_t{m.worker} - id0;  // wraps below id0
            if (at < n) bits[at / 64] |= uint64_t{1} << (at % 64);
          }
          for (size_t w = 0; w < bits.size(); ++w) {
            for (uint64_t b = bits[w]; b != 0; b &= b - 1) {
              matched_at[nm++] = static_cast<uint32_t>(w * 64 + std::countr_zero(b));
            }
          }
        } else {
          key_min = std::numeric_limits<int64_t>::max();
        }
      }
      for (size_t i = 0; i < (found ? 0 : n); ++i) {
        const kv::WorkerId id = ids[i];
        KVMESH_DCHECK(id == cand[i]->id && id <= input.loads.max_id);
        // Matched candidates are few and scattered: no branch on them here (a mispredicted one
        // costs more than the rest of a candidate). Each candidate is written to matched_at and
        // counted only when matched; a matched one reaching the compare below is skipped there.
        const uint32_t match = mpos[id];
        matched_at[nm] = static_cast<uint32_t>(i);
        nm += match != 0;
        const int64_t key = key_of(id);
        if (key <= key_min) [[unlikely]] {
          if (match != 0) continue;
          if (filter != nullptr && !filter->Routable(*cand[i])) continue;
          if (key < key_min) {
            key_min = key;
            nu = 0;
          }
          ties[nu++] = static_cast<uint32_t>(i);
        }
      }
      double best = std::numeric_limits<double>::infinity();
      double unmatched_min = best;
      if (nu != 0) {
        unmatched_min = cost_at(unmatched_prefill, key_min);
        if (std::isnan(unmatched_min) || key_min == std::numeric_limits<int64_t>::max() ||
            cost_at(unmatched_prefill, key_min + 1) == unmatched_min) {
          return false;
        }
        best = unmatched_min;
      }
      // The matched candidates' costs; as in the pointer pass, routability is checked only for
      // one that reaches the running minimum (the minimum only falls, so one above it then is
      // above it at the end).
      size_t kept = 0;  // matched_at[0, kept): routable, cost <= best when seen (matched_cost)
      for (size_t j = 0; j < nm; ++j) {
        const uint32_t i = matched_at[j];
        const double c = cost_at(prefill_of[mpos[ids[i]]], key_of(ids[i]));
        if (std::isnan(c)) return false;
        if (c <= best) {
          if (filter != nullptr && !filter->Routable(*cand[i])) continue;
          best = c;
          matched_at[kept] = i;
          matched_cost[kept++] = c;
        }
      }
      s.merged.resize(std::max(s.merged.size(), n));
      uint32_t* const merged = s.merged.data();
      const size_t na = nu != 0 && unmatched_min == best ? nu : 0;
      size_t a = 0, b = 0, t = 0;
      while (true) {
        while (b < kept && matched_cost[b] != best) ++b;
        if (a < na && (b == kept || ties[a] < matched_at[b])) {
          merged[t++] = ties[a++];
        } else if (b < kept) {
          merged[t++] = matched_at[b++];
        } else {
          break;
        }
      }
      min_cost = best;
      num_ties = t;
      tie_at = merged;
      return true;
    };
    using T = std::true_type;
    using F = std::false_type;
    // keep_costs and filter are never both set (the softmax path filtered above).
    auto passes = [&](auto dyn, auto pow2) __attribute__((always_inline)) {
      if (keep_costs) {
        pass(dyn, pow2, T{}, F{});
      } else if (filter != nullptr) {
        pass(dyn, pow2, F{}, T{});
      } else {
        pass(dyn, pow2, F{}, F{});
      }
    };
    if (on_board && (dynamo ? board_pass(T{}) : board_pass(F{}))) {
      // decided on the board
    } else if (dynamo) {
      passes(T{}, F{});
    } else if (bs_pow2) {
      passes(F{}, T{});
    } else {
      passes(F{}, F{});
    }
    // The maximum matters to the softmax only.
    double max_cost = min_cost;
    if (keep_costs) {
      for (size_t i = 0; i < n; ++i) max_cost = std::max(max_cost, costs[i]);
    }

    LocalRng local{rng_.Next()};
    size_t pick = 0;
    double pick_cost = 0;
    if (keep_costs && max_cost > min_cost) {
      pick = SoftmaxPick(s.costs, s.weights, min_cost, max_cost, local);
      pick_cost = costs[pick];
    } else {
      // Argmin; ties (all workers, when the softmax is flat) at random: the k-th tied candidate
      // (in candidate order) replaces the pick with probability 1/k.
      for (size_t t = 0; t < num_ties; ++t) {
        if (local.Below(static_cast<uint32_t>(t + 1)) == 0) pick = tie_at[t];
      }
      if (num_ties != 0) {
        pick_cost = min_cost;
      } else {
        // No cost compared equal to the minimum: NaN costs (candidate 0, the first routable one
        // with a filter) or, with a filter, no routable candidate (n: no pick).
        if (filter != nullptr) {
          while (pick < n && !filter->Routable(*cand[pick])) ++pick;
        }
        if (pick < n) {
          const double prefill = prefill_of[match_of(cand[pick]->id)];
          pick_cost = dynamo    ? cost_of(T{}, F{}, *cand[pick], prefill)
                      : bs_pow2 ? cost_of(F{}, T{}, *cand[pick], prefill)
                                : cost_of(F{}, F{}, *cand[pick], prefill);
        }
      }
    }
    RouteChoice choice;
    if (pick < n) {
      choice.worker = candidates[pick];
      choice.cost = pick_cost;
      if (const uint32_t k = match_of(choice.worker->id); k != 0) {
        choice.overlap_blocks = matches[k - 1].matched_blocks;
        choice.overlap_predicted = matches[k - 1].matched_with_predicted;
      }
    }
    for (const kv::WorkerMatch& m : matches) {
      if (m.worker < kMaxDenseId) mpos_vec[m.worker] = 0;
    }
    return choice;
  }

 private:
  // The costs (docs/routing.md), with prefill_blocks = max(0, prompt_blocks - cached):
  //   dynamo: overlap_weight * prefill_blocks + decode_blocks, cached = confirmed overlap;
  //   kvmesh: (overlap_weight * prefill_blocks + load) + rtt_ms / rtt_block_ms, where
  //           load = kPrefillInFlightWeight * prefill_tokens_in_flight / block_size
  //                  + kDecodeBlockWeight * decode_blocks
  //                  + kQueueBlocksPerRequest * inflight (summed first, in that order), the rtt
  //           term 0 unless a worker has rtt_ms (the global tier), cached = CachedBlocks()
  //           (tier-aware and predicted overlap).
  // kvmesh's cached blocks of a worker: tier-aware and predicted overlap (0 without a match).
  static double CachedBlocks(const kv::WorkerMatch* m) {
    double cached = 0;
    if (m != nullptr) {
      // A block counts at its best tier. The index gives per-tier counts of the leading run,
      // so: G1 blocks first, the rest in G2 as far as G2's count goes, the remainder in G3.
      const uint32_t g1 = std::min(m->matched_tier[0], m->matched_blocks);
      const uint32_t rest = m->matched_blocks - g1;
      const uint32_t g2 = std::min(m->matched_tier[1], rest);
      const uint32_t g3 = rest - g2;
      const uint32_t predicted =
          m->matched_with_predicted > m->matched_blocks
              ? m->matched_with_predicted - m->matched_blocks
              : 0;
      cached = g1 + kG2Value * g2 + kG3Value * g3 + kPredictedValue * predicted;
    }
    return cached;
  }

  // P(i) ~ exp(-((cost_i - min) / (max - min)) / temperature): costs normalized to [0, 1] so the
  // temperature means the same at any fleet size or prompt length (Dynamo's softmax_sample).
  size_t SoftmaxPick(const std::vector<double>& costs, std::vector<double>& weights,
                     double min_cost, double max_cost, LocalRng& local) const {
    const double scale = 1.0 / ((max_cost - min_cost) * temperature_);
    weights.resize(costs.size());
    double total = 0;
    for (size_t i = 0; i < costs.size(); ++i) {
      weights[i] = std::exp(-(costs[i] - min_cost) * scale);  // the minimum weighs 1: no overflow
      total += weights[i];
    }
    double r = local.Unit() * total;
    for (size_t i = 0; i < weights.size(); ++i) {
      r -= weights[i];
      if (r < 0) return i;
    }
    return weights.size() - 1;  // rounding left r >= 0
  }

  // Value of one leading block held in a lower tier (or only predicted) relative to a G1 block
  // (1.0 = free). G2: a host->device copy; G3: a disk read plus the copy; predicted: the router
  // sent a request with these blocks there moments ago (unconfirmed: prefill may still run, fail
  // or be evicted).
  static constexpr double kG2Value = 0.75;
  static constexpr double kG3Value = 0.5;
  static constexpr double kPredictedValue = 0.5;
  // Weight of a block of prefill already sent to the worker and not finished, relative to a
  // block of this request's own prefill: the worker has been computing it since it was sent, and
  // a request arriving at a random moment of a prefill finds on average half of it left.
  static constexpr double kPrefillInFlightWeight = 0.5;
  // Per request in flight, in block units: a scheduling cost and a tie-break toward fewer.
  static constexpr double kQueueBlocksPerRequest = 1.0;
  // Weight of a block held by a request decoding on the worker, relative to a block of prefill
  // still to compute there.
  static constexpr double kDecodeBlockWeight = 0.25;

  const KvCost cost_;
  const double overlap_weight_;
  const double temperature_;
  const double rtt_blocks_per_ms_;  // kvmesh cost: blocks per ms of a worker's rtt_ms
  SharedRng rng_;
};

}  // namespace

namespace detail {
std::string_view BoardKernelName() { return g_board_kernel.name; }

int64_t BoardKernelForTest(uint64_t* a, uint64_t* b, const uint32_t* match, size_t n, int sa,
                           int sb, std::vector<uint32_t>& at) {
  const BoardRun run{a, b, match, n, sa, sb};
  const int64_t key = g_board_kernel.min_key(run);
  at.resize(n);
  at.resize(key == std::numeric_limits<int64_t>::max() ? 0
                                                      : g_board_kernel.keys_at(run, key, at.data()));
  return key;
}

bool SelectBoardKernelForTest(std::string_view name) {
  for (const BoardKernel& k : AvailableBoardKernels()) {
    if (name == k.name) {
      g_board_kernel = k;
      return true;
    }
  }
  return false;
}
}  // namespace detail

StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(const RouterRoutingConfig& config,
                                                             uint64_t seed) {
  std::unique_ptr<RoutingPolicy> policy;
  if (config.mode == "round_robin") {
    policy = std::make_unique<RoundRobinPolicy>();
  } else if (config.mode == "random") {
    policy = std::make_unique<RandomPolicy>(seed);
  } else if (config.mode == "least_loaded") {
    policy = std::make_unique<LeastLoadedPolicy>(seed);
  } else if (config.mode == "kv") {
    KvCost cost;
    if (config.kv_cost == "kvmesh") {
      cost = KvCost::kKvmesh;
    } else if (config.kv_cost == "dynamo") {
      cost = KvCost::kDynamo;
    } else {
      return InvalidArgumentError("routing.kv_cost must be kvmesh or dynamo, got '" +
                                  config.kv_cost + "'");
    }
    if (!(config.overlap_weight >= 0) || !std::isfinite(config.overlap_weight)) {
      return InvalidArgumentError("routing.overlap_weight must be a finite number >= 0, got " +
                                  std::to_string(config.overlap_weight));
    }
    if (!(config.temperature >= 0) || !std::isfinite(config.temperature)) {
      return InvalidArgumentError("routing.temperature must be a finite number >= 0, got " +
                                  std::to_string(config.temperature));
    }
    if (!(config.rtt_block_ms >= 0) || !std::isfinite(config.rtt_block_ms)) {
      return InvalidArgumentError("routing.rtt_block_ms must be a finite number >= 0, got " +
                                  std::to_string(config.rtt_block_ms));
    }
    policy = std::make_unique<KvPolicy>(cost, config.overlap_weight, config.temperature,
                                        config.rtt_block_ms, seed);
  } else {
    return InvalidArgumentError(
        "routing.mode must be kv, round_robin, random or least_loaded, got '" + config.mode + "'");
  }
  return policy;
}

PrefillPlan PlanPrefill(const RouterDisaggregationConfig& config, const RouteInput& input,
                        const RouteChoice& decode, std::span<WorkerState* const> prefill_candidates,
                        const kv::QueryResult& overlaps, RoutingPolicy& policy) {
  PrefillPlan plan;
  const uint64_t cached_tokens = uint64_t{decode.overlap_blocks} * input.block_size;
  plan.uncached_tokens =
      cached_tokens >= input.prompt_tokens
          ? 0
          : input.prompt_tokens - static_cast<uint32_t>(cached_tokens);
  if (config.mode == "off") {
    plan.reason = "disabled";
    return plan;
  }
  const bool always = config.mode == "always";
  if (!always && plan.uncached_tokens < config.min_remote_prefill_tokens) {
    plan.reason = "below_threshold";
    return plan;
  }
  std::vector<WorkerState*>& room = ThreadScratch().prefill_room;
  room.clear();
  bool any = false;
  for (WorkerState* w : prefill_candidates) {
    if (w == decode.worker || !CanPrefillRemote(w->spec.role)) continue;
    any = true;
    if (w->prefills_inflight.load(std::memory_order_relaxed) < config.max_prefill_queue) {
      room.push_back(w);
    }
  }
  if (!any) {
    plan.reason = "no_prefill_worker";
    return plan;
  }
  if (room.empty()) {
    plan.reason = "prefill_queue_full";
    return plan;
  }
  // The prefill worker's own overlap and load decide, with the same policy as decode routing
  // (the prefill candidates are routable already).
  RouteInput prefill_input = input;
  prefill_input.routable_only = nullptr;
  prefill_input.loads = {};  // those of the decode candidates
  const RouteChoice prefill = policy.Choose(prefill_input, room, overlaps);
  plan.remote = true;
  plan.prefill_worker = prefill.worker;
  plan.reason = "remote";
  return plan;
}

}  // namespace kvmesh::router
