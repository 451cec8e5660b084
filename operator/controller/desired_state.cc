#include "operator/controller/desired_state.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <sstream>
#include <string_view>
#include <tuple>

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

constexpr char kAppName[] = "kvmesh";
constexpr char kManagedBy[] = "kvmesh-operator";
constexpr char kRouterConfigDir[] = "/etc/kvmesh";
constexpr char kRouterAuthDir[] = "/etc/kvmesh-auth";

std::string StringAt(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* key : path) {
    if (!cur->is_object()) return "";
    auto it = cur->find(key);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  return cur->is_string() ? cur->get<std::string>() : "";
}

// A YAML double-quoted scalar (JSON string syntax is valid YAML).
std::string Quoted(const std::string& s) { return json(s).dump(); }

std::string Num(double d) {
  std::ostringstream os;
  os << d;
  return os.str();
}

bool IsWholeNumber(const std::string& s) {
  if (s.empty() || s.size() > 4) return false;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size() && v > 0;
}

// Compute threads for the CPU backend: the pool's whole-number cpu request, else its limit, else 1.
std::string CpuThreads(const graph::PoolSpec& pool) {
  if (IsWholeNumber(pool.requests.cpu)) return pool.requests.cpu;
  if (IsWholeNumber(pool.limits.cpu)) return pool.limits.cpu;
  return "1";
}

std::string Namespace(const GraphMeta& m) { return m.namespace_.empty() ? "default" : m.namespace_; }

json OwnerRef(const GraphMeta& m) {
  return json::array({json{{"apiVersion", graph::kApiVersion},
                           {"kind", graph::kKind},
                           {"name", m.name},
                           {"uid", m.uid},
                           {"controller", true},
                           {"blockOwnerDeletion", true}}});
}

json Metadata(const GraphMeta& m, const std::string& name, const std::string& component) {
  return json{{"name", name},
              {"namespace", Namespace(m)},
              {"labels", ChildLabels(m.name, component)},
              {"ownerReferences", OwnerRef(m)}};
}

json Selector(const std::string& graph, const std::string& component) {
  return json{{kGraphLabel, graph}, {kComponentLabel, component}};
}

json HttpProbe(const char* path, int32_t port, int32_t period, int32_t timeout, int32_t failures) {
  return json{{"httpGet", {{"path", path}, {"port", port}}},
              {"periodSeconds", period},
              {"timeoutSeconds", timeout},
              {"failureThreshold", failures}};
}

void Probes(json& container, int32_t port, const OperatorSettings& s) {
  container["readinessProbe"] = HttpProbe("/ready", port, 5, 2, 3);
  container["livenessProbe"] = HttpProbe("/health", port, 10, 5, 6);
  container["startupProbe"] = HttpProbe("/health", port, 10, 5, s.startup_failure_threshold);
}

json EnvFieldRef(const char* name, const char* path) {
  return json{{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", path}}}}}};
}

json Resources(const graph::PoolSpec& pool) {
  json r = json::object();
  auto put = [&](const char* section, const char* key, const std::string& v) {
    if (!v.empty()) r[section][key] = v;
  };
  put("requests", "cpu", pool.requests.cpu);
  put("requests", "memory", pool.requests.memory);
  put("limits", "cpu", pool.limits.cpu);
  put("limits", "memory", pool.limits.memory);
  if (pool.gpus_per_worker > 0) {
    // Extended resources: requests default to limits; set both so the object reads the same.
    r["limits"]["nvidia.com/gpu"] = std::to_string(pool.gpus_per_worker);
    r["requests"]["nvidia.com/gpu"] = std::to_string(pool.gpus_per_worker);
  }
  return r;
}

// Non-root, no privilege escalation, no capabilities, read-only root filesystem (writable paths
// are emptyDir volumes). GPU workers add IPC_LOCK: UCX/NCCL register (pin) host memory for RDMA
// and GPU-direct transfer. That one capability is outside the `restricted` Pod Security profile,
// so GPU graphs run in a namespace labelled `baseline` (docs/operator.md).
json ContainerSecurity(bool gpu) {
  json caps = {{"drop", json::array({"ALL"})}};
  if (gpu) caps["add"] = json::array({"IPC_LOCK"});
  return json{{"allowPrivilegeEscalation", false},
              {"readOnlyRootFilesystem", true},
              {"runAsNonRoot", true},
              {"capabilities", caps}};
}

json PodSecurity(const OperatorSettings& s) {
  return json{{"runAsNonRoot", true},
              {"runAsUser", s.run_as_user},
              {"runAsGroup", s.run_as_user},
              {"fsGroup", s.run_as_user},
              {"seccompProfile", {{"type", "RuntimeDefault"}}}};
}

json Affinity(const graph::InferenceGraph& g, const std::string& component) {
  json term = {{"labelSelector", {{"matchLabels", Selector(g.name, component)}}},
               {"topologyKey", g.spec.placement.topology_key}};
  return json{{"podAntiAffinity",
               {{"preferredDuringSchedulingIgnoredDuringExecution",
                 json::array({json{{"weight", 100}, {"podAffinityTerm", term}}})}}}};
}

json TopologySpread(const graph::InferenceGraph& g, const std::string& component) {
  return json::array({json{{"maxSkew", 1},
                           {"topologyKey", g.spec.placement.topology_key},
                           {"whenUnsatisfiable", "ScheduleAnyway"},
                           {"labelSelector", {{"matchLabels", Selector(g.name, component)}}}}});
}

bool ByRoleThenName(const WorkerPod& a, const WorkerPod& b) {
  return std::tie(a.role, a.name, a.pod_ip) < std::tie(b.role, b.name, b.pod_ip);
}

bool IsPvc(const graph::InferenceGraph& g) { return g.spec.model.source.rfind("pvc://", 0) == 0; }

// pvc://CLAIM/PATH -> CLAIM.
std::string PvcClaim(const graph::InferenceGraph& g) {
  std::string rest = g.spec.model.source.substr(6);
  return rest.substr(0, rest.find('/'));
}

// Volumes and mounts every kvmesh pod shares: /tmp, the builtin-model cache, the model PVC.
void CommonVolumes(const graph::InferenceGraph& g, const OperatorSettings& s, json& volumes,
                   json& mounts) {
  volumes.push_back({{"name", "tmp"}, {"emptyDir", json::object()}});
  mounts.push_back({{"name", "tmp"}, {"mountPath", "/tmp"}});
  if (!s.cache_dir.empty()) {
    volumes.push_back({{"name", "model-cache"}, {"emptyDir", json::object()}});
    mounts.push_back({{"name", "model-cache"}, {"mountPath", s.cache_dir}});
  }
  if (IsPvc(g)) {
    volumes.push_back({{"name", "model"},
                       {"persistentVolumeClaim", {{"claimName", PvcClaim(g)}, {"readOnly", true}}}});
    mounts.push_back({{"name", "model"}, {"mountPath", s.model_mount_path}, {"readOnly", true}});
  }
}

json Deployment(const OwnedGraph& og, const std::string& component, int32_t replicas,
                json pod_labels, json annotations, json pod_spec) {
  json tmpl_md = {{"labels", std::move(pod_labels)}};
  if (!annotations.empty()) tmpl_md["annotations"] = std::move(annotations);
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", Metadata(og.meta, ChildName(og.meta.name, component), component)},
              {"spec",
               {{"replicas", replicas},
                {"selector", {{"matchLabels", Selector(og.meta.name, component)}}},
                {"template", {{"metadata", std::move(tmpl_md)}, {"spec", std::move(pod_spec)}}}}}};
}

json AgentDeployment(const OwnedGraph& og, const OperatorSettings& s, const std::string& component,
                     const graph::PoolSpec& pool, const std::string& role) {
  const graph::InferenceGraph& g = og.graph;
  const auto& sp = g.spec;
  const std::string port = std::to_string(s.agent_port);
  std::vector<std::string> args = {
      "--role", role,
      "--model", PodModelPath(g, s),
      "--served-model-name", g.ServedModelName(),
      "--host", "$(POD_IP)",
      "--port", port,
      "--agent-id", "$(POD_NAME)",
      "--drain-timeout", s.agent_drain_timeout,
      "--engine.block-size", std::to_string(sp.kv_cache.block_size),
      "--engine.kv-cache-mib", std::to_string(sp.kv_cache.device_mib),
      "--transfer.timeout", sp.disaggregation.transfer_timeout,
      "--transfer.on-failure", sp.disaggregation.on_failure,
      "--events.endpoint", "tcp://$(POD_IP):" + std::to_string(s.events_port),
      "--events.replay-endpoint", "tcp://$(POD_IP):" + std::to_string(s.replay_port),
  };
  if (!sp.disaggregation.transport.empty()) {
    args.insert(args.end(), {"--transfer.ucx-tls", sp.disaggregation.transport});
  }
  if (!s.cache_dir.empty()) args.insert(args.end(), {"--cache-dir", s.cache_dir});
  args.insert(args.end(), pool.extra_args.begin(), pool.extra_args.end());

  const bool gpu = pool.gpus_per_worker > 0;
  const std::string threads = gpu ? "1" : CpuThreads(pool);
  json container = {
      {"name", "agent"},
      {"image", s.agent_image},
      {"imagePullPolicy", s.image_pull_policy},
      {"command", json::array({s.agent_command})},
      {"args", args},
      {"env", json::array({EnvFieldRef("POD_IP", "status.podIP"), EnvFieldRef("POD_NAME", "metadata.name"),
                           json{{"name", "OPENBLAS_NUM_THREADS"}, {"value", threads}},
                           json{{"name", "KVMESH_CPU_THREADS"}, {"value", threads}}})},
      {"ports", json::array({json{{"name", "http"}, {"containerPort", s.agent_port}, {"protocol", "TCP"}},
                             json{{"name", "kv-events"}, {"containerPort", s.events_port}, {"protocol", "TCP"}},
                             json{{"name", "kv-replay"}, {"containerPort", s.replay_port}, {"protocol", "TCP"}}})},
      {"securityContext", ContainerSecurity(gpu)},
  };
  if (json r = Resources(pool); !r.empty()) container["resources"] = r;
  Probes(container, s.agent_port, s);
  json volumes = json::array(), mounts = json::array();
  CommonVolumes(g, s, volumes, mounts);
  container["volumeMounts"] = mounts;

  json pod = {{"automountServiceAccountToken", false},
              {"enableServiceLinks", false},
              {"terminationGracePeriodSeconds", s.termination_grace_seconds},
              {"securityContext", PodSecurity(s)},
              {"affinity", Affinity(g, component)},
              {"topologySpreadConstraints", TopologySpread(g, component)},
              {"containers", json::array({container})},
              {"volumes", volumes}};
  if (gpu) {
    pod["tolerations"] = json::array(
        {json{{"key", "nvidia.com/gpu"}, {"operator", "Exists"}, {"effect", "NoSchedule"}}});
  }
  json labels = ChildLabels(g.name, component);
  labels[kRoleLabel] = role;
  return Deployment(og, component, pool.replicas, std::move(labels), json::object(),
                    std::move(pod));
}

json RouterDeployment(const OwnedGraph& og, const OperatorSettings& s, const std::string& router_yaml) {
  const graph::InferenceGraph& g = og.graph;
  // Paths (model, cache, workers file) go in args, not in router.yaml: a file's contents are never
  // rewritten by the test cluster's local kubelet, which maps mount paths in args only
  // (docs/testing-operator.md), and a flag names the path as plainly for a real kubelet.
  std::vector<std::string> args = {"--config", std::string(kRouterConfigDir) + "/router.yaml",
                                   "--host", "$(POD_IP)", "--port", std::to_string(s.router_port),
                                   "--model", PodModelPath(g, s),
                                   "--workers.file", std::string(kRouterConfigDir) + "/workers.yaml"};
  if (!s.cache_dir.empty()) args.insert(args.end(), {"--cache-dir", s.cache_dir});
  json volumes = json::array(), mounts = json::array();
  CommonVolumes(g, s, volumes, mounts);
  volumes.push_back({{"name", "config"}, {"configMap", {{"name", ChildName(g.name, "router")}}}});
  mounts.push_back({{"name", "config"}, {"mountPath", kRouterConfigDir}, {"readOnly", true}});
  if (!s.router_api_keys_secret.empty()) {
    args.insert(args.end(), {"--auth.api-keys-file", std::string(kRouterAuthDir) + "/api-keys"});
    volumes.push_back({{"name", "auth"}, {"secret", {{"secretName", s.router_api_keys_secret}}}});
    mounts.push_back({{"name", "auth"}, {"mountPath", kRouterAuthDir}, {"readOnly", true}});
  }
  json container = {
      {"name", "router"},
      {"image", s.router_image},
      {"imagePullPolicy", s.image_pull_policy},
      {"command", json::array({s.router_command})},
      {"args", args},
      {"env", json::array({EnvFieldRef("POD_IP", "status.podIP"),
                           json{{"name", "OPENBLAS_NUM_THREADS"}, {"value", "1"}}})},
      {"ports", json::array({json{{"name", "http"}, {"containerPort", s.router_port}, {"protocol", "TCP"}}})},
      {"securityContext", ContainerSecurity(false)},
      {"volumeMounts", mounts},
  };
  Probes(container, s.router_port, s);
  json pod = {{"automountServiceAccountToken", false},
              {"enableServiceLinks", false},
              {"terminationGracePeriodSeconds", s.termination_grace_seconds},
              {"securityContext", PodSecurity(s)},
              {"affinity", Affinity(g, "router")},
              {"topologySpreadConstraints", TopologySpread(g, "router")},
              {"containers", json::array({container})},
              {"volumes", volumes}};
  // A new router.yaml (routing, model, block size) rolls the router; workers.yaml changes do not:
  // the router watches that file.
  json annotations = {{kConfigHashAnnotation, Fnv1aHex(router_yaml)}};
  return Deployment(og, "router", static_cast<int32_t>(g.spec.router.replicas), ChildLabels(g.name, "router"),
                    std::move(annotations), std::move(pod));
}

json Service(const OwnedGraph& og, const std::string& component, int32_t port, bool headless) {
  json spec = {{"selector", Selector(og.meta.name, component)},
               {"ports", json::array({json{{"name", "http"}, {"port", port}, {"targetPort", port},
                                           {"protocol", "TCP"}}})}};
  if (headless) {
    spec["clusterIP"] = "None";
  } else {
    spec["type"] = "ClusterIP";
  }
  return json{{"apiVersion", "v1"},
              {"kind", "Service"},
              {"metadata", Metadata(og.meta, ChildName(og.meta.name, component), component)},
              {"spec", spec}};
}

json Pdb(const OwnedGraph& og, const std::string& component) {
  return json{{"apiVersion", "policy/v1"},
              {"kind", "PodDisruptionBudget"},
              {"metadata", Metadata(og.meta, ChildName(og.meta.name, component), component)},
              {"spec", {{"maxUnavailable", 1}, {"selector", {{"matchLabels", Selector(og.meta.name, component)}}}}}};
}

}  // namespace

StatusOr<GraphMeta> ReadGraphMeta(const json& object) {
  if (!object.is_object() || !object.contains("metadata") || !object["metadata"].is_object()) {
    return InvalidArgumentError("InferenceGraph object has no metadata");
  }
  const json& md = object["metadata"];
  GraphMeta m;
  m.name = StringAt(md, {"name"});
  if (m.name.empty()) return InvalidArgumentError("InferenceGraph object has no metadata.name");
  m.namespace_ = StringAt(md, {"namespace"});
  m.uid = StringAt(md, {"uid"});
  m.resource_version = StringAt(md, {"resourceVersion"});
  m.deletion_timestamp = StringAt(md, {"deletionTimestamp"});
  if (auto it = md.find("generation"); it != md.end() && it->is_number_integer()) {
    m.generation = it->get<int64_t>();
  }
  if (auto it = md.find("finalizers"); it != md.end() && it->is_array()) {
    for (const json& f : *it) {
      if (f.is_string()) m.finalizers.push_back(f.get<std::string>());
    }
  }
  return m;
}

StatusOr<OwnedGraph> ReadOwnedGraph(const json& object) {
  OwnedGraph og;
  KVMESH_ASSIGN_OR_RETURN(og.meta, ReadGraphMeta(object));
  KVMESH_ASSIGN_OR_RETURN(og.graph, graph::InferenceGraphFromJson(object.dump()));
  return og;
}

std::vector<WorkerPod> ReadyWorkerPods(const std::vector<json>& pods) {
  std::vector<WorkerPod> out;
  for (const json& p : pods) {
    if (!p.is_object() || !p.contains("metadata")) continue;
    const json& md = p["metadata"];
    if (md.contains("deletionTimestamp") && !md["deletionTimestamp"].is_null()) continue;
    std::string role = StringAt(md, {"labels", kRoleLabel});
    if (role != "prefill" && role != "decode" && role != "aggregated") continue;
    std::string ip = StringAt(p, {"status", "podIP"});
    if (ip.empty()) continue;
    bool ready = false;
    if (p.contains("status") && p["status"].is_object()) {
      auto it = p["status"].find("conditions");
      if (it != p["status"].end() && it->is_array()) {
        for (const json& c : *it) {
          if (StringAt(c, {"type"}) == "Ready" && StringAt(c, {"status"}) == "True") ready = true;
        }
      }
    }
    if (!ready) continue;
    out.push_back({StringAt(md, {"name"}), ip, role});
  }
  std::sort(out.begin(), out.end(), ByRoleThenName);
  return out;
}

std::string DesiredObject::Key() const {
  return resource + "/" + StringAt(object, {"metadata", "name"});
}

bool HasPrefillPool(const graph::InferenceGraph& g) { return g.spec.disaggregation.mode != "off"; }

std::string DecodeRole(const graph::InferenceGraph& g) { return HasPrefillPool(g) ? "decode" : "aggregated"; }

std::string PodModelPath(const graph::InferenceGraph& g, const OperatorSettings& s) {
  if (!IsPvc(g)) return g.spec.model.source;
  std::string rest = g.spec.model.source.substr(6);
  size_t slash = rest.find('/');
  std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  return path.empty() ? s.model_mount_path : s.model_mount_path + "/" + path;
}

std::string RouterConfigYaml(const graph::InferenceGraph& g, const OperatorSettings& s) {
  const auto& sp = g.spec;
  std::ostringstream y;
  y << "# kvmesh-router config of InferenceGraph " << g.name << " (written by kvmesh-operator)\n";
  y << "served_model_name: " << Quoted(g.ServedModelName()) << "\n";
  y << "block_size: " << sp.kv_cache.block_size << "\n";
  y << "drain_timeout: " << s.agent_drain_timeout << "\n";
  y << "routing:\n";
  y << "  mode: " << Quoted(sp.router.routing_mode) << "\n";
  y << "  kv_cost: " << Quoted(sp.router.kv_cost) << "\n";
  y << "  overlap_weight: " << Num(sp.router.overlap_weight) << "\n";
  y << "  temperature: " << Num(sp.router.temperature) << "\n";
  y << "disaggregation:\n";
  y << "  mode: " << Quoted(HasPrefillPool(g) ? sp.disaggregation.mode : "off") << "\n";
  y << "  min_remote_prefill_tokens: " << sp.disaggregation.min_remote_prefill_tokens << "\n";
  y << "  max_prefill_queue: " << sp.disaggregation.max_prefill_queue << "\n";
  y << "workers:\n";
  y << "  file_poll_interval: " << s.workers_file_poll_interval << "\n";
  return y.str();
}

std::string WorkersFileYaml(std::vector<WorkerPod> workers, const OperatorSettings& s) {
  // Sorted, so the same pods always give the same bytes (no spurious ConfigMap write).
  std::sort(workers.begin(), workers.end(), ByRoleThenName);
  std::ostringstream y;
  y << "# ready worker pods (written by kvmesh-operator)\n";
  if (workers.empty()) {
    y << "workers: []\n";
    return y.str();
  }
  y << "workers:\n";
  for (const WorkerPod& w : workers) {
    const bool v6 = w.pod_ip.find(':') != std::string::npos;
    std::string url = "http://" + (v6 ? "[" + w.pod_ip + "]" : w.pod_ip) + ":" + std::to_string(s.agent_port);
    y << "  - url: " << Quoted(url) << "\n";
    y << "    role: " << w.role << "\n";
    y << "    name: " << Quoted(w.name) << "\n";
  }
  return y.str();
}

DesiredObjects BuildDesired(const OwnedGraph& og, const OperatorSettings& s,
                            const std::vector<WorkerPod>& ready_workers) {
  const graph::InferenceGraph& g = og.graph;
  const bool prefill = HasPrefillPool(g);
  DesiredObjects out;

  const std::string router_yaml = RouterConfigYaml(g, s);
  std::vector<WorkerPod> workers;
  for (const WorkerPod& w : ready_workers) {
    // A prefill pod left from a spec with a prefill pool is not routed to once the pool is gone;
    // decode pods of either role stay routable while the pool rolls to its new role.
    if (w.role == "prefill" && !prefill) continue;
    workers.push_back(w);
  }
  json cm = {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", Metadata(og.meta, ChildName(g.name, "router"), "router")},
             {"data", {{"router.yaml", router_yaml}, {"workers.yaml", WorkersFileYaml(workers, s)}}}};
  out.push_back({"configmaps", std::move(cm)});

  out.push_back({"services", Service(og, "router", s.router_port, false)});
  if (prefill) out.push_back({"services", Service(og, "prefill", s.agent_port, true)});
  out.push_back({"services", Service(og, "decode", s.agent_port, true)});

  if (prefill) {
    out.push_back({"deployments", AgentDeployment(og, s, "prefill", g.spec.prefill, "prefill")});
  }
  out.push_back({"deployments", AgentDeployment(og, s, "decode", g.spec.decode, DecodeRole(g))});
  out.push_back({"deployments", RouterDeployment(og, s, router_yaml)});

  if (prefill && g.spec.prefill.replicas > 1) out.push_back({"poddisruptionbudgets", Pdb(og, "prefill")});
  if (g.spec.decode.replicas > 1) out.push_back({"poddisruptionbudgets", Pdb(og, "decode")});
  return out;
}

std::vector<std::pair<std::string, std::string>> AllChildKeys(const std::string& graph) {
  std::vector<std::pair<std::string, std::string>> keys;
  keys.emplace_back("configmaps", ChildName(graph, "router"));
  for (const char* c : {"router", "prefill", "decode"}) keys.emplace_back("services", ChildName(graph, c));
  for (const char* c : {"prefill", "decode", "router"}) keys.emplace_back("deployments", ChildName(graph, c));
  for (const char* c : {"prefill", "decode"}) keys.emplace_back("poddisruptionbudgets", ChildName(graph, c));
  return keys;
}

std::string ChildName(const std::string& graph, const std::string& component) {
  return graph + "-" + component;
}

std::string RouterEndpoint(const GraphMeta& meta, const OperatorSettings& s) {
  return "http://" + ChildName(meta.name, "router") + "." + Namespace(meta) + ".svc:" +
         std::to_string(s.router_port);
}

json ChildLabels(const std::string& graph, const std::string& component) {
  return json{{"app.kubernetes.io/name", kAppName},
              {kInstanceLabel, graph},
              {kComponentLabel, component},
              {"app.kubernetes.io/managed-by", kManagedBy},
              {kGraphLabel, graph}};
}

std::string Fnv1aHex(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace kvmesh::controller
