// WorkerRegistry: the router's set of workers, their health, circuit breakers and the load the
// router itself has put on them.
//
// Membership comes from a static list, from a workers file (written by `kvmesh up` or the
// operator; watched by polling its mtime/size/content and applied without restart), or from
// SetWorkers(). A worker is identified by its URL: re-adding the same URL keeps its id and state;
// a URL that disappears is removed (its index entries dropped by the KvIndexer).
//
// Health: a background thread GETs <url>/ready every health_interval (timeout health_timeout);
// 200 = ready. Circuit breaker per worker: closed -> open after breaker_failures consecutive
// failures (probe failures and request failures reported by the router count alike) -> after
// breaker_open, half-open: exactly one request (or probe) is let through; success closes, failure
// re-opens. A worker is routable when ready, breaker not open, and (half-open) its probe slot is
// free.
//
// Load accounting: the router adds what it sends (LoadGuard) and removes it when the request ends,
// so routing sees load without waiting for worker metrics: requests in flight, prompt tokens being
// prefilled, KV blocks of requests being decoded.
//
// Threading: every method is thread-safe. Table() returns an immutable snapshot of membership
// (shared_ptr, rebuilt on change) whose WorkerState entries hold atomics that change in place, so
// a routing decision reads 1,000 workers without locks or copies; View() is the same snapshot
// with its decode and prefill workers listed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "kv/prefix_index.h"

namespace kvmesh::router {

enum class WorkerRole { kAggregated, kPrefill, kDecode };
const char* WorkerRoleName(WorkerRole role);  // "aggregated", "prefill", "decode"
StatusOr<WorkerRole> ParseWorkerRole(std::string_view name);
inline bool CanDecode(WorkerRole r) { return r != WorkerRole::kPrefill; }
// Remote prefill goes to dedicated prefill workers only: an aggregated worker serves whole
// requests (a fleet of aggregated workers never splits prefill from decode).
inline bool CanPrefillRemote(WorkerRole r) { return r == WorkerRole::kPrefill; }

struct WorkerSpec {
  std::string url;   // http://host:port (no trailing slash); the identity of the worker
  WorkerRole role = WorkerRole::kAggregated;
  std::string name;  // for logs/metrics; "" = host:port of url
  // KV events. Empty events_endpoint = ask the worker (GET /v1/kv/inventory carries
  // events_endpoint, replay_endpoint, topic for kvmesh agents); a wildcard host (0.0.0.0, *) is
  // replaced with the url's host. A vLLM worker needs them set here (it has no inventory).
  std::string events_endpoint;
  std::string replay_endpoint;
  std::string topic;
  bool has_inventory = true;  // false for vLLM/SGLang workers (no GET /v1/kv/inventory)
  // kind router: the "worker" is a whole cluster behind its own kvmesh-router (global routing
  // tier, docs/global-routing.md). Its blocks come from polling its GET /v1/kv/inventory (the
  // cluster's prefix summary), not from events; the client's Authorization header is forwarded.
  bool is_cluster_router = false;
  double rtt_ms = 0;   // rtt_ms: round trip to the worker, added to its routing cost
  std::string region;  // informational (logs, /debug/workers)
};

// "URL" or "URL=ROLE".
StatusOr<WorkerSpec> ParseWorkerUrl(std::string_view text);
// Workers file (YAML or JSON):
//   workers:
//     - url: http://127.0.0.1:8101
//       role: prefill              # aggregated (default) | prefill | decode
//       name: prefill-0            # optional
//       events_endpoint: tcp://127.0.0.1:5557   # optional (required for vllm)
//       replay_endpoint: tcp://127.0.0.1:5558   # optional
//       topic: kv-events                        # optional
//       kind: kvmesh               # kvmesh (default) | vllm (no inventory endpoint) | router
//       rtt_ms: 12                 # optional: round trip to it (global routing tier)
//       region: eu-west            # optional
// Errors name the entry and field. Duplicate URLs are an error.
StatusOr<std::vector<WorkerSpec>> ParseWorkerFile(std::string_view text);

// The router-side load of every worker with an id below kCapacity, mirrored from the
// WorkerState counters into dense arrays indexed by worker id, one per field (LoadGuard changes
// both; nothing else changes load in the router). A kv routing decision reads its 1,000
// candidates' loads from these few contiguous kilobytes instead of one scattered WorkerState line
// each, with fewer instructions, and for consecutive ids with vector loads (docs/routing.md,
// "Load board"). The arrays are allocated zeroed and untouched until a worker uses them (24 MiB
// of address space; 24 bytes of memory per worker id in use, in pages of 512 ids).
class LoadBoard {
 public:
  static constexpr kv::WorkerId kCapacity = kv::WorkerId{1} << 20;
  enum Field : uint32_t {
    kPrefillTokens = 0,  // = WorkerState::prefill_tokens
    kQueueUnits = 1,     // = WorkerState::decode_blocks + 4 * WorkerState::inflight
    kDecodeBlocks = 2,   // = WorkerState::decode_blocks
  };
  static constexpr uint32_t kNumFields = 3;
  LoadBoard();
  ~LoadBoard();
  LoadBoard(const LoadBoard&) = delete;
  LoadBoard& operator=(const LoadBoard&) = delete;
  static bool Covers(kv::WorkerId id) { return id < kCapacity; }
  // id < kCapacity.
  std::atomic_ref<uint64_t> Cell(kv::WorkerId id, Field f) const {
    return std::atomic_ref<uint64_t>(cells_[size_t{f} * kCapacity + id]);
  }
  uint64_t Get(kv::WorkerId id, Field f) const { return Get(cells_, id, f); }
  // The same from cells(), which a loop can keep in a register; field f of ids id0.. is the
  // array cells() + f * kCapacity + id0.
  uint64_t* cells() const { return cells_; }
  static uint64_t Get(uint64_t* cells, kv::WorkerId id, Field f) {
    return std::atomic_ref<uint64_t>(cells[size_t{f} * kCapacity + id])
        .load(std::memory_order_relaxed);
  }

 private:
  uint64_t* cells_;  // kNumFields arrays of kCapacity words, calloc'ed
};

enum class BreakerState { kClosed, kOpen, kHalfOpen };
const char* BreakerStateName(BreakerState s);  // "closed", "open", "half_open"

// One worker's live state. Fields change in place (atomics); the object lives as long as any
// table snapshot or guard refers to it.
// The first cache line holds what a routing decision reads for each of up to 1,000 candidates
// (id, role, the load counters, rtt_ms) and what Routable() reads, so a decision touches one line
// per candidate.
struct alignas(64) WorkerState {
  kv::WorkerId id = 0;
  // Router-side load.
  std::atomic<uint32_t> inflight{0};           // requests the router has on this worker
  std::atomic<uint32_t> prefills_inflight{0};  // of which prefill (remote or local) not done yet
  WorkerRole role = WorkerRole::kAggregated;   // spec.role (a role change makes a new worker)
  std::atomic<uint64_t> prefill_tokens{0};     // uncached prompt tokens being prefilled
  std::atomic<uint64_t> decode_blocks{0};      // KV blocks held by requests decoding here
  double rtt_ms = 0;  // spec.rtt_ms, next to the load counters the kv cost reads
  // Read by Routable() for every worker when the router builds a request's candidates.
  std::atomic<bool> ready{false};
  std::atomic<bool> removed{false};
  std::atomic<bool> half_open_probe_taken{false};
  std::atomic<int> breaker{static_cast<int>(BreakerState::kClosed)};
  std::atomic<int64_t> open_until_ns{0};        // steady clock; breaker open until then
  std::atomic<uint32_t> consecutive_failures{0};
  WorkerSpec spec;
  // The registry's load board when id is on it (LoadBoard::Covers), else null. Set before the
  // worker is published, then constant.
  std::shared_ptr<LoadBoard> board;

  BreakerState breaker_state() const { return static_cast<BreakerState>(breaker.load()); }
};

// Sets a worker's load counters and its board cells at once. For benches and tests: the router
// changes load only through LoadGuard.
void SetLoadForTesting(WorkerState& w, uint64_t prefill_tokens, uint64_t decode_blocks,
                       uint32_t inflight);

// A candidate list's loads on a LoadBoard, for RoutingPolicy::Choose (RouteInput::loads):
// ids[i] is candidates[i]->id and every one is on `board`; any_rtt: some candidate has
// rtt_ms != 0. board null: not available (the policy reads the WorkerStates).
struct CandidateLoads {
  const LoadBoard* board = nullptr;
  std::span<const kv::WorkerId> ids;
  kv::WorkerId max_id = 0;  // the largest of ids
  bool consecutive = false;  // ids[i] == ids[0] + i
  bool any_rtt = false;
};

using WorkerTable = std::vector<std::shared_ptr<WorkerState>>;  // in id order

// One membership snapshot as routing reads it for every request: the table and, in table order,
// the workers each kind of candidate is drawn from, so a request scans only those.
struct WorkerView {
  std::shared_ptr<const WorkerTable> table;
  std::vector<WorkerState*> decode;   // CanDecode(role)
  std::vector<WorkerState*> prefill;  // CanPrefillRemote(role)
  // decode's ids in order, and the board that holds all their loads (null if one is not on it).
  std::vector<kv::WorkerId> decode_ids;
  std::shared_ptr<const LoadBoard> board;
  kv::WorkerId decode_max_id = 0;
  bool decode_consecutive = false;
  bool decode_any_rtt = false;

  // decode's loads for RouteInput::loads (valid while this view is).
  CandidateLoads DecodeLoads() const {
    return {board.get(), decode_ids, decode_max_id, decode_consecutive, decode_any_rtt};
  }

  // The table's entry for `w` (one of its workers), or null: a binary search by id.
  std::shared_ptr<WorkerState> Find(const WorkerState* w) const;
};

enum class CandidateKind { kDecode, kRemotePrefill };

// What one routed request adds to a worker's load; removed on destruction (or by the Set*/Done
// methods as the request moves from prefill to decode).
class LoadGuard {
 public:
  LoadGuard() = default;
  LoadGuard(std::shared_ptr<WorkerState> worker, uint64_t prefill_tokens, uint64_t decode_blocks,
            bool counts_as_prefill);
  ~LoadGuard();
  LoadGuard(LoadGuard&& other) noexcept;
  LoadGuard& operator=(LoadGuard&& other) noexcept;
  LoadGuard(const LoadGuard&) = delete;
  LoadGuard& operator=(const LoadGuard&) = delete;
  void PrefillDone();  // the prefill part ended (first token seen): drop prefill tokens/slot
  void Release();      // everything (idempotent)
  WorkerState* worker() const { return worker_.get(); }

 private:
  std::shared_ptr<WorkerState> worker_;
  uint64_t prefill_tokens_ = 0;
  uint64_t decode_blocks_ = 0;
  bool prefill_slot_ = false;
};

struct WorkerRegistryOptions {
  std::vector<WorkerSpec> static_workers;
  std::string file;  // workers file, "" = none
  std::chrono::milliseconds file_poll_interval{1000};
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
  uint32_t breaker_failures = 3;
  std::chrono::milliseconds breaker_open{5000};
  uint32_t max_inflight_per_worker = 256;
  // Called (from the registry's thread) after membership changed: the new table, the workers
  // added and the ids removed. The router wires this to KvIndexer::AddWorker/RemoveWorker.
  std::function<void(const WorkerTable& added, const std::vector<kv::WorkerId>& removed)> on_change;
};

class WorkerRegistry {
 public:
  // Registers kvmesh_router_workers{role,state} and kvmesh_router_worker_* metrics in `metrics`
  // (may be null). Errors: a static URL or the workers file that does not parse.
  static StatusOr<std::unique_ptr<WorkerRegistry>> Create(WorkerRegistryOptions options,
                                                          MetricsRegistry* metrics);
  ~WorkerRegistry();  // Stop()
  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  Status Start();  // health + file threads; probes every worker once before returning
  void Stop();

  // Replaces the dynamic membership (static workers stay). Returns the added/removed count.
  void SetWorkers(std::vector<WorkerSpec> workers);

  std::shared_ptr<const WorkerTable> Table() const;
  std::shared_ptr<const WorkerView> View() const;  // the same snapshot with its role views
  std::shared_ptr<WorkerState> Find(kv::WorkerId id) const;

  // Routable now: ready, breaker closed (or half-open with the probe slot free: this call does
  // not take the slot), inflight < max_inflight_per_worker.
  bool Routable(const WorkerState& w) const {
    if (w.removed.load(std::memory_order_relaxed) || !w.ready.load(std::memory_order_relaxed)) {
      return false;
    }
    if (w.inflight.load(std::memory_order_relaxed) >= options_.max_inflight_per_worker) {
      return false;
    }
    const int breaker = w.breaker.load(std::memory_order_relaxed);
    return breaker == static_cast<int>(BreakerState::kClosed) ||
           RoutableWithBreaker(w, static_cast<BreakerState>(breaker));
  }
  // One request's candidates of `kind` from `view` (the router's prefill candidates, and its
  // decode candidates on a retry): the routable workers, in table order, other than `skip`; those
  // in `exclude` go to `excluded` instead (dropped when it is null). Clears both first.
  void SelectCandidates(const WorkerView& view, CandidateKind kind,
                        const std::unordered_set<kv::WorkerId>& exclude, const WorkerState* skip,
                        std::vector<WorkerState*>& out, std::vector<WorkerState*>* excluded) const;
  // Takes the half-open probe slot if needed; false if another request holds it or the breaker
  // is open. Call right before sending to the worker.
  bool Admit(WorkerState& w);
  void ReportSuccess(WorkerState& w);
  void ReportFailure(WorkerState& w);  // connect error, 5xx, broken stream

  uint32_t max_inflight_per_worker() const { return options_.max_inflight_per_worker; }

 private:
  WorkerRegistry(WorkerRegistryOptions options, MetricsRegistry* metrics);
  bool RoutableWithBreaker(const WorkerState& w, BreakerState breaker) const;  // not closed
  struct Impl;
  WorkerRegistryOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::router
