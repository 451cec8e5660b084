// ApiStore: the storage and semantics behind the test Kubernetes API server (test-only code).
//
// Objects live by (group, resource, namespace, name), version-independent: a custom resource
// served in several versions is one object whose apiVersion is rewritten to the version asked for
// (no conversion). One global resourceVersion counter; every write bumps it, records a watch event
// in a bounded history and dispatches it to the open watches. Everything is guarded by one mutex.
//
// Semantics (see /work/shared/KUBERNETES-API.md and docs/test-cluster.md): uid/creationTimestamp/
// generation (generation bumps on a spec change; for kinds without spec on any change outside
// metadata/status); 409 on a stale resourceVersion; status subresource rules; merge/JSON/apply
// patches with a simple field-ownership model (managedFields per manager, lists are atomic);
// finalizers + deletionTimestamp; custom resources defaulted, pruned and validated against the CRD
// schema; a write that changes nothing keeps the resourceVersion and emits no event.
//
// Controllers (GC, Deployment controller) are level-based but incremental: every commit records
// what they must look at again (TrackLocked), so a round costs what changed (docs/test-cluster.md
// "Controller cost").
//
// Invariants: an object in the store always has metadata.{name,uid,resourceVersion,
// creationTimestamp}; the history holds every event with rv > history_floor_ (older ones are
// gone, a watch from before that gets 410); watch sinks are called with the mutex held and must
// not block or call back into the store.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/kube/kube_util.h"

namespace kvmesh::testapi {

struct ResourceType {
  std::string group;     // "" for the core group
  std::string version;   // "v1"
  std::string resource;  // plural, "deployments"
  std::string kind;      // "Deployment"
  std::string singular;
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  bool namespaced = true;
  bool has_status = false;  // status subresource
  bool has_scale = false;   // scale subresource (deployments, replicasets)
  bool custom = false;      // defined by a CRD
  // openAPIV3Schema (custom resources); null otherwise. Shared: a ResourceType is copied per
  // request and a CRD schema is large.
  std::shared_ptr<const Json> schema;
  Json printer_columns = Json::array();  // additionalPrinterColumns

  std::string GroupVersion() const { return group.empty() ? version : group + "/" + version; }
  std::string GroupResource() const { return group.empty() ? resource : resource + "." + group; }
};

struct WriteOptions {
  bool dry_run = false;
  std::string field_manager;     // fieldManager, or derived from the User-Agent
  bool force = false;            // apply: take over conflicting fields
  std::string field_validation;  // Strict | Warn | Ignore ("" = Warn)
};

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;
  std::string continue_token;
};

struct DeleteOptions {
  std::string propagation_policy;  // Background (default) | Foreground | Orphan
  std::string precondition_uid;
  std::string precondition_resource_version;
};

// A write that succeeded: the object and any warnings (e.g. pruned unknown fields).
struct WriteResult {
  Json object;
  std::vector<std::string> warnings;
  bool created = false;
};

struct WatchRequest {
  std::string namespace_;  // "" = all namespaces
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;  // "" or "0": synthetic ADDED for current objects first
  bool bookmarks = false;
  std::chrono::steady_clock::time_point deadline;
  // Optional: turns each event's object into what the client asked for (e.g. a Table).
  std::function<Json(const Json&)> render;
};

// Called with the store mutex held; must not block. send returns false once the stream is gone.
struct WatchSink {
  std::function<bool(const std::string& line)> send;
  std::function<void()> close;
  std::function<bool()> alive;  // false once the client went away (optional)
};

class ApiStore {
 public:
  struct Options {
    std::size_t history_limit = 1000;
    std::chrono::milliseconds bookmark_interval{1000};
    // In-stream ERROR event (true) or HTTP 410 (false) for a watch from an expired version.
    bool gone_as_event = false;
  };
  explicit ApiStore(Options options);

  // ---- types ----
  std::vector<ResourceType> Types() const;
  // The served type group/version/resource (nullopt if none): what a request names.
  std::optional<ResourceType> FindType(const std::string& group, const std::string& version,
                                       const std::string& resource) const;
  std::optional<ResourceType> FindTypeByKind(const std::string& api_version, const std::string& kind) const;

  // ---- verbs ----
  ApiResult<Json> Get(const ResourceType& t, const std::string& ns, const std::string& name);
  ApiResult<Json> List(const ResourceType& t, const std::string& ns, const ListOptions& opts);
  ApiResult<WriteResult> Create(const ResourceType& t, const std::string& ns, Json body,
                                const WriteOptions& opts);
  // subresource: "" or "status" (or "scale", handled by the server through Get/Update).
  ApiResult<WriteResult> Update(const ResourceType& t, const std::string& ns, const std::string& name,
                                Json body, const std::string& subresource, const WriteOptions& opts);
  // content_type: application/merge-patch+json, application/json-patch+json,
  // application/strategic-merge-patch+json (built-ins only: handled as a merge patch),
  // application/apply-patch+yaml.
  ApiResult<WriteResult> Patch(const ResourceType& t, const std::string& ns, const std::string& name,
                               const std::string& content_type, const std::string& body,
                               const std::string& subresource, const WriteOptions& opts);
  ApiResult<Json> Delete(const ResourceType& t, const std::string& ns, const std::string& name,
                         const DeleteOptions& del, const WriteOptions& opts);

  // ---- watch ----
  // Validates the version, then calls open() (still under the mutex) to start the stream, replays
  // events after resource_version and registers the watch. Returns its id; a 410 error when the
  // version is too old and gone_as_event is false (with gone_as_event the stream gets an ERROR
  // event and is closed, and the id 0 is returned).
  ApiResult<uint64_t> Watch(const ResourceType& t, const WatchRequest& req,
                            const std::function<std::optional<WatchSink>()>& open);
  void StopWatch(uint64_t id);
  // Sends due bookmarks and closes watches past their deadline; call periodically.
  void TickWatches();

  // ---- test knobs ----
  void ExpireHistory();     // forget all history: any watch/continue from an older version gets 410
  std::size_t DropWatches();  // close every open watch stream; returns how many
  void SetGoneAsEvent(bool v);
  void SetHistoryLimit(std::size_t n);
  uint64_t CurrentResourceVersion() const;
  Json Stats() const;  // {"writes":N,"resource_version":...,"watches":N}

  // ---- controllers (run by the server's background thread) ----
  // Garbage collection by ownerReferences, foreground/orphan finalizers. Returns objects changed.
  int RunGarbageCollector();
  // Deployment -> ReplicaSet -> Pods, and their status. Returns objects changed.
  int RunDeploymentController();
  // One round of the controllers above (GC, then the Deployment controller when `deployments`),
  // repeated while they change something (at most `max_passes`). Both are level-based functions
  // of the stored objects, so a round is skipped when nothing was written since the last round
  // that changed nothing. Returns objects changed.
  int RunControllers(bool deployments, int max_passes = 5);

 private:
  struct Watcher {
    uint64_t id = 0;
    ResourceType type;
    WatchRequest req;
    std::optional<LabelSelector> labels;
    std::optional<FieldSelector> fields;
    WatchSink sink;
    std::chrono::steady_clock::time_point last_bookmark;
  };
  // Shared, immutable: one copy serves the history and every watch.
  struct Event {
    uint64_t rv;
    std::string gr;      // group/resource key
    std::string type;    // ADDED, MODIFIED, DELETED
    std::shared_ptr<const Json> object;  // new object (the last state for DELETED)
    std::shared_ptr<const Json> old;     // previous state for MODIFIED, null otherwise
  };
  // What the controllers need to know about a commit (kept by CommitLocked, so a controller
  // round costs what changed, not what is stored): uids present, dependents by owner uid, and
  // which Deployments / ReplicaSets to look at again.
  void TrackLocked(const std::string& gr, const std::string& key, const std::string& type, const Json* old,
                   const Json& obj);
  // Dependents' keys of owner `uid` in bucket `gr`.
  std::vector<std::string> DependentsLocked(const std::string& uid, const std::string& gr) const;
  using Bucket = std::map<std::string, Json>;  // "ns/name" -> object

  static std::string GrKey(const ResourceType& t) { return t.group + "/" + t.resource; }
  static std::string ObjKey(const std::string& ns, const std::string& name) { return ns + "/" + name; }
  void RegisterBuiltinsLocked();
  void RegisterCrdLocked(const Json& crd);
  void UnregisterCrdLocked(const Json& crd);
  const ResourceType* StorageTypeLocked(const std::string& gr) const;
  const ResourceType* FindTypeLocked(const std::string& group, const std::string& version,
                                     const std::string& resource) const;
  Json RenderLocked(const ResourceType& t, const Json& stored) const;

  ApiResult<WriteResult> CreateLocked(const ResourceType& t, const std::string& ns, Json body,
                                      const WriteOptions& opts, bool internal);
  // Validation + defaulting + bookkeeping shared by create and update; `old` null on create.
  ApiResult<WriteResult> WriteLocked(const ResourceType& t, const Json* old, Json obj,
                                     const std::string& subresource, const WriteOptions& opts,
                                     const std::string& operation, const Json* applied);
  ApiResult<WriteResult> ApplyLocked(const ResourceType& t, const std::string& ns,
                                     const std::string& name, const Json& patch,
                                     const std::string& subresource, const WriteOptions& opts);
  ApiResult<Json> DeleteLocked(const ResourceType& t, const std::string& ns, const std::string& name,
                               const DeleteOptions& del, const WriteOptions& opts);
  void RemoveLocked(const ResourceType& t, const Json& obj);
  void CommitLocked(const ResourceType& t, const std::string& type, Json obj, const Json* old);
  void DispatchLocked(const Event& e);
  std::vector<std::string> ValidateBuiltinLocked(const ResourceType& t, const Json& obj) const;
  Json* FindLocked(const std::string& gr, const std::string& ns, const std::string& name);
  // Internal writes by controllers: full-object update skipping the RV check; no-op if unchanged.
  bool ControllerUpdateLocked(const ResourceType& t, Json obj, const std::string& subresource);
  void ReconcileDeploymentLocked(const std::string& key);
  void ReconcileReplicaSetLocked(const std::string& key);
  // The pod-template hash of a Deployment, cached by uid and generation (the template only
  // changes with the spec, and hashing dumps the whole template).
  std::string TemplateHashLocked(const Json& deploy);

  mutable std::mutex mu_;
  Options options_;
  std::vector<ResourceType> types_;                  // every served group/version/resource
  std::map<std::string, Bucket> objects_;            // GrKey -> objects
  uint64_t rv_ = 1;
  uint64_t history_floor_ = 0;
  uint64_t writes_ = 0;
  uint64_t uid_counter_ = 0;
  std::deque<Event> history_;
  std::map<uint64_t, Watcher> watchers_;
  uint64_t next_watch_id_ = 1;
  // writes_ when a controller round last changed nothing (UINT64_MAX: never): the controllers
  // are skipped while writes_ still equals it.
  uint64_t controllers_idle_at_ = UINT64_MAX;
  std::map<std::string, std::pair<int64_t, std::string>> template_hashes_;  // uid -> (generation, hash)
  // Kept by TrackLocked:
  std::set<std::string> uids_;                                 // uid of every stored object
  std::map<std::string, std::set<std::string>> dependents_;    // owner uid -> "gr|ns/name"
  bool gc_dirty_ = true;  // a delete, a deleting object or an orphan-at-birth since the last GC scan
  std::set<std::string> dirty_deployments_, dirty_replicasets_;  // "ns/name" to reconcile again
};

}  // namespace kvmesh::testapi
