#include "agent/engine/engine_core.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/check.h"
#include "common/log.h"

namespace kvmesh::engine {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
    case FinishReason::kPrefilled: return "prefilled";
  }
  return "";
}

Status EngineOptions::Validate() const {
  if (block_size <= 0 || block_size > 1024) {
    return InvalidArgumentError("block_size must be in [1, 1024], got " + std::to_string(block_size));
  }
  if (num_kv_blocks < 0) return InvalidArgumentError("num_kv_blocks must be >= 0");
  if (num_kv_blocks == 0 && kv_cache_bytes <= 0) {
    return InvalidArgumentError("kv_cache_bytes must be > 0 when num_kv_blocks is 0");
  }
  if (max_num_seqs <= 0) return InvalidArgumentError("max_num_seqs must be > 0");
  if (max_num_batched_tokens <= 0) return InvalidArgumentError("max_num_batched_tokens must be > 0");
  if (max_model_len < 0) return InvalidArgumentError("max_model_len must be >= 0");
  return Status::Ok();
}

EngineCore::EngineCore(const EngineOptions& options, std::shared_ptr<const ModelWeights> weights,
                       KernelOps ops, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                       KvImporter* importer)
    : options_(options),
      model_(std::make_unique<Model>(std::move(weights), ops)),
      tokenizer_(std::move(tokenizer)),
      importer_(importer),
      seed_rng_(std::random_device{}()) {}

StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(
    const EngineOptions& options, std::shared_ptr<const ModelWeights> weights, KernelOps ops,
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer, kv::KvEventSink* events,
    KvImporter* importer) {
  KVMESH_RETURN_IF_ERROR(options.Validate());
  if (!weights) return InvalidArgumentError("engine: no model weights");
  std::unique_ptr<EngineCore> core(
      new EngineCore(options, std::move(weights), ops, std::move(tokenizer), importer));
  const ModelConfig& c = core->model_->config();
  int32_t num_blocks = options.num_kv_blocks;
  if (num_blocks == 0) {
    const int64_t per_block = core->model_->CacheLayout(1, options.block_size).block_bytes();
    num_blocks = static_cast<int32_t>(std::min<int64_t>(options.kv_cache_bytes / per_block, 1 << 24));
  }
  if (num_blocks < 2) {
    return ResourceExhaustedError("engine: the KV cache holds fewer than 2 blocks; raise kv_cache_bytes");
  }
  core->layout_ = core->model_->CacheLayout(num_blocks, options.block_size);
  if (options.kv_cache_allocator) {
    KVMESH_ASSIGN_OR_RETURN(core->kv_cache_, options.kv_cache_allocator(core->layout_));
    if (core->kv_cache_ == nullptr) return InternalError("engine: the KV cache allocator returned null");
  } else {
    core->owned_kv_cache_.assign(static_cast<size_t>(core->layout_.total_elems()), 0.0f);
    core->kv_cache_ = core->owned_kv_cache_.data();
  }
  kv::BlockPoolOptions po;
  po.num_blocks = static_cast<uint32_t>(num_blocks);
  po.block_size = static_cast<uint32_t>(options.block_size);
  po.enable_prefix_caching = options.enable_prefix_caching;
  po.medium = options.medium;
  KVMESH_ASSIGN_OR_RETURN(core->pool_, kv::BlockPool::Create(po, events));
  core->max_model_len_ = options.max_model_len > 0
                             ? std::min(options.max_model_len, c.max_position_embeddings)
                             : c.max_position_embeddings;
  core->eos_ids_ = c.eos_token_ids;
  core->stats_.kv_blocks_total = core->pool_->num_blocks_total();
  KVMESH_LOG_INFO("engine", "engine core ready", {"kv_blocks", num_blocks},
                  {"block_size", options.block_size},
                  {"kv_cache_bytes", core->layout_.total_elems() * 4},
                  {"max_model_len", core->max_model_len_},
                  {"max_num_seqs", options.max_num_seqs},
                  {"max_num_batched_tokens", options.max_num_batched_tokens});
  return core;
}

Status EngineCore::ValidateRequest(const GenerateRequest& req) const {
  const ModelConfig& c = model_->config();
  if (req.id.empty()) return InvalidArgumentError("request id must not be empty");
  if (req.prompt.empty()) return InvalidArgumentError("prompt must contain at least one token");
  for (int32_t t : req.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return InvalidArgumentError("prompt token id " + std::to_string(t) +
                                  " is outside the vocabulary [0, " +
                                  std::to_string(c.vocab_size) + ")");
    }
  }
  const int32_t prompt_len = static_cast<int32_t>(req.prompt.size());
  if (prompt_len >= max_model_len_) {
    return InvalidArgumentError("prompt has " + std::to_string(prompt_len) +
                                " tokens; the context length is " + std::to_string(max_model_len_) +
                                " (prompt plus at least one generated token must fit)");
  }
  if (req.max_tokens < 1) return InvalidArgumentError("max_tokens must be >= 1");
  const SamplingOptions& s = req.sampling;
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return InvalidArgumentError("temperature must be a finite number >= 0");
  }
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1) {
    return InvalidArgumentError("top_p must be in (0, 1]");
  }
  if (s.top_k < 0) return InvalidArgumentError("top_k must be >= 0");
  if (!req.stop.empty() && !tokenizer_) {
    return InvalidArgumentError("stop strings need a tokenizer");
  }
  if (BlocksFor(prompt_len + 1) > static_cast<int32_t>(pool_->num_blocks_total())) {
    return InvalidArgumentError("prompt needs " + std::to_string(BlocksFor(prompt_len + 1)) +
                                " KV blocks; the cache has " +
                                std::to_string(pool_->num_blocks_total()));
  }
  if (req.mode == RequestMode::kImportedKv) {
    if (!importer_) return FailedPreconditionError("engine has no KV importer");
    if (req.first_token < 0 || req.first_token >= c.vocab_size) {
      return InvalidArgumentError("imported request needs first_token in the vocabulary");
    }
  }
  for (int32_t t : req.stop_token_ids) {
    if (t < 0) return InvalidArgumentError("stop_token_ids must be >= 0");
  }
  return Status::Ok();
}

Status EngineCore::AddRequest(GenerateRequest req) {
  KVMESH_RETURN_IF_ERROR(ValidateRequest(req));
  if (seqs_.count(req.id)) return InvalidArgumentError("duplicate request id '" + req.id + "'");
  const SamplingOptions& s = req.sampling;
  const int32_t prompt_len = static_cast<int32_t>(req.prompt.size());
  auto seq = std::make_unique<Sequence>();
  seq->arrival = next_arrival_++;
  seq->seed = s.seed.value_or(seed_rng_());
  seq->tokens = req.prompt;
  seq->num_prompt = prompt_len;
  if (tokenizer_) seq->stop = std::make_unique<tokenizer::StopChecker>(*tokenizer_, req.stop);
  seq->req = std::move(req);
  Sequence* raw = seq.get();
  seqs_.emplace(raw->req.id, std::move(seq));
  waiting_.push_back(raw);
  return Status::Ok();
}

int EngineCore::num_running_active() const {
  int n = 0;
  for (const Sequence* s : running_) n += s->state == SeqState::kRunning;
  return n;
}

bool EngineCore::HasPendingImports() const {
  for (const Sequence* s : running_) {
    if (s->state == SeqState::kImporting) return true;
  }
  return false;
}

void EngineCore::ExtendHashes(Sequence& seq) {
  const size_t full = seq.tokens.size() / options_.block_size;
  const uint64_t seed = kv::kBlockHashSeed;
  while (seq.hashes.size() < full) {
    const size_t i = seq.hashes.size();
    std::span<const uint32_t> blk(
        reinterpret_cast<const uint32_t*>(seq.tokens.data()) + i * options_.block_size,
        static_cast<size_t>(options_.block_size));
    const kv::BlockHash local =
        kv::LocalBlockHash(blk, seed, i == 0 ? std::string_view(seq.req.cache_salt) : std::string_view());
    seq.hashes.push_back(i == 0 ? local : kv::ChainSequenceHash(seq.hashes[i - 1], local, seed));
  }
}

void EngineCore::CommitFullBlocks(Sequence& seq) {
  ExtendHashes(seq);
  const int32_t full = std::min<int32_t>(seq.num_computed / options_.block_size,
                                         static_cast<int32_t>(seq.hashes.size()));
  for (int32_t j = seq.num_committed; j < full; ++j) {
    const kv::BlockId b = seq.blocks[j];
    if (!pool_->HashOf(b)) {
      std::span<const uint32_t> toks(
          reinterpret_cast<const uint32_t*>(seq.tokens.data()) + static_cast<size_t>(j) * options_.block_size,
          static_cast<size_t>(options_.block_size));
      std::optional<kv::BlockHash> parent;
      if (j > 0) parent = seq.hashes[j - 1];
      Status st = pool_->CommitBlock(b, seq.hashes[j], parent, toks);
      if (!st.ok()) KVMESH_BUG("engine", "commit of a full block failed: " + st.message());
    }
  }
  seq.num_committed = std::max(seq.num_committed, full);
}

void EngineCore::FreeBlocks(Sequence& seq) {
  if (!seq.blocks.empty()) pool_->Free(seq.blocks);
  seq.blocks.clear();
  seq.num_committed = 0;
}

void EngineCore::RemoveRunning(Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  if (it != running_.end()) running_.erase(it);
}

void EngineCore::Preempt(Sequence& seq) {
  FreeBlocks(seq);
  seq.num_computed = 0;
  seq.state = SeqState::kWaiting;
  RemoveRunning(&seq);
  waiting_.push_front(&seq);
  ++stats_.preemptions;
  KVMESH_LOG_DEBUG("engine", "preempted (recompute)", {"request", seq.req.id},
                   {"tokens", static_cast<int64_t>(seq.tokens.size())});
}

void EngineCore::FillUsage(const Sequence& seq, RequestOutput& out) const {
  out.prompt_tokens = seq.num_prompt;
  out.completion_tokens = std::max(0, seq.num_generated());
  out.cached_tokens = seq.cached_tokens;
}

void EngineCore::Finish(Sequence& seq, FinishReason reason, RequestOutput& out, Status error) {
  out.finished = true;
  out.finish_reason = reason;
  out.error = std::move(error);
  if (seq.stop && reason != FinishReason::kCancelled && reason != FinishReason::kError) {
    out.text += seq.stop->Flush();
  }
  FillUsage(seq, out);
  if (seq.state == SeqState::kImporting) {
    // The importer may still be writing into these blocks: they stay allocated until its
    // CompleteImport arrives, then go back to the pool.
    abandoned_imports_[seq.req.id] = std::move(seq.blocks);
    seq.blocks.clear();
  } else if (reason == FinishReason::kPrefilled) {
    PinnedKv pin;
    pin.pin_id = next_pin_id_++;
    pin.blocks = seq.blocks;  // ownership of the references moves to the pin
    pin.num_tokens = seq.num_prompt;
    pin.hashes.assign(seq.hashes.begin(),
                      seq.hashes.begin() + std::min<size_t>(seq.hashes.size(), seq.num_prompt / options_.block_size));
    seq.blocks.clear();
    pinned_.emplace(pin.pin_id, pin);
    out.pinned = std::move(pin);
  } else {
    FreeBlocks(seq);
  }
  RemoveRunning(&seq);
  auto wit = std::find(waiting_.begin(), waiting_.end(), &seq);
  if (wit != waiting_.end()) waiting_.erase(wit);
  ++stats_.requests_finished;
  seqs_.erase(seq.req.id);  // destroys seq
}

bool EngineCore::Abort(const std::string& id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  Sequence& seq = *it->second;
  RequestOutput out;
  out.id = id;
  Finish(seq, FinishReason::kCancelled, out);
  pending_outputs_.push_back(std::move(out));
  return true;
}

bool EngineCore::ReleasePinned(uint64_t pin_id) {
  auto it = pinned_.find(pin_id);
  if (it == pinned_.end()) return false;
  pool_->Free(it->second.blocks);
  pinned_.erase(it);
  return true;
}

void EngineCore::AdmitImport(Sequence& seq) {
  // The prompt's full blocks this worker already caches are reused; the rest are imported.
  ExtendHashes(seq);
  const int32_t need_blocks = BlocksFor(seq.num_prompt);
  std::span<const kv::BlockHash> prefix(seq.hashes.data(),
                                        std::min<size_t>(seq.hashes.size(), seq.num_prompt / options_.block_size));
  const size_t k = pool_->PeekCachedPrefix(prefix);
  auto alloc = pool_->AllocateForSequence(prefix.subspan(0, k), need_blocks - k);
  if (!alloc) return;  // no room yet: stays waiting
  waiting_.pop_front();
  seq.blocks = std::move(alloc->cached);
  seq.blocks.insert(seq.blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
  seq.num_committed = static_cast<int32_t>(k);
  seq.cached_tokens = static_cast<int32_t>(k) * options_.block_size;
  seq.admitted_once = true;
  stats_.prompt_tokens += seq.num_prompt;
  stats_.cached_prompt_tokens += seq.cached_tokens;
  seq.state = SeqState::kImporting;
  running_.push_back(&seq);
  std::vector<ImportBlock> need;
  for (int32_t j = static_cast<int32_t>(k); j < need_blocks; ++j) need.push_back({j, seq.blocks[j]});
  if (need.empty()) {
    CompleteImport(seq.req.id, Status::Ok());
    return;
  }
  importer_->StartImport(seq.req.id, need);
}

StatusOr<PinnedKv> EngineCore::PinCachedPrefix(std::span<const kv::BlockHash> hashes) {
  if (hashes.empty()) return InvalidArgumentError("no block hashes to export");
  const size_t k = pool_->PeekCachedPrefix(hashes);
  if (k == 0) return NotFoundError("the first block of the prefix is not cached here");
  PinnedKv pin;
  pin.pin_id = next_pin_id_++;
  pin.hashes.assign(hashes.begin(), hashes.begin() + static_cast<std::ptrdiff_t>(k));
  for (kv::BlockHash h : pin.hashes) {
    auto b = pool_->Lookup(h);
    if (!b) KVMESH_BUG("engine", "a block of a cached prefix has no block");
    pin.blocks.push_back(*b);
  }
  pool_->AddRef(pin.blocks);
  pin.num_tokens = static_cast<int32_t>(k) * options_.block_size;
  pinned_.emplace(pin.pin_id, pin);
  return pin;
}

void EngineCore::ImportPrefix(const std::string& id, std::vector<kv::BlockHash> hashes, PrefixImportDone done) {
  if (hashes.empty()) return done(InvalidArgumentError("no block hashes to import"), 0, 0);
  if (!importer_) return done(FailedPreconditionError("engine has no KV importer"), 0, 0);
  if (!options_.enable_prefix_caching) {
    return done(FailedPreconditionError("prefix caching is off: imported blocks could not be reused"), 0, 0);
  }
  if (prefix_imports_.count(id) != 0 || seqs_.count(id) != 0 || abandoned_imports_.count(id) != 0) {
    return done(InvalidArgumentError("import id '" + id + "' is in use"), 0, 0);
  }
  const size_t k = pool_->PeekCachedPrefix(hashes);
  auto alloc = pool_->AllocateForSequence(std::span<const kv::BlockHash>(hashes).subspan(0, k), hashes.size() - k);
  if (!alloc) {
    return done(ResourceExhaustedError("not enough free KV blocks for " + std::to_string(hashes.size() - k) +
                                       " imported blocks"),
                0, 0);
  }
  PrefixImport imp;
  imp.cached = static_cast<int32_t>(k);
  imp.blocks = std::move(alloc->cached);
  imp.blocks.insert(imp.blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
  imp.hashes = std::move(hashes);
  imp.done = std::move(done);
  std::vector<ImportBlock> need;
  for (size_t j = k; j < imp.blocks.size(); ++j) need.push_back({static_cast<int32_t>(j), imp.blocks[j]});
  prefix_imports_.emplace(id, std::move(imp));
  if (need.empty()) return CompleteImport(id, Status::Ok());
  importer_->StartImport(id, need);
}

void EngineCore::CompleteImport(const std::string& id, const Status& result) {
  if (auto pi = prefix_imports_.find(id); pi != prefix_imports_.end()) {
    PrefixImport imp = std::move(pi->second);
    prefix_imports_.erase(pi);
    int32_t imported = 0;
    if (result.ok()) {
      for (size_t j = static_cast<size_t>(imp.cached); j < imp.blocks.size(); ++j) {
        std::optional<kv::BlockHash> parent;
        if (j > 0) parent = imp.hashes[j - 1];
        Status st = pool_->CommitBlock(imp.blocks[j], imp.hashes[j], parent, {});
        if (!st.ok()) KVMESH_BUG("engine", "commit of an imported block failed: " + st.message());
        ++imported;
      }
    }
    pool_->Free(imp.blocks);  // in chain order: the tail is evicted first
    imp.done(result.ok() ? Status::Ok() : result, imported, imp.cached);
    return;
  }
  if (auto ab = abandoned_imports_.find(id); ab != abandoned_imports_.end()) {
    if (!ab->second.empty()) pool_->Free(ab->second);
    abandoned_imports_.erase(ab);
    return;
  }
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  Sequence& seq = *it->second;
  if (seq.state != SeqState::kImporting) return;
  seq.tokens.push_back(seq.req.first_token);
  if (result.ok()) {
    seq.num_computed = seq.num_prompt;
    seq.state = SeqState::kRunning;
    CommitFullBlocks(seq);
  } else {
    ++stats_.imports_failed;
    KVMESH_LOG_WARN("engine", "KV import failed", {"request", id}, {"error", result.ToString()},
                    {"recompute", seq.req.recompute_on_import_failure});
    if (!seq.req.recompute_on_import_failure) {
      seq.state = SeqState::kRunning;  // the import is over: Finish frees the blocks
      RequestOutput out;
      out.id = id;
      Finish(seq, FinishReason::kError, out, UnavailableError("KV import failed: " + result.message()));
      pending_outputs_.push_back(std::move(out));
      return;
    }
    // Recompute: prompt + first token are prefilled locally; the cached prefix stays valid.
    const int32_t keep = seq.num_committed;
    std::vector<kv::BlockId> drop(seq.blocks.begin() + keep, seq.blocks.end());
    if (!drop.empty()) pool_->Free(drop);
    seq.blocks.resize(keep);
    seq.num_computed = keep * options_.block_size;
    seq.state = SeqState::kRunning;
  }
  // The first token is already known: report it as this request's first output.
  RequestOutput out;
  out.id = id;
  out.new_tokens.push_back(seq.req.first_token);
  if (seq.stop) out.text = seq.stop->Push(seq.req.first_token).text;
  FillUsage(seq, out);
  ++stats_.generated_tokens;
  pending_outputs_.push_back(std::move(out));
}

bool EngineCore::Admit(Sequence& seq, int32_t budget, std::vector<Scheduled>& out) {
  ExtendHashes(seq);
  const int32_t len = static_cast<int32_t>(seq.tokens.size());
  // The last token is always computed (its logits are needed): look up at most (len-1)/bs blocks.
  const size_t max_cached = static_cast<size_t>((len - 1) / options_.block_size);
  std::span<const kv::BlockHash> prefix(seq.hashes.data(), std::min(seq.hashes.size(), max_cached));
  const size_t k = pool_->PeekCachedPrefix(prefix);
  const int32_t cached = static_cast<int32_t>(k) * options_.block_size;
  const int32_t n = std::min(len - cached, budget);
  const int32_t need = BlocksFor(cached + n) - static_cast<int32_t>(k);
  auto alloc = pool_->AllocateForSequence(prefix.subspan(0, k), static_cast<size_t>(need));
  if (!alloc) return false;
  seq.blocks = std::move(alloc->cached);
  seq.blocks.insert(seq.blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
  seq.num_computed = cached;
  seq.num_committed = static_cast<int32_t>(k);
  if (!seq.admitted_once) {
    seq.admitted_once = true;
    seq.cached_tokens = std::min(cached, seq.num_prompt);
    stats_.prompt_tokens += seq.num_prompt;
    stats_.cached_prompt_tokens += seq.cached_tokens;
  }
  seq.state = SeqState::kRunning;
  out.push_back({&seq, n});
  return true;
}

std::vector<EngineCore::Scheduled> EngineCore::Schedule() {
  std::vector<Scheduled> out;
  int32_t budget = options_.max_num_batched_tokens;
  bool preempted = false;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* seq = running_[i];
    if (seq->state != SeqState::kRunning) continue;
    const int32_t n = std::min(static_cast<int32_t>(seq->tokens.size()) - seq->num_computed, budget);
    if (n <= 0) continue;
    const int32_t need = BlocksFor(seq->num_computed + n) - static_cast<int32_t>(seq->blocks.size());
    bool self_preempted = false;
    while (need > 0 && pool_->num_blocks_free() < static_cast<uint32_t>(need)) {
      // Preempt the newest running request (it may be this one).
      Sequence* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
        if ((*it)->state == SeqState::kRunning) { victim = *it; break; }
      }
      if (victim == nullptr) break;
      preempted = true;
      const bool is_self = victim == seq;
      // Drop it from this step's schedule if it was already scheduled.
      std::erase_if(out, [&](const Scheduled& s) {
        if (s.seq == victim) budget += s.num_tokens;
        return s.seq == victim;
      });
      Preempt(*victim);
      if (is_self) { self_preempted = true; break; }
    }
    if (self_preempted) break;
    if (need > 0) {
      auto fresh = pool_->Allocate(static_cast<size_t>(need));
      if (!fresh) break;  // pinned blocks hold the cache; wait
      seq->blocks.insert(seq->blocks.end(), fresh->begin(), fresh->end());
    }
    out.push_back({seq, n});
    budget -= n;
  }
  if (!preempted) {
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
      Sequence* seq = waiting_.front();
      if (seq->req.mode == RequestMode::kImportedKv && !seq->admitted_once) {
        const size_t before = waiting_.size();
        AdmitImport(*seq);
        if (waiting_.size() == before) break;  // no room yet
        continue;
      }
      if (!Admit(*seq, budget, out)) break;
      waiting_.pop_front();
      running_.push_back(seq);
      budget -= out.back().num_tokens;
    }
  }
  // Decode-only sequences first: the model runs them through the decode attention kernel.
  std::stable_partition(out.begin(), out.end(), [](const Scheduled& s) { return s.num_tokens == 1; });
  return out;
}

std::vector<RequestOutput> EngineCore::Step() {
  std::vector<RequestOutput> outputs = std::move(pending_outputs_);
  pending_outputs_.clear();
  std::vector<Scheduled> sched = Schedule();
  last_step_idle_ = sched.empty();
  if (sched.empty()) return outputs;
  ++stats_.steps;

  // Build the batch.
  batch_.Clear();
  int32_t max_blocks = 1;
  for (const Scheduled& s : sched) max_blocks = std::max<int32_t>(max_blocks, s.seq->blocks.size());
  batch_.max_blocks_per_seq = max_blocks;
  batch_.cu_q_lens.push_back(0);
  batch_.block_tables.assign(sched.size() * static_cast<size_t>(max_blocks), 0);
  std::vector<Sequence*> sampled;
  for (size_t i = 0; i < sched.size(); ++i) {
    Sequence& seq = *sched[i].seq;
    const int32_t start = seq.num_computed;
    const int32_t end = start + sched[i].num_tokens;
    for (int32_t p = start; p < end; ++p) {
      batch_.tokens.push_back(seq.tokens[p]);
      batch_.positions.push_back(p);
      const kv::BlockId b = seq.blocks[p / options_.block_size];
      batch_.slot_mapping.push_back(static_cast<int64_t>(b) * options_.block_size +
                                    p % options_.block_size);
    }
    batch_.cu_q_lens.push_back(static_cast<int32_t>(batch_.tokens.size()));
    batch_.context_lens.push_back(end);
    std::copy(seq.blocks.begin(), seq.blocks.end(),
              batch_.block_tables.begin() + static_cast<int64_t>(i) * max_blocks);
    stats_.computed_prompt_tokens += std::max(0, std::min(end, seq.num_prompt) - start);
    if (end == static_cast<int32_t>(seq.tokens.size())) {
      batch_.logits_rows.push_back(static_cast<int32_t>(batch_.tokens.size()) - 1);
      sampled.push_back(&seq);
    }
  }

  StatusOr<std::span<const float>> logits = model_->Forward(batch_, kv_cache_, layout_);
  if (!logits.ok()) {
    // A batch the model rejects is an engine bug; fail the requests rather than the process.
    KVMESH_BUG("engine", "forward pass rejected a batch: " + logits.status().message());
    for (const Scheduled& s : sched) {
      RequestOutput out;
      out.id = s.seq->req.id;
      Finish(*s.seq, FinishReason::kError, out, InternalError(logits.status().message()));
      outputs.push_back(std::move(out));
    }
    return outputs;
  }
  for (const Scheduled& s : sched) {
    s.seq->num_computed += s.num_tokens;
    CommitFullBlocks(*s.seq);
  }
  if (sampled.empty()) return outputs;

  const int64_t vocab = model_->config().vocab_size;
  std::vector<kernels::SamplingRow> rows(sampled.size());
  for (size_t i = 0; i < sampled.size(); ++i) {
    const Sequence& seq = *sampled[i];
    rows[i].temperature = seq.req.sampling.temperature;
    rows[i].top_k = seq.req.sampling.top_k;
    rows[i].top_p = seq.req.sampling.top_p;
    rows[i].seed = seq.seed;
    rows[i].step = static_cast<uint64_t>(seq.num_generated());
  }
  const int64_t ws = model_->ops().sample_workspace_floats(static_cast<int64_t>(rows.size()), vocab);
  if (static_cast<int64_t>(sample_workspace_.size()) < ws) sample_workspace_.resize(ws);
  std::vector<int32_t> next(sampled.size());
  model_->ops().sample(next.data(), logits->data(), rows.data(), static_cast<int64_t>(rows.size()),
                       vocab, sample_workspace_.data(), nullptr);

  for (size_t i = 0; i < sampled.size(); ++i) {
    Sequence& seq = *sampled[i];
    const int32_t tok = next[i];
    RequestOutput out;
    out.id = seq.req.id;
    if (seq.req.mode == RequestMode::kPrefillOnly) {
      seq.tokens.push_back(tok);
      out.new_tokens.push_back(tok);
      if (seq.stop) out.text = seq.stop->Push(tok).text;
      ++stats_.generated_tokens;
      Finish(seq, FinishReason::kPrefilled, out);
      outputs.push_back(std::move(out));
      continue;
    }
    seq.tokens.push_back(tok);
    out.new_tokens.push_back(tok);
    ++stats_.generated_tokens;
    const bool is_eos = !seq.req.ignore_eos &&
                        std::find(eos_ids_.begin(), eos_ids_.end(), tok) != eos_ids_.end();
    const bool is_stop_id = std::find(seq.req.stop_token_ids.begin(), seq.req.stop_token_ids.end(),
                                      tok) != seq.req.stop_token_ids.end();
    FinishReason reason = FinishReason::kNone;
    if (is_eos || is_stop_id) {
      reason = FinishReason::kStop;
    } else {
      if (seq.stop) {
        tokenizer::StopChecker::Result r = seq.stop->Push(tok);
        out.text = std::move(r.text);
        if (r.stopped) reason = FinishReason::kStop;
      }
      if (reason == FinishReason::kNone &&
          (seq.num_generated() >= seq.req.max_tokens ||
           static_cast<int32_t>(seq.tokens.size()) >= max_model_len_)) {
        reason = FinishReason::kLength;
      }
    }
    if (reason != FinishReason::kNone) {
      Finish(seq, reason, out);  // an EOS / stop token is not text; held-back text is flushed
    } else {
      FillUsage(seq, out);
    }
    outputs.push_back(std::move(out));
  }
  return outputs;
}

EngineStats EngineCore::Stats() const {
  EngineStats s = stats_;
  s.num_running = static_cast<int32_t>(running_.size());
  s.num_waiting = static_cast<int32_t>(waiting_.size());
  s.num_pinned = static_cast<int32_t>(pinned_.size());
  s.kv_blocks_total = pool_->num_blocks_total();
  s.kv_blocks_used = pool_->num_blocks_used();
  s.kv_blocks_cached = pool_->num_blocks_cached();
  s.pool = pool_->stats();
  return s;
}

}  // namespace kvmesh::engine
