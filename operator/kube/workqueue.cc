#include "operator/kube/workqueue.h"

#include <algorithm>
#include <cmath>

namespace kvmesh::kube {

namespace {
class RealClock : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override { return std::chrono::steady_clock::now(); }
};
}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();  // never destroyed: usable during static destruction
  return clock;
}

std::chrono::steady_clock::time_point FakeClock::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

void FakeClock::Advance(std::chrono::nanoseconds d) {
  std::lock_guard<std::mutex> lock(mu_);
  now_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(d);
}

WorkQueue::WorkQueue(WorkQueueOptions options)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      tokens_(options.burst),
      last_refill_(clock_->Now()) {}

void WorkQueue::Add(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  AddLocked(key);
}

void WorkQueue::AddLocked(const std::string& key) {
  if (shutting_down_ || dirty_.count(key) > 0) return;
  dirty_.insert(key);
  if (processing_.count(key) > 0) return;  // queued again at Done()
  queue_.push_back(key);
  cv_.notify_one();
}

void WorkQueue::AddAfter(const std::string& key, std::chrono::nanoseconds delay) {
  if (delay <= std::chrono::nanoseconds::zero()) {
    Add(key);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) return;
  auto ready = clock_->Now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay);
  auto it = waiting_.find(key);
  if (it != waiting_.end()) {
    if (it->second <= ready) return;  // an earlier time is already pending
    waiting_order_.erase({it->second, key});
    it->second = ready;
  } else {
    waiting_.emplace(key, ready);
  }
  waiting_order_.insert({ready, key});
  cv_.notify_all();  // a Get may need to wake earlier
}

std::chrono::nanoseconds WorkQueue::When(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  // Per-item exponential backoff.
  int exp = failures_[key]++;
  double backoff = static_cast<double>(options_.base_delay.count()) * std::pow(2.0, exp);
  double cap = static_cast<double>(options_.max_delay.count());
  auto item_delay = std::chrono::nanoseconds(static_cast<int64_t>(std::min(backoff, cap)));
  // Overall token bucket (a reservation: tokens may go negative, the wait covers the debt).
  auto now = clock_->Now();
  double elapsed = std::chrono::duration<double>(now - last_refill_).count();
  last_refill_ = now;
  tokens_ = std::min<double>(options_.burst, tokens_ + elapsed * options_.qps);
  tokens_ -= 1;
  std::chrono::nanoseconds bucket_delay{0};
  if (tokens_ < 0 && options_.qps > 0) {
    bucket_delay = std::chrono::nanoseconds(static_cast<int64_t>(-tokens_ / options_.qps * 1e9));
  }
  return std::max(item_delay, bucket_delay);
}

void WorkQueue::AddRateLimited(const std::string& key) { AddAfter(key, When(key)); }

void WorkQueue::Forget(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.erase(key);
}

int WorkQueue::NumRequeues(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

void WorkQueue::PromoteLocked() {
  auto now = clock_->Now();
  while (!waiting_order_.empty() && waiting_order_.begin()->first <= now) {
    std::string key = waiting_order_.begin()->second;
    waiting_order_.erase(waiting_order_.begin());
    waiting_.erase(key);
    AddLocked(key);
  }
}

WorkQueue::Item WorkQueue::Get() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    PromoteLocked();
    if (!queue_.empty()) break;
    if (shutting_down_) return Item{"", true};
    if (waiting_order_.empty()) {
      cv_.wait(lock);
    } else if (clock_ == Clock::Real()) {
      cv_.wait_until(lock, waiting_order_.begin()->first);
    } else {
      // A fake clock moves without notifying: look again shortly.
      cv_.wait_for(lock, std::chrono::milliseconds(5));
    }
  }
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  return Item{std::move(key), false};
}

void WorkQueue::Done(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  processing_.erase(key);
  if (dirty_.count(key) > 0) {
    queue_.push_back(key);
    cv_.notify_one();
  }
}

void WorkQueue::ShutDown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutting_down_ = true;
  waiting_.clear();
  waiting_order_.clear();
  cv_.notify_all();
}

bool WorkQueue::ShuttingDown() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shutting_down_;
}

size_t WorkQueue::Len() {
  std::lock_guard<std::mutex> lock(mu_);
  PromoteLocked();
  return queue_.size();
}

size_t WorkQueue::NumWaiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size();
}

}  // namespace kvmesh::kube
