// ObjectReader: where the reconciler reads Kubernetes objects from. Two implementations:
//   - ClientObjectReader: every read is a GET/LIST on the API server (tests, tools, a process
//     without informers). Reads are never stale.
//   - InformerObjectReader: reads come from the manager's informer caches (operator/kube/
//     informer.h), so a reconcile of an unchanged graph makes no API request at all. Resources
//     without an informer fall through to the client.
//
// Stale reads: a cache lags the API server (the watch event of a write arrives after the write
// returns). IsCache() tells the reconciler so; it then confirms on the API server before it
// writes anything (docs/operator.md "Reads from the informer caches"), so a stale read costs one
// GET, never a write.
//
// Label selectors (List): key=value, key==value, key!=value, key in (a,b), key notin (a,b), key,
// !key; comma-separated, all must hold. A cache only holds what its informer selects (the
// operator's informers select app.kubernetes.io/managed-by=kvmesh-operator), so List on a cache
// sees only those objects.
//
// Thread-safety: both implementations may be called from several reconcile workers at once.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/label_selector.h"
#include "common/status.h"
#include "operator/kube/informer.h"
#include "operator/kube/kube_client.h"

namespace kvmesh::controller {

class ObjectReader {
 public:
  virtual ~ObjectReader() = default;
  // The object; NotFound when the reader does not have it; other errors from the API server.
  virtual StatusOr<nlohmann::json> Get(const kube::ResourceRef& r, const std::string& ns,
                                       const std::string& name) = 0;
  // The objects of namespace `ns` whose labels match `label_selector` ("" = all), sorted by name.
  // InvalidArgument for a selector that does not parse.
  virtual StatusOr<std::vector<nlohmann::json>> List(const kube::ResourceRef& r, const std::string& ns,
                                                     const std::string& label_selector) = 0;
  // True when reads may lag the API server (confirm before writing).
  virtual bool IsCache() const = 0;
};

class ClientObjectReader : public ObjectReader {
 public:
  explicit ClientObjectReader(kube::KubeClient& client) : client_(client) {}
  StatusOr<nlohmann::json> Get(const kube::ResourceRef& r, const std::string& ns,
                               const std::string& name) override;
  StatusOr<std::vector<nlohmann::json>> List(const kube::ResourceRef& r, const std::string& ns,
                                             const std::string& label_selector) override;
  bool IsCache() const override { return false; }

 private:
  kube::KubeClient& client_;
};

// The informer index by graph: "namespace/<value of the kvmesh.dev/graph label>" (no value for
// an object without the label). InformerObjectReader uses it for a List whose selector requires
// kvmesh.dev/graph=NAME.
inline constexpr char kGraphIndex[] = "graph";
std::vector<std::string> GraphIndexValues(const nlohmann::json& obj);

class InformerObjectReader : public ObjectReader {
 public:
  // `fallback` serves resources without an informer; it must outlive the reader.
  explicit InformerObjectReader(kube::KubeClient& fallback) : fallback_(fallback) {}
  // Serves `r` (by its plural) from `informer`, which must outlive the reader. An informer that
  // has the index kGraphIndex (Informer::AddIndex with GraphIndexValues) is listed through it.
  // Only before the reader is used.
  void Add(const kube::ResourceRef& r, const kube::Informer* informer);

  StatusOr<nlohmann::json> Get(const kube::ResourceRef& r, const std::string& ns,
                               const std::string& name) override;
  StatusOr<std::vector<nlohmann::json>> List(const kube::ResourceRef& r, const std::string& ns,
                                             const std::string& label_selector) override;
  bool IsCache() const override { return true; }

 private:
  const kube::Informer* Find(const kube::ResourceRef& r) const;

  ClientObjectReader fallback_;
  std::map<std::string, const kube::Informer*> informers_;  // "group/resource" -> informer
};

// The selector syntax above: common/label_selector.h (shared with the test API server).
using LabelSelector = ::kvmesh::LabelSelector;

}  // namespace kvmesh::controller
