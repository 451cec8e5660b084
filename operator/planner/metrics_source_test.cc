#include "operator/planner/metrics_source.h"

#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

#include "common/http_server.h"
#include "common/metrics.h"

namespace kvmesh::planner {
namespace {

std::string UrlDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// A stand-in for Prometheus's /api/v1/query that answers each PromQL text with a canned body
// (the code under test is the client and its JSON handling, not Prometheus; the integration test
// tests/planner_prometheus_test.sh runs the real server).
class FakePrometheus {
 public:
  FakePrometheus() : server_(Options()) {
    server_.Route("GET", "/api/v1/query", [this](const http::HttpRequest& req) {
      const std::string q = req.query.rfind("query=", 0) == 0 ? UrlDecode(req.query.substr(6)) : "";
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(q);
      auto it = answers_.find(q);
      if (it == answers_.end()) return http::HttpResponse{200, "application/json", {}, Vector("")};
      return it->second;
    });
    EXPECT_TRUE(server_.Start().ok());
  }
  ~FakePrometheus() { server_.Stop(std::chrono::seconds(1)); }

  static http::HttpServerOptions Options() {
    http::HttpServerOptions o;
    o.num_threads = 1;
    return o;
  }
  static std::string Vector(const std::string& value) {
    if (value.empty()) return R"({"status":"success","data":{"resultType":"vector","result":[]}})";
    return R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,")" +
           value + R"("]}]}})";
  }
  void Answer(const std::string& query, int status, const std::string& body) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[query] = http::HttpResponse{status, "application/json", {}, body};
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }
  std::vector<std::string> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  http::HttpServer server_;
  std::mutex mu_;
  std::map<std::string, http::HttpResponse> answers_;
  std::vector<std::string> seen_;
};

PrometheusSource::Options PromOptions(const std::string& url) {
  PrometheusSource::Options o;
  o.url = url + "/";
  o.window = "2m";
  o.selector = "namespace=\"prod\"";
  o.timeout = std::chrono::milliseconds(2000);
  return o;
}

TEST(PrometheusSourceTest, BuildsPromQLOnTheRouterMetrics) {
  PrometheusSource s(PromOptions("http://127.0.0.1:1"));
  EXPECT_EQ(s.RateQuery(),
            "sum(rate(kvmesh_router_requests_total{result!~\"rejected|unauthorized\",namespace=\"prod\"}[2m]))");
  EXPECT_EQ(s.CompletedRateQuery(),
            "sum(rate(kvmesh_router_requests_total{result!~\"rejected|unauthorized|shed\",namespace=\"prod\"}[2m]))");
  EXPECT_EQ(s.TokenRateQuery("kvmesh_router_prompt_tokens_total"),
            "sum(rate(kvmesh_router_prompt_tokens_total{namespace=\"prod\"}[2m]))");
  EXPECT_EQ(s.QuantileQuery("kvmesh_router_time_to_first_token_seconds"),
            "histogram_quantile(0.9, sum by (le) (rate(kvmesh_router_time_to_first_token_seconds_bucket{namespace=\"prod\"}[2m])))");
}

TEST(PrometheusSourceTest, SampleCombinesTheQueries) {
  FakePrometheus prom;
  PrometheusSource s(PromOptions(prom.url()));
  prom.Answer(s.RateQuery(), 200, FakePrometheus::Vector("12.5"));
  prom.Answer(s.CompletedRateQuery(), 200, FakePrometheus::Vector("10"));
  prom.Answer(s.TokenRateQuery("kvmesh_router_prompt_tokens_total"), 200, FakePrometheus::Vector("30000"));
  prom.Answer(s.TokenRateQuery("kvmesh_router_completion_tokens_total"), 200, FakePrometheus::Vector("1500"));
  prom.Answer(s.QuantileQuery("kvmesh_router_time_to_first_token_seconds"), 200, FakePrometheus::Vector("0.42"));
  prom.Answer(s.QuantileQuery("kvmesh_router_inter_token_latency_seconds"), 200, FakePrometheus::Vector("NaN"));
  auto sample = s.Sample(123);
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  EXPECT_EQ(sample->time_s, 123);
  EXPECT_DOUBLE_EQ(sample->request_rate, 12.5);
  EXPECT_DOUBLE_EQ(sample->mean_isl, 3000);
  EXPECT_DOUBLE_EQ(sample->mean_osl, 150);
  EXPECT_DOUBLE_EQ(sample->ttft_p90_s, 0.42);
  EXPECT_TRUE(std::isnan(sample->itl_p90_s)) << "no tokens in the window: unknown, not 0";
  EXPECT_EQ(sample->prefill_replicas, 0) << "the caller fills the replicas in";
  EXPECT_EQ(prom.seen().size(), 6u);
}

TEST(PrometheusSourceTest, NoTrafficYetIsZeroLoad) {
  FakePrometheus prom;  // every query: empty vector
  PrometheusSource s(PromOptions(prom.url()));
  auto sample = s.Sample(0);
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  EXPECT_EQ(sample->request_rate, 0);
  EXPECT_EQ(sample->mean_isl, 0);
  EXPECT_TRUE(std::isnan(sample->ttft_p90_s));
}

TEST(PrometheusSourceTest, QueryResultShapesAndErrors) {
  FakePrometheus prom;
  PrometheusSource s(PromOptions(prom.url()));
  prom.Answer("scalar", 200, R"({"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}})");
  prom.Answer("two", 200,
              R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}})");
  prom.Answer("bad", 400, R"({"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"})");
  prom.Answer("busy", 503, "service unavailable");
  prom.Answer("garbage", 200, "<html>");
  prom.Answer("matrix", 200, R"({"status":"success","data":{"resultType":"matrix","result":[]}})");
  prom.Answer("inf", 200, FakePrometheus::Vector("+Inf"));

  auto v = s.Query("scalar");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(**v, 7);
  v = s.Query("inf");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(std::isinf(**v));
  v = s.Query("empty");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());

  v = s.Query("two");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("2 series"), std::string::npos) << v.status().message();
  v = s.Query("bad");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find("parse error"), std::string::npos) << v.status().message();
  EXPECT_NE(v.status().message().find("bad"), std::string::npos);
  v = s.Query("busy");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(v.status().message().find("HTTP 503"), std::string::npos) << v.status().message();
  v = s.Query("garbage");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  v = s.Query("matrix");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("matrix"), std::string::npos);
}

TEST(PrometheusSourceTest, ServerDownIsUnavailable) {
  int port = 0;
  {
    FakePrometheus gone;  // a port that was just free and is closed again
    port = std::stoi(gone.url().substr(gone.url().rfind(':') + 1));
  }
  PrometheusSource::Options o = PromOptions("http://127.0.0.1:" + std::to_string(port));
  o.timeout = std::chrono::milliseconds(500);
  PrometheusSource s(o);
  auto sample = s.Sample(0);
  ASSERT_FALSE(sample.ok());
  EXPECT_EQ(sample.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(sample.status().message().find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << sample.status().message();
}

// A process-like /metrics endpoint: a real registry with the router's metric names, served over
// HTTP; the registry can be swapped to simulate a restart.
class Exporter {
 public:
  struct Metrics {
    std::unique_ptr<MetricsRegistry> registry = std::make_unique<MetricsRegistry>();
    CounterFamily* requests = nullptr;
    Counter* prompt = nullptr;
    Counter* completion = nullptr;
    Histogram* ttft = nullptr;
    Histogram* itl = nullptr;
  };
  static Metrics NewMetrics() {
    Metrics m;
    m.requests = *m.registry->AddCounter("kvmesh_router_requests_total", "r", {"endpoint", "result"});
    m.prompt = &(*m.registry->AddCounter("kvmesh_router_prompt_tokens_total", "p", {}))->WithLabels({});
    m.completion = &(*m.registry->AddCounter("kvmesh_router_completion_tokens_total", "c", {}))->WithLabels({});
    m.ttft = &(*m.registry->AddHistogram("kvmesh_router_time_to_first_token_seconds", "t", {}, {0.1, 0.25, 0.5, 1}))
                  ->WithLabels({});
    m.itl = &(*m.registry->AddHistogram("kvmesh_router_inter_token_latency_seconds", "i", {}, {0.01, 0.02, 0.04}))
                 ->WithLabels({});
    return m;
  }

  Exporter() : server_(FakePrometheus::Options()) {
    server_.Route("GET", "/metrics", [this](const http::HttpRequest&) {
      std::lock_guard<std::mutex> lock(mu_);
      return http::HttpResponse{200, kPrometheusTextContentType, {}, m_.registry->Render()};
    });
    EXPECT_TRUE(server_.Start().ok());
  }
  ~Exporter() { server_.Stop(std::chrono::seconds(1)); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()) + "/metrics"; }
  Metrics& m() { return m_; }
  void Restart() {
    std::lock_guard<std::mutex> lock(mu_);
    m_ = NewMetrics();
  }
  // n requests with isl/osl tokens, TTFT ttft, ITL itl (osl - 1 gaps each).
  void Traffic(int n, double isl, double osl, double ttft, double itl, const char* result = "ok") {
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < n; ++i) {
      m_.requests->WithLabels({"completions", result}).Inc();
      if (std::string(result) != "ok") continue;
      m_.prompt->Inc(isl);
      m_.completion->Inc(osl);
      m_.ttft->Observe(ttft);
      for (int t = 1; t < osl; ++t) m_.itl->Observe(itl);
    }
  }

 private:
  http::HttpServer server_;
  std::mutex mu_;
  Metrics m_ = NewMetrics();
};

TEST(ScrapeSourceTest, DifferencesTwoScrapes) {
  Exporter a, b;
  a.Traffic(50, 1000, 10, 0.05, 0.005);  // before the baseline: must not count
  ScrapeSource::Options o;
  o.targets = {a.url(), b.url()};
  ScrapeSource s(o);
  auto first = s.Sample(100);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kFailedPrecondition);

  // 10 s: a serves 100 requests, b 50, all ISL 2000 / OSL 100, TTFT 0.3 (bucket (0.25, 0.5]),
  // ITL 0.03 (bucket (0.02, 0.04]); 30 rejected requests are not load.
  a.Traffic(100, 2000, 100, 0.3, 0.03);
  b.Traffic(50, 2000, 100, 0.3, 0.03);
  b.Traffic(30, 0, 0, 0, 0, "rejected");
  auto sample = s.Sample(110);
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  EXPECT_DOUBLE_EQ(sample->request_rate, 15);
  EXPECT_DOUBLE_EQ(sample->mean_isl, 2000);
  EXPECT_DOUBLE_EQ(sample->mean_osl, 100);
  EXPECT_NEAR(sample->ttft_p90_s, 0.25 + 0.25 * 0.9, 1e-9);
  EXPECT_NEAR(sample->itl_p90_s, 0.02 + 0.02 * 0.9, 1e-9);

  // Nothing happens for 5 s: zero load, unknown latencies.
  sample = s.Sample(115);
  ASSERT_TRUE(sample.ok());
  EXPECT_EQ(sample->request_rate, 0);
  EXPECT_TRUE(std::isnan(sample->ttft_p90_s));
}

TEST(ScrapeSourceTest, RestartedTargetCountsFromZero) {
  Exporter a;
  ScrapeSource::Options o;
  o.targets = {a.url()};
  ScrapeSource s(o);
  a.Traffic(500, 100, 10, 0.05, 0.005);
  ASSERT_FALSE(s.Sample(0).ok());
  a.Restart();
  a.Traffic(20, 100, 10, 0.05, 0.005);
  auto sample = s.Sample(10);
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  EXPECT_DOUBLE_EQ(sample->request_rate, 2);
  EXPECT_NEAR(sample->ttft_p90_s, 0.0 + 0.1 * 0.9, 1e-9);
}

TEST(ScrapeSourceTest, TargetDownFailsWithoutLosingTheBaseline) {
  Exporter a;
  auto b = std::make_unique<Exporter>();
  ScrapeSource::Options o;
  o.targets = {a.url(), b->url()};
  o.timeout = std::chrono::milliseconds(500);
  ScrapeSource s(o);
  ASSERT_FALSE(s.Sample(0).ok());
  const std::string b_url = b->url();
  b.reset();
  a.Traffic(40, 100, 10, 0.05, 0.005);
  auto down = s.Sample(10);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(down.status().message().find(b_url), std::string::npos) << down.status().message();
  EXPECT_FALSE(s.Sample(20).ok()) << "still down";
}

TEST(ScrapeSourceTest, ExtractSumsChildrenAndSkipsExcludedResults) {
  auto parsed = ParsePrometheusText(
      "kvmesh_router_requests_total{endpoint=\"completions\",result=\"ok\"} 10\n"
      "kvmesh_router_requests_total{endpoint=\"chat_completions\",result=\"ok\"} 5\n"
      "kvmesh_router_requests_total{endpoint=\"chat_completions\",result=\"shed\"} 3\n"
      "kvmesh_router_requests_total{endpoint=\"chat_completions\",result=\"unauthorized\"} 100\n"
      "kvmesh_router_prompt_tokens_total 4500\n"
      "kvmesh_router_time_to_first_token_seconds_bucket{le=\"0.5\"} 2\n"
      "kvmesh_router_time_to_first_token_seconds_bucket{le=\"+Inf\"} 4\n"
      "other_metric 9\n");
  ASSERT_TRUE(parsed.ok());
  const ScrapeSource::Totals t = ScrapeSource::Extract(*parsed, RouterMetricNames());
  EXPECT_EQ(t.requests, 18);
  EXPECT_EQ(t.completed, 15);
  EXPECT_EQ(t.prompt_tokens, 4500);
  EXPECT_EQ(t.ttft_buckets.at(0.5), 2);
  EXPECT_EQ(t.ttft_buckets.at(INFINITY), 4);
  EXPECT_EQ(AgentMetricNames().completion_tokens, "kvmesh_agent_generated_tokens_total");
}

}  // namespace
}  // namespace kvmesh::planner
