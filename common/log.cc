#include "common/log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace kvmesh {
namespace internal {
std::atomic<int> g_log_level{static_cast<int>(LogLevel::kInfo)};
}  // namespace internal

namespace {
std::atomic<int> g_log_format{static_cast<int>(LogFormat::kText)};
std::mutex g_log_mu;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

void AppendJsonEscaped(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

bool NeedsQuotes(std::string_view s) {
  if (s.empty()) return true;
  for (unsigned char c : s) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
  }
  return false;
}

std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
            1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}
}  // namespace

LogField::LogField(std::string_view k, double v) : key(k), quoted(false) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  value = buf;
}

StatusOr<LogLevel> ParseLogLevel(std::string_view name) {
  std::string n = Lower(name);
  if (n == "debug") return LogLevel::kDebug;
  if (n == "info") return LogLevel::kInfo;
  if (n == "warn" || n == "warning") return LogLevel::kWarn;
  if (n == "error") return LogLevel::kError;
  if (n == "fatal") return LogLevel::kFatal;
  return InvalidArgumentError("unknown log level '" + std::string(name) +
                              "' (want debug|info|warn|error|fatal)");
}

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kFatal: return "fatal";
  }
  return "info";
}

StatusOr<LogFormat> ParseLogFormat(std::string_view name) {
  std::string n = Lower(name);
  if (n == "text") return LogFormat::kText;
  if (n == "json") return LogFormat::kJson;
  return InvalidArgumentError("unknown log format '" + std::string(name) + "' (want text|json)");
}

void SetLogLevel(LogLevel level) {
  internal::g_log_level.store(static_cast<int>(level), std::memory_order_relaxed);
}
LogLevel GetLogLevel() {
  return static_cast<LogLevel>(internal::g_log_level.load(std::memory_order_relaxed));
}
void SetLogFormat(LogFormat format) {
  g_log_format.store(static_cast<int>(format), std::memory_order_relaxed);
}

Status ConfigureLoggingFromEnv() {
  if (const char* lv = std::getenv("KVMESH_LOG_LEVEL"); lv != nullptr && *lv != '\0') {
    auto level = ParseLogLevel(lv);
    if (!level.ok()) return level.status().WithContext("KVMESH_LOG_LEVEL");
    SetLogLevel(*level);
  }
  if (const char* fm = std::getenv("KVMESH_LOG_FORMAT"); fm != nullptr && *fm != '\0') {
    auto format = ParseLogFormat(fm);
    if (!format.ok()) return format.status().WithContext("KVMESH_LOG_FORMAT");
    SetLogFormat(*format);
  }
  return Status::Ok();
}

std::string FormatLogRecord(LogFormat format, LogLevel level, std::string_view component,
                            std::string_view message, std::initializer_list<LogField> fields) {
  std::string out;
  out.reserve(128);
  if (format == LogFormat::kJson) {
    out += "{\"ts\":\"" + Timestamp() + "\",\"level\":\"";
    out += LogLevelName(level);
    out += "\",\"component\":";
    AppendJsonEscaped(out, component);
    out += ",\"msg\":";
    AppendJsonEscaped(out, message);
    for (const LogField& f : fields) {
      out += ',';
      AppendJsonEscaped(out, f.key);
      out += ':';
      if (f.quoted) {
        AppendJsonEscaped(out, f.value);
      } else {
        out += f.value;
      }
    }
    out += '}';
  } else {
    out += Timestamp();
    out += ' ';
    std::string lv(LogLevelName(level));
    for (char& c : lv) c = static_cast<char>(c - 'a' + 'A');
    out += lv;
    out += ' ';
    out += component;
    out += ' ';
    out += message;
    for (const LogField& f : fields) {
      out += ' ';
      out += f.key;
      out += '=';
      if (f.quoted && NeedsQuotes(f.value)) {
        AppendJsonEscaped(out, f.value);
      } else {
        out += f.value;
      }
    }
  }
  out += '\n';
  return out;
}

void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line;
  try {
    line = FormatLogRecord(static_cast<LogFormat>(g_log_format.load(std::memory_order_relaxed)),
                           level, component, message, fields);
  } catch (...) {
    return;  // out of memory while logging: drop the record rather than throw
  }
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace kvmesh
