#include "agent/engine/engine.h"

#include <chrono>
#include <thread>
#include <utility>

#include "common/log.h"

namespace kvmesh::engine {

Engine::Engine(std::unique_ptr<EngineCore> core)
    : core_(std::move(core)),
      cache_layout_(core_->cache_layout()),
      kv_cache_data_(core_->kv_cache_data()),
      model_config_(core_->model().config()),
      max_model_len_(core_->max_model_len()),
      options_(core_->options()) {
  stats_ = core_->Stats();
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() { Stop(); }

Status Engine::Submit(GenerateRequest request, OutputCallback callback) {
  // Checked on the caller's thread (immutable state only); the duplicate-id check is the
  // engine thread's, in AddRequest.
  KVMESH_RETURN_IF_ERROR(core_->ValidateRequest(request));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return UnavailableError("engine is stopping");
  }
  Post(SubmitCmd{std::move(request), std::move(callback)});
  return Status::Ok();
}

void Engine::Cancel(const std::string& id) { Post(CancelCmd{id}); }
void Engine::ReleasePinned(uint64_t pin_id) { Post(ReleaseCmd{pin_id}); }
void Engine::CompleteImport(const std::string& id, Status result) {
  Post(ImportDoneCmd{id, std::move(result)});
}

bool Engine::RunOnEngineThread(std::function<void(EngineCore&)> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    queue_.push_back(TaskCmd{std::move(task)});
  }
  cv_.notify_one();
  return true;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::Post(Command cmd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(cmd));
  }
  cv_.notify_one();
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Engine::Deliver(const RequestOutput& out) {
  auto it = callbacks_.find(out.id);
  if (it == callbacks_.end()) return;
  it->second(out);
  if (out.finished) callbacks_.erase(it);
}

void Engine::Apply(Command& cmd) {
  if (auto* s = std::get_if<SubmitCmd>(&cmd)) {
    const std::string id = s->request.id;
    Status st = core_->AddRequest(std::move(s->request));
    if (!st.ok()) {
      RequestOutput out;
      out.id = id;
      out.finished = true;
      out.finish_reason = FinishReason::kError;
      out.error = st;
      s->callback(out);
      return;
    }
    callbacks_[id] = std::move(s->callback);
  } else if (auto* c = std::get_if<CancelCmd>(&cmd)) {
    core_->Abort(c->id);
  } else if (auto* r = std::get_if<ReleaseCmd>(&cmd)) {
    core_->ReleasePinned(r->pin_id);
  } else if (auto* d = std::get_if<ImportDoneCmd>(&cmd)) {
    core_->CompleteImport(d->id, d->result);
  } else if (auto* t = std::get_if<TaskCmd>(&cmd)) {
    t->task(*core_);
  }
}

void Engine::Loop() {
  std::deque<Command> local;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (queue_.empty() && !stopping_ && (!core_->HasWork() || core_->last_step_idle())) {
        // Idle, or only waiting on imports / pinned blocks: sleep until a command arrives.
        cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
      local.swap(queue_);
      if (stopping_) break;
    }
    for (Command& cmd : local) Apply(cmd);
    local.clear();
    std::vector<RequestOutput> outs = core_->Step();
    for (const RequestOutput& out : outs) Deliver(out);
    if (!outs.empty() && options_.debug_step_delay.count() > 0) std::this_thread::sleep_for(options_.debug_step_delay);
    EngineStats s = core_->Stats();
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = s;
  }
  // Apply the last submissions so that their callers hear back, then cancel everything live.
  for (Command& cmd : local) Apply(cmd);
  std::vector<std::string> live;
  for (const auto& [id, cb] : callbacks_) live.push_back(id);
  for (const std::string& id : live) core_->Abort(id);
  for (const RequestOutput& out : core_->Step()) Deliver(out);
  KVMESH_LOG_INFO("engine", "engine thread stopped", {"cancelled", static_cast<int64_t>(live.size())});
}

}  // namespace kvmesh::engine
