// Continuous batching correctness on the CPU backend: batching, chunking, preemption, prefix
// reuse and disaggregated prefill/import must not change a request's tokens; blocks are never
// leaked; bad requests are rejected without side effects.
#include "agent/engine/engine_core.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "agent/engine/engine_test_util.h"
#include "kernels/kv_cache_ops.h"
#include "kv/block_hash.h"

namespace kvmesh::engine {
namespace {

using test_util::TempDir;
using test_util::TestModelSpec;
using test_util::WriteTestModel;

class EngineCoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    TestModelSpec s;
    s.vocab = 211;
    s.max_pos = 256;
    WriteTestModel(s, dir_->path());
    auto w = ModelWeights::Load(dir_->path());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    weights_ = new std::shared_ptr<const ModelWeights>(std::move(*w));
  }
  static void TearDownTestSuite() {
    delete weights_;
    delete dir_;
  }

  static std::unique_ptr<EngineCore> MakeCore(EngineOptions o, KvImporter* importer = nullptr,
                                              kv::KvEventSink* events = nullptr) {
    auto core = EngineCore::Create(o, *weights_, RefKernelOps(), nullptr, events, importer);
    EXPECT_TRUE(core.ok()) << core.status().ToString();
    return std::move(*core);
  }
  static EngineOptions Opts(int blocks = 256, int budget = 512) {
    EngineOptions o;
    o.block_size = 4;
    o.num_kv_blocks = blocks;
    o.max_num_batched_tokens = budget;
    return o;
  }
  static GenerateRequest Req(const std::string& id, int prompt_len, int max_tokens,
                             uint64_t seed = 1, float temperature = 0.0f) {
    GenerateRequest r;
    r.id = id;
    std::mt19937_64 rng(seed);
    for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(static_cast<int32_t>(3 + rng() % 200));
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    if (temperature > 0) {
      r.sampling.top_p = 0.9f;
      r.sampling.top_k = 40;
    }
    return r;
  }
  struct Result {
    std::vector<int32_t> tokens;
    RequestOutput last;
  };
  // Steps until every request finished; collects tokens per id.
  static std::map<std::string, Result> RunAll(EngineCore& core, int max_steps = 10000) {
    std::map<std::string, Result> out;
    for (int i = 0; i < max_steps && core.HasWork(); ++i) {
      for (RequestOutput& o : core.Step()) {
        Result& r = out[o.id];
        r.tokens.insert(r.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
        if (o.finished) r.last = o;
      }
    }
    EXPECT_FALSE(core.HasWork()) << "requests still live after " << max_steps << " steps";
    return out;
  }
  static void ExpectNoLeaks(const EngineCore& core) {
    EXPECT_EQ(core.block_pool().num_blocks_used(), 0u);
    EXPECT_TRUE(core.block_pool().CheckInvariants().ok());
  }

  static TempDir* dir_;
  static std::shared_ptr<const ModelWeights>* weights_;
};
TempDir* EngineCoreTest::dir_ = nullptr;
std::shared_ptr<const ModelWeights>* EngineCoreTest::weights_ = nullptr;

// 16 requests of different prompt lengths, each run alone vs all at once.
std::vector<GenerateRequest> SixteenRequests(float temperature) {
  std::vector<GenerateRequest> v;
  for (int i = 0; i < 16; ++i) {
    GenerateRequest r;
    r.id = "r" + std::to_string(i);
    std::mt19937_64 rng(100 + i);
    const int len = 3 + (i * 7) % 45;
    for (int j = 0; j < len; ++j) r.prompt.push_back(static_cast<int32_t>(3 + rng() % 200));
    r.max_tokens = 10;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.top_k = temperature > 0 ? 50 : 0;
    r.sampling.top_p = temperature > 0 ? 0.95f : 1.0f;
    r.sampling.seed = 1000 + i;
    v.push_back(r);
  }
  return v;
}

TEST_F(EngineCoreTest, OutputIsTheSameAloneOrInABatchOf16) {
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE(temperature);
    std::map<std::string, std::vector<int32_t>> alone;
    for (const GenerateRequest& r : SixteenRequests(temperature)) {
      EngineOptions o = Opts();
      o.enable_prefix_caching = false;
      auto core = MakeCore(o);
      ASSERT_TRUE(core->AddRequest(r).ok());
      alone[r.id] = RunAll(*core)[r.id].tokens;
      ASSERT_EQ(alone[r.id].size(), 10u);
    }
    auto core = MakeCore(Opts(256, 64));  // also chunks the longer prompts
    for (const GenerateRequest& r : SixteenRequests(temperature)) ASSERT_TRUE(core->AddRequest(r).ok());
    auto batched = RunAll(*core);
    for (const auto& [id, toks] : alone) EXPECT_EQ(batched[id].tokens, toks) << id;
    EXPECT_GT(core->Stats().steps, 10u);
    ExpectNoLeaks(*core);
  }
}

TEST_F(EngineCoreTest, ChunkedPrefillMatchesUnchunked) {
  auto whole = MakeCore(Opts(256, 2048));
  auto chunked = MakeCore(Opts(256, 5));  // 5-token budget: a 61-token prompt takes 13 steps
  ASSERT_TRUE(whole->AddRequest(Req("a", 61, 8)).ok());
  ASSERT_TRUE(chunked->AddRequest(Req("a", 61, 8)).ok());
  auto w = RunAll(*whole), c = RunAll(*chunked);
  EXPECT_EQ(w["a"].tokens, c["a"].tokens);
  EXPECT_GE(chunked->Stats().steps, 13u + 7u);
}

TEST_F(EngineCoreTest, PreemptionByRecomputeGivesTheSameTokens) {
  std::map<std::string, std::vector<int32_t>> want;
  {
    auto core = MakeCore(Opts());
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(core->AddRequest(Req("p" + std::to_string(i), 20, 24, i)).ok());
    for (auto& [id, r] : RunAll(*core)) want[id] = r.tokens;
  }
  // 6 requests x 44 tokens need 66 blocks of 4; 24 usable blocks force preemptions.
  auto core = MakeCore(Opts(25));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(core->AddRequest(Req("p" + std::to_string(i), 20, 24, i)).ok());
  auto got = RunAll(*core);
  for (const auto& [id, toks] : want) {
    EXPECT_EQ(got[id].tokens, toks) << id;
    EXPECT_EQ(got[id].last.finish_reason, FinishReason::kLength);
  }
  EXPECT_GT(core->Stats().preemptions, 0u);
  ExpectNoLeaks(*core);
}

TEST_F(EngineCoreTest, PrefixCacheHitIsReportedAndChangesNothing) {
  auto core = MakeCore(Opts());
  ASSERT_TRUE(core->AddRequest(Req("cold", 42, 6)).ok());
  auto cold = RunAll(*core);
  EXPECT_EQ(cold["cold"].last.cached_tokens, 0);
  ASSERT_TRUE(core->AddRequest(Req("warm", 42, 6)).ok());
  auto warm = RunAll(*core);
  // (42 - 1) / 4 = 10 full blocks are reused; the last token is always computed.
  EXPECT_EQ(warm["warm"].last.cached_tokens, 40);
  EXPECT_EQ(warm["warm"].last.prompt_tokens, 42);
  EXPECT_EQ(warm["warm"].tokens, cold["cold"].tokens);
  const EngineStats s = core->Stats();
  EXPECT_EQ(s.cached_prompt_tokens, 40u);
  EXPECT_EQ(s.computed_prompt_tokens, 42u + 2u);
  // A different salt (tenant) shares nothing.
  GenerateRequest salted = Req("salted", 42, 6);
  salted.cache_salt = "tenant-b";
  ASSERT_TRUE(core->AddRequest(salted).ok());
  EXPECT_EQ(RunAll(*core)["salted"].last.cached_tokens, 0);
  ExpectNoLeaks(*core);
}

// Copies blocks from a prefill core's cache into a decode core's cache, like a KV transfer.
class CopyImporter : public KvImporter {
 public:
  EngineCore* source = nullptr;
  EngineCore* target = nullptr;
  std::vector<kv::BlockId> source_blocks;
  bool fail = false;
  std::vector<std::string> started;
  void StartImport(const std::string& id, std::span<const ImportBlock> blocks) override {
    started.push_back(id);
    const int64_t bytes = source->cache_layout().block_bytes();
    std::vector<char> buf(bytes * blocks.size());
    std::vector<int32_t> src_ids, dst_ids;
    for (const ImportBlock& b : blocks) {
      src_ids.push_back(static_cast<int32_t>(source_blocks[b.index]));
      dst_ids.push_back(static_cast<int32_t>(b.block));
    }
    kernels::ref::GatherBlocks(buf.data(), source->kv_cache_data(), src_ids.data(),
                               static_cast<int64_t>(src_ids.size()), bytes, bytes, nullptr);
    kernels::ref::ScatterBlocks(target->kv_cache_data(), buf.data(), dst_ids.data(),
                                static_cast<int64_t>(dst_ids.size()), bytes, bytes, nullptr);
    pending = id;
  }
  std::string pending;
};

TEST_F(EngineCoreTest, PrefillOnlyThenImportedDecodeMatchesAggregatedServing) {
  auto agg = MakeCore(Opts());
  ASSERT_TRUE(agg->AddRequest(Req("x", 37, 12, 9, 0.7f)).ok());
  const auto want = RunAll(*agg)["x"].tokens;

  auto prefill = MakeCore(Opts());
  GenerateRequest p = Req("x", 37, 12, 9, 0.7f);
  p.mode = RequestMode::kPrefillOnly;
  ASSERT_TRUE(prefill->AddRequest(p).ok());
  auto pres = RunAll(*prefill)["x"];
  ASSERT_EQ(pres.last.finish_reason, FinishReason::kPrefilled);
  ASSERT_TRUE(pres.last.pinned.has_value());
  const PinnedKv pin = *pres.last.pinned;
  EXPECT_EQ(pin.num_tokens, 37);
  EXPECT_EQ(pin.blocks.size(), 10u);  // ceil(37 / 4)
  EXPECT_EQ(pin.hashes.size(), 9u);
  ASSERT_EQ(pres.tokens.size(), 1u);
  EXPECT_EQ(pres.tokens[0], want[0]);
  EXPECT_EQ(prefill->block_pool().num_blocks_used(), 10u);  // pinned under the lease

  for (bool fail : {false, true}) {
    SCOPED_TRACE(fail);
    CopyImporter imp;
    auto decode = MakeCore(Opts(), &imp);
    imp.source = prefill.get();
    imp.target = decode.get();
    imp.source_blocks = pin.blocks;
    GenerateRequest d = Req("x", 37, 12, 9, 0.7f);
    d.mode = RequestMode::kImportedKv;
    d.first_token = pres.tokens[0];
    ASSERT_TRUE(decode->AddRequest(d).ok());
    decode->Step();  // admits and starts the import
    ASSERT_EQ(imp.started.size(), 1u);
    EXPECT_TRUE(decode->HasPendingImports());
    decode->CompleteImport("x", fail ? UnavailableError("peer died") : Status::Ok());
    auto got = RunAll(*decode)["x"];
    EXPECT_EQ(got.tokens, want);  // first token + decoded tokens
    EXPECT_EQ(decode->Stats().imports_failed, fail ? 1u : 0u);
    EXPECT_EQ(decode->Stats().computed_prompt_tokens, fail ? 37u : 0u);
    ExpectNoLeaks(*decode);
  }
  EXPECT_TRUE(prefill->ReleasePinned(pin.pin_id));
  EXPECT_FALSE(prefill->ReleasePinned(pin.pin_id));
  ExpectNoLeaks(*prefill);
}

// A prefix copy between two agents' pools (PinCachedPrefix on the source, ImportPrefix on the
// target): the target then serves the prompt from the copied blocks with the same tokens.
TEST_F(EngineCoreTest, PrefixCopiedFromAnotherPoolIsServedFromCache) {
  auto source = MakeCore(Opts());
  ASSERT_TRUE(source->AddRequest(Req("cold", 42, 6)).ok());
  const auto cold = RunAll(*source)["cold"];
  std::vector<uint32_t> ids;
  for (int32_t t : Req("cold", 42, 6).prompt) ids.push_back(static_cast<uint32_t>(t));
  kv::BlockHashOptions ho;
  ho.block_size = 4;
  auto hashes = kv::ComputeSequenceHashes(ids, ho);
  ASSERT_TRUE(hashes.ok());
  ASSERT_EQ(hashes->size(), 10u);

  // Unknown chains are refused; a chain with an uncached tail pins only its cached head.
  EXPECT_EQ(source->PinCachedPrefix({}).status().code(), StatusCode::kInvalidArgument);
  const std::vector<kv::BlockHash> unknown = {0x1234};
  EXPECT_EQ(source->PinCachedPrefix(unknown).status().code(), StatusCode::kNotFound);
  std::vector<kv::BlockHash> longer = *hashes;
  longer.push_back(0x5678);
  auto pin = source->PinCachedPrefix(longer);
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(pin->blocks.size(), 10u);
  EXPECT_EQ(pin->num_tokens, 40);
  EXPECT_EQ(pin->hashes, *hashes);
  EXPECT_EQ(source->block_pool().num_blocks_used(), 10u);

  for (bool fail : {false, true}) {
    SCOPED_TRACE(fail);
    CopyImporter imp;
    auto target = MakeCore(Opts(), &imp);
    imp.source = source.get();
    imp.target = target.get();
    imp.source_blocks = pin->blocks;
    // The target already holds the first 5 blocks (a shorter prompt with the same head).
    ASSERT_TRUE(target->AddRequest(Req("head", 22, 2)).ok());
    RunAll(*target);
    int calls = 0;
    Status result;
    int32_t imported = -1, already = -1;
    target->ImportPrefix("copy", *hashes, [&](const Status& st, int32_t n, int32_t c) {
      ++calls;
      result = st;
      imported = n;
      already = c;
    });
    ASSERT_EQ(imp.started.size(), 1u);
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(target->block_pool().num_blocks_used(), 10u);  // pinned while the copy runs
    // The same id cannot start a second import meanwhile.
    Status dup;
    target->ImportPrefix("copy", *hashes, [&](const Status& st, int32_t, int32_t) { dup = st; });
    EXPECT_EQ(dup.code(), StatusCode::kInvalidArgument);
    target->CompleteImport("copy", fail ? UnavailableError("peer died") : Status::Ok());
    ASSERT_EQ(calls, 1);
    EXPECT_EQ(result.ok(), !fail);
    EXPECT_EQ(imported, fail ? 0 : 5);
    EXPECT_EQ(already, 5);
    ExpectNoLeaks(*target);
    ASSERT_TRUE(target->AddRequest(Req("warm", 42, 6)).ok());
    const auto warm = RunAll(*target)["warm"];
    EXPECT_EQ(warm.last.cached_tokens, fail ? 20 : 40);
    EXPECT_EQ(warm.tokens, cold.tokens);
    ExpectNoLeaks(*target);
  }
  EXPECT_TRUE(source->ReleasePinned(pin->pin_id));
  ExpectNoLeaks(*source);

  // Without room for the blocks nothing is pinned or started.
  CopyImporter imp;
  auto tiny = MakeCore(Opts(/*blocks=*/12), &imp);
  Status st;
  tiny->ImportPrefix("big", std::vector<kv::BlockHash>(13, 7), [&](const Status& s, int32_t, int32_t) { st = s; });
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(imp.started.empty());
  ExpectNoLeaks(*tiny);
}

TEST_F(EngineCoreTest, ImportFailureCanFailTheRequest) {
  CopyImporter imp;
  auto decode = MakeCore(Opts(), &imp);
  GenerateRequest d = Req("y", 9, 4);
  d.mode = RequestMode::kImportedKv;
  d.first_token = 5;
  d.recompute_on_import_failure = false;
  imp.source = decode.get();
  imp.target = decode.get();
  imp.source_blocks = std::vector<kv::BlockId>(8, 1);
  ASSERT_TRUE(decode->AddRequest(d).ok());
  decode->Step();
  decode->CompleteImport("y", DeadlineExceededError("transfer timed out"));
  auto r = RunAll(*decode)["y"];
  EXPECT_EQ(r.last.finish_reason, FinishReason::kError);
  EXPECT_EQ(r.last.error.code(), StatusCode::kUnavailable);
  ExpectNoLeaks(*decode);
}

TEST_F(EngineCoreTest, AbortDuringImportKeepsBlocksUntilTheImporterIsDone) {
  CopyImporter imp;
  auto decode = MakeCore(Opts(), &imp);
  imp.source = decode.get();
  imp.target = decode.get();
  imp.source_blocks = std::vector<kv::BlockId>(8, 1);
  GenerateRequest d = Req("z", 21, 4);
  d.mode = RequestMode::kImportedKv;
  d.first_token = 5;
  ASSERT_TRUE(decode->AddRequest(d).ok());
  decode->Step();
  ASSERT_EQ(imp.started.size(), 1u);
  EXPECT_EQ(decode->block_pool().num_blocks_used(), 6u);  // ceil(21 / 4)
  EXPECT_TRUE(decode->Abort("z"));
  auto outs = decode->Step();
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kCancelled);
  // The transfer may still be writing: the blocks are not handed to anyone else yet.
  EXPECT_EQ(decode->block_pool().num_blocks_used(), 6u);
  decode->CompleteImport("z", Status::Ok());
  ExpectNoLeaks(*decode);
}

TEST_F(EngineCoreTest, AbortFreesBlocksWithinOneStep) {
  auto core = MakeCore(Opts());
  ASSERT_TRUE(core->AddRequest(Req("long", 30, 200)).ok());
  ASSERT_TRUE(core->AddRequest(Req("queued", 10, 5)).ok());
  core->Step();
  core->Step();
  EXPECT_GT(core->block_pool().num_blocks_used(), 0u);
  EXPECT_TRUE(core->Abort("long"));
  EXPECT_TRUE(core->Abort("queued"));
  EXPECT_FALSE(core->Abort("nope"));
  EXPECT_EQ(core->block_pool().num_blocks_used(), 0u);
  auto outs = core->Step();
  ASSERT_EQ(outs.size(), 2u);
  for (const RequestOutput& o : outs) {
    EXPECT_TRUE(o.finished);
    EXPECT_EQ(o.finish_reason, FinishReason::kCancelled);
  }
  EXPECT_FALSE(core->HasWork());
  ExpectNoLeaks(*core);
}

TEST_F(EngineCoreTest, StopsOnStopTokenEosAndMaxTokens) {
  auto core = MakeCore(Opts());
  ASSERT_TRUE(core->AddRequest(Req("ref", 12, 8)).ok());
  const auto ref = RunAll(*core)["ref"].tokens;
  ASSERT_EQ(ref.size(), 8u);

  GenerateRequest s = Req("stop", 12, 8);
  s.stop_token_ids = {ref[3]};
  ASSERT_TRUE(core->AddRequest(s).ok());
  auto r = RunAll(*core)["stop"];
  const size_t first = std::find(ref.begin(), ref.end(), ref[3]) - ref.begin();
  EXPECT_EQ(r.tokens.size(), first + 1);
  EXPECT_EQ(r.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.last.completion_tokens, static_cast<int>(first + 1));

  GenerateRequest m = Req("max", 12, 3);
  ASSERT_TRUE(core->AddRequest(m).ok());
  auto mr = RunAll(*core)["max"];
  EXPECT_EQ(mr.tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 3));
  EXPECT_EQ(mr.last.finish_reason, FinishReason::kLength);
  ExpectNoLeaks(*core);
}

TEST_F(EngineCoreTest, EosFromConfigStopsUnlessIgnored) {
  auto core = MakeCore(Opts());
  ASSERT_TRUE(core->AddRequest(Req("ref", 12, 10)).ok());
  const auto ref = RunAll(*core)["ref"].tokens;
  // The same weights with config.json's eos_token_id = the 4th generated token.
  TempDir dir;
  TestModelSpec s;
  s.vocab = 211;
  s.max_pos = 256;
  s.eos = ref[3];
  WriteTestModel(s, dir.path());
  auto w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok());
  auto eos_core = EngineCore::Create(Opts(), std::shared_ptr<const ModelWeights>(std::move(*w)),
                                     RefKernelOps(), nullptr);
  ASSERT_TRUE(eos_core.ok());
  GenerateRequest stop = Req("eos", 12, 10);
  stop.ignore_eos = false;
  ASSERT_TRUE((*eos_core)->AddRequest(stop).ok());
  GenerateRequest ignore = Req("ignore", 12, 10);
  ASSERT_TRUE((*eos_core)->AddRequest(ignore).ok());
  auto got = RunAll(**eos_core);
  const size_t first = std::find(ref.begin(), ref.end(), ref[3]) - ref.begin();
  EXPECT_EQ(got["eos"].tokens, std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
  EXPECT_EQ(got["eos"].last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(got["ignore"].tokens, ref);
  EXPECT_EQ(got["ignore"].last.finish_reason, FinishReason::kLength);
}

TEST_F(EngineCoreTest, GenerationStopsAtTheContextLength) {
  EngineOptions o = Opts();
  o.max_model_len = 20;
  auto core = MakeCore(o);
  ASSERT_TRUE(core->AddRequest(Req("ctx", 15, 100)).ok());
  auto r = RunAll(*core)["ctx"];
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_EQ(r.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(core->AddRequest(Req("too-long", 20, 1)).code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineCoreTest, RejectsBadRequestsWithoutSideEffects) {
  auto core = MakeCore(Opts(8));
  EXPECT_EQ(core->AddRequest(Req("", 4, 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(core->AddRequest(Req("empty", 0, 1)).code(), StatusCode::kInvalidArgument);
  GenerateRequest bad_tok = Req("tok", 4, 1);
  bad_tok.prompt[1] = 211;
  EXPECT_EQ(core->AddRequest(bad_tok).code(), StatusCode::kInvalidArgument);
  bad_tok.prompt[1] = -1;
  EXPECT_EQ(core->AddRequest(bad_tok).code(), StatusCode::kInvalidArgument);
  GenerateRequest nan = Req("nan", 4, 1);
  nan.sampling.temperature = std::nanf("");
  EXPECT_EQ(core->AddRequest(nan).code(), StatusCode::kInvalidArgument);
  nan.sampling.temperature = -1;
  EXPECT_EQ(core->AddRequest(nan).code(), StatusCode::kInvalidArgument);
  GenerateRequest topp = Req("topp", 4, 1);
  topp.sampling.top_p = 0;
  EXPECT_EQ(core->AddRequest(topp).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(core->AddRequest(Req("zero", 4, 0)).code(), StatusCode::kInvalidArgument);
  GenerateRequest stop = Req("stop", 4, 1);
  stop.stop = {"x"};  // no tokenizer in this core
  EXPECT_EQ(core->AddRequest(stop).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(core->AddRequest(Req("huge", 40, 1)).code(), StatusCode::kInvalidArgument);  // > 7 blocks
  GenerateRequest imp = Req("imp", 4, 1);
  imp.mode = RequestMode::kImportedKv;
  imp.first_token = 3;
  EXPECT_EQ(core->AddRequest(imp).code(), StatusCode::kFailedPrecondition);  // no importer
  ASSERT_TRUE(core->AddRequest(Req("ok", 4, 1)).ok());
  EXPECT_EQ(core->AddRequest(Req("ok", 4, 1)).code(), StatusCode::kInvalidArgument);  // duplicate
  EXPECT_EQ(core->Stats().num_waiting, 1);
  auto r = RunAll(*core);
  EXPECT_EQ(r.size(), 1u);
  ExpectNoLeaks(*core);
}

TEST_F(EngineCoreTest, CommittedBlocksAreAnnouncedAsEvents) {
  struct Sink : kv::KvEventSink {
    std::vector<kv::KvEvent> events;
    void Emit(kv::KvEvent e) override { events.push_back(std::move(e)); }
  } sink;
  auto core = MakeCore(Opts(), nullptr, &sink);
  ASSERT_TRUE(core->AddRequest(Req("e", 18, 3)).ok());
  RunAll(*core);
  // 18 prompt + 2 computed generated tokens = 20 tokens -> 5 full blocks committed.
  size_t stored = 0;
  for (const kv::KvEvent& e : sink.events) stored += std::holds_alternative<kv::BlockStored>(e);
  EXPECT_EQ(stored, 5u);
}

}  // namespace
}  // namespace kvmesh::engine
