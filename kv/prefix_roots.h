// PrefixRoots: the prefix roots a router's or an agent's requests start with, for the placement
// hub's heat per prefix root (docs/placement.md, "Heat").
//
// A request's root is its first block hash (salted per tenant, like every block hash the router
// computes). Per root the tracker keeps how many requests started with it (a counter that only
// grows while the root is tracked) and the root's common prefix: the leading block hashes every one
// of those requests shared (the first request's blocks, cut back at the first block a later
// request differs in; at most max_blocks). A system prompt shared by many requests becomes one
// root whose common prefix is the system prompt; a one-off prompt is a root seen once.
//
// Memory is bounded: at most max_roots roots. When a new root does not fit, the half of the roots
// with the fewest requests is dropped (amortized O(1) per request). A dropped root that comes back
// starts again at 1, so a reader computing rates must treat a counter that went down as a new
// baseline (the hub does).
//
// Thread-safe (one mutex; Record is O(common prefix) for a known root, O(max_blocks) for a new one).
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/block_hash.h"

namespace kvmesh::kv {

class PrefixRoots {
 public:
  struct Options {
    size_t max_roots = 4096;
    size_t max_blocks = 256;  // common prefix kept per root, in blocks
  };
  struct Root {
    BlockHash root = 0;                // = common[0]
    uint64_t requests = 0;
    std::vector<BlockHash> common;     // the common prefix (at least the root itself)
  };

  PrefixRoots() : PrefixRoots(Options{}) {}
  explicit PrefixRoots(Options options);

  // One request's block hashes (its full blocks, in order). A prompt shorter than one block has no
  // root and is not counted.
  void Record(std::span<const BlockHash> hashes);
  // The `k` roots with the most requests, most first (ties: smaller hash first).
  std::vector<Root> Top(size_t k) const;
  size_t size() const;

 private:
  struct Entry {
    uint64_t requests = 0;
    std::vector<BlockHash> common;
  };
  void DropColdHalf();  // mu_ held

  Options options_;
  mutable std::mutex mu_;
  std::unordered_map<BlockHash, Entry> roots_;
};

}  // namespace kvmesh::kv
