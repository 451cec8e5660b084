// BlockPool: the G1 (engine-memory) KV block allocator with prefix caching.
//
// The pool hands out block ids; it holds only metadata, the engine owns the tensor memory. It
// follows vLLM v1's BlockPool / FreeKVCacheBlockQueue:
//  - Block metadata lives in one std::vector indexed by block id. Free blocks form an LRU queue
//    threaded through that vector by index (doubly linked, O(1) removal from the middle).
//  - Block 0 is the null block: never handed out, never freed, never cached. (It doubles as the
//    sentinel of the free queue.)
//  - A full block whose KV is written is committed under its sequence hash; the prefix map then
//    maps hash -> block. A freed cached block keeps its hash while it sits in the free queue, so a
//    later sequence with the same prefix can pin it again (a "hit" pulls it out of the queue).
//  - Fresh blocks come from the queue head (least recently freed). If that block still has a hash,
//    it is evicted: the eviction handler runs, the hash is dropped, BlockRemoved is emitted.
//  - Free() queues a sequence's blocks in reverse, so its tail is evicted before its head.
//  - Running out of blocks is not an error: allocation returns std::nullopt and changes nothing.
//
// Invariants (checked fatally, they are bugs in the caller): a block's ref count never goes
// below 0; the null block is never freed or pinned; a block's hash is set at most once between
// evictions ("double hash"). Every block except the null block is either in use (ref > 0) or in
// the free queue (ref == 0), never both; every prefix-map entry points at a block holding that hash.
//
// Thread safety: none. One engine thread owns the pool; other threads post work to that thread.
// The event sink and the eviction handler are called synchronously on that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"
#include "kv/kv_event.h"

namespace kvmesh::kv {

using BlockId = uint32_t;
inline constexpr BlockId kNullBlockId = 0;  // reserved: never handed out, never freed, never cached

struct BlockPoolOptions {
  uint32_t num_blocks = 0;  // includes the null block; must be >= 2
  uint32_t block_size = 16;  // tokens per block; must be > 0
  bool enable_prefix_caching = true;  // false: CommitBlock caches nothing, lookups find nothing
  Medium medium = Medium::kG1;        // the medium named in emitted events

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

// Optional observer of evictions, e.g. the tier manager offloading a block to G2.
class BlockPoolEvictionHandler {
 public:
  virtual ~BlockPoolEvictionHandler() = default;
  // Called just before a free cached block loses its hash because the block is being reused. The
  // block's memory still holds its KV when this runs. Not called for blocks without a hash, nor by
  // ResetPrefixCache. Must not call mutating BlockPool methods (const accessors are fine).
  virtual void OnEvict(BlockId block, BlockHash hash) = 0;
};

// Counters since creation. Lookup counts are per block looked up: a lookup of N hashes whose
// longest cached prefix is K blocks adds N lookups, K hits and N - K misses.
struct BlockPoolStats {
  uint64_t lookups = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;    // cached blocks whose hash was dropped to reuse the block
  uint64_t allocations = 0;  // fresh blocks handed out
  uint64_t frees = 0;        // blocks whose ref count reached 0 (returned to the free queue)
};

namespace internal {
// Open-addressing (linear probing, backward-shift deletion) map BlockHash -> BlockId with a fixed
// capacity: the pool never holds more entries than blocks, so it never rehashes. Value
// kNullBlockId marks an empty slot (the null block is never cached).
class BlockHashMap {
 public:
  explicit BlockHashMap(uint32_t max_entries);
  std::optional<BlockId> Find(BlockHash key) const;
  bool Insert(BlockHash key, BlockId value);  // false (and no change) if `key` is present
  bool Erase(BlockHash key);                  // false if absent
  void Clear();
  size_t size() const { return size_; }

 private:
  struct Slot {
    BlockHash key = 0;
    BlockId value = kNullBlockId;
  };
  size_t Home(BlockHash key) const;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 0;
  size_t size_ = 0;
};
}  // namespace internal

class BlockPool {
 public:
  // InvalidArgument if `options` is invalid. `events` (may be null) must outlive the pool.
  static StatusOr<std::unique_ptr<BlockPool>> Create(const BlockPoolOptions& options,
                                                     KvEventSink* events = nullptr);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Number of leading `hashes` cached in this pool (in use or free). Counts lookup stats.
  // Always 0 (and no stats) when prefix caching is disabled.
  size_t FindCachedPrefix(std::span<const BlockHash> hashes);
  // Same result as FindCachedPrefix without touching the stats.
  size_t PeekCachedPrefix(std::span<const BlockHash> hashes) const;

  struct Allocation {
    std::vector<BlockId> cached;  // blocks of the cached prefix, pinned (ref + 1)
    std::vector<BlockId> fresh;   // new blocks, ref 1, no hash
  };
  // All-or-nothing: pins the blocks of the longest cached prefix of `prefix_hashes` (a free cached
  // block is pulled out of the free queue) and allocates `num_new` fresh blocks. std::nullopt when
  // there is no room; nothing changed then (not even stats). On success counts lookup stats for
  // `prefix_hashes` like FindCachedPrefix. Fresh blocks come from the LRU head; evicting a cached
  // block calls the eviction handler, drops its hash and emits BlockRemoved{hash, medium}.
  // A caller that must recompute the last token passes the hashes of all but the last block.
  std::optional<Allocation> AllocateForSequence(std::span<const BlockHash> prefix_hashes,
                                                size_t num_new);
  // `n` fresh blocks (ref 1, no hash), all or nothing; std::nullopt when fewer are free.
  std::optional<std::vector<BlockId>> Allocate(size_t n);

  // Registers a full block's KV as written: prefix map hash -> block, emits BlockStored{parent,
  // [hash], token_ids, block_size, medium}. If another block already holds `hash`, the map keeps
  // the existing block and this block stays uncached (returns OK, emits nothing). With prefix
  // caching disabled, validates and returns OK without caching. InvalidArgument: bad block id,
  // the null block, a block not in use, or token_ids neither empty nor block_size long. Committing
  // a block that already has a hash is a broken invariant ("double hash") -> fatal KVMESH_CHECK.
  Status CommitBlock(BlockId block, BlockHash hash, std::optional<BlockHash> parent,
                     std::span<const uint32_t> token_ids);

  // Pins more (e.g. for a transfer). A free block is pulled out of the free queue, like a prefix
  // hit. Bad id / null block -> fatal CHECK.
  void AddRef(std::span<const BlockId> blocks);
  // Unpins; a block reaching ref 0 goes to the free queue tail (keeping its hash, if any). Pass a
  // sequence's blocks in order: they are queued in reverse so its tail is evicted first. Bad id,
  // ref underflow or the null block -> fatal CHECK.
  void Free(std::span<const BlockId> blocks);

  // Drops every cached hash and emits AllBlocksCleared. Only when no block is in use: returns
  // false (and changes nothing) otherwise. The eviction handler is not called.
  bool ResetPrefixCache();

  // `handler` (may be null) must outlive the pool or be replaced first.
  void SetEvictionHandler(BlockPoolEvictionHandler* handler) { eviction_handler_ = handler; }

  std::optional<BlockId> Lookup(BlockHash hash) const;  // no stats, no side effects
  std::optional<BlockHash> HashOf(BlockId block) const;  // nullopt also for a bad id
  uint32_t RefCount(BlockId block) const;                // 0 for a bad id / the null block

  uint32_t num_blocks_total() const { return static_cast<uint32_t>(blocks_.size() - 1); }
  uint32_t num_blocks_free() const { return num_free_; }
  uint32_t num_blocks_used() const { return num_blocks_total() - num_free_; }
  uint32_t num_blocks_cached() const { return static_cast<uint32_t>(prefix_map_.size()); }
  double usage_ratio() const {  // used / total, in [0, 1]
    return static_cast<double>(num_blocks_used()) / static_cast<double>(num_blocks_total());
  }
  uint32_t block_size() const { return options_.block_size; }
  const BlockPoolOptions& options() const { return options_; }
  const BlockPoolStats& stats() const { return stats_; }

  // The free queue, head (next to evict) first. O(n); for tests and debugging.
  std::vector<BlockId> FreeQueueSnapshot() const;
  // Walks every structure and returns Internal naming the first broken invariant. O(n).
  Status CheckInvariants() const;

 private:
  struct Block {
    BlockHash hash = 0;
    uint32_t ref = 0;
    BlockId prev = kNullBlockId;  // free-queue links; block 0 is the queue's sentinel
    BlockId next = kNullBlockId;
    uint32_t mark = 0;            // scratch for de-duplication within one call
    bool has_hash = false;
  };

  BlockPool(const BlockPoolOptions& options, KvEventSink* events);

  bool ValidId(BlockId b) const { return b != kNullBlockId && b < blocks_.size(); }
  void QueueRemove(BlockId b);
  void QueuePushBack(BlockId b);
  BlockId QueuePopFront();
  void Pin(BlockId b);               // ref + 1, pulled out of the free queue if it was free
  BlockId TakeFresh();               // pops the LRU head, evicting its hash; ref becomes 1
  size_t CachedPrefixLength(std::span<const BlockHash> hashes) const;
  void CountLookup(size_t looked_up, size_t hit);

  const BlockPoolOptions options_;
  KvEventSink* const events_;
  BlockPoolEvictionHandler* eviction_handler_ = nullptr;
  std::vector<Block> blocks_;        // indexed by BlockId; blocks_[0] is the null block
  uint32_t num_free_ = 0;            // length of the free queue
  uint32_t mark_epoch_ = 0;
  internal::BlockHashMap prefix_map_;
  BlockPoolStats stats_;
};

}  // namespace kvmesh::kv
