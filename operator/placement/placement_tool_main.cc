// kvmesh-placement: runs the placement of one InferenceGraph file and (unless --dry-run) writes the
// pools into its member clusters, the way the hub operator does. Members are reached through their
// kubeconfig Secrets on the hub (--hub-kubeconfig), or directly with --member NAME=KUBECONFIG.
// Demand and prefix heat come from a JSON file (--heat; format in docs/placement.md).
// Prints {"placement": ..., "members": [...]} on stdout. Exit 0 = every member synced, 1 = bad
// input, 2 = some member failed (the others were still synced).
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/inference_graph.h"
#include "operator/placement/member_clusters.h"
#include "operator/placement/placement.h"

namespace {

using json = nlohmann::json;
using namespace kvmesh;

constexpr char kUsage[] =
    "usage: kvmesh-placement --graph FILE [--heat FILE] [--policy P] [--hub-kubeconfig FILE]\n"
    "                        [--member NAME=KUBECONFIG]... [--unhealthy NAME]... [--dry-run]\n";

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// {"demand":[{region,rate,isl,osl}], "prefixes":[{root,tokens,bytes,cached:{cluster:bytes},
//   rate:{region:req/s}}], "model":{prefillTokensPerS,decodeTokensPerS,replicationWindowS,...}}
Status ReadHeat(const std::string& text, placement::PlacementInput& in) {
  try {
    json j = json::parse(text);
    const json demand = j.value("demand", json::array());
    const json prefixes = j.value("prefixes", json::array());
    for (const json& d : demand) {
      in.demand.push_back({d.at("region").get<std::string>(), d.value("rate", 0.0), d.value("isl", 0.0),
                           d.value("osl", 0.0)});
    }
    for (const json& p : prefixes) {
      placement::PrefixHeat h;
      h.root = p.at("root").get<std::string>();
      h.tokens = p.value("tokens", 0.0);
      h.bytes = p.value("bytes", 0.0);
      const json cached = p.value("cached", json::object());
      const json rate = p.value("rate", json::object());
      for (const auto& [k, v] : cached.items()) h.cached_bytes[k] = v.get<double>();
      for (const auto& [k, v] : rate.items()) h.rate_by_region[k] = v.get<double>();
      in.heat.push_back(std::move(h));
    }
    const json m = j.value("model", json::object());
    placement::PlacementModel& pm = in.model;
    pm.prefill_tokens_per_s = m.value("prefillTokensPerS", pm.prefill_tokens_per_s);
    pm.decode_tokens_per_s = m.value("decodeTokensPerS", pm.decode_tokens_per_s);
    pm.replication_window_s = m.value("replicationWindowS", pm.replication_window_s);
    pm.hot_min_rate = m.value("hotMinRate", pm.hot_min_rate);
    pm.default_rtt_ms = m.value("defaultRttMs", pm.default_rtt_ms);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("--heat: ") + e.what());
  }
  return Status::Ok();
}

int Fail(const std::string& message) {
  std::cerr << "kvmesh-placement: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string graph_path, heat_path, hub_kubeconfig, policy;
  std::map<std::string, std::string> member_kubeconfigs;
  std::vector<std::string> unhealthy;
  bool dry_run = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--graph") graph_path = next();
    else if (a == "--heat") heat_path = next();
    else if (a == "--policy") policy = next();
    else if (a == "--hub-kubeconfig") hub_kubeconfig = next();
    else if (a == "--unhealthy") unhealthy.push_back(next());
    else if (a == "--dry-run") dry_run = true;
    else if (a == "--member") {
      std::string v = next();
      auto eq = v.find('=');
      if (eq == std::string::npos) return Fail("--member wants NAME=KUBECONFIG, got '" + v + "'");
      member_kubeconfigs[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      return Fail("unknown argument '" + a + "'\n" + kUsage);
    }
  }
  if (graph_path.empty()) return Fail(std::string("--graph is required\n") + kUsage);
  auto g = graph::LoadInferenceGraphFile(graph_path);
  if (!g.ok()) return Fail(g.status().ToString());
  if (!policy.empty()) g->spec.placement.policy = policy;
  if (Status s = g->Validate(); !s.ok()) return Fail(s.ToString());

  placement::PlacementInput in = placement::InputFromGraph(*g);
  for (const std::string& name : unhealthy) {
    bool found = false;
    for (placement::Cluster& c : in.clusters) if (c.name == name) c.healthy = false, found = true;
    if (!found) return Fail("--unhealthy " + name + ": no such cluster in spec.placement.clusters");
  }
  if (!heat_path.empty()) {
    auto text = ReadFile(heat_path);
    if (!text.ok()) return Fail(text.status().ToString());
    if (Status s = ReadHeat(*text, in); !s.ok()) return Fail(s.ToString());
  }
  auto result = placement::Place(in);
  if (!result.ok()) return Fail(result.status().ToString());

  json out = {{"placement", json::parse(placement::PlacementResultToJson(*result))}};
  int rc = 0;
  if (!dry_run) {
    kube::KubeClientOptions options;
    options.max_retries = 1;
    options.timeout = std::chrono::milliseconds(3000);
    placement::MemberClients members;
    if (!hub_kubeconfig.empty()) {
      auto hub_config = kube::LoadKubeconfig(hub_kubeconfig);
      if (!hub_config.ok()) return Fail(hub_config.status().ToString());
      auto hub = kube::CreateKubeClient(*hub_config, options);
      if (!hub.ok()) return Fail(hub.status().ToString());
      members = placement::ConnectMembers(**hub, *g, options);
    }
    for (const auto& [name, path] : member_kubeconfigs) {
      auto config = kube::LoadKubeconfig(path);
      if (!config.ok()) return Fail("--member " + name + ": " + config.status().ToString());
      auto client = kube::CreateKubeClient(*config, options);
      if (!client.ok()) return Fail("--member " + name + ": " + client.status().ToString());
      members.clients[name] = std::move(*client);
      members.errors.erase(name);
    }
    controller::OwnedGraph owned;
    owned.meta.name = g->name;
    owned.meta.namespace_ = g->namespace_;
    owned.meta.generation = g->generation;
    owned.graph = *g;
    auto statuses = placement::SyncMembers(owned, *result, members.Pointers(), controller::OperatorSettings{});
    for (auto& st : statuses) {
      if (auto e = members.errors.find(st.cluster); e != members.errors.end()) st.error = e->second;
      if (!st.error.empty()) rc = 2;
    }
    out["members"] = json::parse(placement::MemberStatusesToJson(statuses));
  }
  std::cout << out.dump(2) << "\n";
  return rc;
}
