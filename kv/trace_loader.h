// Mooncake request traces (JSONL, one request per line: `timestamp` [ms], `input_length`,
// `output_length`, `hash_ids` = ids of the prompt's 512-token prefix blocks; equal ids mean equal
// block contents and, since ids chain, equal prefixes) and the prompt token ids synthesized from
// them. One loader for every replay: `kvmesh bench --trace`, `kvmesh kv-demo` and the prefix index
// benchmark (kv/prefix_index_bench.cc).
//
// Invariants: a loaded record has at least one hash id, input_length > 0 and timestamp >= 0;
// MooncakePromptTokens is a pure function of (hash ids, input_length, vocab_size), so the same
// hash id always gives the same tokens at the same positions and a shared id prefix is a shared
// token prefix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::kv {

// Tokens per hash id in Mooncake traces.
inline constexpr uint32_t kMooncakeBlockTokens = 512;

struct TraceRecord {
  double timestamp_ms = 0;  // 0 when the line has no timestamp
  uint32_t input_length = 0;
  uint32_t output_length = 0;
  std::vector<uint64_t> hash_ids;
};

// Reads at most `max_records` records (0 = all) of a Mooncake JSONL file. Blank lines are skipped.
// NotFound "cannot open trace '<path>'" when the file cannot be opened; InvalidArgument
// "<path>:<line>: <what>" for a malformed line (not JSON, a missing or mistyped field, empty
// hash_ids, input_length 0, negative timestamp). An empty file gives no records.
StatusOr<std::vector<TraceRecord>> LoadMooncakeTrace(const std::string& path, size_t max_records);

// The prompt of `record` as token ids in [0, vocab_size): min(input_length, 512 * hash_ids.size())
// tokens; token t is SplitMix64(hash_ids[t / 512] * 512 + t % 512) % vocab_size.
// Precondition: vocab_size > 0.
std::vector<uint32_t> MooncakePromptTokens(const TraceRecord& record, uint32_t vocab_size);

// A trace shipped in the shared data folder: $KVMESH_SHARED_DIR/data/traces/<name>, else
// shared/data/traces/<name> looked up from $KVMESH_SOURCE_DIR/.., the working directory and the
// executable's directory, each and up to 5 of its parents. nullopt if not found.
std::optional<std::string> FindSharedTrace(std::string_view name);

}  // namespace kvmesh::kv
