// HostTier: G2, the host-memory offload tier below the engine's KV memory (G1).
//
// A fixed number of block slots in one host arena allocated at creation (no allocation per
// block). A hash -> slot map and an LRU order over the occupied slots. Each block carries a hit
// counter (how often it was reused, carried over from G1 by the tier manager and incremented on
// every load), which decides whether the block is worth keeping on disk (G3) when it is evicted.
//
// Semantics: Store() copies a block in from G1 through the BlockCopier, evicting the least
// recently used block when full (the eviction handler sees its bytes first, then BlockRemoved
// {hash, CPU} is emitted); BlockStored{hash, CPU} is emitted for every newly stored block. Load()
// copies a block out to G1 and keeps the G2 copy (the tiers are inclusive), so a block that is
// onboarded and later evicted from G1 again costs no second copy.
//
// Thread safety: none; one engine thread owns the tier. Events and the eviction handler run
// synchronously on that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kv/block_copier.h"
#include "kv/block_hash.h"
#include "kv/block_pool.h"
#include "kv/kv_event.h"
#include "kv/tier_lru.h"

namespace kvmesh::kv {

struct HostTierOptions {
  uint32_t capacity_blocks = 0;  // slots; must be > 0
  size_t block_bytes = 0;        // bytes of one block's KV; must be > 0
  uint32_t block_size = 16;      // tokens per block, named in emitted BlockStored events

  // InvalidArgument naming the bad field (also when capacity * block_bytes overflows).
  Status Validate() const;
};

struct HostTierStats {
  uint64_t stores = 0;          // blocks newly copied in
  uint64_t store_refreshes = 0;  // Store() of a block already present (LRU refresh only)
  uint64_t store_errors = 0;    // copier failures on Store()
  uint64_t evictions = 0;       // blocks evicted to make room
  uint64_t loads = 0;           // hits: blocks copied out to G1
  uint64_t load_misses = 0;     // Load() of an absent block
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

// A block leaving a tier by eviction; `bytes` is valid only during the callback.
struct EvictedBlock {
  BlockHash hash = 0;
  std::optional<BlockHash> parent;
  uint32_t hits = 0;
  std::span<const std::byte> bytes;
};
using TierEvictionFn = std::function<void(const EvictedBlock&)>;

class HostTier {
 public:
  // InvalidArgument if `options` is invalid. `events` (may be null) must outlive the tier.
  static StatusOr<std::unique_ptr<HostTier>> Create(const HostTierOptions& options,
                                                    KvEventSink* events = nullptr);
  HostTier(const HostTier&) = delete;
  HostTier& operator=(const HostTier&) = delete;

  // Copies block_bytes from engine memory `src` in under `hash`. Already present: refreshes its
  // LRU position and raises its hit count to `hits` if larger. Full: evicts the least recently
  // used unpinned block first; ResourceExhausted (not stored) if every block is pinned. On a
  // copier error the block is not stored and the error is returned.
  Status Store(BlockHash hash, std::optional<BlockHash> parent, uint32_t hits,
               const std::byte* src, BlockCopier& copier);

  // Copies the block to engine memory `dst` (block_bytes), counts a hit and refreshes its LRU
  // position. Returns the block's hit count including this hit. NotFound if absent; the copier's
  // error if the copy failed (the block stays stored).
  StatusOr<uint32_t> Load(BlockHash hash, std::byte* dst, BlockCopier& copier);

  // A pinned block is never evicted (the tier manager pins the G2 blocks it is about to onboard
  // while the pool's allocation may push other blocks into G2). Pins nest. False if absent.
  bool Pin(BlockHash hash);
  void Unpin(BlockHash hash);  // no-op if absent or not pinned

  // Drops a block (emits BlockRemoved, no eviction handler). False if absent.
  bool Remove(BlockHash hash);

  bool Contains(BlockHash hash) const { return map_.Find(hash).has_value(); }
  std::optional<uint32_t> HitCount(BlockHash hash) const;
  // The stored bytes (no LRU change); empty if absent. For tests and debugging.
  std::span<const std::byte> Peek(BlockHash hash) const;
  // Hashes from least to most recently used. O(n).
  std::vector<BlockHash> LruSnapshot() const;

  // Called for each block evicted to make room, before its slot is reused.
  void SetEvictionHandler(TierEvictionFn fn) { on_evict_ = std::move(fn); }

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return options_.capacity_blocks; }
  const HostTierOptions& options() const { return options_; }
  const HostTierStats& stats() const { return stats_; }

 private:
  struct Slot {
    BlockHash hash = 0;
    BlockHash parent = 0;
    bool has_parent = false;
    uint32_t hits = 0;
    uint32_t pins = 0;
  };
  HostTier(const HostTierOptions& options, KvEventSink* events);
  std::byte* SlotBytes(uint32_t slot) {
    return arena_.data() + static_cast<size_t>(slot) * options_.block_bytes;
  }
  bool EvictOne();  // false if every block is pinned
  void Release(uint32_t slot);  // unmaps, unlinks, frees the slot and emits BlockRemoved

  const HostTierOptions options_;
  KvEventSink* const events_;
  TierEvictionFn on_evict_;
  std::vector<std::byte> arena_;   // capacity * block_bytes, allocated once
  std::vector<Slot> slots_;        // indexed by slot
  std::vector<uint32_t> free_slots_;
  internal::BlockHashMap map_;     // hash -> slot + 1 (0 is "empty" in BlockHashMap)
  internal::SlotLru lru_;
  uint32_t size_ = 0;
  HostTierStats stats_;
};

}  // namespace kvmesh::kv
