// Writes a placement's pools into member clusters (see member_clusters.h).
#include "operator/placement/member_clusters.h"

#include <algorithm>
#include <set>
#include <utility>

#include "operator/controller/diff.h"
#include "operator/controller/status.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;

std::string Namespace(const controller::OwnedGraph& g) {
  return g.meta.namespace_.empty() ? "default" : g.meta.namespace_;
}

StatusOr<kube::ResourceRef> ResourceFor(const std::string& resource) {
  if (resource == "deployments") return kube::Deployments();
  if (resource == "services") return kube::Services();
  if (resource == "configmaps") return kube::ConfigMaps();
  if (resource == "poddisruptionbudgets") return kube::PodDisruptionBudgets();
  return InternalError("member clusters: no resource mapping for '" + resource + "'");
}

// Pod affinity of `component`'s pods toward `peer`'s pods of the same graph on `key`.
json FabricAffinity(const std::string& graph, const std::string& peer, const MemberWriterOptions& o,
                    bool required) {
  json term = {{"labelSelector", {{"matchLabels", {{controller::kGraphLabel, graph}, {controller::kComponentLabel, peer}}}}},
               {"topologyKey", o.fabric_domain_key}};
  if (required) return json{{"requiredDuringSchedulingIgnoredDuringExecution", json::array({term})}};
  return json{{"preferredDuringSchedulingIgnoredDuringExecution",
               json::array({json{{"weight", 100}, {"podAffinityTerm", term}}})}};
}

bool IsUnreachable(const Status& s) {
  if (s.ok()) return false;
  return kube::GetApiError(s).http_status == 0 &&
         (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded);
}

StatusOr<std::string> Base64Decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=' || c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    if (v < 0) return InvalidArgumentError("not base64 (character '" + std::string(1, c) + "')");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// Applies the member's desired objects and deletes the graph's other children there.
void SyncOne(const controller::OwnedGraph& g, const ClusterShare& share, kube::KubeClient& client,
             const controller::OperatorSettings& settings, const MemberWriterOptions& options, MemberStatus& st) {
  const std::string ns = Namespace(g);
  auto fail = [&](const Status& s, const std::string& what) {
    if (IsUnreachable(s)) st.reachable = false;
    if (st.error.empty()) st.error = what + ": " + s.ToString();
  };

  std::vector<controller::WorkerPod> ready;
  if (share.decode_replicas > 0) {
    kube::ListOptions lo;
    lo.label_selector = std::string(controller::kGraphLabel) + "=" + g.meta.name;
    auto pods = client.List(kube::Pods(), ns, lo);
    if (!pods.ok()) return fail(pods.status(), "list pods");
    ready = controller::ReadyWorkerPods(pods->items);
    const std::map<std::string, int32_t> counts = controller::ReadyPodCounts(pods->items);
    auto count = [&](const char* component) {
      auto it = counts.find(component);
      return it == counts.end() ? 0 : it->second;
    };
    st.ready_known = true;
    st.prefill_ready = count("prefill");
    st.decode_ready = count("decode");
  }
  const controller::DesiredObjects desired = BuildMemberDesired(g, share, settings, options, ready);
  std::set<std::pair<std::string, std::string>> wanted;
  for (const controller::DesiredObject& d : desired) {
    const std::string name = d.object["metadata"]["name"].get<std::string>();
    wanted.emplace(d.resource, name);
    auto ref = ResourceFor(d.resource);
    if (!ref.ok()) return fail(ref.status(), d.Key());
    auto live = client.Get(*ref, ns, name);
    if (live.ok() && !controller::NeedsApply(d.object, *live)) {
      st.unchanged++;
      continue;
    }
    if (!live.ok() && !kube::IsNotFound(live.status())) return fail(live.status(), "get " + d.Key());
    kube::PatchOptions po;
    po.field_manager = kHubFieldManager;
    po.force = true;
    auto applied = client.Patch(*ref, ns, name, kube::PatchType::kApply, d.object, po);
    if (!applied.ok()) return fail(applied.status(), "apply " + d.Key());
    st.applied++;
  }
  // Children this cluster no longer needs: only ones the hub wrote (member label set).
  for (const auto& [resource, name] : controller::AllChildKeys(g.meta.name)) {
    if (wanted.count({resource, name})) continue;
    auto ref = ResourceFor(resource);
    if (!ref.ok()) return fail(ref.status(), resource + "/" + name);
    auto live = client.Get(*ref, ns, name);
    if (!live.ok()) {
      if (kube::IsNotFound(live.status())) continue;
      return fail(live.status(), "get " + resource + "/" + name);
    }
    const json& labels = (*live)["metadata"].value("labels", json::object());
    if (!labels.contains(kMemberClusterLabel)) continue;  // not the hub's: leave it alone
    Status s = client.Delete(*ref, ns, name, "Background");
    if (!s.ok() && !kube::IsNotFound(s)) return fail(s, "delete " + resource + "/" + name);
    st.deleted++;
  }
}

}  // namespace

controller::DesiredObjects BuildMemberDesired(const controller::OwnedGraph& g, const ClusterShare& share,
                                              const controller::OperatorSettings& settings,
                                              const MemberWriterOptions& options,
                                              const std::vector<controller::WorkerPod>& ready_workers) {
  if (share.decode_replicas <= 0) return {};
  controller::OwnedGraph member = g;
  member.graph.spec.decode.replicas = share.decode_replicas;
  member.graph.spec.prefill.replicas = share.prefill_replicas;
  controller::DesiredObjects objects = controller::BuildDesired(member, settings, ready_workers);
  const bool prefill = controller::HasPrefillPool(member.graph);
  const std::string hub_graph = Namespace(g) + "/" + g.meta.name;
  for (controller::DesiredObject& d : objects) {
    json& meta = d.object["metadata"];
    meta.erase("ownerReferences");
    meta["labels"][kMemberClusterLabel] = share.cluster;
    meta["annotations"][kHubGraphAnnotation] = hub_graph;
    if (d.resource != "deployments" || !prefill) continue;
    const std::string component = meta["labels"].value(controller::kComponentLabel, "");
    if (component != "prefill" && component != "decode") continue;
    const std::string peer = component == "prefill" ? "decode" : "prefill";
    json& affinity = d.object["spec"]["template"]["spec"]["affinity"];
    affinity["podAffinity"] = FabricAffinity(g.meta.name, peer, options,
                                             options.require_fabric_affinity && component == "prefill");
  }
  return objects;
}

std::vector<MemberStatus> SyncMembers(const controller::OwnedGraph& g, const PlacementResult& placement,
                                      const std::map<std::string, kube::KubeClient*>& members,
                                      const controller::OperatorSettings& settings,
                                      const MemberWriterOptions& options) {
  std::vector<MemberStatus> out;
  std::set<std::string> done;
  auto run = [&](const ClusterShare& share) {
    MemberStatus st;
    st.cluster = share.cluster;
    st.prefill_replicas = share.prefill_replicas;
    st.decode_replicas = share.decode_replicas;
    auto it = members.find(share.cluster);
    if (it == members.end() || it->second == nullptr) {
      st.reachable = false;
      st.error = "no client for member cluster " + share.cluster;
    } else {
      SyncOne(g, share, *it->second, settings, options, st);
    }
    done.insert(share.cluster);
    out.push_back(std::move(st));
  };
  for (const ClusterShare& share : placement.clusters) run(share);
  for (const auto& [name, client] : members) {
    if (!done.count(name)) run(ClusterShare{name, 0, 0, 0, 0});
  }
  return out;
}

StatusOr<kube::KubeConfig> MemberKubeConfigFromSecret(kube::KubeClient& hub, const std::string& ns,
                                                      const std::string& secret) {
  const std::string where = "kubeconfig Secret " + ns + "/" + secret;
  auto obj = hub.Get(kube::Secrets(), ns, secret);
  if (!obj.ok()) return obj.status().WithContext(where);
  const json data = obj->value("data", json::object());
  for (const char* key : kKubeconfigSecretKeys) {
    if (!data.contains(key) || !data[key].is_string()) continue;
    auto text = Base64Decode(data[key].get<std::string>());
    if (!text.ok()) return InvalidArgumentError(where + " data." + key + ": " + text.status().message());
    auto config = kube::LoadKubeconfigFromText(*text);
    if (!config.ok()) return config.status().WithContext(where + " data." + key);
    return config;
  }
  return InvalidArgumentError(where + " has no data key kubeconfig (or value)");
}

std::map<std::string, kube::KubeClient*> MemberClients::Pointers() const {
  std::map<std::string, kube::KubeClient*> out;
  for (const auto& [name, c] : clients) out[name] = c.get();
  return out;
}

MemberClients ConnectMembers(kube::KubeClient& hub, const graph::InferenceGraph& g,
                             const kube::KubeClientOptions& options) {
  MemberClients out;
  const std::string ns = g.namespace_.empty() ? "default" : g.namespace_;
  for (const graph::ClusterSpec& c : g.spec.placement.clusters) {
    if (c.kubeconfig_secret.empty()) {
      out.errors[c.name] = "spec.placement.clusters[" + c.name + "].kubeconfigSecret is empty";
      continue;
    }
    auto config = MemberKubeConfigFromSecret(hub, ns, c.kubeconfig_secret);
    if (!config.ok()) {
      out.errors[c.name] = config.status().ToString();
      continue;
    }
    auto client = kube::CreateKubeClient(*config, options);
    if (!client.ok()) {
      out.errors[c.name] = client.status().ToString();
      continue;
    }
    out.clients[c.name] = std::move(*client);
  }
  return out;
}

std::string MemberStatusesToJson(const std::vector<MemberStatus>& statuses) {
  json j = json::array();
  for (const MemberStatus& s : statuses) {
    j.push_back({{"name", s.cluster},
                 {"reachable", s.reachable},
                 {"prefillReplicas", s.prefill_replicas},
                 {"decodeReplicas", s.decode_replicas},
                 {"applied", s.applied},
                 {"unchanged", s.unchanged},
                 {"deleted", s.deleted},
                 {"error", s.error}});
    if (s.ready_known) {
      j.back()["prefillReadyReplicas"] = s.prefill_ready;
      j.back()["decodeReadyReplicas"] = s.decode_ready;
    }
  }
  return j.dump(2);
}

}  // namespace kvmesh::placement
