// WaitFor: the polling wait of tests that wait on another thread or process (an informer's
// cache, a leader lease, a reconcile).
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace kvmesh::test_util {

// Calls `pred` every `interval` until it returns true or `timeout` passes; then returns its last
// answer (so a condition that becomes true at the deadline still counts).
inline bool WaitFor(const std::function<bool()>& pred,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(5000),
                    std::chrono::milliseconds interval = std::chrono::milliseconds(5)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(interval);
  }
  return pred();
}

}  // namespace kvmesh::test_util
