// Simulator workloads (docs/simulator.md): a stream of requests with arrival time, lengths and the
// sequence hashes of the prompt's full KV blocks, so the simulated fleet's prefix caches and the
// router's PrefixIndex see the same block identities real workers would publish.
//
// Sources:
//  - Synthetic: Poisson arrivals at `rate` req/s (or fixed ISL/OSL at a fixed rate), input/output
//    lengths fixed or drawn, a shared-prefix ratio over `num_prefixes` prefix groups, optional
//    multi-turn conversations (a later turn's prompt extends an earlier one), and a region per
//    request (for multi-region placement studies).
//  - Trace replay from ../shared/data/traces/: Mooncake JSONL (timestamp ms, input_length,
//    output_length, hash_ids of 512-token blocks: each hash id expands to 512/block_size
//    deterministic sub-block hashes chained as real sequence hashes) and Azure 2023 CSV
//    (TIMESTAMP, ContextTokens, GeneratedTokens: no prefix information, so prompts share nothing).
//    `time_scale` stretches arrival times (0.5 = twice as fast), `max_requests` truncates, and
//    `repeat` replays the trace back to back with fresh hashes for each copy (for 1M-request runs);
//    `input_scale` / `output_scale` stretch or shrink the lengths, keeping the prefix structure.
//
// Invariants: arrivals are non-decreasing; every request has input_tokens >= 1, output_tokens >= 1;
// hashes.size() == input_tokens / block_size (full blocks only); the same options give the same
// stream (seeded, no global RNG). Streaming: a workload holds O(1) requests (plus the trace's
// compact records), so 1M-request runs fit in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"

namespace kvmesh::sim {

struct SimRequest {
  uint64_t id = 0;
  double arrival_s = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  std::vector<kv::BlockHash> hashes;  // sequence hashes of the full prompt blocks
  uint32_t region = 0;                // index into the run's regions (0 when single-region)
};

class Workload {
 public:
  virtual ~Workload() = default;
  // The next request in arrival order, or nullopt at the end.
  virtual std::optional<SimRequest> Next() = 0;
  virtual std::string Describe() const = 0;  // one line for the run's JSON/report
};

struct SyntheticOptions {
  double rate = 10;             // requests/s (Poisson); <= 0 = all at t=0
  bool poisson = true;          // false: evenly spaced at `rate`
  uint64_t num_requests = 1000;
  uint32_t input_tokens = 3000;   // mean ISL
  uint32_t output_tokens = 150;   // mean OSL
  double length_jitter = 0;       // 0 = fixed lengths; else uniform +/- this fraction
  double shared_prefix_ratio = 0; // leading fraction of each prompt shared within its group
  uint32_t num_prefixes = 1;      // prefix groups (chosen uniformly, or Zipf when zipf_s > 0)
  double zipf_s = 0;
  double multi_turn_ratio = 0;    // fraction of requests that continue an earlier conversation
  uint32_t num_regions = 1;       // requests get a region; prefix group g prefers region g % n
  double regional_affinity = 1.0; // probability a request comes from its group's region
  uint32_t block_size = 16;
  uint64_t seed = 1;
  // ---- added by H3 ----
  uint32_t turn_tokens = 0;          // new user tokens per continuing turn (0 = input_tokens / 4)
  uint32_t max_conversations = 1024; // open conversations a continuing request picks from (LRU)
  uint32_t max_input_tokens = 131072;  // a conversation that would exceed this starts over
};

// InvalidArgument naming the bad field (block_size 0, ratios outside [0, 1], num_prefixes or
// num_regions 0, num_requests 0, input/output_tokens 0, rate NaN).
StatusOr<std::unique_ptr<Workload>> MakeSyntheticWorkload(const SyntheticOptions& options);

struct TraceOptions {
  std::string path;          // .jsonl (Mooncake) or .csv (Azure)
  double time_scale = 1.0;   // arrival_s = trace time * time_scale
  uint64_t max_requests = 0; // 0 = all
  uint32_t repeat = 1;       // back-to-back copies, each with fresh (disjoint) hashes
  uint32_t block_size = 16;
  uint32_t trace_block_tokens = 512;  // Mooncake hash_id granularity
  uint64_t seed = 1;
  // Length scaling, to replay a trace's prefix structure at other average lengths (the
  // kv_routing_ttft calibration point). input_tokens = max(1, round(input_length * input_scale))
  // and one hash id covers max(1, round(trace_block_tokens * input_scale / block_size)) blocks, so
  // two prompts share the same fraction of their (scaled) lengths as in the trace; choose
  // input_scale = k * block_size / trace_block_tokens to keep the hash-id span exact.
  // output_tokens = max(1, round(output_length * output_scale)). Both in (0, 16].
  double input_scale = 1.0;
  double output_scale = 1.0;
};

// InvalidArgument/NotFound with the file and line for unreadable or malformed traces.
StatusOr<std::unique_ptr<Workload>> MakeTraceWorkload(const TraceOptions& options);

}  // namespace kvmesh::sim
