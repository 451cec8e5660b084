#include "kv/tier_manager.h"

#include <limits>
#include <utility>

#include "common/log.h"

namespace kvmesh::kv {

Status TierManagerOptions::Validate() const {
  if (g3_blocks > 0 && g3_dir.empty()) {
    return InvalidArgumentError("g3_dir must be set when g3_blocks > 0 (g3_blocks=" +
                                std::to_string(g3_blocks) + ")");
  }
  if (g3_blocks > 0 && g2_blocks == 0) {
    return InvalidArgumentError("g3_blocks > 0 needs g2_blocks > 0 (G3 is fed by G2 evictions)");
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<TierManager>> TierManager::Create(const TierManagerOptions& options,
                                                           BlockPool* pool, BlockMemory* memory,
                                                           BlockCopier* copier,
                                                           KvEventSink* events, DiskIo* io) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  if (pool == nullptr || memory == nullptr || copier == nullptr) {
    return InvalidArgumentError("tier manager needs a pool, a block memory and a copier");
  }
  if (memory->block_bytes() == 0) return InvalidArgumentError("block memory block_bytes is 0");
  if (memory->BlockBytes(pool->num_blocks_total()).size() != memory->block_bytes()) {
    return InvalidArgumentError("block memory does not cover every pool block (pool has " +
                                std::to_string(pool->num_blocks_total()) + " blocks + null)");
  }
  std::unique_ptr<TierManager> m(new TierManager(options, pool, memory, copier));
  if (options.g2_blocks > 0) {
    HostTierOptions h;
    h.capacity_blocks = options.g2_blocks;
    h.block_bytes = memory->block_bytes();
    h.block_size = pool->block_size();
    KVMESH_ASSIGN_OR_RETURN(m->host_, HostTier::Create(h, events));
    m->host_->SetEvictionHandler([mp = m.get()](const EvictedBlock& b) { mp->OnHostEvict(b); });
  }
  if (options.g3_blocks > 0) {
    DiskTierOptions d;
    d.dir = options.g3_dir;
    d.capacity_blocks = options.g3_blocks;
    d.block_bytes = memory->block_bytes();
    d.block_size = pool->block_size();
    d.fsync = options.g3_fsync;
    d.restart = options.g3_restart;
    KVMESH_ASSIGN_OR_RETURN(m->disk_, DiskTier::Create(d, events, io));
  }
  pool->SetEvictionHandler(m.get());
  return m;
}

TierManager::TierManager(const TierManagerOptions& options, BlockPool* pool, BlockMemory* memory,
                         BlockCopier* copier)
    : options_(options),
      pool_(pool),
      memory_(memory),
      copier_(copier),
      g1_hits_(pool->num_blocks_total() + 1, 0),
      g1_parent_(pool->num_blocks_total() + 1, 0),
      g1_has_parent_(pool->num_blocks_total() + 1, 0),
      staging_(memory->block_bytes()) {}

TierManager::~TierManager() { pool_->SetEvictionHandler(nullptr); }

TierPrefix TierManager::FindPrefix(std::span<const BlockHash> hashes) const {
  TierPrefix p;
  p.g1 = pool_->PeekCachedPrefix(hashes);
  for (size_t j = p.g1; j < hashes.size(); ++j) {
    // A block cached in G1 behind a G1 miss is not onboarded again; the prefix stops there.
    if (pool_->Lookup(hashes[j])) break;
    if (host_ && host_->Contains(hashes[j])) {
      ++p.g2;
    } else if (disk_ && disk_->Contains(hashes[j])) {
      ++p.g3;
    } else {
      break;
    }
  }
  return p;
}

std::optional<TieredAllocation> TierManager::AllocateForSequence(
    std::span<const BlockHash> hashes, std::span<const uint32_t> tokens, size_t num_blocks) {
  TierPrefix p = FindPrefix(hashes);
  size_t g1 = std::min(p.g1, num_blocks);
  size_t lower = std::min(p.g2 + p.g3, num_blocks - g1);
  // The pool's allocation may evict G1 blocks into G2 (and G2 blocks into G3): pin the G2 blocks
  // about to be onboarded and make the G3 ones most recently used so they survive it.
  const std::span<const BlockHash> lower_hashes = hashes.subspan(g1, lower);
  for (BlockHash h : lower_hashes) {
    if (host_ && host_->Pin(h)) continue;
    if (disk_) disk_->Touch(h);
  }
  std::optional<BlockPool::Allocation> a =
      pool_->AllocateForSequence(hashes.first(g1), num_blocks - g1);
  if (!a) {
    if (host_) {
      for (BlockHash h : lower_hashes) host_->Unpin(h);
    }
    return std::nullopt;
  }
  // The pool computed the same G1 prefix (nothing ran in between); trust its answer.
  TieredAllocation out;
  out.num_g1 = a->cached.size();
  out.blocks = std::move(a->cached);
  out.blocks.insert(out.blocks.end(), a->fresh.begin(), a->fresh.end());
  ++stats_.allocations;
  stats_.g1_hit_blocks += out.num_g1;
  for (size_t j = 0; j < out.num_g1; ++j) {
    uint32_t& h = g1_hits_[out.blocks[j]];
    if (h != std::numeric_limits<uint32_t>::max()) ++h;
  }
  for (size_t j = out.num_g1; j < out.blocks.size(); ++j) {
    g1_hits_[out.blocks[j]] = 0;
    g1_has_parent_[out.blocks[j]] = 0;
  }
  const uint32_t bs = pool_->block_size();
  const size_t end = std::min(out.num_g1 + lower, hashes.size());
  for (size_t j = out.num_g1; j < end; ++j) {
    const BlockId block = out.blocks[j];
    std::optional<Medium> from = Onboard(hashes[j], block);
    if (!from) {
      ++stats_.onboard_failures;
      break;
    }
    std::optional<BlockHash> parent;
    if (j > 0) parent = hashes[j - 1];
    std::span<const uint32_t> toks;
    if (tokens.size() >= (j + 1) * bs) toks = tokens.subspan(j * bs, bs);
    Status st = CommitBlock(block, hashes[j], parent, toks);
    if (!st.ok()) {
      KVMESH_LOG_WARN("kv", "tier manager: commit of onboarded block failed",
                      {"error", st.ToString()});
      ++stats_.onboard_failures;
      break;
    }
    g1_hits_[block] = last_onboard_hits_;
    stats_.onboarded_bytes += memory_->block_bytes();
    if (*from == Medium::kG2) {
      ++out.num_g2;
      ++stats_.g2_hit_blocks;
    } else {
      ++out.num_g3;
      ++stats_.g3_hit_blocks;
    }
  }
  if (host_) {
    for (BlockHash h : lower_hashes) host_->Unpin(h);
  }
  stats_.fresh_blocks += out.blocks.size() - out.num_cached();
  return out;
}

std::optional<Medium> TierManager::Onboard(BlockHash hash, BlockId block) {
  std::span<std::byte> dst = memory_->BlockBytes(block);
  if (host_) {
    StatusOr<uint32_t> hits = host_->Load(hash, dst.data(), *copier_);
    if (hits.ok()) {
      last_onboard_hits_ = *hits;
      return Medium::kG2;
    }
    if (hits.status().code() != StatusCode::kNotFound) {
      KVMESH_LOG_WARN("kv", "tier manager: G2 onboard failed", {"error", hits.status().ToString()});
      return std::nullopt;
    }
  }
  if (disk_) {
    StatusOr<uint32_t> hits = disk_->Load(hash, staging_);
    if (!hits.ok()) return std::nullopt;  // not there, or dropped as corrupt (logged by the tier)
    Status st = copier_->CopyFromHost(dst.data(), staging_.data(), staging_.size());
    if (st.ok()) st = copier_->Synchronize();
    if (!st.ok()) {
      KVMESH_LOG_WARN("kv", "tier manager: G3 onboard copy failed", {"error", st.ToString()});
      return std::nullopt;
    }
    last_onboard_hits_ = *hits;
    return Medium::kG3;
  }
  return std::nullopt;
}

Status TierManager::CommitBlock(BlockId block, BlockHash hash, std::optional<BlockHash> parent,
                                std::span<const uint32_t> token_ids) {
  KVMESH_RETURN_IF_ERROR(pool_->CommitBlock(block, hash, parent, token_ids));
  if (block < g1_parent_.size()) {
    g1_parent_[block] = parent.value_or(0);
    g1_has_parent_[block] = parent.has_value() ? 1 : 0;
  }
  return Status::Ok();
}

void TierManager::OnEvict(BlockId block, BlockHash hash) {
  if (block >= g1_hits_.size()) return;
  const uint32_t hits = g1_hits_[block];
  std::optional<BlockHash> parent;
  if (g1_has_parent_[block]) parent = g1_parent_[block];
  g1_hits_[block] = 0;
  g1_has_parent_[block] = 0;
  if (!host_) return;
  const bool present = host_->Contains(hash);
  Status st = host_->Store(hash, parent, hits, memory_->BlockBytes(block).data(), *copier_);
  if (!st.ok()) {
    ++stats_.offload_errors;
    KVMESH_LOG_WARN("kv", "tier manager: G1 -> G2 offload failed", {"error", st.ToString()});
    return;
  }
  if (!present) {
    ++stats_.offloaded_blocks;
    stats_.offloaded_bytes += memory_->block_bytes();
  }
}

void TierManager::OnHostEvict(const EvictedBlock& b) {
  if (disk_ && b.hits >= options_.g3_min_hits) {
    if (disk_->Store(b.hash, b.parent, b.hits, b.bytes).ok()) {
      ++stats_.g2_to_g3_blocks;
      return;
    }
  }
  ++stats_.g2_dropped_blocks;
}

}  // namespace kvmesh::kv
