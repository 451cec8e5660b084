// WorkQueue: the controller's rate-limited queue of object keys ("namespace/name"), with
// client-go's workqueue semantics (KUBERNETES-API.md "Work queue"):
//   - a key waiting in the queue is held once (Add of a waiting key is a no-op);
//   - a key handed out by Get() is "processing" until Done(); adding it meanwhile marks it dirty
//     and it is queued again at Done(), so one key is never processed by two workers at once;
//   - AddRateLimited(key) waits max(per-item exponential backoff, overall token bucket):
//     base_delay * 2^(requeues) capped at max_delay, and a bucket of `qps` with `burst`;
//     Forget(key) resets the key's backoff (call it after a successful reconcile);
//   - AddAfter(key, d) queues the key once d has passed (the earliest pending time wins);
//   - after ShutDown(), Add is ignored and Get() returns the keys still queued, then shutdown=true.
// Time comes from a Clock so tests can drive it (FakeClock); delayed keys are promoted when any
// call (Get, Len) observes that their time has come. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace kvmesh::kube {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point Now() const = 0;
  static Clock* Real();  // steady_clock
};

// A clock that only moves when told to. Thread-safe.
class FakeClock : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override;
  void Advance(std::chrono::nanoseconds d);

 private:
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1)};
};

struct WorkQueueOptions {
  std::chrono::nanoseconds base_delay = std::chrono::milliseconds(5);
  std::chrono::nanoseconds max_delay = std::chrono::seconds(1000);
  double qps = 10;
  int burst = 100;
  Clock* clock = nullptr;  // nullptr = Clock::Real(); not owned
};

class WorkQueue {
 public:
  explicit WorkQueue(WorkQueueOptions options = {});
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void Add(const std::string& key);
  void AddAfter(const std::string& key, std::chrono::nanoseconds delay);
  void AddRateLimited(const std::string& key);
  // The delay AddRateLimited would apply now (consumes a token and a backoff step).
  std::chrono::nanoseconds When(const std::string& key);
  void Forget(const std::string& key);
  int NumRequeues(const std::string& key) const;

  struct Item {
    std::string key;
    bool shutdown = false;  // true: the queue is shut down and empty; `key` is empty
  };
  // Blocks until a key is ready or the queue is shut down and drained.
  Item Get();
  void Done(const std::string& key);
  void ShutDown();
  bool ShuttingDown() const;

  size_t Len();                 // keys ready to be handed out
  size_t NumWaiting() const;    // keys scheduled by AddAfter / AddRateLimited, not yet ready

 private:
  void AddLocked(const std::string& key);
  void PromoteLocked();

  const WorkQueueOptions options_;
  Clock* const clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::unordered_set<std::string> dirty_;       // queued or to be re-queued at Done
  std::unordered_set<std::string> processing_;  // handed out by Get, not Done yet
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> waiting_;
  std::set<std::pair<std::chrono::steady_clock::time_point, std::string>> waiting_order_;
  bool shutting_down_ = false;
  // Rate limiters.
  std::unordered_map<std::string, int> failures_;
  double tokens_;
  std::chrono::steady_clock::time_point last_refill_;
};

}  // namespace kvmesh::kube
