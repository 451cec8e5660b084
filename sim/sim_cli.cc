#include "sim/sim_cli.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string_view>

#include "sim/calibrate.h"
#include "sim/placement_sim.h"
#include "sim/planner_sim.h"
#include "sim/sweep.h"

namespace kvmesh::sim {

int RunSimCommand(std::span<char* const> args) {
  const std::string_view sub = args.empty() ? "" : std::string_view(args[0]);
  if (sub == "sweep") return RunSweepCommand(args.subspan(1));
  if (sub == "calibrate") return RunCalibrateCommand(args.subspan(1));
  if (sub == "placement") return RunSimPlacementCommand(args.subspan(1));
  if (sub == "planner" || sub == "--planner") return RunSimPlannerCommand(args.subspan(1));
  const auto parsed = ParseCommandLine("kvmesh sim", ParseSimArgs, args, SimUsage);
  if (parsed.first) return *parsed.first;
  const SimCliOptions& o = parsed.second;
  auto make_workload = [&]() -> StatusOr<std::unique_ptr<Workload>> {
    if (o.trace) return MakeTraceWorkload(o.trace_options);
    return MakeSyntheticWorkload(o.synthetic);
  };
  {  // Workload errors are usage errors (bad options, unreadable trace).
    auto w = make_workload();
    if (!w.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", w.status().message().c_str());
      return 2;
    }
  }
  std::vector<SimResult> results;
  std::string json_array = "[";
  for (const std::string& policy : o.policies) {
    SimConfig c = o.config;
    auto routing = RoutingForPolicy(policy, c.routing);
    if (!routing.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", routing.status().message().c_str());
      return 2;
    }
    c.routing = *routing;
    auto w = make_workload();
    if (!w.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", w.status().message().c_str());
      return 1;
    }
    auto r = RunFleetSim(c, **w, policy);
    if (!r.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", r.status().message().c_str());
      return r.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
    }
    const std::string line = SimResultJson(*r);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (results.size()) json_array += ",";
    json_array += line;
    results.push_back(std::move(*r));
  }
  json_array += "]\n";
  if (!o.quiet) std::printf("\n%s", SimResultTable(results).c_str());
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << json_array;
    if (!f.good()) {
      std::fprintf(stderr, "kvmesh sim: cannot write %s\n", o.out.c_str());
      return 1;
    }
  }
  for (const SimResult& r : results) {
    if (!r.pool_errors.empty()) {
      std::fprintf(stderr, "kvmesh sim: %s: internal error: %s\n", r.policy.c_str(), r.pool_errors.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace kvmesh::sim
