// SlotLru: an intrusive LRU order over a fixed set of slot indexes [0, capacity), used by the G2
// and G3 tiers. Links live in two vectors allocated once (no per-entry allocation); the sentinel
// is index `capacity`. O(1) push, remove and touch. Not thread-safe (engine thread only).
//
// Invariant: a slot is either linked exactly once or not at all; callers track which.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace kvmesh::kv::internal {

class SlotLru {
 public:
  explicit SlotLru(uint32_t capacity)
      : prev_(capacity + 1, capacity), next_(capacity + 1, capacity), sentinel_(capacity) {}

  // Links `s` as the most recently used slot.
  void PushBack(uint32_t s) {
    uint32_t last = prev_[sentinel_];
    next_[last] = s;
    prev_[s] = last;
    next_[s] = sentinel_;
    prev_[sentinel_] = s;
  }
  // Unlinks `s` (must be linked).
  void Remove(uint32_t s) {
    next_[prev_[s]] = next_[s];
    prev_[next_[s]] = prev_[s];
    prev_[s] = next_[s] = sentinel_;
  }
  void Touch(uint32_t s) {
    Remove(s);
    PushBack(s);
  }
  // The least recently used slot, if any.
  std::optional<uint32_t> Front() const {
    if (next_[sentinel_] == sentinel_) return std::nullopt;
    return next_[sentinel_];
  }
  // The slot after `s` in LRU order (towards most recent), if any.
  std::optional<uint32_t> Next(uint32_t s) const {
    if (next_[s] == sentinel_) return std::nullopt;
    return next_[s];
  }
  // Slots from least to most recently used. O(n); tests and debugging.
  std::vector<uint32_t> Snapshot() const {
    std::vector<uint32_t> out;
    for (uint32_t s = next_[sentinel_]; s != sentinel_; s = next_[s]) out.push_back(s);
    return out;
  }

 private:
  std::vector<uint32_t> prev_;
  std::vector<uint32_t> next_;
  uint32_t sentinel_;
};

}  // namespace kvmesh::kv::internal
