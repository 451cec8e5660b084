// KvEventService: publishes one agent's KV events. Owns the KvEventRecorder (the engine's
// KvEventSink) and the ZMQ KvEventPublisher (PUB + replay ROUTER, vLLM's wire format), and one
// thread that every flush_interval flushes the recorder into sequenced batches, publishes them,
// and answers replay requests in between.
//
// Invariants: batches are published in seq order, each exactly once; Stop() flushes and publishes
// what the engine emitted before it was called, then joins the thread. next_seq() - 1 is the last
// seq flushed (events emitted but not yet flushed get seqs >= next_seq()).
//
// Threading: sink() may be called (Emit) from the engine thread at any time until Stop(); every
// other method from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/status.h"
#include "kv/kv_event.h"
#include "kv/kv_event_recorder.h"
#include "kv/kv_event_zmq.h"

namespace kvmesh::agent {

struct KvEventServiceOptions {
  std::string endpoint = "tcp://127.0.0.1:0";         // PUB bind address
  std::string replay_endpoint = "tcp://127.0.0.1:0";  // ROUTER bind address; "" disables replay
  std::string topic = "kv-events";
  std::chrono::milliseconds flush_interval{20};
  size_t replay_capacity = 10000;                     // batches kept for replay
  std::optional<int64_t> dp_rank;
};

struct KvEventServiceStats {
  uint64_t batches_published = 0;
  uint64_t events_published = 0;
  uint64_t replay_requests = 0;
  uint64_t publish_errors = 0;
};

class KvEventService {
 public:
  // Binds the sockets and starts the thread. Errors: the publisher's (kUnavailable on bind).
  static StatusOr<std::unique_ptr<KvEventService>> Start(const KvEventServiceOptions& options);
  ~KvEventService();  // Stop()
  KvEventService(const KvEventService&) = delete;
  KvEventService& operator=(const KvEventService&) = delete;

  kv::KvEventSink* sink() { return recorder_.get(); }
  const std::string& endpoint() const;         // resolved (real port)
  const std::string& replay_endpoint() const;  // resolved; "" when disabled
  const std::string& topic() const { return options_.topic; }
  uint64_t next_seq() const { return recorder_->next_seq(); }
  KvEventServiceStats Stats() const;

  // Final flush + publish, then joins the thread. Idempotent.
  void Stop();

 private:
  KvEventService(const KvEventServiceOptions& options, std::unique_ptr<kv::KvEventRecorder> recorder,
                 std::unique_ptr<kv::KvEventPublisher> publisher);
  void Loop();
  void FlushAndPublish();

  const KvEventServiceOptions options_;
  std::unique_ptr<kv::KvEventRecorder> recorder_;
  std::unique_ptr<kv::KvEventPublisher> publisher_;  // PUB: only the service thread (and Stop after join)
  std::atomic<bool> stop_{false};
  std::mutex wake_mu_;               // with wake_cv_: Stop() interrupts the loop's wait
  std::condition_variable wake_cv_;
  std::atomic<uint64_t> batches_published_{0};
  std::atomic<uint64_t> events_published_{0};
  std::atomic<uint64_t> replay_requests_{0};
  std::atomic<uint64_t> publish_errors_{0};
  std::thread thread_;
};

}  // namespace kvmesh::agent
