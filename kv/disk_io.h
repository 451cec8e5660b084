// DiskIo: the few file operations the disk tier (G3) needs, behind an interface so that tests
// can inject failures (ENOSPC, EIO, short reads) without a real full disk.
//
// PosixDiskIo is the real implementation (open/write/fsync/rename/unlink/readdir). Every error
// names the operation, the path and strerror(errno); ENOSPC and EDQUOT map to
// kResourceExhausted, ENOENT to kNotFound, everything else to kInternal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvmesh::kv {

struct DiskFileInfo {
  std::string name;   // file name inside the directory (no path)
  uint64_t size = 0;  // bytes
  int64_t mtime_ns = 0;
};

class DiskIo {
 public:
  virtual ~DiskIo() = default;
  // Creates `path` (truncating it), writes `parts` in order, fsyncs it when `sync`, closes it.
  // On error the file may exist partially written; the caller removes it.
  virtual Status WriteFile(const std::string& path,
                           std::span<const std::span<const std::byte>> parts, bool sync) = 0;
  // Reads up to dst.size() bytes from the start of `path`; returns the number read (less than
  // dst.size() only at end of file). NotFound if the file does not exist.
  virtual StatusOr<size_t> ReadFile(const std::string& path, std::span<std::byte> dst) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  // OK also when the file did not exist.
  virtual Status RemoveFile(const std::string& path) = 0;
  // Regular files in `dir` (not recursive, no "." / "..").
  virtual StatusOr<std::vector<DiskFileInfo>> ListDir(const std::string& dir) = 0;
  // Creates `dir` and its parents if missing.
  virtual Status CreateDirs(const std::string& dir) = 0;
  // fsyncs the directory itself so a rename in it is durable.
  virtual Status SyncDir(const std::string& dir) = 0;
};

class PosixDiskIo final : public DiskIo {
 public:
  Status WriteFile(const std::string& path, std::span<const std::span<const std::byte>> parts,
                   bool sync) override;
  StatusOr<size_t> ReadFile(const std::string& path, std::span<std::byte> dst) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status RemoveFile(const std::string& path) override;
  StatusOr<std::vector<DiskFileInfo>> ListDir(const std::string& dir) override;
  Status CreateDirs(const std::string& dir) override;
  Status SyncDir(const std::string& dir) override;
};

// A process-wide PosixDiskIo (stateless).
DiskIo& DefaultDiskIo();

}  // namespace kvmesh::kv
