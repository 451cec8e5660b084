// Subcommands of the `kvmesh` CLI. Each takes the arguments after its name and returns the
// process exit code (0 ok, 1 runtime failure, 2 usage error). Add one by declaring it here and
// listing it in kCommands (cli/commands.cc).
#pragma once

#include <span>
#include <string_view>

namespace kvmesh::cli {

using CommandFn = int (*)(std::span<char*> args);

struct Command {
  std::string_view name;
  std::string_view summary;
  CommandFn run;
};

std::span<const Command> AllCommands();

int VersionCommand(std::span<char*> args);
int HashCommand(std::span<char*> args);  // cli/hash_cmd.cc
int GenerateCommand(std::span<char*> args);  // cli/generate_cmd.cc
int KvDemoCommand(std::span<char*> args);  // cli/kv_demo_cmd.cc
int ModelCommand(std::span<char*> args);   // cli/model_cmd.cc
int UpCommand(std::span<char*> args);      // cli/up_cmd.cc
int BenchCommand(std::span<char*> args);   // cli/bench_cmd.cc
int SimCommand(std::span<char*> args);     // cli/sim_cmd.cc (sim/sim_cli.cc)

}  // namespace kvmesh::cli
