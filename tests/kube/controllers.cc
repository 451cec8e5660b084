// The test cluster's built-in controllers (members of ApiStore): garbage collection by
// ownerReferences and a minimal Deployment -> ReplicaSet -> Pod controller.
#include <algorithm>
#include <cstdio>
#include <random>

#include "tests/kube/api_store.h"

namespace kvmesh::testapi {
namespace {

std::string Meta(const Json& obj, const char* field) {
  const Json& m = obj["metadata"];
  return m.contains(field) && m[field].is_string() ? m[field].get<std::string>() : "";
}

bool PodReady(const Json& pod) {
  if (!pod.contains("status") || !pod["status"].contains("conditions")) return false;
  for (const Json& c : pod["status"]["conditions"]) {
    if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
  }
  return false;
}

bool OwnedBy(const Json& obj, const std::string& uid) {
  if (!obj["metadata"].contains("ownerReferences")) return false;
  for (const Json& r : obj["metadata"]["ownerReferences"]) {
    if (r.value("uid", "") == uid) return true;
  }
  return false;
}

bool HasFinalizer(const Json& obj, const std::string& f) {
  if (!obj["metadata"].contains("finalizers")) return false;
  for (const Json& x : obj["metadata"]["finalizers"]) if (x == f) return true;
  return false;
}

Json WithoutFinalizer(Json obj, const std::string& f) {
  Json next = Json::array();
  for (const Json& x : obj["metadata"]["finalizers"]) if (x != f) next.push_back(x);
  obj["metadata"]["finalizers"] = next;
  return obj;
}

std::string TemplateHash(const Json& tmpl) {
  uint32_t h = 2166136261u;
  for (char c : tmpl.dump()) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  static const char kAlnum[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string out;
  for (int i = 0; i < 9; ++i) {
    out += kAlnum[h % 27];
    h /= 27;
    if (h == 0) h = 7919u * (i + 1);
  }
  return out;
}

Json ControllerRef(const std::string& api_version, const std::string& kind, const Json& owner) {
  return {{"apiVersion", api_version}, {"kind", kind}, {"name", Meta(owner, "name")},
          {"uid", Meta(owner, "uid")}, {"controller", true}, {"blockOwnerDeletion", true}};
}

Json Condition(const Json* old_conditions, const std::string& type, bool status, const std::string& reason,
               const std::string& message) {
  const std::string s = status ? "True" : "False";
  if (old_conditions != nullptr && old_conditions->is_array()) {
    for (const Json& c : *old_conditions) {
      if (c.value("type", "") == type && c.value("status", "") == s && c.value("reason", "") == reason) return c;
    }
  }
  const std::string now = FormatRfc3339(std::chrono::system_clock::now());
  return {{"type", type}, {"status", s}, {"reason", reason}, {"message", message},
          {"lastTransitionTime", now}, {"lastUpdateTime", now}};
}

}  // namespace

bool ApiStore::ControllerUpdateLocked(const ResourceType& t, Json obj, const std::string& subresource) {
  Json* cur = FindLocked(GrKey(t), t.namespaced ? Meta(obj, "namespace") : "", Meta(obj, "name"));
  if (cur == nullptr) return false;
  Json old = *cur;
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  auto r = WriteLocked(t, &old, std::move(obj), subresource, opts, "Update", nullptr);
  if (!r.ok()) {
    std::fprintf(stderr, "kvmesh-test-apiserver: controller write of %s %s failed: %s\n", t.resource.c_str(),
                 Meta(old, "name").c_str(), r.error().message.c_str());
    return false;
  }
  return Meta(r.value().object, "resourceVersion") != Meta(old, "resourceVersion");
}

int ApiStore::RunGarbageCollector() {
  std::lock_guard<std::mutex> lock(mu_);
  int changed = 0;
  std::map<std::string, bool> uids;  // uid -> present
  struct Item {
    const ResourceType* type;
    Json obj;
  };
  std::vector<Item> all;
  for (const auto& [gr, bucket] : objects_) {
    const ResourceType* t = StorageTypeLocked(gr);
    if (t == nullptr) continue;
    for (const auto& [k, o] : bucket) {
      uids[Meta(o, "uid")] = true;
      all.push_back({t, o});
    }
  }
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  for (const Item& owner : all) {
    if (!owner.obj["metadata"].contains("deletionTimestamp")) continue;
    const std::string uid = Meta(owner.obj, "uid");
    const bool orphan = HasFinalizer(owner.obj, "orphan");
    const bool foreground = HasFinalizer(owner.obj, "foregroundDeletion");
    if (!orphan && !foreground) continue;
    int children = 0;
    for (const Item& child : all) {
      if (!OwnedBy(child.obj, uid)) continue;
      ++children;
      if (orphan) {
        Json c = child.obj;
        Json refs = Json::array();
        for (const Json& r : c["metadata"]["ownerReferences"]) if (r.value("uid", "") != uid) refs.push_back(r);
        if (refs.empty()) c["metadata"].erase("ownerReferences");
        else c["metadata"]["ownerReferences"] = refs;
        changed += ControllerUpdateLocked(*child.type, c, "") ? 1 : 0;
      } else if (!child.obj["metadata"].contains("deletionTimestamp")) {
        DeleteOptions del;
        del.propagation_policy = "Foreground";
        changed += DeleteLocked(*child.type, Meta(child.obj, "namespace"), Meta(child.obj, "name"), del, opts).ok();
      }
    }
    if (orphan || children == 0) {
      changed += ControllerUpdateLocked(*owner.type, WithoutFinalizer(owner.obj, orphan ? "orphan" : "foregroundDeletion"), "") ? 1 : 0;
    }
  }
  // Dangling dependents: every owner gone -> delete (background).
  for (const Item& child : all) {
    const Json& m = child.obj["metadata"];
    if (!m.contains("ownerReferences") || !m["ownerReferences"].is_array() || m["ownerReferences"].empty()) continue;
    if (m.contains("deletionTimestamp")) continue;
    bool any_owner = false;
    for (const Json& r : m["ownerReferences"]) any_owner = any_owner || uids.count(r.value("uid", "")) > 0;
    if (any_owner) continue;
    if (FindLocked(GrKey(*child.type), Meta(child.obj, "namespace"), Meta(child.obj, "name")) == nullptr) continue;
    changed += DeleteLocked(*child.type, Meta(child.obj, "namespace"), Meta(child.obj, "name"), {}, opts).ok();
  }
  return changed;
}

int ApiStore::RunDeploymentController() {
  std::lock_guard<std::mutex> lock(mu_);
  int before = static_cast<int>(writes_);
  std::vector<Json> deployments, replicasets;
  for (const auto& [k, o] : objects_["apps/deployments"]) deployments.push_back(o);
  for (const Json& d : deployments) {
    if (!d["metadata"].contains("deletionTimestamp")) ReconcileDeploymentLocked(d);
  }
  for (const auto& [k, o] : objects_["apps/replicasets"]) replicasets.push_back(o);
  for (const Json& rs : replicasets) {
    if (!rs["metadata"].contains("deletionTimestamp")) ReconcileReplicaSetLocked(rs);
  }
  return static_cast<int>(writes_) - before;
}

void ApiStore::ReconcileDeploymentLocked(const Json& deploy) {
  const ResourceType* rs_type = StorageTypeLocked("apps/replicasets");
  const ResourceType* d_type = StorageTypeLocked("apps/deployments");
  if (rs_type == nullptr || d_type == nullptr) return;
  const std::string ns = Meta(deploy, "namespace");
  const std::string uid = Meta(deploy, "uid");
  const Json spec = deploy.value("spec", Json::object());
  const int64_t desired = spec.value("replicas", int64_t{1});
  Json tmpl = spec.value("template", Json::object());
  const std::string hash = TemplateHash(tmpl);
  const std::string rs_name = Meta(deploy, "name") + "-" + hash;
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  // Current ReplicaSet: create or scale; older ones scale to zero.
  bool have_current = false;
  std::vector<Json> owned;
  for (const auto& [k, rs] : objects_["apps/replicasets"]) {
    if (Meta(rs, "namespace") == ns && OwnedBy(rs, uid)) owned.push_back(rs);
  }
  for (Json rs : owned) {
    const bool current = Meta(rs, "name") == rs_name;
    have_current = have_current || current;
    const int64_t want = current ? desired : 0;
    if (rs["spec"].value("replicas", int64_t{1}) != want) {
      rs["spec"]["replicas"] = want;
      ControllerUpdateLocked(*rs_type, rs, "");
    }
  }
  if (!have_current) {
    Json labels = tmpl.contains("metadata") ? tmpl["metadata"].value("labels", Json::object()) : Json::object();
    labels["pod-template-hash"] = hash;
    Json selector = spec.value("selector", Json::object());
    selector["matchLabels"]["pod-template-hash"] = hash;
    Json rs_tmpl = tmpl;
    rs_tmpl["metadata"]["labels"] = labels;
    Json rs = {{"apiVersion", "apps/v1"}, {"kind", "ReplicaSet"},
               {"metadata", {{"name", rs_name}, {"namespace", ns}, {"labels", labels},
                             {"ownerReferences", Json::array({ControllerRef("apps/v1", "Deployment", deploy)})}}},
               {"spec", {{"replicas", desired}, {"selector", selector}, {"template", rs_tmpl}}}};
    auto r = CreateLocked(*rs_type, ns, rs, opts, true);
    if (!r.ok()) std::fprintf(stderr, "kvmesh-test-apiserver: create replicaset %s: %s\n", rs_name.c_str(), r.error().message.c_str());
  }
  // Status from the pods of all owned ReplicaSets.
  int64_t replicas = 0, updated = 0, ready = 0;
  for (const auto& [k, rs] : objects_["apps/replicasets"]) {
    if (Meta(rs, "namespace") != ns || !OwnedBy(rs, uid)) continue;
    for (const auto& [pk, pod] : objects_["/pods"]) {
      if (Meta(pod, "namespace") != ns || !OwnedBy(pod, Meta(rs, "uid")) || pod["metadata"].contains("deletionTimestamp")) continue;
      ++replicas;
      if (Meta(rs, "name") == rs_name) ++updated;
      if (PodReady(pod)) ++ready;
    }
  }
  Json status = deploy.value("status", Json::object());
  const Json* old_conds = status.contains("conditions") ? &status["conditions"] : nullptr;
  Json next = {{"observedGeneration", deploy["metadata"].value("generation", int64_t{1})},
               {"replicas", replicas}, {"updatedReplicas", updated}, {"readyReplicas", ready},
               {"availableReplicas", ready}};
  if (desired - ready > 0) next["unavailableReplicas"] = desired - ready;
  Json conds = Json::array();
  conds.push_back(Condition(old_conds, "Available", ready >= desired,
                            ready >= desired ? "MinimumReplicasAvailable" : "MinimumReplicasUnavailable",
                            ready >= desired ? "Deployment has minimum availability." : "Deployment does not have minimum availability."));
  const bool done = updated == desired && ready >= desired && replicas == desired;
  conds.push_back(Condition(old_conds, "Progressing", true, done ? "NewReplicaSetAvailable" : "ReplicaSetUpdated",
                            "ReplicaSet \"" + rs_name + "\" " + (done ? "has successfully progressed." : "is progressing.")));
  next["conditions"] = conds;
  if (next != status) {
    Json d = deploy;
    d["status"] = next;
    ControllerUpdateLocked(*d_type, d, "status");
  }
}

void ApiStore::ReconcileReplicaSetLocked(const Json& rs) {
  const ResourceType* pod_type = StorageTypeLocked("/pods");
  const ResourceType* rs_type = StorageTypeLocked("apps/replicasets");
  if (pod_type == nullptr || rs_type == nullptr) return;
  const std::string ns = Meta(rs, "namespace");
  const std::string uid = Meta(rs, "uid");
  const int64_t desired = rs["spec"].value("replicas", int64_t{1});
  std::vector<Json> pods;
  for (const auto& [k, pod] : objects_["/pods"]) {
    if (Meta(pod, "namespace") == ns && OwnedBy(pod, uid) && !pod["metadata"].contains("deletionTimestamp")) pods.push_back(pod);
  }
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  static std::mt19937_64 rng(std::random_device{}());
  static const char kAlnum[] = "bcdfghjklmnpqrstvwxz2456789";
  const Json tmpl = rs["spec"].value("template", Json::object());
  for (int64_t i = static_cast<int64_t>(pods.size()); i < desired; ++i) {
    std::string name;
    do {
      name = Meta(rs, "name") + "-";
      for (int j = 0; j < 5; ++j) name += kAlnum[rng() % 27];
    } while (FindLocked("/pods", ns, name) != nullptr);
    Json meta = tmpl.value("metadata", Json::object());
    meta["name"] = name;
    meta["namespace"] = ns;
    meta["ownerReferences"] = Json::array({ControllerRef("apps/v1", "ReplicaSet", rs)});
    Json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", meta},
                {"spec", tmpl.value("spec", Json::object())}, {"status", {{"phase", "Pending"}}}};
    auto r = CreateLocked(*pod_type, ns, pod, opts, true);
    if (r.ok()) pods.push_back(r.value().object);
  }
  if (static_cast<int64_t>(pods.size()) > desired) {
    // Not-ready pods go first, then the newest.
    std::stable_sort(pods.begin(), pods.end(), [](const Json& a, const Json& b) {
      if (PodReady(a) != PodReady(b)) return !PodReady(a);
      return Meta(a, "creationTimestamp") > Meta(b, "creationTimestamp");
    });
    while (static_cast<int64_t>(pods.size()) > desired) {
      (void)DeleteLocked(*pod_type, ns, Meta(pods.front(), "name"), {}, opts);
      pods.erase(pods.begin());
    }
  }
  int64_t ready = 0;
  for (const Json& p : pods) ready += PodReady(p) ? 1 : 0;
  Json next = {{"replicas", static_cast<int64_t>(pods.size())}, {"fullyLabeledReplicas", static_cast<int64_t>(pods.size())},
               {"readyReplicas", ready}, {"availableReplicas", ready},
               {"observedGeneration", rs["metadata"].value("generation", int64_t{1})}};
  Json* cur = FindLocked("apps/replicasets", ns, Meta(rs, "name"));
  if (cur != nullptr && cur->value("status", Json::object()) != next) {
    Json r = *cur;
    r["status"] = next;
    ControllerUpdateLocked(*rs_type, r, "status");
  }
}

}  // namespace kvmesh::testapi
