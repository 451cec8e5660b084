// Flag-value parsing shared by the simulator's command lines (sim/cli_util.h).
#include "sim/cli_util.h"

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

std::vector<std::string> SplitNames(std::string_view s) {
  std::vector<std::string> out;
  for (std::string_view part : SplitList(s, ',')) {
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

}  // namespace kvmesh::sim
