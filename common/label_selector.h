// LabelSelector: Kubernetes label selectors, parsed once and matched against an object's labels.
// One implementation shared by the operator (its informer-cache reader, operator/controller/
// object_reader.h) and the test API server (tests/kube: LIST ?labelSelector=, Deployment and
// ReplicaSet selectors), so both sides of the API agree on what a selector means.
//
// Syntax (apimachinery's labels.Parse subset): key=value, key==value, key!=value,
// key in (a,b), key notin (a,b), key, !key; comma-separated, all must hold. An empty selector
// matches everything. Keys: letters, digits, '_', '.', '/', '-'; values the same without '/'
// (may be empty). Semantics as in Kubernetes: an absent label satisfies != and notin.
// Object form (meta/v1 LabelSelector): matchLabels (equality) and matchExpressions
// (In, NotIn, Exists, DoesNotExist).
//
// Immutable after parsing; safe to share between threads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace kvmesh {

class LabelSelector {
 public:
  // InvalidArgument naming the selector and the bad requirement.
  static StatusOr<LabelSelector> Parse(std::string_view text);
  // From a meta/v1 LabelSelector object; a non-object (e.g. null) selects everything.
  // InvalidArgument for an unknown operator or a bad key/value.
  static StatusOr<LabelSelector> FromObject(const nlohmann::json& selector);

  bool Matches(const nlohmann::json& labels) const;  // labels: object of strings, or null
  // The value a requirement `key=value` / `key==value` / `key in (value)` pins `key` to, or "".
  std::string EqualityValue(const std::string& key) const;
  bool empty() const { return reqs_.empty(); }

 private:
  enum class Op { kEq, kNotEq, kIn, kNotIn, kExists, kNotExists };
  struct Requirement {
    std::string key;
    Op op;
    std::vector<std::string> values;
  };
  std::vector<Requirement> reqs_;
};

// The terms of a selector: split on commas outside parentheses, each trimmed of spaces and tabs
// ("a in (x,y), b" -> {"a in (x,y)", "b"}; "" -> {}). Field selectors share it.
std::vector<std::string> SplitSelectorTerms(std::string_view text);

}  // namespace kvmesh
