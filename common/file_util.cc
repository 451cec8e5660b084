#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvmesh {
namespace {

Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return NotFoundError(std::move(msg));
    case EACCES:
    case EPERM:
    case EROFS:
      return PermissionDeniedError(std::move(msg));
    default:
      return UnavailableError(std::move(msg));
  }
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all of `data` to `fd`, retrying short writes and EINTR; 0 or an errno.
int WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace

Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  if (path.empty()) return InvalidArgumentError("WriteFileAtomic: empty path");
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return ErrnoStatus(errno, "cannot create " + tmp);
  int err = WriteAll(fd, contents);
  std::string step = "cannot write " + tmp;
  if (err == 0 && ::fsync(fd) != 0) {
    err = errno;
    step = "cannot fsync " + tmp;
  }
  if (::close(fd) != 0 && err == 0) {
    err = errno;
    step = "cannot close " + tmp;
  }
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    step = "cannot rename " + tmp + " to " + path;
  }
  if (err != 0) {
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, step);
  }
  // Make the rename itself durable. Best effort: some file systems refuse fsync on a folder, and
  // the new contents are in place either way.
  if (const int dir = ::open(ParentDir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return Status::Ok();
}

}  // namespace kvmesh
