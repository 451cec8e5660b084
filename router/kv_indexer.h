// KvIndexer: keeps the router's global PrefixIndex in step with every worker's KV events.
//
// Per worker: a ZMQ SUB on its events endpoint (kv/kv_event_zmq.h, vLLM wire format, so vLLM and
// SGLang workers index too), consumed by the indexer's threads. Start-up and resync follow
// docs/kv-events.md: subscribe first, then fetch GET <url>/v1/kv/inventory (kvmesh agents) and
// ReplaceWorker() from it, then apply live batches with seq > the snapshot's seq. A gap (the index
// reports ApplyResult::gap) -> Replay() from the expected seq on the replay endpoint; if the
// replay cannot fill it (first replayed seq too new, replay unavailable, timeout, seqs went
// backwards = worker restarted, inventory agent_id changed) -> resync from the inventory; a worker
// without inventory (vLLM) is then cleared and rebuilt from live events. A batch that does not
// decode counts as a gap. Corrupt input never crashes the router and never touches another
// worker's entries.
//
// Threading: one receive thread per worker (simple; fine for tens of workers — a poller over all
// sockets is the follow-up for fleets of thousands). All methods thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "kv/prefix_index.h"
#include "router/worker_registry.h"

namespace kvmesh::router {

struct KvIndexerOptions {
  std::chrono::milliseconds replay_timeout{2000};
  std::chrono::milliseconds inventory_timeout{5000};
  std::chrono::milliseconds retry_interval{1000};  // after a failed inventory fetch / connect
  uint32_t block_size = 16;  // inventory block_size must match; a mismatch is logged, worker skipped
  // Cluster routers (WorkerSpec::is_cluster_router, the global routing tier) publish no events:
  // their GET /v1/kv/inventory (the cluster's prefix summary) is polled this often and replaces
  // what the index holds for them. A failed poll keeps the last summary.
  std::chrono::milliseconds summary_interval{1000};
  std::string summary_authorization;  // Authorization header for those polls ("" = none)
};

struct KvIndexerStats {
  uint64_t batches = 0;
  uint64_t gaps = 0;
  uint64_t replays = 0;          // successful gap fills by replay
  uint64_t resyncs = 0;          // inventory snapshots applied (incl. cold start)
  uint64_t decode_errors = 0;    // messages that did not decode
};

class KvIndexer {
 public:
  // Registers kvmesh_router_kv_events_* metrics (batches, gaps, replays, resyncs, decode errors,
  // index blocks) in `metrics` (may be null). `index` must outlive the indexer.
  KvIndexer(kv::PrefixIndex* index, KvIndexerOptions options, MetricsRegistry* metrics);
  ~KvIndexer();  // Stop()
  KvIndexer(const KvIndexer&) = delete;
  KvIndexer& operator=(const KvIndexer&) = delete;

  // Starts following a worker (no-op if already followed). Resolves the events endpoints from
  // the spec or the worker's inventory (retrying every retry_interval until it answers).
  void AddWorker(std::shared_ptr<const WorkerState> worker);
  // Stops following and drops the worker's entries from the index.
  void RemoveWorker(kv::WorkerId id);
  void Stop();

  // True once the worker's initial snapshot (or, without inventory, its subscription) is in.
  bool Synced(kv::WorkerId id) const;
  KvIndexerStats Stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::router
