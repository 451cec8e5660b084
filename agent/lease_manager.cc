#include "agent/lease_manager.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"

namespace kvmesh::agent {
namespace {

LeaseClock DefaultClock(LeaseClock clock) {
  if (clock) return clock;
  return [] { return std::chrono::steady_clock::now(); };
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
}

}  // namespace

LeaseManager::LeaseManager(ReleasePinFn release, LeaseClock clock)
    : release_(std::move(release)), clock_(DefaultClock(std::move(clock))), rng_(RandomSeed()) {
  KVMESH_CHECK(release_ != nullptr, "LeaseManager needs a release function");
}

LeaseManager::~LeaseManager() { ReleaseAll(); }

Lease LeaseManager::Create(uint64_t pin_id, std::chrono::milliseconds ttl) {
  KVMESH_CHECK(ttl.count() > 0, "lease ttl must be > 0");
  const auto now = clock_();
  const auto wall_now = std::chrono::system_clock::now();
  Lease lease;
  lease.pin_id = pin_id;
  lease.expiry = now + ttl;
  lease.expiry_unix_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(wall_now.time_since_epoch() + ttl)
          .count();
  std::lock_guard<std::mutex> lock(mu_);
  do {
    lease.lease_id = rng_();
  } while (lease.lease_id == 0 || leases_.count(lease.lease_id) != 0);
  leases_.emplace(lease.lease_id, lease);
  ++stats_.created;
  return lease;
}

Status LeaseManager::Release(uint64_t lease_id) {
  uint64_t pin_id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = leases_.find(lease_id);
    if (it == leases_.end()) {
      return NotFoundError("unknown or expired lease " + std::to_string(lease_id));
    }
    pin_id = it->second.pin_id;
    leases_.erase(it);
    ++stats_.released;
  }
  release_(pin_id);
  return Status();
}

size_t LeaseManager::ExpireDue() {
  std::vector<uint64_t> pins;
  {
    const auto now = clock_();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = leases_.begin(); it != leases_.end();) {
      if (it->second.expiry <= now) {
        pins.push_back(it->second.pin_id);
        it = leases_.erase(it);
      } else {
        ++it;
      }
    }
    stats_.expired += pins.size();
  }
  for (uint64_t pin : pins) release_(pin);
  return pins.size();
}

std::chrono::steady_clock::time_point LeaseManager::NextExpiry() const {
  std::lock_guard<std::mutex> lock(mu_);
  auto next = std::chrono::steady_clock::time_point::max();
  for (const auto& [id, lease] : leases_) next = std::min(next, lease.expiry);
  return next;
}

size_t LeaseManager::ReleaseAll() {
  std::vector<uint64_t> pins;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pins.reserve(leases_.size());
    for (const auto& [id, lease] : leases_) pins.push_back(lease.pin_id);
    leases_.clear();
    stats_.dropped += pins.size();
  }
  for (uint64_t pin : pins) release_(pin);
  return pins.size();
}

StatusOr<Lease> LeaseManager::Extend(uint64_t lease_id, std::chrono::milliseconds hold) {
  const auto now = clock_();
  const auto wall_now = std::chrono::system_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return NotFoundError("unknown or expired lease " + std::to_string(lease_id));
  Lease& lease = it->second;
  if (now + hold > lease.expiry) {
    lease.expiry = now + hold;
    lease.expiry_unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(wall_now.time_since_epoch() + hold).count();
  }
  return lease;
}

LeaseStats LeaseManager::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  LeaseStats s = stats_;
  s.active = leases_.size();
  return s;
}

}  // namespace kvmesh::agent
