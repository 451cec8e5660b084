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
      // One line per command, sorted by name.
      Command{"bench", "load generator for any OpenAI-compatible endpoint (synthetic or trace replay)",
              &BenchCommand},
      Command{"generate", "generate text with the built-in engine (CPU), print usage and stats",
              &GenerateCommand},
      Command{"hash", "print the block hashes of a token sequence (JSON)", &HashCommand},
      Command{"kv-demo", "replay a trace through the KV tiers, report hits", &KvDemoCommand},
      Command{"model", "create a built-in synthetic model folder (model create --preset)",
              &ModelCommand},
      Command{"sim", "fleet simulator: real routing + KV cache code on modelled GPUs, policy comparison",
              &SimCommand},
      Command{"up", "run an InferenceGraph locally: router + prefill/decode agents as child processes",
              &UpCommand},
      Command{"version", "print the version", &VersionCommand},
  };
  return kCommands;
}

}  // namespace kvmesh::cli
