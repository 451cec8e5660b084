// Typed parsing of `kvmesh sim` flag values (sim/cli_util.h).
#include "sim/cli_util.h"

#include <algorithm>

namespace kvmesh::sim {

std::vector<std::string_view> SplitList(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t i = s.find(sep, start);
    out.push_back(s.substr(start, i == s.npos ? s.npos : i - start));
    if (i == s.npos) break;
    start = i + 1;
  }
  return out;
}

std::vector<std::string> NonEmpty(std::vector<std::string> names) {
  std::erase_if(names, [](const std::string& n) { return n.empty(); });
  return names;
}

}  // namespace kvmesh::sim
