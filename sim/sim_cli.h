// `kvmesh sim`: the fleet simulator's command line (docs/simulator.md, "Command line").
//
// Dispatches the subcommands (sweep, calibrate, placement, planner); otherwise parses the flags
// (sim/sim_options.h: SimFlags) into a SimConfig plus a workload description, runs every requested
// routing policy on the same fleet and the same workload (a fresh, identically seeded workload per
// policy), prints one JSON line per policy and then a comparison table, and optionally writes the
// JSON array to --out. Usage errors exit 2 with a message on stderr; runtime errors exit 1.
#pragma once

#include <span>

#include "sim/sim_options.h"

namespace kvmesh::sim {

// The whole command, args after `kvmesh sim`; returns the exit code (0 ok, 1 runtime failure,
// 2 usage error; calibrate --strict: 3).
int RunSimCommand(std::span<char* const> args);

}  // namespace kvmesh::sim
