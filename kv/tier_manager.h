// TierManager: moves KV blocks between G1 (the engine's block pool), G2 (HostTier) and G3
// (DiskTier).
//
//  - Offload: it is the pool's eviction handler. When G1 reuses a free cached block, the block's
//    bytes are copied into G2 (through the BlockCopier) before the pool drops its hash.
//  - Demotion: a block evicted from G2 goes to G3 only if it was hit at least `g3_min_hits` times
//    (default 2); otherwise it is dropped.
//  - Lookup: a request's sequence hashes are matched in G1 first (the pool's cached prefix), then
//    the match continues block by block in G2, else G3, and stops at the first miss. While the
//    pool allocates (which may offload more blocks into G2), the G2 blocks about to be onboarded
//    are pinned and the G3 ones made most recently used.
//  - Onboard: AllocateForSequence() allocates the whole sequence in G1 through the pool, copies
//    the G2/G3 hits into the fresh blocks (a G3 block is read and verified into a host staging
//    buffer first) and commits them under their hashes. Lower tiers keep their copy (inclusive).
//    A block that fails to onboard (dropped from G2 meanwhile, failed disk verification) ends
//    the onboarded prefix: it and the rest are returned as fresh blocks to recompute.
//  - Hit counts follow a block across tiers: G1 prefix hits are counted per G1 block, carried
//    into G2 on offload, incremented on each G2/G3 load and carried back into G1 on onboard.
//
// Thread safety: none. It runs on the engine thread that owns the pool; all callbacks (pool
// eviction, tier eviction, events) are synchronous on that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/block_copier.h"
#include "kv/block_hash.h"
#include "kv/block_pool.h"
#include "kv/disk_io.h"
#include "kv/disk_tier.h"
#include "kv/host_tier.h"
#include "kv/kv_event.h"

namespace kvmesh::kv {

struct TierManagerOptions {
  uint32_t g2_blocks = 0;   // host tier capacity in blocks; 0 disables G2 (and so G3)
  uint32_t g3_blocks = 0;   // disk tier capacity in blocks; 0 disables G3
  std::string g3_dir;       // disk tier directory; required when g3_blocks > 0
  uint32_t g3_min_hits = 2;  // G2 -> G3 only for blocks hit at least this often
  bool g3_fsync = false;
  DiskRestartPolicy g3_restart = DiskRestartPolicy::kReload;

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

struct TierManagerStats {
  uint64_t allocations = 0;       // successful AllocateForSequence calls
  uint64_t g1_hit_blocks = 0;     // blocks served from the G1 prefix cache
  uint64_t g2_hit_blocks = 0;     // blocks onboarded from G2
  uint64_t g3_hit_blocks = 0;     // blocks onboarded from G3 (verified)
  uint64_t fresh_blocks = 0;      // blocks handed out to compute (incl. failed onboards)
  uint64_t onboard_failures = 0;  // lookup hits that could not be onboarded
  uint64_t onboarded_bytes = 0;
  uint64_t offloaded_blocks = 0;  // G1 -> G2 copies
  uint64_t offloaded_bytes = 0;
  uint64_t offload_errors = 0;
  uint64_t g2_to_g3_blocks = 0;   // G2 evictions kept in G3 (written, or already there)
  uint64_t g2_dropped_blocks = 0;  // G2 evictions below the hit threshold (or G3 absent/failed)
};

// How far a sequence's hashes are available: the first `g1` in G1, then `g2 + g3` more in the
// lower tiers (in whatever mix of G2 and G3).
struct TierPrefix {
  size_t g1 = 0;
  size_t g2 = 0;
  size_t g3 = 0;
  size_t total() const { return g1 + g2 + g3; }
};

struct TieredAllocation {
  // The sequence's blocks in order: [0, num_g1) G1 prefix hits, then num_g2 + num_g3 onboarded
  // blocks (committed), then fresh blocks (no hash) the caller computes and commits.
  std::vector<BlockId> blocks;
  size_t num_g1 = 0;
  size_t num_g2 = 0;
  size_t num_g3 = 0;
  size_t num_cached() const { return num_g1 + num_g2 + num_g3; }
};

class TierManager final : public BlockPoolEvictionHandler {
 public:
  // Registers itself as `pool`'s eviction handler. InvalidArgument for bad options; the disk
  // tier's error if its directory cannot be prepared. `pool`, `memory`, `copier`, `events` (may
  // be null) and `io` (null: DefaultDiskIo()) must outlive the manager.
  static StatusOr<std::unique_ptr<TierManager>> Create(const TierManagerOptions& options,
                                                       BlockPool* pool, BlockMemory* memory,
                                                       BlockCopier* copier,
                                                       KvEventSink* events = nullptr,
                                                       DiskIo* io = nullptr);
  ~TierManager() override;  // unregisters from the pool
  TierManager(const TierManager&) = delete;
  TierManager& operator=(const TierManager&) = delete;

  // Where the leading `hashes` are; no side effects, no stats.
  TierPrefix FindPrefix(std::span<const BlockHash> hashes) const;

  // Allocates `num_blocks` G1 blocks for a sequence whose full blocks hash to `hashes`
  // (num_blocks may exceed hashes.size() for a partial tail / decode room): pins the G1 prefix,
  // onboards the G2/G3 continuation and leaves the rest fresh. `tokens` are the sequence's
  // tokens (block_size per hashed block; used for the BlockStored events of onboarded blocks;
  // may be empty). std::nullopt when the pool has no room (nothing changed).
  std::optional<TieredAllocation> AllocateForSequence(std::span<const BlockHash> hashes,
                                                      std::span<const uint32_t> tokens,
                                                      size_t num_blocks);

  // Commits a computed block through the pool and remembers its parent for the G2/G3 events.
  // Returns the pool's status.
  Status CommitBlock(BlockId block, BlockHash hash, std::optional<BlockHash> parent,
                     std::span<const uint32_t> token_ids);

  // BlockPoolEvictionHandler: G1 -> G2 offload.
  void OnEvict(BlockId block, BlockHash hash) override;

  HostTier* host_tier() { return host_.get(); }  // null when G2 is disabled
  DiskTier* disk_tier() { return disk_.get(); }  // null when G3 is disabled
  const TierManagerOptions& options() const { return options_; }
  const TierManagerStats& stats() const { return stats_; }

 private:
  TierManager(const TierManagerOptions& options, BlockPool* pool, BlockMemory* memory,
              BlockCopier* copier);
  void OnHostEvict(const EvictedBlock& block);
  // Copies hashes[j] from G2 or G3 into `block`; the medium it came from, or nullopt.
  std::optional<Medium> Onboard(BlockHash hash, BlockId block);

  const TierManagerOptions options_;
  BlockPool* const pool_;
  BlockMemory* const memory_;
  BlockCopier* const copier_;
  std::unique_ptr<HostTier> host_;
  std::unique_ptr<DiskTier> disk_;
  // Per G1 block (indexed by BlockId): hits while cached, parent hash if known.
  std::vector<uint32_t> g1_hits_;
  std::vector<BlockHash> g1_parent_;
  std::vector<uint8_t> g1_has_parent_;
  uint32_t last_onboard_hits_ = 0;
  std::vector<std::byte> staging_;  // host buffer for G3 reads, block_bytes, allocated once
  TierManagerStats stats_;
};

}  // namespace kvmesh::kv
