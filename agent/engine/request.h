// Requests and outputs of the engine's in-process API (EngineCore / Engine).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/block_hash.h"
#include "kv/block_pool.h"

namespace kvmesh::engine {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0 = no limit
  std::optional<uint64_t> seed;  // none: the engine draws one per request
};

enum class RequestMode {
  kGenerate,     // prefill (with prefix reuse) then decode, the usual path
  kPrefillOnly,  // prefill, sample the first token, finish with the KV blocks pinned for export
  kImportedKv,   // the prompt's KV is filled from outside (KvImporter), then decode continues
                 // from `first_token` (sampled by the prefill worker)
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError, kPrefilled };
const char* FinishReasonName(FinishReason r);  // "stop", "length", "cancelled", "error", "prefilled"

struct GenerateRequest {
  std::string id;  // unique among the engine's live requests
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  int32_t max_tokens = 16;  // completion tokens; generation also stops at the context length
  std::vector<std::string> stop;          // stop strings (need a tokenizer); not in the output
  std::vector<int32_t> stop_token_ids;    // extra stop tokens, not in the text
  bool ignore_eos = false;
  std::string cache_salt;                 // tenant salt for block hashes (block 0)
  RequestMode mode = RequestMode::kGenerate;
  int32_t first_token = -1;               // kImportedKv: the token the prefill worker sampled
  bool recompute_on_import_failure = true;  // kImportedKv: else the request fails
};

// KV blocks kept pinned after a kPrefillOnly request, until Engine(Core)::ReleasePinned.
struct PinnedKv {
  uint64_t pin_id = 0;
  std::vector<kv::BlockId> blocks;    // in sequence order; cover num_tokens tokens
  int32_t num_tokens = 0;             // prompt tokens whose KV the blocks hold
  std::vector<kv::BlockHash> hashes;  // sequence hashes of the full blocks
};

struct RequestOutput {
  std::string id;
  std::vector<int32_t> new_tokens;  // tokens produced by this step (usually one)
  std::string text;                 // new text (only with a tokenizer), stop strings held back
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Status error;                     // finish_reason kError
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;        // prompt tokens whose KV came from the prefix cache
  std::optional<PinnedKv> pinned;   // kPrefillOnly, with the first token
};

// One block a kImportedKv request needs filled from outside: `index` is the block's position in
// the sequence, `block` the local block to write.
struct ImportBlock {
  int32_t index = 0;
  kv::BlockId block = kv::kNullBlockId;
};

}  // namespace kvmesh::engine
