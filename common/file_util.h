// Small file-system helpers shared by the binaries (ready files, `kvmesh up`'s run files).
//
// WriteFileAtomic replaces a file so that a concurrent reader sees either the old contents or the
// whole new contents, never a part: it writes `<path>.tmp` in the same folder, fsyncs it, renames
// it over `path` (atomic within one file system) and fsyncs the folder. The temp file never
// outlives a call: it is removed when any step fails. Two writers of the same path must not run at
// once (they share the temp name).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kvmesh {

// Replaces `path` with `contents` atomically (see above). On failure `path` is unchanged and the
// status names the file and the system error: NotFound when the folder does not exist,
// PermissionDenied when it cannot be written (permissions, read-only file system), Unavailable for
// any other I/O error (disk full, ...).
Status WriteFileAtomic(const std::string& path, std::string_view contents);

}  // namespace kvmesh
