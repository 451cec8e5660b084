// Structural OpenAPI v3 schema handling for custom resources in the test API server, as the real
// apiextensions-apiserver does on create/update: apply `default`s, prune fields not declared in
// the schema (unless x-kubernetes-preserve-unknown-fields), then validate type, required, enum,
// minimum/maximum (+exclusive), pattern, minLength/maxLength, minItems/maxItems, items,
// properties, additionalProperties, nullable, x-kubernetes-int-or-string.
//
// Not implemented: x-kubernetes-validations (CEL rules are skipped), format checks, oneOf/anyOf/
// allOf/not (ignored). Root apiVersion/kind/metadata are never pruned or validated here.
#pragma once

#include <string>
#include <vector>

#include "tests/kube/kube_util.h"

namespace kvmesh::testapi {

struct SchemaResult {
  std::vector<std::string> errors;          // "spec.replicas: Invalid value: ..."
  std::vector<std::string> unknown_fields;  // pruned paths, e.g. "spec.foo"
};

// Defaults, prunes and validates `object` (a whole custom resource) against `schema` (the CRD
// version's openAPIV3Schema) in place.
SchemaResult ApplySchema(Json& object, const Json& schema);

}  // namespace kvmesh::testapi
