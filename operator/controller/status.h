// The InferenceGraph's status as the operator writes it: observedGeneration, phase (printer
// column), routerEndpoint, per-pool replicas/readyReplicas, and the conditions Available,
// Progressing and Degraded with reasons. ComputeStatus is a pure function of the graph, the live
// Deployments, the ready pod counts, the previous status and `now`:
//   - a condition's lastTransitionTime changes only when its status changes, so an unchanged
//     world yields a byte-identical status and the reconciler writes nothing;
//   - fields it does not own (planner decisions, cache hit ratio, ...) are kept from `previous`.
// The meaning of every condition and reason is in docs/operator.md.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "operator/controller/desired_state.h"

namespace kvmesh::controller {

using SystemTime = std::chrono::system_clock::time_point;

// "2026-11-30T05:51:48Z" (UTC, seconds) and back; ParseRfc3339 accepts fractional seconds and a
// numeric offset, returns nullopt for anything else.
std::string FormatRfc3339(SystemTime t);
std::optional<SystemTime> ParseRfc3339(const std::string& text);

// Ready pods per component label (prefill, decode, router): Ready condition True and not being
// deleted.
std::map<std::string, int32_t> ReadyPodCounts(const std::vector<nlohmann::json>& pods);

struct StatusOptions {
  // A pool that wants replicas but has none ready is Degraded once the graph has been progressing
  // (not converged) for this long: long enough for image pulls and model loads.
  std::chrono::seconds degraded_grace{300};
  OperatorSettings settings;  // router port for routerEndpoint
};

struct StatusInput {
  const OwnedGraph* graph = nullptr;
  std::vector<nlohmann::json> deployments;  // live Deployments of the graph (any subset)
  std::map<std::string, int32_t> ready;     // ReadyPodCounts
  nlohmann::json previous;                  // the live .status (null/absent = none)
  std::string write_error;                  // "" = every child was written
  SystemTime now;
};

struct StatusResult {
  nlohmann::json status;
  // Look again after this long (a pool's degraded grace runs out then); nullopt = no need.
  std::optional<std::chrono::seconds> recheck_after;
};

StatusResult ComputeStatus(const StatusInput& in, const StatusOptions& options);

// Status of a graph whose spec does not parse or validate: Available False, Progressing False,
// Degraded True, all with reason InvalidSpec and the parser's message; phase Degraded.
nlohmann::json InvalidSpecStatus(const GraphMeta& meta, const std::string& message,
                                 const nlohmann::json& previous, SystemTime now);

// Status while the finalizer drains the graph: phase Deleting, Available False/Deleting,
// Progressing True/Draining with `message`.
nlohmann::json DeletingStatus(const GraphMeta& meta, const std::string& message,
                              const nlohmann::json& previous, SystemTime now);

// The condition of `type` in a status (null when absent).
nlohmann::json FindCondition(const nlohmann::json& status, const std::string& type);

}  // namespace kvmesh::controller
