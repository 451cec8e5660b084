// Loadgen: the measuring engine of `kvmesh bench`. Sends BenchRequests to an OpenAI-compatible
// endpoint with streaming on, from many client threads (one HttpClient each, small stacks), and
// records per request: TTFT (send -> first token-bearing SSE chunk), the gaps between
// token-bearing chunks (ITL), E2E (send -> end of stream), output/prompt/cached tokens (from the
// final usage chunk; output falls back to the number of token-bearing chunks) and, for failures,
// an error kind.
//
// Arrivals: closed loop (`concurrency` clients, each sending its next request when the previous one
// ends), Poisson (`rate` req/s, seeded) or the requests' own arrival_s (trace timestamps). In the
// open-loop modes a pool of at most `max_concurrency` client threads serves due requests; when
// all are busy a due request waits (its queue delay is recorded; latencies start at the send).
//
// Invariants: Run() never throws; every request that was started is in the result exactly once;
// the summary is computed only from the records (Summarize is a pure function).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/trace_workload.h"
#include "common/status.h"

namespace kvmesh::bench {

enum class Endpoint { kCompletions, kChat };
enum class ArrivalMode { kClosedLoop, kPoisson, kTimestamps };

struct LoadgenOptions {
  std::string base_url;  // "http://127.0.0.1:8000" (a trailing "/v1" or "/" is accepted)
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  std::string api_key;  // sent as "Authorization: Bearer <key>" when non-empty
  bool ignore_eos = true;
  double temperature = 0;
  ArrivalMode arrival = ArrivalMode::kClosedLoop;
  uint32_t concurrency = 1;               // closed loop: clients
  double rate = 0;                        // Poisson: requests/s
  uint64_t seed = 0;                      // Poisson arrivals
  uint32_t max_concurrency = 2048;        // open loop: most requests in flight at once
  uint64_t num_requests = 0;              // 0 = until duration
  std::chrono::milliseconds duration{0};  // 0 = until num_requests; else no new sends after it
  std::chrono::milliseconds request_timeout{120000};  // longest gap between two pieces of data
  std::chrono::milliseconds connect_timeout{10000};
  size_t thread_stack_bytes = 256 << 10;
  bool verify_peer = true;  // https: verify the server certificate
  std::string ca_file;      // https: trusted CAs (PEM); empty = system store
  bool progress = false;    // a line on stderr every few seconds

  Status Validate() const;
};

struct RequestRecord {
  uint64_t index = 0;
  bool ok = false;
  std::string error_kind;  // connect, timeout, http_<code>, stream_error, incomplete, bad_response
  std::string error_message;  // first 300 bytes
  double scheduled_s = 0;     // when it was due (open loop) or taken (closed loop), since run start
  double start_s = 0;         // when it was sent, since run start
  double ttft_s = -1;         // -1: no token arrived
  double e2e_s = -1;
  std::vector<double> itl_s;  // gaps between consecutive token-bearing chunks
  uint32_t prompt_len = 0;    // what the workload sent (tokens or words)
  uint32_t max_tokens = 0;
  uint32_t prompt_tokens = 0;  // usage (0 if absent)
  uint32_t output_tokens = 0;  // usage.completion_tokens, else token-bearing chunks
  uint32_t cached_tokens = 0;  // usage.prompt_tokens_details.cached_tokens
  uint32_t chunks = 0;         // token-bearing chunks
  bool usage_reported = false;
};

struct RunResult {
  std::vector<RequestRecord> records;  // by completion order
  double duration_s = 0;               // first send -> last completion
  uint32_t peak_in_flight = 0;
  uint32_t client_threads = 0;
};

// The request sequence: next(i) returns request i, or nullopt when there are no more. Called from
// many client threads at once, so it must be thread-safe (a pure function of i, or a read-only
// vector lookup).
using WorkloadFn = std::function<std::optional<BenchRequest>(uint64_t index)>;

// Runs the load. Returns InvalidArgument for bad options; request failures are records, not errors.
StatusOr<RunResult> RunLoad(const LoadgenOptions& options, const WorkloadFn& workload);

// Builds the JSON body of one request (exposed for tests).
std::string BuildRequestBody(const LoadgenOptions& options, const BenchRequest& request);

// --- statistics ------------------------------------------------------------------------------

// Linear-interpolation percentile (numpy's default): p in [0, 100]; `sorted` ascending. NaN when
// empty.
double Percentile(const std::vector<double>& sorted, double p);

struct Distribution {
  size_t count = 0;
  double mean = 0, min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;  // in the samples' unit
};
Distribution Describe(std::vector<double> samples);

struct Sla {
  double ttft_ms = 0;  // 0 = no limit
  double itl_ms = 0;   // limit on a request's mean ITL; 0 = no limit
};

struct Summary {
  uint64_t sent = 0, ok = 0, failed = 0;
  std::map<std::string, uint64_t> errors;  // kind -> count
  double duration_s = 0;
  double request_throughput = 0;       // ok requests / duration
  double output_token_throughput = 0;  // output tokens of ok requests / duration
  double total_token_throughput = 0;   // (prompt + output) tokens of ok requests / duration
  uint64_t prompt_tokens = 0, output_tokens = 0, cached_tokens = 0;
  double cached_token_ratio = 0;  // cached_tokens / prompt_tokens (usage-reporting requests)
  uint64_t usage_reported = 0;
  Distribution ttft_ms, itl_ms, e2e_ms, tpot_ms, queue_ms;
  bool sla_set = false;
  uint64_t good_requests = 0;
  double goodput = 0;  // good requests / duration
  uint32_t peak_in_flight = 0;
};

Summary Summarize(const RunResult& run, const Sla& sla);

// The full JSON report: {"summary": ..., "config": config_json, "requests": [...] when
// include_requests}. `extra` fields (e.g. bench memory) are merged into the top level.
std::string RenderJsonReport(const Summary& summary, const RunResult& run,
                             const std::string& config_json, bool include_requests,
                             const std::map<std::string, double>& extra);

// The human-readable table.
std::string RenderTable(const Summary& summary);

}  // namespace kvmesh::bench
