#include "kv/prefix_index.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "common/check.h"

namespace kvmesh::kv {
namespace {

constexpr size_t kMinCapacity = 64;
constexpr size_t kPrefetchAhead = 8;

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

const PrefixIndex::Entry* PrefixIndex::Find(BlockHash key) const {
  size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  while (true) {
    const Entry& e = table_[i];
    if (e.size == 0) return nullptr;
    if (e.key == key) return &e;
    i = (i + 1) & mask_;
  }
}

void PrefixIndex::Grow() {
  std::vector<Entry> old;
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
    std::free(gone.heap);
    heap_holder_slots_ -= gone.cap;
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
      hs[k] = MakeHolder(slot, new_mask);
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
    auto* heap = static_cast<uint32_t*>(std::malloc(4 * sizeof(uint32_t)));
    KVMESH_CHECK(heap != nullptr, "out of memory");
    std::memcpy(heap, e->inline_holders, 2 * sizeof(uint32_t));
    e->heap = heap;
    e->cap = 4;
    heap_holder_slots_ += 4;
  } else if (e->cap != 0 && e->size == e->cap) {
    uint32_t new_cap = std::min<uint32_t>(uint32_t{e->cap} * 2, kMaxHolders);
    auto* heap = static_cast<uint32_t*>(std::realloc(e->heap, new_cap * sizeof(uint32_t)));
    KVMESH_CHECK(heap != nullptr, "out of memory");
    heap_holder_slots_ += new_cap - e->cap;
    e->heap = heap;
    e->cap = static_cast<uint16_t>(new_cap);
  }
  e->holders()[e->size++] = MakeHolder(slot, bits);
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
    hs[h] = MakeHolder(slot, new_mask);
    return false;
  }
  hs[h] = hs[--e.size];
  --num_holders_;
  if (e.size == 0) {
    EraseAt(i);
    return true;
  }
  if (e.cap != 0 && e.size <= 2) {
    uint32_t* heap = e.heap;
    uint32_t cap = e.cap;
    std::memcpy(e.inline_holders, heap, e.size * sizeof(uint32_t));
    e.cap = 0;
    std::free(heap);
    heap_holder_slots_ -= cap;
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
  std::shared_lock lock(mu_);
  QueryLocked(hashes, options, out);
}

void PrefixIndex::QueryLocked(std::span<const BlockHash> hashes, QueryOptions options,
                              QueryResult& out) const {
  // Per-thread scratch: position of a worker slot in out.workers (-1 = not matching). Reset
  // for the touched slots before returning, so it is all -1 between queries.
  thread_local std::vector<int32_t> pos;
  thread_local std::vector<uint32_t> slots;
  if (pos.size() < workers_.size()) pos.resize(workers_.size(), -1);
  out.workers.clear();
  slots.clear();

  const bool check_pred = !predictions_.empty();
  const int64_t now = check_pred ? NowNs() : 0;
  auto effective_mask = [&](BlockHash key, uint32_t holder) {
    uint32_t m = HolderMask(holder);
    if ((m & kPredictedBit) && !PredictionLive(key, HolderSlot(holder), now)) {
      m &= ~kPredictedBit;
    }
    return m;
  };

  const size_t n_hashes = hashes.size();
  for (size_t i = 0; i < std::min(n_hashes, kPrefetchAhead); ++i) Prefetch(hashes[i]);
  if (!hashes.empty()) {
    if (const Entry* e = Find(hashes[0])) {
      const uint32_t* hs = e->holders();
      for (uint32_t k = 0; k < e->size; ++k) {
        uint32_t m = check_pred ? effective_mask(hashes[0], hs[k]) : HolderMask(hs[k]);
        if (m == 0) continue;
        uint32_t slot = HolderSlot(hs[k]);
        pos[slot] = static_cast<int32_t>(out.workers.size());
        slots.push_back(slot);
        WorkerMatch& wm = out.workers.emplace_back();
        wm.matched_with_predicted = 1;
        if (m & kTierMask) {
          wm.matched_blocks = 1;
          for (int t = 0; t < kNumMedia; ++t) wm.matched_tier[t] += (m >> t) & 1;
        }
      }
      size_t alive = out.workers.size();
      for (size_t i = 1; i < n_hashes && alive > 0; ++i) {
        if (i + kPrefetchAhead < n_hashes) Prefetch(hashes[i + kPrefetchAhead]);
        e = Find(hashes[i]);
        if (e == nullptr) break;
        alive = 0;
        hs = e->holders();
        const uint32_t n = static_cast<uint32_t>(i);
        for (uint32_t k = 0; k < e->size; ++k) {
          int32_t p = pos[HolderSlot(hs[k])];
          if (p < 0) continue;
          WorkerMatch& wm = out.workers[p];
          if (wm.matched_with_predicted != n) continue;
          uint32_t m = check_pred ? effective_mask(hashes[i], hs[k]) : HolderMask(hs[k]);
          if (m == 0) continue;
          wm.matched_with_predicted = n + 1;
          ++alive;
          if ((m & kTierMask) && wm.matched_blocks == n) {
            wm.matched_blocks = n + 1;
            for (int t = 0; t < kNumMedia; ++t) wm.matched_tier[t] += (m >> t) & 1;
          }
        }
      }
    }
  }
  for (size_t j = 0; j < slots.size(); ++j) {
    const WorkerState& w = workers_[slots[j]];
    WorkerMatch& wm = out.workers[j];
    wm.worker = w.id;
    wm.total_blocks = w.total_blocks;
    wm.total_tier = w.total_tier;
  }
  if (options.all_workers) {
    for (uint32_t s = 0; s < workers_.size(); ++s) {
      const WorkerState& w = workers_[s];
      if (!w.live || pos[s] >= 0) continue;
      WorkerMatch& wm = out.workers.emplace_back();
      wm.worker = w.id;
      wm.total_blocks = w.total_blocks;
      wm.total_tier = w.total_tier;
    }
  }
  for (uint32_t s : slots) pos[s] = -1;
}

PrefixIndexStats PrefixIndex::Stats() const {
  std::shared_lock lock(mu_);
  PrefixIndexStats s = counters_;
  s.blocks = num_entries_;
  s.holders = num_holders_;
  s.workers = slot_of_.size();
  s.predicted = predictions_.size();
  s.memory_bytes = table_.capacity() * sizeof(Entry) + heap_holder_slots_ * sizeof(uint32_t) +
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

}  // namespace kvmesh::kv
