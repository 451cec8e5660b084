#include "kv/disk_tier.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "common/log.h"

namespace kvmesh::kv {
namespace {

constexpr std::string_view kSuffix = ".kvb";
constexpr std::string_view kTmpSuffix = ".kvb.tmp";
constexpr size_t kChecksumOffset = 40;
constexpr uint32_t kFlagHasParent = 1;

void PutLe(std::byte* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
uint64_t GetLe(const std::byte* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint64_t Checksum(std::span<const std::byte> header, std::span<const std::byte> payload) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, header.data(), kChecksumOffset);
  XXH3_64bits_update(&state, payload.data(), payload.size());
  return XXH3_64bits_digest(&state);
}

struct Header {
  uint32_t magic = 0;
  uint16_t version = 0;
  uint16_t header_bytes = 0;
  uint32_t flags = 0;
  uint32_t hits = 0;
  BlockHash hash = 0;
  BlockHash parent = 0;
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;
};

Header DecodeHeader(const std::byte* p) {
  Header h;
  h.magic = static_cast<uint32_t>(GetLe(p, 4));
  h.version = static_cast<uint16_t>(GetLe(p + 4, 2));
  h.header_bytes = static_cast<uint16_t>(GetLe(p + 6, 2));
  h.flags = static_cast<uint32_t>(GetLe(p + 8, 4));
  h.hits = static_cast<uint32_t>(GetLe(p + 12, 4));
  h.hash = GetLe(p + 16, 8);
  h.parent = GetLe(p + 24, 8);
  h.payload_bytes = GetLe(p + 32, 8);
  h.checksum = GetLe(p + 40, 8);
  return h;
}

// Empty string if the header is acceptable for (`hash`, `block_bytes`), else what is wrong.
std::string HeaderProblem(const Header& h, BlockHash hash, size_t block_bytes) {
  if (h.magic != kDiskBlockMagic) return "bad magic";
  if (h.version != kDiskBlockVersion) return "unsupported version " + std::to_string(h.version);
  if (h.header_bytes != kDiskBlockHeaderBytes) {
    return "bad header size " + std::to_string(h.header_bytes);
  }
  if (h.hash != hash) return "header hash does not match file name";
  if (h.payload_bytes != block_bytes) {
    return "payload size " + std::to_string(h.payload_bytes) + " != block_bytes " +
           std::to_string(block_bytes);
  }
  return {};
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::optional<BlockHash> ParseDiskBlockFileName(std::string_view name) {
  if (name.size() != 16 + kSuffix.size() || !EndsWith(name, kSuffix)) return std::nullopt;
  BlockHash h = 0;
  for (size_t i = 0; i < 16; ++i) {
    char c = name[i];
    uint64_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    h = (h << 4) | d;
  }
  return h;
}

Status DiskTierOptions::Validate() const {
  if (dir.empty()) return InvalidArgumentError("disk tier dir must not be empty");
  if (capacity_blocks == 0) return InvalidArgumentError("disk tier capacity_blocks must be > 0");
  if (capacity_blocks >= std::numeric_limits<uint32_t>::max() - 2) {
    return InvalidArgumentError("disk tier capacity_blocks too large: " +
                                std::to_string(capacity_blocks));
  }
  if (block_bytes == 0) return InvalidArgumentError("disk tier block_bytes must be > 0");
  if (block_size == 0) return InvalidArgumentError("disk tier block_size must be > 0");
  return Status::Ok();
}

StatusOr<std::unique_ptr<DiskTier>> DiskTier::Create(const DiskTierOptions& options,
                                                     KvEventSink* events, DiskIo* io) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<DiskTier> tier(
      new DiskTier(options, events, io != nullptr ? io : &DefaultDiskIo()));
  KVMESH_RETURN_IF_ERROR(tier->Start());
  return tier;
}

DiskTier::DiskTier(const DiskTierOptions& options, KvEventSink* events, DiskIo* io)
    : options_(options),
      events_(events),
      io_(io),
      entries_(options.capacity_blocks + 1),
      map_(options.capacity_blocks + 1),
      lru_(options.capacity_blocks + 1),
      read_buf_(kDiskBlockHeaderBytes + options.block_bytes + 1) {
  free_slots_.reserve(options.capacity_blocks + 1);
  for (uint32_t s = options.capacity_blocks + 1; s > 0; --s) free_slots_.push_back(s - 1);
}

std::string DiskTier::PathFor(BlockHash hash) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%016llx", static_cast<unsigned long long>(hash));
  return options_.dir + "/" + name + std::string(kSuffix);
}

Status DiskTier::Start() {
  KVMESH_RETURN_IF_ERROR(io_->CreateDirs(options_.dir));
  KVMESH_ASSIGN_OR_RETURN(std::vector<DiskFileInfo> files, io_->ListDir(options_.dir));
  if (options_.restart == DiskRestartPolicy::kWipe) {
    uint64_t removed = 0;
    for (const auto& f : files) {
      if (ParseDiskBlockFileName(f.name) || EndsWith(f.name, kTmpSuffix)) {
        KVMESH_RETURN_IF_ERROR(io_->RemoveFile(options_.dir + "/" + f.name));
        ++removed;
      }
    }
    KVMESH_LOG_INFO("kv", "disk tier wiped", {"dir", options_.dir}, {"removed", removed});
    return Status::Ok();
  }
  return Reload(std::move(files));
}

Status DiskTier::Reload(std::vector<DiskFileInfo> files) {
  const uint64_t want_size = kDiskBlockHeaderBytes + options_.block_bytes;
  struct Candidate {
    BlockHash hash;
    uint32_t hits;
    int64_t mtime_ns;
    std::string name;
  };
  std::vector<Candidate> valid;
  std::array<std::byte, kDiskBlockHeaderBytes> hdr{};
  for (const auto& f : files) {
    std::string path = options_.dir + "/" + f.name;
    if (EndsWith(f.name, kTmpSuffix)) {  // an interrupted write
      (void)io_->RemoveFile(path);
      ++stats_.reload_rejected;
      continue;
    }
    std::optional<BlockHash> hash = ParseDiskBlockFileName(f.name);
    if (!hash) continue;  // not ours: leave it alone
    std::string problem;
    if (f.size != want_size) {
      problem = "file size " + std::to_string(f.size) + " != " + std::to_string(want_size);
    } else {
      StatusOr<size_t> got = io_->ReadFile(path, hdr);
      if (!got.ok()) {
        problem = got.status().message();
      } else if (*got != hdr.size()) {
        problem = "short header";
      } else {
        problem = HeaderProblem(DecodeHeader(hdr.data()), *hash, options_.block_bytes);
      }
    }
    if (!problem.empty()) {
      KVMESH_LOG_WARN("kv", "disk tier: invalid block file removed at start-up", {"path", path},
                      {"problem", problem});
      (void)io_->RemoveFile(path);
      ++stats_.reload_rejected;
      continue;
    }
    valid.push_back(Candidate{*hash, DecodeHeader(hdr.data()).hits, f.mtime_ns, f.name});
  }
  // Oldest first, so the LRU order follows modification time; the newest `capacity` survive.
  std::sort(valid.begin(), valid.end(), [](const Candidate& a, const Candidate& b) {
    return a.mtime_ns != b.mtime_ns ? a.mtime_ns < b.mtime_ns : a.name < b.name;
  });
  size_t skip = valid.size() > options_.capacity_blocks ? valid.size() - options_.capacity_blocks
                                                        : 0;
  for (size_t i = 0; i < valid.size(); ++i) {
    if (i < skip) {
      (void)io_->RemoveFile(options_.dir + "/" + valid[i].name);
      ++stats_.reload_rejected;
      continue;
    }
    Index(valid[i].hash, valid[i].hits);
    ++stats_.reloaded;
    if (events_ != nullptr) {
      BlockStored ev;
      ev.hashes = {valid[i].hash};
      ev.block_size = options_.block_size;
      ev.medium = Medium::kG3;
      events_->Emit(std::move(ev));
    }
  }
  KVMESH_LOG_INFO("kv", "disk tier reloaded", {"dir", options_.dir},
                  {"blocks", stats_.reloaded}, {"removed", stats_.reload_rejected});
  return Status::Ok();
}

void DiskTier::Index(BlockHash hash, uint32_t hits) {
  uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  entries_[slot] = Entry{hash, hits};
  map_.Insert(hash, slot + 1);
  lru_.PushBack(slot);
  ++size_;
}

Status DiskTier::Store(BlockHash hash, std::optional<BlockHash> parent, uint32_t hits,
                       std::span<const std::byte> payload) {
  if (payload.size() != options_.block_bytes) {
    return InvalidArgumentError("disk tier store: payload " + std::to_string(payload.size()) +
                                " bytes, block_bytes is " + std::to_string(options_.block_bytes));
  }
  if (auto found = map_.Find(hash)) {
    Entry& e = entries_[*found - 1];
    e.hits = std::max(e.hits, hits);
    lru_.Touch(*found - 1);
    ++stats_.store_refreshes;
    return Status::Ok();
  }
  std::array<std::byte, kDiskBlockHeaderBytes> hdr{};
  PutLe(hdr.data(), kDiskBlockMagic, 4);
  PutLe(hdr.data() + 4, kDiskBlockVersion, 2);
  PutLe(hdr.data() + 6, kDiskBlockHeaderBytes, 2);
  PutLe(hdr.data() + 8, parent ? kFlagHasParent : 0, 4);
  PutLe(hdr.data() + 12, hits, 4);
  PutLe(hdr.data() + 16, hash, 8);
  PutLe(hdr.data() + 24, parent.value_or(0), 8);
  PutLe(hdr.data() + 32, payload.size(), 8);
  PutLe(hdr.data() + kChecksumOffset, Checksum(hdr, payload), 8);

  const std::string path = PathFor(hash);
  const std::string tmp = path + ".tmp";
  const std::array<std::span<const std::byte>, 2> parts = {std::span<const std::byte>(hdr),
                                                           payload};
  Status st = io_->WriteFile(tmp, parts, options_.fsync);
  if (st.ok()) st = io_->RenameFile(tmp, path);
  if (st.ok() && options_.fsync) st = io_->SyncDir(options_.dir);
  if (!st.ok()) {
    (void)io_->RemoveFile(tmp);
    ++stats_.write_errors;
    if (!write_error_logged_) {
      write_error_logged_ = true;
      KVMESH_LOG_WARN("kv", "disk tier write failed; block not stored (logged once)",
                      {"error", st.ToString()});
    }
    return st.WithContext("disk tier store");
  }
  Index(hash, hits);
  ++stats_.stores;
  stats_.bytes_written += hdr.size() + payload.size();
  if (events_ != nullptr) {
    BlockStored ev;
    ev.parent_hash = parent;
    ev.hashes = {hash};
    ev.block_size = options_.block_size;
    ev.medium = Medium::kG3;
    events_->Emit(std::move(ev));
  }
  while (size_ > options_.capacity_blocks) {
    std::optional<uint32_t> victim = lru_.Front();
    if (!victim) break;
    ++stats_.evictions;
    Drop(*victim, /*remove_file=*/true);
  }
  return Status::Ok();
}

StatusOr<uint32_t> DiskTier::Load(BlockHash hash, std::span<std::byte> dst) {
  auto found = map_.Find(hash);
  if (!found) {
    ++stats_.load_misses;
    return NotFoundError("block not in disk tier");
  }
  const uint32_t slot = *found - 1;
  if (dst.size() != options_.block_bytes) {
    return InvalidArgumentError("disk tier load: dst " + std::to_string(dst.size()) +
                                " bytes, block_bytes is " + std::to_string(options_.block_bytes));
  }
  const std::string path = PathFor(hash);
  StatusOr<size_t> got = io_->ReadFile(path, read_buf_);  // one extra byte detects a long file
  std::string problem;
  if (!got.ok()) {
    problem = got.status().message();
  } else if (*got != kDiskBlockHeaderBytes + options_.block_bytes) {
    problem = "file size " + std::to_string(*got) + " != " +
              std::to_string(kDiskBlockHeaderBytes + options_.block_bytes);
  } else {
    Header h = DecodeHeader(read_buf_.data());
    problem = HeaderProblem(h, hash, options_.block_bytes);
    if (problem.empty()) {
      auto payload = std::span<const std::byte>(read_buf_).subspan(kDiskBlockHeaderBytes,
                                                                   options_.block_bytes);
      if (Checksum(std::span<const std::byte>(read_buf_).first(kDiskBlockHeaderBytes),
                   payload) != h.checksum) {
        problem = "checksum mismatch";
      }
    }
  }
  if (!problem.empty()) {
    DropCorrupt(slot, problem);
    return DataLossError("disk tier block " + path + " dropped: " + problem);
  }
  std::memcpy(dst.data(), read_buf_.data() + kDiskBlockHeaderBytes, options_.block_bytes);
  Entry& e = entries_[slot];
  if (e.hits != std::numeric_limits<uint32_t>::max()) ++e.hits;
  lru_.Touch(slot);
  ++stats_.loads;
  stats_.bytes_read += *got;
  return e.hits;
}

bool DiskTier::Touch(BlockHash hash) {
  auto found = map_.Find(hash);
  if (!found) return false;
  lru_.Touch(*found - 1);
  return true;
}

bool DiskTier::Remove(BlockHash hash) {
  auto found = map_.Find(hash);
  if (!found) return false;
  Drop(*found - 1, /*remove_file=*/true);
  return true;
}

std::optional<uint32_t> DiskTier::HitCount(BlockHash hash) const {
  auto found = map_.Find(hash);
  if (!found) return std::nullopt;
  return entries_[*found - 1].hits;
}

std::vector<BlockHash> DiskTier::LruSnapshot() const {
  std::vector<BlockHash> out;
  for (uint32_t s : lru_.Snapshot()) out.push_back(entries_[s].hash);
  return out;
}

void DiskTier::Drop(uint32_t slot, bool remove_file) {
  BlockHash hash = entries_[slot].hash;
  if (remove_file) {
    Status st = io_->RemoveFile(PathFor(hash));
    if (!st.ok()) KVMESH_LOG_WARN("kv", "disk tier: remove failed", {"error", st.ToString()});
  }
  map_.Erase(hash);
  lru_.Remove(slot);
  entries_[slot] = Entry{};
  free_slots_.push_back(slot);
  --size_;
  if (events_ != nullptr) events_->Emit(BlockRemoved{{hash}, Medium::kG3});
}

void DiskTier::DropCorrupt(uint32_t slot, const std::string& why) {
  ++stats_.corrupt_dropped;
  KVMESH_LOG_WARN("kv", "disk tier: bad block dropped", {"path", PathFor(entries_[slot].hash)},
                  {"problem", why});
  Drop(slot, /*remove_file=*/true);
}

}  // namespace kvmesh::kv
