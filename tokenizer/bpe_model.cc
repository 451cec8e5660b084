#include "tokenizer/bpe_model.h"

#include <cstdio>
#include <queue>

#include "tokenizer/utf8.h"

namespace kvmesh::tokenizer {

StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
    BpeOptions options) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->vocab_ = std::move(vocab);
  m->options_ = std::move(options);
  for (const auto& [token, id] : m->vocab_) {
    if (id < 0) {
      return InvalidArgumentError("model.vocab: token \"" + token + "\" has negative id " +
                                  std::to_string(id));
    }
  }
  const std::string& prefix = m->options_.continuing_subword_prefix;
  m->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto a = m->vocab_.find(left);
    auto b = m->vocab_.find(right);
    if (a == m->vocab_.end() || b == m->vocab_.end()) {
      return InvalidArgumentError("model.merges[" + std::to_string(rank) + "] \"" + left + " " +
                                  right + "\" references token \"" +
                                  (a == m->vocab_.end() ? left : right) + "\" not in model.vocab");
    }
    std::string merged = left;
    merged.append(!prefix.empty() && right.starts_with(prefix) ? right.substr(prefix.size())
                                                                : right);
    auto c = m->vocab_.find(merged);
    if (c == m->vocab_.end()) {
      return InvalidArgumentError("model.merges[" + std::to_string(rank) + "] result \"" + merged +
                                  "\" not in model.vocab");
    }
    // Like HF, a duplicate pair keeps its first (lowest) rank.
    m->merges_.emplace(PairKey(a->second, b->second),
                       MergeInfo{static_cast<int32_t>(rank), c->second});
  }
  if (m->options_.unk_token.has_value()) {
    auto it = m->vocab_.find(*m->options_.unk_token);
    if (it == m->vocab_.end()) {
      return InvalidArgumentError("model.unk_token \"" + *m->options_.unk_token +
                                  "\" not in model.vocab");
    }
    m->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = m->vocab_.find(std::string_view(name));
    m->byte_ids_[b] = it == m->vocab_.end() ? -1 : it->second;
  }
  return m;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out->size();
  TokenizeUncached(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) {
      cache_.emplace(std::string(word), std::vector<int32_t>(out->begin() + start, out->end()));
    }
  }
}

void BpeModel::TokenizeUncached(std::string_view word, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto push = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  };
  bool last_was_unk = false;
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t n = Utf8CharLength(word, pos);
    if (n == 0) n = 1;  // Defensive; the caller passes valid UTF-8.
    const bool first = pos == 0;
    const bool last = pos + n == word.size();
    std::string_view ch = word.substr(pos, n);
    pos += n;
    // Word-internal prefix/suffix decoration (BPE models trained with them, e.g. "##" or "</w>").
    piece.clear();
    if (!first) piece.append(options_.continuing_subword_prefix);
    piece.append(ch);
    if (last) piece.append(options_.end_of_word_suffix);
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      push(it->second);
      last_was_unk = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) push(byte_ids_[static_cast<uint8_t>(c)]);
        last_was_unk = false;
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (!(options_.fuse_unk && last_was_unk)) push(*unk_id_);
      last_was_unk = true;
    }
    // No unk token: HF drops the character.
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto m = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (m != merges_.end()) queue.push({m->second.rank, left, m->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto m = merges_.find(PairKey(left.id, right.id));
    if (m == merges_.end() || m->second.new_id != top.new_id) continue;  // Stale entry.
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

}  // namespace kvmesh::tokenizer
