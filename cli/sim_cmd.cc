// `kvmesh sim`: the fleet simulator (docs/simulator.md). The flags, the run and the output live in
// sim/sim_cli.cc (unit-tested there); this file only plugs the command into the CLI.
#include <string>
#include <vector>

#include "cli/commands.h"
#include "sim/placement_sim.h"
#include "sim/planner_sim.h"
#include "sim/sim_cli.h"

namespace kvmesh::cli {

int SimCommand(std::span<char*> args) {
  // `kvmesh sim placement ...`: the placement-policy comparison (sim/placement_sim.h).
  if (!args.empty() && args[0] != nullptr && std::string(args[0]) == "placement") {
    std::vector<std::string> rest(args.begin() + 1, args.end());
    return sim::RunSimPlacementCommand(rest);
  }
  // `kvmesh sim planner ...` / `kvmesh sim --planner ...`: the planner on a rising-then-falling
  // workload (sim/planner_sim.h).
  if (!args.empty() && args[0] != nullptr &&
      (std::string(args[0]) == "planner" || std::string(args[0]) == "--planner")) {
    std::vector<std::string> rest(args.begin() + 1, args.end());
    return sim::RunSimPlannerCommand(rest);
  }
  return sim::RunSimCommand(args);
}

}  // namespace kvmesh::cli
