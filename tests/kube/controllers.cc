// The test cluster's built-in controllers (members of ApiStore): garbage collection by
// ownerReferences and a minimal Deployment -> ReplicaSet -> Pod controller.
#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <unordered_set>

#include "tests/kube/api_store.h"

namespace kvmesh::testapi {
namespace {

std::string Meta(const Json& obj, const char* field) {
  const Json& m = obj["metadata"];
  return m.contains(field) && m[field].is_string() ? m[field].get<std::string>() : "";
}

const Json& EmptyObject() {
  static const Json kEmpty = Json::object();
  return kEmpty;
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

int ApiStore::RunControllers(bool deployments, int max_passes) {
  int total = 0;
  for (int pass = 0; pass < max_passes; ++pass) {
    uint64_t before = 0;
    {
      // The store lock is released between steps so that requests get through.
      std::lock_guard<std::mutex> lock(mu_);
      if (writes_ == controllers_idle_at_) break;
      before = writes_;
    }
    // What changed is counted by writes: the return values miss some (an object whose last
    // finalizer went is deleted by the update that removed it).
    total += RunGarbageCollector();
    if (deployments) {
      total += RunDeploymentController();
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      dirty_deployments_.clear();
      dirty_replicasets_.clear();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (writes_ == before) {
      controllers_idle_at_ = writes_;
      break;
    }
  }
  return total;
}

void ApiStore::TrackLocked(const std::string& gr, const std::string& key, const std::string& type,
                           const Json* old, const Json& obj) {
  const bool deleted = type == "DELETED";
  const std::string uid = Meta(obj, "uid");
  const std::string ns = Meta(obj, "namespace");
  const std::string entry = gr + "|" + key;
  auto refs_of = [](const Json* o) {
    std::vector<std::pair<std::string, std::string>> out;  // (uid, kind/name)
    if (o == nullptr || !o->is_object() || !o->contains("metadata")) return out;
    const Json& m = (*o)["metadata"];
    auto refs = m.find("ownerReferences");
    if (refs == m.end() || !refs->is_array()) return out;
    for (const Json& r : *refs) {
      if (r.is_object()) out.emplace_back(r.value("uid", ""), r.value("kind", "") + "/" + r.value("name", ""));
    }
    return out;
  };
  const auto before = refs_of(old);
  const auto after = deleted ? decltype(before){} : refs_of(&obj);
  for (const auto& [owner, kn] : before) {
    auto it = dependents_.find(owner);
    if (it == dependents_.end()) continue;
    it->second.erase(entry);
    if (it->second.empty()) dependents_.erase(it);
  }
  for (const auto& [owner, kn] : after) dependents_[owner].insert(entry);
  if (deleted) {
    uids_.erase(uid);
    template_hashes_.erase(uid);
    gc_dirty_ = true;  // its dependents may dangle now
  } else {
    uids_.insert(uid);
    if (obj["metadata"].contains("deletionTimestamp")) gc_dirty_ = true;
    bool any_owner = after.empty();
    for (const auto& [owner, kn] : after) any_owner = any_owner || uids_.count(owner) > 0;
    if (!any_owner) gc_dirty_ = true;  // dangling from birth
  }
  // The Deployment controller looks again at what changed and at its owners.
  auto owners_of_kind = [&](const std::vector<std::pair<std::string, std::string>>& refs, const std::string& kind,
                            std::set<std::string>& out) {
    for (const auto& [owner, kn] : refs) {
      if (kn.compare(0, kind.size() + 1, kind + "/") == 0) out.insert(ns + "/" + kn.substr(kind.size() + 1));
    }
  };
  if (gr == "apps/deployments") {
    dirty_deployments_.insert(key);
  } else if (gr == "apps/replicasets") {
    dirty_replicasets_.insert(key);
    owners_of_kind(before, "Deployment", dirty_deployments_);
    owners_of_kind(after, "Deployment", dirty_deployments_);
  } else if (gr == "/pods") {
    std::set<std::string> rss;
    owners_of_kind(before, "ReplicaSet", rss);
    owners_of_kind(after, "ReplicaSet", rss);
    for (const std::string& rk : rss) {
      dirty_replicasets_.insert(rk);
      auto b = objects_.find("apps/replicasets");
      if (b == objects_.end()) continue;
      auto rs = b->second.find(rk);
      if (rs != b->second.end()) owners_of_kind(refs_of(&rs->second), "Deployment", dirty_deployments_);
    }
  }
}

std::vector<std::string> ApiStore::DependentsLocked(const std::string& uid, const std::string& gr) const {
  std::vector<std::string> out;
  auto it = dependents_.find(uid);
  if (it == dependents_.end()) return out;
  const std::string prefix = gr + "|";
  for (const std::string& e : it->second) {
    if (e.compare(0, prefix.size(), prefix) == 0) out.push_back(e.substr(prefix.size()));
  }
  return out;
}

int ApiStore::RunGarbageCollector() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!gc_dirty_) return 0;  // nothing was deleted or born orphaned since the last scan
  gc_dirty_ = false;
  int changed = 0;
  struct Ref {
    const ResourceType* type;
    std::string ns, name;
  };
  std::unordered_set<std::string> uids;  // uids present
  std::vector<Ref> deleting_owners;      // being deleted with an orphan / foregroundDeletion finalizer
  for (const auto& [gr, bucket] : objects_) {
    const ResourceType* t = StorageTypeLocked(gr);
    if (t == nullptr) continue;
    for (const auto& [k, o] : bucket) {
      uids.insert(Meta(o, "uid"));
      if (o["metadata"].contains("deletionTimestamp") &&
          (HasFinalizer(o, "orphan") || HasFinalizer(o, "foregroundDeletion"))) {
        deleting_owners.push_back({t, Meta(o, "namespace"), Meta(o, "name")});
      }
    }
  }
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  for (const Ref& ref : deleting_owners) {
    const Json* found = FindLocked(GrKey(*ref.type), ref.ns, ref.name);
    if (found == nullptr) continue;
    const Json owner = *found;
    const std::string uid = Meta(owner, "uid");
    const bool orphan = HasFinalizer(owner, "orphan");
    std::vector<Ref> children;
    for (const auto& [gr, bucket] : objects_) {
      const ResourceType* t = StorageTypeLocked(gr);
      if (t == nullptr) continue;
      for (const auto& [k, o] : bucket) {
        if (OwnedBy(o, uid)) children.push_back({t, Meta(o, "namespace"), Meta(o, "name")});
      }
    }
    for (const Ref& c : children) {
      const Json* child = FindLocked(GrKey(*c.type), c.ns, c.name);
      if (child == nullptr) continue;
      if (orphan) {
        Json next = *child;
        Json refs = Json::array();
        for (const Json& r : next["metadata"]["ownerReferences"]) if (r.value("uid", "") != uid) refs.push_back(r);
        if (refs.empty()) next["metadata"].erase("ownerReferences");
        else next["metadata"]["ownerReferences"] = refs;
        changed += ControllerUpdateLocked(*c.type, next, "") ? 1 : 0;
      } else if (!(*child)["metadata"].contains("deletionTimestamp")) {
        DeleteOptions del;
        del.propagation_policy = "Foreground";
        changed += DeleteLocked(*c.type, c.ns, c.name, del, opts).ok();
      }
    }
    if (orphan || children.empty()) {
      changed += ControllerUpdateLocked(*ref.type, WithoutFinalizer(owner, orphan ? "orphan" : "foregroundDeletion"), "") ? 1 : 0;
    }
  }
  // Dangling dependents: every owner gone -> delete (background).
  std::vector<Ref> dangling;
  for (const auto& [gr, bucket] : objects_) {
    const ResourceType* t = StorageTypeLocked(gr);
    if (t == nullptr) continue;
    for (const auto& [k, o] : bucket) {
      const Json& m = o["metadata"];
      auto refs = m.find("ownerReferences");
      if (refs == m.end() || !refs->is_array() || refs->empty() || m.contains("deletionTimestamp")) continue;
      bool any_owner = false;
      for (const Json& r : *refs) any_owner = any_owner || uids.count(r.value("uid", "")) > 0;
      if (!any_owner) dangling.push_back({t, Meta(o, "namespace"), Meta(o, "name")});
    }
  }
  for (const Ref& c : dangling) {
    if (FindLocked(GrKey(*c.type), c.ns, c.name) == nullptr) continue;
    changed += DeleteLocked(*c.type, c.ns, c.name, {}, opts).ok();
  }
  return changed;
}

int ApiStore::RunDeploymentController() {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t before = writes_;
  // Only what changed since the last round (TrackLocked); writes made now mark their objects
  // again, so the next round checks them once more and finds nothing to do.
  std::set<std::string> keys;
  keys.swap(dirty_deployments_);
  for (const std::string& k : keys) ReconcileDeploymentLocked(k);
  keys.clear();
  keys.swap(dirty_replicasets_);
  for (const std::string& k : keys) ReconcileReplicaSetLocked(k);
  return static_cast<int>(writes_ - before);
}

std::string ApiStore::TemplateHashLocked(const Json& deploy) {
  const std::string uid = Meta(deploy, "uid");
  const int64_t generation = deploy["metadata"].value("generation", int64_t{1});
  auto it = template_hashes_.find(uid);
  if (it != template_hashes_.end() && it->second.first == generation) return it->second.second;
  const Json& spec = deploy.contains("spec") ? deploy["spec"] : EmptyObject();
  std::string hash = TemplateHash(spec.contains("template") ? spec["template"] : EmptyObject());
  template_hashes_[uid] = {generation, hash};
  return hash;
}

void ApiStore::ReconcileDeploymentLocked(const std::string& key) {
  const ResourceType* rs_type = StorageTypeLocked("apps/replicasets");
  const ResourceType* d_type = StorageTypeLocked("apps/deployments");
  if (rs_type == nullptr || d_type == nullptr) return;
  Bucket& deployments = objects_["apps/deployments"];
  Bucket& replicasets = objects_["apps/replicasets"];
  Bucket& pods = objects_["/pods"];
  auto dit = deployments.find(key);
  if (dit == deployments.end() || dit->second["metadata"].contains("deletionTimestamp")) return;
  // A reference into the map: stays valid while other objects are written (std::map nodes do
  // not move); this Deployment itself is only written last, from a copy.
  const Json& deploy = dit->second;
  const std::string ns = Meta(deploy, "namespace");
  const std::string uid = Meta(deploy, "uid");
  const Json& spec = deploy.contains("spec") ? deploy["spec"] : EmptyObject();
  const int64_t desired = spec.value("replicas", int64_t{1});
  const std::string hash = TemplateHashLocked(deploy);
  const std::string rs_name = Meta(deploy, "name") + "-" + hash;
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  const std::string ns_prefix = ns + "/";
  // Current ReplicaSet: create or scale; older ones scale to zero.
  bool have_current = false;
  const std::vector<std::string> owned = DependentsLocked(uid, "apps/replicasets");
  for (const std::string& rk : owned) {
    auto rit = replicasets.find(rk);
    if (rit == replicasets.end() || rk.compare(0, ns_prefix.size(), ns_prefix) != 0) continue;
    const bool current = Meta(rit->second, "name") == rs_name;
    have_current = have_current || current;
    const int64_t want = current ? desired : 0;
    if (rit->second["spec"].value("replicas", int64_t{1}) != want) {
      Json rs = rit->second;
      rs["spec"]["replicas"] = want;
      ControllerUpdateLocked(*rs_type, rs, "");
    }
  }
  if (!have_current) {
    Json tmpl = spec.value("template", Json::object());
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
  for (const std::string& rk : DependentsLocked(uid, "apps/replicasets")) {
    auto rit = replicasets.find(rk);
    if (rit == replicasets.end() || rk.compare(0, ns_prefix.size(), ns_prefix) != 0) continue;
    const bool current = Meta(rit->second, "name") == rs_name;
    for (const std::string& pk : DependentsLocked(Meta(rit->second, "uid"), "/pods")) {
      auto pit = pods.find(pk);
      if (pit == pods.end() || pk.compare(0, ns_prefix.size(), ns_prefix) != 0 ||
          pit->second["metadata"].contains("deletionTimestamp")) {
        continue;
      }
      ++replicas;
      if (current) ++updated;
      if (PodReady(pit->second)) ++ready;
    }
  }
  const Json& status = deploy.contains("status") ? deploy["status"] : EmptyObject();
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
    d["status"] = std::move(next);
    ControllerUpdateLocked(*d_type, d, "status");
  }
}

void ApiStore::ReconcileReplicaSetLocked(const std::string& key) {
  const ResourceType* pod_type = StorageTypeLocked("/pods");
  const ResourceType* rs_type = StorageTypeLocked("apps/replicasets");
  if (pod_type == nullptr || rs_type == nullptr) return;
  Bucket& replicasets = objects_["apps/replicasets"];
  Bucket& pod_bucket = objects_["/pods"];
  auto rit = replicasets.find(key);
  if (rit == replicasets.end() || rit->second["metadata"].contains("deletionTimestamp")) return;
  const Json& rs = rit->second;  // see ReconcileDeploymentLocked: stable; written last, from a copy
  const std::string ns = Meta(rs, "namespace");
  const std::string rs_name = Meta(rs, "name");
  const std::string ns_prefix = ns + "/";
  const Json& spec = rs.contains("spec") ? rs["spec"] : EmptyObject();
  const int64_t desired = spec.value("replicas", int64_t{1});
  struct PodInfo {
    std::string name;
    bool ready;
    std::string created;
  };
  std::vector<PodInfo> pods;
  for (const std::string& pk : DependentsLocked(Meta(rs, "uid"), "/pods")) {
    auto pit = pod_bucket.find(pk);
    if (pit == pod_bucket.end() || pk.compare(0, ns_prefix.size(), ns_prefix) != 0 ||
        pit->second["metadata"].contains("deletionTimestamp")) {
      continue;
    }
    pods.push_back({Meta(pit->second, "name"), PodReady(pit->second), Meta(pit->second, "creationTimestamp")});
  }
  WriteOptions opts;
  opts.field_manager = "kube-controller-manager";
  static std::mt19937_64 rng(std::random_device{}());
  static const char kAlnum[] = "bcdfghjklmnpqrstvwxz2456789";
  if (static_cast<int64_t>(pods.size()) < desired) {
    const Json tmpl = spec.value("template", Json::object());
    for (int64_t i = static_cast<int64_t>(pods.size()); i < desired; ++i) {
      std::string name;
      do {
        name = rs_name + "-";
        for (int j = 0; j < 5; ++j) name += kAlnum[rng() % 27];
      } while (FindLocked("/pods", ns, name) != nullptr);
      Json meta = tmpl.value("metadata", Json::object());
      meta["name"] = name;
      meta["namespace"] = ns;
      meta["ownerReferences"] = Json::array({ControllerRef("apps/v1", "ReplicaSet", rs)});
      Json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", meta},
                  {"spec", tmpl.value("spec", Json::object())}, {"status", {{"phase", "Pending"}}}};
      auto r = CreateLocked(*pod_type, ns, pod, opts, true);
      if (r.ok()) pods.push_back({name, PodReady(r.value().object), Meta(r.value().object, "creationTimestamp")});
    }
  }
  if (static_cast<int64_t>(pods.size()) > desired) {
    // Not-ready pods go first, then the newest.
    std::stable_sort(pods.begin(), pods.end(), [](const PodInfo& a, const PodInfo& b) {
      if (a.ready != b.ready) return !a.ready;
      return a.created > b.created;
    });
    while (static_cast<int64_t>(pods.size()) > desired) {
      (void)DeleteLocked(*pod_type, ns, pods.front().name, {}, opts);
      pods.erase(pods.begin());
    }
  }
  int64_t ready = 0;
  for (const PodInfo& p : pods) ready += p.ready ? 1 : 0;
  Json next = {{"replicas", static_cast<int64_t>(pods.size())}, {"fullyLabeledReplicas", static_cast<int64_t>(pods.size())},
               {"readyReplicas", ready}, {"availableReplicas", ready},
               {"observedGeneration", rs["metadata"].value("generation", int64_t{1})}};
  Json* cur = FindLocked("apps/replicasets", ns, rs_name);
  if (cur != nullptr && (cur->contains("status") ? (*cur)["status"] : EmptyObject()) != next) {
    Json r = *cur;
    r["status"] = std::move(next);
    ControllerUpdateLocked(*rs_type, r, "status");
  }
}

}  // namespace kvmesh::testapi
