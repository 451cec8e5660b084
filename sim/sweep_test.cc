#include "sim/sweep.h"

#include "sim/sim_options.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvmesh::sim {
namespace {

std::vector<size_t> Indices(const std::vector<FrontierPoint>& f) {
  std::vector<size_t> out;
  for (const FrontierPoint& p : f) out.push_back(p.index);
  return out;
}

TEST(ParetoFrontierTest, DropsDominatedPointsAndSortsByUserRate) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<FrontierPoint> pts = {
      {10, 100, 0},  // frontier
      {20, 80, 1},   // frontier
      {15, 70, 2},   // dominated by 1
      {30, 50, 3},   // frontier
      {5, 90, 4},    // dominated by 0
      {30, 40, 5},   // dominated by 3 (same user rate, lower gpu)
      {20, 80, 6},   // identical to 1: the first is kept
      {nan, 200, 7}, // ignored
      {25, 50, 8},   // dominated by 3 (3 is faster per user at the same gpu)
  };
  const auto f = ParetoFrontier(pts);
  EXPECT_EQ(Indices(f), (std::vector<size_t>{0, 1, 3}));
  for (size_t i = 1; i < f.size(); ++i) {
    EXPECT_LT(f[i - 1].user, f[i].user);
    EXPECT_GT(f[i - 1].gpu, f[i].gpu);
  }
  // No input point dominates a frontier point.
  for (const FrontierPoint& q : f) {
    for (const FrontierPoint& p : pts) {
      if (std::isnan(p.user)) continue;
      EXPECT_FALSE(p.user >= q.user && p.gpu >= q.gpu && (p.user > q.user || p.gpu > q.gpu))
          << p.index << " dominates " << q.index;
    }
  }
  EXPECT_TRUE(ParetoFrontier({}).empty());
  const std::vector<FrontierPoint> one = {{3, 4, 9}};
  EXPECT_EQ(Indices(ParetoFrontier(one)), (std::vector<size_t>{9}));
}

TEST(ParetoFrontierTest, ValueAtInterpolatesOrSteps) {
  const std::vector<FrontierPoint> f = {{10, 100, 0}, {20, 80, 1}, {30, 50, 2}};
  EXPECT_DOUBLE_EQ(*ValueAt(f, 5), 100);  // below the first point: its value
  EXPECT_DOUBLE_EQ(*ValueAt(f, 5, FrontierRead::kStep), 100);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 10), 100);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 15), 90);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 15, FrontierRead::kStep), 80);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 20), 80);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 25), 65);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 25, FrontierRead::kStep), 50);
  EXPECT_DOUBLE_EQ(*ValueAt(f, 30), 50);
  EXPECT_FALSE(ValueAt(f, 30.5).has_value());
  EXPECT_FALSE(ValueAt(f, 30.5, FrontierRead::kStep).has_value());
  EXPECT_FALSE(ValueAt({}, 1).has_value());
  EXPECT_FALSE(ValueAt(f, std::numeric_limits<double>::quiet_NaN()).has_value());
}

TEST(PlanSweepTest, EnumeratesLayoutsThatFillTheBudget) {
  SweepOptions o;
  o.gpus = 8;
  o.tp = {2, 4};
  o.max_batch = {16};
  o.rates = {1};
  std::vector<std::string> labels;
  for (const SweepPoint& p : PlanSweep(o)) {
    EXPECT_EQ(p.gpus, 8u) << p.label;
    labels.push_back(p.label);
  }
  EXPECT_EQ(labels, (std::vector<std::string>{
                        "agg 4xTP2 b16 c8192 r1", "agg 2xTP4 b16 c8192 r1",
                        "disagg 3xTP2 P + 1xTP2 D b16 c8192 r1", "disagg 2xTP2 P + 2xTP2 D b16 c8192 r1",
                        "disagg 1xTP2 P + 3xTP2 D b16 c8192 r1", "disagg 2xTP2 P + 1xTP4 D b16 c8192 r1",
                        "disagg 1xTP4 P + 2xTP2 D b16 c8192 r1", "disagg 1xTP4 P + 1xTP4 D b16 c8192 r1"}));
  o.pd_ratios = {{1, 1}};
  o.aggregated = false;
  o.max_batch = {8, 32};
  o.rates_per_gpu = {0.5};
  o.rates.clear();
  labels.clear();
  for (const SweepPoint& p : PlanSweep(o)) labels.push_back(p.label);
  EXPECT_EQ(labels, (std::vector<std::string>{
                        "disagg 2xTP2 P + 2xTP2 D b8 c8192 r4", "disagg 2xTP2 P + 2xTP2 D b32 c8192 r4",
                        "disagg 1xTP4 P + 1xTP4 D b8 c8192 r4", "disagg 1xTP4 P + 1xTP4 D b32 c8192 r4"}));
  // Closed loop: the concurrency ladder replaces the rates.
  o.max_batch = {8};
  o.concurrency = {16, 64};
  labels.clear();
  for (const SweepPoint& p : PlanSweep(o)) {
    EXPECT_EQ(p.rate, 0) << p.label;
    labels.push_back(p.label);
  }
  EXPECT_EQ(labels, (std::vector<std::string>{
                        "disagg 2xTP2 P + 2xTP2 D b8 c8192 n16", "disagg 2xTP2 P + 2xTP2 D b8 c8192 n64",
                        "disagg 1xTP4 P + 1xTP4 D b8 c8192 n16", "disagg 1xTP4 P + 1xTP4 D b8 c8192 n64"}));
  o.concurrency = {0};
  EXPECT_FALSE(o.Validate().ok());
  o.concurrency = {4};
  o.rates.clear();
  o.rates_per_gpu.clear();
  EXPECT_TRUE(o.Validate().ok());  // no rates needed in a closed loop
}

// Well-formedness of the SVG: every tag closes in order, text has no raw '<' and only known
// entities, one root element.
::testing::AssertionResult WellFormed(const std::string& x) {
  std::vector<std::string> stack;
  int roots = 0;
  size_t i = 0;
  while (i < x.size()) {
    if (x[i] == '&') {
      bool known = false;
      for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"}) {
        if (x.compare(i, std::strlen(e), e) == 0) known = true;
      }
      if (!known) return ::testing::AssertionFailure() << "bad entity at " << i;
      ++i;
      continue;
    }
    if (x[i] != '<') {
      ++i;
      continue;
    }
    const size_t end = x.find('>', i);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unterminated tag at " << i;
    std::string tag = x.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.starts_with("?")) continue;
    if (tag.starts_with("/")) {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) {
        return ::testing::AssertionFailure() << "</" << name << "> closes "
                                             << (stack.empty() ? "nothing" : stack.back());
      }
      stack.pop_back();
      continue;
    }
    if (tag.find('<') != std::string::npos) return ::testing::AssertionFailure() << "'<' inside a tag";
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (stack.empty()) ++roots;
    if (!tag.ends_with("/")) stack.push_back(name);
  }
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> not closed";
  if (roots != 1) return ::testing::AssertionFailure() << roots << " root elements";
  return ::testing::AssertionSuccess();
}

TEST(SweepTest, WellFormedCheckCatchesBrokenXml) {
  EXPECT_TRUE(WellFormed("<svg><g><a/></g></svg>"));
  EXPECT_FALSE(WellFormed("<svg><g></svg>"));
  EXPECT_FALSE(WellFormed("<svg>a & b</svg>"));
  EXPECT_FALSE(WellFormed("<svg></svg><svg></svg>"));
}

SweepOptions TinySweep() {
  SweepOptions o;
  o.gpu = "h100";
  o.model = "llama-3.1-8b";
  o.gpus = 2;
  o.tp = {1};
  o.max_batch = {16};
  o.rates = {8};
  o.num_requests = 30;
  o.isl = 512;
  o.osl = 32;
  return o;
}

TEST(SweepTest, TinySweepGivesBothFrontiersJsonAndSvg) {
  auto r = RunSweep(TinySweep());
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->points.size(), 2u);  // agg 2xTP1, disagg 1xTP1 P + 1xTP1 D
  EXPECT_TRUE(r->skipped.empty());
  const SweepPoint& agg = r->points[0];
  const SweepPoint& dis = r->points[1];
  EXPECT_EQ(agg.layout, SweepLayout::kAggregated);
  EXPECT_EQ(dis.layout, SweepLayout::kDisaggregated);
  for (const SweepPoint& p : r->points) {
    EXPECT_EQ(p.completed, 30u) << p.label;
    EXPECT_EQ(p.rejected, 0u) << p.label;
    EXPECT_EQ(p.gpus, 2u);
    EXPECT_GT(p.tokens_per_s_per_gpu, 0);
    EXPECT_GT(p.tokens_per_s_per_user, 0);
    EXPECT_GT(p.ttft_p90_s, 0);
    EXPECT_TRUE(p.on_frontier);  // one point per layout: each is its frontier
  }
  EXPECT_EQ(agg.remote_prefills, 0u);
  EXPECT_EQ(dis.remote_prefills, 30u);  // unbounded prefill queue: every prefill is remote
  ASSERT_EQ(r->agg_frontier.size(), 1u);
  ASSERT_EQ(r->disagg_frontier.size(), 1u);
  EXPECT_EQ(r->agg_frontier[0].index, 0u);
  EXPECT_EQ(r->disagg_frontier[0].index, 1u);
  EXPECT_DOUBLE_EQ(r->agg_frontier[0].gpu, agg.tokens_per_s_per_gpu);

  const double user_rate = std::min(agg.tokens_per_s_per_user, dis.tokens_per_s_per_user) / 2;
  const auto doc = nlohmann::json::parse(SweepResultJson(*r, user_rate));
  EXPECT_EQ(doc["points"].size(), 2u);
  EXPECT_EQ(doc["agg_frontier"].size(), 1u);
  EXPECT_EQ(doc["disagg_frontier"].size(), 1u);
  EXPECT_EQ(doc["points"][1]["layout"], "disagg");
  EXPECT_DOUBLE_EQ(doc["summary"]["agg_at"].get<double>(), agg.tokens_per_s_per_gpu);
  EXPECT_DOUBLE_EQ(doc["summary"]["ratio"].get<double>(),
                   dis.tokens_per_s_per_gpu / agg.tokens_per_s_per_gpu);
  EXPECT_EQ(doc["summary"]["disagg_best"], dis.label);
  // Above every point nothing is reachable: nulls, not zeros.
  const auto far = nlohmann::json::parse(SweepSummaryJson(*r, 1e9));
  EXPECT_TRUE(far["agg_at"].is_null());
  EXPECT_TRUE(far["ratio"].is_null());

  const std::string svg = SweepSvg(*r, user_rate, "tiny <sweep> & co");
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_NE(svg.find("tiny &lt;sweep&gt; &amp; co"), std::string::npos);
  size_t lines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++lines;
  EXPECT_EQ(lines, 2u);  // one frontier line per layout
  EXPECT_NE(svg.find("tokens/s/user"), std::string::npos);
  EXPECT_NE(svg.find("tokens/s/GPU"), std::string::npos);
  EXPECT_NE(svg.find("disaggregated"), std::string::npos);

  // A real XML parser agrees, when the test environment names a Python.
  if (const char* py = std::getenv("KVMESH_PYTHON3"); py && *py) {
    const auto path = std::filesystem::temp_directory_path() /
                      ("kvmesh_sweep_test_" + std::to_string(::getpid()) + ".svg");
    std::ofstream(path) << svg;
    const std::string cmd = std::string(py) +
                            " -c \"import sys,xml.etree.ElementTree as E; "
                            "r=E.parse(sys.argv[1]).getroot(); sys.exit(0 if r.tag.endswith('svg') else 1)\" " +
                            path.string();
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    std::filesystem::remove(path);
  }
}

TEST(SweepTest, SameOptionsSameResult) {
  auto a = RunSweep(TinySweep());
  auto b = RunSweep(TinySweep());
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->points.size(); ++i) {
    EXPECT_EQ(a->points[i].tokens_per_s_per_gpu, b->points[i].tokens_per_s_per_gpu);
    EXPECT_EQ(a->points[i].ttft_p90_s, b->points[i].ttft_p90_s);
  }
}

TEST(SweepTest, ConfigsThatDoNotFitAreSkippedNotDropped) {
  SweepOptions o = TinySweep();
  o.model = "llama-3.1-70b";  // bf16: 141 GB of weights on one 80 GB H100
  o.gpus = 1;
  o.aggregated = true;
  o.disaggregated = false;
  auto r = RunSweep(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->points.empty());
  ASSERT_EQ(r->skipped.size(), 1u);
  EXPECT_NE(r->skipped[0].find("agg 1xTP1"), std::string::npos) << r->skipped[0];
  EXPECT_TRUE(r->agg_frontier.empty());
  EXPECT_FALSE(ValueAt(r->agg_frontier, 1).has_value());
  EXPECT_TRUE(WellFormed(SweepSvg(*r, 50)));
}

TEST(SweepTest, MaxTtftKeepsSlowPointsOffTheFrontier) {
  SweepOptions o = TinySweep();
  o.max_ttft_p90_s = 1e-9;  // nothing is this fast
  auto r = RunSweep(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->points.size(), 2u);
  EXPECT_TRUE(r->agg_frontier.empty());
  EXPECT_TRUE(r->disagg_frontier.empty());
}

StatusOr<SweepCliOptions> Parse(std::vector<std::string> args) { return ParseSweepArgs(args, MapEnvLookup({})); }

TEST(SweepCliTest, ParsesFlags) {
  auto o = Parse({"--gpu", "h200", "--model", "llama-3.1-70b", "--fp8", "--gpus=16", "--tp", "2,4,8",
                  "--layouts", "disagg", "--pd", "1:1,3:1", "--max-batch", "8,64", "--max-prefill-tokens",
                  "2048", "--isl", "3000", "--osl", "150", "--rates", "1.5,3", "--num-requests", "200",
                  "--user-rate", "40", "--max-ttft-ms", "2500", "--step-overhead-ms", "3", "--out",
                  "a.json", "--svg", "a.svg", "--quiet"});
  ASSERT_TRUE(o.ok()) << o.status().message();
  const SweepOptions& s = o->sweep;
  EXPECT_EQ(s.gpu, "h200");
  EXPECT_TRUE(s.fp8);
  EXPECT_EQ(s.gpus, 16u);
  EXPECT_EQ(s.tp, (std::vector<uint32_t>{2, 4, 8}));
  EXPECT_FALSE(s.aggregated);
  EXPECT_TRUE(s.disaggregated);
  ASSERT_EQ(s.pd_ratios.size(), 2u);
  EXPECT_EQ(s.pd_ratios[1], (std::pair<uint32_t, uint32_t>{3, 1}));
  EXPECT_EQ(s.max_batch, (std::vector<uint32_t>{8, 64}));
  EXPECT_EQ(s.max_prefill_tokens, (std::vector<uint32_t>{2048}));
  EXPECT_EQ(s.rates, (std::vector<double>{1.5, 3}));
  EXPECT_EQ(s.num_requests, 200u);
  EXPECT_DOUBLE_EQ(o->user_rate, 40);
  EXPECT_DOUBLE_EQ(s.max_ttft_p90_s, 2.5);
  EXPECT_DOUBLE_EQ(s.constants.step_overhead_s, 0.003);
  EXPECT_EQ(o->out, "a.json");
  EXPECT_EQ(o->svg, "a.svg");
  EXPECT_TRUE(o->quiet);
}

TEST(SweepCliTest, RejectsBadFlagsNamingThem) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--bogus", "1"}, "--bogus"},
      {{"--gpus", "x"}, "--gpus"},
      {{"--gpus", "0"}, "gpus"},
      {{"--tp", "2,,4"}, "--tp"},
      {{"--tp"}, "--tp needs a value"},
      {{"--pd", "1-2"}, "--pd"},
      {{"--pd", "0:1"}, "--pd"},
      {{"--layouts", "agg,foo"}, "--layouts"},
      {{"--rates", "0"}, "rates"},
      {{"--rates", "1,abc"}, "--rates"},
      {{"--user-rate", "0"}, "--user-rate"},
      {{"--gpu", "a100"}, "--gpu"},
      {{"--model", "gpt-5"}, "--model"},
      {{"--link", "carrier-pigeon"}, "--link"},
      {{"--policy", "magic"}, "--policy"},
      {{"--disagg-mode", "sometimes"}, "disagg_mode"},
      {{"positional"}, "unexpected argument"},
  };
  for (const auto& [args, needle] : cases) {
    auto o = Parse(args);
    ASSERT_FALSE(o.ok()) << args[0];
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(needle), std::string::npos) << o.status().message();
  }
}

int RunCommand(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunSweepCommand(argv);
}

TEST(SweepCliTest, CommandExitCodesAndFiles) {
  EXPECT_EQ(RunCommand({"--gpus", "nope"}), 2);
  EXPECT_EQ(RunCommand({"--help"}), 0);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kvmesh_sweep_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string json = (dir / "s.json").string(), svg = (dir / "s.svg").string();
  EXPECT_EQ(RunCommand({"--gpu", "h100", "--model", "llama-3.1-8b", "--gpus", "2", "--tp", "1",
                        "--max-batch", "16", "--rates", "8", "--num-requests", "20", "--isl", "512",
                        "--osl", "16", "--quiet", "--out", json, "--svg", svg}),
            0);
  std::ifstream jf(json), sf(svg);
  std::stringstream js, ss;
  js << jf.rdbuf();
  ss << sf.rdbuf();
  const auto doc = nlohmann::json::parse(js.str());
  EXPECT_EQ(doc["points"].size(), 2u);
  EXPECT_TRUE(WellFormed(ss.str()));
  EXPECT_EQ(RunCommand({"--gpus", "2", "--model", "llama-3.1-8b", "--tp", "1", "--rates", "8",
                        "--num-requests", "5", "--quiet", "--out", (dir / "no/such/dir.json").string()}),
            1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvmesh::sim
