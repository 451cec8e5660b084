// Invariant checks (Envoy's three kinds):
//  - KVMESH_DCHECK(cond): debug-only assert.
//  - KVMESH_CHECK(cond, msg): fatal; for broken invariants (refcount underflow, a hash set twice).
//    Logs file:line and the message, then aborts.
//  - KVMESH_BUG(component, msg): for a bug the process can survive (a "can't happen" branch with a
//    safe fallback). Logs at error level with file:line, increments
//    kvmesh_internal_bugs_total{component="<component>"} in DefaultMetricsRegistry(), and returns;
//    the caller continues with its fallback. Thread-safe; takes a mutex, so not for hot loops.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

#include "common/log.h"

namespace kvmesh::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* cond,
                                     const std::string& msg) {
  Log(LogLevel::kFatal, "check", std::string("CHECK failed: ") + cond,
      {{"file", file}, {"line", line}, {"msg", msg}});
  std::abort();
}

// Defined in common/metrics.cc (it needs the registry).
void ReportBug(std::string_view component, std::string_view message, const char* file, int line);
}  // namespace kvmesh::internal

#define KVMESH_CHECK(cond, msg)                                                    \
  do {                                                                             \
    if (!(cond)) [[unlikely]] {                                                    \
      ::kvmesh::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg));           \
    }                                                                              \
  } while (0)

#define KVMESH_BUG(component, msg) \
  ::kvmesh::internal::ReportBug((component), (msg), __FILE__, __LINE__)

#ifdef NDEBUG
#define KVMESH_DCHECK(cond) \
  do {                      \
  } while (false && (cond))
#else
#define KVMESH_DCHECK(cond) KVMESH_CHECK(cond, "debug check")
#endif
