#include "kv/prefix_index.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/check.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kvmesh::kv {

namespace detail {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeMin = size_t{4} << 20;
}  // namespace

void* AllocateHuge(size_t bytes) {
  if (bytes < kHugeMin) return ::operator new(bytes);
  size_t rounded = (bytes + kHugePage - 1) & ~(kHugePage - 1);
  void* p = std::aligned_alloc(kHugePage, rounded);
  KVMESH_CHECK(p != nullptr, "out of memory");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  ::madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure just means small pages
#endif
  return p;
}

void FreeHuge(void* p, size_t bytes) {
  if (bytes < kHugeMin) {
    ::operator delete(p);
  } else {
    std::free(p);
  }
}
}  // namespace detail

namespace {

constexpr size_t kMinCapacity = 64;
constexpr size_t kPrefetchAhead = 8;
// Queries do little work per block, so they keep more lookups in flight.
constexpr size_t kQueryPrefetchAhead = 16;
// ... and look entries up (prefetching their heap blocks) this many blocks ahead of their use.
constexpr size_t kQueryFindAhead = 8;
constexpr size_t kQueryFindRing = 16;  // > kQueryFindAhead, a power of two

inline uint32_t HolderSlot(uint32_t h) { return h >> 4; }
inline uint32_t HolderMask(uint32_t h) { return h & 15; }
inline uint32_t MakeHolder(uint32_t slot, uint32_t mask) { return (slot << 4) | mask; }

}  // namespace

PrefixIndex::PrefixIndex(PrefixIndexOptions options) : options_(std::move(options)) {
  static_assert(sizeof(Entry) == 24);
  static_assert(std::is_trivially_copyable_v<Entry>);
  if (!options_.clock) options_.clock = [] { return std::chrono::steady_clock::now(); };
  size_t cap = kMinCapacity;
  while (cap < options_.initial_capacity) cap <<= 1;
  table_.assign(cap, Entry{});
  mask_ = cap - 1;
  shift_ = 64 - std::countr_zero(cap);
}

PrefixIndex::~PrefixIndex() {
  for (Entry& e : table_) {
    if (e.size && e.cap) std::free(e.heap);
  }
}

int64_t PrefixIndex::NowNs() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             options_.clock().time_since_epoch())
      .count();
}

// ---- open-addressing table (linear probing, backward-shift deletion) ------------------------

const PrefixIndex::Entry* PrefixIndex::Find(BlockHash key) const { return FindInQuery(key); }

void PrefixIndex::Grow() {
  decltype(table_) old;
  old.swap(table_);
  size_t cap = old.size() * 2;
  table_.assign(cap, Entry{});
  mask_ = cap - 1;
  shift_ = 64 - std::countr_zero(cap);
  for (const Entry& e : old) {
    if (e.size == 0) continue;
    size_t i = static_cast<size_t>((e.key * 0x9E3779B97F4A7C15ULL) >> shift_);
    while (table_[i].size != 0) i = (i + 1) & mask_;
    table_[i] = e;  // bitwise move; `old` is discarded without freeing heaps
  }
}

PrefixIndex::Entry* PrefixIndex::FindOrInsert(BlockHash key, uint32_t slot) {
  (void)slot;
  size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  while (true) {
    Entry& e = table_[i];
    if (e.size == 0) break;
    if (e.key == key) return &e;
    i = (i + 1) & mask_;
  }
  // New block.
  if (options_.max_blocks > 0 && num_entries_ >= options_.max_blocks) {
    PruneForInsert();
  }
  if ((num_entries_ + 1) * 10 > table_.size() * 7) Grow();
  i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  while (table_[i].size != 0) i = (i + 1) & mask_;
  Entry& e = table_[i];
  e = Entry{};
  e.key = key;
  // size stays 0 until the caller adds the first holder; callers always do.
  return &e;
}

void PrefixIndex::EraseAt(size_t i) {
  Entry& gone = table_[i];
  if (gone.cap) {
    heap_bytes_ -= HeapBytes(gone.cap, gone.words());
    std::free(gone.heap);
  }
  gone = Entry{};
  --num_entries_;
  size_t j = i;
  while (true) {
    j = (j + 1) & mask_;
    if (table_[j].size == 0) break;
    size_t home = static_cast<size_t>((table_[j].key * 0x9E3779B97F4A7C15ULL) >> shift_);
    // Move j back to i unless its home lies cyclically in (i, j].
    bool in_range = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!in_range) {
      table_[i] = table_[j];
      table_[j] = Entry{};
      i = j;
    }
  }
}

// ---- holder bookkeeping ---------------------------------------------------------------------

void PrefixIndex::Reshape(Entry& e, uint32_t new_cap, uint32_t extra_slot) {
  const uint32_t* old_hs = e.holders();
  uint32_t max_slot = extra_slot;
  for (uint32_t k = 0; k < e.size; ++k) max_slot = std::max(max_slot, HolderSlot(old_hs[k]));
  uint32_t words = max_slot / 64 + 1;
  if (new_cap < kMinBitsetCap || words > new_cap / 4) words = 0;
  size_t bytes = HeapBytes(new_cap, words);
  auto* heap = static_cast<uint64_t*>(std::malloc(bytes));
  KVMESH_CHECK(heap != nullptr, "out of memory");
  std::memset(heap, 0, 8 + 8 * size_t{words});
  heap[0] = words;
  auto* hs = reinterpret_cast<uint32_t*>(heap + 1 + size_t{words});
  uint32_t num_exceptions = 0;
  if (words == 0) {
    std::memcpy(hs, old_hs, e.size * sizeof(uint32_t));
  } else {
    // Exceptions first, then the G1-only holders; the bitset gets every holder's slot.
    for (uint32_t k = 0; k < e.size; ++k) {
      if (IsException(HolderMask(old_hs[k]))) hs[num_exceptions++] = old_hs[k];
    }
    uint32_t n = num_exceptions;
    for (uint32_t k = 0; k < e.size; ++k) {
      const uint32_t h = old_hs[k];
      if (!IsException(HolderMask(h))) hs[n++] = h;
      if (HolderMask(h) & kTierMask) {
        heap[1 + HolderSlot(h) / 64] |= uint64_t{1} << (HolderSlot(h) & 63);
      }
    }
    heap[0] |= uint64_t{num_exceptions} << 32;
  }
  if (e.cap) {
    heap_bytes_ -= HeapBytes(e.cap, e.words());
    std::free(e.heap);
  }
  heap_bytes_ += bytes;
  e.heap = heap;
  e.cap = static_cast<uint16_t>(new_cap);
}

void PrefixIndex::SetHolder(Entry& e, uint32_t k, uint32_t slot, uint32_t mask) {
  KVMESH_DCHECK(mask != 0 && k < e.size);
  uint32_t* hs = e.holders();
  const uint32_t words = e.words();
  if (words != 0) {
    KVMESH_DCHECK(slot / 64 < words);
    uint32_t num_exceptions = e.exceptions();
    const bool was = k < num_exceptions;
    const bool is = IsException(mask);
    if (was && !is) {
      // The last exception takes position k; the holder becomes the first G1-only one.
      --num_exceptions;
      hs[k] = hs[num_exceptions];
      k = num_exceptions;
    } else if (!was && is) {
      // The first G1-only holder moves to k; the holder becomes the last exception.
      hs[k] = hs[num_exceptions];
      k = num_exceptions++;
    }
    e.set_exceptions(num_exceptions);
    uint64_t& w = e.held()[slot / 64];
    const uint64_t bit = uint64_t{1} << (slot & 63);
    w = (mask & kTierMask) ? (w | bit) : (w & ~bit);
  }
  hs[k] = MakeHolder(slot, mask);
}

void PrefixIndex::RemoveHolder(Entry& e, uint32_t k) {
  KVMESH_DCHECK(k < e.size);
  uint32_t* hs = e.holders();
  if (e.words() != 0) {
    const uint32_t slot = HolderSlot(hs[k]);
    e.held()[slot / 64] &= ~(uint64_t{1} << (slot & 63));
    if (k < e.exceptions()) {
      // The last exception fills the hole, leaving one at the start of the G1-only holders.
      const uint32_t last = e.exceptions() - 1;
      hs[k] = hs[last];
      k = last;
      e.set_exceptions(last);
    }
  }
  hs[k] = hs[e.size - 1];
  --e.size;
}

void PrefixIndex::AccountMask(uint32_t slot, uint32_t old_mask, uint32_t new_mask) {
  WorkerState& w = workers_[slot];
  uint32_t old_t = old_mask & kTierMask;
  uint32_t new_t = new_mask & kTierMask;
  if (old_t == new_t) return;
  if (old_t == 0) ++w.total_blocks;
  if (new_t == 0) --w.total_blocks;
  for (int t = 0; t < kNumMedia; ++t) {
    uint32_t b = 1u << t;
    if ((old_t & b) && !(new_t & b)) --w.total_tier[t];
    if (!(old_t & b) && (new_t & b)) ++w.total_tier[t];
  }
}

uint32_t PrefixIndex::SlotFor(WorkerId worker) {
  auto it = slot_of_.find(worker);
  if (it != slot_of_.end()) return it->second;
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(workers_.size());
    KVMESH_CHECK(slot < (1u << 28), "PrefixIndex supports at most 2^28 workers");
    workers_.emplace_back();
  }
  workers_[slot] = WorkerState{};
  workers_[slot].id = worker;
  workers_[slot].live = true;
  slot_of_.emplace(worker, slot);
  return slot;
}

void PrefixIndex::Store(uint32_t slot, BlockHash key, uint32_t bits) {
  Entry* e = FindOrInsert(key, slot);
  if (options_.max_blocks > 0) {
    e->stamp = ++store_clock_;
    prune_ring_.emplace_back(key, e->stamp);
  }
  uint32_t* hs = e->holders();
  for (uint32_t k = 0; k < e->size; ++k) {
    if (HolderSlot(hs[k]) == slot) {
      uint32_t old_mask = HolderMask(hs[k]);
      uint32_t new_mask = old_mask | bits;
      if (new_mask == old_mask) {
        ++counters_.stored_duplicate;
        return;
      }
      SetHolder(*e, k, slot, new_mask);
      AccountMask(slot, old_mask, new_mask);
      return;
    }
  }
  // New holder.
  if (e->size >= kMaxHolders) {
    ++counters_.holder_overflow;
    return;
  }
  if (e->size == 0) ++num_entries_;
  if (e->cap == 0 && e->size == 2) {
    Reshape(*e, 4, slot);
  } else if (e->cap != 0 && e->size == e->cap) {
    Reshape(*e, std::min<uint32_t>(uint32_t{e->cap} * 2, kMaxHolders), slot);
  } else if (e->words() != 0 && slot / 64 >= e->words()) {
    Reshape(*e, e->cap, slot);  // widen the bitset (or drop it if too sparse)
  }
  const uint32_t k = e->size++;
  e->holders()[k] = MakeHolder(slot, bits);  // SetHolder may read position k before writing it
  SetHolder(*e, k, slot, bits);
  ++num_holders_;
  AccountMask(slot, 0, bits);
}

bool PrefixIndex::ClearBits(size_t i, uint32_t h, uint32_t bits) {
  Entry& e = table_[i];
  uint32_t* hs = e.holders();
  uint32_t slot = HolderSlot(hs[h]);
  uint32_t old_mask = HolderMask(hs[h]);
  uint32_t new_mask = old_mask & ~bits;
  AccountMask(slot, old_mask, new_mask);
  if ((old_mask & kPredictedBit) && !(new_mask & kPredictedBit)) {
    predictions_.erase(PredKey{e.key, slot});
  }
  if (new_mask != 0) {
    SetHolder(e, h, slot, new_mask);
    return false;
  }
  RemoveHolder(e, h);
  --num_holders_;
  if (e.size == 0) {
    EraseAt(i);
    return true;
  }
  if (e.cap != 0 && e.size <= 2) {
    uint64_t* heap = e.heap;
    heap_bytes_ -= HeapBytes(e.cap, e.words());
    uint32_t kept[2];
    std::memcpy(kept, e.holders(), e.size * sizeof(uint32_t));
    e.cap = 0;
    std::memcpy(e.inline_holders, kept, e.size * sizeof(uint32_t));
    std::free(heap);
  }
  return false;
}

void PrefixIndex::Remove(uint32_t slot, BlockHash key, uint32_t bits) {
  const Entry* found = Find(key);
  if (found == nullptr) {
    ++counters_.removed_absent;
    return;
  }
  size_t i = static_cast<size_t>(found - table_.data());
  const uint32_t* hs = found->holders();
  for (uint32_t k = 0; k < found->size; ++k) {
    if (HolderSlot(hs[k]) != slot) continue;
    if ((HolderMask(hs[k]) & bits) == 0) break;
    ClearBits(i, k, bits);
    return;
  }
  ++counters_.removed_absent;
}

void PrefixIndex::ClearSlot(uint32_t slot) {
  // Scan the whole table; an erase shifts later entries back into i, so revisit i then.
  for (size_t i = 0; i < table_.size();) {
    Entry& e = table_[i];
    bool erased = false;
    if (e.size != 0) {
      const uint32_t* hs = e.holders();
      for (uint32_t k = 0; k < e.size; ++k) {
        if (HolderSlot(hs[k]) == slot) {
          erased = ClearBits(i, k, 15);
          break;
        }
      }
    }
    if (!erased) ++i;
  }
  // Backward shift only moves entries to the erased position or to later holes of the same
  // cluster, i.e. to positions >= i or (for a cluster wrapping around) to the table's start,
  // which holds entries already visited. So every entry is visited at least once.
}

// ---- memory bound ---------------------------------------------------------------------------

void PrefixIndex::PruneForInsert() {
  while (num_entries_ >= options_.max_blocks && !prune_ring_.empty()) {
    auto [key, stamp] = prune_ring_.front();
    prune_ring_.pop_front();
    const Entry* e = Find(key);
    if (e == nullptr || e->stamp != stamp) continue;  // stale record
    size_t i = static_cast<size_t>(e - table_.data());
    ++counters_.pruned_blocks;
    while (!ClearBits(i, 0, 15)) {
    }
  }
  CompactPruneRing();
}

void PrefixIndex::CompactPruneRing() {
  if (prune_ring_.size() <= 2 * num_entries_ + 1024) return;
  std::deque<std::pair<BlockHash, uint32_t>> kept;
  for (const auto& [key, stamp] : prune_ring_) {
    const Entry* e = Find(key);
    if (e != nullptr && e->stamp == stamp) kept.emplace_back(key, stamp);
  }
  prune_ring_.swap(kept);
}

// ---- predictions ----------------------------------------------------------------------------

bool PrefixIndex::PredictionLive(BlockHash key, uint32_t slot, int64_t now_ns) const {
  auto it = predictions_.find(PredKey{key, slot});
  return it != predictions_.end() && it->second > now_ns;
}

void PrefixIndex::ExpireLocked(int64_t now_ns) {
  while (!pred_heap_.empty() && pred_heap_.top().expiry_ns <= now_ns) {
    PredExpiry top = pred_heap_.top();
    pred_heap_.pop();
    auto it = predictions_.find(PredKey{top.hash, top.slot});
    if (it == predictions_.end() || it->second != top.expiry_ns) continue;  // stale
    ++counters_.predicted_expired;
    bool cleared = false;
    if (const Entry* e = Find(top.hash)) {
      size_t i = static_cast<size_t>(e - table_.data());
      const uint32_t* hs = e->holders();
      for (uint32_t k = 0; k < e->size; ++k) {
        if (HolderSlot(hs[k]) == top.slot && (HolderMask(hs[k]) & kPredictedBit)) {
          ClearBits(i, k, kPredictedBit);  // also erases the predictions_ record
          cleared = true;
          break;
        }
      }
    }
    if (!cleared) predictions_.erase(it);  // store was refused (holder overflow)
  }
  // Records of predictions dropped by ClearWorker/prune stay in the heap until their expiry.
  if (pred_heap_.size() > 2 * predictions_.size() + 1024) {
    std::vector<PredExpiry> live;
    while (!pred_heap_.empty()) {
      PredExpiry r = pred_heap_.top();
      pred_heap_.pop();
      auto it = predictions_.find(PredKey{r.hash, r.slot});
      if (it != predictions_.end() && it->second == r.expiry_ns) live.push_back(r);
    }
    for (const PredExpiry& r : live) pred_heap_.push(r);
  }
}

void PrefixIndex::AddPredicted(WorkerId worker, std::span<const BlockHash> hashes,
                               std::chrono::nanoseconds ttl) {
  std::unique_lock lock(mu_);
  int64_t now = NowNs();
  ExpireLocked(now);
  uint32_t slot = SlotFor(worker);
  int64_t expiry = now + ttl.count();
  if (ttl.count() <= 0) return;
  for (BlockHash h : hashes) {
    auto [it, inserted] = predictions_.try_emplace(PredKey{h, slot}, expiry);
    if (!inserted) {
      it->second = std::max(it->second, expiry);
    } else {
      Store(slot, h, kPredictedBit);
    }
    pred_heap_.push(PredExpiry{it->second, h, slot});
  }
}

void PrefixIndex::ExpirePredicted() {
  std::unique_lock lock(mu_);
  ExpireLocked(NowNs());
}

// ---- public mutators ------------------------------------------------------------------------

ApplyResult PrefixIndex::ApplyBatch(WorkerId worker, uint64_t seq, const KvEventBatch& batch) {
  std::unique_lock lock(mu_);
  if (!pred_heap_.empty()) ExpireLocked(NowNs());
  uint32_t slot = SlotFor(worker);
  WorkerState& w = workers_[slot];
  ApplyResult result;
  result.got_seq = seq;
  if (w.has_seq && seq != w.last_seq + 1) {
    result.gap = true;
    result.expected_seq = w.last_seq + 1;
    ++counters_.gaps;
  }
  w.has_seq = true;
  w.last_seq = seq;
  ++counters_.batches;
  for (const KvEvent& ev : batch.events) {
    if (const auto* s = std::get_if<BlockStored>(&ev)) {
      uint32_t bit = 1u << static_cast<uint32_t>(s->medium);
      const auto& hs = s->hashes;
      for (size_t i = 0; i < std::min(hs.size(), kPrefetchAhead); ++i) Prefetch(hs[i]);
      for (size_t i = 0; i < hs.size(); ++i) {
        if (i + kPrefetchAhead < hs.size()) Prefetch(hs[i + kPrefetchAhead]);
        Store(slot, hs[i], bit);
      }
      counters_.block_ops += s->hashes.size();
    } else if (const auto* r = std::get_if<BlockRemoved>(&ev)) {
      uint32_t bit = 1u << static_cast<uint32_t>(r->medium);
      const auto& hs = r->hashes;
      for (size_t i = 0; i < std::min(hs.size(), kPrefetchAhead); ++i) Prefetch(hs[i]);
      for (size_t i = 0; i < hs.size(); ++i) {
        if (i + kPrefetchAhead < hs.size()) Prefetch(hs[i + kPrefetchAhead]);
        Remove(slot, hs[i], bit);
      }
      counters_.block_ops += r->hashes.size();
    } else {
      ClearSlot(slot);
    }
  }
  return result;
}

void PrefixIndex::ReplaceWorker(WorkerId worker,
                                const std::array<std::vector<BlockHash>, kNumMedia>& hashes_per_tier,
                                uint64_t seq) {
  std::unique_lock lock(mu_);
  uint32_t slot = SlotFor(worker);
  ClearSlot(slot);
  for (int t = 0; t < kNumMedia; ++t) {
    for (BlockHash h : hashes_per_tier[t]) Store(slot, h, 1u << t);
  }
  workers_[slot].has_seq = true;
  workers_[slot].last_seq = seq;
}

void PrefixIndex::ClearWorker(WorkerId worker) {
  std::unique_lock lock(mu_);
  auto it = slot_of_.find(worker);
  if (it == slot_of_.end()) return;
  ClearSlot(it->second);
}

void PrefixIndex::RemoveWorker(WorkerId worker) {
  std::unique_lock lock(mu_);
  auto it = slot_of_.find(worker);
  if (it == slot_of_.end()) return;
  uint32_t slot = it->second;
  ClearSlot(slot);
  workers_[slot] = WorkerState{};
  free_slots_.push_back(slot);
  slot_of_.erase(it);
}

// ---- queries --------------------------------------------------------------------------------

QueryResult PrefixIndex::Query(std::span<const BlockHash> hashes, QueryOptions options) const {
  QueryResult out;
  QueryInto(hashes, options, out);
  return out;
}

void PrefixIndex::QueryInto(std::span<const BlockHash> hashes, QueryOptions options,
                            QueryResult& out) const {
  // A predicted bit must count only while its TTL runs. Every live prediction has a record with
  // its exact expiry in pred_heap_, so while the heap's earliest record lies in the future every
  // predicted bit in the table is live and the walk needs no per-holder liveness lookup. When a
  // record's time has passed, purge first (exclusive lock; at most once per expiry crossed, the
  // same work the next mutation would do), then query. After two purges that raced with the
  // clock, fall back to checking each predicted-only holder against predictions_.
  for (int attempt = 0;; ++attempt) {
    {
      std::shared_lock lock(mu_);
      int64_t now = 0;
      bool all_live = true;
      if (!pred_heap_.empty()) {
        now = NowNs();
        all_live = pred_heap_.top().expiry_ns > now;
      }
      if (all_live || attempt == 2) {
        QueryLocked(hashes, options, all_live, now, out);
        return;
      }
    }
    std::unique_lock lock(mu_);
    // Logically const: dropping expired predictions changes no query's answer.
    const_cast<PrefixIndex*>(this)->ExpireLocked(NowNs());
  }
}

namespace {

// Fold state of 64 worker slots (one word of the slot bitsets) for block 0 and blocks without a
// bitset: the runs A_c, A_p (QueryScratch::conf, pred) after folding the current block.
struct QueryWord {
  uint64_t next_conf;
  uint64_t next_pred;
  uint64_t next_tier[3];  // of next_conf: hold the current block in tier t
};

// Query state of one worker slot. Tier counts are kept by exception, since most run blocks
// are in G1: g1_missing counts run blocks not held in G1, g2/g3 the run blocks held in G2/G3;
// then matched_tier = {matched - g1_missing, g2, g3}.
struct QuerySlot {
  uint32_t matched;    // matched_blocks, set when the slot leaves A_c
  uint32_t with_pred;  // matched_with_predicted, set when it leaves A_p
  uint32_t g1_missing;
  uint32_t g2;
  uint32_t g3;
};

// Per-thread query scratch. Between queries every element is zero and the lists are empty.
struct QueryScratch {
  // By word of the slot bitsets: A_c, the confirmed run still going at the current block, and
  // A_p, the run counting live predictions (A_c is a subset). Arrays, so a bitset entry's words
  // are compared with vector operations.
  std::vector<uint64_t> conf;
  std::vector<uint64_t> pred;
  // Of the current bitset block: predicted-only holders of A_p that stay (live), by word, and
  // the words with such bits (cleared after the block).
  std::vector<uint64_t> keep;
  std::vector<uint32_t> keep_words;
  std::vector<QueryWord> words;
  std::vector<QuerySlot> slots;
  std::vector<uint32_t> active;   // word indices with pred != 0
  std::vector<uint32_t> touched;  // slots matching block 0 (the only ones that can match)

  void Fit(size_t num_slots) {
    size_t w = (num_slots + 63) / 64;
    if (words.size() < w) {
      words.resize(w, QueryWord{});
      conf.resize(w, 0);
      pred.resize(w, 0);
      keep.resize(w, 0);
    }
    if (slots.size() < num_slots) slots.resize(num_slots, QuerySlot{});
  }
};

template <typename F>
[[gnu::always_inline]] inline void ForEachBit(uint64_t word, uint32_t base, F&& f) {
  while (word) {
    f(base + static_cast<uint32_t>(std::countr_zero(word)));
    word &= word - 1;
  }
}

// Which of the n <= 64 words [0, n) of a bitset entry lose a slot of A_p (pred) not in the
// entry's held bitset (pred and held offset to the same first word): bit j set = word j needs
// the fold (a slot leaves a run, or holds the block only predicted). A_c is a subset of A_p, so
// A_p alone decides. Along a shared prefix that is few words; they are found without a branch
// per word. Inactive words (A_p = 0) never change. On x86-64 the words are compared 4 (AVX2) or
// 2 (SSE2) at a time, chosen once at startup.
using ChangedWordsFn = uint64_t (*)(const uint64_t* pred, const uint64_t* held, uint32_t n);

// Words [j, n) one at a time.
inline uint64_t ChangedWordsTail(const uint64_t* pred, const uint64_t* held, uint32_t j,
                                 uint32_t n) {
  uint64_t changed = 0;
  for (; j < n; ++j) changed |= static_cast<uint64_t>((pred[j] & ~held[j]) != 0) << j;
  return changed;
}

#if defined(__x86_64__)
[[gnu::noinline]] uint64_t ChangedWordsSse2(const uint64_t* pred, const uint64_t* held,
                                            uint32_t n) {
  const __m128i zero = _mm_setzero_si128();
  uint64_t changed = 0;
  uint32_t j = 0;
  for (; j + 2 <= n; j += 2) {
    const __m128i x =
        _mm_andnot_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(held + j)),
                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(pred + j)));
    // A 64-bit lane is zero when both of its 32-bit halves are.
    __m128i z = _mm_cmpeq_epi32(x, zero);
    z = _mm_and_si128(z, _mm_shuffle_epi32(z, _MM_SHUFFLE(2, 3, 0, 1)));
    const uint64_t zero_lanes = static_cast<uint64_t>(_mm_movemask_pd(_mm_castsi128_pd(z)));
    changed |= (zero_lanes ^ 3) << j;
  }
  return changed | ChangedWordsTail(pred, held, j, n);
}

[[gnu::noinline, gnu::target("avx2")]] uint64_t ChangedWordsAvx2(const uint64_t* pred,
                                                                const uint64_t* held,
                                                                uint32_t n) {
  const __m256i zero = _mm256_setzero_si256();
  uint64_t changed = 0;
  uint32_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256i x =
        _mm256_andnot_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(held + j)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pred + j)));
    const __m256i z = _mm256_cmpeq_epi64(x, zero);
    const uint64_t zero_lanes =
        static_cast<uint64_t>(_mm256_movemask_pd(_mm256_castsi256_pd(z)));
    changed |= (zero_lanes ^ 15) << j;
  }
  return changed | ChangedWordsTail(pred, held, j, n);
}
#endif

[[gnu::noinline]] uint64_t ChangedWordsScalar(const uint64_t* pred, const uint64_t* held,
                                              uint32_t n) {
  return ChangedWordsTail(pred, held, 0, n);
}

struct QueryKernel {
  const char* name;
  ChangedWordsFn fn;
};

// The kernels this CPU can run, fastest first.
std::vector<QueryKernel> AvailableKernels() {
  std::vector<QueryKernel> kernels;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) kernels.push_back({"avx2", ChangedWordsAvx2});
  kernels.push_back({"sse2", ChangedWordsSse2});
#endif
  kernels.push_back({"scalar", ChangedWordsScalar});
  return kernels;
}

QueryKernel PickChangedWords() { return AvailableKernels().front(); }

// Set once at startup (tests may switch it: detail::SelectQueryKernelForTest).
QueryKernel g_query_kernel = PickChangedWords();

}  // namespace

namespace detail {
std::string_view QueryKernelName() { return g_query_kernel.name; }

bool SelectQueryKernelForTest(std::string_view name) {
  for (const QueryKernel& k : AvailableKernels()) {
    if (name == k.name) {
      g_query_kernel = k;
      return true;
    }
  }
  return false;
}
}  // namespace detail

void PrefixIndex::QueryLocked(std::span<const BlockHash> hashes, QueryOptions options,
                              bool preds_all_live, int64_t now, QueryResult& out) const {
  // The walk keeps the candidate workers as slot bitsets (A_c, A_p). A block held by many
  // workers is folded in with word operations on its held bitset plus its exception holders
  // (Entry::held, Entry::exceptions); a block with few holders by iterating its holders.
  // Per-worker work happens only when a worker leaves a set or holds a block of its run in a
  // tier other than G1 alone, so a block costs O(active words + such exceptions).
  thread_local QueryScratch sc;
  sc.Fit(workers_.size());
  out.workers.clear();
  QueryWord* qw = sc.words.data();
  uint64_t* const conf = sc.conf.data();
  uint64_t* const pred = sc.pred.data();
  uint64_t* const keep = sc.keep.data();
  const ChangedWordsFn changed_words = g_query_kernel.fn;
  QuerySlot* qs = sc.slots.data();

  // Whether a predicted-only holder needs its liveness looked up.
  const bool check_pred = !preds_all_live && !predictions_.empty();

  // Computes next_* of block `key` (entry e) for the active words (block 0: first, all words,
  // every holder starts a run).
  auto fold = [&](const Entry& e, BlockHash key, bool first) __attribute__((always_inline)) {
    const uint32_t words = e.words();
    if (words != 0) {
      // Only block 0 is folded this way (later bitset blocks: the walk below). The held bitset
      // starts both runs in G1; the exceptions then adjust the tiers, and predicted-only
      // holders (live ones) start the predicted run.
      KVMESH_DCHECK(first);
      const uint64_t* held = e.held();
      for (uint32_t j = 0; j < words; ++j) {
        QueryWord& q = qw[j];
        q.next_conf = q.next_pred = q.next_tier[0] = held[j];
        q.next_tier[1] = q.next_tier[2] = 0;
      }
      const uint32_t* hs = e.holders();
      for (uint32_t k = 0, ne = e.exceptions(); k < ne; ++k) {
        const uint32_t s = HolderSlot(hs[k]);
        const uint32_t m = HolderMask(hs[k]);
        QueryWord& q = qw[s / 64];
        const uint64_t bit = uint64_t{1} << (s & 63);
        if (m & kTierMask) {
          if (!(m & 1)) q.next_tier[0] &= ~bit;
          if (m & 2) q.next_tier[1] |= bit;
          if (m & 4) q.next_tier[2] |= bit;
        } else if (!check_pred || PredictionLive(key, s, now)) {
          q.next_pred |= bit;
        }
      }
      return;
    }
    const uint32_t* hs = e.holders();
    for (uint32_t k = 0; k < e.size; ++k) {
      const uint32_t s = HolderSlot(hs[k]);
      QueryWord& q = qw[s / 64];
      const uint64_t bit = uint64_t{1} << (s & 63);
      if (!first && !(pred[s / 64] & bit)) continue;
      uint32_t m = HolderMask(hs[k]);
      // A confirmed holder continues both runs whatever its prediction: look up only
      // predicted-only holders, and only when some prediction may have expired.
      if (m == kPredictedBit && check_pred && !PredictionLive(key, s, now)) m = 0;
      if (m == 0) continue;
      q.next_pred |= bit;
      if ((m & kTierMask) && (first || (conf[s / 64] & bit))) {
        q.next_conf |= bit;
        for (int t = 0; t < 3; ++t) {
          if ((m >> t) & 1) q.next_tier[t] |= bit;
        }
      }
    }
  };

  // The walk is a pipeline over the request's blocks: table slots are prefetched
  // kQueryPrefetchAhead blocks ahead; kQueryFindAhead blocks ahead the (by then cached) slot is
  // looked up and its heap block (held bitset and exceptions, or holders: a second, dependent
  // DRAM miss) prefetched; block i then finds both in cache. found[] is a ring of the looked-up
  // entries.
  const size_t n_hashes = hashes.size();
  const uint32_t max_words = static_cast<uint32_t>(sc.words.size());
  const Entry* found[kQueryFindRing];
  auto find_ahead = [&](size_t k) __attribute__((always_inline)) {
    const Entry* f = FindInQuery(hashes[k]);
    found[k % kQueryFindRing] = f;
    if (f != nullptr && f->cap != 0) {
      // The walk reads the header and then either the whole holder array (no bitset) or the
      // held bitset and the exceptions (a few holders). Which one is in the header, not yet
      // cached: bound both by what the entry shows (a line of exceptions assumed).
      const size_t bitset_bytes = 8 + 8 * size_t{std::min<uint32_t>(max_words, f->cap / 4)} + 64;
      const size_t holder_bytes = 8 + 4 * size_t{f->size};
      const size_t bytes = std::min<size_t>(std::min(bitset_bytes, holder_bytes), 64 * 24);
      const char* h = reinterpret_cast<const char*>(f->heap);
      for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(h + off);
    }
  };
  for (size_t i = 0; i < std::min(n_hashes, kQueryPrefetchAhead); ++i) Prefetch(hashes[i]);
  // Block i >= 1 looks up block i + kQueryFindAhead, so blocks 0..kQueryFindAhead come first.
  for (size_t i = 0; i < std::min(n_hashes, kQueryFindAhead + 1); ++i) find_ahead(i);
  const Entry* e = n_hashes ? found[0] : nullptr;
  if (e != nullptr) {
    fold(*e, hashes[0], /*first=*/true);
    // Adopt block 0: every word it touched becomes active; its tier exceptions count.
    const uint32_t nwords = static_cast<uint32_t>(sc.words.size());
    for (uint32_t j = 0; j < nwords; ++j) {
      QueryWord& q = qw[j];
      if (q.next_pred == 0) continue;  // next_conf, next_tier are subsets
      conf[j] = q.next_conf;
      pred[j] = q.next_pred;
      ForEachBit(conf[j] & ~q.next_tier[0], j * 64, [&](uint32_t s) { ++qs[s].g1_missing; });
      ForEachBit(q.next_tier[1], j * 64, [&](uint32_t s) { ++qs[s].g2; });
      ForEachBit(q.next_tier[2], j * 64, [&](uint32_t s) { ++qs[s].g3; });
      for (int t = 0; t < 3; ++t) q.next_tier[t] = 0;
      q.next_conf = 0;
      q.next_pred = 0;
      sc.active.push_back(j);
      ForEachBit(pred[j], j * 64, [&](uint32_t s) { sc.touched.push_back(s); });
    }
    // One slot left in A_p (typically the worker that holds a conversation, past the shared
    // prefix): blocks are then folded by looking that slot up in the entry (single_step), which
    // is the general fold restricted to one slot and costs a fraction of it.
    auto single_left = [&]() __attribute__((always_inline)) {
      return sc.active.size() == 1 && std::has_single_bit(pred[sc.active[0]]);
    };
    bool single = single_left();
    // Folds block n (entry e) for the single slot s (bit `bit` of word j). Returns false when s
    // leaves A_p there (the walk is over).
    auto single_step = [&](const Entry& en, uint32_t n, uint32_t j, uint64_t bit)
                           __attribute__((always_inline)) -> bool {
      const uint32_t s = j * 64 + static_cast<uint32_t>(std::countr_zero(bit));
      // s's mask in the entry (0: not a holder). With a bitset, a holder outside the first
      // exceptions() holds the block in G1 alone (a prediction on top does not matter to
      // either run), so the held bit decides unless s is an exception.
      uint32_t m = 0;
      const uint32_t* hs = en.holders();
      uint32_t scan = en.size;
      if (const uint32_t words = en.words(); words != 0) {
        m = (j < words && (en.held()[j] & bit)) ? 1u : 0u;
        scan = en.exceptions();
      }
      for (uint32_t k = 0; k < scan; ++k) {
        if (HolderSlot(hs[k]) == s) {
          m = HolderMask(hs[k]);
          break;
        }
      }
      if (m == kPredictedBit && check_pred && !PredictionLive(hashes[n], s, now)) m = 0;
      if (m == 0) return false;
      if (!(conf[j] & bit)) return true;  // only the predicted run goes on: no tier counts
      if (m & kTierMask) {
        QuerySlot& st = qs[s];
        st.g1_missing += !(m & 1);
        st.g2 += (m >> 1) & 1;
        st.g3 += (m >> 2) & 1;
      } else {  // live prediction only: the confirmed run ends here
        qs[s].matched = n;
        conf[j] = 0;
      }
      return true;
    };
    size_t i = 1;
    for (; i < n_hashes && !sc.active.empty(); ++i) {
      if (i + kQueryPrefetchAhead < n_hashes) Prefetch(hashes[i + kQueryPrefetchAhead]);
      if (i + kQueryFindAhead < n_hashes) find_ahead(i + kQueryFindAhead);
      e = found[i % kQueryFindRing];
      if (e == nullptr) break;
      const uint32_t n = static_cast<uint32_t>(i);
      if (single) {
        const uint32_t j = sc.active[0];
        if (!single_step(*e, n, j, pred[j])) break;  // the final loop ends both runs at n
        continue;
      }
      // Moves word j's runs to (nc, np): slots leaving a run end it at block n.
      auto leave = [&](uint32_t j, uint64_t nc, uint64_t np) __attribute__((always_inline)) {
        ForEachBit(conf[j] & ~nc, j * 64, [&](uint32_t s) { qs[s].matched = n; });
        ForEachBit(pred[j] & ~np, j * 64, [&](uint32_t s) { qs[s].with_pred = n; });
        conf[j] = nc;
        pred[j] = np;
      };
      // Moves word j to (nc, np) at block n, where nt[t] = the slots of nc holding block n in
      // tier t: per-slot work only for slots leaving a run and for tier exceptions (block n of
      // the run not in G1, or in G2/G3). Callers skip it when there is neither (the common case
      // along a prefix).
      auto commit = [&](uint32_t j, uint64_t nc, uint64_t np, const uint64_t* nt)
                        __attribute__((always_inline)) {
        const uint32_t base = j * 64;
        ForEachBit(nc & ~nt[0], base, [&](uint32_t s) { ++qs[s].g1_missing; });
        ForEachBit(nt[1], base, [&](uint32_t s) { ++qs[s].g2; });
        ForEachBit(nt[2], base, [&](uint32_t s) { ++qs[s].g3; });
        leave(j, nc, np);
      };
      size_t kept = 0;
      const uint32_t words = e->words();
      if (words != 0) {
        // Bitset entry. First its exceptions (holders not in G1 alone): a confirmed one in A_c
        // counts its tiers; a predicted-only one in A_p stays in A_p if live (keep). Then the
        // words where a slot of A_p is not in the held bitset (ChangedWords) lose those slots,
        // but for the kept ones. The active list is ascending (words are adopted in order and
        // compaction keeps it), so the active words past the bitset, where nobody holds the
        // block, are a suffix: each of them leaves both runs.
        const uint64_t* held = e->held();
        const uint32_t* hs = e->holders();
        for (uint32_t k = 0, ne = e->exceptions(); k < ne; ++k) {
          const uint32_t s = HolderSlot(hs[k]);
          const uint32_t j = s / 64;
          const uint64_t bit = uint64_t{1} << (s & 63);
          if (!(pred[j] & bit)) continue;
          const uint32_t m = HolderMask(hs[k]);
          if (m & kTierMask) {
            if (conf[j] & bit) {
              QuerySlot& st = qs[s];
              st.g1_missing += !(m & 1);
              st.g2 += (m >> 1) & 1;
              st.g3 += (m >> 2) & 1;
            }
          } else if (!check_pred || PredictionLive(hashes[i], s, now)) {
            if (keep[j] == 0) sc.keep_words.push_back(j);
            keep[j] |= bit;
          }
        }
        uint32_t* const active = sc.active.data();
        const size_t num_active = sc.active.size();
        size_t n_in = num_active;
        while (n_in != 0 && active[n_in - 1] >= words) --n_in;
        bool gone = n_in != num_active;  // some word's A_p became empty
        for (size_t k = n_in; k < num_active; ++k) leave(active[k], 0, 0);
        // Words [first active, last active below the bitset]; the inactive ones between never
        // change (their A_p is 0).
        const uint32_t hi = n_in != 0 ? active[n_in - 1] + 1 : 0;
        for (uint32_t from = n_in != 0 ? active[0] : 0; from < hi; from += 64) {
          const uint32_t n_chunk = std::min<uint32_t>(hi - from, 64);
          const uint64_t changed = changed_words(pred + from, held + from, n_chunk);
          ForEachBit(changed, from, [&](uint32_t j) {
            const uint64_t nc = conf[j] & held[j];
            const uint64_t np = pred[j] & (held[j] | keep[j]);
            leave(j, nc, np);
            gone |= np == 0;
          });
        }
        for (uint32_t j : sc.keep_words) keep[j] = 0;
        sc.keep_words.clear();
        if (gone) {
          for (size_t k = 0; k < num_active; ++k) {
            if (pred[active[k]] != 0) active[kept++] = active[k];
          }
        } else {
          kept = num_active;
        }
      } else {
        fold(*e, hashes[i], /*first=*/false);  // fills next_* of the holders' words
        for (uint32_t j : sc.active) {
          QueryWord& q = qw[j];
          const uint64_t nc = q.next_conf, np = q.next_pred;
          const uint64_t nt[3] = {q.next_tier[0], q.next_tier[1], q.next_tier[2]};
          q.next_conf = q.next_pred = 0;
          q.next_tier[0] = q.next_tier[1] = q.next_tier[2] = 0;
          const uint64_t diff = (conf[j] ^ nc) | (pred[j] ^ np) | (nc & ~nt[0]) | nt[1] | nt[2];
          if (diff != 0) commit(j, nc, np, nt);
          if (np != 0) sc.active[kept++] = j;
        }
      }
      sc.active.resize(kept);
      single = single_left();
    }
    // The walk ended at block i (end of request, missing block, or nobody left).
    const uint32_t n = static_cast<uint32_t>(i);
    for (uint32_t j : sc.active) {
      const uint32_t base = j * 64;
      ForEachBit(conf[j], base, [&](uint32_t s) { qs[s].matched = n; });
      ForEachBit(pred[j], base, [&](uint32_t s) { qs[s].with_pred = n; });
      conf[j] = 0;
      pred[j] = 0;
    }
    sc.active.clear();
  }

  if (options.all_workers) {
    for (uint32_t s = 0; s < workers_.size(); ++s) {
      const WorkerState& w = workers_[s];
      if (!w.live || qs[s].with_pred != 0) continue;
      WorkerMatch& wm = out.workers.emplace_back();
      wm.worker = w.id;
      wm.total_blocks = w.total_blocks;
      wm.total_tier = w.total_tier;
    }
  }
  // With a shared system prompt every worker matches block 0, so this loop runs for all workers
  // on every query and dominates short queries.
  // (push_back of whole structs: a resize would first zero every element.)
  out.workers.reserve(out.workers.size() + sc.touched.size());
  for (uint32_t s : sc.touched) {
    const WorkerState& w = workers_[s];
    QuerySlot& st = qs[s];
    out.workers.push_back(WorkerMatch{
        .worker = w.id,
        .matched_blocks = st.matched,
        .matched_tier = {st.matched - st.g1_missing, st.g2, st.g3},
        .matched_with_predicted = st.with_pred,
        .total_blocks = w.total_blocks,
        .total_tier = w.total_tier,
    });
    st = QuerySlot{};
  }
  sc.touched.clear();
}

PrefixIndexStats PrefixIndex::Stats() const {
  std::shared_lock lock(mu_);
  PrefixIndexStats s = counters_;
  s.blocks = num_entries_;
  s.holders = num_holders_;
  s.workers = slot_of_.size();
  s.predicted = predictions_.size();
  s.memory_bytes = table_.capacity() * sizeof(Entry) + heap_bytes_ +
                   prune_ring_.size() * sizeof(std::pair<BlockHash, uint32_t>) +
                   workers_.capacity() * sizeof(WorkerState) +
                   slot_of_.size() * 32 + predictions_.size() * 48 +
                   pred_heap_.size() * sizeof(PredExpiry);
  return s;
}

std::vector<WorkerId> PrefixIndex::Workers() const {
  std::shared_lock lock(mu_);
  std::vector<WorkerId> ids;
  ids.reserve(slot_of_.size());
  for (const auto& [id, slot] : slot_of_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string PrefixIndex::CheckInvariants() const {
  std::shared_lock lock(mu_);
  std::vector<WorkerState> counted(workers_.size());
  std::vector<size_t> last_entry(workers_.size(), SIZE_MAX);  // entry a slot was last seen in
  size_t entries = 0, holders = 0;
  for (size_t i = 0; i < table_.size(); ++i) {
    const Entry& e = table_[i];
    if (e.size == 0) continue;
    ++entries;
    holders += e.size;
    const std::string where = "entry " + std::to_string(e.key) + ": ";
    if (e.cap == 0 && e.size > 2) return where + "more than 2 inline holders";
    if (e.cap != 0 && e.size > e.cap) return where + "size above capacity";
    const uint32_t* hs = e.holders();
    const uint32_t words = e.words();
    const uint32_t num_exceptions = e.exceptions();
    if (words != 0 && num_exceptions > e.size) return where + "more exceptions than holders";
    std::vector<uint64_t> held(words, 0);
    for (uint32_t k = 0; k < e.size; ++k) {
      const uint32_t slot = HolderSlot(hs[k]);
      const uint32_t mask = HolderMask(hs[k]);
      if (mask == 0) return where + "holder with an empty mask";
      if (slot >= workers_.size() || !workers_[slot].live) return where + "holder of no worker";
      if (last_entry[slot] == i) return where + "worker held twice";
      last_entry[slot] = i;
      if (words != 0) {
        if (slot / 64 >= words) return where + "holder outside the bitset";
        if ((k < num_exceptions) != IsException(mask)) {
          return where + "holder " + std::to_string(k) + " on the wrong side of the exceptions";
        }
        if (mask & kTierMask) held[slot / 64] |= uint64_t{1} << (slot & 63);
      }
      WorkerState& c = counted[slot];
      if (mask & kTierMask) ++c.total_blocks;
      for (int t = 0; t < kNumMedia; ++t) c.total_tier[t] += (mask >> t) & 1;
    }
    for (uint32_t j = 0; j < words; ++j) {
      if (held[j] != e.held()[j]) return where + "held bitset differs from the holders";
    }
  }
  if (entries != num_entries_) return "entry count differs";
  if (holders != num_holders_) return "holder count differs";
  for (size_t s = 0; s < workers_.size(); ++s) {
    if (!workers_[s].live) continue;
    if (counted[s].total_blocks != workers_[s].total_blocks ||
        counted[s].total_tier != workers_[s].total_tier) {
      return "totals of worker " + std::to_string(workers_[s].id) + " differ";
    }
  }
  return "";
}

std::vector<BlockHash> PrefixIndex::HeldBlocks(size_t max_blocks) const {
  std::shared_lock lock(mu_);
  std::vector<BlockHash> out;
  out.reserve(max_blocks != 0 ? std::min(max_blocks, num_entries_) : num_entries_);
  for (const Entry& e : table_) {
    if (e.size == 0) continue;
    const uint32_t* hs = e.holders();
    bool confirmed = false;
    for (uint32_t k = 0; k < e.size && !confirmed; ++k) {
      confirmed = (HolderMask(hs[k]) & kTierMask) != 0;
    }
    if (!confirmed) continue;
    out.push_back(e.key);
    if (max_blocks != 0 && out.size() >= max_blocks) break;
  }
  return out;
}

}  // namespace kvmesh::kv
