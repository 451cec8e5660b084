// EngineCore: the single-threaded heart of the engine — iteration-level continuous batching over
// the paged KV cache (vLLM v1's scheduler + model runner, in one object).
//
// Every Step():
//  1. Schedules under a token budget (max_num_batched_tokens) and max_num_seqs: running requests
//     first, oldest first (a decode token each, or the next chunk of a chunked prefill), then
//     waiting requests FIFO. A new request first pins its longest cached prefix in the block pool
//     (those tokens are not recomputed and are reported as cached_tokens); the last prompt token
//     is always computed so that its logits exist.
//  2. When the pool has no room for a running request's next blocks, the newest running request is
//     preempted by recompute (blocks freed — full ones stay in the prefix cache — and the request
//     goes back to the head of the queue with its generated tokens, which are recomputed later).
//  3. Runs one forward pass for all scheduled tokens, commits newly filled blocks to the prefix
//     cache (emitting BlockStored), samples one token for each request whose prompt is complete,
//     applies stop rules (EOS, stop token ids, stop strings, max_tokens, context length), frees
//     finished requests' blocks.
// Abort() frees a request's blocks immediately (it is never scheduled again).
//
// Modes (request.h): kPrefillOnly ends after the first token with its blocks pinned (PinnedKv)
// until ReleasePinned(); kImportedKv allocates blocks for the prompt (reusing the local prefix
// cache), asks the KvImporter to fill the rest, and decodes once CompleteImport() reports success.
//
// Thread safety: none. The owner (Engine) calls every method from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/engine/model.h"
#include "agent/engine/request.h"
#include "tokenizer/stop_checker.h"
#include "common/status.h"
#include "kv/block_pool.h"
#include "kv/kv_event.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::engine {

struct EngineOptions {
  int32_t block_size = 16;
  int32_t num_kv_blocks = 0;          // 0: derived from kv_cache_bytes
  int64_t kv_cache_bytes = 256 << 20;  // used when num_kv_blocks == 0
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 512;  // token budget of one step (chunked prefill)
  int32_t max_model_len = 0;             // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  kv::Medium medium = kv::Medium::kG1;
  // Where the KV cache lives. Unset: the engine allocates it. Set: called once by Create with the
  // final layout; returns memory for layout.total_elems() floats, zeroed, that outlives the core
  // (the agent lets its KV transport allocate it, so peers can read it fastest).
  std::function<StatusOr<float*>(const kernels::KvCacheLayout& layout)> kv_cache_allocator;
  // Testing only (threaded Engine): the engine thread sleeps this long after each step that
  // produced output, so a test can act mid-stream (e.g. kill a worker after N tokens). 0 = off.
  std::chrono::microseconds debug_step_delay{0};

  Status Validate() const;
};

// Fills blocks of kImportedKv requests from outside (the agent's KV transfer). StartImport is
// called on the engine thread; the importer later calls EngineCore::CompleteImport (through the
// Engine's queue) exactly once per started import, also after a cancel.
class KvImporter {
 public:
  virtual ~KvImporter() = default;
  virtual void StartImport(const std::string& request_id, std::span<const ImportBlock> blocks) = 0;
};

struct EngineStats {
  uint64_t steps = 0;
  uint64_t requests_finished = 0;
  uint64_t prompt_tokens = 0;        // of admitted requests (counted once, not on resume)
  uint64_t cached_prompt_tokens = 0;  // of those, served from the prefix cache
  uint64_t computed_prompt_tokens = 0;  // prefill tokens computed, incl. recompute after preemption
  uint64_t generated_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t imports_failed = 0;
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_pinned = 0;
  uint32_t kv_blocks_total = 0;
  uint32_t kv_blocks_used = 0;
  uint32_t kv_blocks_cached = 0;
  kv::BlockPoolStats pool;
};

class EngineCore {
 public:
  // `tokenizer` may be null (then no text and no stop strings); `events` and `importer` may be
  // null and must outlive the core. InvalidArgument for bad options; ResourceExhausted when the
  // cache would have fewer than 2 blocks.
  static StatusOr<std::unique_ptr<EngineCore>> Create(const EngineOptions& options,
                                                      std::shared_ptr<const ModelWeights> weights,
                                                      KernelOps ops,
                                                      std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                                                      kv::KvEventSink* events = nullptr,
                                                      KvImporter* importer = nullptr);

  // Queues a request. InvalidArgument (nothing queued) for: empty prompt, token ids outside the
  // vocabulary, prompt that leaves no room in the context (>= max_model_len), max_tokens < 1, bad
  // sampling values, stop strings without a tokenizer, a duplicate live id, a prompt that needs
  // more blocks than the whole cache; kImportedKv without a first_token or importer.
  Status AddRequest(GenerateRequest request);
  // The checks of AddRequest except the duplicate id. Reads only state fixed at Create, so any
  // thread may call it (Engine::Submit does, to fail fast on the caller's thread).
  Status ValidateRequest(const GenerateRequest& request) const;
  // Finishes a live request as cancelled and frees its blocks; false if the id is unknown.
  // Its final RequestOutput comes from the next Step(). A request whose KV import is still
  // running keeps its blocks until the importer's CompleteImport (which must still come).
  bool Abort(const std::string& id);
  // Frees the blocks of a kPrefillOnly result; false if the pin id is unknown (already released).
  bool ReleasePinned(uint64_t pin_id);
  // Result of a KvImporter::StartImport. OK: the blocks hold the prompt's KV, decoding starts.
  // Error: recompute locally or fail, per the request. Unknown / cancelled ids are ignored.
  // An id of ImportPrefix completes that prefix import instead.
  void CompleteImport(const std::string& id, const Status& result);

  // Prefix copies between agents (docs/kv-transfer.md, "Prefix copies"), no request involved.
  //
  // Pins the blocks of the longest leading run of `hashes` cached in this pool for an export,
  // like a kPrefillOnly result: ReleasePinned(pin_id) frees them; num_tokens covers the pinned
  // blocks. NotFound when not even the first block is cached; InvalidArgument when `hashes` is
  // empty.
  StatusOr<PinnedKv> PinCachedPrefix(std::span<const kv::BlockHash> hashes);
  // Fills this pool's prefix cache with a chain of full blocks held elsewhere: hashes[i] is the
  // sequence hash of block i (its parent hashes[i - 1]). The leading blocks cached here already
  // are kept (pinned meanwhile), fresh blocks for the rest are handed to the KvImporter under
  // `id` (ImportBlock::index = the chain index), and when its CompleteImport arrives they are
  // committed with their hashes (OK) or freed uncommitted (error); then all go back to the pool
  // as cached, evictable blocks. `done(status, imported, already_cached)` runs exactly once, on
  // this thread (at once when nothing needs importing or on an error here). Errors:
  // InvalidArgument (empty chain, duplicate live id), FailedPrecondition (no importer, prefix
  // caching off), ResourceExhausted (not enough free blocks now).
  using PrefixImportDone = std::function<void(const Status&, int32_t imported, int32_t already_cached)>;
  void ImportPrefix(const std::string& id, std::vector<kv::BlockHash> hashes, PrefixImportDone done);

  // Runs one iteration; returns the outputs it produced (possibly none).
  std::vector<RequestOutput> Step();
  // True while some request is waiting or running (importing requests count only if nothing
  // else is; they make no progress until CompleteImport).
  bool HasWork() const { return !waiting_.empty() || num_running_active() > 0 || !pending_outputs_.empty(); }
  bool HasPendingImports() const;
  // True when the last Step() scheduled nothing (e.g. every waiting request is blocked on KV
  // blocks held by pins or imports): the caller should wait for a command instead of spinning.
  bool last_step_idle() const { return last_step_idle_; }

  EngineStats Stats() const;
  const EngineOptions& options() const { return options_; }
  const Model& model() const { return *model_; }
  const kernels::KvCacheLayout& cache_layout() const { return layout_; }
  float* kv_cache_data() { return kv_cache_; }
  const kv::BlockPool& block_pool() const { return *pool_; }
  int32_t max_model_len() const { return max_model_len_; }

 private:
  enum class SeqState { kWaiting, kRunning, kImporting };
  struct Sequence {
    GenerateRequest req;
    uint64_t arrival = 0;
    uint64_t seed = 0;
    SeqState state = SeqState::kWaiting;
    std::vector<int32_t> tokens;  // prompt + generated
    int32_t num_prompt = 0;
    int32_t num_computed = 0;     // tokens whose KV is in the cache
    int32_t num_committed = 0;    // leading blocks registered in the prefix cache
    int32_t cached_tokens = 0;    // prefix-cache hit at first admission
    bool admitted_once = false;
    std::vector<kv::BlockId> blocks;
    std::vector<kv::BlockHash> hashes;  // sequence hashes of the full blocks of `tokens`
    std::unique_ptr<tokenizer::StopChecker> stop;
    int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - num_prompt; }
  };
  struct Scheduled {
    Sequence* seq;
    int32_t num_tokens;
  };

  EngineCore(const EngineOptions& options, std::shared_ptr<const ModelWeights> weights,
             KernelOps ops, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
             KvImporter* importer);

  int num_running_active() const;
  std::vector<Scheduled> Schedule();
  bool Admit(Sequence& seq, int32_t budget, std::vector<Scheduled>& out);
  void AdmitImport(Sequence& seq);
  void Preempt(Sequence& seq);
  void ExtendHashes(Sequence& seq);
  void CommitFullBlocks(Sequence& seq);
  void FreeBlocks(Sequence& seq);
  void Finish(Sequence& seq, FinishReason reason, RequestOutput& out, Status error = Status::Ok());
  void FillUsage(const Sequence& seq, RequestOutput& out) const;
  int32_t BlocksFor(int32_t tokens) const {
    return (tokens + options_.block_size - 1) / options_.block_size;
  }
  void RemoveRunning(Sequence* seq);

  const EngineOptions options_;
  std::unique_ptr<Model> model_;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  KvImporter* importer_;
  kernels::KvCacheLayout layout_;
  float* kv_cache_ = nullptr;           // owned_kv_cache_.data() or the allocator's memory
  std::vector<float> owned_kv_cache_;
  std::unique_ptr<kv::BlockPool> pool_;
  int32_t max_model_len_ = 0;
  std::vector<int32_t> eos_ids_;

  std::unordered_map<std::string, std::unique_ptr<Sequence>> seqs_;  // every live request
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // arrival order, oldest first (includes importing)
  std::unordered_map<uint64_t, PinnedKv> pinned_;
  // Blocks of cancelled requests whose import is still running, by request id; freed when the
  // importer's CompleteImport arrives (it may still write into them until then).
  std::unordered_map<std::string, std::vector<kv::BlockId>> abandoned_imports_;
  struct PrefixImport {
    std::vector<kv::BlockHash> hashes;
    std::vector<kv::BlockId> blocks;  // one per hash, pinned
    int32_t cached = 0;               // leading blocks that were cached here already
    PrefixImportDone done;
  };
  std::unordered_map<std::string, PrefixImport> prefix_imports_;  // by import id
  std::vector<RequestOutput> pending_outputs_;  // produced outside Step (aborts, failures)
  uint64_t next_arrival_ = 0;
  uint64_t next_pin_id_ = 1;
  std::mt19937_64 seed_rng_;
  EngineStats stats_;

  bool last_step_idle_ = false;
  ForwardBatch batch_;
  std::vector<float> sample_workspace_;
};

}  // namespace kvmesh::engine
