#include "kv/disk_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace kvmesh::kv {
namespace {

Status ErrnoStatus(int err, std::string_view op, const std::string& path) {
  std::string msg = std::string(op) + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return ResourceExhaustedError(std::move(msg));
  if (err == ENOENT) return NotFoundError(std::move(msg));
  return InternalError(std::move(msg));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace

Status PosixDiskIo::WriteFile(const std::string& path,
                              std::span<const std::span<const std::byte>> parts, bool sync) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus(errno, "open", path);
  for (auto part : parts) {
    const std::byte* p = part.data();
    size_t left = part.size();
    while (left > 0) {
      ssize_t n = ::write(fd.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "write", path);
      }
      if (n == 0) return ErrnoStatus(EIO, "write", path);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (sync && ::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync", path);
  if (::close(fd.release()) != 0) return ErrnoStatus(errno, "close", path);
  return Status::Ok();
}

StatusOr<size_t> PosixDiskIo::ReadFile(const std::string& path, std::span<std::byte> dst) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "open", path);
  size_t got = 0;
  while (got < dst.size()) {
    ssize_t n = ::read(fd.get(), dst.data() + got, dst.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

Status PosixDiskIo::RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, "rename", from);
  return Status::Ok();
}

Status PosixDiskIo::RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "unlink", path);
  return Status::Ok();
}

StatusOr<std::vector<DiskFileInfo>> PosixDiskIo::ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir", dir);
  std::vector<DiskFileInfo> out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;
    out.push_back(DiskFileInfo{std::move(name), static_cast<uint64_t>(st.st_size),
                               static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                                   st.st_mtim.tv_nsec});
  }
  ::closedir(d);
  return out;
}

Status PosixDiskIo::CreateDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InternalError("create_directories " + dir + ": " + ec.message());
  return Status::Ok();
}

Status PosixDiskIo::SyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "open", dir);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync", dir);
  return Status::Ok();
}

DiskIo& DefaultDiskIo() {
  static PosixDiskIo io;
  return io;
}

}  // namespace kvmesh::kv
