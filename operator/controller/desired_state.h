// The objects one InferenceGraph should own in Kubernetes, computed from its spec, the operator's
// settings and the READY worker pods (which become the router's workers file). BuildDesired is a
// pure function: the same inputs give byte-identical JSON (lists sorted, maps ordered), so the
// reconciler's "apply only if changed" check (diff.h) sees no change when nothing changed.
//
// Every object carries the graph's labels (app.kubernetes.io/{name,instance,component,managed-by},
// kvmesh.dev/graph) and a controller ownerReference to the graph (apiVersion kvmesh.dev/v1alpha1,
// kind InferenceGraph, uid, controller: true, blockOwnerDeletion: true). Objects are JSON ready for
// server-side apply: apiVersion, kind, metadata {name, namespace, labels, ownerReferences}, and
// only the fields the operator owns. docs/operator.md lists every object, name, label and arg.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/inference_graph.h"
#include "common/status.h"

namespace kvmesh::controller {

inline constexpr char kFieldManager[] = "kvmesh-operator";
inline constexpr char kFinalizer[] = "kvmesh.dev/drain";
inline constexpr char kGraphLabel[] = "kvmesh.dev/graph";
inline constexpr char kRoleLabel[] = "kvmesh.dev/role";  // agent role of a worker pod
inline constexpr char kComponentLabel[] = "app.kubernetes.io/component";
inline constexpr char kInstanceLabel[] = "app.kubernetes.io/instance";
inline constexpr char kConfigHashAnnotation[] = "kvmesh.dev/config-hash";

// The InferenceGraph's API-server metadata the C++ spec type does not carry. Read even when the
// spec is invalid, so an invalid graph still gets a status and an Event.
struct GraphMeta {
  std::string name;
  std::string namespace_;
  std::string uid;
  std::string resource_version;
  int64_t generation = 0;
  std::string deletion_timestamp;  // RFC 3339; "" = not being deleted
  std::vector<std::string> finalizers;
};

// A graph as read from the API server: metadata + the parsed, validated spec.
struct OwnedGraph {
  GraphMeta meta;
  graph::InferenceGraph graph;
};

// metadata of an API object (name, namespace, uid, resourceVersion, generation,
// deletionTimestamp, finalizers). InvalidArgument when metadata.name is missing.
StatusOr<GraphMeta> ReadGraphMeta(const nlohmann::json& object);
// Metadata + InferenceGraphFromJson (the strict parser: its message names the bad field).
StatusOr<OwnedGraph> ReadOwnedGraph(const nlohmann::json& object);

// How the operator builds pods: images, commands, ports, timings. Flags of kvmesh-operator.
struct OperatorSettings {
  std::string agent_image = "ghcr.io/kvmesh/kvmesh-agent:0.1.0";
  std::string router_image = "ghcr.io/kvmesh/kvmesh-agent:0.1.0";  // the agent image has both
  std::string image_pull_policy = "IfNotPresent";
  std::string agent_command = "kvmesh-agent";    // argv[0] in the container
  std::string router_command = "kvmesh-router";
  int32_t agent_port = 8100;   // HTTP of every worker pod (container port "http")
  int32_t events_port = 5557;  // ZMQ PUB of KV events ("kv-events")
  int32_t replay_port = 5558;  // ZMQ ROUTER of event replay ("kv-replay")
  int32_t router_port = 8000;  // router pod and Service port
  // Secret (in the graph's namespace) with key `api-keys`: mounted into the router pod and passed
  // as --auth.api-keys-file. The router refuses a non-loopback address without it, so a real
  // cluster needs it; "" = none (pods on loopback addresses, e.g. the test cluster's kubelet).
  std::string router_api_keys_secret;
  // Where builtin: models are created inside worker/router pods (an emptyDir volume there);
  // "" = no volume and no --cache-dir flag (the process's $KVMESH_CACHE_DIR / default).
  std::string cache_dir = "/var/cache/kvmesh";
  std::string model_mount_path = "/models";  // pvc://CLAIM/PATH -> <model_mount_path>/PATH
  std::string agent_drain_timeout = "30s";   // --drain-timeout of agents and router
  int64_t termination_grace_seconds = 45;    // > drain timeout: SIGKILL comes after it
  int32_t startup_failure_threshold = 180;   // x 10 s period: 30 min to load a large model
  int64_t run_as_user = 65532;
  std::string workers_file_poll_interval = "1s";
};

// A worker pod the router may use: Ready condition True, a pod IP, not being deleted.
struct WorkerPod {
  std::string name;
  std::string pod_ip;
  std::string role;  // agent role: prefill | decode | aggregated (label kvmesh.dev/role)
};
// The ready worker pods among `pods` (labels kvmesh.dev/role set), sorted by role then name.
std::vector<WorkerPod> ReadyWorkerPods(const std::vector<nlohmann::json>& pods);

// One object to own; `resource` is the plural of its kind (deployments, services, ...).
struct DesiredObject {
  std::string resource;
  nlohmann::json object;
  std::string Key() const;  // "deployments/<name>"
};
using DesiredObjects = std::vector<DesiredObject>;

// Whether the graph runs separate prefill workers: disaggregation.mode != off. With mode off there
// is no prefill Deployment and the decode pool runs role aggregated; otherwise the prefill
// Deployment exists even at replicas 0 (decode agents then prefill locally) so scaling it never
// restarts the decode pool.
bool HasPrefillPool(const graph::InferenceGraph& g);
// The agent role of the decode pool: "decode" with a prefill pool, else "aggregated".
std::string DecodeRole(const graph::InferenceGraph& g);

// The model path inside pods: pvc://CLAIM/PATH -> <model_mount_path>/PATH; others unchanged.
std::string PodModelPath(const graph::InferenceGraph& g, const OperatorSettings& s);

// The router's config file (YAML keys of router/router_config.h) and workers file
// (router/worker_registry.h ParseWorkerFile: one entry per ready worker pod).
std::string RouterConfigYaml(const graph::InferenceGraph& g, const OperatorSettings& s);
// Entries sorted by role, then pod name.
std::string WorkersFileYaml(std::vector<WorkerPod> workers, const OperatorSettings& s);

// Every object the graph should own, in apply order: ConfigMap, Services, Deployments (prefill,
// decode, router), PodDisruptionBudgets (pools with replicas > 1). `ready_workers` (from
// ReadyWorkerPods) become the ConfigMap's workers.yaml.
DesiredObjects BuildDesired(const OwnedGraph& g, const OperatorSettings& s,
                            const std::vector<WorkerPod>& ready_workers);
// Every (resource, name) a graph may own, desired or not; the reconciler deletes the owned ones
// BuildDesired no longer lists (a PDB when replicas drop to 1, the prefill pool when
// disaggregation turns off).
std::vector<std::pair<std::string, std::string>> AllChildKeys(const std::string& graph);

// Child names: <graph>-prefill, <graph>-decode, <graph>-router.
std::string ChildName(const std::string& graph, const std::string& component);
// The router Service endpoint: http://<graph>-router.<ns>.svc:<port>.
std::string RouterEndpoint(const GraphMeta& meta, const OperatorSettings& s);
// The labels of every child of `graph` for `component`.
nlohmann::json ChildLabels(const std::string& graph, const std::string& component);

// FNV-1a 64 of `text` as 16 hex digits (config hash annotations).
std::string Fnv1aHex(std::string_view text);

}  // namespace kvmesh::controller
