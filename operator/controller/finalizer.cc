#include "operator/controller/finalizer.h"

#include <algorithm>

namespace kvmesh::controller {

using json = nlohmann::json;

bool BeingDeleted(const json& object) {
  auto md = object.find("metadata");
  if (md == object.end() || !md->is_object()) return false;
  auto ts = md->find("deletionTimestamp");
  return ts != md->end() && !ts->is_null();
}

bool HasFinalizer(const json& object, const std::string& finalizer) {
  auto md = object.find("metadata");
  if (md == object.end() || !md->is_object()) return false;
  auto fins = md->find("finalizers");
  return fins != md->end() && fins->is_array() &&
         std::find(fins->begin(), fins->end(), json(finalizer)) != fins->end();
}

StatusOr<FinalizerUpdate> UpdateFinalizer(kube::KubeClient& client, const kube::ResourceRef& resource,
                                          json object, const std::string& finalizer, bool add) {
  FinalizerUpdate out;
  for (int attempt = 0;; ++attempt) {
    if (add == HasFinalizer(object, finalizer) || (add && BeingDeleted(object))) {
      out.object = std::move(object);
      return out;
    }
    json& md = object["metadata"];
    json fins = md.contains("finalizers") && md["finalizers"].is_array() ? md["finalizers"] : json::array();
    if (add) {
      fins.push_back(finalizer);
    } else {
      fins.erase(std::remove(fins.begin(), fins.end(), json(finalizer)), fins.end());
    }
    md["finalizers"] = fins;
    auto r = client.Update(resource, object);
    if (r.ok()) {
      out.object = std::move(*r);
      out.written = true;
      return out;
    }
    if (!kube::IsConflict(r.status()) || attempt >= 1) return r.status();
    out.conflicts++;
    auto fresh = client.Get(resource, md.value("namespace", ""), md.value("name", ""));
    if (!fresh.ok()) return fresh.status();
    object = std::move(*fresh);
  }
}

}  // namespace kvmesh::controller
