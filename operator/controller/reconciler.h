// Reconciler: the level-based control loop body of kvmesh-operator for one InferenceGraph key
// ("namespace/name"). It reads the graph and its children through an ObjectReader (the manager's
// informer caches, or the API server), converges the graph's children on BuildDesired's objects,
// and writes the graph's status. Idempotent: with nothing changed, a Reconcile performs reads
// only (zero writes; zero API requests when reading from caches) -- children are applied by
// server-side apply only when NeedsApply says a field the operator owns differs, and the status
// only when it differs.
//
// Stale caches: every write is decided on API-server state. When the reader is a cache and it
// says a write is needed, the reconciler first GETs that object (a child, or the graph before the
// first write to anything) from the API server: if the live object needs nothing, no write is
// made (counted as stale_reads); if the live graph is newer than the cached one, the pass starts
// again from the live graph. So a cache lagging behind the operator's own last write costs one
// GET, never a write, a 409 or a repeated Event.
//
// Steps (docs/operator.md): read graph (gone -> done); being deleted -> finalizer drain; invalid
// spec -> status Degraded/InvalidSpec + Event, children untouched; add finalizer kvmesh.dev/drain;
// list the graph's pods; apply desired children; delete owned children no longer desired; write
// status (409 -> re-GET and retry once). Events on transitions (Created, ScaledPool, Available,
// Degraded, InvalidSpec, Draining, Deleted).
//
// Thread-safety: Reconcile may run on several threads for DIFFERENT keys at once (the work queue
// never hands one key to two workers); stats are atomics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "operator/controller/desired_state.h"
#include "operator/controller/object_reader.h"
#include "operator/controller/status.h"
#include "operator/kube/kube_client.h"

namespace kvmesh::controller {

struct ReconcileResult {
  bool ok = true;                               // false: `error` is set; requeue with backoff
  std::chrono::milliseconds requeue_after{0};   // > 0: look again after this long
  Status error;
};

struct ReconcilerOptions {
  OperatorSettings settings;
  std::chrono::seconds degraded_grace{300};
  // Finalizer: after scaling the pools to 0, wait at most this long (from deletionTimestamp) for
  // the worker pods to go before the children are deleted and the finalizer removed anyway.
  std::chrono::seconds drain_timeout{120};
  std::chrono::milliseconds drain_poll{2000};  // requeue interval while draining
  std::string instance = "kvmesh-operator";  // Event reportingInstance (pod name)
  std::function<SystemTime()> clock = [] { return std::chrono::system_clock::now(); };
  // The SLA planner's replicas for a pool ("prefill" | "decode") of a graph (kvmesh-operator
  // wires planner::PlannerLoop::DesiredReplicas); nullopt or unset = spec.replicas. Used only for
  // pools that autoscale (maxReplicas > max(1, minReplicas)), clamped to those limits; the
  // Deployments and status.<pool>.replicas then follow the planner (docs/planner.md).
  std::function<std::optional<int32_t>(const GraphMeta& meta, const std::string& pool)> desired_replicas;
};

// Counters for /metrics (the caller adds the duration histogram).
struct ReconcilerStats {
  uint64_t reconciles_ok = 0;       // finished, nothing to retry
  uint64_t reconciles_requeue = 0;  // finished, asked to look again later
  uint64_t reconciles_error = 0;    // failed, retried with backoff
  uint64_t applies = 0;             // children created/updated by server-side apply
  uint64_t deletes = 0;             // children deleted
  uint64_t status_updates = 0;
  uint64_t finalizer_updates = 0;   // finalizer added or removed
  uint64_t events = 0;              // Events recorded
  uint64_t conflicts = 0;           // 409s retried
  uint64_t stale_reads = 0;         // cached reads the API server contradicted before a write
};

class Reconciler {
 public:
  // Reads and writes through `client` (every read is an API request).
  Reconciler(kube::KubeClient& client, ReconcilerOptions options);
  // Reads through `reader` (which must outlive the reconciler), writes through `client`.
  Reconciler(kube::KubeClient& client, ObjectReader& reader, ReconcilerOptions options);
  ReconcileResult Reconcile(const std::string& key);
  ReconcilerStats stats() const;

 private:
  struct Counters {
    std::atomic<uint64_t> ok{0}, requeue{0}, error{0}, applies{0}, deletes{0}, status_updates{0},
        finalizer_updates{0}, events{0}, conflicts{0}, stale_reads{0};
  };

  ReconcileResult ReconcileGraph(const std::string& ns, const std::string& name);
  // One pass over `object` (the graph as read). `fresh`: known to be the API server's current
  // version (false for a cached read, until confirmed).
  ReconcileResult ReconcileObject(const std::string& ns, const std::string& name, nlohmann::json object,
                                  bool fresh);
  ReconcileResult Finalize(nlohmann::json object, const GraphMeta& meta);
  // Writes `status` (InvalidSpecStatus) and the InvalidSpec Event when the message is new.
  ReconcileResult HandleInvalidSpec(nlohmann::json object, const GraphMeta& meta, const Status& error,
                                    const nlohmann::json& status);
  // PUT the graph with `finalizers`; on 409 re-GET and retry once. Returns the updated object.
  StatusOr<nlohmann::json> UpdateFinalizers(nlohmann::json object, bool add);
  // Writes `status` if it differs from object's status; 409 -> re-GET and retry once.
  Status WriteStatus(nlohmann::json object, nlohmann::json status);
  // Best-effort v1 Event about the graph (failures are logged, never fatal).
  void RecordEvent(const GraphMeta& meta, const std::string& type, const std::string& reason,
                   const std::string& message);

  kube::KubeClient& client_;
  std::unique_ptr<ObjectReader> owned_reader_;  // the ClientObjectReader of the first constructor
  ObjectReader* reader_;
  ReconcilerOptions options_;
  Counters counters_;
  std::atomic<uint64_t> event_seq_{0};
};

// ResourceRef of a child resource plural (configmaps, services, deployments,
// poddisruptionbudgets, pods, events).
kube::ResourceRef ChildResource(const std::string& resource);

}  // namespace kvmesh::controller
