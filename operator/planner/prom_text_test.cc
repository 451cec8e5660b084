#include "operator/planner/prom_text.h"

#include <cmath>

#include <gtest/gtest.h>

#include "common/metrics.h"

namespace kvmesh::planner {
namespace {

TEST(PromTextTest, ParsesWhatTheRegistryRenders) {
  MetricsRegistry r;
  auto c = r.AddCounter("kvmesh_router_requests_total", "Requests", {"endpoint", "result"});
  ASSERT_TRUE(c.ok());
  (*c)->WithLabels({"completions", "ok"}).Inc(7);
  (*c)->WithLabels({"chat \"x\"\\\n", "error"}).Inc(2);
  auto h = r.AddHistogram("kvmesh_router_time_to_first_token_seconds", "TTFT", {}, {0.1, 0.5});
  ASSERT_TRUE(h.ok());
  (*h)->WithLabels({}).Observe(0.3);
  auto parsed = ParsePrometheusText(r.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  int found = 0;
  for (const PromSample& s : *parsed) {
    if (s.name == "kvmesh_router_requests_total" && s.labels.at("result") == "ok") {
      EXPECT_EQ(s.labels.at("endpoint"), "completions");
      EXPECT_EQ(s.value, 7);
      ++found;
    }
    if (s.name == "kvmesh_router_requests_total" && s.labels.at("result") == "error") {
      EXPECT_EQ(s.labels.at("endpoint"), "chat \"x\"\\\n") << "escapes undone";
      ++found;
    }
    if (s.name == "kvmesh_router_time_to_first_token_seconds_bucket" && s.labels.at("le") == "+Inf") {
      EXPECT_EQ(s.value, 1);
      ++found;
    }
  }
  EXPECT_EQ(found, 3);
}

TEST(PromTextTest, AcceptsTimestampsSpecialValuesAndBlankLines) {
  auto p = ParsePrometheusText(
      "# HELP x help\n\n  a 1 1700000000000\r\nb{l=\"v\",} NaN\nc +Inf\nd -Inf\ne 1.5e3\nf{} 2\n");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), 6u);
  EXPECT_EQ((*p)[0].value, 1);
  EXPECT_TRUE(std::isnan((*p)[1].value));
  EXPECT_EQ((*p)[1].labels.at("l"), "v");
  EXPECT_TRUE(std::isinf((*p)[2].value));
  EXPECT_LT((*p)[3].value, 0);
  EXPECT_EQ((*p)[4].value, 1500);
  EXPECT_EQ((*p)[5].value, 2);
}

TEST(PromTextTest, ErrorsNameTheLine) {
  for (const char* bad : {"ok 1\nbad{l=\"v\" 1\n", "ok 1\n9bad 1\n", "ok 1\nx{l=\"unterminated} 1\n",
                          "ok 1\nx one\n", "ok 1\nx 1 12abc\n"}) {
    auto p = ParsePrometheusText(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(p.status().message().rfind("line 2:", 0), 0u) << p.status().message();
  }
}

TEST(HistogramQuantileTest, MatchesPrometheus) {
  const double inf = INFINITY;
  // Same buckets as tests/prometheus_scrape_test.sh: 0.1:1, 0.5:3, 1:3, 5:4, +Inf:4.
  std::vector<std::pair<double, double>> b = {{0.1, 1}, {0.5, 3}, {1, 3}, {5, 4}, {inf, 4}};
  EXPECT_NEAR(HistogramQuantile(0.5, b), 0.3, 1e-12);
  EXPECT_NEAR(HistogramQuantile(0.25, b), 0.1, 1e-12);       // rank 1: top of the first bucket
  EXPECT_NEAR(HistogramQuantile(0.1, b), 0.04, 1e-12);       // first bucket from 0
  EXPECT_NEAR(HistogramQuantile(0.9, b), 1 + 4 * 0.6, 1e-12);
  // All in (0.25, 0.5]: p90 = 0.25 + 0.25 * 0.9.
  EXPECT_NEAR(HistogramQuantile(0.9, {{0.25, 0}, {0.5, 10}, {inf, 10}}), 0.475, 1e-12);
  // Rank in +Inf: the highest finite bound.
  EXPECT_EQ(HistogramQuantile(0.9, {{0.25, 0}, {0.5, 1}, {inf, 10}}), 0.5);
  EXPECT_TRUE(std::isnan(HistogramQuantile(0.9, {{0.5, 0}, {inf, 0}})));  // no observations
  EXPECT_TRUE(std::isnan(HistogramQuantile(0.9, {{0.5, 3}})));            // no +Inf bucket
  EXPECT_EQ(HistogramQuantile(1.5, b), inf);
  // Unsorted input and a non-monotonic count (racing scrape) are repaired.
  EXPECT_NEAR(HistogramQuantile(0.5, {{inf, 4}, {0.5, 3}, {0.1, 1}, {1, 2.5}, {5, 4}}), 0.3, 1e-12);
}

}  // namespace
}  // namespace kvmesh::planner
