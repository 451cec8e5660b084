// `kvmesh sim`: the fleet simulator's command line (docs/simulator.md, "Command line").
//
// Parses flags into a SimConfig plus a workload description, runs every requested routing
// policy on the same fleet and the same workload (a fresh, identically seeded workload per
// policy), prints one JSON line per policy and then a comparison table, and optionally writes the
// JSON array to --out. Usage errors exit 2 with a message on stderr; runtime errors exit 1.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/fleet_sim.h"
#include "sim/workload.h"

namespace kvmesh::sim {

struct SimCliOptions {
  SimConfig config;
  std::vector<std::string> policies = {"kv:kvmesh"};
  bool trace = false;        // --trace given: replay instead of synthetic
  TraceOptions trace_options;
  SyntheticOptions synthetic;
  std::string out;           // --out FILE.json
  bool help = false;
  bool quiet = false;        // --quiet: no table, JSON lines only
};

// InvalidArgument naming the flag and the bad value.
StatusOr<SimCliOptions> ParseSimArgs(std::span<const std::string> args);

// The whole command; returns the exit code (0 ok, 1 runtime failure, 2 usage error).
int RunSimCommand(std::span<char*> args);

extern const char kSimUsage[];

}  // namespace kvmesh::sim
