#include "kv/host_tier.h"

#include <limits>
#include <string>
#include <utility>

namespace kvmesh::kv {

Status HostTierOptions::Validate() const {
  if (capacity_blocks == 0) return InvalidArgumentError("host tier capacity_blocks must be > 0");
  if (capacity_blocks >= std::numeric_limits<uint32_t>::max() - 1) {
    return InvalidArgumentError("host tier capacity_blocks too large: " +
                                std::to_string(capacity_blocks));
  }
  if (block_bytes == 0) return InvalidArgumentError("host tier block_bytes must be > 0");
  if (block_bytes > std::numeric_limits<size_t>::max() / capacity_blocks) {
    return InvalidArgumentError("host tier capacity_blocks * block_bytes overflows: " +
                                std::to_string(capacity_blocks) + " * " +
                                std::to_string(block_bytes));
  }
  if (block_size == 0) return InvalidArgumentError("host tier block_size must be > 0");
  return Status::Ok();
}

StatusOr<std::unique_ptr<HostTier>> HostTier::Create(const HostTierOptions& options,
                                                     KvEventSink* events) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<HostTier>(new HostTier(options, events));
}

HostTier::HostTier(const HostTierOptions& options, KvEventSink* events)
    : options_(options),
      events_(events),
      arena_(static_cast<size_t>(options.capacity_blocks) * options.block_bytes),
      slots_(options.capacity_blocks),
      map_(options.capacity_blocks),
      lru_(options.capacity_blocks) {
  free_slots_.reserve(options.capacity_blocks);
  for (uint32_t s = options.capacity_blocks; s > 0; --s) free_slots_.push_back(s - 1);
}

Status HostTier::Store(BlockHash hash, std::optional<BlockHash> parent, uint32_t hits,
                       const std::byte* src, BlockCopier& copier) {
  if (auto found = map_.Find(hash)) {
    uint32_t slot = *found - 1;
    if (hits > slots_[slot].hits) slots_[slot].hits = hits;
    lru_.Touch(slot);
    ++stats_.store_refreshes;
    return Status::Ok();
  }
  if (free_slots_.empty() && !EvictOne()) {
    ++stats_.store_errors;
    return ResourceExhaustedError("host tier store: all " +
                                  std::to_string(options_.capacity_blocks) + " blocks pinned");
  }
  uint32_t slot = free_slots_.back();
  Status st = copier.CopyToHost(SlotBytes(slot), src, options_.block_bytes);
  if (st.ok()) st = copier.Synchronize();
  if (!st.ok()) {
    ++stats_.store_errors;
    return st.WithContext("host tier store");
  }
  free_slots_.pop_back();
  slots_[slot] = Slot{hash, parent.value_or(0), parent.has_value(), hits, 0};
  map_.Insert(hash, slot + 1);
  lru_.PushBack(slot);
  ++size_;
  ++stats_.stores;
  stats_.bytes_in += options_.block_bytes;
  if (events_ != nullptr) {
    BlockStored ev;
    ev.parent_hash = parent;
    ev.hashes = {hash};
    ev.block_size = options_.block_size;
    ev.medium = Medium::kG2;
    events_->Emit(std::move(ev));
  }
  return Status::Ok();
}

StatusOr<uint32_t> HostTier::Load(BlockHash hash, std::byte* dst, BlockCopier& copier) {
  auto found = map_.Find(hash);
  if (!found) {
    ++stats_.load_misses;
    return NotFoundError("block not in host tier");
  }
  uint32_t slot = *found - 1;
  Status st = copier.CopyFromHost(dst, SlotBytes(slot), options_.block_bytes);
  if (st.ok()) st = copier.Synchronize();
  if (!st.ok()) return st.WithContext("host tier load");
  Slot& s = slots_[slot];
  if (s.hits != std::numeric_limits<uint32_t>::max()) ++s.hits;
  lru_.Touch(slot);
  ++stats_.loads;
  stats_.bytes_out += options_.block_bytes;
  return s.hits;
}

bool HostTier::Remove(BlockHash hash) {
  auto found = map_.Find(hash);
  if (!found) return false;
  Release(*found - 1);
  return true;
}

std::optional<uint32_t> HostTier::HitCount(BlockHash hash) const {
  auto found = map_.Find(hash);
  if (!found) return std::nullopt;
  return slots_[*found - 1].hits;
}

std::span<const std::byte> HostTier::Peek(BlockHash hash) const {
  auto found = map_.Find(hash);
  if (!found) return {};
  return std::span<const std::byte>(arena_).subspan(
      static_cast<size_t>(*found - 1) * options_.block_bytes, options_.block_bytes);
}

std::vector<BlockHash> HostTier::LruSnapshot() const {
  std::vector<BlockHash> out;
  for (uint32_t s : lru_.Snapshot()) out.push_back(slots_[s].hash);
  return out;
}

bool HostTier::Pin(BlockHash hash) {
  auto found = map_.Find(hash);
  if (!found) return false;
  ++slots_[*found - 1].pins;
  return true;
}

void HostTier::Unpin(BlockHash hash) {
  auto found = map_.Find(hash);
  if (found && slots_[*found - 1].pins > 0) --slots_[*found - 1].pins;
}

bool HostTier::EvictOne() {
  std::optional<uint32_t> victim = lru_.Front();
  while (victim && slots_[*victim].pins > 0) victim = lru_.Next(*victim);
  if (!victim) return false;
  const Slot& s = slots_[*victim];
  ++stats_.evictions;
  if (on_evict_) {
    EvictedBlock ev;
    ev.hash = s.hash;
    if (s.has_parent) ev.parent = s.parent;
    ev.hits = s.hits;
    ev.bytes = std::span<const std::byte>(SlotBytes(*victim), options_.block_bytes);
    on_evict_(ev);
  }
  Release(*victim);
  return true;
}

void HostTier::Release(uint32_t slot) {
  BlockHash hash = slots_[slot].hash;
  map_.Erase(hash);
  lru_.Remove(slot);
  slots_[slot] = Slot{};
  free_slots_.push_back(slot);
  --size_;
  if (events_ != nullptr) events_->Emit(BlockRemoved{{hash}, Medium::kG2});
}

}  // namespace kvmesh::kv
