// `kvmesh sim`: the fleet simulator (docs/simulator.md). The flags, the run and the output live in
// sim/sim_cli.cc (unit-tested there); this file only plugs the command into the CLI.
#include "cli/commands.h"
#include "sim/sim_cli.h"

namespace kvmesh::cli {

int SimCommand(std::span<char*> args) { return sim::RunSimCommand(args); }

}  // namespace kvmesh::cli
