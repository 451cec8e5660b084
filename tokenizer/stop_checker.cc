#include "tokenizer/stop_checker.h"

#include <algorithm>
#include <utility>

namespace kvmesh::tokenizer {

StopChecker::StopChecker(const Tokenizer& tokenizer, std::vector<std::string> stop)
    : decoder_(tokenizer, /*skip_special_tokens=*/true), stop_(std::move(stop)) {
  std::erase_if(stop_, [](const std::string& s) { return s.empty(); });
  for (const std::string& s : stop_) max_stop_len_ = std::max(max_stop_len_, s.size());
}

StopChecker::Result StopChecker::Push(int32_t token) {
  Result r;
  pending_ += decoder_.Push(token);
  if (stop_.empty()) {
    r.text = std::move(pending_);
    pending_.clear();
    return r;
  }
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    r.text = pending_.substr(0, first);
    r.stopped = true;
    pending_.clear();
    return r;
  }
  // Keep the last max_stop_len - 1 bytes (a stop string may start there), cut at a UTF-8
  // character boundary.
  size_t keep = std::min(pending_.size(), max_stop_len_ - 1);
  size_t cut = pending_.size() - keep;
  while (cut > 0 && cut < pending_.size() &&
         (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  r.text = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return r;
}

std::string StopChecker::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  out += decoder_.Flush();
  if (!stop_.empty()) {
    size_t first = std::string::npos;
    for (const std::string& s : stop_) first = std::min(first, out.find(s));
    if (first != std::string::npos) out.resize(first);
  }
  return out;
}

}  // namespace kvmesh::tokenizer
