#include "operator/placement/hub_controller.h"

#include <algorithm>
#include <limits>
#include <set>
#include <type_traits>

#include "common/log.h"
#include "operator/controller/finalizer.h"
#include "operator/controller/status.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;
constexpr char kComponent[] = "hub";
constexpr int kMaxCopiesPerPass = 4;  // bounds the time a pass spends copying

std::string Annotation(const json& obj, const std::string& key) {
  const json& md = obj.value("metadata", json::object());
  auto a = md.find("annotations");
  if (a == md.end() || !a->is_object()) return "";
  auto v = a->find(key);
  return v != a->end() && v->is_string() ? v->get<std::string>() : "";
}

// The entries of a member-endpoint annotation (parsed by `parse`) for the clusters in the spec; a
// malformed annotation is logged and read as empty.
template <typename Parse>
auto MemberEndpoints(const json& graph_object, const char* annotation, Parse parse,
                     const std::set<std::string>& spec_clusters, const std::string& key) {
  std::decay_t<decltype(*parse(std::string()))> out;
  const std::string text = Annotation(graph_object, annotation);
  if (text.empty()) return out;
  auto parsed = parse(text);
  if (!parsed.ok()) {
    KVMESH_LOG_WARN(kComponent, "ignoring bad annotation", {"graph", key}, {"annotation", annotation},
                    {"error", parsed.status().ToString()});
    return out;
  }
  for (auto& [name, endpoint] : *parsed) {
    if (spec_clusters.count(name) != 0) out[name] = std::move(endpoint);
  }
  return out;
}

bool IsMultiCluster(const json& obj) {
  const json& spec = obj.value("spec", json::object());
  auto p = spec.find("placement");
  if (p == spec.end() || !p->is_object()) return false;
  auto c = p->find("clusters");
  return c != p->end() && c->is_array() && !c->empty();
}

// name -> kubeconfigSecret of the members listed in status.clusters: the hub's record of where it
// placed the graph, which outlives the spec entry.
std::map<std::string, std::string> RecordedClusters(const json& obj) {
  std::map<std::string, std::string> out;
  auto status = obj.find("status");
  if (status == obj.end() || !status->is_object()) return out;
  auto clusters = status->find("clusters");
  if (clusters == status->end() || !clusters->is_array()) return out;
  for (const json& e : *clusters) {
    if (!e.is_object()) continue;
    auto name = e.find("name");
    auto secret = e.find("kubeconfigSecret");
    if (name == e.end() || !name->is_string() || secret == e.end() || !secret->is_string()) continue;
    if (!name->get<std::string>().empty() && !secret->get<std::string>().empty()) out[*name] = *secret;
  }
  return out;
}

bool Clean(const MemberStatus& m) { return m.reachable && m.error.empty(); }

bool Abandoned(const HubPassResult& result, const std::string& cluster) {
  return std::find(result.abandoned.begin(), result.abandoned.end(), cluster) != result.abandoned.end();
}

// The fields every status.clusters entry carries (docs/placement.md); the sync pass adds the
// placement's (applied, unchanged, healthy, region, heat).
json MemberEntry(const MemberStatus& m, const std::string& secret, int32_t prefill, int32_t decode,
                 const std::map<std::string, std::string>& unreachable_since_text) {
  json e = {{"name", m.cluster},
            {"kubeconfigSecret", secret},
            {"prefill", {{"replicas", prefill}}},
            {"decode", {{"replicas", decode}}},
            {"reachable", m.reachable},
            {"deleted", m.deleted}};
  if (!m.error.empty()) e["error"] = m.error;
  if (auto u = unreachable_since_text.find(m.cluster); u != unreachable_since_text.end()) {
    e["unreachableSince"] = u->second;
  }
  return e;
}

// Members whose client could not be made (Secret missing or bad) and that SyncMembers therefore
// did not visit: they count as unreachable.
void AddUnconnected(const MemberClients& clients, std::vector<MemberStatus>& members) {
  for (const auto& [cluster, error] : clients.errors) {
    auto seen = std::find_if(members.begin(), members.end(), [&](const MemberStatus& m) { return m.cluster == cluster; });
    if (seen != members.end()) {
      seen->error = error;
      continue;
    }
    MemberStatus m;
    m.cluster = cluster;
    m.reachable = false;
    m.error = error;
    members.push_back(std::move(m));
  }
}

}  // namespace

Status HubConfig::Validate() const {
  if (interval.count() <= 0) return InvalidArgumentError("hub.interval: must be > 0");
  if (unhealthy_after.count() < 0) return InvalidArgumentError("hub.unhealthy_after: must be >= 0");
  if (heat_max_age.count() < 0) return InvalidArgumentError("hub.heat_max_age: must be >= 0");
  if (member_timeout.count() <= 0) return InvalidArgumentError("hub.member_timeout: must be > 0");
  if (!(kv_bytes_per_token > 0)) {
    return InvalidArgumentError("hub.kv_bytes_per_token: must be > 0, got " + std::to_string(kv_bytes_per_token));
  }
  if (fabric_domain_key.empty()) return InvalidArgumentError("hub.fabric_domain_key: must not be empty");
  if (copy_interval.count() < 0) return InvalidArgumentError("hub.copy_interval: must be >= 0");
  if (copy_timeout.count() <= 0) return InvalidArgumentError("hub.copy_timeout: must be > 0");
  return Status::Ok();
}

struct HubController::GraphState {
  GraphState(HeatCollectorOptions o, std::chrono::milliseconds timeout, std::chrono::milliseconds copy_timeout)
      : heat(std::move(o)), copier(timeout, copy_timeout) {}
  HeatCollector heat;
  PrefixCopier copier;
  std::map<std::pair<std::string, std::string>, SteadyTime> copied_at;  // (root, target) -> last try
  std::map<std::string, json> last_copy;  // target cluster -> status.clusters[].lastPrefixCopy
  std::map<std::string, SteadyTime> unreachable_since;  // cluster -> first failed sync of this run
  std::map<std::string, std::string> unreachable_since_text;  // the same as RFC 3339 (status)
};

HubController::HubController(kube::KubeClient* hub, HubControllerOptions options)
    : hub_(hub), options_(std::move(options)) {
  MetricsRegistry& r = options_.metrics != nullptr ? *options_.metrics : DefaultMetricsRegistry();
  auto sync = r.AddCounter("kvmesh_hub_sync_total",
                           "Member syncs by the hub controller, by cluster and result (ok, error, unreachable)",
                           {"cluster", "result"});
  auto passes = r.AddCounter("kvmesh_hub_passes_total",
                             "Hub passes over one InferenceGraph, by result (ok, error)", {"result"});
  auto healthy = r.AddGauge("kvmesh_hub_cluster_healthy",
                            "1 while a member cluster gets a share, 0 once it stayed unreachable past the grace period",
                            {"graph", "cluster"});
  auto share = r.AddGauge("kvmesh_hub_cluster_replicas",
                          "Replicas placed in a member cluster, by pool (prefill, decode)",
                          {"graph", "cluster", "pool"});
  // Registration only fails on a name clash with another family: a programming error.
  if (sync.ok()) sync_total_ = *sync;
  if (passes.ok()) passes_total_ = *passes;
  if (healthy.ok()) healthy_ = *healthy;
  if (share.ok()) share_ = *share;
  auto rate = r.AddGauge("kvmesh_hub_cluster_request_rate",
                         "Requests/s at a member cluster as its router or agents report them (the demand placed "
                         "by); NaN while the member's heat is unknown, warming or not configured",
                         {"graph", "cluster"});
  if (rate.ok()) request_rate_ = *rate;
  auto abandoned = r.AddCounter("kvmesh_hub_members_abandoned_total",
                                "Member clusters the hub stopped cleaning after --hub.unhealthy-after (graph deleted, or "
                                "the cluster dropped from its spec): their kvmesh objects stay there",
                                {"cluster"});
  if (abandoned.ok()) abandoned_total_ = *abandoned;
  auto copies = r.AddCounter("kvmesh_hub_prefix_copies_total",
                             "Prefix copies the hub ran for replicate decisions, by graph, target cluster and "
                             "result (ok, error)",
                             {"graph", "cluster", "result"});
  if (copies.ok()) copies_total_ = *copies;
  auto bytes = r.AddCounter("kvmesh_hub_prefix_copy_bytes_total",
                            "KV bytes pulled into a target cluster by the hub's prefix copies", {"graph", "cluster"});
  if (bytes.ok()) copy_bytes_total_ = *bytes;
}

void HubController::CopyPrefixes(const std::string& key, const PlacementInput& input,
                                 const std::map<std::string, std::vector<std::string>>& agents, GraphState& st,
                                 SteadyTime now, HubPassResult& result) {
  if (options_.config.copy_interval.count() == 0) return;
  std::map<std::string, const PrefixHeat*> heat_of;
  for (const PrefixHeat& h : input.heat) heat_of[h.root] = &h;
  auto agents_of = [&](const std::string& cluster) {
    auto a = agents.find(cluster);
    return a != agents.end() ? a->second : std::vector<std::string>();
  };
  int tried = 0;
  for (const PrefixDecision& d : result.placement.prefixes) {
    if (d.action != PrefixAction::kReplicate || tried >= kMaxCopiesPerPass) continue;
    auto h = heat_of.find(d.root);
    if (h == heat_of.end() || h->second->blocks.empty()) continue;  // a cache family: no chain to name
    auto last = st.copied_at.find({d.root, d.target});
    if (last != st.copied_at.end() && now - last->second < options_.config.copy_interval) continue;
    st.copied_at[{d.root, d.target}] = now;
    ++tried;
    HubPassResult::Copy c{d.root, d.source, d.target, st.copier.Copy(h->second->blocks, agents_of(d.source),
                                                                      agents_of(d.target))};
    const PrefixCopyResult& r = c.result;
    if (r.ok) {
      KVMESH_LOG_INFO(kComponent, "prefix copied", {"graph", key}, {"root", d.root}, {"from", d.source},
                      {"to", d.target}, {"imported_blocks", std::to_string(r.imported_blocks)},
                      {"already_cached_blocks", std::to_string(r.already_cached_blocks)},
                      {"bytes", std::to_string(r.bytes)});
    } else {
      KVMESH_LOG_WARN(kComponent, "prefix copy failed", {"graph", key}, {"root", d.root}, {"from", d.source},
                      {"to", d.target}, {"error", r.error});
    }
    if (copies_total_ != nullptr) copies_total_->WithLabels({key, d.target, r.ok ? "ok" : "error"}).Inc();
    if (copy_bytes_total_ != nullptr && r.bytes > 0) {
      copy_bytes_total_->WithLabels({key, d.target}).Inc(static_cast<double>(r.bytes));
    }
    json entry = {{"root", d.root},
                  {"source", d.source},
                  {"time", controller::FormatRfc3339(std::chrono::system_clock::now())},
                  {"result", r.ok ? "ok" : "error"},
                  {"exportedBlocks", r.exported_blocks},
                  {"importedBlocks", r.imported_blocks},
                  {"alreadyCachedBlocks", r.already_cached_blocks},
                  {"bytes", r.bytes}};
    if (!r.ok) entry["error"] = r.error;
    st.last_copy[d.target] = std::move(entry);
    result.copies.push_back(std::move(c));
  }
}

HubController::~HubController() { Stop(); }

SteadyTime HubController::Now() const {
  return options_.clock != nullptr ? options_.clock->Now() : std::chrono::steady_clock::now();
}

StatusOr<HubPassResult> HubController::SyncGraph(const json& graph_object) {
  HubPassResult result;
  const bool multi = IsMultiCluster(graph_object);
  const bool ours = controller::HasFinalizer(graph_object, kHubFinalizer);
  const bool deleting = controller::BeingDeleted(graph_object);
  if (!ours && (!multi || deleting)) {
    result.skipped = true;
    return result;
  }
  KVMESH_ASSIGN_OR_RETURN(controller::OwnedGraph og, controller::ReadOwnedGraph(graph_object));
  og.graph.namespace_ = og.meta.namespace_;
  og.graph.name = og.meta.name;
  const std::string key = og.meta.namespace_ + "/" + og.meta.name;
  auto& slot = graphs_[key];
  if (!slot) {
    HeatCollectorOptions ho;
    ho.max_age = options_.config.heat_max_age;
    ho.timeout = options_.config.member_timeout;
    ho.router_api_key = options_.config.router_api_key;
    ho.kv_bytes_per_token = options_.config.kv_bytes_per_token;
    ho.clock = options_.clock;
    slot = std::make_unique<GraphState>(ho, options_.config.member_timeout, options_.config.copy_timeout);
  }
  GraphState& st = *slot;
  const SteadyTime now = Now();

  // 1. Members, through their kubeconfig Secrets.
  kube::KubeClientOptions co;
  co.timeout = options_.config.member_timeout;
  co.max_retries = 1;
  co.initial_backoff = std::chrono::milliseconds(20);
  co.user_agent = "kvmesh-hub";
  // The spec's members, and those status.clusters records that the spec dropped since: they still
  // hold what the hub put there.
  std::set<std::string> spec_clusters;
  std::map<std::string, std::string> secret_of;
  for (const auto& c : og.graph.spec.placement.clusters) {
    spec_clusters.insert(c.name);
    secret_of[c.name] = c.kubeconfig_secret;
  }
  graph::InferenceGraph targets = og.graph;
  for (const auto& [name, secret] : RecordedClusters(graph_object)) {
    if (!secret_of.emplace(name, secret).second) continue;
    targets.spec.placement.clusters.push_back(graph::ClusterSpec{name, secret, "", 0});
  }
  MemberClients clients = ConnectMembers(*hub_, targets, co);
  for (auto it = st.unreachable_since.begin(); it != st.unreachable_since.end();) {
    if (secret_of.count(it->first) == 0) {
      st.unreachable_since_text.erase(it->first);
      it = st.unreachable_since.erase(it);
    } else {
      ++it;
    }
  }

  if (deleting || !multi) return CleanUp(graph_object, og, clients, secret_of, st, std::move(result));
  if (!ours) {
    // Before the first member write, so that nothing the hub creates can outlive the graph.
    auto added = controller::UpdateFinalizer(*hub_, kube::InferenceGraphs(), graph_object, kHubFinalizer, true);
    if (!added.ok()) {
      if (passes_total_ != nullptr) passes_total_->WithLabels({"error"}).Inc();
      return Status(added.status().code(), "add finalizer " + std::string(kHubFinalizer) + " to " + key + ": " +
                                               added.status().message());
    }
  }

  // 2. A member that failed before and answers now is healthy again at once.
  kube::ListOptions probe;
  probe.label_selector = std::string(controller::kGraphLabel) + "=" + og.meta.name;
  for (auto it = st.unreachable_since.begin(); it != st.unreachable_since.end();) {
    auto c = clients.clients.find(it->first);
    if (c != clients.clients.end() && c->second->List(kube::Deployments(), og.meta.namespace_, probe).ok()) {
      KVMESH_LOG_INFO(kComponent, "member answers again", {"graph", key}, {"cluster", it->first});
      st.unreachable_since_text.erase(it->first);
      it = st.unreachable_since.erase(it);
    } else {
      ++it;
    }
  }

  // 3. Heat and demand, then placement.
  // Members without a kvmesh-router the hub can reach are read through their agents' inventories.
  const auto routers = MemberEndpoints(graph_object, kMemberRoutersAnnotation, ParseMemberRouters, spec_clusters, key);
  const auto agents = MemberEndpoints(graph_object, kMemberAgentsAnnotation, ParseMemberAgents, spec_clusters, key);
  result.heat = st.heat.Collect(routers, agents);
  PlacementInput input = InputFromGraph(og.graph);
  auto past_grace = [&](const std::string& cluster) {
    auto u = st.unreachable_since.find(cluster);
    return u != st.unreachable_since.end() && now - u->second >= options_.config.unhealthy_after;
  };
  for (Cluster& c : input.clusters) c.healthy = !past_grace(c.name);
  st.heat.FillInput(result.heat, input);

  MemberWriterOptions wo;
  wo.fabric_domain_key = options_.config.fabric_domain_key;
  wo.require_fabric_affinity = options_.config.require_fabric_affinity;
  auto place_and_sync = [&]() -> Status {
    auto placed = Place(input);
    if (!placed.ok()) return placed.status();
    result.placement = std::move(*placed);
    result.members = SyncMembers(og, result.placement, clients.Pointers(), options_.settings, wo);
    AddUnconnected(clients, result.members);
    for (MemberStatus& m : result.members) {
      if (spec_clusters.count(m.cluster) == 0) continue;  // dropped from the spec: below
      if (!m.reachable) {
        if (st.unreachable_since.emplace(m.cluster, now).second) {
          st.unreachable_since_text[m.cluster] = controller::FormatRfc3339(std::chrono::system_clock::now());
        }
      } else {
        st.unreachable_since.erase(m.cluster);
        st.unreachable_since_text.erase(m.cluster);
      }
    }
    return Status::Ok();
  };
  Status ps = place_and_sync();
  // 4. A member whose grace period ended in this pass: move its share now.
  bool moved = false;
  for (Cluster& c : input.clusters) {
    if (c.healthy && past_grace(c.name)) {
      KVMESH_LOG_WARN(kComponent, "member unreachable past the grace period: moving its share",
                      {"graph", key}, {"cluster", c.name});
      c.healthy = false;
      moved = true;
    }
  }
  if (ps.ok() && moved) ps = place_and_sync();
  if (!ps.ok()) {
    if (passes_total_ != nullptr) passes_total_->WithLabels({"error"}).Inc();
    return ps;
  }

  // Copies for the replicate decisions, now that every pool has its place.
  CopyPrefixes(key, input, agents, st, now, result);

  // Members dropped from the spec: cleaned (forgotten), still failing (kept, retried), or given up.
  std::vector<MemberStatus> dropped;
  for (const MemberStatus& m : result.members) {
    if (spec_clusters.count(m.cluster) == 0) dropped.push_back(m);
  }
  TrackFailures(st, key, dropped, now, result);
  auto listed = [&](const MemberStatus& m) {
    if (spec_clusters.count(m.cluster) != 0) return true;
    return !Clean(m) && !Abandoned(result, m.cluster);
  };

  // 5. status.clusters.
  std::map<std::string, const Cluster*> spec_of;
  for (const Cluster& c : input.clusters) spec_of[c.name] = &c;
  json clusters = json::array();
  for (const MemberStatus& m : result.members) {
    CountSync(m);
    if (healthy_ != nullptr && spec_of.count(m.cluster) != 0) {
      healthy_->WithLabels({key, m.cluster}).Set(spec_of[m.cluster]->healthy ? 1 : 0);
    }
    SetShare(key, m);
    if (!listed(m)) continue;
    json e = MemberEntry(m, secret_of[m.cluster], m.prefill_replicas, m.decode_replicas,
                         st.unreachable_since_text);
    if (m.ready_known) {  // else (unreachable, no share): left out, not reported as 0
      e["prefill"]["readyReplicas"] = m.prefill_ready;
      e["decode"]["readyReplicas"] = m.decode_ready;
    }
    e["applied"] = m.applied;
    e["unchanged"] = m.unchanged;
    if (auto s = spec_of.find(m.cluster); s != spec_of.end()) {
      e["healthy"] = s->second->healthy;
      if (!s->second->region.empty()) e["region"] = s->second->region;
    }
    auto h = result.heat.find(m.cluster);
    e["heat"] = HeatStateName(h == result.heat.end() ? HeatState::kNone : h->second.state);
    if (request_rate_ != nullptr && spec_of.count(m.cluster) != 0) {
      const bool known = h != result.heat.end() && h->second.RatesKnown();
      request_rate_->WithLabels({key, m.cluster})
          .Set(known ? h->second.request_rate : std::numeric_limits<double>::quiet_NaN());
    }
    if (h != result.heat.end() && !h->second.error.empty()) e["heatError"] = h->second.error;
    if (auto lc = st.last_copy.find(m.cluster); lc != st.last_copy.end()) e["lastPrefixCopy"] = lc->second;
    clusters.push_back(std::move(e));
  }
  KVMESH_RETURN_IF_ERROR(WriteStatusClusters(graph_object, key, clusters, result));
  if (passes_total_ != nullptr) passes_total_->WithLabels({"ok"}).Inc();
  return result;
}

void HubController::CountSync(const MemberStatus& m) {
  if (sync_total_ == nullptr) return;
  const char* r = !m.reachable ? "unreachable" : m.error.empty() ? "ok" : "error";
  sync_total_->WithLabels({m.cluster, r}).Inc();
}

void HubController::SetShare(const std::string& key, const MemberStatus& m) {
  if (share_ == nullptr) return;
  share_->WithLabels({key, m.cluster, "prefill"}).Set(m.prefill_replicas);
  share_->WithLabels({key, m.cluster, "decode"}).Set(m.decode_replicas);
}

Status HubController::WriteStatusClusters(const json& graph_object, const std::string& key, const json& clusters,
                                          HubPassResult& result) {
  result.status_clusters = clusters;
  const json& status = graph_object.value("status", json::object());
  const json previous = status.is_object() && status.contains("clusters") ? status["clusters"] : json();
  // null (absent) and [] are the same to a reader; clean-up of a graph that never had members
  // writes nothing.
  const bool empty_now = clusters.is_null() || (clusters.is_array() && clusters.empty());
  if (previous == clusters || (empty_now && previous.is_null())) return Status::Ok();
  json patch = {{"status", {{"clusters", clusters}}}};
  kube::PatchOptions po;
  po.status = true;
  const json& md = graph_object.value("metadata", json::object());
  auto w = hub_->Patch(kube::InferenceGraphs(), md.value("namespace", ""), md.value("name", ""), kube::PatchType::kMerge,
                       patch, po);
  if (!w.ok() && !kube::IsNotFound(w.status())) {
    if (passes_total_ != nullptr) passes_total_->WithLabels({"error"}).Inc();
    return Status(w.status().code(), "write status.clusters of " + key + ": " + w.status().message());
  }
  result.status_written = w.ok();
  return Status::Ok();
}

bool HubController::TrackFailures(GraphState& st, const std::string& key, const std::vector<MemberStatus>& members,
                                  SteadyTime now, HubPassResult& result) {
  bool pending = false;
  for (const MemberStatus& m : members) {
    if (Clean(m)) {
      st.unreachable_since.erase(m.cluster);
      st.unreachable_since_text.erase(m.cluster);
      continue;
    }
    if (st.unreachable_since.emplace(m.cluster, now).second) {
      st.unreachable_since_text[m.cluster] = controller::FormatRfc3339(std::chrono::system_clock::now());
    }
    if (now - st.unreachable_since[m.cluster] < options_.config.unhealthy_after) {
      pending = true;
      continue;
    }
    KVMESH_LOG_WARN(kComponent, "giving up cleaning a member: its kvmesh objects stay there", {"graph", key},
                    {"cluster", m.cluster}, {"error", m.error});
    if (abandoned_total_ != nullptr) abandoned_total_->WithLabels({m.cluster}).Inc();
    result.abandoned.push_back(m.cluster);
    st.unreachable_since.erase(m.cluster);
    st.unreachable_since_text.erase(m.cluster);
  }
  return pending;
}

StatusOr<HubPassResult> HubController::CleanUp(const json& graph_object, const controller::OwnedGraph& og,
                                               const MemberClients& clients,
                                               const std::map<std::string, std::string>& secret_of, GraphState& st,
                                               HubPassResult result) {
  const std::string key = og.meta.namespace_ + "/" + og.meta.name;
  result.cleanup = true;
  // An empty placement: every member loses the objects the hub wrote for this graph.
  result.members = SyncMembers(og, PlacementResult{}, clients.Pointers(), options_.settings, MemberWriterOptions{});
  AddUnconnected(clients, result.members);
  const bool pending = TrackFailures(st, key, result.members, Now(), result);
  json clusters = json::array();  // the members still to clean
  for (const MemberStatus& m : result.members) {
    CountSync(m);
    SetShare(key, m);
    if (Clean(m) || Abandoned(result, m.cluster)) continue;
    auto secret = secret_of.find(m.cluster);
    clusters.push_back(MemberEntry(m, secret != secret_of.end() ? secret->second : "", 0, 0,
                                   st.unreachable_since_text));
  }
  if (pending) {
    KVMESH_RETURN_IF_ERROR(WriteStatusClusters(graph_object, key, clusters, result));
    if (passes_total_ != nullptr) passes_total_->WithLabels({"ok"}).Inc();
    return result;  // the finalizer holds; the next pass retries
  }
  // Done: drop status.clusters of a graph that lives on, then the finalizer.
  KVMESH_RETURN_IF_ERROR(WriteStatusClusters(graph_object, key, json(), result));
  auto removed = controller::UpdateFinalizer(*hub_, kube::InferenceGraphs(), graph_object, kHubFinalizer, false);
  if (!removed.ok() && !kube::IsNotFound(removed.status())) {
    if (passes_total_ != nullptr) passes_total_->WithLabels({"error"}).Inc();
    return Status(removed.status().code(), "remove finalizer " + std::string(kHubFinalizer) + " from " + key + ": " +
                                               removed.status().message());
  }
  result.finalizer_removed = true;
  KVMESH_LOG_INFO(kComponent, "members cleaned; finalizer removed", {"graph", key},
                  {"members", static_cast<int64_t>(result.members.size())},
                  {"abandoned", static_cast<int64_t>(result.abandoned.size())});
  if (passes_total_ != nullptr) passes_total_->WithLabels({"ok"}).Inc();
  return result;
}

void HubController::OnGraph(const json& obj) {
  const std::string key = kube::Informer::KeyOf(obj);
  {
    std::lock_guard<std::mutex> lock(mu_);
    dirty_.insert(key);
  }
  cv_.notify_all();
}

Status HubController::Start() {
  kube::InformerOptions io;
  io.resource = kube::InferenceGraphs();
  io.ns = options_.watch_namespace;
  informer_ = std::make_unique<kube::Informer>(hub_, io);
  // A pass on every add and on every change of spec (generation), deletion or annotations; status-only
  // updates (our own writes, the reconciler's) do not trigger one.
  informer_->AddHandlers({[this](const json& o) { OnGraph(o); },
                          [this](const json& old_o, const json& o) {
                            const json& om = old_o.value("metadata", json::object());
                            const json& nm = o.value("metadata", json::object());
                            if (om.value("generation", int64_t{0}) != nm.value("generation", int64_t{0}) ||
                                controller::BeingDeleted(old_o) != controller::BeingDeleted(o) ||
                                om.value("annotations", json::object()) != nm.value("annotations", json::object())) {
                              OnGraph(o);
                            }
                          },
                          [this](const json& o) { OnGraph(o); }});
  KVMESH_RETURN_IF_ERROR(informer_->Start());
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
  KVMESH_LOG_INFO(kComponent, "hub controller started",
                  {"interval_ms", static_cast<int64_t>(options_.config.interval.count())},
                  {"unhealthy_after_ms", static_cast<int64_t>(options_.config.unhealthy_after.count())});
  return Status::Ok();
}

void HubController::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (informer_) informer_->Stop();
}

void HubController::Loop() {
  // The pass thread wakes at least this often to check due graphs (the clock may be a fake one in
  // tests, so do not sleep a whole interval on the real clock).
  const auto tick = std::min<std::chrono::milliseconds>(options_.config.interval, std::chrono::milliseconds(500));
  for (;;) {
    std::set<std::string> dirty;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, tick, [this] { return stopping_ || !dirty_.empty(); });
      if (stopping_) return;
      dirty.swap(dirty_);
    }
    if (!informer_->HasSynced() || (options_.leading && !options_.leading())) {
      // Not ready (cache not listed yet, or another replica leads): keep the changes, wait a tick.
      std::unique_lock<std::mutex> lock(mu_);
      dirty_.insert(dirty.begin(), dirty.end());
      if (cv_.wait_for(lock, tick, [this] { return stopping_; })) return;
      continue;
    }
    const SteadyTime now = Now();
    std::set<std::string> live;
    for (const json& obj : informer_->List()) {
      const std::string key = kube::Informer::KeyOf(obj);
      live.insert(key);
      auto due = next_due_.find(key);
      if (due != next_due_.end() && now < due->second && dirty.count(key) == 0) continue;
      next_due_[key] = now + options_.config.interval;
      if (!IsMultiCluster(obj) && !controller::HasFinalizer(obj, kHubFinalizer)) {
        graphs_.erase(key);
        continue;
      }
      auto r = SyncGraph(obj);
      if (!r.ok()) {
        KVMESH_LOG_WARN(kComponent, "hub pass failed; retrying next interval", {"graph", key},
                        {"error", r.status().ToString()});
      }
    }
    // Graphs gone from the hub: forget their state (a graph with the hub finalizer is gone only
    // after its clean-up pass).
    for (auto it = graphs_.begin(); it != graphs_.end();) {
      it = live.count(it->first) != 0 ? std::next(it) : graphs_.erase(it);
    }
    for (auto it = next_due_.begin(); it != next_due_.end();) {
      it = live.count(it->first) != 0 ? std::next(it) : next_due_.erase(it);
    }
  }
}

}  // namespace kvmesh::placement
