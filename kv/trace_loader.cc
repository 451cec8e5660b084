#include "kv/trace_loader.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace kvmesh::kv {
namespace {

namespace fs = std::filesystem;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A token count: a non-negative integer that fits 32 bits (nlohmann's get<uint32_t> would wrap
// -1 or 2^32 silently).
StatusOr<uint32_t> Length(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = j.at(key);
  if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX) {
    return InvalidArgumentError(where + key + " is " + v.dump() + ", not an integer in [0, 2^32)");
  }
  return v.get<uint32_t>();
}

}  // namespace

StatusOr<std::vector<TraceRecord>> LoadMooncakeTrace(const std::string& path, size_t max_records) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot open trace '" + path + "'");
  std::vector<TraceRecord> out;
  std::string line;
  size_t lineno = 0;
  while ((max_records == 0 || out.size() < max_records) && std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    try {
      const auto j = nlohmann::json::parse(line);
      if (!j.is_object()) return InvalidArgumentError(where + "not a JSON object");
      TraceRecord r;
      if (j.contains("timestamp")) {
        const auto& ts = j.at("timestamp");
        if (!ts.is_number()) return InvalidArgumentError(where + "timestamp is " + ts.dump() + ", not a number");
        r.timestamp_ms = ts.get<double>();
      }
      KVMESH_ASSIGN_OR_RETURN(r.input_length, Length(j, "input_length", where));
      KVMESH_ASSIGN_OR_RETURN(r.output_length, Length(j, "output_length", where));
      const auto& ids = j.at("hash_ids");
      if (!ids.is_array()) return InvalidArgumentError(where + "hash_ids is not an array");
      r.hash_ids.reserve(ids.size());
      for (const auto& id : ids) {
        if (!id.is_number_unsigned()) {
          return InvalidArgumentError(where + "hash_ids holds " + id.dump() +
                                      ", not a non-negative integer");
        }
        r.hash_ids.push_back(id.get<uint64_t>());
      }
      if (r.hash_ids.empty()) return InvalidArgumentError(where + "hash_ids is empty");
      if (r.input_length == 0) return InvalidArgumentError(where + "input_length is 0");
      if (!(r.timestamp_ms >= 0)) return InvalidArgumentError(where + "negative timestamp");
      out.push_back(std::move(r));
    } catch (const std::exception& e) {
      return InvalidArgumentError(where + e.what());
    }
  }
  if (in.bad()) return UnavailableError("cannot read trace '" + path + "'");
  return out;
}

std::vector<uint32_t> MooncakePromptTokens(const TraceRecord& record, uint32_t vocab_size) {
  const size_t n = std::min<size_t>(record.input_length,
                                    record.hash_ids.size() * size_t{kMooncakeBlockTokens});
  std::vector<uint32_t> tokens(n);
  for (size_t t = 0; t < n; ++t) {
    const uint64_t id = record.hash_ids[t / kMooncakeBlockTokens];
    tokens[t] = static_cast<uint32_t>(
        SplitMix64(id * kMooncakeBlockTokens + t % kMooncakeBlockTokens) % vocab_size);
  }
  return tokens;
}

std::optional<std::string> FindSharedTrace(std::string_view name) {
  const fs::path rel = fs::path("shared") / "data" / "traces" / std::string(name);
  std::error_code ec;
  if (const char* shared = std::getenv("KVMESH_SHARED_DIR"); shared != nullptr && *shared != '\0') {
    const fs::path p = fs::path(shared) / "data" / "traces" / std::string(name);
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  std::vector<fs::path> starts;
  if (const char* src = std::getenv("KVMESH_SOURCE_DIR"); src != nullptr && *src != '\0') {
    starts.emplace_back(fs::path(src) / "..");
  }
  starts.push_back(fs::current_path(ec));
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  for (const auto& s : starts) {
    fs::path dir = s;
    for (int up = 0; up < 6 && !dir.empty(); ++up) {
      fs::path p = dir / rel;
      if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
      if (dir == dir.parent_path()) break;
      dir = dir.parent_path();
    }
  }
  return std::nullopt;
}

}  // namespace kvmesh::kv
