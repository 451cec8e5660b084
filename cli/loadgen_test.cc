#include "cli/loadgen.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/http_server.h"

namespace kvmesh::bench {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// A real HTTP server on 127.0.0.1 that streams OpenAI-style SSE completions with known timing:
// the first token after `first_delay`, then one token per `token_gap`. The request's "model"
// picks a behaviour: "ok", "fail503", "streamerr" (error event after 2 tokens), "nodone" (stream
// ends without [DONE]), "nousage" (no usage chunk). The prompt length is echoed as prompt_tokens
// and half of it as cached_tokens.
class FakeOpenAiServer {
 public:
  FakeOpenAiServer(std::chrono::milliseconds first_delay, std::chrono::milliseconds token_gap)
      : first_delay_(first_delay), token_gap_(token_gap), server_(http::HttpServerOptions{}) {
    auto handler = [this](const http::HttpRequest& req, std::shared_ptr<http::Responder> resp) {
      Handle(req, std::move(resp));
    };
    server_.RouteAsync("POST", "/v1/completions", handler);
    server_.RouteAsync("POST", "/v1/chat/completions", handler);
    EXPECT_TRUE(server_.Start().ok());
  }
  ~FakeOpenAiServer() {
    server_.Stop(1000ms);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : threads_) t.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }
  int max_seen_in_flight() const { return max_in_flight_.load(); }
  // Streams send nothing until `n` streams are open at once (or 30 s passed).
  void SetGate(int n) { gate_ = n; }
  std::vector<json> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }

 private:
  void Handle(const http::HttpRequest& req, std::shared_ptr<http::Responder> resp) {
    json body = json::parse(req.body, nullptr, false);
    {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(body);
    }
    const std::string model = body.value("model", "ok");
    if (model == "fail503") {
      resp->Respond(http::JsonErrorResponse(503, "overloaded", "server_error", "unavailable"));
      return;
    }
    const bool chat = req.path == "/v1/chat/completions";
    const int max_tokens = body.value("max_tokens", 4);
    const size_t prompt = chat ? 3 : body["prompt"].size();
    auto writer = resp->StartStream(http::StreamWriter::Mode::kSse);
    std::lock_guard<std::mutex> lock(mu_);
    threads_.emplace_back([=, this] {
      const int now = ++in_flight_;
      int seen = max_in_flight_.load();
      while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
      }
      if (gate_ > 0) {
        std::unique_lock<std::mutex> g(gate_mu_);
        if (now >= gate_) gate_open_ = true;  // latched: streams that end later do not close it
        gate_cv_.notify_all();
        gate_cv_.wait_for(g, 30s, [&] { return gate_open_; });
      }
      std::this_thread::sleep_for(first_delay_);
      // A role-only chunk first (carries no token; must not count for TTFT).
      writer->Send(chat ? R"({"choices":[{"index":0,"delta":{"role":"assistant"}}]})"
                        : R"({"choices":[{"index":0,"text":""}]})");
      for (int i = 0; i < max_tokens; ++i) {
        if (i > 0) std::this_thread::sleep_for(token_gap_);
        if (model == "streamerr" && i == 2) {
          writer->Send(R"({"error":{"message":"engine exploded","type":"server_error"}})");
          writer->Send("[DONE]");
          writer->Close();
          --in_flight_;
          return;
        }
        json c = chat ? json{{"choices", {{{"index", 0}, {"delta", {{"content", "tok"}}}}}}}
                      : json{{"choices", {{{"index", 0}, {"text", "tok"}}}}};
        writer->Send(c.dump());
      }
      if (model != "nousage") {
        json u = {{"choices", json::array()},
                  {"usage",
                   {{"prompt_tokens", prompt},
                    {"completion_tokens", max_tokens},
                    {"prompt_tokens_details", {{"cached_tokens", prompt / 2}}}}}};
        writer->Send(u.dump());
      }
      if (model != "nodone") writer->Send("[DONE]");
      writer->Close();
      --in_flight_;
    });
  }

  const std::chrono::milliseconds first_delay_, token_gap_;
  http::HttpServer server_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::vector<json> bodies_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  int gate_ = 0;
  bool gate_open_ = false;  // guarded by gate_mu_
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
};

WorkloadFn FixedWorkload(uint32_t prompt_len, uint32_t max_tokens) {
  return [=](uint64_t i) -> std::optional<BenchRequest> {
    BenchRequest r;
    r.index = i;
    r.prompt_tokens.assign(prompt_len, static_cast<int32_t>(i % 100));
    r.prompt_len = prompt_len;
    r.max_tokens = max_tokens;
    return r;
  };
}

LoadgenOptions Options(const std::string& url, const std::string& model) {
  LoadgenOptions o;
  o.base_url = url;
  o.model = model;
  o.num_requests = 12;
  o.concurrency = 4;
  o.request_timeout = 5000ms;
  return o;
}

TEST(Loadgen, ClosedLoopMeasuresTtftItlAndUsage) {
  FakeOpenAiServer server(30ms, 5ms);
  auto o = Options(server.url() + "/v1/", "ok");  // trailing /v1/ is accepted
  auto run = RunLoad(o, FixedWorkload(10, 6));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_EQ(run->records.size(), 12u);
  EXPECT_EQ(run->client_threads, 4u);
  EXPECT_EQ(run->peak_in_flight, 4u);
  for (const auto& r : run->records) {
    ASSERT_TRUE(r.ok) << r.error_kind << ": " << r.error_message;
    EXPECT_GE(r.ttft_s, 0.029);  // the server waits 30 ms before the first token
    EXPECT_LT(r.ttft_s, 2.0);
    EXPECT_EQ(r.chunks, 6u);
    ASSERT_EQ(r.itl_s.size(), 5u);
    EXPECT_GE(r.e2e_s, 0.030 + 5 * 0.005);  // the server's own delays
    EXPECT_TRUE(r.usage_reported);
    EXPECT_EQ(r.output_tokens, 6u);
    EXPECT_EQ(r.prompt_tokens, 10u);
    EXPECT_EQ(r.cached_tokens, 5u);
  }
  const Summary s = Summarize(*run, {});
  EXPECT_EQ(s.ok, 12u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.output_tokens, 72u);
  EXPECT_DOUBLE_EQ(s.cached_token_ratio, 0.5);
  EXPECT_EQ(s.ttft_ms.count, 12u);
  EXPECT_GE(s.ttft_ms.p50, 29.0);
  EXPECT_EQ(s.itl_ms.count, 60u);
  EXPECT_GT(s.request_throughput, 0);
  EXPECT_NEAR(s.output_token_throughput, 72 / s.duration_s, 1e-9);
  // Every request streamed with usage and the right fields.
  for (const json& b : server.bodies()) {
    EXPECT_EQ(b["stream"], true);
    EXPECT_EQ(b["stream_options"]["include_usage"], true);
    EXPECT_EQ(b["ignore_eos"], true);
    EXPECT_EQ(b["max_tokens"], 6);
    EXPECT_EQ(b["prompt"].size(), 10u);
  }
}

TEST(Loadgen, ChatEndpointCountsContentDeltasNotTheRoleChunk) {
  FakeOpenAiServer server(20ms, 1ms);
  auto o = Options(server.url(), "ok");
  o.endpoint = Endpoint::kChat;
  o.num_requests = 3;
  o.ignore_eos = false;
  auto run = RunLoad(o, [](uint64_t i) -> std::optional<BenchRequest> {
    BenchRequest r;
    r.index = i;
    r.prompt_text = "hello there";
    r.max_tokens = 3;
    return r;
  });
  ASSERT_TRUE(run.ok());
  for (const auto& r : run->records) {
    ASSERT_TRUE(r.ok) << r.error_message;
    EXPECT_EQ(r.chunks, 3u);
    EXPECT_GE(r.ttft_s, 0.019);
  }
  for (const json& b : server.bodies()) {
    EXPECT_EQ(b["messages"][0]["content"], "hello there");
    EXPECT_FALSE(b.contains("ignore_eos"));
  }
}

TEST(Loadgen, ErrorsAreClassified) {
  FakeOpenAiServer server(1ms, 1ms);
  struct Case {
    std::string model;
    std::string kind;
  };
  for (const Case& c : {Case{"fail503", "http_503"}, Case{"streamerr", "stream_error"},
                        Case{"nodone", "incomplete"}}) {
    auto o = Options(server.url(), c.model);
    o.num_requests = 3;
    auto run = RunLoad(o, FixedWorkload(4, 4));
    ASSERT_TRUE(run.ok());
    const Summary s = Summarize(*run, {});
    EXPECT_EQ(s.failed, 3u) << c.model;
    EXPECT_EQ(s.errors.count(c.kind) ? s.errors.at(c.kind) : 0u, 3u) << c.model;
  }
  // Without a usage chunk, output tokens are the counted chunks.
  auto o = Options(server.url(), "nousage");
  auto run = RunLoad(o, FixedWorkload(4, 5));
  ASSERT_TRUE(run.ok());
  for (const auto& r : run->records) {
    EXPECT_TRUE(r.ok);
    EXPECT_FALSE(r.usage_reported);
    EXPECT_EQ(r.output_tokens, 5u);
  }
}

TEST(Loadgen, ConnectionRefusedIsAConnectError) {
  uint16_t port;
  {
    http::HttpServer s(http::HttpServerOptions{});
    ASSERT_TRUE(s.Start().ok());
    port = s.port();
    s.Stop(0ms);
  }
  auto o = Options("http://127.0.0.1:" + std::to_string(port), "ok");
  o.num_requests = 2;
  o.connect_timeout = 2000ms;
  auto run = RunLoad(o, FixedWorkload(4, 4));
  ASSERT_TRUE(run.ok());
  const Summary s = Summarize(*run, {});
  EXPECT_EQ(s.errors.count("connect") ? s.errors.at("connect") : 0u, 2u)
      << (run->records.empty() ? "" : run->records[0].error_kind);
}

TEST(Loadgen, PoissonArrivalsFollowTheSchedule) {
  FakeOpenAiServer server(1ms, 1ms);
  auto o = Options(server.url(), "ok");
  o.arrival = ArrivalMode::kPoisson;
  o.rate = 100;
  o.seed = 5;
  o.num_requests = 30;
  auto run = RunLoad(o, FixedWorkload(4, 2));
  ASSERT_TRUE(run.ok());
  ASSERT_EQ(run->records.size(), 30u);
  const auto sched = PoissonArrivals(100, 5, 30);
  for (const auto& r : run->records) {
    ASSERT_TRUE(r.ok);
    EXPECT_DOUBLE_EQ(r.scheduled_s, sched[r.index]);
    EXPECT_GE(r.start_s, r.scheduled_s - 1e-3);  // never early
  }
}

TEST(Loadgen, TimestampsAndDurationStopNewSends) {
  FakeOpenAiServer server(1ms, 1ms);
  auto o = Options(server.url(), "ok");
  o.arrival = ArrivalMode::kTimestamps;
  o.num_requests = 0;
  o.duration = 150ms;
  auto run = RunLoad(o, [](uint64_t i) -> std::optional<BenchRequest> {
    if (i >= 100) return std::nullopt;
    BenchRequest r;
    r.index = i;
    r.prompt_tokens = {1, 2, 3};
    r.max_tokens = 1;
    r.arrival_s = 0.05 * static_cast<double>(i);  // 0, 50, 100, 150 ms, ...
    return r;
  });
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->records.size(), 3u);  // 0, 50 and 100 ms are before the 150 ms cut-off
  for (const auto& r : run->records) EXPECT_GE(r.start_s, r.scheduled_s - 1e-3);
}

TEST(Loadgen, HoldsManyConcurrentStreams) {
  FakeOpenAiServer server(1ms, 1ms);
  server.SetGate(200);  // no stream ends before all 200 are open at once
  auto o = Options(server.url(), "ok");
  o.concurrency = 200;
  o.num_requests = 200;
  auto run = RunLoad(o, FixedWorkload(4, 2));
  ASSERT_TRUE(run.ok());
  const Summary s = Summarize(*run, {});
  EXPECT_EQ(s.ok, 200u);
  for (const auto& [kind, n] : s.errors) ADD_FAILURE() << n << " x " << kind;
  for (const auto& r : run->records) {
    if (!r.ok) {
      ADD_FAILURE() << "first error: " << r.error_message;
      break;
    }
  }
  EXPECT_EQ(run->peak_in_flight, 200u);
  EXPECT_EQ(server.max_seen_in_flight(), 200);
}

TEST(Loadgen, ValidateRejectsBadOptions) {
  LoadgenOptions o;
  o.base_url = "127.0.0.1:8000";
  o.num_requests = 1;
  EXPECT_FALSE(o.Validate().ok());
  o.base_url = "http://127.0.0.1:1";
  EXPECT_TRUE(o.Validate().ok());
  o.num_requests = 0;
  EXPECT_FALSE(o.Validate().ok());
  o.num_requests = 1;
  o.arrival = ArrivalMode::kPoisson;
  o.rate = 0;
  EXPECT_FALSE(o.Validate().ok());
  EXPECT_FALSE(RunLoad(o, FixedWorkload(1, 1)).ok());
}

TEST(Stats, PercentileMatchesNumpyLinear) {
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_NEAR(Percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(Percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_TRUE(std::isnan(Percentile({}, 50)));
  std::vector<double> h;
  for (int i = 1; i <= 100; ++i) h.push_back(i);
  EXPECT_NEAR(Percentile(h, 99), 99.01, 1e-9);
  const Distribution d = Describe({5, 1, NAN, 3});
  EXPECT_EQ(d.count, 3u);
  EXPECT_DOUBLE_EQ(d.mean, 3);
  EXPECT_DOUBLE_EQ(d.p50, 3);
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 5);
}

TEST(Stats, GoodputCountsRequestsMeetingBothSlas) {
  RunResult run;
  run.duration_s = 2;
  auto rec = [](double ttft, double e2e, uint32_t out) {
    RequestRecord r;
    r.ok = true;
    r.ttft_s = ttft;
    r.e2e_s = e2e;
    r.output_tokens = out;
    r.prompt_tokens = 100;
    r.cached_tokens = 25;
    r.usage_reported = true;
    return r;
  };
  run.records = {rec(0.1, 1.0, 10),     // TPOT 100 ms
                 rec(0.5, 0.6, 11),     // TTFT too high
                 rec(0.1, 0.19, 10),    // TPOT 10 ms: good
                 rec(0.05, 0.15, 11)};  // TPOT 10 ms: good
  RequestRecord failed;
  failed.error_kind = "http_503";
  run.records.push_back(failed);
  const Summary s = Summarize(run, Sla{200, 50});
  EXPECT_EQ(s.sent, 5u);
  EXPECT_EQ(s.ok, 4u);
  EXPECT_EQ(s.errors.at("http_503"), 1u);
  EXPECT_EQ(s.good_requests, 2u);
  EXPECT_DOUBLE_EQ(s.goodput, 1.0);
  EXPECT_DOUBLE_EQ(s.cached_token_ratio, 0.25);
  EXPECT_DOUBLE_EQ(s.request_throughput, 2.0);
  EXPECT_EQ(Summarize(run, {}).good_requests, 4u);  // no SLA: every ok request is good
  // The JSON report carries the numbers.
  const json j =
      json::parse(RenderJsonReport(s, run, R"({"rate":1})", true, {{"bench_rss_bytes", 42}}));
  EXPECT_EQ(j["summary"]["requests_ok"], 4);
  EXPECT_EQ(j["summary"]["errors"]["http_503"], 1);
  EXPECT_DOUBLE_EQ(j["summary"]["goodput"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["summary"]["ttft_ms"]["max"].get<double>(), 500.0);
  EXPECT_EQ(j["config"]["rate"], 1);
  EXPECT_EQ(j["bench_rss_bytes"], 42);
  EXPECT_EQ(j["requests"].size(), 5u);
  EXPECT_EQ(j["requests"][4]["error_kind"], "http_503");
  const std::string table = RenderTable(s);
  EXPECT_NE(table.find("TTFT"), std::string::npos);
  EXPECT_NE(table.find("good requests (SLA)"), std::string::npos);
}

TEST(Loadgen, RequestBodyForTokensAndText) {
  LoadgenOptions o;
  o.model = "m";
  BenchRequest r;
  r.prompt_tokens = {5, 6};
  r.max_tokens = 9;
  json b = json::parse(BuildRequestBody(o, r));
  EXPECT_EQ(b["prompt"], json::array({5, 6}));
  EXPECT_EQ(b["model"], "m");
  EXPECT_EQ(b["temperature"], 0);
  o.endpoint = Endpoint::kChat;
  b = json::parse(BuildRequestBody(o, r));
  EXPECT_EQ(b["messages"][0]["content"], "5 6");
  EXPECT_FALSE(b.contains("prompt"));
}

}  // namespace
}  // namespace kvmesh::bench
