// Workloads for `kvmesh bench`: what each request sends (prompt, max_tokens) and when.
//
// Two sources:
//  - Synthetic: request i is a pure function of (options, seed, i): input/output lengths drawn from
//    fixed/uniform/normal distributions, an optional shared prefix taken from one of
//    `num_prefixes` groups (the first round(shared_prefix_ratio * input_len) tokens), the rest
//    random. Token-id prompts for /v1/completions; for chat, text built from a seeded word list.
//  - Mooncake trace replay (JSONL: timestamp [ms], input_length, output_length, hash_ids of
//    512-token blocks; read by kv/trace_loader.h). Each hash id becomes a block of deterministic
//    token ids: the tokens of a
//    block are a pure function of (hash id, position, vocab_size), so equal ids give equal tokens
//    and a shorter (last, partial) block is a prefix of the full one. --length-scale shrinks
//    blocks (512 -> 16 for the tiny model) and output lengths; --time-scale stretches timestamps.
//
// Invariants: every token id is in [0, vocab_size); every request has >= 1 prompt token and
// max_tokens >= 1; the same inputs always give the same requests (no global RNG state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/trace_loader.h"

namespace kvmesh::bench {

struct BenchRequest {
  uint64_t index = 0;
  std::vector<int32_t> prompt_tokens;  // token-id prompt (completions); empty in text mode
  std::string prompt_text;             // text prompt (chat); empty in token mode
  uint32_t prompt_len = 0;             // tokens (token mode) or words (text mode)
  uint32_t max_tokens = 1;
  // Offset from the start of the run at which to send it (trace timestamps * time_scale);
  // nullopt when the arrival process decides (Poisson or closed loop).
  std::optional<double> arrival_s;
  int32_t prefix_group = -1;       // synthetic: the shared-prefix group, -1 = none
  uint32_t shared_prefix_len = 0;  // synthetic: leading tokens/words shared with the group
};

enum class LengthDist { kFixed, kUniform, kNormal };
// "fixed" | "uniform" | "normal"; InvalidArgument otherwise.
StatusOr<LengthDist> ParseLengthDist(std::string_view name);
std::string_view LengthDistName(LengthDist dist);

struct LengthSpec {
  uint32_t mean = 128;
  LengthDist dist = LengthDist::kFixed;
  // uniform: [mean*(1-spread), mean*(1+spread)]; normal: stddev mean*spread/2, clipped to
  // [1, 2*mean]. Must be in [0, 1].
  double spread = 0.5;
};

struct SyntheticOptions {
  uint64_t seed = 0;
  LengthSpec input{256, LengthDist::kFixed, 0.5};
  LengthSpec output{64, LengthDist::kFixed, 0.5};
  double shared_prefix_ratio = 0;  // [0, 1): share of input.mean that is a group prefix
  uint32_t num_prefixes = 1;       // groups; each request picks one uniformly (seeded)
  uint32_t vocab_size = 1000;      // token ids in [0, vocab_size)
  bool text = false;               // chat: prompt_text of words instead of token ids

  Status Validate() const;  // InvalidArgument naming the bad field
};

// Request `index` of the synthetic workload. Precondition: options.Validate() is OK.
BenchRequest SyntheticRequest(const SyntheticOptions& options, uint64_t index);

// Samples one length from `spec` with a 64-bit seed (pure function); result >= 1.
uint32_t SampleLength(const LengthSpec& spec, uint64_t seed);

// Poisson arrivals: the first `n` send times (seconds from start) at `rate` requests/s; a pure
// function of (rate, seed). rate <= 0 gives all zeros (send at once).
std::vector<double> PoissonArrivals(double rate, uint64_t seed, size_t n);
// The k-th inter-arrival gap of the same process (PoissonArrivals is the prefix sum of these).
double PoissonGap(double rate, uint64_t seed, uint64_t k);

// --- Mooncake trace ---------------------------------------------------------------------------

// The trace file and where the shared one lives: kv/trace_loader.h.
using kv::FindSharedTrace;
using kv::LoadMooncakeTrace;
using kv::TraceRecord;

struct TraceMapping {
  uint32_t trace_block_tokens = 512;  // block size the trace's hash ids were computed with
  double length_scale = 1.0;          // tokens per block = max(1, round(512 * length_scale))
  double time_scale = 1.0;            // send at timestamp_ms * time_scale / 1000 s
  uint32_t vocab_size = 1000;
  uint32_t max_output_tokens = 0;  // cap after scaling; 0 = none

  Status Validate() const;
  uint32_t ScaledBlockTokens() const;
};

// The first `n` token ids of hash id `hash_id`'s block (pure function of hash_id, position and
// vocab_size).
std::vector<int32_t> HashIdTokens(uint64_t hash_id, uint32_t n, uint32_t vocab_size);

// Maps one trace record: (hash_ids.size()-1) full scaled blocks plus a last block of
// ceil(last_len * length_scale) tokens (clamped to [1, block]), where last_len is what
// input_length leaves for the last 512-token block (clamped to [1, 512]). Output length scaled
// the same way (>= 1). Precondition: mapping.Validate() is OK and record.hash_ids is non-empty.
BenchRequest TraceRecordToRequest(const TraceRecord& record, const TraceMapping& mapping,
                                  uint64_t index);

}  // namespace kvmesh::bench
