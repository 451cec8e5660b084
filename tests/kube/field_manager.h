// Field ownership for server-side apply in the test API server (a simplified structured-merge-
// diff): a field set is the set of leaf paths of an object, where a leaf is a scalar, a list
// (lists are atomic: owned and replaced whole, no associative keys) or an empty map. Identity and
// server-owned metadata (name, namespace, uid, resourceVersion, generation, creationTimestamp,
// managedFields, deletionTimestamp) are never owned. Paths are segments joined by '\x1f'.
#pragma once

#include <optional>
#include <set>
#include <string>

#include "tests/kube/kube_util.h"

namespace kvmesh::testapi {

using FieldSet = std::set<std::string>;

// Leaf paths of `object`; `status_mode`: 0 = everything, 1 = all but .status, 2 = only .status.
FieldSet LeafFields(const Json& object, int status_mode);
// Leaf paths whose value differs between a and b (added, changed or removed).
FieldSet ChangedFields(const Json& a, const Json& b, int status_mode);
// FieldsV1 ({"f:spec":{"f:replicas":{}}}) <-> set.
Json FieldSetToV1(const FieldSet& set);
FieldSet FieldSetFromV1(const Json& v1);
std::optional<Json> ValueAt(const Json& object, const std::string& path);
void EraseAt(Json& object, const std::string& path);
// True when a == b or one is a prefix (by whole segments) of the other.
bool PathsOverlap(const std::string& a, const std::string& b);
// ".spec.replicas"
std::string ReadablePath(const std::string& path);
// Recursive merge: maps merge, everything else in `patch` replaces.
void DeepMerge(Json& base, const Json& patch);

}  // namespace kvmesh::testapi
