#include "operator/planner/metrics_source.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "operator/planner/prom_text.h"

namespace kvmesh::planner {

namespace {

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

http::HttpClientOptions ClientOptions(std::chrono::milliseconds timeout) {
  http::HttpClientOptions o;
  o.connect_timeout = timeout;
  o.read_timeout = timeout;
  o.user_agent = "kvmesh-planner";
  return o;
}

double Nan() { return std::numeric_limits<double>::quiet_NaN(); }

}  // namespace

LoadMetricNames RouterMetricNames() { return LoadMetricNames{}; }

LoadMetricNames AgentMetricNames() {
  LoadMetricNames n;
  n.requests = "kvmesh_agent_requests_total";
  n.prompt_tokens = "kvmesh_agent_prompt_tokens_total";
  n.completion_tokens = "kvmesh_agent_generated_tokens_total";
  n.ttft = "kvmesh_agent_time_to_first_token_seconds";
  n.itl = "kvmesh_agent_inter_token_latency_seconds";
  n.excluded_results = {"rejected"};
  n.unrouted_results = {};
  return n;
}

// ---- PrometheusSource ----------------------------------------------------------------------------

PrometheusSource::PrometheusSource(Options options)
    : options_(std::move(options)), client_(ClientOptions(options_.timeout)) {
  while (!options_.url.empty() && options_.url.back() == '/') options_.url.pop_back();
}

std::string PrometheusSource::Selector(const std::string& extra) const {
  std::vector<std::string> parts;
  if (!extra.empty()) parts.push_back(extra);
  if (!options_.selector.empty()) parts.push_back(options_.selector);
  return parts.empty() ? "" : "{" + Join(parts, ",") + "}";
}

std::string PrometheusSource::RateQuery() const {
  const std::string m = options_.names.excluded_results.empty()
                            ? ""
                            : "result!~\"" + Join(options_.names.excluded_results, "|") + "\"";
  return "sum(rate(" + options_.names.requests + Selector(m) + "[" + options_.window + "]))";
}

std::string PrometheusSource::CompletedRateQuery() const {
  std::vector<std::string> out = options_.names.excluded_results;
  out.insert(out.end(), options_.names.unrouted_results.begin(), options_.names.unrouted_results.end());
  const std::string m = out.empty() ? "" : "result!~\"" + Join(out, "|") + "\"";
  return "sum(rate(" + options_.names.requests + Selector(m) + "[" + options_.window + "]))";
}

std::string PrometheusSource::TokenRateQuery(const std::string& counter) const {
  return "sum(rate(" + counter + Selector("") + "[" + options_.window + "]))";
}

std::string PrometheusSource::QuantileQuery(const std::string& histogram) const {
  char q[32];
  std::snprintf(q, sizeof q, "%g", options_.quantile);
  return std::string("histogram_quantile(") + q + ", sum by (le) (rate(" + histogram + "_bucket" + Selector("") + "[" +
         options_.window + "])))";
}

StatusOr<std::optional<double>> PrometheusSource::Query(const std::string& promql) {
  const std::string url = options_.url + "/api/v1/query?query=" + UrlEncode(promql);
  StatusOr<http::ClientResponse> r = client_.Get(url);
  if (!r.ok()) return UnavailableError("prometheus " + options_.url + ": " + r.status().message());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r->body);
  } catch (const nlohmann::json::exception& e) {
    if (r->status / 100 != 2) {
      return UnavailableError("prometheus " + options_.url + " answered HTTP " + std::to_string(r->status) +
                              " to query " + promql);
    }
    return InvalidArgumentError("prometheus " + options_.url + ": response to " + promql + " is not JSON: " + e.what());
  }
  try {
    if (j.value("status", "") != "success") {
      const std::string msg = j.value("errorType", "") + ": " + j.value("error", "");
      const Status s = r->status == 400 || r->status == 422 ? InvalidArgumentError("")
                                                            : UnavailableError("");
      return Status(s.code(), "prometheus " + options_.url + " rejected query " + promql + " (HTTP " +
                                  std::to_string(r->status) + ", " + msg + ")");
    }
    const nlohmann::json& data = j.at("data");
    const std::string type = data.at("resultType").get<std::string>();
    const nlohmann::json* value = nullptr;
    if (type == "scalar") {
      value = &data.at("result");
    } else if (type == "vector") {
      const nlohmann::json& result = data.at("result");
      if (result.empty()) return std::optional<double>();
      if (result.size() > 1) {
        return InvalidArgumentError("prometheus query " + promql + " returned " + std::to_string(result.size()) +
                                    " series, want 1 (aggregate it)");
      }
      value = &result[0].at("value");
    } else {
      return InvalidArgumentError("prometheus query " + promql + " returned a " + type + ", want a vector");
    }
    // [unix_time, "value"]
    const std::string text = value->at(1).get<std::string>();
    if (text == "NaN") return std::optional<double>(Nan());
    if (text == "+Inf") return std::optional<double>(std::numeric_limits<double>::infinity());
    if (text == "-Inf") return std::optional<double>(-std::numeric_limits<double>::infinity());
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size()) {
      return InvalidArgumentError("prometheus query " + promql + ": bad sample value \"" + text + "\"");
    }
    return std::optional<double>(v);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("prometheus " + options_.url + ": unexpected response to " + promql + ": " + e.what());
  }
}

StatusOr<LoadSample> PrometheusSource::Sample(double now_s) {
  LoadSample s;
  s.time_s = now_s;
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> rate, Query(RateQuery()));
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> completed, Query(CompletedRateQuery()));
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> prompt, Query(TokenRateQuery(options_.names.prompt_tokens)));
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> completion, Query(TokenRateQuery(options_.names.completion_tokens)));
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> ttft, Query(QuantileQuery(options_.names.ttft)));
  KVMESH_ASSIGN_OR_RETURN(std::optional<double> itl, Query(QuantileQuery(options_.names.itl)));
  auto finite_or_zero = [](const std::optional<double>& v) { return v && std::isfinite(*v) ? *v : 0.0; };
  s.request_rate = finite_or_zero(rate);
  const double done = finite_or_zero(completed);
  s.mean_isl = done > 0 ? finite_or_zero(prompt) / done : 0;
  s.mean_osl = done > 0 ? finite_or_zero(completion) / done : 0;
  s.ttft_p90_s = ttft && std::isfinite(*ttft) ? *ttft : Nan();
  s.itl_p90_s = itl && std::isfinite(*itl) ? *itl : Nan();
  return s;
}

// ---- ScrapeSource --------------------------------------------------------------------------------

ScrapeSource::ScrapeSource(Options options) : options_(std::move(options)), client_(ClientOptions(options_.timeout)) {}

ScrapeSource::Totals ScrapeSource::Extract(const std::vector<PromSample>& samples, const LoadMetricNames& names) {
  Totals t;
  const std::set<std::string> excluded(names.excluded_results.begin(), names.excluded_results.end());
  const std::set<std::string> unrouted(names.unrouted_results.begin(), names.unrouted_results.end());
  const std::string ttft_bucket = names.ttft + "_bucket";
  const std::string itl_bucket = names.itl + "_bucket";
  auto le_of = [](const PromSample& s) -> std::optional<double> {
    auto it = s.labels.find("le");
    if (it == s.labels.end()) return std::nullopt;
    if (it->second == "+Inf") return std::numeric_limits<double>::infinity();
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0') return std::nullopt;
    return v;
  };
  for (const PromSample& s : samples) {
    if (!std::isfinite(s.value)) continue;
    if (s.name == names.requests) {
      auto it = s.labels.find("result");
      const std::string result = it == s.labels.end() ? "" : it->second;
      if (excluded.count(result)) continue;
      t.requests += s.value;
      if (!unrouted.count(result)) t.completed += s.value;
    } else if (s.name == names.prompt_tokens) {
      t.prompt_tokens += s.value;
    } else if (s.name == names.completion_tokens) {
      t.completion_tokens += s.value;
    } else if (s.name == ttft_bucket || s.name == itl_bucket) {
      if (auto le = le_of(s)) (s.name == ttft_bucket ? t.ttft_buckets : t.itl_buckets)[*le] += s.value;
    }
  }
  return t;
}

StatusOr<LoadSample> ScrapeSource::Sample(double now_s) {
  if (options_.targets.empty()) return InvalidArgumentError("scrape source: no targets");
  std::map<std::string, Totals> now;
  for (const std::string& target : options_.targets) {
    StatusOr<http::ClientResponse> r = client_.Get(target);
    if (!r.ok()) return UnavailableError("scrape " + target + ": " + r.status().message());
    if (r->status / 100 != 2) return UnavailableError("scrape " + target + ": HTTP " + std::to_string(r->status));
    StatusOr<std::vector<PromSample>> parsed = ParsePrometheusText(r->body);
    if (!parsed.ok()) return InvalidArgumentError("scrape " + target + ": " + parsed.status().message());
    now[target] = Extract(*parsed, options_.names);
  }

  // Per target: delta over its own interval (a counter that went down restarted from 0).
  auto delta = [](double cur, double prev) { return cur >= prev ? cur - prev : cur; };
  double rate = 0, completed = 0, prompt = 0, completion = 0;
  std::map<double, double> ttft, itl;
  bool any = false;
  for (const auto& [target, cur] : now) {
    auto it = previous_.find(target);
    if (it == previous_.end()) continue;
    const double dt = now_s - it->second.first;
    if (!(dt > 0)) continue;
    const Totals& prev = it->second.second;
    any = true;
    const bool reset = cur.requests < prev.requests;
    rate += delta(cur.requests, prev.requests) / dt;
    completed += delta(cur.completed, prev.completed) / dt;
    prompt += delta(cur.prompt_tokens, prev.prompt_tokens) / dt;
    completion += delta(cur.completion_tokens, prev.completion_tokens) / dt;
    for (auto [buckets, prev_buckets, out] :
         {std::tuple{&cur.ttft_buckets, &prev.ttft_buckets, &ttft}, std::tuple{&cur.itl_buckets, &prev.itl_buckets, &itl}}) {
      for (const auto& [le, count] : *buckets) {
        auto p = prev_buckets->find(le);
        const double before = reset || p == prev_buckets->end() ? 0 : p->second;
        (*out)[le] += delta(count, before);
      }
    }
  }
  for (auto& [target, cur] : now) previous_[target] = {now_s, std::move(cur)};
  if (!any) {
    return FailedPreconditionError("scrape source: baseline recorded, a rate needs a second scrape");
  }
  LoadSample s;
  s.time_s = now_s;
  s.request_rate = rate;
  s.mean_isl = completed > 0 ? prompt / completed : 0;
  s.mean_osl = completed > 0 ? completion / completed : 0;
  auto quantile = [&](const std::map<double, double>& b) {
    const double v = HistogramQuantile(options_.quantile, std::vector<std::pair<double, double>>(b.begin(), b.end()));
    return std::isfinite(v) ? v : Nan();
  };
  s.ttft_p90_s = quantile(ttft);
  s.itl_p90_s = quantile(itl);
  return s;
}

}  // namespace kvmesh::planner
