#include "sim/sim_cli.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kv/trace_loader.h"

namespace kvmesh::sim {
namespace {

StatusOr<SimCliOptions> Parse(std::vector<std::string> args) { return ParseSimArgs(args, MapEnvLookup({})); }

void ExpectError(std::vector<std::string> args, const std::string& needle) {
  auto r = Parse(args);
  ASSERT_FALSE(r.ok()) << needle;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().ToString();
}

TEST(SimCliTest, BuildsAggregatedAndDisaggregatedFleets) {
  auto a = Parse({"--gpu", "h200", "--model", "llama-3.1-70b", "--tp", "4", "--agg", "2"});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->config.pools.size(), 1u);
  EXPECT_EQ(a->config.pools[0].role, router::WorkerRole::kAggregated);
  EXPECT_EQ(a->config.pools[0].count, 2u);
  EXPECT_EQ(a->config.pools[0].tp, 4u);
  EXPECT_EQ(a->config.pools[0].gpu, "h200");

  auto d = Parse({"--model=llama-3.1-70b", "--tp=2", "--prefill", "1", "--decode", "3",
                  "--decode-tp", "4", "--link", "ib400", "--disagg", "always",
                  "--policies", "random,kv:dynamo", "--fp8", "--event-delay-ms", "0"});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->config.pools.size(), 2u);
  EXPECT_EQ(d->config.pools[0].role, router::WorkerRole::kPrefill);
  EXPECT_EQ(d->config.pools[0].tp, 2u);
  EXPECT_EQ(d->config.pools[1].role, router::WorkerRole::kDecode);
  EXPECT_EQ(d->config.pools[1].count, 3u);
  EXPECT_EQ(d->config.pools[1].tp, 4u);
  EXPECT_TRUE(d->config.pools[1].constants.fp8_weights);
  EXPECT_EQ(d->config.disaggregation.mode, "always");
  EXPECT_EQ(d->config.event_delay_s, 0);
  EXPECT_EQ(d->policies, (std::vector<std::string>{"random", "kv:dynamo"}));

  auto t = Parse({"--trace", "x.jsonl", "--time-scale", "0.5", "--max-requests", "10",
                  "--block-size", "64"});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(t->trace);
  EXPECT_EQ(t->trace_options.time_scale, 0.5);
  EXPECT_EQ(t->trace_options.block_size, 64u);
  EXPECT_EQ(t->config.pools[0].count, 1u);  // default: one aggregated instance
}

TEST(SimCliTest, UsageErrorsNameTheFlag) {
  ExpectError({"--bogus", "1"}, "--bogus");
  ExpectError({"--agg", "two"}, "--agg");
  ExpectError({"--rate", "fast"}, "--rate");
  ExpectError({"--gpu", "tpu"}, "--gpu");
  ExpectError({"--model", "gpt-9"}, "--model");
  ExpectError({"--link", "pigeon"}, "--link");
  ExpectError({"--policies", "random,kv:magic"}, "kv:magic");
  ExpectError({"--prefill", "2"}, "--prefill needs --decode");
  ExpectError({"--agg", "0"}, "fleet is empty");
  ExpectError({"--isl"}, "needs a value");
  ExpectError({"stray"}, "unexpected argument");
  ExpectError({"--disagg", "sometimes"}, "mode");
}

int RunCli(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunSimCommand(argv);
}

TEST(SimCliTest, RunsEveryPolicyAndWritesJson) {
  const std::string out =
      (std::filesystem::temp_directory_path() / ("kvmesh_sim_cli_" + std::to_string(::getpid()) + ".json")).string();
  const int rc = RunCli({"--agg", "4", "--rate", "40", "--num-requests", "200", "--isl", "1024",
                         "--osl", "32", "--shared-prefix-ratio", "0.5", "--num-prefixes", "4",
                         "--policies", "random,round_robin,least_loaded,kv:dynamo,kv:kvmesh",
                         "--quiet", "--out", out});
  ASSERT_EQ(rc, 0);
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  const auto j = nlohmann::json::parse(ss.str());
  ASSERT_EQ(j.size(), 5u);
  EXPECT_EQ(j[0]["policy"], "random");
  EXPECT_EQ(j[4]["policy"], "kv:kvmesh");
  for (const auto& r : j) {
    EXPECT_EQ(r["requests"], 200);
    EXPECT_EQ(r["completed"], 200);
    EXPECT_EQ(r["leaked_blocks"], 0);
  }
  std::filesystem::remove(out);
  EXPECT_EQ(RunCli({"--agg", "x"}), 2);
  EXPECT_EQ(RunCli({"--trace", "/nonexistent/trace.jsonl"}), 2);
  EXPECT_EQ(RunCli({"--help"}), 0);
}

// --input-scale / --output-scale reach the trace replay: the mean lengths of the replayed
// requests scale, and a value outside (0, 16] is a usage error (exit 2) naming the field.
TEST(SimCliTest, TraceLengthScales) {
  const auto trace = kv::FindSharedTrace("dynamo_mooncake_trace_1000.jsonl");
  if (!trace) GTEST_SKIP() << "shared/data/traces not found (set KVMESH_SHARED_DIR)";
  const std::string dir = std::filesystem::temp_directory_path().string();
  auto run = [&](const std::vector<std::string>& extra, nlohmann::json* result) {
    const std::string out =
        dir + "/kvmesh_sim_scale_" + std::to_string(::getpid()) + ".json";
    std::vector<std::string> args = {"--agg", "2", "--trace", *trace, "--max-requests", "40",
                                     "--policies", "kv:kvmesh", "--quiet", "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    const int rc = RunCli(args);
    if (rc == 0 && result != nullptr) {
      std::ifstream f(out);
      std::stringstream ss;
      ss << f.rdbuf();
      *result = nlohmann::json::parse(ss.str()).at(0);
    }
    std::filesystem::remove(out);
    return rc;
  };
  nlohmann::json plain, scaled;
  ASSERT_EQ(run({}, &plain), 0);
  ASSERT_EQ(run({"--input-scale", "0.5", "--output-scale", "2"}, &scaled), 0);
  EXPECT_EQ(scaled["completed"], 40);
  EXPECT_EQ(scaled["leaked_blocks"], 0);
  const std::string w = scaled["workload"].get<std::string>();
  EXPECT_NE(w.find("input_scale=0.5 output_scale=2"), std::string::npos) << w;
  EXPECT_EQ(plain["workload"].get<std::string>().find("input_scale"), std::string::npos);
  // Half the prompt tokens: the simulated prefill work (and so its TTFT) shrinks.
  EXPECT_LT(scaled["ttft_s"]["mean"].get<double>(), plain["ttft_s"]["mean"].get<double>());
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run({"--input-scale", "0"}, nullptr), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("input_scale must be in (0, 16]"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run({"--output-scale", "17"}, nullptr), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("output_scale must be in (0, 16]"),
            std::string::npos);
}

}  // namespace
}  // namespace kvmesh::sim
