// LeaseManager: the prefill agent's table of KV leases. After a prefill-only request, the engine
// keeps the prompt's blocks pinned (PinnedKv); a lease names that pin, the decode agent that pulls
// the blocks releases it, and a lease nobody releases expires so its blocks are freed (the decode
// agent died, or the router never sent the decode request).
//
// Every lease ends exactly once — Release(), expiry (ExpireDue), or ReleaseAll() — and ending it
// calls the release function once with its pin id (the agent passes Engine::ReleasePinned). Lease
// ids are random 64-bit values (never 0), so a forged or stale id is simply NotFound.
//
// Threading: thread-safe (one mutex). The release function is called without the mutex held.
// Time comes from the injected clock (tests advance it by hand).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <unordered_map>

#include "common/status.h"

namespace kvmesh::agent {

using LeaseClock = std::function<std::chrono::steady_clock::time_point()>;
using ReleasePinFn = std::function<void(uint64_t pin_id)>;

struct Lease {
  uint64_t lease_id = 0;
  uint64_t pin_id = 0;
  std::chrono::steady_clock::time_point expiry;
  int64_t expiry_unix_ms = 0;  // the same instant on the wall clock, for the handle
};

struct LeaseStats {
  uint64_t created = 0;
  uint64_t released = 0;  // by Release()
  uint64_t expired = 0;   // by ExpireDue()
  uint64_t dropped = 0;   // by ReleaseAll()
  size_t active = 0;
};

class LeaseManager {
 public:
  // `clock` defaults to steady_clock::now.
  LeaseManager(ReleasePinFn release, LeaseClock clock = nullptr);
  ~LeaseManager();  // ReleaseAll()

  // A new lease on `pin_id` that expires after `ttl` (> 0).
  Lease Create(uint64_t pin_id, std::chrono::milliseconds ttl);
  // Ends the lease and frees its blocks. NotFound "unknown or expired lease <id>" otherwise.
  Status Release(uint64_t lease_id);
  // Keeps an active lease alive for at least `hold` from now (a decode agent claimed it and is
  // reading the blocks): expiry = max(expiry, now + hold). Returns the updated lease, or NotFound
  // like Release.
  StatusOr<Lease> Extend(uint64_t lease_id, std::chrono::milliseconds hold);
  // Ends every lease whose expiry is <= now; returns how many.
  size_t ExpireDue();
  // The earliest expiry among active leases (for the caller's timer), or nullopt-like max().
  std::chrono::steady_clock::time_point NextExpiry() const;
  // Ends every lease (shutdown); returns how many.
  size_t ReleaseAll();

  LeaseStats Stats() const;

 private:
  const ReleasePinFn release_;
  const LeaseClock clock_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Lease> leases_;  // guarded by mu_
  std::mt19937_64 rng_;                         // guarded by mu_
  LeaseStats stats_;                            // guarded by mu_
};

}  // namespace kvmesh::agent
