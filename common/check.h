// Invariant checks (Envoy's three kinds):
//  - KVMESH_DCHECK(cond): debug-only assert.
//  - KVMESH_CHECK(cond, msg): fatal; for broken invariants (refcount underflow, a hash set twice).
//    Logs file:line and the message, then aborts.
//  - KVMESH_BUG(component, msg): log + count kvmesh_internal_bugs_total + keep serving
//    (see common/metrics.h once it exists).
#pragma once

#include <cstdlib>
#include <string>

#include "common/log.h"

namespace kvmesh::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* cond,
                                     const std::string& msg) {
  Log(LogLevel::kFatal, "check", std::string("CHECK failed: ") + cond,
      {{"file", file}, {"line", line}, {"msg", msg}});
  std::abort();
}
}  // namespace kvmesh::internal

#define KVMESH_CHECK(cond, msg)                                                    \
  do {                                                                             \
    if (!(cond)) [[unlikely]] {                                                    \
      ::kvmesh::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg));           \
    }                                                                              \
  } while (0)

#ifdef NDEBUG
#define KVMESH_DCHECK(cond) \
  do {                      \
  } while (false && (cond))
#else
#define KVMESH_DCHECK(cond) KVMESH_CHECK(cond, "debug check")
#endif
