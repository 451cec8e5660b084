#include "kv/prefix_roots.h"

#include <algorithm>

namespace kvmesh::kv {

PrefixRoots::PrefixRoots(Options options) : options_(options) {
  if (options_.max_roots == 0) options_.max_roots = 1;
  if (options_.max_blocks == 0) options_.max_blocks = 1;
}

void PrefixRoots::Record(std::span<const BlockHash> hashes) {
  if (hashes.empty()) return;
  const std::span<const BlockHash> head = hashes.first(std::min(hashes.size(), options_.max_blocks));
  std::lock_guard lock(mu_);
  auto it = roots_.find(head[0]);
  if (it == roots_.end()) {
    if (roots_.size() >= options_.max_roots) DropColdHalf();
    Entry e;
    e.common.assign(head.begin(), head.end());
    it = roots_.emplace(head[0], std::move(e)).first;
  } else {
    // Cut the common prefix back to what this request shares with it.
    std::vector<BlockHash>& common = it->second.common;
    const size_t n = std::min(common.size(), head.size());
    size_t same = 1;  // the root itself
    while (same < n && common[same] == head[same]) ++same;
    common.resize(same);
  }
  ++it->second.requests;
}

void PrefixRoots::DropColdHalf() {
  std::vector<std::pair<uint64_t, BlockHash>> by_requests;
  by_requests.reserve(roots_.size());
  for (const auto& [root, e] : roots_) by_requests.emplace_back(e.requests, root);
  const size_t drop = std::max<size_t>(1, by_requests.size() / 2);
  std::nth_element(by_requests.begin(), by_requests.begin() + static_cast<std::ptrdiff_t>(drop - 1),
                   by_requests.end());
  for (size_t i = 0; i < drop; ++i) roots_.erase(by_requests[i].second);
}

std::vector<PrefixRoots::Root> PrefixRoots::Top(size_t k) const {
  std::vector<Root> out;
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint64_t, BlockHash>> by_requests;
  by_requests.reserve(roots_.size());
  for (const auto& [root, e] : roots_) by_requests.emplace_back(e.requests, root);
  k = std::min(k, by_requests.size());
  auto more = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::partial_sort(by_requests.begin(), by_requests.begin() + static_cast<std::ptrdiff_t>(k),
                    by_requests.end(), more);
  out.reserve(k);
  for (size_t i = 0; i < k; ++i) {
    const Entry& e = roots_.at(by_requests[i].second);
    out.push_back(Root{by_requests[i].second, e.requests, e.common});
  }
  return out;
}

size_t PrefixRoots::size() const {
  std::lock_guard lock(mu_);
  return roots_.size();
}

}  // namespace kvmesh::kv
