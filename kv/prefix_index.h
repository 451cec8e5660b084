// PrefixIndex: the router's global view of which worker holds which KV block, in which tier.
//
// Fed with the KV events of many workers (kv/kv_event.h) and queried with a request's sequence
// hashes (kv/block_hash.h). A sequence hash names a block AND its whole prefix, so the index is a
// flat open-addressing map BlockHash -> holder set; no radix tree is needed. Widely held blocks
// also carry a bitset of their holders (and list first the few holders not in G1 alone), so a
// query walks the request with word operations on candidate bitsets instead of iterating every
// holder of the fleet-wide shared prefix.
//
// Semantics (see docs/prefix-index.md):
//  - A holder is (worker, tier mask G1|G2|G3, predicted bit). BlockStored sets the tier bit,
//    BlockRemoved clears it, AllBlocksCleared drops every block of the worker. Storing a block
//    twice or removing an absent block is a counted no-op, never a count corruption.
//  - Query(hashes) walks the hashes in order and reports, per worker, matched_blocks = the length
//    of the leading run of blocks held (confirmed) in any tier, and matched_tier[t] = how many of
//    those leading blocks are held in tier t. A worker holding block 1 but not block 0 matches 0.
//    matched_with_predicted is the same run where unexpired predicted entries also count.
//    Cost: O(active bitset words + workers that drop out or hold the block outside G1 only) per
//    block walked; the walk prefetches table slots and entries' heap blocks ahead of use.
//    Predicted bits count as live without a lookup while no prediction's TTL has passed (a
//    query that finds one passed purges expired predictions first, under the exclusive lock).
//  - Sequence numbers: the first batch of a worker sets the baseline; any later seq that is not
//    last+1 is reported as a gap. The batch is still applied and the baseline moves to seq; the
//    caller should resync the worker with ReplaceWorker() from an inventory snapshot.
//  - Memory bound: with max_blocks > 0 the index never holds more than max_blocks distinct
//    blocks; a new block beyond that evicts the least recently stored block (all its holders).
//
// Invariants: every worker's totals equal the number of (block, tier) bits it holds; an entry
// exists iff it has at least one holder; a holder exists iff its mask is non-zero; an entry's
// held bitset (if any) has exactly the slots of its holders with a tier bit, and its first
// exceptions() holders are exactly those whose tiers are not G1 alone.
// Thread safety: all methods may be called concurrently. Queries take a shared lock, mutations an
// exclusive one (one std::shared_mutex).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kv/block_hash.h"
#include "kv/kv_event.h"

namespace kvmesh::kv {

// Chosen by the caller (the router maps worker names to ids). Any uint32 value is valid.
using WorkerId = uint32_t;

struct PrefixIndexOptions {
  // Maximum distinct blocks held; 0 = unbounded. Beyond it the least recently stored block is
  // evicted ("pruned") with all its holders.
  size_t max_blocks = 0;
  // Table slots to reserve up front (rounded up to a power of two); 0 = grow on demand.
  size_t initial_capacity = 0;
  // Clock for predicted-entry TTLs; defaults to std::chrono::steady_clock::now.
  std::function<std::chrono::steady_clock::time_point()> clock;
};

struct WorkerMatch {
  WorkerId worker = 0;
  uint32_t matched_blocks = 0;                  // leading blocks held in any tier (confirmed)
  std::array<uint32_t, kNumMedia> matched_tier{};  // of those leading blocks, how many per tier
  uint32_t matched_with_predicted = 0;          // leading run counting predicted entries too
  uint64_t total_blocks = 0;                    // distinct blocks the worker holds, any tier
  std::array<uint64_t, kNumMedia> total_tier{};    // blocks the worker holds per tier
};

struct QueryOptions {
  // false: only workers with matched_with_predicted >= 1; true: every known worker (zeros for
  // the others), so the caller gets every worker's totals for tie-breaks.
  bool all_workers = false;
};

struct QueryResult {
  std::vector<WorkerMatch> workers;  // unordered
};

struct ApplyResult {
  bool gap = false;           // seq was not expected_seq: resync this worker
  uint64_t expected_seq = 0;  // meaningful when gap
  uint64_t got_seq = 0;
};

struct PrefixIndexStats {
  uint64_t blocks = 0;             // distinct blocks indexed
  uint64_t holders = 0;            // (block, worker) pairs
  uint64_t workers = 0;
  uint64_t predicted = 0;          // live predicted (block, worker) entries
  uint64_t batches = 0;
  uint64_t block_ops = 0;          // hashes in applied BlockStored/BlockRemoved events
  uint64_t gaps = 0;
  uint64_t pruned_blocks = 0;      // blocks evicted by the max_blocks bound
  uint64_t stored_duplicate = 0;   // stores of a (block, tier) already held
  uint64_t removed_absent = 0;     // removes of a (block, tier) not held
  uint64_t predicted_expired = 0;
  uint64_t holder_overflow = 0;    // stores refused: block already has 65535 holders
  uint64_t memory_bytes = 0;       // the index's own container accounting (approximate)
};

namespace detail {
// Allocation of >= 4 MiB is 2 MiB-aligned and advised for transparent huge pages (Linux), so
// random lookups into a large table do not also miss the TLB on every probe.
void* AllocateHuge(size_t bytes);
void FreeHuge(void* p, size_t bytes);
// The implementation a query uses to find which of a bitset entry's words change the runs:
// "avx2" or "sse2" on x86-64 (chosen at startup by what the CPU supports), "scalar" elsewhere.
std::string_view QueryKernelName();
// Tests only: switch to `name` ("avx2", "sse2", "scalar"). False (nothing changed) when it is not
// available here. Not safe while queries run.
bool SelectQueryKernelForTest(std::string_view name);

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}  // NOLINT(runtime/explicit)
  T* allocate(size_t n) { return static_cast<T*>(AllocateHuge(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { FreeHuge(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};
}  // namespace detail

class PrefixIndex {
 public:
  explicit PrefixIndex(PrefixIndexOptions options = {});
  ~PrefixIndex();
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  // Applies one batch of `worker`'s events (registering the worker if new). Returns whether
  // `seq` broke the worker's sequence; the events are applied either way.
  ApplyResult ApplyBatch(WorkerId worker, uint64_t seq, const KvEventBatch& batch);

  // Replaces everything known about `worker` with an inventory snapshot (hashes held per tier,
  // indexed by Medium) and sets its sequence baseline to `seq` (next expected: seq + 1).
  void ReplaceWorker(WorkerId worker,
                     const std::array<std::vector<BlockHash>, kNumMedia>& hashes_per_tier,
                     uint64_t seq);

  // Drops every block (and prediction) of `worker`; keeps its sequence baseline. O(table size).
  void ClearWorker(WorkerId worker);
  // ClearWorker and forget the worker entirely (a later batch sets a new baseline).
  void RemoveWorker(WorkerId worker);

  // Router-predicted entries: `worker` is assumed to hold `hashes` until now + ttl (a newer
  // prediction of the same block extends it). Confirmed events do not touch predictions.
  void AddPredicted(WorkerId worker, std::span<const BlockHash> hashes,
                    std::chrono::nanoseconds ttl);
  // Drops predictions whose TTL passed (queries already ignore them; this frees memory).
  void ExpirePredicted();

  QueryResult Query(std::span<const BlockHash> hashes, QueryOptions options = {}) const;
  // Same, reusing `out`'s storage (no allocation once warmed up).
  void QueryInto(std::span<const BlockHash> hashes, QueryOptions options, QueryResult& out) const;

  PrefixIndexStats Stats() const;
  std::vector<WorkerId> Workers() const;

  // Distinct blocks held (confirmed, any tier) by at least one worker, at most `max_blocks` of
  // them (0 = all), in table order: a cluster's prefix summary for a global router
  // (docs/global-routing.md). O(table size) under the shared lock.
  std::vector<BlockHash> HeldBlocks(size_t max_blocks = 0) const;

  // Verifies the invariants above (entries, holders, held bitsets, the exceptions-first order,
  // every worker's totals) by a full scan under the shared lock: "" when they hold, else the
  // first violation found. For tests and debugging; O(table size + holders).
  std::string CheckInvariants() const;

 private:
  // A holder packed in 32 bits: worker slot << 4 | mask (bits 0..2 tiers, bit 3 predicted).
  static constexpr uint32_t kPredictedBit = 8;
  static constexpr uint32_t kTierMask = 7;
  static constexpr uint32_t kMaxHolders = 65535;

  // A heap block (cap > 0) is: a uint64 header (W | E << 32), then W words of the "held" bitset
  // (bit s = the holder with slot s holds the block in some tier), then the holder array.
  // W = 0 (no bitset) unless the entry has cap >= kMinBitsetCap and W <= cap / 4. With a bitset,
  // the holder array is partitioned: its first E holders are the exceptions, those whose tiers
  // are not exactly G1 (a lower tier, or only predicted); the others hold the block in G1 alone
  // (with or without a prediction). A query then processes a block held by many workers with the
  // bitset's W words and the few exceptions, instead of O(holders), and reads a few cache lines.
  static constexpr uint32_t kMinBitsetCap = 8;
  struct Entry {
    BlockHash key;
    uint32_t stamp;  // store clock at the last store (prune order)
    uint16_t size;   // holders; 0 = empty slot
    uint16_t cap;    // 0 = holders inline, else heap capacity
    union {
      uint32_t inline_holders[2];
      uint64_t* heap;
    };
    uint32_t words() const { return cap ? static_cast<uint32_t>(heap[0]) : 0; }
    uint32_t exceptions() const { return cap ? static_cast<uint32_t>(heap[0] >> 32) : 0; }
    void set_exceptions(uint32_t n) { heap[0] = (heap[0] & 0xffffffffu) | (uint64_t{n} << 32); }
    uint64_t* held() { return heap + 1; }
    const uint64_t* held() const { return heap + 1; }
    uint32_t* holders() {
      return cap ? reinterpret_cast<uint32_t*>(heap + 1 + static_cast<uint32_t>(heap[0]))
                 : inline_holders;
    }
    const uint32_t* holders() const {
      return cap ? reinterpret_cast<const uint32_t*>(heap + 1 + static_cast<uint32_t>(heap[0]))
                 : inline_holders;
    }
  };

  struct WorkerState {
    WorkerId id = 0;
    bool live = false;
    bool has_seq = false;
    uint64_t last_seq = 0;
    uint64_t total_blocks = 0;
    std::array<uint64_t, kNumMedia> total_tier{};
  };

  struct PredKey {
    BlockHash hash;
    uint32_t slot;
    bool operator==(const PredKey&) const = default;
  };
  struct PredKeyHash {
    size_t operator()(const PredKey& k) const {
      return static_cast<size_t>((k.hash ^ (uint64_t{k.slot} * 0x9E3779B97F4A7C15ULL)) *
                                 0xBF58476D1CE4E5B9ULL);
    }
  };
  struct PredExpiry {
    int64_t expiry_ns;
    BlockHash hash;
    uint32_t slot;
    bool operator>(const PredExpiry& o) const { return expiry_ns > o.expiry_ns; }
  };

  // All below: caller holds mu_ (exclusive for mutators).
  int64_t NowNs() const;
  uint32_t SlotFor(WorkerId worker);  // registers
  const Entry* Find(BlockHash key) const;
  // Find's body, inlined where a query looks blocks up.
  [[gnu::always_inline]] const Entry* FindInQuery(BlockHash key) const {
    size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
    while (true) {
      const Entry& e = table_[i];
      if (e.size == 0) return nullptr;
      if (e.key == key) return &e;
      i = (i + 1) & mask_;
    }
  }
  // Starts loading key's home slot into cache (lookups are DRAM-bound on a large table).
  void Prefetch(BlockHash key) const {
    // An entry (24 bytes) straddles two cache lines in 2 of 8 slot positions, and a lookup that
    // does not hit its home slot reads the next one: prefetch both lines the home and next slot
    // can touch (the same line twice in most positions, which costs nothing).
    // (Integer arithmetic: for the last slot the second address lies past the table, which a
    // prefetch may name but a pointer may not.)
    const uintptr_t p = reinterpret_cast<uintptr_t>(
        &table_[static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_)]);
    __builtin_prefetch(reinterpret_cast<const void*>(p));
    __builtin_prefetch(reinterpret_cast<const void*>(p + 2 * sizeof(Entry) - 1));
  }
  Entry* FindOrInsert(BlockHash key, uint32_t slot);  // nullptr if refused
  void EraseAt(size_t i);
  // Moves e's holders into a new heap block of `new_cap` holders whose bitset (if any) covers
  // the holders' slots and `extra_slot`; frees the old block.
  void Reshape(Entry& e, uint32_t new_cap, uint32_t extra_slot);
  // Whether a holder of a block with a bitset is an exception (its tiers are not exactly G1).
  static bool IsException(uint32_t mask) { return (mask & kTierMask) != 1; }
  // Sets holder k of e to (slot, mask), mask != 0: keeps the exceptions first and the bitset.
  static void SetHolder(Entry& e, uint32_t k, uint32_t slot, uint32_t mask);
  // Removes holder k of e (its bit in the bitset too), keeping the exceptions first.
  static void RemoveHolder(Entry& e, uint32_t k);
  static size_t HeapBytes(uint32_t cap, uint32_t words) {
    return 8 + 8 * size_t{words} + 4 * size_t{cap};
  }
  void Grow();
  void Store(uint32_t slot, BlockHash key, uint32_t bits);
  void Remove(uint32_t slot, BlockHash key, uint32_t bits);
  // Clears `bits` of the holder at position h of entry i, updating totals; erases if empty.
  // Returns true when the entry was erased.
  bool ClearBits(size_t i, uint32_t h, uint32_t bits);
  void ClearSlot(uint32_t slot);
  void PruneForInsert();
  void CompactPruneRing();
  void ExpireLocked(int64_t now_ns);
  bool PredictionLive(BlockHash key, uint32_t slot, int64_t now_ns) const;
  void AccountMask(uint32_t slot, uint32_t old_mask, uint32_t new_mask);
  // preds_all_live: every predicted bit in the table is live at `now` (no lookups needed).
  void QueryLocked(std::span<const BlockHash> hashes, QueryOptions options, bool preds_all_live,
                   int64_t now, QueryResult& out) const;

  PrefixIndexOptions options_;
  mutable std::shared_mutex mu_;

  std::vector<Entry, detail::HugePageAllocator<Entry>> table_;  // size: a power of two
  size_t mask_ = 0;
  int shift_ = 64;
  size_t num_entries_ = 0;
  size_t num_holders_ = 0;
  size_t heap_bytes_ = 0;  // sum of heap block sizes, for memory accounting

  std::vector<WorkerState> workers_;  // by slot
  std::vector<uint32_t> free_slots_;
  std::unordered_map<WorkerId, uint32_t> slot_of_;

  uint32_t store_clock_ = 0;
  std::deque<std::pair<BlockHash, uint32_t>> prune_ring_;  // (hash, stamp), max_blocks > 0 only

  std::unordered_map<PredKey, int64_t, PredKeyHash> predictions_;
  std::priority_queue<PredExpiry, std::vector<PredExpiry>, std::greater<>> pred_heap_;

  PrefixIndexStats counters_;  // the event counters; gauges are filled by Stats()
};

}  // namespace kvmesh::kv
