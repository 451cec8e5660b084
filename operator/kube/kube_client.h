// The operator's Kubernetes API client: the interface the controller, informers and leader election
// use, and its implementation over cpprestsdk (CreateKubeClient). Objects are nlohmann::json as the
// API server sends them; the client adds nothing and drops nothing.
//
// Errors map the API server's Status to kvmesh::Status codes, and keep the HTTP code and reason:
//   404 NotFound -> kNotFound, 409 AlreadyExists -> kAlreadyExists, 409 Conflict -> kAborted,
//   410 Gone/Expired -> kOutOfRange, 422 Invalid / 400 -> kInvalidArgument, 401 -> kUnauthenticated,
//   403 -> kPermissionDenied, 415 -> kUnimplemented, 429 / 5xx (after retries) -> kUnavailable,
//   timeouts -> kDeadlineExceeded.
// Retries: 429 and 5xx (and connection failures) on idempotent calls (GET/LIST/PUT/PATCH/DELETE;
// POST only on 429) with exponential backoff, honouring Retry-After, bounded by
// KubeClientOptions::max_retries. Thread-safe: many threads may call one client at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvmesh::kube {

// Which collection: core kinds have group "" ({"", "v1", "pods"}).
struct ResourceRef {
  std::string group;
  std::string version;
  std::string resource;  // plural, lower case
  bool namespaced = true;

  std::string ApiVersion() const { return group.empty() ? version : group + "/" + version; }
  // "/api/v1/namespaces/NS/pods[/NAME]" or "/apis/G/V/..."; ns "" for a cluster-wide list.
  std::string Path(const std::string& ns, const std::string& name = "") const;
};

// The kinds the operator touches.
ResourceRef InferenceGraphs();     // kvmesh.dev/v1alpha1 inferencegraphs
ResourceRef Deployments();         // apps/v1
ResourceRef Services();            // v1
ResourceRef ConfigMaps();          // v1
ResourceRef Pods();                // v1
ResourceRef PodDisruptionBudgets();  // policy/v1
ResourceRef Leases();              // coordination.k8s.io/v1
ResourceRef Events();              // v1
ResourceRef Secrets();             // v1 (get by name only)

struct ApiError {
  int http_status = 0;   // 0 when no response (connection, timeout)
  std::string reason;    // Status.reason ("Conflict", "Expired", ...)
};
// The HTTP status and reason behind a Status returned by the client (http_status 0 if none).
ApiError GetApiError(const Status& status);

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;  // 0 = no paging; otherwise List follows `continue` until done
  std::string resource_version;  // "" = most recent
};

struct WatchOptions {
  std::string resource_version;  // required: watch from here
  std::string label_selector;
  std::string field_selector;
  bool allow_bookmarks = true;
  int timeout_seconds = 300;  // server-side timeout; the stream then ends normally
};

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
  nlohmann::json object;
};

struct ListResult {
  std::vector<nlohmann::json> items;
  std::string resource_version;  // the list's metadata.resourceVersion
};

enum class PatchType { kMerge, kJson, kApply };  // merge-patch+json, json-patch+json, apply-patch+yaml

struct PatchOptions {
  std::string field_manager = "kvmesh-operator";  // used by kApply (required there)
  bool force = true;                              // kApply: take over conflicting fields
  bool status = false;                            // patch the /status subresource
};

class KubeClient {
 public:
  virtual ~KubeClient() = default;
  virtual StatusOr<nlohmann::json> Get(const ResourceRef& r, const std::string& ns,
                                       const std::string& name) = 0;
  virtual StatusOr<ListResult> List(const ResourceRef& r, const std::string& ns,
                                    const ListOptions& options = {}) = 0;
  virtual StatusOr<nlohmann::json> Create(const ResourceRef& r, const std::string& ns,
                                          const nlohmann::json& object) = 0;
  // PUT with the object's metadata.resourceVersion (409 -> kAborted on a stale one).
  virtual StatusOr<nlohmann::json> Update(const ResourceRef& r, const nlohmann::json& object) = 0;
  virtual StatusOr<nlohmann::json> UpdateStatus(const ResourceRef& r,
                                                const nlohmann::json& object) = 0;
  // kApply: `patch` is the full desired object (sent as YAML/JSON, apiVersion/kind/metadata.name
  // set); kMerge: a JSON merge patch; kJson: a JSON patch array.
  virtual StatusOr<nlohmann::json> Patch(const ResourceRef& r, const std::string& ns,
                                         const std::string& name, PatchType type,
                                         const nlohmann::json& patch,
                                         const PatchOptions& options = {}) = 0;
  // NotFound when already gone (callers that do not care check IsNotFound). An object with
  // finalizers is only marked for deletion. propagation: "Background" | "Foreground" | "Orphan".
  virtual Status Delete(const ResourceRef& r, const std::string& ns, const std::string& name,
                        const std::string& propagation = "Background") = 0;
  // Streams events until the server ends the stream (OK), `on_event` returns false (OK), `stop`
  // becomes true (Cancelled; checked at least every 200 ms), or an error (an HTTP 410 is returned as
  // kOutOfRange; an in-stream ERROR event is delivered to on_event as type "ERROR").
  virtual Status Watch(const ResourceRef& r, const std::string& ns, const WatchOptions& options,
                       const std::function<bool(const WatchEvent&)>& on_event,
                       const std::atomic<bool>* stop = nullptr) = 0;
  // Calls made (for metrics and the "zero writes in steady state" tests): reads and writes.
  virtual uint64_t reads() const = 0;
  virtual uint64_t writes() const = 0;
};

struct KubeConfig {
  std::string server;           // https://host:port or http://host:port
  std::string ca_file;          // PEM; "" with https = system store
  std::string ca_data;          // PEM text (from certificate-authority-data, decoded)
  std::string client_cert_data; // PEM text
  std::string client_key_data;  // PEM text
  std::string token;            // bearer token (token or tokenFile read at load)
  bool insecure_skip_tls_verify = false;
  std::string namespace_;       // the context's namespace ("" = default)
};

// kubeconfig YAML (clusters/users/contexts, current-context or `context`), *-data base64 fields,
// file paths relative to the kubeconfig's folder, token / tokenFile. InvalidArgument naming what
// is missing.
StatusOr<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context = "");
// The same from kubeconfig text (e.g. a member cluster's kubeconfig Secret); file references
// (certificate-authority, tokenFile, ...) resolve against the current directory.
StatusOr<KubeConfig> LoadKubeconfigFromText(const std::string& text, const std::string& context = "");
// In-cluster: KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount/{token,
// ca.crt,namespace} (root overridable for tests).
StatusOr<KubeConfig> InClusterConfig(
    const std::string& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");
// --kubeconfig flag if set, else $KUBECONFIG, else in-cluster, else ~/.kube/config.
StatusOr<KubeConfig> ResolveKubeConfig(const std::string& kubeconfig_flag, const std::string& context);

struct KubeClientOptions {
  std::chrono::milliseconds timeout{10000};        // per request (not per watch stream)
  int max_retries = 5;
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{5000};
  std::string user_agent = "kvmesh-operator";
};

StatusOr<std::unique_ptr<KubeClient>> CreateKubeClient(const KubeConfig& config,
                                                       const KubeClientOptions& options = {});

inline bool IsNotFound(const Status& s) { return s.code() == StatusCode::kNotFound; }
inline bool IsConflict(const Status& s) { return s.code() == StatusCode::kAborted; }
inline bool IsGone(const Status& s) { return s.code() == StatusCode::kOutOfRange; }

}  // namespace kvmesh::kube
