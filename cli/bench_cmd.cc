// `kvmesh bench`: load generator for any OpenAI-compatible endpoint. Flags come from BenchConfig
// (also env KVMESH_BENCH_* and --config FILE); the workload is synthetic or a Mooncake trace
// (cli/trace_workload.h); cli/loadgen.h sends and measures; cli/svg_plot.h draws the CDFs.
// Exit codes: 0 run done (some requests may have failed), 1 endpoint unreachable / no request
// succeeded / output not writable, 2 bad flags.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/loadgen.h"
#include "cli/svg_plot.h"
#include "cli/trace_workload.h"
#include "common/config.h"
#include "common/http_client.h"

namespace kvmesh::cli {
namespace {

using bench::ArrivalMode;
using bench::BenchRequest;

struct BenchConfig {
  // Target.
  std::string url = "http://127.0.0.1:8000";
  std::string model;
  std::string api_key;
  std::string endpoint = "completions";
  // Arrivals and size.
  uint64_t requests = 0;
  std::chrono::milliseconds duration{0};
  double rate = 0;
  uint32_t concurrency = 0;
  uint32_t max_concurrency = 2048;
  uint64_t seed = 0;
  // Synthetic workload.
  uint32_t input_len = 256;
  std::string input_dist = "fixed";
  double input_spread = 0.5;
  uint32_t output_len = 64;
  std::string output_dist = "fixed";
  double output_spread = 0.5;
  double shared_prefix_ratio = 0;
  uint32_t num_prefixes = 1;
  uint32_t vocab_size = 1000;
  // Trace replay.
  std::string trace;
  double time_scale = 1.0;
  double length_scale = 1.0;
  uint64_t max_requests = 0;
  uint32_t max_output_tokens = 0;
  // Sampling.
  bool ignore_eos = true;
  double temperature = 0;
  // SLA.
  double sla_ttft_ms = 0;
  double sla_itl_ms = 0;
  // Output.
  std::string json;
  bool json_requests = false;
  std::string plot;
  bool progress = false;
  // Client.
  std::chrono::milliseconds request_timeout{120000};
  std::chrono::milliseconds connect_timeout{10000};
  uint32_t thread_stack_kib = 256;
  bool insecure = false;
  std::string ca_file;

  template <class V>
  void Visit(V& v) {
    v("url", url, "base URL of the OpenAI-compatible server (http[s]://host:port)");
    v("model", model, "model name to send; empty = the first id of GET /v1/models");
    v("api_key", api_key, "sent as Authorization: Bearer <key>", kConfigSecret);
    v("endpoint", endpoint, "completions (token-id prompts) or chat (text prompts)");
    v("requests", requests, "requests to send (0 = trace length, or 100 without --duration)");
    v("duration", duration, "stop sending new requests after this long (0 = off)");
    v("rate", rate, "open loop: Poisson arrivals at this many requests/s (0 = closed loop)");
    v("concurrency", concurrency,
      "closed loop: clients (0 = 1); with --rate: most requests in flight");
    v("max_concurrency", max_concurrency, "open loop: most client threads when --concurrency is 0");
    v("seed", seed, "seed of the synthetic workload and of the Poisson arrivals");
    v("input_len", input_len, "synthetic: mean prompt length (tokens; words for chat)");
    v("input_dist", input_dist, "synthetic: fixed, uniform or normal");
    v("input_spread", input_spread, "uniform: +-spread*mean; normal: stddev spread*mean/2");
    v("output_len", output_len, "synthetic: mean max_tokens");
    v("output_dist", output_dist, "synthetic: fixed, uniform or normal");
    v("output_spread", output_spread, "as input_spread, for output_len");
    v("shared_prefix_ratio", shared_prefix_ratio,
      "synthetic: share of input_len that is a prefix shared by a group [0, 1)");
    v("num_prefixes", num_prefixes, "synthetic: number of shared-prefix groups");
    v("vocab_size", vocab_size, "token ids are drawn from [0, vocab_size)");
    v("trace", trace,
      "Mooncake JSONL trace to replay (a path, or a file name under ../shared/data/traces)");
    v("time_scale", time_scale, "trace: send at timestamp*time_scale (0 = all at once)");
    v("length_scale", length_scale,
      "trace: tokens per 512-token block and output lengths are multiplied by this");
    v("max_requests", max_requests, "trace: replay at most this many records (0 = all)");
    v("max_output_tokens", max_output_tokens, "trace: cap on max_tokens after scaling (0 = none)");
    v("ignore_eos", ignore_eos, "send ignore_eos: true so every request makes max_tokens tokens");
    v("temperature", temperature, "sampling temperature sent with each request");
    v("sla_ttft_ms", sla_ttft_ms, "goodput SLA: TTFT limit in ms (0 = none)");
    v("sla_itl_ms", sla_itl_ms, "goodput SLA: limit on a request's mean ITL in ms (0 = none)");
    v("json", json, "write the JSON report here ('-' = stdout, as the last line)");
    v("json_requests", json_requests, "include every request's record in the JSON report");
    v("plot", plot, "write an SVG of the TTFT, ITL and E2E CDFs here");
    v("progress", progress, "print progress to stderr every 5 s");
    v("request_timeout", request_timeout, "longest wait for the next piece of a response");
    v("connect_timeout", connect_timeout, "TCP connect (+TLS) limit");
    v("thread_stack_kib", thread_stack_kib, "stack size of each client thread");
    v("insecure", insecure, "https: do not verify the server certificate");
    v("ca_file", ca_file, "https: PEM file of trusted CAs (default: system store)");
  }

  Status Validate() const {
    if (endpoint != "completions" && endpoint != "chat") {
      return InvalidArgumentError("endpoint must be completions or chat, got '" + endpoint + "'");
    }
    if (rate < 0) return InvalidArgumentError("rate must be >= 0");
    if (thread_stack_kib < 64) return InvalidArgumentError("thread_stack_kib must be >= 64");
    if (!(sla_ttft_ms >= 0) || !(sla_itl_ms >= 0)) {
      return InvalidArgumentError("sla_ttft_ms and sla_itl_ms must be >= 0");
    }
    if (duration.count() < 0) return InvalidArgumentError("duration must be >= 0");
    return Status::Ok();
  }
};

void PrintUsage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: kvmesh bench [flags]\n"
      "Load generator for an OpenAI-compatible endpoint: synthetic workloads or Mooncake\n"
      "trace replay; streams every request and reports TTFT, ITL, E2E, throughput,\n"
      "goodput and the cached-token ratio. See docs/bench.md.\n\n"
      "examples:\n"
      "  kvmesh bench --url http://127.0.0.1:8000 --requests 200 --concurrency 16\n"
      "  kvmesh bench --rate 5 --duration 60s --shared-prefix-ratio 0.5 --num-prefixes 4\n"
      "  kvmesh bench --trace mooncake_conversation_trace.jsonl --length-scale 0.03125 \\\n"
      "      --max-requests 200 --json out.json --plot out.svg\n\n"
      "%s",
      RenderConfigHelp<BenchConfig>("KVMESH_BENCH").c_str());
}

std::string ResolveTracePath(const std::string& trace) {
  std::error_code ec;
  if (std::filesystem::exists(trace, ec)) return trace;
  if (trace.find('/') == std::string::npos) {
    for (const std::string& name : {trace, trace + ".jsonl", trace + "_trace.jsonl"}) {
      if (auto p = bench::FindSharedTrace(name)) return *p;
    }
  }
  return trace;
}

// Bench process memory from /proc/self/status (VmRSS/VmHWM, bytes); 0 when unavailable.
std::map<std::string, double> BenchMemory() {
  std::map<std::string, double> out;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    auto take = [&](const char* key, const char* name) {
      if (line.rfind(key, 0) == 0) out[name] = std::stod(line.substr(std::strlen(key))) * 1024.0;
    };
    take("VmRSS:", "bench_rss_bytes");
    take("VmHWM:", "bench_peak_rss_bytes");
    take("Threads:", "bench_threads");
  }
  if (out.count("bench_threads") != 0) out["bench_threads"] /= 1024.0;
  return out;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) {
    std::fprintf(stderr, "kvmesh bench: cannot write %s\n", path.c_str());
    return false;
  }
  return true;
}

}  // namespace

int BenchCommand(std::span<char*> args) {
  auto loaded = LoadConfigWithArgs<BenchConfig>(args, ProcessEnvLookup(), "KVMESH_BENCH");
  if (!loaded.ok()) {
    std::fprintf(stderr, "kvmesh bench: %s\n(see kvmesh bench --help)\n",
                 loaded.status().message().c_str());
    return 2;
  }
  if (loaded->help_requested) {
    PrintUsage(stdout);
    return 0;
  }
  if (!loaded->positional.empty()) {
    std::fprintf(stderr, "kvmesh bench: unexpected argument '%s'\n", loaded->positional[0].c_str());
    return 2;
  }
  BenchConfig c = loaded->config;

  // Workload.
  bench::SyntheticOptions syn;
  std::vector<BenchRequest> trace_requests;
  const bool trace_mode = !c.trace.empty();
  if (trace_mode) {
    bench::TraceMapping m;
    m.length_scale = c.length_scale;
    m.time_scale = c.time_scale;
    m.vocab_size = c.vocab_size;
    m.max_output_tokens = c.max_output_tokens;
    if (Status s = m.Validate(); !s.ok()) {
      std::fprintf(stderr, "kvmesh bench: %s\n", s.message().c_str());
      return 2;
    }
    const std::string path = ResolveTracePath(c.trace);
    uint64_t max = c.max_requests;
    if (c.requests > 0 && (max == 0 || c.requests < max)) max = c.requests;
    auto records = bench::LoadMooncakeTrace(path, max);
    if (!records.ok()) {
      std::fprintf(stderr, "kvmesh bench: %s\n", records.status().message().c_str());
      return records.status().code() == StatusCode::kNotFound ? 2 : 1;
    }
    for (size_t i = 0; i < records->size(); ++i) {
      trace_requests.push_back(bench::TraceRecordToRequest((*records)[i], m, i));
    }
    if (trace_requests.empty()) {
      std::fprintf(stderr, "kvmesh bench: trace %s has no records\n", path.c_str());
      return 1;
    }
  } else {
    auto in_dist = bench::ParseLengthDist(c.input_dist);
    auto out_dist = bench::ParseLengthDist(c.output_dist);
    if (!in_dist.ok() || !out_dist.ok()) {
      std::fprintf(stderr, "kvmesh bench: %s\n",
                   (!in_dist.ok() ? in_dist.status() : out_dist.status()).message().c_str());
      return 2;
    }
    syn.seed = c.seed;
    syn.input = {c.input_len, *in_dist, c.input_spread};
    syn.output = {c.output_len, *out_dist, c.output_spread};
    syn.shared_prefix_ratio = c.shared_prefix_ratio;
    syn.num_prefixes = c.num_prefixes;
    syn.vocab_size = c.vocab_size;
    syn.text = c.endpoint == "chat";
    if (Status s = syn.Validate(); !s.ok()) {
      std::fprintf(stderr, "kvmesh bench: %s\n", s.message().c_str());
      return 2;
    }
  }

  bench::LoadgenOptions o;
  o.base_url = c.url;
  o.endpoint = c.endpoint == "chat" ? bench::Endpoint::kChat : bench::Endpoint::kCompletions;
  o.model = c.model;
  o.api_key = c.api_key;
  o.ignore_eos = c.ignore_eos;
  o.temperature = c.temperature;
  o.seed = c.seed;
  o.duration = c.duration;
  o.request_timeout = c.request_timeout;
  o.connect_timeout = c.connect_timeout;
  o.thread_stack_bytes = size_t{c.thread_stack_kib} << 10;
  o.verify_peer = !c.insecure;
  o.ca_file = c.ca_file;
  o.progress = c.progress;
  o.num_requests = c.requests;
  if (trace_mode) {
    o.num_requests = trace_requests.size();
  } else if (o.num_requests == 0 && c.duration.count() == 0) {
    o.num_requests = 100;
  }
  if (c.rate > 0) {
    o.arrival = ArrivalMode::kPoisson;
    o.rate = c.rate;
    o.max_concurrency = c.concurrency > 0 ? c.concurrency : c.max_concurrency;
  } else if (trace_mode && c.concurrency == 0) {
    o.arrival = ArrivalMode::kTimestamps;
    o.max_concurrency = c.max_concurrency;
  } else {
    o.arrival = ArrivalMode::kClosedLoop;
    o.concurrency = c.concurrency > 0 ? c.concurrency : 1;
  }
  if (Status s = o.Validate(); !s.ok()) {
    std::fprintf(stderr, "kvmesh bench: %s\n", s.message().c_str());
    return 2;
  }

  // Probe the endpoint (and learn the model name) before starting the clock.
  {
    http::HttpClientOptions ho;
    ho.connect_timeout = c.connect_timeout;
    ho.read_timeout = std::chrono::milliseconds(10000);
    ho.verify_peer = !c.insecure;
    ho.ca_file = c.ca_file;
    http::HttpClient probe(ho);
    std::string base = c.url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    if (base.size() >= 3 && base.compare(base.size() - 3, 3, "/v1") == 0)
      base.resize(base.size() - 3);
    std::vector<std::pair<std::string, std::string>> headers;
    if (!c.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + c.api_key);
    auto r = probe.Get(base + "/v1/models", headers);
    if (!r.ok()) {
      std::fprintf(stderr, "kvmesh bench: cannot reach %s: %s\n", c.url.c_str(),
                   r.status().message().c_str());
      return 1;
    }
    if (r->status == 401 || r->status == 403) {
      std::fprintf(stderr, "kvmesh bench: %s answered %d to GET /v1/models (check --api-key)\n",
                   c.url.c_str(), r->status);
      return 1;
    }
    if (o.model.empty() && r->status == 200) {
      try {
        const auto j = nlohmann::json::parse(r->body);
        o.model = j.at("data").at(0).at("id").get<std::string>();
      } catch (const std::exception&) {
        // Leave the model unset; the server may not need it.
      }
    }
  }

  const std::string config_json = RenderConfigJson(c);
  bench::WorkloadFn workload;
  if (trace_mode) {
    workload = [&trace_requests](uint64_t i) -> std::optional<BenchRequest> {
      if (i >= trace_requests.size()) return std::nullopt;
      return trace_requests[i];
    };
  } else {
    workload = [&syn](uint64_t i) -> std::optional<BenchRequest> {
      return bench::SyntheticRequest(syn, i);
    };
  }
  std::fprintf(stderr, "kvmesh bench: %s %s model=%s, %s, %s\n", o.base_url.c_str(),
               c.endpoint.c_str(), o.model.empty() ? "(none)" : o.model.c_str(),
               trace_mode ? ("trace " + std::to_string(trace_requests.size()) + " requests").c_str()
                          : "synthetic",
               o.arrival == ArrivalMode::kPoisson
                   ? ("Poisson " + std::to_string(o.rate) + " req/s").c_str()
               : o.arrival == ArrivalMode::kTimestamps
                   ? "trace timestamps"
                   : ("concurrency " + std::to_string(o.concurrency)).c_str());
  auto run = bench::RunLoad(o, workload);
  if (!run.ok()) {
    std::fprintf(stderr, "kvmesh bench: %s\n", run.status().message().c_str());
    return 1;
  }
  bench::Sla sla{c.sla_ttft_ms, c.sla_itl_ms};
  const bench::Summary summary = bench::Summarize(*run, sla);
  std::map<std::string, double> extra = BenchMemory();
  extra["bench_client_threads"] = run->client_threads;
  std::string table = bench::RenderTable(summary);
  std::fputs(table.c_str(), stdout);
  std::printf("%-28s %.1f MiB (peak %.1f MiB, %u client threads)\n", "bench memory (RSS)",
              extra["bench_rss_bytes"] / (1 << 20), extra["bench_peak_rss_bytes"] / (1 << 20),
              run->client_threads);
  // The most frequent error message, to make failures actionable.
  if (summary.failed > 0) {
    for (const auto& r : run->records) {
      if (!r.ok) {
        std::printf("first error: [%s] %s\n", r.error_kind.c_str(), r.error_message.c_str());
        break;
      }
    }
  }
  bool write_ok = true;
  if (!c.plot.empty()) {
    bench::CdfPlot plot;
    char title[200];
    std::snprintf(title, sizeof(title),
                  "kvmesh bench: %llu requests, %.2f req/s, cached ratio %.2f",
                  static_cast<unsigned long long>(summary.ok), summary.request_throughput,
                  summary.cached_token_ratio);
    plot.title = title;
    plot.x_label = "latency (ms)";
    bench::PlotSeries ttft{"TTFT", "#1f77b4", {}}, itl{"ITL", "#2ca02c", {}},
        e2e{"E2E", "#d62728", {}};
    for (const auto& r : run->records) {
      if (!r.ok) continue;
      if (r.ttft_s >= 0) ttft.values.push_back(r.ttft_s * 1e3);
      for (double g : r.itl_s) itl.values.push_back(g * 1e3);
      e2e.values.push_back(r.e2e_s * 1e3);
    }
    plot.series = {std::move(ttft), std::move(itl), std::move(e2e)};
    write_ok = WriteFile(c.plot, bench::RenderCdfSvg(plot)) && write_ok;
  }
  if (!c.json.empty()) {
    const std::string report =
        bench::RenderJsonReport(summary, *run, config_json, c.json_requests, extra);
    if (c.json == "-") {
      std::printf("%s\n", report.c_str());
    } else {
      write_ok = WriteFile(c.json, report + "\n") && write_ok;
    }
  }
  std::fflush(stdout);
  if (!write_ok) return 1;
  if (summary.ok == 0) {
    std::fprintf(stderr, "kvmesh bench: no request succeeded\n");
    return 1;
  }
  return 0;
}

}  // namespace kvmesh::cli
