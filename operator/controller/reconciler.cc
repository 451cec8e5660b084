#include "operator/controller/reconciler.h"

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

#include "common/log.h"
#include "operator/controller/diff.h"
#include "operator/controller/finalizer.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

std::string Str(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object()) return "";
    auto it = cur->find(k);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  return cur->is_string() ? cur->get<std::string>() : "";
}

// The child is controlled by the graph with this uid.
bool ControlledBy(const json& child, const GraphMeta& meta) {
  const json* refs = nullptr;
  if (child.contains("metadata") && child["metadata"].contains("ownerReferences")) {
    refs = &child["metadata"]["ownerReferences"];
  }
  if (refs == nullptr || !refs->is_array()) return false;
  for (const json& r : *refs) {
    if (r.value("controller", false) && Str(r, {"kind"}) == graph::kKind &&
        (meta.uid.empty() ? Str(r, {"name"}) == meta.name : Str(r, {"uid"}) == meta.uid)) {
      return true;
    }
  }
  return false;
}

bool HasFinalizer(const GraphMeta& meta) {
  return std::find(meta.finalizers.begin(), meta.finalizers.end(), kFinalizer) != meta.finalizers.end();
}

int64_t Replicas(const json& deployment) {
  if (!deployment.contains("spec") || !deployment["spec"].contains("replicas")) return -1;
  const json& r = deployment["spec"]["replicas"];
  return r.is_number_integer() ? r.get<int64_t>() : -1;
}

std::string ConditionStatus(const json& status, const char* type) {
  json c = FindCondition(status, type);
  return c.is_object() ? Str(c, {"status"}) : "";
}

}  // namespace

kube::ResourceRef ChildResource(const std::string& resource) {
  if (resource == "configmaps") return kube::ConfigMaps();
  if (resource == "services") return kube::Services();
  if (resource == "deployments") return kube::Deployments();
  if (resource == "poddisruptionbudgets") return kube::PodDisruptionBudgets();
  if (resource == "pods") return kube::Pods();
  return kube::Events();
}

Reconciler::Reconciler(kube::KubeClient& client, ReconcilerOptions options)
    : client_(client),
      owned_reader_(std::make_unique<ClientObjectReader>(client)),
      reader_(owned_reader_.get()),
      options_(std::move(options)) {}

Reconciler::Reconciler(kube::KubeClient& client, ObjectReader& reader, ReconcilerOptions options)
    : client_(client), reader_(&reader), options_(std::move(options)) {}

ReconcilerStats Reconciler::stats() const {
  ReconcilerStats s;
  s.reconciles_ok = counters_.ok.load();
  s.reconciles_requeue = counters_.requeue.load();
  s.reconciles_error = counters_.error.load();
  s.applies = counters_.applies.load();
  s.deletes = counters_.deletes.load();
  s.status_updates = counters_.status_updates.load();
  s.finalizer_updates = counters_.finalizer_updates.load();
  s.events = counters_.events.load();
  s.conflicts = counters_.conflicts.load();
  s.stale_reads = counters_.stale_reads.load();
  return s;
}

ReconcileResult Reconciler::Reconcile(const std::string& key) {
  size_t slash = key.find('/');
  std::string ns = slash == std::string::npos ? "default" : key.substr(0, slash);
  std::string name = slash == std::string::npos ? key : key.substr(slash + 1);
  ReconcileResult r;
  if (name.empty() || ns.empty()) {
    r = {false, std::chrono::milliseconds(0), InvalidArgumentError("bad key " + key + ", want namespace/name")};
  } else {
    r = ReconcileGraph(ns, name);
  }
  if (!r.ok) {
    counters_.error++;
    KVMESH_LOG_WARN("operator", "reconcile failed", {"key", key}, {"error", r.error.ToString()});
  } else if (r.requeue_after.count() > 0) {
    counters_.requeue++;
  } else {
    counters_.ok++;
  }
  return r;
}

ReconcileResult Reconciler::ReconcileGraph(const std::string& ns, const std::string& name) {
  auto got = reader_->Get(kube::InferenceGraphs(), ns, name);
  if (!got.ok()) {
    if (kube::IsNotFound(got.status())) return {};  // deleted: children go by owner references
    return {false, std::chrono::milliseconds(0), got.status()};
  }
  return ReconcileObject(ns, name, std::move(*got), /*fresh=*/!reader_->IsCache());
}

ReconcileResult Reconciler::ReconcileObject(const std::string& ns, const std::string& name, json object,
                                            bool fresh) {
  const kube::ResourceRef graphs = kube::InferenceGraphs();
  auto meta_or = ReadGraphMeta(object);
  if (!meta_or.ok()) return {false, std::chrono::milliseconds(0), meta_or.status()};
  GraphMeta meta = *meta_or;
  if (meta.namespace_.empty()) meta.namespace_ = ns;

  // Before the first write of a pass that read the graph from a cache: is the cached graph the
  // API server's current one? nullopt = yes, go on; otherwise the pass ends with that result
  // (graph gone, read failed, or the pass redone from the newer live graph).
  auto confirm_graph = [&]() -> std::optional<ReconcileResult> {
    if (fresh) return std::nullopt;
    auto live = client_.Get(graphs, ns, name);
    if (!live.ok()) {
      if (kube::IsNotFound(live.status())) return ReconcileResult{};
      return ReconcileResult{false, std::chrono::milliseconds(0), live.status()};
    }
    fresh = true;
    if (Str(*live, {"metadata", "resourceVersion"}) == meta.resource_version) return std::nullopt;
    counters_.stale_reads++;
    return ReconcileObject(ns, name, std::move(*live), /*fresh=*/true);
  };

  if (!meta.deletion_timestamp.empty()) {
    if (auto stop = confirm_graph()) return *stop;
    return Finalize(std::move(object), meta);
  }

  auto parsed = ReadOwnedGraph(object);
  if (!parsed.ok()) {
    const json previous = object.contains("status") ? object["status"] : json();
    json status = InvalidSpecStatus(meta, parsed.status().message(), previous, options_.clock());
    if (status != previous) {
      if (auto stop = confirm_graph()) return *stop;
    }
    return HandleInvalidSpec(std::move(object), meta, parsed.status(), status);
  }
  OwnedGraph og = std::move(*parsed);
  og.meta.namespace_ = meta.namespace_;
  if (options_.desired_replicas) {
    // Pools the planner owns take its replicas (like a Deployment under an HPA), within the
    // spec's current limits.
    for (auto [pool, spec] : {std::pair<const char*, graph::PoolSpec*>{"prefill", &og.graph.spec.prefill},
                              {"decode", &og.graph.spec.decode}}) {
      if (spec->replicas <= 0) continue;  // disabled pool
      const int32_t lo = std::max<int32_t>(1, spec->min_replicas);
      const int32_t hi = spec->max_replicas > 0 ? spec->max_replicas : spec->replicas;
      if (hi <= lo) continue;  // does not autoscale
      if (std::optional<int32_t> want = options_.desired_replicas(og.meta, pool)) {
        spec->replicas = std::clamp(*want, lo, hi);
      }
    }
  }

  if (!HasFinalizer(og.meta)) {
    if (auto stop = confirm_graph()) return *stop;
    auto updated = UpdateFinalizers(std::move(object), /*add=*/true);
    if (!updated.ok()) return {false, std::chrono::milliseconds(0), updated.status()};
    object = std::move(*updated);
    auto m = ReadGraphMeta(object);
    if (m.ok()) {
      og.meta.resource_version = m->resource_version;
      og.meta.finalizers = m->finalizers;
      if (!m->deletion_timestamp.empty()) return Finalize(std::move(object), og.meta);
    }
  }

  auto pods = reader_->List(kube::Pods(), ns, std::string(kGraphLabel) + "=" + name);
  if (!pods.ok()) return {false, std::chrono::milliseconds(0), pods.status()};

  const DesiredObjects desired = BuildDesired(og, options_.settings, ReadyWorkerPods(*pods));
  std::vector<json> deployments;
  std::string write_error;
  std::vector<std::string> created;
  bool child_deleting = false;
  std::set<std::pair<std::string, std::string>> desired_keys;
  auto add_error = [&](const std::string& e) { write_error += (write_error.empty() ? "" : "; ") + e; };

  // What one child needs, judged on its current state (nullopt = absent).
  enum class Verdict { kForeign, kDeleting, kUpToDate, kApply };
  auto judge = [&](const std::optional<json>& live, const json& want) {
    if (!live) return Verdict::kApply;
    if (!ControlledBy(*live, og.meta)) return Verdict::kForeign;
    if (BeingDeleted(*live)) return Verdict::kDeleting;  // recreated once it is gone
    return NeedsApply(want, *live) ? Verdict::kApply : Verdict::kUpToDate;
  };
  // The child as read; false (with the error added) when it could not be read.
  auto read_child = [&](ObjectReader& from, const kube::ResourceRef& ref, const std::string& kind,
                        const std::string& child, std::optional<json>& out) {
    auto got = from.Get(ref, ns, child);
    out.reset();
    if (got.ok()) {
      out = std::move(*got);
    } else if (!kube::IsNotFound(got.status())) {
      add_error("read " + kind + " " + child + ": " + got.status().message());
      return false;
    }
    return true;
  };
  ClientObjectReader api(client_);

  for (const DesiredObject& d : desired) {
    const std::string child = Str(d.object, {"metadata", "name"});
    const std::string kind = Str(d.object, {"kind"});
    desired_keys.emplace(d.resource, child);
    const kube::ResourceRef ref = ChildResource(d.resource);
    std::optional<json> live;
    if (!read_child(*reader_, ref, kind, child, live)) continue;
    Verdict verdict = judge(live, d.object);
    if (verdict == Verdict::kApply && reader_->IsCache()) {
      // Decide the write on the API server's copy: the cache may lag our own last write.
      if (!read_child(api, ref, kind, child, live)) continue;
      verdict = judge(live, d.object);
      if (verdict != Verdict::kApply) counters_.stale_reads++;
    }
    if (verdict == Verdict::kForeign) {
      add_error(kind + " " + child + " exists and is not controlled by this InferenceGraph");
      continue;
    }
    if (verdict == Verdict::kDeleting) {
      child_deleting = true;
      continue;
    }
    if (verdict == Verdict::kUpToDate) {
      if (d.resource == "deployments") deployments.push_back(std::move(*live));
      continue;
    }
    if (auto stop = confirm_graph()) return *stop;
    const bool exists = live.has_value();
    auto applied = client_.Patch(ref, ns, child, kube::PatchType::kApply, d.object, kube::PatchOptions{});
    if (!applied.ok() && !exists && kube::IsNotFound(applied.status())) {
      applied = client_.Create(ref, ns, d.object);  // a server that does not create on apply
    }
    if (!applied.ok()) {
      if (kube::IsConflict(applied.status())) counters_.conflicts++;
      add_error("apply " + kind + " " + child + ": " + applied.status().message());
      continue;
    }
    counters_.applies++;
    if (!exists) {
      created.push_back(kind + " " + child);
    } else if (d.resource == "deployments") {
      int64_t before = Replicas(*live), after = Replicas(d.object);
      if (before >= 0 && before != after) {
        RecordEvent(og.meta, "Normal", "ScaledPool",
                    Str(d.object, {"metadata", "labels", kComponentLabel}) + " pool scaled from " +
                        std::to_string(before) + " to " + std::to_string(after) + " replicas");
      }
    }
    if (d.resource == "deployments") deployments.push_back(std::move(*applied));
  }
  if (!created.empty()) {
    std::string msg = "created";
    for (size_t i = 0; i < created.size(); ++i) msg += (i ? ", " : " ") + created[i];
    RecordEvent(og.meta, "Normal", "Created", msg);
  }

  // Owned children that are no longer desired (a PDB after scaling to 1, the prefill pool after
  // disaggregation was turned off).
  for (const auto& [resource, child] : AllChildKeys(name)) {
    if (desired_keys.count({resource, child}) != 0) continue;
    const kube::ResourceRef ref = ChildResource(resource);
    std::optional<json> live;
    if (!read_child(*reader_, ref, resource, child, live) || !live) continue;
    if (!ControlledBy(*live, og.meta) || BeingDeleted(*live)) continue;
    if (reader_->IsCache()) {
      if (!read_child(api, ref, resource, child, live)) continue;
      if (!live || !ControlledBy(*live, og.meta) || BeingDeleted(*live)) {
        counters_.stale_reads++;
        continue;
      }
    }
    if (auto stop = confirm_graph()) return *stop;
    Status del = client_.Delete(ref, ns, child);
    if (kube::IsNotFound(del)) continue;  // gone meanwhile: nothing deleted, nothing to report
    if (!del.ok()) {
      add_error("delete " + resource + "/" + child + ": " + del.message());
      continue;
    }
    counters_.deletes++;
    RecordEvent(og.meta, "Normal", "Deleted",
                "deleted " + Str(*live, {"kind"}) + " " + child + " (no longer part of the graph)");
  }

  // Status.
  const json previous = object.contains("status") ? object["status"] : json();
  StatusInput in;
  in.graph = &og;
  in.deployments = std::move(deployments);
  in.ready = ReadyPodCounts(*pods);
  in.previous = previous;
  in.write_error = write_error;
  in.now = options_.clock();
  StatusOptions so;
  so.degraded_grace = options_.degraded_grace;
  so.settings = options_.settings;
  StatusResult computed = ComputeStatus(in, so);
  if (computed.status != previous) {
    if (auto stop = confirm_graph()) return *stop;
  }
  Status ws = WriteStatus(std::move(object), computed.status);
  if (!ws.ok()) return {false, std::chrono::milliseconds(0), ws};

  const std::string avail_before = ConditionStatus(previous, "Available");
  const std::string avail_now = ConditionStatus(computed.status, "Available");
  if (avail_now == "True" && avail_before != "True") {
    RecordEvent(og.meta, "Normal", "Available", Str(FindCondition(computed.status, "Available"), {"message"}));
  }
  json deg_before = FindCondition(previous, "Degraded");
  json deg_now = FindCondition(computed.status, "Degraded");
  if (Str(deg_now, {"status"}) == "True" &&
      (Str(deg_before, {"status"}) != "True" || Str(deg_before, {"reason"}) != Str(deg_now, {"reason"}))) {
    RecordEvent(og.meta, "Warning", "Degraded", Str(deg_now, {"message"}));
  }

  if (!write_error.empty()) {
    return {false, std::chrono::milliseconds(0), UnavailableError(write_error)};
  }
  ReconcileResult result;
  if (computed.recheck_after) {
    result.requeue_after = std::chrono::duration_cast<std::chrono::milliseconds>(*computed.recheck_after);
  }
  if (child_deleting) result.requeue_after = options_.drain_poll;
  return result;
}

ReconcileResult Reconciler::HandleInvalidSpec(json object, const GraphMeta& meta, const Status& error,
                                              const json& status) {
  const json previous = object.contains("status") ? object["status"] : json();
  Status ws = WriteStatus(std::move(object), status);
  if (!ws.ok()) return {false, std::chrono::milliseconds(0), ws};
  json before = FindCondition(previous, "Degraded");
  if (Str(before, {"reason"}) != "InvalidSpec" || Str(before, {"message"}) != error.message()) {
    RecordEvent(meta, "Warning", "InvalidSpec", error.message());
  }
  // Terminal until the spec changes (the watch brings a new event then): no retry.
  return {};
}

ReconcileResult Reconciler::Finalize(json object, const GraphMeta& meta) {
  if (!HasFinalizer(meta)) return {};  // not ours to drain (or already done)
  const std::string& ns = meta.namespace_;
  const std::string& name = meta.name;
  const SystemTime now = options_.clock();
  const SystemTime started = ParseRfc3339(meta.deletion_timestamp).value_or(now);
  const bool timed_out = now - started >= options_.drain_timeout;

  // 1. The router stops routing: an empty workers file.
  const std::string empty_workers = WorkersFileYaml({}, options_.settings);
  auto cm = client_.Get(kube::ConfigMaps(), ns, ChildName(name, "router"));
  if (cm.ok() && ControlledBy(*cm, meta) && !BeingDeleted(*cm) &&
      Str(*cm, {"data", "workers.yaml"}) != empty_workers) {
    json patch = {{"data", {{"workers.yaml", empty_workers}}}};
    auto r = client_.Patch(kube::ConfigMaps(), ns, ChildName(name, "router"), kube::PatchType::kMerge, patch);
    if (!r.ok() && !kube::IsNotFound(r.status())) return {false, std::chrono::milliseconds(0), r.status()};
    if (r.ok()) counters_.applies++;
  } else if (!cm.ok() && !kube::IsNotFound(cm.status())) {
    return {false, std::chrono::milliseconds(0), cm.status()};
  }
  // 2. Worker pools to 0: each agent gets SIGTERM, turns /ready 503 and drains in-flight requests.
  for (const char* pool : {"prefill", "decode"}) {
    auto d = client_.Get(kube::Deployments(), ns, ChildName(name, pool));
    if (!d.ok()) {
      if (!kube::IsNotFound(d.status())) return {false, std::chrono::milliseconds(0), d.status()};
      continue;
    }
    if (!ControlledBy(*d, meta) || BeingDeleted(*d) || Replicas(*d) == 0) continue;
    auto r = client_.Patch(kube::Deployments(), ns, ChildName(name, pool), kube::PatchType::kMerge,
                           json{{"spec", {{"replicas", 0}}}});
    if (!r.ok() && !kube::IsNotFound(r.status())) return {false, std::chrono::milliseconds(0), r.status()};
    if (r.ok()) counters_.applies++;
  }
  // 3. Wait for the worker pods to go (bounded by drain_timeout from deletionTimestamp).
  kube::ListOptions opts;
  opts.label_selector = std::string(kGraphLabel) + "=" + name + "," + kComponentLabel + " in (prefill,decode)";
  auto pods = client_.List(kube::Pods(), ns, opts);
  if (!pods.ok()) return {false, std::chrono::milliseconds(0), pods.status()};
  const json previous = object.contains("status") ? object["status"] : json();
  if (!pods->items.empty() && !timed_out) {
    std::string msg = "draining: waiting for " + std::to_string(pods->items.size()) + " worker pod(s) to stop";
    json status = DeletingStatus(meta, msg, previous, now);
    if (Str(previous, {"phase"}) != "Deleting") {
      RecordEvent(meta, "Normal", "Draining", "router stopped routing; worker pools scaled to 0");
    }
    Status ws = WriteStatus(std::move(object), status);
    if (!ws.ok()) return {false, std::chrono::milliseconds(0), ws};
    return {true, options_.drain_poll, Status::Ok()};
  }
  // 4. Delete the children (the garbage collector would too; this does not depend on it).
  int deleted = 0;
  for (const auto& [resource, child] : AllChildKeys(name)) {
    const kube::ResourceRef ref = ChildResource(resource);
    auto live = client_.Get(ref, ns, child);
    if (!live.ok()) {
      if (!kube::IsNotFound(live.status())) return {false, std::chrono::milliseconds(0), live.status()};
      continue;
    }
    if (!ControlledBy(*live, meta) || BeingDeleted(*live)) continue;
    Status del = client_.Delete(ref, ns, child);
    if (!del.ok() && !kube::IsNotFound(del)) return {false, std::chrono::milliseconds(0), del};
    counters_.deletes++;
    ++deleted;
  }
  RecordEvent(meta, "Normal", "Deleted",
              std::string(timed_out && !pods->items.empty() ? "drain timed out with " + std::to_string(pods->items.size()) +
                                                                  " worker pod(s) left; "
                                                            : "drained; ") +
                  "deleted " + std::to_string(deleted) + " child object(s); removing finalizer " + kFinalizer);
  // 5. Let the graph go.
  auto updated = UpdateFinalizers(std::move(object), /*add=*/false);
  if (!updated.ok() && !kube::IsNotFound(updated.status())) {
    return {false, std::chrono::milliseconds(0), updated.status()};
  }
  return {};
}

StatusOr<json> Reconciler::UpdateFinalizers(json object, bool add) {
  auto r = UpdateFinalizer(client_, kube::InferenceGraphs(), std::move(object), kFinalizer, add);
  if (!r.ok()) return r.status();
  counters_.conflicts += r->conflicts;
  if (r->written) counters_.finalizer_updates++;
  return std::move(r->object);
}

Status Reconciler::WriteStatus(json object, json status) {
  for (int attempt = 0;; ++attempt) {
    if (object.contains("status") && object["status"] == status) return Status::Ok();
    object["status"] = status;
    auto r = client_.UpdateStatus(kube::InferenceGraphs(), object);
    if (r.ok()) {
      counters_.status_updates++;
      return Status::Ok();
    }
    if (kube::IsNotFound(r.status())) return Status::Ok();  // the graph is gone
    if (!kube::IsConflict(r.status()) || attempt >= 1) return r.status();
    counters_.conflicts++;
    auto fresh = client_.Get(kube::InferenceGraphs(), Str(object, {"metadata", "namespace"}),
                             Str(object, {"metadata", "name"}));
    if (!fresh.ok()) return kube::IsNotFound(fresh.status()) ? Status::Ok() : fresh.status();
    object = std::move(*fresh);
    // The conflict may have been the planner's write of status.plannerDecisions (a field this
    // reconciler does not own): keep the live value rather than the one `status` was built on.
    if (status.is_object()) {
      if (object.contains("status") && object["status"].is_object() &&
          object["status"].contains("plannerDecisions")) {
        status["plannerDecisions"] = object["status"]["plannerDecisions"];
      } else {
        status.erase("plannerDecisions");
      }
    }
  }
}

void Reconciler::RecordEvent(const GraphMeta& meta, const std::string& type, const std::string& reason,
                             const std::string& message) {
  const SystemTime now = options_.clock();
  const std::string ts = FormatRfc3339(now);
  const uint64_t seq = event_seq_.fetch_add(1);
  const std::string suffix =
      Fnv1aHex(meta.uid + "/" + reason + "/" + std::to_string(now.time_since_epoch().count()) + "/" +
               std::to_string(seq) + "/" + options_.instance);
  json ev = {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"name", meta.name + "." + suffix}, {"namespace", meta.namespace_}}},
             {"involvedObject",
              {{"apiVersion", graph::kApiVersion},
               {"kind", graph::kKind},
               {"name", meta.name},
               {"namespace", meta.namespace_},
               {"uid", meta.uid}}},
             {"reason", reason},
             {"message", message.size() > 1024 ? message.substr(0, 1021) + "..." : message},
             {"type", type},
             {"source", {{"component", kFieldManager}}},
             {"reportingComponent", kFieldManager},
             {"reportingInstance", options_.instance},
             {"firstTimestamp", ts},
             {"lastTimestamp", ts},
             {"count", 1}};
  auto r = client_.Create(kube::Events(), meta.namespace_, ev);
  if (r.ok()) {
    counters_.events++;
  } else {
    KVMESH_LOG_WARN("operator", "could not record event",
                    {"graph", meta.namespace_ + "/" + meta.name}, {"reason", reason},
                    {"error", r.status().ToString()});
  }
}

}  // namespace kvmesh::controller
