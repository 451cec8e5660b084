#include "common/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/check.h"

namespace kvmesh {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- golden exposition ------------------------------------------------------------------------

TEST(MetricsTest, ContentType) {
  EXPECT_STREQ(kPrometheusTextContentType, "text/plain; version=0.0.4; charset=utf-8");
}

TEST(MetricsTest, CounterGolden) {
  MetricsRegistry reg;
  auto fam = reg.AddCounter("kvmesh_test_requests_total", "Requests served.", {"code", "method"});
  ASSERT_TRUE(fam.ok()) << fam.status().ToString();
  // Created out of order: output is sorted by label values.
  (*fam)->WithLabels({"404", "GET"}).Inc(0.5);
  Counter& ok_get = (*fam)->WithLabels({"200", "GET"});
  ok_get.Inc();
  ok_get.Inc(2);
  ok_get.Inc(-5);    // ignored: counters never go down
  ok_get.Inc(kNaN);  // ignored
  EXPECT_EQ(&ok_get, &(*fam)->WithLabels({"200", "GET"}));
  EXPECT_EQ(ok_get.Value(), 3);
  EXPECT_EQ(reg.Render(),
            "# HELP kvmesh_test_requests_total Requests served.\n"
            "# TYPE kvmesh_test_requests_total counter\n"
            "kvmesh_test_requests_total{code=\"200\",method=\"GET\"} 3\n"
            "kvmesh_test_requests_total{code=\"404\",method=\"GET\"} 0.5\n");
}

TEST(MetricsTest, CounterMixesWholeAndFractionalIncrements) {
  MetricsRegistry reg;
  Counter& c = (*reg.AddCounter("kvmesh_test_bytes_total", "Bytes.", {}))->WithLabels({});
  c.Inc(3);
  c.Inc(0.25);
  c.Inc(1e30);  // too large for the integer part: goes to the double part
  EXPECT_EQ(c.Value(), 1e30 + 3.25);
  c.Inc(kInf);
  EXPECT_EQ(c.Value(), kInf);
}

TEST(MetricsTest, GaugeGoldenWithEscapingAndSpecialValues) {
  MetricsRegistry reg;
  auto fam = reg.AddGauge("kvmesh_test_temperature_celsius",
                          "Line one \\ backslash\nline two \"quoted\".", {"sensor"});
  ASSERT_TRUE(fam.ok()) << fam.status().ToString();
  (*fam)->WithLabels({"a\\b\"c\nd"}).Set(1.5);
  (*fam)->WithLabels({"nan"}).Set(kNaN);
  (*fam)->WithLabels({"neg_inf"}).Set(-kInf);
  (*fam)->WithLabels({"pos_inf"}).Set(kInf);
  Gauge& g = (*fam)->WithLabels({"updown"});
  g.Set(10);
  g.Inc();
  g.Dec(3.5);
  g.Inc(-0.5);
  EXPECT_EQ(reg.Render(),
            "# HELP kvmesh_test_temperature_celsius Line one \\\\ backslash\\nline two "
            "\"quoted\".\n"
            "# TYPE kvmesh_test_temperature_celsius gauge\n"
            "kvmesh_test_temperature_celsius{sensor=\"a\\\\b\\\"c\\nd\"} 1.5\n"
            "kvmesh_test_temperature_celsius{sensor=\"nan\"} NaN\n"
            "kvmesh_test_temperature_celsius{sensor=\"neg_inf\"} -Inf\n"
            "kvmesh_test_temperature_celsius{sensor=\"pos_inf\"} +Inf\n"
            "kvmesh_test_temperature_celsius{sensor=\"updown\"} 7\n");
}

TEST(MetricsTest, HistogramGolden) {
  MetricsRegistry reg;
  auto fam = reg.AddHistogram("kvmesh_test_latency_seconds", "Latency.", {"route"},
                              {0.5, 1, 10, kInf});  // trailing +Inf is implicit and dropped
  ASSERT_TRUE(fam.ok()) << fam.status().ToString();
  EXPECT_EQ((*fam)->bounds(), (std::vector<double>{0.5, 1, 10}));
  Histogram& h = (*fam)->WithLabels({"/v1/x"});
  for (double v : {0.25, 0.5, 5.0, 100.0}) h.Observe(v);  // 0.5 is on a bound: le="0.5"
  (*fam)->WithLabels({"empty"});
  EXPECT_EQ(reg.Render(),
            "# HELP kvmesh_test_latency_seconds Latency.\n"
            "# TYPE kvmesh_test_latency_seconds histogram\n"
            "kvmesh_test_latency_seconds_bucket{route=\"/v1/x\",le=\"0.5\"} 2\n"
            "kvmesh_test_latency_seconds_bucket{route=\"/v1/x\",le=\"1\"} 2\n"
            "kvmesh_test_latency_seconds_bucket{route=\"/v1/x\",le=\"10\"} 3\n"
            "kvmesh_test_latency_seconds_bucket{route=\"/v1/x\",le=\"+Inf\"} 4\n"
            "kvmesh_test_latency_seconds_sum{route=\"/v1/x\"} 105.75\n"
            "kvmesh_test_latency_seconds_count{route=\"/v1/x\"} 4\n"
            "kvmesh_test_latency_seconds_bucket{route=\"empty\",le=\"0.5\"} 0\n"
            "kvmesh_test_latency_seconds_bucket{route=\"empty\",le=\"1\"} 0\n"
            "kvmesh_test_latency_seconds_bucket{route=\"empty\",le=\"10\"} 0\n"
            "kvmesh_test_latency_seconds_bucket{route=\"empty\",le=\"+Inf\"} 0\n"
            "kvmesh_test_latency_seconds_sum{route=\"empty\"} 0\n"
            "kvmesh_test_latency_seconds_count{route=\"empty\"} 0\n");
}

TEST(MetricsTest, HistogramWithoutLabelsAndSpecialObservations) {
  MetricsRegistry reg;
  auto fam = reg.AddHistogram("kvmesh_test_size_bytes", "Size.", {}, {1, 2});
  ASSERT_TRUE(fam.ok());
  Histogram& h = (*fam)->WithLabels({});
  h.Observe(-kInf);  // first bucket
  h.Observe(kInf);   // +Inf bucket
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{1, 1, 2}));
  EXPECT_EQ(s.count, 2u);
  EXPECT_TRUE(std::isnan(s.sum));  // -Inf + Inf
  h.Observe(kNaN);                 // +Inf bucket, as in the Go client
  s = h.Read();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{1, 1, 3}));
  EXPECT_THAT(reg.Render(), HasSubstr("kvmesh_test_size_bytes_bucket{le=\"1\"} 1\n"
                                      "kvmesh_test_size_bytes_bucket{le=\"2\"} 1\n"
                                      "kvmesh_test_size_bytes_bucket{le=\"+Inf\"} 3\n"
                                      "kvmesh_test_size_bytes_sum NaN\n"
                                      "kvmesh_test_size_bytes_count 3\n"));
}

TEST(MetricsTest, UnlabelledFamiliesRenderZeroLabelledEmptyFamiliesRenderNothing) {
  MetricsRegistry reg;
  ASSERT_TRUE(reg.AddGauge("kvmesh_b_free_blocks", "Free.", {}).ok());
  ASSERT_TRUE(reg.AddCounter("kvmesh_a_events_total", "Events.", {}).ok());
  ASSERT_TRUE(reg.AddCounter("kvmesh_c_errors_total", "Errors.", {"kind"}).ok());
  // Families sorted by name regardless of registration order.
  EXPECT_EQ(reg.Render(),
            "# HELP kvmesh_a_events_total Events.\n"
            "# TYPE kvmesh_a_events_total counter\n"
            "kvmesh_a_events_total 0\n"
            "# HELP kvmesh_b_free_blocks Free.\n"
            "# TYPE kvmesh_b_free_blocks gauge\n"
            "kvmesh_b_free_blocks 0\n");
  EXPECT_EQ(reg.FamilyNames(), (std::vector<std::string>{"kvmesh_a_events_total",
                                                         "kvmesh_b_free_blocks",
                                                         "kvmesh_c_errors_total"}));
}

TEST(MetricsTest, FormatMetricValue) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(1), "1");
  EXPECT_EQ(FormatMetricValue(-2.5), "-2.5");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(1e20), "1e+20");
  EXPECT_EQ(FormatMetricValue(123456789), "123456789");
  EXPECT_EQ(FormatMetricValue(kNaN), "NaN");
  EXPECT_EQ(FormatMetricValue(kInf), "+Inf");
  EXPECT_EQ(FormatMetricValue(-kInf), "-Inf");
  // Shortest round trip.
  EXPECT_EQ(std::strtod(FormatMetricValue(0.1 + 0.2).c_str(), nullptr), 0.1 + 0.2);
}

TEST(MetricsTest, EscapingReplacesInvalidUtf8) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("q\"b\\n\n"), "q\\\"b\\\\n\\n");
  EXPECT_EQ(EscapeHelp("q\"b\\n\n"), "q\"b\\\\n\\n");  // quotes stay in help
  EXPECT_EQ(EscapeLabelValue("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");  // valid multi-byte kept
  EXPECT_EQ(EscapeLabelValue("a\xFF" "b"), "a\xEF\xBF\xBD" "b");    // invalid byte
  EXPECT_EQ(EscapeLabelValue("a\xC3"), "a\xEF\xBF\xBD");            // truncated sequence
  EXPECT_EQ(EscapeLabelValue("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(EscapeLabelValue("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

// ---- validation -------------------------------------------------------------------------------

TEST(MetricsTest, RejectsBadMetricNames) {
  MetricsRegistry reg;
  for (const char* bad : {"", "1abc_total", "kvmesh:x_total", "kvmesh_Camel_total",
                          "kvmesh-x_total", "kvmesh x_total", "kvmesh_\xC3\xA9_total"}) {
    auto r = reg.AddCounter(bad, "Help.", {});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(std::string("\"") + bad + "\""));
  }
  EXPECT_TRUE(reg.AddCounter("_kvmesh_x9_total", "Help.", {}).ok());
  EXPECT_TRUE(ValidateMetricName("kvmesh_kv_blocks_free").ok());
}

TEST(MetricsTest, RejectsBadLabelNames) {
  MetricsRegistry reg;
  for (const char* bad : {"", "__name", "1a", "a-b", "Tier", "a:b"}) {
    auto r = reg.AddGauge("kvmesh_test_g", "Help.", {"ok", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto dup = reg.AddGauge("kvmesh_test_g", "Help.", {"tier", "tier"});
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.status().message(), HasSubstr("duplicate label name \"tier\""));
  auto le = reg.AddHistogram("kvmesh_test_h_seconds", "Help.", {"le"}, {1});
  EXPECT_EQ(le.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(reg.AddGauge("kvmesh_test_le", "le is fine outside histograms.", {"le", "_x"}).ok());
  EXPECT_TRUE(reg.FamilyNames() == std::vector<std::string>{"kvmesh_test_le"});
}

TEST(MetricsTest, EnforcesNamingConventions) {
  MetricsRegistry reg;
  auto counter = reg.AddCounter("kvmesh_test_requests", "Help.", {});
  EXPECT_EQ(counter.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(counter.status().message(), HasSubstr("_total"));
  EXPECT_EQ(reg.AddGauge("kvmesh_test_total", "Help.", {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.AddHistogram("kvmesh_test_total", "Help.", {}, {1}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.AddGauge("kvmesh_test_g", "", {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(MetricsTest, RejectsBadBuckets) {
  MetricsRegistry reg;
  struct Case {
    std::vector<double> buckets;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{{{1, 2, 2}, "strictly increasing"},
                                         {{2, 1}, "strictly increasing"},
                                         {{1, kNaN}, "not finite"},
                                         {{-kInf, 1}, "not finite"},
                                         {{1, kInf, 2}, "not finite"}}) {
    auto r = reg.AddHistogram("kvmesh_test_seconds", "Help.", {}, c.buckets);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.want));
  }
  auto only_inf = reg.AddHistogram("kvmesh_test_seconds", "Help.", {}, {});
  ASSERT_TRUE(only_inf.ok());
  EXPECT_THAT(reg.Render(), HasSubstr("kvmesh_test_seconds_bucket{le=\"+Inf\"} 0\n"));
}

TEST(MetricsTest, DuplicateRegistration) {
  MetricsRegistry reg;
  auto a = reg.AddCounter("kvmesh_test_x_total", "Help.", {"a"});
  ASSERT_TRUE(a.ok());
  auto again = reg.AddCounter("kvmesh_test_x_total", "Help.", {"a"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*a, *again);  // identical: the same family

  auto other_labels = reg.AddCounter("kvmesh_test_x_total", "Help.", {"b"});
  EXPECT_EQ(other_labels.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(other_labels.status().message(), HasSubstr("labels [a] vs [b]"));
  EXPECT_EQ(reg.AddCounter("kvmesh_test_x_total", "Other help.", {"a"}).status().code(),
            StatusCode::kAlreadyExists);

  auto g = reg.AddGauge("kvmesh_test_y", "Help.", {});
  ASSERT_TRUE(g.ok());
  auto as_hist = reg.AddHistogram("kvmesh_test_y", "Help.", {}, {1});
  EXPECT_EQ(as_hist.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(as_hist.status().message(), HasSubstr("type gauge vs histogram"));

  auto h = reg.AddHistogram("kvmesh_test_z_seconds", "Help.", {}, {1, 2});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*reg.AddHistogram("kvmesh_test_z_seconds", "Help.", {}, {1, 2}), *h);
  EXPECT_EQ(reg.AddHistogram("kvmesh_test_z_seconds", "Help.", {}, {1, 3}).status().code(),
            StatusCode::kAlreadyExists);
  // A histogram's sample names are taken too.
  auto clash = reg.AddGauge("kvmesh_test_z_seconds_count", "Help.", {});
  EXPECT_EQ(clash.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(clash.status().message(), HasSubstr("kvmesh_test_z_seconds"));
  ASSERT_TRUE(reg.AddGauge("kvmesh_test_w_sum", "Help.", {}).ok());
  EXPECT_EQ(reg.AddHistogram("kvmesh_test_w", "Help.", {}, {1}).status().code(),
            StatusCode::kAlreadyExists);
}

// Returns the value of the sample line `series` in `text`, or -1 if it is absent.
double SampleValue(const std::string& text, const std::string& series) {
  const std::string needle = "\n" + series + " ";
  const size_t pos = ("\n" + text).find(needle);
  if (pos == std::string::npos) return -1;
  return std::strtod(text.c_str() + pos + needle.size() - 1, nullptr);
}

TEST(MetricsTest, WrongLabelCount) {
  MetricsRegistry reg;
  CounterFamily* fam = *reg.AddCounter("kvmesh_test_wrong_total", "Help.", {"a", "b"});
  auto r = fam->TryWithLabels({"x"});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("kvmesh_test_wrong_total"));
  ASSERT_TRUE(fam->TryWithLabels({"x", "y"}).ok());

  const std::string bugs = "kvmesh_internal_bugs_total{component=\"metrics\"}";
  const double before = std::max(0.0, SampleValue(DefaultMetricsRegistry().Render(), bugs));
  Counter& detached = fam->WithLabels({"only_one"});  // a bug, but no crash
  detached.Inc(7);
  EXPECT_EQ(&detached, &fam->WithLabels({"1", "2", "3"}));
  EXPECT_EQ(SampleValue(DefaultMetricsRegistry().Render(), bugs), before + 2);
  EXPECT_THAT(reg.Render(), Not(HasSubstr("only_one")));
  EXPECT_THAT(reg.Render(), Not(HasSubstr(" 7\n")));
}

TEST(MetricsTest, DefaultRegistryReservesBugCounter) {
  EXPECT_THAT(DefaultMetricsRegistry().FamilyNames(),
              ::testing::Contains("kvmesh_internal_bugs_total"));
  EXPECT_EQ(DefaultMetricsRegistry()
                .AddCounter("kvmesh_internal_bugs_total", "Different help.", {"component"})
                .status()
                .code(),
            StatusCode::kAlreadyExists);
}

TEST(MetricsTest, KvmeshBugCountsAndContinues) {
  const std::string series = "kvmesh_internal_bugs_total{component=\"bug_test\\\"q\"}";
  EXPECT_EQ(SampleValue(DefaultMetricsRegistry().Render(), series), -1);
  KVMESH_BUG("bug_test\"q", "something impossible happened");
  KVMESH_BUG("bug_test\"q", std::string("again, value=") + std::to_string(42));
  EXPECT_EQ(SampleValue(DefaultMetricsRegistry().Render(), series), 2);
  EXPECT_THAT(DefaultMetricsRegistry().Render(),
              HasSubstr("# TYPE kvmesh_internal_bugs_total counter\n"));
}

// ---- concurrency ------------------------------------------------------------------------------

TEST(MetricsTest, ConcurrentUpdatesSumExactly) {
  MetricsRegistry reg;
  CounterFamily* counters = *reg.AddCounter("kvmesh_test_ops_total", "Ops.", {"kind"});
  GaugeFamily* gauges = *reg.AddGauge("kvmesh_test_level", "Level.", {});
  HistogramFamily* hists = *reg.AddHistogram("kvmesh_test_op_seconds", "Op.", {}, {1, 2, 3});
  constexpr int kThreads = 4;
  constexpr int kIters = 20000;
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread creates/looks up the same children concurrently.
      Counter& whole = counters->WithLabels({"whole"});
      Counter& half = counters->WithLabels({"half"});
      seen[t] = &whole;
      Gauge& level = gauges->WithLabels({});
      Histogram& h = hists->WithLabels({});
      for (int i = 0; i < kIters; ++i) {
        whole.Inc();
        half.Inc(0.5);
        level.Inc(2);
        level.Dec();
        h.Observe(i % 4);  // 0,1,2,3: one each in le=1 (two), le=2, le=3
        if (i % 5000 == 0) (void)reg.Render();  // scrapes race with updates
      }
    });
  }
  for (auto& th : threads) th.join();
  for (Counter* c : seen) EXPECT_EQ(c, seen[0]);
  const double n = static_cast<double>(kThreads) * kIters;
  EXPECT_EQ(counters->WithLabels({"whole"}).Value(), n);
  EXPECT_EQ(counters->WithLabels({"half"}).Value(), n / 2);
  EXPECT_EQ(gauges->WithLabels({}).Value(), n);
  Histogram::Snapshot s = hists->WithLabels({}).Read();
  const uint64_t q = static_cast<uint64_t>(n) / 4;
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{2 * q, 3 * q, 4 * q, 4 * q}));
  EXPECT_EQ(s.count, 4 * q);
  EXPECT_EQ(s.sum, 6.0 * q);
}

TEST(MetricsTest, ConcurrentRegistrationReturnsOneFamily) {
  MetricsRegistry reg;
  std::vector<GaugeFamily*> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto r = reg.AddGauge("kvmesh_test_shared", "Shared.", {"x"});
      got[t] = r.ok() ? *r : nullptr;
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_NE(got[0], nullptr);
  for (GaugeFamily* f : got) EXPECT_EQ(f, got[0]);
}

// ---- promtool ---------------------------------------------------------------------------------

struct PromtoolResult {
  int exit_code = -1;
  std::string output;
};

std::string FindPromtool() {
  if (const char* env = std::getenv("KVMESH_PROMTOOL"); env != nullptr && *env != '\0') return env;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string p = path;
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      std::string candidate = p.substr(start, end - start) + "/promtool";
      if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  if (access("/usr/bin/promtool", X_OK) == 0) return "/usr/bin/promtool";
  return "";
}

// Feeds `text` to `promtool check metrics` on stdin; returns its exit code and stdout+stderr.
PromtoolResult RunPromtool(const std::string& text) {
  PromtoolResult result;
  const std::string promtool = FindPromtool();
  if (promtool.empty()) {
    ADD_FAILURE() << "promtool not found (Debian package 'prometheus'); it is required";
    return result;
  }
  std::string path = testing::TempDir() + "kvmesh_metrics_XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp failed for " << path;
    return result;
  }
  close(fd);
  std::ofstream(path, std::ios::binary) << text;
  const std::string cmd = "'" + promtool + "' check metrics < '" + path + "' 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed: " << cmd;
    std::remove(path.c_str());
    return result;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) result.output.append(buf, n);
  const int status = pclose(pipe);
  std::remove(path.c_str());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(MetricsPromtoolTest, FullRegistryPassesPromtool) {
  MetricsRegistry reg;
  CounterFamily* requests =
      *reg.AddCounter("kvmesh_test_requests_total", "Requests by code.\nSecond \\ line.",
                      {"code", "path"});
  requests->WithLabels({"200", "/v1/chat"}).Inc(12);
  requests->WithLabels({"500", "quote\" back\\slash\nnewline \xC3\xA9 \xFF"}).Inc(0.5);
  ASSERT_TRUE(reg.AddCounter("kvmesh_test_restarts_total", "Restarts.", {}).ok());
  GaugeFamily* gauges = *reg.AddGauge("kvmesh_test_utilization_ratio", "Utilization.", {"gpu"});
  gauges->WithLabels({"0"}).Set(0.25);
  gauges->WithLabels({"nan"}).Set(kNaN);
  gauges->WithLabels({"pinf"}).Set(kInf);
  gauges->WithLabels({"ninf"}).Set(-kInf);
  gauges->WithLabels({"big"}).Set(1e300);
  gauges->WithLabels({"tiny"}).Set(-5e-324);
  HistogramFamily* latency = *reg.AddHistogram("kvmesh_test_request_duration_seconds",
                                               "Request latency.", {"route"},
                                               DefaultLatencyBuckets());
  for (double v : {0.0005, 0.003, 0.2, 7.0, 1000.0}) latency->WithLabels({"a\"b"}).Observe(v);
  latency->WithLabels({"idle"});
  HistogramFamily* sizes =
      *reg.AddHistogram("kvmesh_test_batch_size", "Batch size.", {}, ExponentialBuckets(1, 2, 8));
  sizes->WithLabels({}).Observe(3);
  const std::string text = reg.Render();

  const PromtoolResult r = RunPromtool(text);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n--- input ---\n" << text;
  EXPECT_EQ(r.output, "") << "--- input ---\n" << text;
}

TEST(MetricsPromtoolTest, DefaultRegistryWithBugsPassesPromtool) {
  KVMESH_BUG("promtool_test", "exercise the bug counter");
  const PromtoolResult r = RunPromtool(DefaultMetricsRegistry().Render());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");
}

// Negative controls: the promtool check above can fail, so a broken setup cannot pass silently.
TEST(MetricsPromtoolTest, PromtoolRejectsBrokenText) {
  const PromtoolResult broken = RunPromtool("this is { not a metric\n");
  EXPECT_NE(broken.exit_code, 0) << broken.output;
  EXPECT_NE(broken.output, "");
  // An unescaped quote in a label value, as a renderer without escaping would write it.
  const PromtoolResult quote =
      RunPromtool("# HELP g Help.\n# TYPE g gauge\ng{a=\"x\"y\"} 1\n");
  EXPECT_NE(quote.exit_code, 0) << quote.output;
  // A lint problem (counter without _total) is a complaint too.
  const PromtoolResult lint = RunPromtool("# HELP c Help.\n# TYPE c counter\nc 1\n");
  EXPECT_NE(lint.exit_code, 0) << lint.output;
  EXPECT_THAT(lint.output, HasSubstr("_total"));
}

}  // namespace
}  // namespace kvmesh
