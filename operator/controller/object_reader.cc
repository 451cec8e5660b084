#include "operator/controller/object_reader.h"

#include <algorithm>

#include "operator/controller/desired_state.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

std::string MetaString(const json& obj, const char* field) {
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return "";
  auto it = md->find(field);
  return it != md->end() && it->is_string() ? it->get<std::string>() : "";
}

const json& Labels(const json& obj) {
  static const json kNull;
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return kNull;
  auto it = md->find("labels");
  return it != md->end() ? *it : kNull;
}

std::string RefKey(const kube::ResourceRef& r) { return r.group + "/" + r.resource; }

}  // namespace

// ---- ClientObjectReader -------------------------------------------------------------------

StatusOr<json> ClientObjectReader::Get(const kube::ResourceRef& r, const std::string& ns,
                                       const std::string& name) {
  return client_.Get(r, ns, name);
}

StatusOr<std::vector<json>> ClientObjectReader::List(const kube::ResourceRef& r, const std::string& ns,
                                                     const std::string& label_selector) {
  kube::ListOptions o;
  o.label_selector = label_selector;
  KVMESH_ASSIGN_OR_RETURN(kube::ListResult list, client_.List(r, ns, o));
  std::sort(list.items.begin(), list.items.end(), [](const json& a, const json& b) {
    return MetaString(a, "name") < MetaString(b, "name");
  });
  return std::move(list.items);
}

// ---- InformerObjectReader ------------------------------------------------------------------

std::vector<std::string> GraphIndexValues(const json& obj) {
  const json& labels = Labels(obj);
  if (!labels.is_object()) return {};
  auto it = labels.find(kGraphLabel);
  if (it == labels.end() || !it->is_string()) return {};
  return {MetaString(obj, "namespace") + "/" + it->get<std::string>()};
}

void InformerObjectReader::Add(const kube::ResourceRef& r, const kube::Informer* informer) {
  informers_[RefKey(r)] = informer;
}

const kube::Informer* InformerObjectReader::Find(const kube::ResourceRef& r) const {
  auto it = informers_.find(RefKey(r));
  return it == informers_.end() ? nullptr : it->second;
}

StatusOr<json> InformerObjectReader::Get(const kube::ResourceRef& r, const std::string& ns,
                                         const std::string& name) {
  const kube::Informer* inf = Find(r);
  if (inf == nullptr) return fallback_.Get(r, ns, name);
  std::optional<json> obj = inf->Get(r.namespaced ? ns + "/" + name : name);
  if (!obj) return NotFoundError(r.resource + " \"" + name + "\" not in the informer cache");
  return std::move(*obj);
}

StatusOr<std::vector<json>> InformerObjectReader::List(const kube::ResourceRef& r, const std::string& ns,
                                                       const std::string& label_selector) {
  const kube::Informer* inf = Find(r);
  if (inf == nullptr) return fallback_.List(r, ns, label_selector);
  KVMESH_ASSIGN_OR_RETURN(LabelSelector sel, LabelSelector::Parse(label_selector));
  const std::string graph = sel.EqualityValue(kGraphLabel);
  std::vector<json> candidates =
      !graph.empty() && inf->HasIndex(kGraphIndex) ? inf->ByIndex(kGraphIndex, ns + "/" + graph) : inf->List();
  std::vector<json> out;
  for (json& o : candidates) {
    if (r.namespaced && !ns.empty() && MetaString(o, "namespace") != ns) continue;
    if (!sel.Matches(Labels(o))) continue;
    out.push_back(std::move(o));
  }
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return MetaString(a, "name") < MetaString(b, "name");
  });
  return out;
}

}  // namespace kvmesh::controller
