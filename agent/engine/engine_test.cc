// The threaded Engine: submissions and cancels from other threads, outputs through callbacks,
// Stop() cancelling what is live. Completion is awaited with futures, never with sleeps.
#include "agent/engine/engine.h"

#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <thread>

#include "agent/engine/engine_test_util.h"

namespace kvmesh::engine {
namespace {

using test_util::TempDir;
using test_util::TestModelSpec;
using test_util::WriteTestModel;

struct Collector {
  std::mutex mu;
  std::vector<int32_t> tokens;
  std::promise<RequestOutput> done;
  OutputCallback Callback() {
    return [this](const RequestOutput& o) {
      std::lock_guard<std::mutex> lock(mu);
      tokens.insert(tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
      if (o.finished) done.set_value(o);
    };
  }
};

std::unique_ptr<Engine> MakeEngine(const std::string& dir) {
  auto w = ModelWeights::Load(dir);
  EXPECT_TRUE(w.ok());
  EngineOptions o;
  o.block_size = 4;
  o.num_kv_blocks = 1 << 14;
  auto core = EngineCore::Create(o, std::shared_ptr<const ModelWeights>(std::move(*w)),
                                 RefKernelOps(), nullptr);
  EXPECT_TRUE(core.ok());
  return std::make_unique<Engine>(std::move(*core));
}

GenerateRequest Req(const std::string& id, int len, int max_tokens) {
  GenerateRequest r;
  r.id = id;
  for (int i = 0; i < len; ++i) r.prompt.push_back(5 + (i * 13) % 80);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  return r;
}

TEST(EngineTest, ServesConcurrentSubmittersAndCancels) {
  TempDir dir;
  TestModelSpec spec;
  spec.max_pos = 1 << 16;  // the "long" request below cannot finish before its cancel arrives
  WriteTestModel(spec, dir.path());
  auto engine = MakeEngine(dir.path());
  std::vector<std::unique_ptr<Collector>> cs;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) cs.push_back(std::make_unique<Collector>());
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      ASSERT_TRUE(engine->Submit(Req("t" + std::to_string(i), 10 + i, 6), cs[i]->Callback()).ok());
    });
  }
  for (auto& t : threads) t.join();
  for (auto& c : cs) {
    RequestOutput last = c->done.get_future().get();
    EXPECT_EQ(last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(c->tokens.size(), 6u);
  }

  // A request that would run for a long time is cancelled from another thread.
  Collector c;
  ASSERT_TRUE(engine->Submit(Req("long", 8, 100000 - 1), c.Callback()).ok());
  std::thread([&] { engine->Cancel("long"); }).join();
  RequestOutput last = c.done.get_future().get();
  EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);

  // A live duplicate id is found on the engine thread: the error reaches the callback.
  Collector first, dup;
  ASSERT_TRUE(engine->Submit(Req("same", 8, 100000 - 1), first.Callback()).ok());
  ASSERT_TRUE(engine->Submit(Req("same", 4, 1), dup.Callback()).ok());
  RequestOutput err = dup.done.get_future().get();
  EXPECT_EQ(err.finish_reason, FinishReason::kError);
  EXPECT_EQ(err.error.code(), StatusCode::kInvalidArgument);
  engine->Cancel("same");
  EXPECT_EQ(first.done.get_future().get().finish_reason, FinishReason::kCancelled);
  // Every other check runs on the caller's thread: the error is returned, nothing is queued.
  Collector unused;
  GenerateRequest bad = Req("bad", 4, 1);
  bad.sampling.top_p = 2;
  EXPECT_EQ(engine->Submit(bad, unused.Callback()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Req("empty", 0, 1), unused.Callback()).code(), StatusCode::kInvalidArgument);
  GenerateRequest imp = Req("imp", 4, 1);
  imp.mode = RequestMode::kImportedKv;
  imp.first_token = 3;
  EXPECT_EQ(engine->Submit(imp, unused.Callback()).code(), StatusCode::kFailedPrecondition);

  // Stats refresh after steps; every block is back in the pool.
  engine->Stop();
  const EngineStats s = engine->Stats();
  EXPECT_EQ(s.kv_blocks_used, 0u);
  EXPECT_GE(s.requests_finished, 6u);
}

TEST(EngineTest, StopCancelsLiveRequests) {
  TempDir dir;
  WriteTestModel(TestModelSpec{}, dir.path());
  auto engine = MakeEngine(dir.path());
  Collector c;
  ASSERT_TRUE(engine->Submit(Req("live", 8, 100000 - 1), c.Callback()).ok());
  engine->Stop();
  EXPECT_EQ(c.done.get_future().get().finish_reason, FinishReason::kCancelled);
  Collector after;
  EXPECT_EQ(engine->Submit(Req("late", 8, 4), after.Callback()).code(), StatusCode::kUnavailable);
}

TEST(EngineTest, RunOnEngineThreadRunsOnceUntilStop) {
  TempDir dir;
  WriteTestModel(TestModelSpec{}, dir.path());
  auto engine = MakeEngine(dir.path());
  std::promise<std::pair<std::thread::id, uint32_t>> seen;
  ASSERT_TRUE(engine->RunOnEngineThread([&](EngineCore& core) {
    seen.set_value({std::this_thread::get_id(), core.block_pool().num_blocks_total()});
  }));
  auto [tid, blocks] = seen.get_future().get();
  EXPECT_NE(tid, std::this_thread::get_id());
  EXPECT_EQ(blocks, engine->Stats().kv_blocks_total);
  engine->Stop();
  bool ran = false;
  EXPECT_FALSE(engine->RunOnEngineThread([&](EngineCore&) { ran = true; }));
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace kvmesh::engine
