// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): vocab, ranked
// merges, optional byte fallback (<0xNN> tokens) and unk token, and a bounded word cache.
//
// Tokenize() follows tokenizers' Word::merge_all exactly: a priority queue of adjacent pairs ordered
// by (merge rank, position), lowest first, so results match HF for every input. Invariants after
// Create(): every merge's parts and result are vocab tokens; ids are >= 0. Thread-safe: the only
// mutable state is the cache, guarded by a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace kvmesh::tokenizer {

// Transparent hash so maps keyed by std::string can be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
};

class BpeModel {
 public:
  // `merges` are (left, right) token strings in rank order. InvalidArgument naming the merge index
  // and token when a merge references a token (or a result) missing from the vocab, or when the
  // unk token is not in the vocab.
  static StatusOr<std::unique_ptr<BpeModel>> Create(
      TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options);

  // Appends the ids for one pre-token (already normalized / byte-mapped) to `out`.
  void Tokenize(std::string_view word, std::vector<int32_t>* out) const;

  const TokenMap& vocab() const { return vocab_; }
  const BpeOptions& options() const { return options_; }
  // For each byte, the id of its "<0xNN>" token, or -1.
  int32_t byte_fallback_id(uint8_t b) const { return byte_ids_[b]; }

 private:
  BpeModel() = default;
  void TokenizeUncached(std::string_view word, std::vector<int32_t>* out) const;

  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  TokenMap vocab_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;
  int32_t byte_ids_[256];

  static constexpr size_t kCacheCapacity = 50000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
      cache_;  // guarded by cache_mu_
};

}  // namespace kvmesh::tokenizer
