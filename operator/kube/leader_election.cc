#include "operator/kube/leader_election.h"

#include <ctime>
#include <random>

#include "common/log.h"

namespace kvmesh::kube {
namespace {
constexpr char kComponent[] = "leader-election";

// metav1.MicroTime: "2026-11-30T06:00:00.123456Z" (wall clock, informational only).
std::string MicroTimeNow() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[80];
  std::snprintf(out, sizeof(out), "%s.%06lldZ", buf, static_cast<long long>(micros));
  return out;
}

int64_t CeilSeconds(std::chrono::milliseconds d) { return std::max<int64_t>(1, (d.count() + 999) / 1000); }
}  // namespace

Status LeaderElectionConfig::Validate() const {
  if (lease_name.empty()) return InvalidArgumentError("leader election: lease_name is empty");
  if (lease_namespace.empty()) return InvalidArgumentError("leader election: lease_namespace is empty");
  if (identity.empty()) return InvalidArgumentError("leader election: identity is empty");
  if (retry_period.count() <= 0) return InvalidArgumentError("leader election: retry_period must be > 0");
  if (renew_deadline <= retry_period) {
    return InvalidArgumentError("leader election: renew_deadline (" + std::to_string(renew_deadline.count()) +
                                " ms) must be greater than retry_period (" +
                                std::to_string(retry_period.count()) + " ms)");
  }
  if (lease_duration <= renew_deadline) {
    return InvalidArgumentError("leader election: lease_duration (" + std::to_string(lease_duration.count()) +
                                " ms) must be greater than renew_deadline (" +
                                std::to_string(renew_deadline.count()) + " ms)");
  }
  return Status::Ok();
}

LeaderElector::LeaderElector(KubeClient* client, LeaderElectionConfig config)
    : client_(client),
      config_(std::move(config)),
      clock_(config_.clock != nullptr ? config_.clock : Clock::Real()) {}

LeaderElector::~LeaderElector() { Stop(); }

Status LeaderElector::Start() {
  KVMESH_RETURN_IF_ERROR(config_.Validate());
  if (thread_.joinable()) return FailedPreconditionError("leader elector already started");
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void LeaderElector::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::IsLeader() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leading_ && clock_->Now() - last_renew_ < config_.renew_deadline;
}

std::string LeaderElector::observed_leader() const {
  std::lock_guard<std::mutex> lock(mu_);
  return observed_leader_;
}

void LeaderElector::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

nlohmann::json LeaderElector::LeaseSpec(const nlohmann::json& old_spec, bool same_holder) const {
  nlohmann::json spec = old_spec.is_object() ? old_spec : nlohmann::json::object();
  const std::string now = MicroTimeNow();
  int64_t transitions = spec.value("leaseTransitions", int64_t{0});
  if (!same_holder) {
    spec["acquireTime"] = now;
    ++transitions;
  }
  spec["holderIdentity"] = config_.identity;
  spec["leaseDurationSeconds"] = CeilSeconds(config_.lease_duration);
  spec["renewTime"] = now;
  spec["leaseTransitions"] = transitions;
  if (!spec.contains("acquireTime")) spec["acquireTime"] = now;
  return spec;
}

bool LeaderElector::TryAcquireOrRenew() {
  const auto sent = clock_->Now();
  auto lease = client_->Get(Leases(), config_.lease_namespace, config_.lease_name);
  if (!lease.ok()) {
    if (!IsNotFound(lease.status())) {
      KVMESH_LOG_WARN(kComponent, "cannot read lease", {"error", lease.status().ToString()});
      return false;
    }
    nlohmann::json obj = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec", LeaseSpec(nlohmann::json::object(), false)}};
    obj["spec"]["leaseTransitions"] = 0;
    auto created = client_->Create(Leases(), config_.lease_namespace, obj);
    if (!created.ok()) {
      KVMESH_LOG_INFO(kComponent, "lease create lost", {"error", created.status().ToString()});
      return false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    observed_spec_ = (*created)["spec"];
    observed_time_ = sent;
    observed_leader_ = config_.identity;
    last_renew_ = sent;
    return true;
  }
  nlohmann::json spec = lease->value("spec", nlohmann::json::object());
  const std::string holder = spec.value("holderIdentity", std::string());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (spec != observed_spec_) {
      observed_spec_ = spec;
      observed_time_ = sent;
    }
    if (holder != observed_leader_) {
      observed_leader_ = holder;
      if (config_.on_new_leader && !holder.empty()) config_.on_new_leader(holder);
    }
  }
  const bool mine = holder == config_.identity;
  if (!holder.empty() && !mine) {
    auto duration = std::max<std::chrono::milliseconds>(
        config_.lease_duration, std::chrono::seconds(spec.value("leaseDurationSeconds", int64_t{0})));
    if (observed_time_ + duration > sent) return false;  // held and still valid
    KVMESH_LOG_INFO(kComponent, "lease expired, taking over", {"previous_holder", holder});
  }
  nlohmann::json updated = *lease;
  updated["spec"] = LeaseSpec(spec, mine);
  auto result = client_->Update(Leases(), updated);
  if (!result.ok()) {
    if (!IsConflict(result.status())) {
      KVMESH_LOG_WARN(kComponent, "lease update failed", {"error", result.status().ToString()});
    }
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  observed_spec_ = (*result)["spec"];
  observed_time_ = sent;
  observed_leader_ = config_.identity;
  last_renew_ = sent;
  return true;
}

void LeaderElector::Release() {
  auto lease = client_->Get(Leases(), config_.lease_namespace, config_.lease_name);
  if (!lease.ok()) return;
  nlohmann::json spec = lease->value("spec", nlohmann::json::object());
  if (spec.value("holderIdentity", std::string()) != config_.identity) return;
  nlohmann::json updated = *lease;
  updated["spec"]["holderIdentity"] = "";
  updated["spec"]["leaseDurationSeconds"] = 1;
  updated["spec"]["renewTime"] = MicroTimeNow();
  auto result = client_->Update(Leases(), updated);
  if (!result.ok()) {
    KVMESH_LOG_WARN(kComponent, "lease release failed", {"error", result.status().ToString()});
  } else {
    KVMESH_LOG_INFO(kComponent, "lease released", {"identity", config_.identity});
  }
}

void LeaderElector::Run() {
  std::mt19937 rng(std::random_device{}());
  // client-go's JitterFactor 1.2 on the candidate's retry: retry_period * [1, 2.2).
  std::uniform_real_distribution<double> jitter(1.0, 2.2);
  while (!stop_.load()) {
    // Candidate.
    if (!TryAcquireOrRenew()) {
      SleepFor(std::chrono::milliseconds(static_cast<int64_t>(config_.retry_period.count() * jitter(rng))));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      leading_ = true;
    }
    acquisitions_.fetch_add(1);
    KVMESH_LOG_INFO(kComponent, "became leader", {"identity", config_.identity},
                    {"lease", config_.lease_namespace + "/" + config_.lease_name});
    if (config_.on_started_leading) config_.on_started_leading();
    // Leader: renew every retry_period until the renew deadline passes without a good renew.
    bool lost = false;
    while (!stop_.load()) {
      SleepFor(config_.retry_period);
      if (stop_.load()) break;
      if (TryAcquireOrRenew()) continue;
      std::chrono::steady_clock::time_point last;
      {
        std::lock_guard<std::mutex> lock(mu_);
        last = last_renew_;
      }
      if (clock_->Now() - last >= config_.renew_deadline ||
          (observed_leader() != config_.identity && !observed_leader().empty())) {
        lost = true;
        break;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      leading_ = false;
    }
    if (lost) {
      losses_.fetch_add(1);
      KVMESH_LOG_WARN(kComponent, "lost leadership", {"identity", config_.identity});
    } else if (config_.release_on_stop) {
      Release();
    }
    if (config_.on_stopped_leading) config_.on_stopped_leading();
  }
}

}  // namespace kvmesh::kube
