#include "agent/kv_event_service.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace kvmesh::agent {
namespace {

constexpr char kComponent[] = "kv_events";
// The longest the loop blocks in one wait, so Stop() returns promptly even when flush_interval is
// long and the loop is inside ServeReplay (which a condition variable cannot interrupt).
constexpr std::chrono::milliseconds kMaxWaitSlice{50};

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

StatusOr<std::unique_ptr<KvEventService>> KvEventService::Start(
    const KvEventServiceOptions& options) {
  if (options.flush_interval.count() <= 0) {
    return InvalidArgumentError("events flush_interval must be > 0 ms, got " +
                                std::to_string(options.flush_interval.count()));
  }
  if (options.endpoint.empty()) return InvalidArgumentError("events endpoint is empty");
  kv::KvEventRecorderOptions ropts;
  ropts.replay_capacity = options.replay_capacity;
  ropts.dp_rank = options.dp_rank;
  KVMESH_RETURN_IF_ERROR(ropts.Validate());
  auto recorder = std::make_unique<kv::KvEventRecorder>(ropts);

  kv::KvEventPublisherOptions popts;
  popts.endpoint = options.endpoint;
  popts.replay_endpoint = options.replay_endpoint;
  popts.topic = options.topic;
  KVMESH_ASSIGN_OR_RETURN(auto publisher, kv::KvEventPublisher::Create(popts, recorder.get()));

  std::unique_ptr<KvEventService> service(
      new KvEventService(options, std::move(recorder), std::move(publisher)));
  service->thread_ = std::thread([s = service.get()] { s->Loop(); });
  KVMESH_LOG_INFO(kComponent, "publishing KV events", {"endpoint", service->endpoint()},
                  {"replay_endpoint", service->replay_endpoint()}, {"topic", options.topic});
  return service;
}

KvEventService::KvEventService(const KvEventServiceOptions& options,
                               std::unique_ptr<kv::KvEventRecorder> recorder,
                               std::unique_ptr<kv::KvEventPublisher> publisher)
    : options_(options), recorder_(std::move(recorder)), publisher_(std::move(publisher)) {}

KvEventService::~KvEventService() { Stop(); }

const std::string& KvEventService::endpoint() const { return publisher_->endpoint(); }

const std::string& KvEventService::replay_endpoint() const {
  return publisher_->replay_endpoint();
}

KvEventServiceStats KvEventService::Stats() const {
  KvEventServiceStats s;
  s.batches_published = batches_published_.load(std::memory_order_relaxed);
  s.events_published = events_published_.load(std::memory_order_relaxed);
  s.replay_requests = replay_requests_.load(std::memory_order_relaxed);
  s.publish_errors = publish_errors_.load(std::memory_order_relaxed);
  return s;
}

void KvEventService::Stop() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (stop_.exchange(true)) return;
  }
  wake_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The thread is gone: this thread is now the only user of the PUB socket.
  FlushAndPublish();
  KVMESH_LOG_INFO(kComponent, "KV event publisher stopped", {"next_seq", next_seq()},
                  {"batches_published", batches_published_.load()});
}

void KvEventService::Loop() {
  const bool replay = !publisher_->replay_endpoint().empty();
  auto next_flush = std::chrono::steady_clock::now() + options_.flush_interval;
  while (!stop_.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_flush) {
      FlushAndPublish();
      next_flush = now + options_.flush_interval;
      continue;
    }
    const auto wait = std::clamp(
        std::chrono::ceil<std::chrono::milliseconds>(next_flush - now),
        std::chrono::milliseconds(1), kMaxWaitSlice);
    bool served = false;
    if (replay) {
      auto n = publisher_->ServeReplay(static_cast<int>(wait.count()));
      if (n.ok()) {
        replay_requests_.fetch_add(static_cast<uint64_t>(*n), std::memory_order_relaxed);
        served = true;
      } else {
        KVMESH_LOG_WARN(kComponent, "replay socket error", {"error", n.status().ToString()});
      }
    }
    if (!served) {
      std::unique_lock<std::mutex> lock(wake_mu_);
      wake_cv_.wait_for(lock, wait, [this] { return stop_.load(); });
    }
  }
}

void KvEventService::FlushAndPublish() {
  auto batches = recorder_->Flush(WallSeconds());
  for (const auto& b : batches) {
    Status st = publisher_->Publish(b);
    if (!st.ok()) {
      // The batch stays in the replay ring: a subscriber sees the gap and replays it.
      publish_errors_.fetch_add(1, std::memory_order_relaxed);
      KVMESH_LOG_WARN(kComponent, "publish failed", {"seq", b.seq}, {"error", st.ToString()});
      continue;
    }
    batches_published_.fetch_add(1, std::memory_order_relaxed);
    events_published_.fetch_add(b.batch.events.size(), std::memory_order_relaxed);
  }
}

}  // namespace kvmesh::agent
