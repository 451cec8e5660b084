#include "sim/calibrate.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/trace_loader.h"
#include "sim/sim_cli.h"
#include "sim/sim_options.h"

namespace kvmesh::sim {
namespace {

// The routing point's default workload is a shared trace (../shared/data/traces); without it the
// tests that run the point use the synthetic workload or skip.
bool HaveRoutingTrace() {
  return kv::FindSharedTrace("dynamo_mooncake_trace_1000.jsonl").has_value();
}

int RunCmd(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunCalibrateCommand(argv);
}

// The reduced-size run goes through every point's real code path (two sweeps per disaggregation
// point, three routing policies on one workload) and reports published value, simulated value and
// a verdict that agrees with them.
TEST(CalibrateTest, QuickRunReportsEveryPointWithAConsistentVerdict) {
  CalibrationOptions o;
  o.quick = true;
  if (!HaveRoutingTrace()) o.routing_workload = "synthetic";
  std::vector<std::string> seen;
  auto r = RunCalibration(o, [&](const CalibrationResult& c) { seen.push_back(c.point + c.policy); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ(seen, (std::vector<std::string>{"disagg_1node", "disagg_2node", "kv_routing_ttftkv:dynamo",
                                            "kv_routing_ttftkv:kvmesh"}));
  const double published[] = {1.3, 2.0, 3.0, 3.0};
  for (size_t i = 0; i < r->size(); ++i) {
    const CalibrationResult& c = (*r)[i];
    EXPECT_DOUBLE_EQ(c.published, published[i]) << c.point;
    if (c.simulated) {
      EXPECT_GT(*c.simulated, 0) << c.point;
      EXPECT_EQ(c.within, std::abs(*c.simulated / c.published - 1) <= 0.15) << c.point;
    } else {
      EXPECT_FALSE(c.within) << c.point;
    }
    const auto j = nlohmann::json::parse(CalibrationResultJson(c, 0.15));
    for (const char* key : {"point", "metric", "published", "simulated", "ratio_to_published",
                            "tolerance", "within", "details", "wall_s"}) {
      EXPECT_TRUE(j.contains(key)) << key << " in " << j.dump();
    }
    EXPECT_TRUE(j["details"].is_object()) << j.dump();
  }
  // The routing comparison always yields a ratio: every policy completes its requests.
  for (size_t i = 2; i < 4; ++i) {
    const CalibrationResult& c = (*r)[i];
    ASSERT_TRUE(c.simulated.has_value()) << c.policy;
    const auto d = nlohmann::json::parse(c.details_json);
    EXPECT_EQ(d["completed"]["random"], 100) << d.dump();
    EXPECT_EQ(d["completed"][c.policy], 100) << d.dump();
    EXPECT_NEAR(*c.simulated,
                d["ttft_mean_s"]["random"].get<double>() / d["ttft_mean_s"][c.policy].get<double>(),
                1e-12);
    // On the trace's first 100 requests (three shared roots, cached everywhere after a few
    // requests) the hit ratios of the policies are within noise of each other; the ordering is
    // checked on the synthetic workload (RoutingWorkloadIsTheScaledTraceByDefault).
    for (const char* p : {"random", c.policy.c_str()}) {
      EXPECT_GE(d["hit_ratio"][p].get<double>(), 0) << d.dump();
      EXPECT_LE(d["hit_ratio"][p].get<double>(), 1) << d.dump();
    }
  }
}

// The routing point replays Dynamo's router-benchmark Mooncake trace by default, scaled to the
// published averages; the synthetic guess stays available; a missing trace is NotFound.
TEST(CalibrateTest, RoutingWorkloadIsTheScaledTraceByDefault) {
  if (!HaveRoutingTrace()) GTEST_SKIP() << "shared trace not found";
  CalibrationOptions o;
  o.quick = true;
  o.points = {"kv_routing_ttft"};
  auto r = RunCalibration(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  auto d = nlohmann::json::parse((*r)[0].details_json);
  EXPECT_EQ(d["workload_name"], "dynamo_mooncake_trace_1000.jsonl") << d.dump();
  EXPECT_NE(d["workload"].get<std::string>().find("trace mooncake"), std::string::npos) << d.dump();
  EXPECT_NE(d["workload_source"].get<std::string>().find("real_data_benchmark.py"),
            std::string::npos);
  // Whole 16-token blocks per 512-token hash id: the mean ISL lands within a block's share of
  // 4000; the output scale is exact up to rounding each request.
  EXPECT_NEAR(d["isl_mean"].get<double>(), 4000, 4000.0 / 13) << d.dump();
  EXPECT_NEAR(d["osl_mean"].get<double>(), 800, 5) << d.dump();
  EXPECT_GT(d["trace_rate"].get<double>(), 0) << d.dump();

  o.routing_workload = "synthetic";
  r = RunCalibration(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  d = nlohmann::json::parse((*r)[0].details_json);
  EXPECT_NE(d["workload"].get<std::string>().find("synthetic poisson"), std::string::npos);
  EXPECT_TRUE(d["trace_rate"].is_null());
  // 200 prefix groups: KV-aware routing hits the prefix cache more often than random routing.
  for (const CalibrationResult& c : *r) {
    const auto dc = nlohmann::json::parse(c.details_json);
    EXPECT_GT(dc["hit_ratio"][c.policy].get<double>(), dc["hit_ratio"]["random"].get<double>())
        << dc.dump();
  }

  o.routing_workload = "no_such_trace.jsonl";
  EXPECT_EQ(RunCalibration(o).status().code(), StatusCode::kNotFound);
  o.routing_workload = "";
  EXPECT_EQ(RunCalibration(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(CalibrateTest, SameOptionsSameResult) {
  CalibrationOptions o;
  o.quick = true;
  o.points = {"kv_routing_ttft"};
  o.num_requests = 60;
  if (!HaveRoutingTrace()) o.routing_workload = "synthetic";
  auto a = RunCalibration(o);
  auto b = RunCalibration(o);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].simulated, (*b)[i].simulated);
    EXPECT_EQ((*a)[i].details_json, (*b)[i].details_json);
  }
}

TEST(CalibrateTest, CommandExitCodes) {
  if (HaveRoutingTrace()) {
    testing::internal::CaptureStdout();
    EXPECT_EQ(RunCmd({"--quick", "--points", "kv_routing_ttft", "--num-requests", "60"}), 0);
    const std::string out = testing::internal::GetCapturedStdout();
    int lines = 0;
    for (size_t i = 0; (i = out.find('\n', i)) != std::string::npos; ++i) ++lines;
    EXPECT_EQ(lines, 2) << out;
    EXPECT_NE(out.find("\"point\":\"kv_routing_ttft\""), std::string::npos) << out;
    // --strict with a tolerance nothing meets: exit 3.
    testing::internal::CaptureStdout();
    EXPECT_EQ(RunCmd({"--quick", "--points=kv_routing_ttft", "--num-requests", "60",
                      "--tolerance", "1e-9", "--strict"}),
              3);
    testing::internal::GetCapturedStdout();
  }
  EXPECT_EQ(RunCmd({"--points", "nope"}), 2);
  EXPECT_EQ(RunCmd({"--tolerance", "1.5"}), 2);
  EXPECT_EQ(RunCmd({"--num-requests", "x"}), 2);
  EXPECT_EQ(RunCmd({"--bogus"}), 2);
  EXPECT_EQ(RunCmd({"--seed"}), 2);
  testing::internal::CaptureStdout();
  EXPECT_EQ(RunCmd({"--help"}), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("usage: kvmesh sim calibrate"), std::string::npos);
}

TEST(CalibrateTest, ParsesConstantsAndPoints) {
  auto o = ParseCalibrateArgs(std::vector<std::string>{
      "--points", "disagg_2node,kv_routing_ttft", "--step-overhead-ms", "3", "--eager-launch-us", "0",
      "--allreduce-latency-us=12", "--prefill-mfu", "0.6", "--seed", "7", "--strict"}, MapEnvLookup({}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->calibration.points, (std::vector<std::string>{"disagg_2node", "kv_routing_ttft"}));
  EXPECT_DOUBLE_EQ(o->calibration.constants.step_overhead_s, 0.003);
  EXPECT_DOUBLE_EQ(o->calibration.constants.eager_launch_s_per_layer, 0);
  EXPECT_DOUBLE_EQ(o->calibration.constants.allreduce_latency_s, 12e-6);
  EXPECT_DOUBLE_EQ(o->calibration.constants.prefill_mfu, 0.6);
  EXPECT_EQ(o->calibration.seed, 7u);
  EXPECT_TRUE(o->strict);
  auto bad = ParseCalibrateArgs(std::vector<std::string>{"--points", "disagg_3node"}, MapEnvLookup({}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("disagg_3node"), std::string::npos);
}

// The full calibration (minutes of CPU; docs/simulator.md gives the numbers it printed):
//   build/sim/kvmesh_sim_calibrate_test --gtest_also_run_disabled_tests
//     --gtest_filter='*FullCalibration*'
// runs `kvmesh sim calibrate`. KVMESH_SIM_ARGS (space-separated) replaces the arguments of
// `kvmesh sim`, e.g. "calibrate --points disagg_1node" or "sweep --gpus 8 ...", for builds
// without the `kvmesh` binary.
TEST(CalibrateTest, DISABLED_FullCalibration) {
  std::vector<std::string> args = {"calibrate"};
  if (const char* extra = std::getenv("KVMESH_SIM_ARGS")) {
    args.clear();
    std::string s = extra;
    size_t i = 0;
    while (i < s.size()) {
      const size_t j = s.find(' ', i);
      if (j != i) args.push_back(s.substr(i, j == s.npos ? s.npos : j - i));
      if (j == s.npos) break;
      i = j + 1;
    }
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  EXPECT_EQ(RunSimCommand(argv), 0);
}

// The kv_routing_ttft point on each candidate workload, one JSON line per policy and workload
// (docs/simulator.md, "sensitivity to the workload"; ~1 min of CPU per workload):
//   build/sim/kvmesh_sim_calibrate_test --gtest_also_run_disabled_tests
//     --gtest_filter='*RoutingWorkloadSensitivity*'
TEST(CalibrateTest, DISABLED_RoutingWorkloadSensitivity) {
  for (const char* w : {"dynamo_mooncake_trace_1000.jsonl", "mooncake_conversation_trace.jsonl",
                        "synthetic"}) {
    CalibrationOptions o;
    o.points = {"kv_routing_ttft"};
    o.routing_workload = w;
    auto r = RunCalibration(o, [&](const CalibrationResult& c) {
      std::printf("%s\n", CalibrationResultJson(c, o.tolerance).c_str());
      std::fflush(stdout);
    });
    EXPECT_TRUE(r.ok()) << w << ": " << r.status().ToString();
  }
}

}  // namespace
}  // namespace kvmesh::sim
