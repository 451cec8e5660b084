// Skip-if-unchanged for server-side apply: NeedsApply(desired, live) says whether applying
// `desired` would change anything the operator owns. The API server decorates what it stores
// (resourceVersion, uid, managedFields, status, defaulted fields such as a Service's clusterIP or
// a probe's successThreshold), so equality is "every field the operator sets has the same value
// live", never whole-object equality. This is what makes a second reconcile of an unchanged
// world perform zero writes.
#pragma once

#include <nlohmann/json.hpp>

namespace kvmesh::controller {

// True unless every field of `desired` (recursively) equals the same field of `live`:
//   - objects: each key of desired is compared; keys only in live are ignored (server defaults,
//     metadata the server adds, other managers' fields);
//   - arrays: same length and element-wise equal under these rules (containers, ports, env...);
//   - numbers compare by value (1 == 1.0); resource quantities under `requests`/`limits` compare
//     by value ("0.5" == "500m", "1Gi" == "1024Mi") because the API server canonicalizes them;
//   - an empty object/array or null in desired matches an absent field (the server omits empty
//     optional fields).
bool NeedsApply(const nlohmann::json& desired, const nlohmann::json& live);

// The value of a Kubernetes quantity ("500m", "2", "8Gi", "1e3", "1.5G"), or false when `text`
// is not one.
bool ParseQuantity(const std::string& text, long double& value);

}  // namespace kvmesh::controller
