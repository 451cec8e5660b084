// DiskTier: G3, the local-disk tier below host memory (G2).
//
// One file per block in one directory, named "<16 hex digits of the hash>.kvb". A file is a
// 48-byte header followed by the block's bytes:
//
//   offset size field
//        0    4 magic "KVMB"
//        4    2 version (1)
//        6    2 header bytes (48)
//        8    4 flags (bit 0: parent hash present)
//       12    4 hit count when written
//       16    8 block (sequence) hash
//       24    8 parent hash (0 if none)
//       32    8 payload bytes (must equal the tier's block_bytes)
//       40    8 XXH3-64 (seed 0) of header bytes [0, 40) followed by the payload
//
// All integers little-endian. A block is written to "<name>.tmp", optionally fsynced, then
// renamed to its final name (and the directory fsynced), so a crash mid-write leaves at most a
// ".tmp" file, never a valid-looking block. Every read verifies file size, magic, version, sizes,
// the hash against the requested one and the checksum; a block that fails is dropped (file
// removed, `corrupt_dropped` counted, BlockRemoved{hash, DISK} emitted) and never served.
// A write error (disk full, EIO) means the block is simply not stored: counted in
// `write_errors`, logged once, never fatal.
//
// Restart: with DiskRestartPolicy::kReload (default) an existing directory is scanned, ".tmp"
// leftovers are removed, files whose name, size and header are valid are indexed (LRU order by
// modification time, oldest evicted first if there are more than capacity) and announced with
// BlockStored{DISK}; invalid files are removed. The checksum is verified at read time, not at
// scan time. kWipe removes every *.kvb and *.tmp file instead. Files not named like ours are left
// alone in both cases.
//
// Capacity is in blocks; the LRU block is evicted (file removed, BlockRemoved emitted) when a
// store would exceed it. Thread safety: none; one engine thread owns the tier.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"
#include "kv/block_pool.h"
#include "kv/disk_io.h"
#include "kv/kv_event.h"
#include "kv/tier_lru.h"

namespace kvmesh::kv {

enum class DiskRestartPolicy : uint8_t { kReload = 0, kWipe = 1 };

struct DiskTierOptions {
  std::string dir;               // created if missing; must not be empty
  uint32_t capacity_blocks = 0;  // must be > 0
  size_t block_bytes = 0;        // payload bytes per block; must be > 0
  uint32_t block_size = 16;      // tokens per block, named in emitted BlockStored events
  bool fsync = false;            // fsync each file and the directory after rename (durability)
  DiskRestartPolicy restart = DiskRestartPolicy::kReload;

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

struct DiskTierStats {
  uint64_t stores = 0;           // blocks written
  uint64_t store_refreshes = 0;  // Store() of a block already present (LRU refresh only)
  uint64_t write_errors = 0;     // writes that failed (block not stored)
  uint64_t bytes_written = 0;    // header + payload
  uint64_t evictions = 0;        // blocks evicted to make room
  uint64_t loads = 0;            // verified blocks served
  uint64_t load_misses = 0;      // Load() of a block not in the index
  uint64_t bytes_read = 0;
  uint64_t corrupt_dropped = 0;  // blocks dropped on read: bad size/header/hash/checksum, I/O error
  uint64_t reloaded = 0;         // valid blocks indexed at start-up
  uint64_t reload_rejected = 0;  // files removed at start-up (invalid, leftovers, over capacity)
};

inline constexpr uint32_t kDiskBlockMagic = 0x424D564B;  // "KVMB" little-endian
inline constexpr uint16_t kDiskBlockVersion = 1;
inline constexpr size_t kDiskBlockHeaderBytes = 48;

class DiskTier {
 public:
  // Creates the directory if needed and applies the restart policy. InvalidArgument for bad
  // options; the I/O error if the directory cannot be created or listed. `events` (may be null)
  // and `io` (null: DefaultDiskIo()) must outlive the tier.
  static StatusOr<std::unique_ptr<DiskTier>> Create(const DiskTierOptions& options,
                                                    KvEventSink* events = nullptr,
                                                    DiskIo* io = nullptr);
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  // Writes `payload` (block_bytes long) as a block file. Already present: refreshes its LRU
  // position and hit count, writes nothing. Full: evicts the LRU block after the write succeeds.
  // On a write error the block is not stored; the error is returned (callers may ignore it).
  // InvalidArgument if payload has the wrong size.
  Status Store(BlockHash hash, std::optional<BlockHash> parent, uint32_t hits,
               std::span<const std::byte> payload);

  // Reads and verifies the block into `dst` (block_bytes, host memory), counts a hit and
  // refreshes its LRU position; returns the hit count including this one. NotFound if the block
  // is not indexed; DataLoss if it failed verification or could not be read (it is dropped).
  // `dst` is unspecified after an error.
  StatusOr<uint32_t> Load(BlockHash hash, std::span<std::byte> dst);

  // Makes the block the most recently used (no I/O). False if absent.
  bool Touch(BlockHash hash);

  // Removes a block's file (emits BlockRemoved). False if absent.
  bool Remove(BlockHash hash);

  bool Contains(BlockHash hash) const { return map_.Find(hash).has_value(); }
  std::optional<uint32_t> HitCount(BlockHash hash) const;
  std::vector<BlockHash> LruSnapshot() const;  // least recently used first; O(n)
  std::string PathFor(BlockHash hash) const;   // the block's file path (whether or not stored)

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return options_.capacity_blocks; }
  const DiskTierOptions& options() const { return options_; }
  const DiskTierStats& stats() const { return stats_; }

 private:
  struct Entry {
    BlockHash hash = 0;
    uint32_t hits = 0;
  };
  DiskTier(const DiskTierOptions& options, KvEventSink* events, DiskIo* io);
  Status Start();
  Status Reload(std::vector<DiskFileInfo> files);
  void Index(BlockHash hash, uint32_t hits);
  void Drop(uint32_t slot, bool remove_file);  // unindex (+ unlink) + BlockRemoved
  void DropCorrupt(uint32_t slot, const std::string& why);

  const DiskTierOptions options_;
  KvEventSink* const events_;
  DiskIo* const io_;
  std::vector<Entry> entries_;  // indexed by slot; capacity + 1 (one spare while writing)
  std::vector<uint32_t> free_slots_;
  internal::BlockHashMap map_;  // hash -> slot + 1
  internal::SlotLru lru_;
  uint32_t size_ = 0;
  std::vector<std::byte> read_buf_;  // header + payload + 1, allocated once
  bool write_error_logged_ = false;
  DiskTierStats stats_;
};

// Parses a "<16 hex>.kvb" file name; nullopt for any other name.
std::optional<BlockHash> ParseDiskBlockFileName(std::string_view name);

}  // namespace kvmesh::kv
