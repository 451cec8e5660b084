#include "kv/kv_event.h"

namespace kvmesh::kv {

std::string_view MediumWireName(Medium m) {
  switch (m) {
    case Medium::kG1: return "GPU";
    case Medium::kG2: return "CPU";
    case Medium::kG3: return "DISK";
  }
  return "GPU";
}

std::optional<Medium> ParseMedium(std::string_view wire) {
  auto eq = [&](std::string_view want) {
    if (wire.size() != want.size()) return false;
    for (size_t i = 0; i < wire.size(); ++i) {
      char c = wire[i];
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      if (c != want[i]) return false;
    }
    return true;
  };
  if (eq("GPU")) return Medium::kG1;
  if (eq("CPU")) return Medium::kG2;
  if (eq("DISK")) return Medium::kG3;
  return std::nullopt;
}

}  // namespace kvmesh::kv
