#include "kv/block_pool.h"

#include <algorithm>
#include <bit>
#include <string>
#include <utility>

#include "common/check.h"

namespace kvmesh::kv {

// ---- BlockHashMap ---------------------------------------------------------------------------

namespace internal {

BlockHashMap::BlockHashMap(uint32_t max_entries) {
  // Load factor <= 1/2 at the most entries the pool can hold.
  const uint64_t want = std::max<uint64_t>(16, 2 * static_cast<uint64_t>(max_entries));
  const uint64_t capacity = std::bit_ceil(want);
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  shift_ = 64 - std::countr_zero(capacity);
}

size_t BlockHashMap::Home(BlockHash key) const {
  // Fibonacci hashing: spreads keys even when callers use small or sequential hashes.
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
}

std::optional<BlockId> BlockHashMap::Find(BlockHash key) const {
  for (size_t i = Home(key);; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.value == kNullBlockId) return std::nullopt;
    if (s.key == key) return s.value;
  }
}

bool BlockHashMap::Insert(BlockHash key, BlockId value) {
  KVMESH_DCHECK(value != kNullBlockId);
  KVMESH_CHECK(size_ < slots_.size() / 2 + 1, "BlockHashMap over capacity");
  for (size_t i = Home(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.value == kNullBlockId) {
      s.key = key;
      s.value = value;
      ++size_;
      return true;
    }
    if (s.key == key) return false;
  }
}

bool BlockHashMap::Erase(BlockHash key) {
  size_t i = Home(key);
  for (;; i = (i + 1) & mask_) {
    if (slots_[i].value == kNullBlockId) return false;
    if (slots_[i].key == key) break;
  }
  // Backward-shift deletion: pull later entries of the probe run into the hole when their home
  // slot is not cyclically inside (hole, j].
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    if (slots_[j].value == kNullBlockId) break;
    const size_t home = Home(slots_[j].key);
    if (((j - home) & mask_) >= ((j - i) & mask_)) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = Slot{};
  --size_;
  return true;
}

void BlockHashMap::Clear() {
  std::fill(slots_.begin(), slots_.end(), Slot{});
  size_ = 0;
}

}  // namespace internal

// ---- options --------------------------------------------------------------------------------

Status BlockPoolOptions::Validate() const {
  if (num_blocks < 2) {
    return InvalidArgumentError("num_blocks must be >= 2 (it includes the null block), got " +
                                std::to_string(num_blocks));
  }
  if (num_blocks == UINT32_MAX) {
    return InvalidArgumentError("num_blocks must be < 4294967295, got " +
                                std::to_string(num_blocks));
  }
  if (block_size == 0) return InvalidArgumentError("block_size must be > 0, got 0");
  if (static_cast<int>(medium) >= kNumMedia) {
    return InvalidArgumentError("medium out of range: " + std::to_string(static_cast<int>(medium)));
  }
  return Status::Ok();
}

// ---- BlockPool ------------------------------------------------------------------------------

StatusOr<std::unique_ptr<BlockPool>> BlockPool::Create(const BlockPoolOptions& options,
                                                       KvEventSink* events) {
  KVMESH_RETURN_IF_ERROR(options.Validate().WithContext("BlockPoolOptions"));
  return std::unique_ptr<BlockPool>(new BlockPool(options, events));
}

BlockPool::BlockPool(const BlockPoolOptions& options, KvEventSink* events)
    : options_(options),
      events_(events),
      blocks_(options.num_blocks),
      prefix_map_(options.enable_prefix_caching ? options.num_blocks - 1 : 0) {
  // Block 0 is the null block and the free queue's sentinel; the queue starts as 1, 2, ..., n-1.
  for (BlockId b = 1; b < options.num_blocks; ++b) QueuePushBack(b);
}

void BlockPool::QueueRemove(BlockId b) {
  Block& blk = blocks_[b];
  blocks_[blk.prev].next = blk.next;
  blocks_[blk.next].prev = blk.prev;
  blk.prev = blk.next = kNullBlockId;
  --num_free_;
}

void BlockPool::QueuePushBack(BlockId b) {
  Block& sentinel = blocks_[kNullBlockId];
  const BlockId tail = sentinel.prev;
  blocks_[tail].next = b;
  blocks_[b].prev = tail;
  blocks_[b].next = kNullBlockId;
  sentinel.prev = b;
  ++num_free_;
}

BlockId BlockPool::QueuePopFront() {
  const BlockId b = blocks_[kNullBlockId].next;
  KVMESH_DCHECK(b != kNullBlockId);
  QueueRemove(b);
  return b;
}

void BlockPool::Pin(BlockId b) {
  Block& blk = blocks_[b];
  if (blk.ref == 0) QueueRemove(b);
  ++blk.ref;
}

BlockId BlockPool::TakeFresh() {
  const BlockId b = QueuePopFront();
  Block& blk = blocks_[b];
  KVMESH_DCHECK(blk.ref == 0);
  if (blk.has_hash) {
    const BlockHash hash = blk.hash;
    if (eviction_handler_ != nullptr) eviction_handler_->OnEvict(b, hash);
    const bool erased = prefix_map_.Erase(hash);
    KVMESH_CHECK(erased, "evicted block " + std::to_string(b) + " holds hash " +
                             std::to_string(hash) + " missing from the prefix map");
    blk.has_hash = false;
    blk.hash = 0;
    ++stats_.evictions;
    if (events_ != nullptr) events_->Emit(BlockRemoved{{hash}, options_.medium});
  }
  blk.ref = 1;
  ++stats_.allocations;
  return b;
}

size_t BlockPool::CachedPrefixLength(std::span<const BlockHash> hashes) const {
  if (!options_.enable_prefix_caching) return 0;
  size_t k = 0;
  while (k < hashes.size() && prefix_map_.Find(hashes[k]).has_value()) ++k;
  return k;
}

void BlockPool::CountLookup(size_t looked_up, size_t hit) {
  if (!options_.enable_prefix_caching) return;
  stats_.lookups += looked_up;
  stats_.hits += hit;
  stats_.misses += looked_up - hit;
}

size_t BlockPool::FindCachedPrefix(std::span<const BlockHash> hashes) {
  const size_t k = CachedPrefixLength(hashes);
  CountLookup(hashes.size(), k);
  return k;
}

size_t BlockPool::PeekCachedPrefix(std::span<const BlockHash> hashes) const {
  return CachedPrefixLength(hashes);
}

std::optional<BlockPool::Allocation> BlockPool::AllocateForSequence(
    std::span<const BlockHash> prefix_hashes, size_t num_new) {
  Allocation out;
  if (options_.enable_prefix_caching) {
    for (BlockHash h : prefix_hashes) {
      const std::optional<BlockId> b = prefix_map_.Find(h);
      if (!b) break;
      out.cached.push_back(*b);
    }
  }
  // Blocks needed from the free queue: the fresh ones plus every distinct free cached hit (pinning
  // it pulls it out of the queue). Marks de-duplicate a block that appears twice in the prefix.
  if (++mark_epoch_ == 0) {
    for (Block& blk : blocks_) blk.mark = 0;
    mark_epoch_ = 1;
  }
  size_t need = num_new;
  for (BlockId b : out.cached) {
    Block& blk = blocks_[b];
    if (blk.ref == 0 && blk.mark != mark_epoch_) {
      blk.mark = mark_epoch_;
      ++need;
    }
  }
  if (need > num_free_) return std::nullopt;

  // Pin the hits first so that taking fresh blocks cannot evict them.
  for (BlockId b : out.cached) Pin(b);
  out.fresh.reserve(num_new);
  for (size_t i = 0; i < num_new; ++i) out.fresh.push_back(TakeFresh());
  CountLookup(prefix_hashes.size(), out.cached.size());
  return out;
}

std::optional<std::vector<BlockId>> BlockPool::Allocate(size_t n) {
  if (n > num_free_) return std::nullopt;
  std::vector<BlockId> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(TakeFresh());
  return out;
}

Status BlockPool::CommitBlock(BlockId block, BlockHash hash, std::optional<BlockHash> parent,
                              std::span<const uint32_t> token_ids) {
  if (!ValidId(block)) {
    return InvalidArgumentError("CommitBlock: block id " + std::to_string(block) +
                                " is not a usable block (valid: 1.." +
                                std::to_string(num_blocks_total()) + ")");
  }
  Block& blk = blocks_[block];
  if (blk.ref == 0) {
    return InvalidArgumentError("CommitBlock: block " + std::to_string(block) +
                                " is not in use (ref count 0)");
  }
  if (!token_ids.empty() && token_ids.size() != options_.block_size) {
    return InvalidArgumentError("CommitBlock: token_ids must be empty or block_size (" +
                                std::to_string(options_.block_size) + ") long, got " +
                                std::to_string(token_ids.size()));
  }
  KVMESH_CHECK(!blk.has_hash, "double hash: block " + std::to_string(block) +
                                  " already holds hash " + std::to_string(blk.hash) +
                                  ", commit of " + std::to_string(hash));
  if (!options_.enable_prefix_caching) return Status::Ok();
  // Another block already holds this hash: keep it, leave this one uncached.
  if (!prefix_map_.Insert(hash, block)) return Status::Ok();
  blk.hash = hash;
  blk.has_hash = true;
  if (events_ != nullptr) {
    BlockStored stored;
    stored.parent_hash = parent;
    stored.hashes = {hash};
    stored.token_ids.assign(token_ids.begin(), token_ids.end());
    stored.block_size = options_.block_size;
    stored.medium = options_.medium;
    events_->Emit(std::move(stored));
  }
  return Status::Ok();
}

void BlockPool::AddRef(std::span<const BlockId> blocks) {
  for (BlockId b : blocks) {
    KVMESH_CHECK(b != kNullBlockId, "AddRef of the null block");
    KVMESH_CHECK(b < blocks_.size(), "AddRef: block id " + std::to_string(b) + " out of range");
    Pin(b);
  }
}

void BlockPool::Free(std::span<const BlockId> blocks) {
  // Reverse order: a sequence's tail is queued first, so it is evicted before its head.
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const BlockId b = *it;
    KVMESH_CHECK(b != kNullBlockId, "Free of the null block");
    KVMESH_CHECK(b < blocks_.size(), "Free: block id " + std::to_string(b) + " out of range");
    Block& blk = blocks_[b];
    KVMESH_CHECK(blk.ref > 0, "refcount underflow: Free of block " + std::to_string(b) +
                                  " whose ref count is 0");
    if (--blk.ref == 0) {
      QueuePushBack(b);
      ++stats_.frees;
    }
  }
}

bool BlockPool::ResetPrefixCache() {
  if (num_blocks_used() != 0) return false;
  for (Block& blk : blocks_) {
    blk.has_hash = false;
    blk.hash = 0;
  }
  prefix_map_.Clear();
  if (events_ != nullptr) events_->Emit(AllBlocksCleared{});
  return true;
}

std::optional<BlockId> BlockPool::Lookup(BlockHash hash) const {
  if (!options_.enable_prefix_caching) return std::nullopt;
  return prefix_map_.Find(hash);
}

std::optional<BlockHash> BlockPool::HashOf(BlockId block) const {
  if (!ValidId(block) || !blocks_[block].has_hash) return std::nullopt;
  return blocks_[block].hash;
}

uint32_t BlockPool::RefCount(BlockId block) const {
  return ValidId(block) ? blocks_[block].ref : 0;
}

std::vector<BlockId> BlockPool::FreeQueueSnapshot() const {
  std::vector<BlockId> out;
  out.reserve(num_free_);
  for (BlockId b = blocks_[kNullBlockId].next; b != kNullBlockId && out.size() < blocks_.size();
       b = blocks_[b].next) {
    out.push_back(b);
  }
  return out;
}

Status BlockPool::CheckInvariants() const {
  auto fail = [](std::string msg) { return InternalError("BlockPool invariant: " + msg); };
  const Block& null_block = blocks_[kNullBlockId];
  if (null_block.ref != 0 || null_block.has_hash) return fail("null block is in use or cached");
  // Walk the free queue, checking links both ways.
  size_t walked = 0;
  BlockId prev = kNullBlockId;
  for (BlockId b = null_block.next; b != kNullBlockId; b = blocks_[b].next) {
    if (b >= blocks_.size()) return fail("free queue link out of range: " + std::to_string(b));
    if (++walked > num_blocks_total()) return fail("free queue has a cycle");
    if (blocks_[b].prev != prev) return fail("broken prev link at block " + std::to_string(b));
    if (blocks_[b].ref != 0) return fail("block " + std::to_string(b) + " is queued with ref > 0");
    prev = b;
  }
  if (null_block.prev != prev) return fail("sentinel prev is not the queue tail");
  if (walked != num_free_) {
    return fail("free queue length " + std::to_string(walked) + " != num_free " +
                std::to_string(num_free_));
  }
  size_t zero_ref = 0;
  size_t hashed = 0;
  for (BlockId b = 1; b < blocks_.size(); ++b) {
    const Block& blk = blocks_[b];
    if (blk.ref == 0) ++zero_ref;
    if (blk.has_hash) {
      ++hashed;
      const std::optional<BlockId> mapped = prefix_map_.Find(blk.hash);
      if (mapped != b) {
        return fail("block " + std::to_string(b) + " holds hash " + std::to_string(blk.hash) +
                    " but the prefix map does not point at it");
      }
    }
  }
  if (zero_ref != num_free_) return fail("a block with ref 0 is not in the free queue");
  if (hashed != prefix_map_.size()) {
    return fail("prefix map has " + std::to_string(prefix_map_.size()) + " entries but " +
                std::to_string(hashed) + " blocks hold a hash");
  }
  return Status::Ok();
}

}  // namespace kvmesh::kv
