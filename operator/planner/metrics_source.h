// Where the planner's LoadSamples come from.
//
//  - PrometheusSource asks a Prometheus server (GET /api/v1/query, instant queries) for the rate of
//    requests, prompt and completion tokens and the p90 of the TTFT/ITL histograms over a window,
//    summed over all scraped routers (or agents) that match a label selector.
//  - ScrapeSource reads the Prometheus text /metrics of the routers (or agents) directly and
//    differences counters and histogram buckets between two scrapes: no Prometheus needed (this is
//    what `kvmesh up` uses); the first call only records a baseline (FailedPrecondition).
//
// Metric names default to the router's (router/router_metrics.cc); AgentMetricNames() gives the
// agent's. Neither source knows the pools' replica counts: LoadSample::prefill_replicas and
// decode_replicas are left 0 for the caller to fill in. Errors never throw: an unreachable server,
// a non-2xx answer, a Prometheus "error" status or a malformed body is a Status naming the URL or
// query, and the caller passes it to Planner::Hold(). Not thread-safe (one HttpClient inside).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/http_client.h"
#include "common/status.h"
#include "operator/planner/planner.h"
#include "operator/planner/prom_text.h"

namespace kvmesh::planner {

struct LoadMetricNames {
  std::string requests = "kvmesh_router_requests_total";          // counter {endpoint, result}
  std::string prompt_tokens = "kvmesh_router_prompt_tokens_total";  // counter
  std::string completion_tokens = "kvmesh_router_completion_tokens_total";
  std::string ttft = "kvmesh_router_time_to_first_token_seconds";  // histogram
  std::string itl = "kvmesh_router_inter_token_latency_seconds";   // histogram
  // Values of the `result` label that are not load (malformed or unauthorized requests).
  std::vector<std::string> excluded_results = {"rejected", "unauthorized"};
  // Results that are load but never reached a worker (no tokens counted): not in the ISL/OSL
  // divisor.
  std::vector<std::string> unrouted_results = {"shed"};
};
LoadMetricNames RouterMetricNames();
LoadMetricNames AgentMetricNames();  // kvmesh_agent_*, completion = generated tokens

class MetricsSource {
 public:
  virtual ~MetricsSource() = default;
  // The load over the recent past, time_s = now_s. See the class comments for errors.
  virtual StatusOr<LoadSample> Sample(double now_s) = 0;
};

class PrometheusSource : public MetricsSource {
 public:
  struct Options {
    std::string url = "http://127.0.0.1:9090";  // Prometheus base URL
    std::string window = "1m";                  // range of rate(): a PromQL duration
    std::string selector;  // extra label matchers, e.g. `namespace="prod",graph="llama"`; "" = all
    LoadMetricNames names;
    double quantile = 0.9;
    std::chrono::milliseconds timeout{5000};
  };
  explicit PrometheusSource(Options options);

  StatusOr<LoadSample> Sample(double now_s) override;

  // The PromQL expressions Sample() sends (exposed for docs and tests).
  std::string RateQuery() const;            // requests/s that are load
  std::string CompletedRateQuery() const;   // requests/s that reached a worker (ISL/OSL divisor)
  std::string TokenRateQuery(const std::string& counter) const;
  std::string QuantileQuery(const std::string& histogram) const;

  // One instant query -> the value of its single series; nullopt for an empty result. Errors:
  // Unavailable (transport, non-2xx), InvalidArgument (Prometheus rejected the query, or the
  // body is not a vector/scalar result, or it holds more than one series).
  StatusOr<std::optional<double>> Query(const std::string& promql);

 private:
  std::string Selector(const std::string& extra) const;
  Options options_;
  http::HttpClient client_;
};

class ScrapeSource : public MetricsSource {
 public:
  struct Options {
    std::vector<std::string> targets;  // /metrics URLs, e.g. http://127.0.0.1:8080/metrics
    LoadMetricNames names;
    double quantile = 0.9;
    std::chrono::milliseconds timeout{5000};
  };
  explicit ScrapeSource(Options options);

  // Scrapes every target. Errors: Unavailable/InvalidArgument naming the target that failed (no
  // state changes then); FailedPrecondition on the first successful call (baseline only).
  // Counters that went down (a restarted process) count from zero.
  StatusOr<LoadSample> Sample(double now_s) override;

  struct Totals {  // cumulative values of one target at one scrape
    double requests = 0, completed = 0, prompt_tokens = 0, completion_tokens = 0;
    std::map<double, double> ttft_buckets, itl_buckets;  // le -> cumulative count
  };
  // Totals of one parsed /metrics page (exposed for tests).
  static Totals Extract(const std::vector<PromSample>& samples, const LoadMetricNames& names);

 private:
  Options options_;
  http::HttpClient client_;
  std::map<std::string, std::pair<double, Totals>> previous_;  // target -> (time, totals)
};

}  // namespace kvmesh::planner
