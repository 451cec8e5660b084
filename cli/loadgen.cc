#include "cli/loadgen.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http_client.h"

namespace kvmesh::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string NormalizeBase(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.size() >= 3 && url.compare(url.size() - 3, 3, "/v1") == 0) url.resize(url.size() - 3);
  return url;
}

std::string Truncate(std::string s, size_t n = 300) {
  if (s.size() > n) {
    s.resize(n);
    s += "...";
  }
  return s;
}

// A joinable thread with a chosen stack size (std::thread cannot set one).
class SmallStackThread {
 public:
  static StatusOr<std::unique_ptr<SmallStackThread>> Start(size_t stack_bytes,
                                                           std::function<void()> fn) {
    auto t = std::unique_ptr<SmallStackThread>(new SmallStackThread(std::move(fn)));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, std::max(stack_bytes, static_cast<size_t>(PTHREAD_STACK_MIN)));
    const int rc = pthread_create(&t->id_, &attr, &SmallStackThread::Entry, t.get());
    pthread_attr_destroy(&attr);
    if (rc != 0) return ResourceExhaustedError(std::string("pthread_create: ") + std::strerror(rc));
    t->started_ = true;
    return t;
  }
  ~SmallStackThread() {
    if (started_) pthread_join(id_, nullptr);
  }

 private:
  explicit SmallStackThread(std::function<void()> fn) : fn_(std::move(fn)) {}
  static void* Entry(void* self) {
    static_cast<SmallStackThread*>(self)->fn_();
    return nullptr;
  }
  std::function<void()> fn_;
  pthread_t id_{};
  bool started_ = false;
};

struct SseResult {
  bool done = false;
  bool stream_error = false;
  std::string error_message;
  bool bad_json = false;
};

class Runner {
 public:
  Runner(const LoadgenOptions& o, const WorkloadFn& workload)
      : o_(o), workload_(workload), base_(NormalizeBase(o.base_url)) {
    url_ = base_ + (o.endpoint == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions");
    client_options_.connect_timeout = o.connect_timeout;
    client_options_.read_timeout = o.request_timeout;
    client_options_.verify_peer = o.verify_peer;
    client_options_.ca_file = o.ca_file;
    client_options_.user_agent = "kvmesh-bench";
  }

  StatusOr<RunResult> Run();

 private:
  RequestRecord Send(http::HttpClient& client, const BenchRequest& req, double scheduled_s);
  void Record(RequestRecord r) {
    std::lock_guard<std::mutex> lock(mu_);
    if (r.ok)
      ++num_ok_;
    else
      ++num_failed_;
    last_done_ = std::max(last_done_, Clock::now());
    records_.push_back(std::move(r));
  }
  bool DurationOver() const { return o_.duration.count() > 0 && Clock::now() - t0_ >= o_.duration; }
  Status RunClosedLoop();
  Status RunOpenLoop();
  void ProgressLoop();

  const LoadgenOptions& o_;
  const WorkloadFn& workload_;
  const std::string base_;
  std::string url_;
  http::HttpClientOptions client_options_;
  Clock::time_point t0_;

  std::atomic<uint32_t> in_flight_{0};
  std::atomic<uint32_t> peak_in_flight_{0};
  std::vector<std::unique_ptr<SmallStackThread>> threads_;
  uint32_t threads_started_ = 0;

  std::mutex mu_;  // guards the members below
  std::vector<RequestRecord> records_;
  uint64_t num_ok_ = 0, num_failed_ = 0;
  Clock::time_point first_send_ = Clock::time_point::max();
  Clock::time_point last_done_{};

  // Open loop queue.
  std::mutex qmu_;
  std::condition_variable qcv_;
  std::deque<std::pair<BenchRequest, double>> queue_;
  uint32_t idle_ = 0;
  bool closing_ = false;

  std::mutex pmu_;
  std::condition_variable pcv_;
  bool stop_progress_ = false;
};

RequestRecord Runner::Send(http::HttpClient& client, const BenchRequest& req, double scheduled_s) {
  RequestRecord r;
  r.index = req.index;
  r.prompt_len = req.prompt_len;
  r.max_tokens = req.max_tokens;
  r.scheduled_s = scheduled_s;
  http::ClientRequest hr;
  hr.method = "POST";
  hr.url = url_;
  hr.content_type = "application/json";
  hr.body = BuildRequestBody(o_, req);
  hr.headers.emplace_back("Accept", "text/event-stream");
  if (!o_.api_key.empty()) hr.headers.emplace_back("Authorization", "Bearer " + o_.api_key);

  const uint32_t now_in_flight = in_flight_.fetch_add(1) + 1;
  uint32_t peak = peak_in_flight_.load();
  while (now_in_flight > peak && !peak_in_flight_.compare_exchange_weak(peak, now_in_flight)) {
  }
  const Clock::time_point start = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    first_send_ = std::min(first_send_, start);
  }
  r.start_s = Seconds(start - t0_);
  SseResult sse;
  Clock::time_point last_token{};
  bool any_event = false;
  const bool chat = o_.endpoint == Endpoint::kChat;
  auto on_event = [&](const http::SseEvent& ev) -> bool {
    any_event = true;
    if (ev.data == "[DONE]") {
      sse.done = true;
      return true;
    }
    json j;
    try {
      j = json::parse(ev.data);
    } catch (const std::exception& e) {
      sse.bad_json = true;
      sse.error_message = std::string("unparsable chunk: ") + e.what();
      return false;
    }
    if (!j.is_object()) return true;
    if (auto it = j.find("error"); it != j.end()) {
      sse.stream_error = true;
      sse.error_message = it->is_object() && it->contains("message") && (*it)["message"].is_string()
                              ? (*it)["message"].get<std::string>()
                              : it->dump();
      return true;  // the server ends with [DONE]
    }
    bool has_token = false;
    if (auto c = j.find("choices"); c != j.end() && c->is_array() && !c->empty()) {
      const json& ch = (*c)[0];
      const json* text = nullptr;
      if (chat) {
        if (auto d = ch.find("delta"); d != ch.end() && d->is_object()) {
          if (auto t = d->find("content"); t != d->end()) text = &*t;
          if ((text == nullptr || !text->is_string() ||
               text->get_ref<const std::string&>().empty())) {
            if (auto t2 = d->find("reasoning_content"); t2 != d->end()) text = &*t2;
          }
        }
      } else if (auto t = ch.find("text"); t != ch.end()) {
        text = &*t;
      }
      has_token =
          text != nullptr && text->is_string() && !text->get_ref<const std::string&>().empty();
    }
    if (has_token) {
      const Clock::time_point now = Clock::now();
      if (r.chunks == 0) {
        r.ttft_s = Seconds(now - start);
      } else {
        r.itl_s.push_back(Seconds(now - last_token));
      }
      last_token = now;
      ++r.chunks;
    }
    if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
      r.usage_reported = true;
      auto get = [](const json& o, const char* k) -> uint32_t {
        auto it = o.find(k);
        return it != o.end() && it->is_number_unsigned() ? it->get<uint32_t>() : 0;
      };
      r.prompt_tokens = get(*u, "prompt_tokens");
      r.output_tokens = get(*u, "completion_tokens");
      if (auto d = u->find("prompt_tokens_details"); d != u->end() && d->is_object()) {
        r.cached_tokens = get(*d, "cached_tokens");
      }
    }
    return true;
  };
  StatusOr<http::ClientResponse> resp = client.StreamSse(hr, on_event);
  const Clock::time_point end = Clock::now();
  in_flight_.fetch_sub(1);
  r.e2e_s = Seconds(end - start);
  if (!r.usage_reported) r.output_tokens = r.chunks;
  if (!resp.ok()) {
    const Status& s = resp.status();
    if (sse.bad_json) {
      r.error_kind = "bad_response";
      r.error_message = sse.error_message;
    } else {
      r.error_kind = s.code() == StatusCode::kDeadlineExceeded              ? "timeout"
                     : s.code() == StatusCode::kResourceExhausted           ? "too_large"
                     : (s.code() == StatusCode::kUnavailable && !any_event) ? "connect"
                                                                            : "io";
      r.error_message = s.message();
    }
  } else if (resp->status != 200) {
    r.error_kind = "http_" + std::to_string(resp->status);
    r.error_message = resp->body;
  } else if (sse.stream_error) {
    r.error_kind = "stream_error";
    r.error_message = sse.error_message;
  } else if (sse.bad_json) {
    r.error_kind = "bad_response";
    r.error_message = sse.error_message;
  } else if (!sse.done) {
    r.error_kind = "incomplete";
    r.error_message = "stream ended without data: [DONE]";
  } else {
    r.ok = true;
  }
  r.error_message = Truncate(std::move(r.error_message));
  return r;
}

Status Runner::RunClosedLoop() {
  std::atomic<uint64_t> next{0};
  std::atomic<bool> exhausted{false};
  auto client_loop = [&] {
    http::HttpClient client(client_options_);
    while (!exhausted.load()) {
      const uint64_t i = next.fetch_add(1);
      if ((o_.num_requests > 0 && i >= o_.num_requests) || DurationOver()) break;
      std::optional<BenchRequest> req = workload_(i);
      if (!req) {
        exhausted.store(true);
        break;
      }
      Record(Send(client, *req, Seconds(Clock::now() - t0_)));
    }
  };
  uint32_t n = o_.concurrency;
  if (o_.num_requests > 0) n = static_cast<uint32_t>(std::min<uint64_t>(n, o_.num_requests));
  for (uint32_t c = 0; c < n; ++c) {
    auto t = SmallStackThread::Start(o_.thread_stack_bytes, client_loop);
    if (!t.ok()) {
      exhausted.store(true);
      threads_.clear();
      return t.status();
    }
    threads_.push_back(std::move(*t));
  }
  threads_started_ = static_cast<uint32_t>(threads_.size());
  threads_.clear();  // joins
  return Status::Ok();
}

Status Runner::RunOpenLoop() {
  auto worker = [this] {
    http::HttpClient client(client_options_);
    std::unique_lock<std::mutex> lock(qmu_);
    for (;;) {
      qcv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closing
      auto [req, scheduled] = std::move(queue_.front());
      queue_.pop_front();
      --idle_;
      lock.unlock();
      Record(Send(client, req, scheduled));
      lock.lock();
      ++idle_;
    }
  };
  Status status;
  double due = 0;
  for (uint64_t i = 0; o_.num_requests == 0 || i < o_.num_requests; ++i) {
    std::optional<BenchRequest> req = workload_(i);
    if (!req) break;
    if (o_.arrival == ArrivalMode::kTimestamps) {
      due = req->arrival_s.value_or(0);
    } else if (i > 0) {
      due += PoissonGap(o_.rate, o_.seed, i - 1);
    }
    if (o_.duration.count() > 0 && due >= Seconds(o_.duration)) break;
    std::this_thread::sleep_until(
        t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(due)));
    std::unique_lock<std::mutex> lock(qmu_);
    queue_.emplace_back(std::move(*req), due);
    if (idle_ == 0 && threads_.size() < o_.max_concurrency) {
      ++idle_;  // the new thread counts as idle until it takes a request
      lock.unlock();
      auto t = SmallStackThread::Start(o_.thread_stack_bytes, worker);
      if (!t.ok()) {
        status = t.status();
        lock.lock();
        --idle_;
        break;
      }
      threads_.push_back(std::move(*t));
    } else {
      lock.unlock();
    }
    qcv_.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(qmu_);
    closing_ = true;
    if (!status.ok()) queue_.clear();
  }
  qcv_.notify_all();
  threads_started_ = static_cast<uint32_t>(threads_.size());
  threads_.clear();  // joins; workers drain the queue first
  return status;
}

void Runner::ProgressLoop() {
  std::unique_lock<std::mutex> lock(pmu_);
  while (!pcv_.wait_for(lock, std::chrono::seconds(5), [&] { return stop_progress_; })) {
    uint64_t ok, failed;
    {
      std::lock_guard<std::mutex> l(mu_);
      ok = num_ok_;
      failed = num_failed_;
    }
    std::fprintf(stderr, "kvmesh bench: %.0fs  ok %llu  failed %llu  in flight %u\n",
                 Seconds(Clock::now() - t0_), static_cast<unsigned long long>(ok),
                 static_cast<unsigned long long>(failed), in_flight_.load());
  }
}

StatusOr<RunResult> Runner::Run() {
  t0_ = Clock::now();
  std::thread progress;
  if (o_.progress) progress = std::thread([this] { ProgressLoop(); });
  Status s = o_.arrival == ArrivalMode::kClosedLoop ? RunClosedLoop() : RunOpenLoop();
  if (progress.joinable()) {
    {
      std::lock_guard<std::mutex> lock(pmu_);
      stop_progress_ = true;
    }
    pcv_.notify_all();
    progress.join();
  }
  if (!s.ok()) return s;
  RunResult out;
  std::lock_guard<std::mutex> lock(mu_);
  out.records = std::move(records_);
  out.duration_s = out.records.empty() ? 0 : Seconds(last_done_ - first_send_);
  out.peak_in_flight = peak_in_flight_.load();
  out.client_threads = threads_started_;
  return out;
}

}  // namespace

Status LoadgenOptions::Validate() const {
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0) {
    return InvalidArgumentError("url must start with http:// or https://, got '" + base_url + "'");
  }
  if (num_requests == 0 && duration.count() <= 0) {
    return InvalidArgumentError("set requests > 0 or a duration");
  }
  switch (arrival) {
    case ArrivalMode::kClosedLoop:
      if (concurrency == 0) return InvalidArgumentError("concurrency must be > 0");
      break;
    case ArrivalMode::kPoisson:
      if (!(rate > 0 && std::isfinite(rate))) {
        return InvalidArgumentError("rate must be > 0, got " + std::to_string(rate));
      }
      [[fallthrough]];
    case ArrivalMode::kTimestamps:
      if (max_concurrency == 0) return InvalidArgumentError("max_concurrency must be > 0");
      break;
  }
  if (request_timeout.count() <= 0) return InvalidArgumentError("request_timeout must be > 0");
  if (!(temperature >= 0)) return InvalidArgumentError("temperature must be >= 0");
  return Status::Ok();
}

std::string BuildRequestBody(const LoadgenOptions& o, const BenchRequest& req) {
  json body;
  if (!o.model.empty()) body["model"] = o.model;
  if (o.endpoint == Endpoint::kChat) {
    std::string content = req.prompt_text;
    if (content.empty() && !req.prompt_tokens.empty()) {
      // A token workload sent to chat: spell the ids as words so the prompt stays deterministic.
      for (size_t i = 0; i < req.prompt_tokens.size(); ++i) {
        if (i > 0) content += ' ';
        content += std::to_string(req.prompt_tokens[i]);
      }
    }
    body["messages"] = json::array({{{"role", "user"}, {"content", content}}});
  } else if (!req.prompt_tokens.empty()) {
    body["prompt"] = req.prompt_tokens;
  } else {
    body["prompt"] = req.prompt_text;
  }
  body["max_tokens"] = req.max_tokens;
  body["temperature"] = o.temperature;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (o.ignore_eos) body["ignore_eos"] = true;
  return body.dump();
}

StatusOr<RunResult> RunLoad(const LoadgenOptions& options, const WorkloadFn& workload) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  Runner runner(options, workload);
  return runner.Run();
}

// --- statistics ------------------------------------------------------------------------------

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::nan("");
  p = std::clamp(p, 0.0, 100.0);
  const double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Distribution Describe(std::vector<double> v) {
  Distribution d;
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  d.count = v.size();
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / static_cast<double>(v.size());
  d.min = v.front();
  d.max = v.back();
  d.p50 = Percentile(v, 50);
  d.p90 = Percentile(v, 90);
  d.p99 = Percentile(v, 99);
  return d;
}

Summary Summarize(const RunResult& run, const Sla& sla) {
  Summary s;
  s.duration_s = run.duration_s;
  s.peak_in_flight = run.peak_in_flight;
  s.sla_set = sla.ttft_ms > 0 || sla.itl_ms > 0;
  std::vector<double> ttft, itl, e2e, tpot, queue;
  uint64_t usage_prompt = 0, usage_cached = 0;
  for (const auto& r : run.records) {
    ++s.sent;
    if (!r.ok) {
      ++s.failed;
      ++s.errors[r.error_kind];
      continue;
    }
    ++s.ok;
    s.prompt_tokens += r.prompt_tokens;
    s.output_tokens += r.output_tokens;
    s.cached_tokens += r.cached_tokens;
    if (r.usage_reported) {
      ++s.usage_reported;
      usage_prompt += r.prompt_tokens;
      usage_cached += r.cached_tokens;
    }
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s * 1e3);
    for (double g : r.itl_s) itl.push_back(g * 1e3);
    e2e.push_back(r.e2e_s * 1e3);
    queue.push_back(std::max(0.0, r.start_s - r.scheduled_s) * 1e3);
    double mean_itl_ms = 0;
    if (r.output_tokens > 1 && r.ttft_s >= 0) {
      mean_itl_ms = (r.e2e_s - r.ttft_s) * 1e3 / (r.output_tokens - 1);
      tpot.push_back(mean_itl_ms);
    }
    const bool ttft_ok = sla.ttft_ms <= 0 || (r.ttft_s >= 0 && r.ttft_s * 1e3 <= sla.ttft_ms);
    const bool itl_ok = sla.itl_ms <= 0 || mean_itl_ms <= sla.itl_ms;
    if (ttft_ok && itl_ok) ++s.good_requests;
  }
  s.ttft_ms = Describe(std::move(ttft));
  s.itl_ms = Describe(std::move(itl));
  s.e2e_ms = Describe(std::move(e2e));
  s.tpot_ms = Describe(std::move(tpot));
  s.queue_ms = Describe(std::move(queue));
  s.cached_token_ratio = usage_prompt > 0 ? static_cast<double>(usage_cached) / usage_prompt : 0;
  if (s.duration_s > 0) {
    s.request_throughput = s.ok / s.duration_s;
    s.output_token_throughput = s.output_tokens / s.duration_s;
    s.total_token_throughput = (s.prompt_tokens + s.output_tokens) / s.duration_s;
    s.goodput = s.good_requests / s.duration_s;
  }
  return s;
}

namespace {

json DistJson(const Distribution& d) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  return {{"count", d.count},  {"mean", num(d.mean)}, {"min", num(d.min)}, {"max", num(d.max)},
          {"p50", num(d.p50)}, {"p90", num(d.p90)},   {"p99", num(d.p99)}};
}

}  // namespace

std::string RenderJsonReport(const Summary& s, const RunResult& run, const std::string& config_json,
                             bool include_requests, const std::map<std::string, double>& extra) {
  json out;
  json sum;
  sum["requests_sent"] = s.sent;
  sum["requests_ok"] = s.ok;
  sum["requests_failed"] = s.failed;
  sum["errors"] = json::object();
  for (const auto& [k, v] : s.errors) sum["errors"][k] = v;
  sum["duration_s"] = s.duration_s;
  sum["request_throughput"] = s.request_throughput;
  sum["output_token_throughput"] = s.output_token_throughput;
  sum["total_token_throughput"] = s.total_token_throughput;
  sum["prompt_tokens"] = s.prompt_tokens;
  sum["output_tokens"] = s.output_tokens;
  sum["cached_tokens"] = s.cached_tokens;
  sum["cached_token_ratio"] = s.cached_token_ratio;
  sum["usage_reported"] = s.usage_reported;
  sum["ttft_ms"] = DistJson(s.ttft_ms);
  sum["itl_ms"] = DistJson(s.itl_ms);
  sum["tpot_ms"] = DistJson(s.tpot_ms);
  sum["e2e_ms"] = DistJson(s.e2e_ms);
  sum["queue_ms"] = DistJson(s.queue_ms);
  sum["good_requests"] = s.good_requests;
  sum["goodput"] = s.goodput;
  sum["sla_set"] = s.sla_set;
  sum["peak_in_flight"] = s.peak_in_flight;
  out["summary"] = std::move(sum);
  try {
    out["config"] = json::parse(config_json);
  } catch (const std::exception&) {
    out["config"] = config_json;
  }
  for (const auto& [k, v] : extra) out[k] = v;
  if (include_requests) {
    json reqs = json::array();
    for (const auto& r : run.records) {
      json j = {{"index", r.index},
                {"ok", r.ok},
                {"scheduled_s", r.scheduled_s},
                {"start_s", r.start_s},
                {"ttft_ms", r.ttft_s >= 0 ? json(r.ttft_s * 1e3) : json(nullptr)},
                {"e2e_ms", r.e2e_s * 1e3},
                {"prompt_len", r.prompt_len},
                {"max_tokens", r.max_tokens},
                {"prompt_tokens", r.prompt_tokens},
                {"output_tokens", r.output_tokens},
                {"cached_tokens", r.cached_tokens},
                {"chunks", r.chunks}};
      json itl = json::array();
      for (double g : r.itl_s) itl.push_back(g * 1e3);
      j["itl_ms"] = std::move(itl);
      if (!r.ok) {
        j["error_kind"] = r.error_kind;
        j["error"] = r.error_message;
      }
      reqs.push_back(std::move(j));
    }
    out["requests"] = std::move(reqs);
  }
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string RenderTable(const Summary& s) {
  std::string out;
  char line[256];
  auto add = [&](const char* fmt, auto... args) {
    std::snprintf(line, sizeof(line), fmt, args...);
    out += line;
  };
  add("============ kvmesh bench ============\n");
  add("%-28s %llu\n", "requests ok", static_cast<unsigned long long>(s.ok));
  add("%-28s %llu\n", "requests failed", static_cast<unsigned long long>(s.failed));
  for (const auto& [k, v] : s.errors) {
    add("  %-26s %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  }
  add("%-28s %.2f\n", "duration (s)", s.duration_s);
  add("%-28s %.2f\n", "request throughput (req/s)", s.request_throughput);
  add("%-28s %.1f\n", "output tokens/s", s.output_token_throughput);
  add("%-28s %.1f\n", "total tokens/s", s.total_token_throughput);
  add("%-28s %llu / %llu / %llu\n", "tokens prompt/output/cached",
      static_cast<unsigned long long>(s.prompt_tokens),
      static_cast<unsigned long long>(s.output_tokens),
      static_cast<unsigned long long>(s.cached_tokens));
  add("%-28s %.3f\n", "cached-token ratio", s.cached_token_ratio);
  add("%-28s %u\n", "peak in flight", s.peak_in_flight);
  add("%-14s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99", "max");
  auto row = [&](const char* name, const Distribution& d) {
    if (d.count == 0) {
      add("%-14s %10s\n", name, "-");
      return;
    }
    add("%-14s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, d.mean, d.p50, d.p90, d.p99, d.max);
  };
  row("TTFT", s.ttft_ms);
  row("ITL", s.itl_ms);
  row("TPOT", s.tpot_ms);
  row("E2E", s.e2e_ms);
  row("queue", s.queue_ms);
  if (s.sla_set) {
    add("%-28s %llu (%.2f req/s)\n", "good requests (SLA)",
        static_cast<unsigned long long>(s.good_requests), s.goodput);
  } else {
    add("%-28s %.2f req/s (no SLA set)\n", "goodput", s.goodput);
  }
  add("======================================\n");
  return out;
}

}  // namespace kvmesh::bench
