// One finalizer of an API object, added or removed by update (PUT of the whole object, so the
// write carries the resourceVersion read and a concurrent change gives 409, never a lost update).
// Used by the reconciler (kvmesh.dev/drain) and the hub controller (kvmesh.dev/hub-members).
// Invariants: at most one write, retried once from a fresh read on 409; a finalizer is never added
// to an object whose deletion has started; an object that already is as wanted is not written.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "operator/kube/kube_client.h"

namespace kvmesh::controller {

// Whether metadata.deletionTimestamp is set.
bool BeingDeleted(const nlohmann::json& object);
// Whether metadata.finalizers lists `finalizer`.
bool HasFinalizer(const nlohmann::json& object, const std::string& finalizer);

struct FinalizerUpdate {
  nlohmann::json object;  // as written, or as read when nothing needed changing
  bool written = false;
  int conflicts = 0;      // 409s met (each followed by a fresh read)
};

// Errors: the API server's (NotFound when the object is gone; Conflict when a second attempt
// also conflicted).
StatusOr<FinalizerUpdate> UpdateFinalizer(kube::KubeClient& client, const kube::ResourceRef& resource,
                                          nlohmann::json object, const std::string& finalizer, bool add);

}  // namespace kvmesh::controller
