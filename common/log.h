// Structured logging with levels. One line per record on stderr, either text
// (`2026-11-29T17:58:00.123Z INFO kv pool created blocks=1024 block_size=16`) or JSON lines
// (`{"ts":"...","level":"info","component":"kv","msg":"pool created","blocks":1024}`).
// Thread-safe; a record below the current level costs one relaxed atomic load.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvmesh {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kFatal = 4 };
enum class LogFormat : int { kText = 0, kJson = 1 };

// Parses "debug", "info", "warn"/"warning", "error", "fatal" (case-insensitive).
StatusOr<LogLevel> ParseLogLevel(std::string_view name);
std::string_view LogLevelName(LogLevel level);
StatusOr<LogFormat> ParseLogFormat(std::string_view name);  // "text" | "json"

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void SetLogFormat(LogFormat format);
// Applies KVMESH_LOG_LEVEL and KVMESH_LOG_FORMAT if set; returns an error naming a bad value.
Status ConfigureLoggingFromEnv();

namespace internal {
extern std::atomic<int> g_log_level;
}  // namespace internal

inline bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= internal::g_log_level.load(std::memory_order_relaxed);
}

// A key/value attached to a record. Strings are quoted/escaped as needed by the format.
struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(v), quoted(true) {}
  LogField(std::string_view k, const char* v) : key(k), value(v), quoted(true) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v), quoted(true) {}
  LogField(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  LogField(std::string_view k, int v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, long long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned long long v)
      : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, double v);
  std::string key;
  std::string value;
  bool quoted;
};

// Writes one record if `level` is enabled. Never throws.
void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields = {});

// Formats a record without writing it (used by tests and by Log()).
std::string FormatLogRecord(LogFormat format, LogLevel level, std::string_view component,
                            std::string_view message, std::initializer_list<LogField> fields);

}  // namespace kvmesh

#define KVMESH_LOG(level, component, message, ...)                                 \
  do {                                                                             \
    if (::kvmesh::LogEnabled(level)) {                                             \
      ::kvmesh::Log(level, component, message, {__VA_ARGS__});                     \
    }                                                                              \
  } while (0)
#define KVMESH_LOG_DEBUG(component, message, ...) \
  KVMESH_LOG(::kvmesh::LogLevel::kDebug, component, message, __VA_ARGS__)
#define KVMESH_LOG_INFO(component, message, ...) \
  KVMESH_LOG(::kvmesh::LogLevel::kInfo, component, message, __VA_ARGS__)
#define KVMESH_LOG_WARN(component, message, ...) \
  KVMESH_LOG(::kvmesh::LogLevel::kWarn, component, message, __VA_ARGS__)
#define KVMESH_LOG_ERROR(component, message, ...) \
  KVMESH_LOG(::kvmesh::LogLevel::kError, component, message, __VA_ARGS__)
