#include "cli/commands.h"

#include <array>
#include <cstdio>

namespace kvmesh::cli {

int VersionCommand(std::span<char*> /*args*/) {
  std::printf("kvmesh 0.1.0\n");
  return 0;
}

std::span<const Command> AllCommands() {
  static const std::array kCommands = {
      Command{"version", "print the version", &VersionCommand},
  };
  return kCommands;
}

}  // namespace kvmesh::cli
