// LeaderElector: one leader among operator replicas through a coordination.k8s.io/v1 Lease
// (client-go's leaderelection algorithm, KUBERNETES-API.md "Leader election").
//
//   - A candidate takes the lease when it is absent, released (holderIdentity ""), its own, or
//     when the candidate has observed the lease record unchanged for the lease duration (the
//     larger of its own lease_duration and the record's leaseDurationSeconds). Observations are
//     compared, never clocks of other machines; every write carries the lease's resourceVersion,
//     so two candidates cannot both win (the loser gets 409).
//   - The leader renews every retry_period. IsLeader() is true only while the last successful
//     renew (timed from when that request was sent) is younger than renew_deadline, so it turns
//     false before the deadline passes, even while a renew request hangs. When the deadline passes
//     the elector calls on_stopped_leading and becomes a candidate again.
//   - leaseTransitions counts changes of holder; acquireTime is set on each acquisition.
//   - Stop() on the leader releases the lease (holderIdentity cleared) so a successor takes over at
//     its next retry instead of waiting out the lease duration.
// Callbacks run on the elector's thread and must not block for long (start or stop work elsewhere).
// Requirement on configuration: lease_duration > renew_deadline > retry_period > 0.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "operator/kube/kube_client.h"
#include "operator/kube/workqueue.h"

namespace kvmesh::kube {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name = "kvmesh-operator";
  std::string identity;  // unique per replica (pod name + random suffix)
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  bool release_on_stop = true;
  std::function<void()> on_started_leading;
  std::function<void()> on_stopped_leading;
  std::function<void(const std::string& identity)> on_new_leader;  // observed holder changed
  Clock* clock = nullptr;  // nullptr = real clock; not owned

  // InvalidArgument naming the bad field.
  Status Validate() const;
};

class LeaderElector {
 public:
  // `client` must outlive the elector.
  LeaderElector(KubeClient* client, LeaderElectionConfig config);
  ~LeaderElector();  // Stop()
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  // Validates the config and starts the election thread.
  Status Start();
  // Stops the thread; a leader calls on_stopped_leading and (release_on_stop) releases the lease.
  void Stop();

  bool IsLeader() const;
  // The holder this elector last observed ("" if none or unknown).
  std::string observed_leader() const;
  // Times this elector became leader / lost leadership without stopping (for metrics).
  uint64_t acquisitions() const { return acquisitions_.load(); }
  uint64_t losses() const { return losses_.load(); }

  // One acquire-or-renew attempt (exposed for tests); true when this elector holds the lease.
  bool TryAcquireOrRenew();

 private:
  void Run();
  void SleepFor(std::chrono::milliseconds d);
  void Release();
  nlohmann::json LeaseSpec(const nlohmann::json& old_spec, bool same_holder) const;

  KubeClient* const client_;
  const LeaderElectionConfig config_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool leading_ = false;  // guarded by mu_
  std::chrono::steady_clock::time_point last_renew_;  // guarded by mu_: send time of the last good write
  std::string observed_leader_;                       // guarded by mu_
  // Only the election thread touches these.
  nlohmann::json observed_spec_;
  std::chrono::steady_clock::time_point observed_time_;

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acquisitions_{0};
  std::atomic<uint64_t> losses_{0};
  std::thread thread_;
};

}  // namespace kvmesh::kube
