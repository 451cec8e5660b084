#include "kernels/cpu_parallel.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace kvmesh::kernels::ref {
namespace {

int ThreadsFromEnv() {
  for (const char* name : {"KVMESH_CPU_THREADS", "OPENBLAS_NUM_THREADS"}) {
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n > 0) return std::min(n, 256);
    }
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { Work(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  int threads() const { return threads_; }

  void Run(int parts, const std::function<void(int)>& part) {
    std::lock_guard<std::mutex> serial(run_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      part_ = &part;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    cv_.notify_all();
    part(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    part_ = nullptr;
  }

 private:
  void Work(int index) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* part = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        if (index >= parts_) continue;
        part = part_;
      }
      (*part)(index);
      {
        std::lock_guard<std::mutex> lock(mu_);
        --pending_;
      }
      done_cv_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* part_ = nullptr;
  int parts_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& GetPool() {
  static Pool* pool = new Pool(ThreadsFromEnv());  // never destroyed: workers outlive static dtors
  return *pool;
}

}  // namespace

int NumCpuThreads() { return GetPool().threads(); }

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int parts = static_cast<int>(std::min<int64_t>(chunks, GetPool().threads()));
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  const int64_t per = (chunks + parts - 1) / parts * grain;
  GetPool().Run(parts, [&](int p) {
    const int64_t b = p * per, e = std::min(n, b + per);
    if (b < e) fn(b, e);
  });
}

}  // namespace kvmesh::kernels::ref
