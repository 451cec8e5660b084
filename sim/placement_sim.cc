#include "sim/placement_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/sim_options.h"

namespace kvmesh::sim {

PlacementScenario DefaultPlacementScenario() {
  PlacementScenario s;
  s.regions = {"us-east", "eu-west", "ap-south"};
  s.clusters = {{"us-east-1", "us-east", 16, true},
                {"eu-west-1", "eu-west", 16, true},
                {"ap-south-1", "ap-south", 16, true}};
  // One-way latencies and bandwidths (Gbit/s) of the inter-region links.
  s.links = {{"us-east-1", "eu-west-1", 100, 40},
             {"us-east-1", "ap-south-1", 10, 90},
             {"eu-west-1", "ap-south-1", 10, 60}};
  s.decode_replicas = 12;
  s.prefill_replicas = 0;
  s.decode_pool.role = router::WorkerRole::kAggregated;
  s.decode_pool.gpu = "h100";
  s.decode_pool.model = "llama-3.1-8b";
  s.decode_pool.tp = 1;
  s.prefill_pool = s.decode_pool;
  s.prefill_pool.role = router::WorkerRole::kPrefill;
  s.base.disaggregation.mode = "off";
  s.workload.rate = 60;
  s.workload.num_requests = 6000;
  s.workload.input_tokens = 3000;
  s.workload.output_tokens = 150;
  s.workload.length_jitter = 0.2;
  s.workload.shared_prefix_ratio = 0.6;
  s.workload.num_prefixes = 12;
  s.workload.zipf_s = 1.0;
  s.workload.regional_affinity = 0.9;
  s.workload.seed = 1;
  return s;
}

namespace {

struct Network {
  std::vector<std::vector<double>> region_rtt_ms;  // [region][cluster]
  std::vector<std::vector<LinkSpec>> links;        // [cluster][cluster]
};

// The placement model's network definitions (docs/placement.md): a link serves both directions
// unless the reverse is listed.
StatusOr<Network> BuildNetwork(const PlacementScenario& s) {
  const size_t n = s.clusters.size();
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < n; ++i) index[s.clusters[i].name] = i;
  constexpr double kNoLink = -1;
  std::vector<std::vector<double>> lat(n, std::vector<double>(n, kNoLink));
  std::vector<std::vector<double>> gbit(n, std::vector<double>(n, 0));
  // Explicit directions first, then the reverse of entries whose reverse is not listed.
  for (int pass = 0; pass < 2; ++pass) {
    for (const placement::Link& l : s.links) {
      auto a = index.find(l.from), b = index.find(l.to);
      if (a == index.end() || b == index.end()) {
        return InvalidArgumentError("link " + l.from + "->" + l.to + " names an unknown cluster");
      }
      size_t x = a->second, y = b->second;
      if (pass == 1) std::swap(x, y);
      if (pass == 1 && lat[x][y] != kNoLink) continue;
      lat[x][y] = l.latency_ms;
      gbit[x][y] = l.bandwidth_gbps;
    }
  }
  Network net;
  net.links.assign(n, std::vector<LinkSpec>(n));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b < n; ++b) {
      if (a == b) continue;
      LinkSpec& l = net.links[a][b];
      l.name = s.clusters[a].name + "->" + s.clusters[b].name;
      // No usable link: KV crosses the public internet (1 Gbit/s, default RTT / 2).
      l.bandwidth_gbps = gbit[a][b] > 0 ? gbit[a][b] / 8.0 : 0.125;
      l.latency_us = (lat[a][b] >= 0 ? lat[a][b] : s.model.default_rtt_ms / 2) * 1000.0;
    }
  }
  net.region_rtt_ms.assign(s.regions.size(), std::vector<double>(n, s.model.default_rtt_ms));
  for (size_t r = 0; r < s.regions.size(); ++r) {
    for (size_t c = 0; c < n; ++c) {
      if (s.clusters[c].region == s.regions[r]) {
        net.region_rtt_ms[r][c] = s.model.intra_region_rtt_ms;
        continue;
      }
      double best = std::numeric_limits<double>::infinity();
      for (size_t h = 0; h < n; ++h) {
        if (s.clusters[h].region == s.regions[r] && lat[h][c] >= 0) best = std::min(best, 2 * lat[h][c]);
      }
      if (std::isfinite(best)) net.region_rtt_ms[r][c] = best;
    }
  }
  return net;
}

Status ValidateScenario(const PlacementScenario& s) {
  if (s.regions.empty()) return InvalidArgumentError("scenario: no region");
  if (s.clusters.empty()) return InvalidArgumentError("scenario: no cluster");
  for (const placement::Cluster& c : s.clusters) {
    if (std::find(s.regions.begin(), s.regions.end(), c.region) == s.regions.end()) {
      return InvalidArgumentError("cluster " + c.name + ": region '" + c.region + "' is not a scenario region");
    }
  }
  if (s.decode_replicas <= 0) return InvalidArgumentError("scenario: decode_replicas must be > 0");
  if (s.prefill_replicas < 0) return InvalidArgumentError("scenario: prefill_replicas must be >= 0");
  return Status::Ok();
}

StatusOr<PerfModel> ModelFor(const PoolConfig& p) {
  KVMESH_ASSIGN_OR_RETURN(GpuSpec gpu, GpuByName(p.gpu));
  KVMESH_ASSIGN_OR_RETURN(ModelSpec model, ModelByName(p.model));
  return PerfModel::Make(gpu, model, p.tp, p.constants);
}

SyntheticOptions WorkloadOptions(const PlacementScenario& s) {
  SyntheticOptions w = s.workload;
  w.num_regions = static_cast<uint32_t>(s.regions.size());
  w.block_size = s.base.block_size;
  return w;
}

}  // namespace

StatusOr<placement::PlacementInput> PlacementInputFor(const PlacementScenario& s,
                                                      const std::string& policy) {
  KVMESH_RETURN_IF_ERROR(ValidateScenario(s));
  KVMESH_ASSIGN_OR_RETURN(PerfModel perf, ModelFor(s.decode_pool));
  placement::PlacementInput in;
  in.policy = policy;
  in.clusters = s.clusters;
  in.links = s.links;
  in.pools.decode_replicas = s.decode_replicas;
  in.pools.prefill_replicas = s.prefill_replicas;
  in.pools.decode_gpus_per_replica = static_cast<int32_t>(s.decode_pool.tp);
  in.pools.prefill_gpus_per_replica = static_cast<int32_t>(s.prefill_pool.tp);
  in.model = s.model;
  // Replica throughputs from the same performance model the simulator uses.
  const double isl = std::max<double>(1, s.workload.input_tokens);
  const double osl = std::max<double>(1, s.workload.output_tokens);
  in.model.prefill_tokens_per_s = isl / perf.PrefillSeconds(static_cast<uint32_t>(isl), 0);
  const uint32_t batch = 64;
  const double ctx = isl + osl / 2;
  in.model.decode_tokens_per_s =
      batch / perf.DecodeStepSeconds(batch, static_cast<uint64_t>(batch * ctx));

  // Demand and heat measured on the workload.
  KVMESH_ASSIGN_OR_RETURN(auto wl, MakeSyntheticWorkload(WorkloadOptions(s)));
  const size_t nr = s.regions.size();
  std::vector<double> count(nr, 0), isl_sum(nr, 0), osl_sum(nr, 0);
  struct Root {
    std::vector<kv::BlockHash> first;  // the first request's hashes
    size_t common = 0;                 // blocks shared by every request of the root
    std::vector<double> by_region;
    uint64_t total = 0;
  };
  std::unordered_map<kv::BlockHash, Root> roots;
  std::vector<kv::BlockHash> order;  // first-seen order (deterministic)
  double t0 = -1, t1 = 0;
  while (auto r = wl->Next()) {
    if (r->region >= nr) return InternalError("workload region out of range");
    if (t0 < 0) t0 = r->arrival_s;
    t1 = r->arrival_s;
    count[r->region] += 1;
    isl_sum[r->region] += r->input_tokens;
    osl_sum[r->region] += r->output_tokens;
    if (r->hashes.empty()) continue;
    auto [it, fresh] = roots.try_emplace(r->hashes[0]);
    Root& root = it->second;
    if (fresh) {
      root.first = r->hashes;
      root.common = r->hashes.size();
      root.by_region.assign(nr, 0);
      order.push_back(r->hashes[0]);
    } else {
      size_t k = 0;
      while (k < root.common && k < r->hashes.size() && r->hashes[k] == root.first[k]) ++k;
      root.common = k;
    }
    root.by_region[r->region] += 1;
    ++root.total;
  }
  const double span = t1 > t0 ? t1 - t0 : 1.0;
  for (size_t r = 0; r < nr; ++r) {
    if (count[r] == 0) continue;
    in.demand.push_back({s.regions[r], count[r] / span, isl_sum[r] / count[r], osl_sum[r] / count[r]});
  }
  for (size_t i = 0; i < order.size(); ++i) {
    const Root& root = roots[order[i]];
    const double rate = static_cast<double>(root.total) / span;
    if (root.total < 2 || rate < s.model.hot_min_rate) continue;  // a unique prompt, not a family
    placement::PrefixHeat h;
    char name[32];
    std::snprintf(name, sizeof(name), "%016llx", static_cast<unsigned long long>(order[i]));
    h.root = name;
    h.tokens = static_cast<double>(root.common) * s.base.block_size;
    h.bytes = static_cast<double>(perf.KvBytes(static_cast<uint64_t>(h.tokens)));
    h.blocks.assign(root.first.begin(), root.first.begin() + static_cast<std::ptrdiff_t>(root.common));
    size_t home = 0;
    for (size_t r = 0; r < nr; ++r) {
      if (root.by_region[r] > 0) h.rate_by_region[s.regions[r]] = root.by_region[r] / span;
      if (root.by_region[r] > root.by_region[home]) home = r;
    }
    // The scenario's initial holder: the root's home region's first cluster has it warm.
    for (const placement::Cluster& c : s.clusters) {
      if (c.region == s.regions[home]) {
        h.cached_bytes[c.name] = h.bytes;
        break;
      }
    }
    in.heat.push_back(std::move(h));
  }
  return in;
}

StatusOr<SimConfig> FleetForPlacement(const PlacementScenario& s,
                                      const placement::PlacementResult& result) {
  KVMESH_RETURN_IF_ERROR(ValidateScenario(s));
  KVMESH_ASSIGN_OR_RETURN(Network net, BuildNetwork(s));
  SimConfig c = s.base;
  c.pools.clear();
  c.clusters.clear();
  for (size_t i = 0; i < s.clusters.size(); ++i) {
    const size_t region = static_cast<size_t>(
        std::find(s.regions.begin(), s.regions.end(), s.clusters[i].region) - s.regions.begin());
    c.clusters.push_back({s.clusters[i].name, static_cast<uint32_t>(region)});
    const placement::ClusterShare* share = result.Find(s.clusters[i].name);
    if (share == nullptr) continue;
    if (share->decode_replicas > 0) {
      PoolConfig p = s.decode_pool;
      p.role = s.prefill_replicas > 0 ? router::WorkerRole::kDecode : router::WorkerRole::kAggregated;
      p.count = static_cast<uint32_t>(share->decode_replicas);
      p.cluster = static_cast<uint32_t>(i);
      c.pools.push_back(p);
    }
    if (share->prefill_replicas > 0) {
      PoolConfig p = s.prefill_pool;
      p.role = router::WorkerRole::kPrefill;
      p.count = static_cast<uint32_t>(share->prefill_replicas);
      p.cluster = static_cast<uint32_t>(i);
      c.pools.push_back(p);
    }
  }
  if (c.pools.empty()) {
    return FailedPreconditionError("placement '" + result.policy + "' placed no decode replica");
  }
  c.region_rtt_ms = std::move(net.region_rtt_ms);
  c.cluster_links = std::move(net.links);
  KVMESH_ASSIGN_OR_RETURN(c.routing, RoutingForPolicy(s.routing_policy, s.base.routing));
  return c;
}

std::vector<PrefixSeed> PrefixSeedsFor(const PlacementScenario& s, const placement::PlacementInput& in,
                                       const placement::PlacementResult& result) {
  std::map<std::string, uint32_t> cluster_index;
  for (size_t i = 0; i < s.clusters.size(); ++i) cluster_index[s.clusters[i].name] = static_cast<uint32_t>(i);
  std::map<std::string, const placement::PrefixHeat*> heat;
  for (const placement::PrefixHeat& h : in.heat) heat[h.root] = &h;
  std::vector<PrefixSeed> seeds;
  if (s.warm_homes) {
    for (const placement::PrefixHeat& h : in.heat) {
      if (h.blocks.empty()) continue;
      for (const auto& [cluster, bytes] : h.cached_bytes) {
        auto c = cluster_index.find(cluster);
        if (bytes <= 0 || c == cluster_index.end()) continue;
        seeds.push_back({0.0, c->second, h.blocks, PrefixSeed::kNoSource});
      }
    }
  }
  if (s.execute_copies) {
    for (const placement::PrefixDecision& d : result.prefixes) {
      if (d.action != placement::PrefixAction::kReplicate) continue;
      auto h = heat.find(d.root);
      auto from = cluster_index.find(d.source), to = cluster_index.find(d.target);
      if (h == heat.end() || h->second->blocks.empty() || from == cluster_index.end() ||
          to == cluster_index.end() || !std::isfinite(d.transfer_s)) {
        continue;
      }
      seeds.push_back({std::max(0.0, d.transfer_s), to->second, h->second->blocks, from->second});
    }
  }
  return seeds;
}

StatusOr<std::vector<PlacementRun>> RunPlacementComparison(const PlacementScenario& s,
                                                           const std::vector<std::string>& policies) {
  std::vector<PlacementRun> runs;
  for (const std::string& policy : policies) {
    PlacementRun run;
    run.policy = policy;
    KVMESH_ASSIGN_OR_RETURN(placement::PlacementInput in, PlacementInputFor(s, policy));
    KVMESH_ASSIGN_OR_RETURN(run.placement, placement::Place(in));
    run.score = placement::Evaluate(in, run.placement);
    KVMESH_ASSIGN_OR_RETURN(SimConfig config, FleetForPlacement(s, run.placement));
    config.prefix_seeds = PrefixSeedsFor(s, in, run.placement);
    KVMESH_ASSIGN_OR_RETURN(auto wl, MakeSyntheticWorkload(WorkloadOptions(s)));
    KVMESH_ASSIGN_OR_RETURN(run.sim, RunFleetSim(config, *wl, policy));
    runs.push_back(std::move(run));
  }
  return runs;
}

namespace {

std::string SharesText(const placement::PlacementResult& p) {
  std::string out;
  for (const placement::ClusterShare& c : p.clusters) {
    if (!out.empty()) out += " ";
    out += c.cluster + "=" + std::to_string(c.decode_replicas);
    if (c.prefill_replicas > 0) out += "+" + std::to_string(c.prefill_replicas) + "p";
  }
  return out;
}

}  // namespace

std::string PlacementRunsJson(const PlacementScenario& s, const std::vector<PlacementRun>& runs) {
  nlohmann::json regions = s.regions;
  nlohmann::json clusters = nlohmann::json::array();
  for (const placement::Cluster& c : s.clusters) {
    clusters.push_back({{"name", c.name}, {"region", c.region}, {"gpu_capacity", c.gpu_capacity}});
  }
  nlohmann::json out = {{"regions", regions}, {"clusters", clusters}, {"runs", nlohmann::json::array()}};
  for (const PlacementRun& r : runs) {
    nlohmann::json shares = nlohmann::json::array();
    for (const placement::ClusterShare& c : r.placement.clusters) {
      shares.push_back({{"cluster", c.cluster},
                        {"decode_replicas", c.decode_replicas},
                        {"prefill_replicas", c.prefill_replicas},
                        {"gpus_used", c.gpus_used}});
    }
    const double dur = r.sim.duration_s > 0 ? r.sim.duration_s : 1;
    out["runs"].push_back({
        {"policy", r.policy},
        {"placement", shares},
        {"unplaced_decode", r.placement.unplaced_decode},
        {"unplaced_prefill", r.placement.unplaced_prefill},
        {"place_result", nlohmann::json::parse(placement::PlacementResultToJson(r.placement))},
        {"model_mean_ttft_s", r.score.mean_ttft_s},
        {"model_cross_cluster_bytes_per_s", r.score.cross_cluster_bytes_per_s},
        {"ttft_s", {{"p50", r.sim.ttft_s.p50}, {"p90", r.sim.ttft_s.p90}, {"p99", r.sim.ttft_s.p99},
                    {"mean", r.sim.ttft_s.mean}}},
        {"cross_cluster_bytes", r.sim.cross_cluster_bytes},
        {"cross_cluster_bytes_per_s", static_cast<double>(r.sim.cross_cluster_bytes) / dur},
        {"remote_request_ratio",
         r.sim.completed ? static_cast<double>(r.sim.remote_requests) / r.sim.completed : 0.0},
        {"cache_hit_ratio", r.sim.cache_hit_ratio},
        {"output_tokens_per_s_per_gpu", r.sim.output_tokens_per_s_per_gpu},
        {"sim", nlohmann::json::parse(SimResultJson(r.sim))},
    });
  }
  return out.dump();
}

std::string PlacementRunsTable(const std::vector<PlacementRun>& runs) {
  std::string out;
  char line[640];
  std::snprintf(line, sizeof(line), "%-15s %-40s %8s %8s %8s %8s %8s %10s %7s %9s\n", "placement",
                "replicas", "ttft_p50", "ttft_p90", "ttft_p99", "ttft_avg", "remote", "xcluster_MB",
                "hit", "tok/s/gpu");
  out += line;
  for (const PlacementRun& r : runs) {
    const double remote =
        r.sim.completed ? static_cast<double>(r.sim.remote_requests) / r.sim.completed : 0.0;
    std::snprintf(line, sizeof(line), "%-15s %-40s %8.3f %8.3f %8.3f %8.3f %8.3f %10.1f %7.3f %9.1f\n",
                  r.policy.c_str(), SharesText(r.placement).c_str(), r.sim.ttft_s.p50,
                  r.sim.ttft_s.p90, r.sim.ttft_s.p99, r.sim.ttft_s.mean, remote,
                  static_cast<double>(r.sim.cross_cluster_bytes) / 1e6, r.sim.cache_hit_ratio,
                  r.sim.output_tokens_per_s_per_gpu);
    out += line;
  }
  return out;
}

int RunSimPlacementCommand(std::span<char* const> args) {
  const auto parsed = ParseCommandLine("kvmesh sim placement", ParsePlacementArgs, args, PlacementUsage);
  if (parsed.first) return *parsed.first;
  const PlacementScenario& s = parsed.second.scenario;
  const std::vector<std::string>& policies = parsed.second.policies;
  const std::string& json_path = parsed.second.json;
  const bool quiet = parsed.second.quiet;
  auto runs = RunPlacementComparison(s, policies);
  if (!runs.ok()) {
    std::cerr << "kvmesh sim placement: " << runs.status().ToString() << "\n";
    return runs.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  const std::string json = PlacementRunsJson(s, *runs);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << json << "\n";
    if (!f) {
      std::cerr << "kvmesh sim placement: cannot write " << json_path << "\n";
      return 1;
    }
  }
  if (quiet) {
    std::cout << json << "\n";
  } else {
    std::cout << PlacementRunsTable(*runs);
  }
  return 0;
}

}  // namespace kvmesh::sim
