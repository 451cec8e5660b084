// `kvmesh sim`: the fleet simulator (docs/simulator.md). The subcommands, flags, runs and output
// live in sim/ (sim_cli.cc dispatches, sim_options.h declares the flags); this file only plugs the
// command into the CLI.
#include "cli/commands.h"
#include "sim/sim_cli.h"

namespace kvmesh::cli {

int SimCommand(std::span<char*> args) { return sim::RunSimCommand(args); }

}  // namespace kvmesh::cli
