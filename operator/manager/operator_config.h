// OperatorConfig: every setting of kvmesh-operator, declared once (flag, env KVMESH_OPERATOR_<KEY>,
// YAML key; common/config.h). docs/operator.md lists them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/config.h"
#include "common/status.h"
#include "operator/controller/desired_state.h"

namespace kvmesh::op {

// How worker and router pods are built (controller::OperatorSettings).
struct OperatorPodsConfig {
  controller::OperatorSettings s;
  template <class V> void Visit(V& v) {
    v("agent_image", s.agent_image, "image of worker pods");
    v("router_image", s.router_image, "image of router pods");
    v("image_pull_policy", s.image_pull_policy, "imagePullPolicy of pods");
    v("agent_command", s.agent_command, "argv[0] of worker containers");
    v("router_command", s.router_command, "argv[0] of router containers");
    v("agent_port", s.agent_port, "HTTP port of worker pods");
    v("events_port", s.events_port, "ZMQ KV-events port of worker pods");
    v("replay_port", s.replay_port, "ZMQ KV-event replay port of worker pods");
    v("router_port", s.router_port, "router pod and Service port");
    v("router_api_keys_secret", s.router_api_keys_secret,
      "Secret with key api-keys mounted into router pods (needed off loopback)");
    v("cache_dir", s.cache_dir, "model cache folder inside pods (emptyDir); empty = none");
    v("model_mount_path", s.model_mount_path, "where pvc:// model volumes are mounted");
    v("agent_drain_timeout", s.agent_drain_timeout, "--drain-timeout of agents and routers");
    v("termination_grace_seconds", s.termination_grace_seconds, "pod terminationGracePeriodSeconds");
    v("startup_failure_threshold", s.startup_failure_threshold, "startupProbe failureThreshold (10 s period)");
    v("run_as_user", s.run_as_user, "runAsUser of pods");
    v("workers_file_poll_interval", s.workers_file_poll_interval, "router --workers.file-poll-interval");
  }
};

struct OperatorLeaderConfig {
  bool enabled = false;
  std::string lease_namespace;  // "" = $POD_NAMESPACE, else "default"
  std::string lease_name = "kvmesh-operator";
  std::string identity;         // "" = $POD_NAME or hostname, + "-" + pid
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  template <class V> void Visit(V& v) {
    v("enabled", enabled, "elect one leader through a coordination.k8s.io Lease; only it writes");
    v("lease_namespace", lease_namespace, "namespace of the Lease (default $POD_NAMESPACE or default)");
    v("lease_name", lease_name, "name of the Lease");
    v("identity", identity, "this replica's identity (default $POD_NAME or hostname, plus pid)");
    v("lease_duration", lease_duration, "how long a silent leader keeps the lease");
    v("renew_deadline", renew_deadline, "the leader stops writing when it cannot renew within this");
    v("retry_period", retry_period, "how often to renew / try to acquire");
  }
};

// The SLA planner inside the operator (docs/planner.md "In the operator").
struct OperatorPlannerConfig {
  std::chrono::milliseconds interval{30000};
  std::string prometheus_url;  // "" = no metrics source: the planner does not scale
  std::string prometheus_window = "1m";
  std::string selector = "namespace=\"{namespace}\",kvmesh_dev_graph=\"{name}\"";
  std::string profile;  // "" = no performance profile: the planner does not scale
  std::chrono::milliseconds scale_down_window{300000};
  template <class V> void Visit(V& v) {
    v("interval", interval, "time between two planner decisions of one graph");
    v("prometheus_url", prometheus_url,
      "Prometheus base URL the planner reads router load from (empty = planner does not scale)");
    v("prometheus_window", prometheus_window, "PromQL range of rate() / histogram_quantile()");
    v("selector", selector, "label matchers of a graph's router series; {namespace} and {name} are replaced");
    v("profile", profile, "performance profile JSON (kvmesh up --planner-profile format; empty = planner does not scale)");
    v("scale_down_window", scale_down_window, "scale-down stabilization window (highest recommendation wins)");
  }
};

struct OperatorConfig {
  std::string kubeconfig;       // "" = $KUBECONFIG, in-cluster, ~/.kube/config
  std::string context;          // kubeconfig context; "" = current-context
  std::string watch_namespace;  // "" = all namespaces
  std::string host = "0.0.0.0";  // /metrics /healthz /readyz
  uint32_t port = 8080;          // 0 = pick a free port
  std::string ready_file;        // JSON {http, port, pid} once serving
  uint32_t workers = 2;          // concurrent reconciles (different graphs)
  std::chrono::milliseconds resync_period{600000};
  std::chrono::milliseconds drain_timeout{120000};
  std::chrono::milliseconds degraded_grace{300000};
  std::chrono::milliseconds api_timeout{10000};
  OperatorLeaderConfig leader_election;
  OperatorPodsConfig pods;
  OperatorPlannerConfig planner;
  template <class V> void Visit(V& v) {
    v("kubeconfig", kubeconfig, "kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)");
    v("context", context, "kubeconfig context (default current-context)");
    v("watch_namespace", watch_namespace, "only reconcile graphs in this namespace (default all)");
    v("host", host, "address of /metrics, /healthz, /readyz");
    v("port", port, "port of /metrics, /healthz, /readyz (0 = free port)");
    v("ready_file", ready_file, "JSON file {http, port, pid} written once serving");
    v("workers", workers, "graphs reconciled at once");
    v("resync_period", resync_period, "every graph is reconciled again at least this often");
    v("drain_timeout", drain_timeout, "on delete, how long to wait for worker pods to drain");
    v("degraded_grace", degraded_grace, "a pool with no ready worker for this long is Degraded");
    v("api_timeout", api_timeout, "timeout of one API request");
    v("leader_election", leader_election, "leader election");
    v("pods", pods, "how pods are built");
    v("planner", planner, "the SLA planner");
  }
  Status Validate() const;
};

}  // namespace kvmesh::op
