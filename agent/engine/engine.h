// Engine: EngineCore on its own thread. Any thread may Submit / Cancel / ReleasePinned /
// CompleteImport; commands go through a queue to the engine thread (llama.cpp's server_queue), so
// the block pool and the batch are only ever touched by that thread. Outputs are delivered by the
// per-request callback, called on the engine thread: it must be quick and must not call back into
// the Engine synchronously except for the thread-safe methods below (which only enqueue).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>

#include "agent/engine/engine_core.h"

namespace kvmesh::engine {

using OutputCallback = std::function<void(const RequestOutput&)>;

class Engine {
 public:
  // Takes ownership of the core and starts the engine thread.
  explicit Engine(std::unique_ptr<EngineCore> core);
  ~Engine();  // Stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates like EngineCore::AddRequest (on the caller's thread, against immutable limits) and
  // queues the request; `callback` receives every output, the last one with finished == true.
  // Unavailable after Stop().
  Status Submit(GenerateRequest request, OutputCallback callback);
  void Cancel(const std::string& id);
  void ReleasePinned(uint64_t pin_id);
  void CompleteImport(const std::string& id, Status result);
  // Runs `task` on the engine thread between two steps (e.g. to snapshot the block pool). Returns
  // false (and never runs it) once Stop() has begun; otherwise it runs exactly once.
  bool RunOnEngineThread(std::function<void(EngineCore&)> task);

  // Snapshot, refreshed by the engine thread after every step.
  EngineStats Stats() const;
  // Stops the thread; live requests finish with FinishReason::kCancelled (callbacks run).
  void Stop();

  // Immutable after construction: for KV transfer registration and limits.
  const kernels::KvCacheLayout& cache_layout() const { return cache_layout_; }
  float* kv_cache_data() const { return kv_cache_data_; }
  const ModelConfig& model_config() const { return model_config_; }
  int32_t max_model_len() const { return max_model_len_; }
  const EngineOptions& options() const { return options_; }

 private:
  struct SubmitCmd {
    GenerateRequest request;
    OutputCallback callback;
  };
  struct CancelCmd { std::string id; };
  struct ReleaseCmd { uint64_t pin_id; };
  struct ImportDoneCmd {
    std::string id;
    Status result;
  };
  struct TaskCmd { std::function<void(EngineCore&)> task; };
  using Command = std::variant<SubmitCmd, CancelCmd, ReleaseCmd, ImportDoneCmd, TaskCmd>;

  void Post(Command cmd);
  void Loop();
  void Apply(Command& cmd);
  void Deliver(const RequestOutput& out);

  std::unique_ptr<EngineCore> core_;  // engine thread only
  const kernels::KvCacheLayout cache_layout_;
  float* const kv_cache_data_;
  const ModelConfig model_config_;
  const int32_t max_model_len_;
  const EngineOptions options_;

  std::unordered_map<std::string, OutputCallback> callbacks_;  // engine thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> queue_;  // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  EngineStats stats_;          // guarded by mu_
  std::thread thread_;
};

}  // namespace kvmesh::engine
