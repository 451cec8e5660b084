// InferenceGraph (kvmesh.dev/v1alpha1): the one C++ type of the served-model resource, shared by
// `kvmesh up` (local processes) and kvmesh-operator (Kubernetes). The CRD schema in crds/ and
// docs/inference-graph.md describe the same fields; keep the three in step.
//
// YAML/JSON keys are camelCase as in the CRD (spec.kvCache.blockSize). Parsing fills defaults for
// absent fields (the values below), rejects unknown keys inside spec (a typo must not silently
// fall back to a default) and wrong types, and Validate() checks ranges and enums. Every error is
// kInvalidArgument and names the field path ("spec.decode.replicas: must be >= 0, got -1") and,
// for YAML text, the line.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::graph {

inline constexpr char kApiVersion[] = "kvmesh.dev/v1alpha1";
inline constexpr char kKind[] = "InferenceGraph";

struct ModelSpec {
  std::string name;    // served model id; "" = derived from source (tiny for builtin:tiny)
  std::string source = "builtin:tiny";  // builtin:tiny|small, a folder path, or pvc://CLAIM/PATH
};

struct KvCacheSpec {
  uint32_t block_size = 16;   // blockSize: tokens per block; one value per graph
  uint32_t device_mib = 256;  // deviceMiB: G1 per worker (host memory on the CPU backend)
  uint32_t host_mib = 0;      // hostMiB: G2 per worker; 0 = off
  uint32_t disk_mib = 0;      // diskMiB: G3 per worker; 0 = off
};

struct RouterSpec {
  uint32_t replicas = 1;
  std::string routing_mode = "kv";  // routingMode: kv | round_robin | random | least_loaded
  std::string kv_cost = "kvmesh";   // kvCost: kvmesh | dynamo
  double overlap_weight = 1.0;      // overlapWeight
  double temperature = 0.0;
};

struct DisaggregationSpec {
  std::string mode = "conditional";       // off | conditional | always
  uint32_t min_remote_prefill_tokens = 64;  // minRemotePrefillTokens
  uint32_t max_prefill_queue = 8;           // maxPrefillQueue
  std::string transfer_timeout = "10s";     // transferTimeout (duration text)
  std::string on_failure = "recompute";     // onFailure: recompute | fail
  std::string transport = "";               // UCX_TLS for KV transfer; "" = UCX default
};

struct ResourceSpec {  // Kubernetes quantities as text ("2", "8Gi"); "" = unset
  std::string cpu;
  std::string memory;
};

struct PoolSpec {
  int32_t replicas = 1;
  int32_t min_replicas = 0;   // minReplicas (autoscaling floor)
  int32_t max_replicas = 0;   // maxReplicas; 0 = replicas (no autoscaling)
  int32_t gpus_per_worker = 0;  // gpusPerWorker; 0 = CPU backend
  ResourceSpec requests;
  ResourceSpec limits;
  std::vector<std::string> extra_args;  // extraArgs: appended to kvmesh-agent's command line
};

struct SlaSpec {
  double ttft_ms = 0;  // ttftMs: p90 time to first token target; 0 = none
  double itl_ms = 0;   // itlMs: p90 inter-token latency target; 0 = none
};

struct ClusterSpec {
  std::string name;
  std::string kubeconfig_secret;  // kubeconfigSecret: Secret name holding the member's kubeconfig
  std::string region;
  int32_t gpu_capacity = 0;       // gpuCapacity
};

struct LinkSpec {  // network between two member clusters
  std::string from;
  std::string to;
  double bandwidth_gbps = 0;  // bandwidthGbps
  double latency_ms = 0;      // latencyMs
};

// The cache-locality policy's model of one replica (spec.placement.model); 0 = the placement
// model's default (docs/placement.md).
struct PlacementModelSpec {
  double prefill_tokens_per_s = 0;  // prefillTokensPerS: prompt tokens/s of one prefill replica
  double decode_tokens_per_s = 0;   // decodeTokensPerS: generated tokens/s of one decode replica
  double replication_window_s = 0;  // replicationWindowS: a prefix copy's cost is spread over this
};

struct PlacementSpec {
  std::string policy = "single";  // single | spread | pack | cache-locality
  std::string topology_key = "kubernetes.io/hostname";  // topologyKey
  std::vector<ClusterSpec> clusters;
  std::vector<LinkSpec> links;
  PlacementModelSpec model;
};

struct InferenceGraphSpec {
  ModelSpec model;
  KvCacheSpec kv_cache;
  RouterSpec router;
  DisaggregationSpec disaggregation;
  PoolSpec prefill;  // replicas 0 with disaggregation off = aggregated decode workers only
  PoolSpec decode;
  SlaSpec sla;
  PlacementSpec placement;
};

struct InferenceGraph {
  std::string name = "default";  // metadata.name
  std::string namespace_;        // metadata.namespace ("" = default / local)
  std::map<std::string, std::string> labels;
  int64_t generation = 0;        // metadata.generation (from the API server; 0 locally)
  InferenceGraphSpec spec;

  // Ranges and enums; names the first bad field.
  Status Validate() const;
  // The served model id: spec.model.name, else "tiny"/"small" for builtin:, else the last path
  // component of the source.
  std::string ServedModelName() const;
};

// One YAML document (or JSON, which is YAML) with apiVersion/kind/metadata/spec. apiVersion and
// kind must be kvmesh.dev/v1alpha1 / InferenceGraph. Defaults filled, then Validate().
StatusOr<InferenceGraph> ParseInferenceGraphYaml(std::string_view text);
StatusOr<InferenceGraph> LoadInferenceGraphFile(const std::string& path);
// The whole object as JSON text (apiVersion, kind, metadata {name, namespace, labels}, spec with
// every field, defaults included), as the operator sends it to the API server.
std::string InferenceGraphToJson(const InferenceGraph& graph);
// JSON object text of the API server (status and unknown metadata ignored) -> graph.
StatusOr<InferenceGraph> InferenceGraphFromJson(std::string_view json_text);

// The embedded default graph of `kvmesh up` with no file: builtin:tiny, 1 prefill + 1 decode
// worker, one router, conditional disaggregation.
InferenceGraph DefaultLocalGraph();

}  // namespace kvmesh::graph
