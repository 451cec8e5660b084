// Helpers shared by the tier unit tests (header-only, test code only).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "kv/kv_event.h"

namespace kvmesh::kv::testing {

// Records every event.
class VectorSink final : public KvEventSink {
 public:
  void Emit(KvEvent event) override { events.push_back(std::move(event)); }
  // Hashes of BlockStored / BlockRemoved events for `medium`, in order.
  std::vector<BlockHash> Stored(Medium medium) const {
    std::vector<BlockHash> out;
    for (const auto& e : events) {
      if (const auto* s = std::get_if<BlockStored>(&e); s && s->medium == medium) {
        out.insert(out.end(), s->hashes.begin(), s->hashes.end());
      }
    }
    return out;
  }
  std::vector<BlockHash> Removed(Medium medium) const {
    std::vector<BlockHash> out;
    for (const auto& e : events) {
      if (const auto* r = std::get_if<BlockRemoved>(&e); r && r->medium == medium) {
        out.insert(out.end(), r->hashes.begin(), r->hashes.end());
      }
    }
    return out;
  }
  std::vector<KvEvent> events;
};

// Deterministic bytes for a block with hash `h`.
inline std::vector<std::byte> PatternFor(uint64_t h, size_t n) {
  std::vector<std::byte> out(n);
  uint64_t x = h * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<std::byte>(x & 0xff);
  }
  return out;
}

inline bool SameBytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace kvmesh::kv::testing
