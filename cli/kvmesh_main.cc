// `kvmesh <command> [args...]`: dispatches to the subcommands in cli/commands.h.
#include <cstdio>
#include <string_view>

#include "cli/commands.h"
#include "common/log.h"

namespace {
void PrintUsage(std::FILE* out) {
  std::fprintf(out, "usage: kvmesh <command> [args...]\n\ncommands:\n");
  for (const auto& c : kvmesh::cli::AllCommands()) {
    std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  }
  std::fprintf(out, "\nRun 'kvmesh <command> --help' for a command's flags.\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (auto st = kvmesh::ConfigureLoggingFromEnv(); !st.ok()) {
    std::fprintf(stderr, "kvmesh: %s\n", st.message().c_str());
    return 2;
  }
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  for (const auto& c : kvmesh::cli::AllCommands()) {
    if (c.name == name) return c.run(std::span<char*>(argv + 2, static_cast<size_t>(argc - 2)));
  }
  std::fprintf(stderr, "kvmesh: unknown command '%s'\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
