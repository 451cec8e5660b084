#include "operator/controller/status.h"

#include <time.h>

#include <cstdio>
#include <string_view>

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

std::string Str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

int64_t Int(const json& j, std::initializer_list<const char*> path, int64_t fallback) {
  const json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object()) return fallback;
    auto it = cur->find(k);
    if (it == cur->end()) return fallback;
    cur = &*it;
  }
  return cur->is_number_integer() ? cur->get<int64_t>() : fallback;
}

json Condition(const json& previous, const std::string& type, bool status, const std::string& reason,
               const std::string& message, int64_t generation, SystemTime now) {
  const std::string st = status ? "True" : "False";
  json prev = FindCondition(previous, type);
  std::string since = FormatRfc3339(now);
  if (prev.is_object() && Str(prev, "status") == st && !Str(prev, "lastTransitionTime").empty()) {
    since = Str(prev, "lastTransitionTime");
  }
  return json{{"type", type},
              {"status", st},
              {"reason", reason},
              {"message", message},
              {"lastTransitionTime", since},
              {"observedGeneration", generation}};
}

// previous status with our fields replaced; other condition types kept after ours.
json Assemble(const GraphMeta& meta, const json& previous, const std::string& phase,
              std::vector<json> conditions) {
  json status = previous.is_object() ? previous : json::object();
  status["observedGeneration"] = meta.generation;
  status["phase"] = phase;
  if (previous.is_object() && previous.contains("conditions") && previous["conditions"].is_array()) {
    for (const json& c : previous["conditions"]) {
      std::string t = Str(c, "type");
      if (t != "Available" && t != "Progressing" && t != "Degraded") conditions.push_back(c);
    }
  }
  status["conditions"] = conditions;
  return status;
}

struct Pool {
  std::string name;
  int32_t desired;
  int32_t ready;
};

std::string PoolsText(const std::vector<Pool>& pools) {
  std::string s;
  for (const Pool& p : pools) {
    if (!s.empty()) s += ", ";
    s += p.name + " " + std::to_string(p.ready) + "/" + std::to_string(p.desired);
  }
  return s + " ready";
}

// A Deployment whose rollout has not finished: the controller has not seen its spec yet, pods of
// the new template are missing, or old pods still run.
bool RolloutPending(const json& d) {
  int64_t want = Int(d, {"spec", "replicas"}, 1);
  int64_t gen = Int(d, {"metadata", "generation"}, 0);
  int64_t seen = Int(d, {"status", "observedGeneration"}, -1);
  if (seen >= 0 && seen < gen) return true;
  int64_t updated = Int(d, {"status", "updatedReplicas"}, -1);
  if (seen >= 0 && updated >= 0 && updated < want) return true;
  if (seen >= 0 && updated < 0 && want > 0) return true;  // controller saw it but made nothing yet
  int64_t replicas = Int(d, {"status", "replicas"}, -1);
  return replicas > want;
}

}  // namespace

std::string FormatRfc3339(SystemTime t) {
  time_t secs = std::chrono::system_clock::to_time_t(t);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<SystemTime> ParseRfc3339(const std::string& text) {
  struct tm tm {};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return std::nullopt;
  }
  std::string_view rest = std::string_view(text).substr(static_cast<size_t>(consumed));
  if (!rest.empty() && rest[0] == '.') {
    size_t i = 1;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') ++i;
    rest.remove_prefix(i);
  }
  long offset = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int hh = 0, mm = 0;
    if (std::sscanf(std::string(rest.substr(1)).c_str(), "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
    offset = (rest[0] == '+' ? 1 : -1) * (hh * 3600L + mm * 60L);
  } else {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t secs = timegm(&tm);
  if (secs == static_cast<time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(secs - offset);
}

std::map<std::string, int32_t> ReadyPodCounts(const std::vector<json>& pods) {
  std::map<std::string, int32_t> counts;
  for (const json& p : pods) {
    if (!p.is_object() || !p.contains("metadata")) continue;
    const json& md = p["metadata"];
    if (md.contains("deletionTimestamp") && !md["deletionTimestamp"].is_null()) continue;
    std::string component;
    if (md.contains("labels") && md["labels"].is_object()) component = Str(md["labels"], kComponentLabel);
    if (component.empty()) continue;
    bool ready = false;
    if (p.contains("status") && p["status"].is_object() && p["status"].contains("conditions") &&
        p["status"]["conditions"].is_array()) {
      for (const json& c : p["status"]["conditions"]) {
        if (Str(c, "type") == "Ready" && Str(c, "status") == "True") ready = true;
      }
    }
    if (ready) ++counts[component];
  }
  return counts;
}

json FindCondition(const json& status, const std::string& type) {
  if (!status.is_object() || !status.contains("conditions") || !status["conditions"].is_array()) return nullptr;
  for (const json& c : status["conditions"]) {
    if (Str(c, "type") == type) return c;
  }
  return nullptr;
}

StatusResult ComputeStatus(const StatusInput& in, const StatusOptions& options) {
  const OwnedGraph& og = *in.graph;
  const graph::InferenceGraph& g = og.graph;
  const int64_t gen = og.meta.generation;
  auto ready = [&](const char* c) {
    auto it = in.ready.find(c);
    return it == in.ready.end() ? 0 : it->second;
  };
  std::vector<Pool> pools;
  pools.push_back({"router", static_cast<int32_t>(g.spec.router.replicas), ready("router")});
  const bool prefill = HasPrefillPool(g);
  if (prefill) pools.push_back({"prefill", g.spec.prefill.replicas, ready("prefill")});
  pools.push_back({"decode", g.spec.decode.replicas, ready("decode")});

  bool converged = true;
  bool all_ready = true;
  for (const Pool& p : pools) {
    if (p.ready != p.desired) converged = false;
    if (p.ready < p.desired) all_ready = false;
  }
  for (const json& d : in.deployments) {
    if (RolloutPending(d)) converged = false;
  }
  const std::string pools_text = PoolsText(pools);

  StatusResult result;
  json conds = json::array();
  // Available: the graph serves: a ready router and a ready decode-capable worker.
  const int32_t router_ready = ready("router");
  const int32_t decode_ready = ready("decode");
  const bool available = router_ready > 0 && decode_ready > 0;
  json available_c;
  if (available) {
    available_c = Condition(in.previous, "Available", true, all_ready ? "AllPoolsReady" : "MinimumReplicasAvailable",
                            pools_text, gen, in.now);
  } else {
    available_c = Condition(in.previous, "Available", false, router_ready == 0 ? "RouterUnavailable" : "NoDecodeWorkers",
                            pools_text, gen, in.now);
  }
  json progressing_c = converged
                           ? Condition(in.previous, "Progressing", false, "RolloutComplete", pools_text, gen, in.now)
                           : Condition(in.previous, "Progressing", true, "RolloutInProgress", pools_text, gen, in.now);

  json degraded_c;
  if (!in.write_error.empty()) {
    degraded_c = Condition(in.previous, "Degraded", true, "ChildWriteFailed", in.write_error, gen, in.now);
  } else {
    std::string empty_pools;
    int32_t worst_desired = 0;
    for (const Pool& p : pools) {
      if (p.desired > 0 && p.ready == 0) {
        empty_pools += (empty_pools.empty() ? "" : ", ") + p.name;
        worst_desired = std::max(worst_desired, p.desired);
      }
    }
    bool degraded = false;
    if (!empty_pools.empty()) {
      auto since = ParseRfc3339(progressing_c["lastTransitionTime"].get<std::string>()).value_or(in.now);
      if (converged) since = in.now;  // cannot happen with an empty pool, kept for safety
      auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(in.now - since);
      if (elapsed >= options.degraded_grace) {
        degraded = true;
      } else {
        result.recheck_after = options.degraded_grace - elapsed;
      }
    }
    if (degraded) {
      degraded_c = Condition(in.previous, "Degraded", true, "PoolUnavailable",
                             empty_pools + ": no ready replica for longer than " +
                                 std::to_string(options.degraded_grace.count()) + "s (" + pools_text + ")",
                             gen, in.now);
    } else {
      degraded_c = Condition(in.previous, "Degraded", false, "AsExpected", "", gen, in.now);
    }
  }
  const bool degraded_now = degraded_c["status"] == "True";
  const std::string phase = degraded_now ? "Degraded" : available ? "Ready" : "Pending";
  conds.push_back(available_c);
  conds.push_back(progressing_c);
  conds.push_back(degraded_c);
  json status = Assemble(og.meta, in.previous, phase, conds);
  status["routerEndpoint"] = RouterEndpoint(og.meta, options.settings);
  status["prefill"] = {{"replicas", prefill ? g.spec.prefill.replicas : 0}, {"readyReplicas", prefill ? ready("prefill") : 0}};
  status["decode"] = {{"replicas", g.spec.decode.replicas}, {"readyReplicas", decode_ready}};
  result.status = std::move(status);
  return result;
}

json InvalidSpecStatus(const GraphMeta& meta, const std::string& message, const json& previous, SystemTime now) {
  std::vector<json> conds = {
      Condition(previous, "Available", false, "InvalidSpec", message, meta.generation, now),
      Condition(previous, "Progressing", false, "InvalidSpec", message, meta.generation, now),
      Condition(previous, "Degraded", true, "InvalidSpec", message, meta.generation, now),
  };
  return Assemble(meta, previous, "Degraded", conds);
}

json DeletingStatus(const GraphMeta& meta, const std::string& message, const json& previous, SystemTime now) {
  std::vector<json> conds = {
      Condition(previous, "Available", false, "Deleting", message, meta.generation, now),
      Condition(previous, "Progressing", true, "Draining", message, meta.generation, now),
      Condition(previous, "Degraded", false, "Deleting", "", meta.generation, now),
  };
  return Assemble(meta, previous, "Deleting", conds);
}

}  // namespace kvmesh::controller
