#include "operator/placement/hub_heat.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <nlohmann/json.hpp>

#include "operator/planner/prom_text.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;

std::string Trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string StripSlash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// "a=URL,b=URL" -> (cluster, URL) pairs in order, for the annotation `annotation`. A pair listed
// twice is an error; a cluster listed twice is one when !repeat_cluster.
StatusOr<std::vector<std::pair<std::string, std::string>>> ParseClusterUrls(const std::string& text,
                                                                           const char* annotation,
                                                                           bool repeat_cluster) {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::pair<std::string, std::string>> seen;
  std::set<std::string> clusters;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string entry = Trim(text.substr(start, end - start));
    start = end + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) {
      return InvalidArgumentError(std::string(annotation) + ": entry '" + entry + "' is not CLUSTER=URL");
    }
    const std::string name = Trim(entry.substr(0, eq));
    const std::string url = StripSlash(Trim(entry.substr(eq + 1)));
    if (name.empty() || url.empty()) {
      return InvalidArgumentError(std::string(annotation) + ": entry '" + entry +
                                  "' has an empty cluster name or URL");
    }
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return InvalidArgumentError(std::string(annotation) + ": URL '" + url + "' of cluster " + name +
                                  " is not http:// or https://");
    }
    if (!seen.emplace(name, url).second || (!repeat_cluster && !clusters.insert(name).second)) {
      return InvalidArgumentError(std::string(annotation) + ": cluster " + name + " is listed twice" +
                                  (repeat_cluster ? " with " + url : ""));
    }
    out.emplace_back(name, url);
  }
  return out;
}

// Cuts `common` back to its common prefix with `blocks` (never below its first block).
void CutToCommonPrefix(std::vector<uint64_t>& common, const std::vector<uint64_t>& blocks) {
  size_t same = 0;
  while (same < common.size() && same < blocks.size() && common[same] == blocks[same]) ++same;
  common.resize(std::max<size_t>(same, 1));
}

}  // namespace

StatusOr<std::map<std::string, std::string>> ParseMemberRouters(const std::string& text) {
  KVMESH_ASSIGN_OR_RETURN(auto pairs, ParseClusterUrls(text, kMemberRoutersAnnotation, false));
  return std::map<std::string, std::string>(pairs.begin(), pairs.end());
}

StatusOr<std::map<std::string, std::vector<std::string>>> ParseMemberAgents(const std::string& text) {
  KVMESH_ASSIGN_OR_RETURN(auto pairs, ParseClusterUrls(text, kMemberAgentsAnnotation, true));
  std::map<std::string, std::vector<std::string>> out;
  for (auto& [name, url] : pairs) out[name].push_back(std::move(url));
  return out;
}

StatusOr<RouterCounters> CountersFromMetrics(const std::string& prometheus_text) {
  KVMESH_ASSIGN_OR_RETURN(std::vector<planner::PromSample> samples,
                          planner::ParsePrometheusText(prometheus_text));
  RouterCounters c;
  bool has_requests = false;
  bool has_router = false;
  for (const planner::PromSample& s : samples) {
    if (s.name.rfind("kvmesh_router_", 0) == 0) has_router = true;
    if (s.name == "kvmesh_router_requests_total") {
      has_requests = true;
      auto r = s.labels.find("result");
      const std::string result = r == s.labels.end() ? "" : r->second;
      // Arrivals: served, failed, cancelled and shed requests are demand; malformed (rejected)
      // and unauthenticated ones are not.
      if (result != "unauthorized" && result != "rejected") c.requests += s.value;
    } else if (s.name == "kvmesh_router_prompt_tokens_total") {
      c.prompt_tokens += s.value;
    } else if (s.name == "kvmesh_router_cached_tokens_total") {
      c.cached_tokens += s.value;
    } else if (s.name == "kvmesh_router_completion_tokens_total") {
      c.completion_tokens += s.value;
    }
  }
  // A router that has served nothing yet has no kvmesh_router_requests_total sample (a labelled
  // family without children renders nothing), but its unlabelled counters are there.
  if (!has_requests && !has_router) {
    return InvalidArgumentError("metrics have no kvmesh_router_* counter (not a kvmesh-router?)");
  }
  return c;
}

StatusOr<InventorySummary> SummaryFromInventory(const std::string& inventory_json) {
  InventorySummary out;
  try {
    const json j = json::parse(inventory_json);
    if (!j.is_object() || !j.contains("tiers") || !j["tiers"].is_array()) {
      return InvalidArgumentError("inventory: no tiers array");
    }
    for (const json& t : j["tiers"]) {
      if (!t.contains("hashes")) continue;
      for (const json& h : t.at("hashes")) out.hashes.insert(h.get<uint64_t>());
    }
    if (j.contains("block_size")) {
      if (!j["block_size"].is_number_unsigned()) return InvalidArgumentError("inventory: block_size is not an unsigned integer");
      const uint64_t bs = j["block_size"].get<uint64_t>();
      if (bs == 0 || bs > 1u << 20) return InvalidArgumentError("inventory: block_size out of range");
      out.block_size = static_cast<uint32_t>(bs);
    }
    if (j.contains("demand")) {
      const json& d = j["demand"];
      const char* keys[] = {"requests", "prompt_tokens", "cached_tokens", "completion_tokens"};
      if (!d.is_object() || !std::all_of(std::begin(keys), std::end(keys), [&](const char* k) {
            return d.contains(k) && d[k].is_number_unsigned();
          })) {
        return InvalidArgumentError(
            "inventory: demand needs requests, prompt_tokens, cached_tokens and completion_tokens "
            "(unsigned integers)");
      }
      out.has_demand = true;
      out.demand.requests = static_cast<double>(d["requests"].get<uint64_t>());
      out.demand.prompt_tokens = static_cast<double>(d["prompt_tokens"].get<uint64_t>());
      out.demand.cached_tokens = static_cast<double>(d["cached_tokens"].get<uint64_t>());
      out.demand.completion_tokens = static_cast<double>(d["completion_tokens"].get<uint64_t>());
    }
    if (j.contains("roots")) {
      if (!j["roots"].is_array()) return InvalidArgumentError("inventory: roots is not an array");
      out.has_roots = true;
      for (const json& r : j["roots"]) {
        if (!r.is_object() || !r.contains("root") || !r["root"].is_number_unsigned() ||
            !r.contains("requests") || !r["requests"].is_number_unsigned() || !r.contains("blocks") ||
            !r["blocks"].is_array() || r["blocks"].empty() ||
            !std::all_of(r["blocks"].begin(), r["blocks"].end(),
                         [](const json& b) { return b.is_number_unsigned(); })) {
          return InvalidArgumentError(
              "inventory: a roots entry needs root, requests (unsigned integers) and a non-empty "
              "blocks array of block hashes");
        }
        const uint64_t root = r["root"].get<uint64_t>();
        RootSample sample;
        sample.requests = r["requests"].get<uint64_t>();
        sample.blocks = r["blocks"].get<std::vector<uint64_t>>();
        if (sample.blocks.front() != root) {
          return InvalidArgumentError("inventory: root " + std::to_string(root) + " does not start its blocks");
        }
        if (!out.roots.emplace(root, std::move(sample)).second) {
          return InvalidArgumentError("inventory: root " + std::to_string(root) + " is listed twice");
        }
      }
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("inventory: ") + e.what());
  }
  return out;
}

StatusOr<std::set<uint64_t>> HashesFromInventory(const std::string& inventory_json) {
  KVMESH_ASSIGN_OR_RETURN(InventorySummary summary, SummaryFromInventory(inventory_json));
  return std::move(summary.hashes);
}

const char* HeatStateName(HeatState s) {
  switch (s) {
    case HeatState::kNone: return "none";
    case HeatState::kUnknown: return "unknown";
    case HeatState::kWarming: return "warming";
    case HeatState::kFresh: return "fresh";
    case HeatState::kStale: return "stale";
  }
  return "unknown";
}

HeatCollector::HeatCollector(HeatCollectorOptions options) : options_(std::move(options)) {
  http::HttpClientOptions ho;
  ho.connect_timeout = options_.timeout;
  ho.read_timeout = options_.timeout;
  ho.keep_alive = false;  // a pass every tens of seconds: no idle connections to manage
  ho.user_agent = "kvmesh-hub";
  http_ = std::make_unique<http::HttpClient>(ho);
}

HeatCollector::~HeatCollector() = default;

std::chrono::steady_clock::time_point HeatCollector::Now() const {
  return options_.clock != nullptr ? options_.clock->Now() : std::chrono::steady_clock::now();
}

std::map<std::string, ClusterHeat> HeatCollector::Collect(
    const std::map<std::string, std::string>& routers,
    const std::map<std::string, std::vector<std::string>>& agents) {
  // (cluster, URL) -> is an agent. A cluster with a router is read from its router only: its
  // agents see the same requests.
  std::map<std::pair<std::string, std::string>, bool> endpoints;
  for (const auto& [cluster, url] : routers) endpoints[{cluster, url}] = false;
  for (const auto& [cluster, urls] : agents) {
    if (routers.count(cluster) != 0) continue;
    for (const std::string& url : urls) endpoints[{cluster, url}] = true;
  }
  for (auto it = states_.begin(); it != states_.end();) {
    auto e = endpoints.find(it->first);
    it = e != endpoints.end() && e->second == it->second.agent ? std::next(it) : states_.erase(it);
  }
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.router_api_key.empty()) headers.emplace_back("Authorization", "Bearer " + options_.router_api_key);
  const auto now = Now();
  std::map<std::string, std::vector<const ClusterHeat*>> parts;
  for (const auto& [key, is_agent] : endpoints) {
    State& st = states_[key];
    st.agent = is_agent;
    Sample(st, key.second, now, headers);
    parts[key.first].push_back(&st.heat);
  }
  std::map<std::string, ClusterHeat> out;
  for (const auto& [cluster, heats] : parts) {
    out[cluster] = heats.size() == 1 ? *heats.front() : MergeEndpointHeats(heats);
  }
  return out;
}

void HeatCollector::Sample(State& st, const std::string& url, std::chrono::steady_clock::time_point now,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
  auto fetch = [&](const std::string& path) -> StatusOr<std::string> {
    StatusOr<http::ClientResponse> got = http_->Get(url + path, headers);
    if (!got.ok()) {
      return Status(got.status().code(), "GET " + url + path + ": " + got.status().message());
    }
    const http::ClientResponse& r = *got;
    if (r.status != 200) {
      return UnavailableError("GET " + url + path + ": HTTP " + std::to_string(r.status));
    }
    return r.body;
  };
  // A router: /metrics (counters) and /v1/kv/inventory; either failing makes the sample fail. An
  // agent: /v1/kv/inventory only (its "demand" object holds the counters).
  RouterCounters counters;
  InventorySummary summary;
  auto take = [&]() -> Status {
    RouterCounters router_counters;
    if (!st.agent) {
      KVMESH_ASSIGN_OR_RETURN(std::string text, fetch("/metrics"));
      auto c = CountersFromMetrics(text);
      if (!c.ok()) return InvalidArgumentError("GET " + url + "/metrics: " + c.status().message());
      router_counters = *c;
    }
    KVMESH_ASSIGN_OR_RETURN(std::string inv, fetch("/v1/kv/inventory"));
    auto h = SummaryFromInventory(inv);
    if (!h.ok()) return InvalidArgumentError("GET " + url + "/v1/kv/inventory: " + h.status().message());
    if (st.agent && !h->has_demand) {
      return InvalidArgumentError("GET " + url + "/v1/kv/inventory: no demand object (not a kvmesh-agent?)");
    }
    counters = st.agent ? h->demand : router_counters;
    summary = std::move(*h);
    return Status::Ok();
  };
  const Status failed = take();

  ClusterHeat& heat = st.heat;
  if (failed.ok()) {
    const bool restarted = st.has_sample && counters.requests < st.last.counters.requests;
    // Seconds since the previous good sample; 0 (no rates this pass) without one or after a
    // restart.
    const double dt = st.has_sample && !restarted
                          ? std::chrono::duration<double>(now - st.last.time).count()
                          : 0;
    // Per root: a rate when the previous good sample listed the root with a counter no larger.
    std::map<uint64_t, uint64_t> root_requests;
    heat.roots.clear();
    for (auto& [root, sample] : summary.roots) {
      root_requests[root] = sample.requests;
      ClusterHeat::Root& r = heat.roots[root];
      r.blocks = std::move(sample.blocks);
      auto prev = st.last.root_requests.find(root);
      if (dt > 0 && prev != st.last.root_requests.end() && sample.requests >= prev->second) {
        r.has_rate = true;
        r.rate = static_cast<double>(sample.requests - prev->second) / dt;
      }
    }
    heat.has_roots = summary.has_roots;
    heat.block_size = summary.block_size;
    if (dt > 0) {
      const double dreq = counters.requests - st.last.counters.requests;
      heat.has_rates = true;
      heat.request_rate = dreq / dt;
      if (dreq > 0) {
        heat.mean_isl = (counters.prompt_tokens - st.last.counters.prompt_tokens) / dreq;
        heat.mean_osl = (counters.completion_tokens - st.last.counters.completion_tokens) / dreq;
        heat.cached_tokens_per_request = (counters.cached_tokens - st.last.counters.cached_tokens) / dreq;
      }
    }
    st.has_sample = true;
    st.last = {now, counters, std::move(root_requests)};
    st.last_ok = now;
    heat.hashes = std::move(summary.hashes);
    heat.error.clear();
    heat.state = heat.has_rates ? HeatState::kFresh : HeatState::kWarming;
  } else {
    heat.error = failed.message();
    if (!st.has_sample || now - st.last_ok > options_.max_age) {
      const std::string error = heat.error;
      heat = ClusterHeat{};
      heat.error = error;
      heat.state = HeatState::kUnknown;
      st.has_sample = false;
    } else {
      heat.state = HeatState::kStale;
    }
  }
}

ClusterHeat MergeEndpointHeats(const std::vector<const ClusterHeat*>& parts) {
  auto rank = [](HeatState s) {
    switch (s) {
      case HeatState::kFresh: return 4;
      case HeatState::kStale: return 3;
      case HeatState::kWarming: return 2;
      case HeatState::kUnknown: return 1;
      case HeatState::kNone: return 0;
    }
    return 0;
  };
  ClusterHeat out;
  bool has_block_size = false;
  double isl = 0, osl = 0, cached = 0;  // rate-weighted sums
  for (const ClusterHeat* p : parts) {
    if (rank(p->state) > rank(out.state)) out.state = p->state;
    if (!p->error.empty()) out.error += (out.error.empty() ? "" : "; ") + p->error;
    if (p->state == HeatState::kNone || p->state == HeatState::kUnknown) continue;
    out.hashes.insert(p->hashes.begin(), p->hashes.end());
    if (!has_block_size || p->block_size > out.block_size) out.block_size = p->block_size;
    has_block_size = true;
    out.has_roots = out.has_roots || p->has_roots;
    for (const auto& [root, r] : p->roots) {
      auto [it, fresh] = out.roots.try_emplace(root, r);
      if (fresh) continue;
      ClusterHeat::Root& m = it->second;
      CutToCommonPrefix(m.blocks, r.blocks);
      if (r.has_rate) {
        m.rate = (m.has_rate ? m.rate : 0) + r.rate;
        m.has_rate = true;
      }
    }
    if (p->has_rates) {
      out.has_rates = true;
      out.request_rate += p->request_rate;
      isl += p->mean_isl * p->request_rate;
      osl += p->mean_osl * p->request_rate;
      cached += p->cached_tokens_per_request * p->request_rate;
    }
  }
  if (out.request_rate > 0) {
    out.mean_isl = isl / out.request_rate;
    out.mean_osl = osl / out.request_rate;
    out.cached_tokens_per_request = cached / out.request_rate;
  }
  return out;
}

void HeatCollector::FillInput(const std::map<std::string, ClusterHeat>& heat, PlacementInput& input) const {
  std::map<std::string, std::string> region_of;
  for (const Cluster& c : input.clusters) region_of[c.name] = c.region.empty() ? c.name : c.region;

  // Demand per region: rates add up; ISL and OSL are rate-weighted means.
  std::map<std::string, RegionDemand> demand;
  for (const Cluster& c : input.clusters) {
    auto h = heat.find(c.name);
    if (h == heat.end() || !h->second.RatesKnown()) continue;
    RegionDemand& d = demand[region_of[c.name]];
    d.region = region_of[c.name];
    const double r = h->second.request_rate;
    if (d.request_rate + r > 0) {
      d.mean_isl = (d.mean_isl * d.request_rate + h->second.mean_isl * r) / (d.request_rate + r);
      d.mean_osl = (d.mean_osl * d.request_rate + h->second.mean_osl * r) / (d.request_rate + r);
    }
    d.request_rate += r;
  }
  for (auto& [region, d] : demand) {
    if (d.request_rate > 0) input.demand.push_back(d);
  }

  // p.cached_bytes: in each cluster with known heat, p.bytes times the share of `blocks` (a
  // non-empty range of block hashes) that cluster's summary lists.
  auto fill_cached = [&](PrefixHeat& p, const auto& blocks) {
    for (const Cluster& other : input.clusters) {
      auto oh = heat.find(other.name);
      if (oh == heat.end()) continue;
      const ClusterHeat& o = oh->second;
      if (o.state == HeatState::kNone || o.state == HeatState::kUnknown) continue;
      size_t held = 0;
      for (uint64_t x : blocks) held += o.hashes.count(x);
      if (held == 0) continue;
      p.cached_bytes[other.name] = p.bytes * static_cast<double>(held) / static_cast<double>(blocks.size());
    }
  };

  // Heat per prefix root from the routers that list roots (see the header).
  struct RootAcc {
    std::vector<uint64_t> blocks;  // common prefix of the chains reported so far
    uint32_t block_size = 0;
    std::map<std::string, double> rate_by_region;
    double rate = 0;
  };
  std::map<uint64_t, RootAcc> acc;
  for (const Cluster& c : input.clusters) {
    auto h = heat.find(c.name);
    if (h == heat.end()) continue;
    const ClusterHeat& ch = h->second;
    if (!ch.Current()) continue;
    if (!ch.has_roots) continue;
    for (const auto& [root, r] : ch.roots) {
      if (!r.has_rate || r.rate <= 0 || r.blocks.empty()) continue;
      RootAcc& a = acc[root];
      if (a.blocks.empty()) {
        a.blocks = r.blocks;
      } else {
        CutToCommonPrefix(a.blocks, r.blocks);
      }
      a.block_size = std::max(a.block_size, ch.block_size);
      a.rate_by_region[region_of[c.name]] += r.rate;
      a.rate += r.rate;
    }
  }
  for (auto& [root, a] : acc) {
    PrefixHeat p;
    char name[32];
    std::snprintf(name, sizeof name, "root:%016llx", static_cast<unsigned long long>(root));
    p.root = name;
    p.tokens = static_cast<double>(a.blocks.size()) * a.block_size;
    p.bytes = p.tokens * options_.kv_bytes_per_token;
    p.rate_by_region = std::move(a.rate_by_region);
    fill_cached(p, a.blocks);
    p.blocks = std::move(a.blocks);
    input.heat.push_back(std::move(p));
  }

  // One prefix family per cluster cache, for routers that list no roots (see the header).
  for (const Cluster& c : input.clusters) {
    auto h = heat.find(c.name);
    if (h == heat.end()) continue;
    const ClusterHeat& ch = h->second;
    if (!ch.Current()) continue;
    if (ch.has_roots) continue;
    if (!ch.has_rates || ch.request_rate <= 0 || ch.cached_tokens_per_request <= 0 || ch.hashes.empty()) continue;
    PrefixHeat p;
    p.root = "cache@" + c.name;
    p.tokens = ch.cached_tokens_per_request;
    p.bytes = p.tokens * options_.kv_bytes_per_token;
    p.rate_by_region[region_of[c.name]] = ch.request_rate;
    fill_cached(p, ch.hashes);
    input.heat.push_back(std::move(p));
  }
}

}  // namespace kvmesh::placement
