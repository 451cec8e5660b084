// Informer: a local, eventually consistent copy of one kind of object (one ResourceRef, one
// namespace or all, one label selector), kept by LIST then WATCH, with change handlers.
//
// Protocol (KUBERNETES-API.md "List and watch"):
//   - LIST, replace the cache, then WATCH from the list's resourceVersion with bookmarks;
//   - every event (bookmarks included) advances the last resourceVersion seen; when a stream
//     ends (server timeout, dropped connection) the informer re-watches from that version;
//   - on 410 Gone (the HTTP status of the watch, or an in-stream ERROR event with code 410) it
//     never re-watches from the expired version: it LISTs again, diffs the new list against the
//     cache (synthesizing add/update/delete for what changed while it was blind) and watches from
//     the new list's version;
//   - other errors (connection refused, 5xx after the client's retries) back off exponentially
//     (min_backoff doubling to max_backoff) and retry.
// Indexes (client-go's Indexers): AddIndex(name, fn) before Start; fn gives the index values of
// an object; ByIndex(name, value) returns the cached objects with that value. Kept in step with
// the cache under the same lock, so ByIndex never sees an object Get would not.
// Invariants: handlers run on the informer's own thread, one at a time, after the cache has been
// changed (a handler sees the new state through Get/List/ByIndex). An update whose resourceVersion did not
// change (relist of an unchanged object) calls no handler. Stop() returns within about a second
// (the watch polls its stop flag) unless a LIST is in flight, bounded by the client's timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "operator/kube/kube_client.h"

namespace kvmesh::kube {

struct InformerOptions {
  ResourceRef resource;
  std::string ns;              // "" = all namespaces
  std::string label_selector;  // "" = everything
  int watch_timeout_seconds = 300;
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{10000};
};

struct InformerHandlers {
  std::function<void(const nlohmann::json& obj)> on_add;
  std::function<void(const nlohmann::json& old_obj, const nlohmann::json& new_obj)> on_update;
  std::function<void(const nlohmann::json& last_known)> on_delete;
};

class Informer {
 public:
  // `client` must outlive the informer.
  Informer(KubeClient* client, InformerOptions options);
  ~Informer();  // Stop()
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Only before Start().
  void AddHandlers(InformerHandlers handlers);
  using IndexFunc = std::function<std::vector<std::string>(const nlohmann::json& obj)>;
  // Only before Start(). A second index of the same name replaces the first.
  void AddIndex(const std::string& name, IndexFunc fn);
  // Starts the thread. FailedPrecondition if already started.
  Status Start();
  // Stops the thread and waits for it. Idempotent. The cache stays readable.
  void Stop();

  // True once the first LIST has been applied.
  bool HasSynced() const { return synced_.load(); }
  // Waits until HasSynced() or the timeout; returns HasSynced().
  bool WaitForSync(std::chrono::milliseconds timeout) const;

  // "namespace/name" (or "name" for cluster-scoped objects).
  static std::string KeyOf(const nlohmann::json& obj);
  std::optional<nlohmann::json> Get(const std::string& key) const;
  std::vector<nlohmann::json> List() const;
  std::vector<std::string> ListKeys() const;
  bool HasIndex(const std::string& name) const { return indexes_.count(name) != 0; }
  // The cached objects whose index `name` has `value`, by key order; empty for an unknown index.
  std::vector<nlohmann::json> ByIndex(const std::string& name, const std::string& value) const;

  // Counters for metrics: watches started again after a stream ended or failed, and LISTs after
  // the first one (410 recoveries).
  uint64_t watch_restarts() const { return watch_restarts_.load(); }
  uint64_t relists() const { return relists_.load(); }
  // The last resourceVersion seen (list, event or bookmark); "" before the first list.
  std::string last_resource_version() const;

 private:
  void Run();
  // Replaces the cache with a fresh list, calling handlers for the differences.
  void Replace(const std::vector<nlohmann::json>& items);
  void Apply(const WatchEvent& event);
  void SleepFor(std::chrono::milliseconds d);
  // Index bookkeeping for a cache change of `key` (old or new may be null). mu_ held.
  void ReindexLocked(const std::string& key, const nlohmann::json* old_obj, const nlohmann::json* new_obj);

  struct Index {
    IndexFunc fn;
    std::map<std::string, std::set<std::string>> keys;  // value -> cache keys; guarded by mu_
  };

  KubeClient* const client_;
  const InformerOptions options_;
  std::vector<InformerHandlers> handlers_;

  mutable std::mutex mu_;  // guards cache_ and last_rv_
  mutable std::condition_variable cv_;
  std::map<std::string, nlohmann::json> cache_;
  std::map<std::string, Index> indexes_;  // the set of names is fixed at Start
  std::string last_rv_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::atomic<uint64_t> watch_restarts_{0};
  std::atomic<uint64_t> relists_{0};
  std::thread thread_;
};

}  // namespace kvmesh::kube
