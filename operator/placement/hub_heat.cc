#include "operator/placement/hub_heat.h"

#include <algorithm>
#include <cstdio>
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

}  // namespace

StatusOr<std::map<std::string, std::string>> ParseMemberRouters(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string entry = Trim(text.substr(start, end - start));
    start = end + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) {
      return InvalidArgumentError(std::string(kMemberRoutersAnnotation) + ": entry '" + entry +
                                  "' is not CLUSTER=URL");
    }
    const std::string name = Trim(entry.substr(0, eq));
    const std::string url = StripSlash(Trim(entry.substr(eq + 1)));
    if (name.empty() || url.empty()) {
      return InvalidArgumentError(std::string(kMemberRoutersAnnotation) + ": entry '" + entry +
                                  "' has an empty cluster name or URL");
    }
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return InvalidArgumentError(std::string(kMemberRoutersAnnotation) + ": URL '" + url +
                                  "' of cluster " + name + " is not http:// or https://");
    }
    if (!out.emplace(name, url).second) {
      return InvalidArgumentError(std::string(kMemberRoutersAnnotation) + ": cluster " + name +
                                  " is listed twice");
    }
  }
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

std::map<std::string, ClusterHeat> HeatCollector::Collect(const std::map<std::string, std::string>& routers) {
  for (auto it = states_.begin(); it != states_.end();) {
    it = routers.count(it->first) != 0 ? std::next(it) : states_.erase(it);
  }
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.router_api_key.empty()) headers.emplace_back("Authorization", "Bearer " + options_.router_api_key);
  std::map<std::string, ClusterHeat> out;
  const auto now = Now();
  for (const auto& [cluster, url] : routers) {
    State& st = states_[cluster];
    // One fetch of both endpoints; either failing makes the sample fail.
    auto fetch = [&](const std::string& path) -> StatusOr<std::string> {
      KVMESH_ASSIGN_OR_RETURN(http::ClientResponse r, http_->Get(url + path, headers));
      if (r.status != 200) {
        return UnavailableError("GET " + url + path + ": HTTP " + std::to_string(r.status));
      }
      return r.body;
    };
    Status failed = Status::Ok();
    RouterCounters counters;
    InventorySummary summary;
    if (auto m = fetch("/metrics"); !m.ok()) {
      failed = m.status();
    } else if (auto c = CountersFromMetrics(*m); !c.ok()) {
      failed = InvalidArgumentError("GET " + url + "/metrics: " + c.status().message());
    } else if (auto inv = fetch("/v1/kv/inventory"); !inv.ok()) {
      failed = inv.status();
    } else if (auto h = SummaryFromInventory(*inv); !h.ok()) {
      failed = InvalidArgumentError("GET " + url + "/v1/kv/inventory: " + h.status().message());
    } else {
      counters = *c;
      summary = std::move(*h);
    }

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
    out[cluster] = heat;
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
    if (h == heat.end() || !h->second.has_rates) continue;
    if (h->second.state != HeatState::kFresh && h->second.state != HeatState::kStale) continue;
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
    if (ch.state != HeatState::kFresh && ch.state != HeatState::kStale) continue;
    if (!ch.has_roots) continue;
    for (const auto& [root, r] : ch.roots) {
      if (!r.has_rate || r.rate <= 0 || r.blocks.empty()) continue;
      RootAcc& a = acc[root];
      if (a.blocks.empty()) {
        a.blocks = r.blocks;
      } else {
        size_t same = 0;
        while (same < a.blocks.size() && same < r.blocks.size() && a.blocks[same] == r.blocks[same]) ++same;
        a.blocks.resize(std::max<size_t>(same, 1));
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
    input.heat.push_back(std::move(p));
  }

  // One prefix family per cluster cache, for routers that list no roots (see the header).
  for (const Cluster& c : input.clusters) {
    auto h = heat.find(c.name);
    if (h == heat.end()) continue;
    const ClusterHeat& ch = h->second;
    if (ch.state != HeatState::kFresh && ch.state != HeatState::kStale) continue;
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
