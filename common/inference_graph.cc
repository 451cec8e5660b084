// InferenceGraph parsing (YAML via yaml-cpp, JSON via nlohmann), validation and rendering.
//
// One parser walks a YAML::Node tree for both inputs: JSON text is converted to YAML nodes first
// (JSON strings become quoted scalars, so "replicas": "2" is a type error in both syntaxes). Every
// mapping inside spec is checked against its list of known keys. Paths and YAML lines of the
// fields seen are remembered so that a Validate() error on parsed text also names its line.
#include "common/inference_graph.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

namespace kvmesh::graph {
namespace {

using Json = nlohmann::ordered_json;

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string Join(std::initializer_list<const char*> items) {
  std::string out;
  for (const char* s : items) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validation. Each check returns "path: message"; the parser appends the YAML line of `path`.

struct FieldError {
  std::string path;
  std::string message;
};
using Check = std::optional<FieldError>;

Check Err(std::string path, std::string message) { return FieldError{std::move(path), std::move(message)}; }

bool IsDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

// Kubernetes resource quantity: a decimal number with an optional suffix.
bool IsQuantity(std::string_view s) {
  static const char* const kSuffixes[] = {"",  "m",  "k",  "M",  "G",  "T",  "P",  "E",
                                          "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  size_t i = 0;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  std::string_view suffix = s.substr(i);
  for (const char* k : kSuffixes) {
    if (suffix == k) return true;
  }
  return false;
}

// "250ms", "10s", "1.5m", "1h" -> seconds; nullopt when malformed.
std::optional<double> ParseDurationSeconds(std::string_view s) {
  if (s == "0") return 0.0;
  size_t split = s.size();
  while (split > 0 && std::isalpha(static_cast<unsigned char>(s[split - 1]))) --split;
  std::string_view number = s.substr(0, split);
  std::string_view suffix = s.substr(split);
  double scale = 0;
  if (suffix == "ms") scale = 1e-3;
  else if (suffix == "s") scale = 1;
  else if (suffix == "m") scale = 60;
  else if (suffix == "h") scale = 3600;
  else return std::nullopt;
  double value = 0;
  auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || ec != std::errc() || ptr != number.data() + number.size() ||
      !std::isfinite(value) || value < 0) {
    return std::nullopt;
  }
  return value * scale;
}

template <class T>
std::string Num(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    std::ostringstream os;
    os << v;
    return os.str();
  } else {
    return std::to_string(v);
  }
}

Check OneOf(const std::string& path, const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return std::nullopt;
  }
  return Err(path, "must be one of " + Join(allowed) + ", got " + Quote(value));
}

Check NonNegativeFinite(const std::string& path, double v) {
  if (!std::isfinite(v) || v < 0) return Err(path, "must be a finite number >= 0, got " + Num(v));
  return std::nullopt;
}

Check ValidatePool(const std::string& p, const PoolSpec& pool) {
  if (pool.replicas < 0 || pool.replicas > 1024) {
    return Err(p + ".replicas", "must be in [0, 1024], got " + Num(pool.replicas));
  }
  if (pool.min_replicas < 0 || pool.min_replicas > pool.replicas) {
    return Err(p + ".minReplicas", "must be in [0, replicas=" + Num(pool.replicas) + "], got " +
                                       Num(pool.min_replicas));
  }
  if (pool.max_replicas != 0 && (pool.max_replicas < pool.replicas || pool.max_replicas > 1024)) {
    return Err(p + ".maxReplicas", "must be 0 (no autoscaling) or in [replicas=" + Num(pool.replicas) +
                                       ", 1024], got " + Num(pool.max_replicas));
  }
  if (pool.gpus_per_worker < 0 || pool.gpus_per_worker > 64) {
    return Err(p + ".gpusPerWorker", "must be in [0, 64], got " + Num(pool.gpus_per_worker));
  }
  for (const auto& [name, res] : {std::pair<const char*, const ResourceSpec*>{"requests", &pool.requests},
                                  {"limits", &pool.limits}}) {
    if (!res->cpu.empty() && !IsQuantity(res->cpu)) {
      return Err(p + "." + name + ".cpu", "must be a Kubernetes quantity like 2, 500m, got " + Quote(res->cpu));
    }
    if (!res->memory.empty() && !IsQuantity(res->memory)) {
      return Err(p + "." + name + ".memory",
                 "must be a Kubernetes quantity like 8Gi, 512Mi, got " + Quote(res->memory));
    }
  }
  for (size_t i = 0; i < pool.extra_args.size(); ++i) {
    if (pool.extra_args[i].empty()) return Err(p + ".extraArgs[" + Num(i) + "]", "must not be empty");
  }
  return std::nullopt;
}

Check ValidateGraph(const InferenceGraph& g) {
  if (!IsDnsLabel(g.name)) {
    return Err("metadata.name",
               "must be a DNS label (lowercase letters, digits, '-', at most 63), got " + Quote(g.name));
  }
  if (!g.namespace_.empty() && !IsDnsLabel(g.namespace_)) {
    return Err("metadata.namespace", "must be a DNS label, got " + Quote(g.namespace_));
  }
  if (g.generation < 0) return Err("metadata.generation", "must be >= 0, got " + Num(g.generation));
  const InferenceGraphSpec& s = g.spec;

  const std::string& src = s.model.source;
  if (src.empty()) return Err("spec.model.source", "must not be empty");
  if (src.rfind("builtin:", 0) == 0 && src.size() == 8) {
    return Err("spec.model.source", "builtin: needs a preset name (builtin:tiny, builtin:small)");
  }
  if (src.rfind("pvc://", 0) == 0) {
    std::string_view rest = std::string_view(src).substr(6);
    size_t slash = rest.find('/');
    if (rest.empty() || slash == 0 || !IsDnsLabel(rest.substr(0, slash))) {
      return Err("spec.model.source", "must be pvc://CLAIM/PATH with a DNS-label claim, got " + Quote(src));
    }
  }
  for (char c : s.model.name) {
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c))) {
      return Err("spec.model.name", "must not contain whitespace, got " + Quote(s.model.name));
    }
  }

  if (s.kv_cache.block_size == 0 || s.kv_cache.block_size > 1024) {
    return Err("spec.kvCache.blockSize", "must be in [1, 1024], got " + Num(s.kv_cache.block_size));
  }
  if (s.kv_cache.device_mib == 0) return Err("spec.kvCache.deviceMiB", "must be >= 1, got 0");

  if (s.router.replicas == 0 || s.router.replicas > 64) {
    return Err("spec.router.replicas", "must be in [1, 64], got " + Num(s.router.replicas));
  }
  if (auto e = OneOf("spec.router.routingMode", s.router.routing_mode, {"kv", "round_robin", "random", "least_loaded"})) {
    return e;
  }
  if (auto e = OneOf("spec.router.kvCost", s.router.kv_cost, {"kvmesh", "dynamo"})) return e;
  if (auto e = NonNegativeFinite("spec.router.overlapWeight", s.router.overlap_weight)) return e;
  if (auto e = NonNegativeFinite("spec.router.temperature", s.router.temperature)) return e;

  const DisaggregationSpec& d = s.disaggregation;
  if (auto e = OneOf("spec.disaggregation.mode", d.mode, {"off", "conditional", "always"})) return e;
  if (d.max_prefill_queue == 0) return Err("spec.disaggregation.maxPrefillQueue", "must be >= 1, got 0");
  std::optional<double> timeout = ParseDurationSeconds(d.transfer_timeout);
  if (!timeout || *timeout <= 0) {
    return Err("spec.disaggregation.transferTimeout",
               "must be a positive duration like 500ms, 10s, 1m, got " + Quote(d.transfer_timeout));
  }
  double ms = *timeout * 1000;
  if (std::fabs(ms - std::round(ms)) > 1e-6) {
    return Err("spec.disaggregation.transferTimeout", "must be a whole number of milliseconds, got " +
                                                          Quote(d.transfer_timeout));
  }
  if (auto e = OneOf("spec.disaggregation.onFailure", d.on_failure, {"recompute", "fail"})) return e;
  for (char c : d.transport) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      return Err("spec.disaggregation.transport", "must be UCX_TLS syntax without spaces, got " + Quote(d.transport));
    }
  }

  if (auto e = ValidatePool("spec.prefill", s.prefill)) return e;
  if (auto e = ValidatePool("spec.decode", s.decode)) return e;
  if (s.decode.replicas < 1) {
    return Err("spec.decode.replicas", "must be >= 1 (someone has to decode), got " + Num(s.decode.replicas));
  }
  if (d.mode == "off" && s.prefill.replicas > 0) {
    return Err("spec.prefill.replicas", "must be 0 when spec.disaggregation.mode is off, got " +
                                            Num(s.prefill.replicas));
  }
  if (d.mode == "always" && s.prefill.replicas == 0) {
    return Err("spec.prefill.replicas", "must be >= 1 when spec.disaggregation.mode is always, got 0");
  }

  if (auto e = NonNegativeFinite("spec.sla.ttftMs", s.sla.ttft_ms)) return e;
  if (auto e = NonNegativeFinite("spec.sla.itlMs", s.sla.itl_ms)) return e;

  const PlacementSpec& pl = s.placement;
  if (auto e = OneOf("spec.placement.policy", pl.policy, {"single", "spread", "pack", "cache-locality"})) return e;
  if (pl.topology_key.empty()) return Err("spec.placement.topologyKey", "must not be empty");
  std::set<std::string> clusters;
  for (size_t i = 0; i < pl.clusters.size(); ++i) {
    const ClusterSpec& c = pl.clusters[i];
    std::string p = "spec.placement.clusters[" + Num(i) + "]";
    if (!IsDnsLabel(c.name)) return Err(p + ".name", "must be a DNS label, got " + Quote(c.name));
    if (!clusters.insert(c.name).second) return Err(p + ".name", "duplicate cluster " + Quote(c.name));
    if (c.gpu_capacity < 0) return Err(p + ".gpuCapacity", "must be >= 0, got " + Num(c.gpu_capacity));
  }
  for (size_t i = 0; i < pl.links.size(); ++i) {
    const LinkSpec& l = pl.links[i];
    std::string p = "spec.placement.links[" + Num(i) + "]";
    if (!clusters.count(l.from)) return Err(p + ".from", "names no cluster in spec.placement.clusters: " + Quote(l.from));
    if (!clusters.count(l.to)) return Err(p + ".to", "names no cluster in spec.placement.clusters: " + Quote(l.to));
    if (l.from == l.to) return Err(p + ".to", "must differ from from, got " + Quote(l.to));
    if (auto e = NonNegativeFinite(p + ".bandwidthGbps", l.bandwidth_gbps)) return e;
    if (auto e = NonNegativeFinite(p + ".latencyMs", l.latency_ms)) return e;
  }
  if (auto e = NonNegativeFinite("spec.placement.model.prefillTokensPerS", pl.model.prefill_tokens_per_s)) return e;
  if (auto e = NonNegativeFinite("spec.placement.model.decodeTokensPerS", pl.model.decode_tokens_per_s)) return e;
  if (auto e = NonNegativeFinite("spec.placement.model.replicationWindowS", pl.model.replication_window_s)) return e;
  if (pl.policy != "single" && pl.clusters.size() < 2 && !pl.clusters.empty()) {
    return Err("spec.placement.clusters", "policy " + Quote(pl.policy) + " with clusters needs at least 2, got 1");
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Parsing.

class Parser {
 public:
  // path -> 1-based YAML line of its value (only for YAML text).
  std::map<std::string, int> lines;

  Status Fail(const YAML::Node& at, const std::string& path, const std::string& message) {
    return InvalidArgumentError(path + ": " + message + LineSuffix(at));
  }

  static std::string LineSuffix(const YAML::Node& n) {
    if (!n.IsDefined()) return "";
    YAML::Mark m = n.Mark();
    if (m.line < 0) return "";
    return " (line " + std::to_string(m.line + 1) + ")";
  }

  void Remember(const YAML::Node& n, const std::string& path) {
    if (n.IsDefined() && n.Mark().line >= 0) lines.emplace(path, n.Mark().line + 1);
  }

  // A mapping (or null/absent = empty); rejects keys not in `known`.
  Status ExpectMap(const YAML::Node& n, const std::string& path, std::initializer_list<const char*> known) {
    if (!n.IsDefined() || n.IsNull()) return Status::Ok();
    if (!n.IsMap()) return Fail(n, path, "expected a mapping, got " + KindName(n));
    Remember(n, path);
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) return Fail(it->first, path, "keys must be strings");
      const std::string key = it->first.Scalar();
      bool found = false;
      for (const char* k : known) found = found || key == k;
      if (!found) return Fail(it->first, Child(path, key), "unknown field; known: " + Join(known));
    }
    return Status::Ok();
  }

  static std::string Child(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  static std::string KindName(const YAML::Node& n) {
    switch (n.Type()) {
      case YAML::NodeType::Map: return "a mapping";
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Scalar: return "the scalar " + Quote(n.Scalar());
      case YAML::NodeType::Null: return "null";
      default: return "nothing";
    }
  }

  // Looks up `key` in mapping `parent`; an absent or null value leaves the default.
  static YAML::Node Get(const YAML::Node& parent, const char* key) {
    if (!parent.IsDefined() || !parent.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    for (auto it = parent.begin(); it != parent.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
    }
    return YAML::Node(YAML::NodeType::Undefined);
  }
  static bool Absent(const YAML::Node& n) { return !n.IsDefined() || n.IsNull(); }

  Status String(const YAML::Node& parent, const char* key, const std::string& path, std::string& out) {
    YAML::Node n = Get(parent, key);
    std::string p = Child(path, key);
    if (Absent(n)) return Status::Ok();
    if (!n.IsScalar()) return Fail(n, p, "expected a string, got " + KindName(n));
    Remember(n, p);
    out = n.Scalar();
    return Status::Ok();
  }

  template <class T>
  Status Integer(const YAML::Node& parent, const char* key, const std::string& path, T& out) {
    YAML::Node n = Get(parent, key);
    std::string p = Child(path, key);
    if (Absent(n)) return Status::Ok();
    if (!n.IsScalar() || n.Tag() == "!") return Fail(n, p, "expected an integer, got " + KindName(n));
    const std::string& s = n.Scalar();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
      return Fail(n, p, "expected an integer, got " + Quote(s));
    }
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
      return Fail(n, p, "must be in [" + Num(std::numeric_limits<T>::min()) + ", " +
                            Num(std::numeric_limits<T>::max()) + "], got " + s);
    }
    Remember(n, p);
    out = static_cast<T>(v);
    return Status::Ok();
  }

  Status Number(const YAML::Node& parent, const char* key, const std::string& path, double& out) {
    YAML::Node n = Get(parent, key);
    std::string p = Child(path, key);
    if (Absent(n)) return Status::Ok();
    if (!n.IsScalar() || n.Tag() == "!") return Fail(n, p, "expected a number, got " + KindName(n));
    const std::string& s = n.Scalar();
    double v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) {
      return Fail(n, p, "expected a finite number, got " + Quote(s));
    }
    Remember(n, p);
    out = v;
    return Status::Ok();
  }

  Status StringList(const YAML::Node& parent, const char* key, const std::string& path,
                    std::vector<std::string>& out) {
    YAML::Node n = Get(parent, key);
    std::string p = Child(path, key);
    if (Absent(n)) return Status::Ok();
    if (!n.IsSequence()) return Fail(n, p, "expected a list of strings, got " + KindName(n));
    Remember(n, p);
    std::vector<std::string> values;
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar()) return Fail(n[i], p + "[" + Num(i) + "]", "expected a string, got " + KindName(n[i]));
      values.push_back(n[i].Scalar());
    }
    out = std::move(values);
    return Status::Ok();
  }

  Status Pool(const YAML::Node& n, const std::string& p, PoolSpec& pool) {
    KVMESH_RETURN_IF_ERROR(ExpectMap(n, p, {"replicas", "minReplicas", "maxReplicas", "gpusPerWorker",
                                            "requests", "limits", "extraArgs"}));
    KVMESH_RETURN_IF_ERROR(Integer(n, "replicas", p, pool.replicas));
    KVMESH_RETURN_IF_ERROR(Integer(n, "minReplicas", p, pool.min_replicas));
    KVMESH_RETURN_IF_ERROR(Integer(n, "maxReplicas", p, pool.max_replicas));
    KVMESH_RETURN_IF_ERROR(Integer(n, "gpusPerWorker", p, pool.gpus_per_worker));
    for (auto [key, res] : {std::pair<const char*, ResourceSpec*>{"requests", &pool.requests},
                            {"limits", &pool.limits}}) {
      YAML::Node r = Get(n, key);
      std::string rp = Child(p, key);
      KVMESH_RETURN_IF_ERROR(ExpectMap(r, rp, {"cpu", "memory"}));
      KVMESH_RETURN_IF_ERROR(String(r, "cpu", rp, res->cpu));
      KVMESH_RETURN_IF_ERROR(String(r, "memory", rp, res->memory));
    }
    return StringList(n, "extraArgs", p, pool.extra_args);
  }

  Status Spec(const YAML::Node& n, InferenceGraphSpec& s) {
    const std::string p = "spec";
    KVMESH_RETURN_IF_ERROR(ExpectMap(n, p, {"model", "kvCache", "router", "disaggregation", "prefill",
                                            "decode", "sla", "placement"}));
    {
      YAML::Node m = Get(n, "model");
      KVMESH_RETURN_IF_ERROR(ExpectMap(m, "spec.model", {"name", "source"}));
      KVMESH_RETURN_IF_ERROR(String(m, "name", "spec.model", s.model.name));
      KVMESH_RETURN_IF_ERROR(String(m, "source", "spec.model", s.model.source));
    }
    {
      YAML::Node m = Get(n, "kvCache");
      const std::string q = "spec.kvCache";
      KVMESH_RETURN_IF_ERROR(ExpectMap(m, q, {"blockSize", "deviceMiB", "hostMiB", "diskMiB"}));
      KVMESH_RETURN_IF_ERROR(Integer(m, "blockSize", q, s.kv_cache.block_size));
      KVMESH_RETURN_IF_ERROR(Integer(m, "deviceMiB", q, s.kv_cache.device_mib));
      KVMESH_RETURN_IF_ERROR(Integer(m, "hostMiB", q, s.kv_cache.host_mib));
      KVMESH_RETURN_IF_ERROR(Integer(m, "diskMiB", q, s.kv_cache.disk_mib));
    }
    {
      YAML::Node m = Get(n, "router");
      const std::string q = "spec.router";
      KVMESH_RETURN_IF_ERROR(ExpectMap(m, q, {"replicas", "routingMode", "kvCost", "overlapWeight", "temperature"}));
      KVMESH_RETURN_IF_ERROR(Integer(m, "replicas", q, s.router.replicas));
      KVMESH_RETURN_IF_ERROR(String(m, "routingMode", q, s.router.routing_mode));
      KVMESH_RETURN_IF_ERROR(String(m, "kvCost", q, s.router.kv_cost));
      KVMESH_RETURN_IF_ERROR(Number(m, "overlapWeight", q, s.router.overlap_weight));
      KVMESH_RETURN_IF_ERROR(Number(m, "temperature", q, s.router.temperature));
    }
    {
      YAML::Node m = Get(n, "disaggregation");
      const std::string q = "spec.disaggregation";
      DisaggregationSpec& d = s.disaggregation;
      KVMESH_RETURN_IF_ERROR(ExpectMap(m, q, {"mode", "minRemotePrefillTokens", "maxPrefillQueue",
                                              "transferTimeout", "onFailure", "transport"}));
      KVMESH_RETURN_IF_ERROR(String(m, "mode", q, d.mode));
      KVMESH_RETURN_IF_ERROR(Integer(m, "minRemotePrefillTokens", q, d.min_remote_prefill_tokens));
      KVMESH_RETURN_IF_ERROR(Integer(m, "maxPrefillQueue", q, d.max_prefill_queue));
      KVMESH_RETURN_IF_ERROR(String(m, "transferTimeout", q, d.transfer_timeout));
      KVMESH_RETURN_IF_ERROR(String(m, "onFailure", q, d.on_failure));
      KVMESH_RETURN_IF_ERROR(String(m, "transport", q, d.transport));
    }
    KVMESH_RETURN_IF_ERROR(Pool(Get(n, "prefill"), "spec.prefill", s.prefill));
    KVMESH_RETURN_IF_ERROR(Pool(Get(n, "decode"), "spec.decode", s.decode));
    {
      YAML::Node m = Get(n, "sla");
      KVMESH_RETURN_IF_ERROR(ExpectMap(m, "spec.sla", {"ttftMs", "itlMs"}));
      KVMESH_RETURN_IF_ERROR(Number(m, "ttftMs", "spec.sla", s.sla.ttft_ms));
      KVMESH_RETURN_IF_ERROR(Number(m, "itlMs", "spec.sla", s.sla.itl_ms));
    }
    return Placement(Get(n, "placement"), s.placement);
  }

  Status Placement(const YAML::Node& m, PlacementSpec& pl) {
    const std::string q = "spec.placement";
    KVMESH_RETURN_IF_ERROR(ExpectMap(m, q, {"policy", "topologyKey", "clusters", "links", "model"}));
    KVMESH_RETURN_IF_ERROR(String(m, "policy", q, pl.policy));
    KVMESH_RETURN_IF_ERROR(String(m, "topologyKey", q, pl.topology_key));
    {
      YAML::Node mm = Get(m, "model");
      const std::string qm = q + ".model";
      KVMESH_RETURN_IF_ERROR(ExpectMap(mm, qm, {"prefillTokensPerS", "decodeTokensPerS", "replicationWindowS"}));
      KVMESH_RETURN_IF_ERROR(Number(mm, "prefillTokensPerS", qm, pl.model.prefill_tokens_per_s));
      KVMESH_RETURN_IF_ERROR(Number(mm, "decodeTokensPerS", qm, pl.model.decode_tokens_per_s));
      KVMESH_RETURN_IF_ERROR(Number(mm, "replicationWindowS", qm, pl.model.replication_window_s));
    }
    YAML::Node clusters = Get(m, "clusters");
    if (!Absent(clusters)) {
      if (!clusters.IsSequence()) return Fail(clusters, q + ".clusters", "expected a list, got " + KindName(clusters));
      Remember(clusters, q + ".clusters");
      for (size_t i = 0; i < clusters.size(); ++i) {
        std::string p = q + ".clusters[" + Num(i) + "]";
        YAML::Node c = clusters[i];
        if (!c.IsMap()) return Fail(c, p, "expected a mapping, got " + KindName(c));
        KVMESH_RETURN_IF_ERROR(ExpectMap(c, p, {"name", "kubeconfigSecret", "region", "gpuCapacity"}));
        ClusterSpec cs;
        KVMESH_RETURN_IF_ERROR(String(c, "name", p, cs.name));
        KVMESH_RETURN_IF_ERROR(String(c, "kubeconfigSecret", p, cs.kubeconfig_secret));
        KVMESH_RETURN_IF_ERROR(String(c, "region", p, cs.region));
        KVMESH_RETURN_IF_ERROR(Integer(c, "gpuCapacity", p, cs.gpu_capacity));
        pl.clusters.push_back(std::move(cs));
      }
    }
    YAML::Node links = Get(m, "links");
    if (!Absent(links)) {
      if (!links.IsSequence()) return Fail(links, q + ".links", "expected a list, got " + KindName(links));
      Remember(links, q + ".links");
      for (size_t i = 0; i < links.size(); ++i) {
        std::string p = q + ".links[" + Num(i) + "]";
        YAML::Node l = links[i];
        if (!l.IsMap()) return Fail(l, p, "expected a mapping, got " + KindName(l));
        KVMESH_RETURN_IF_ERROR(ExpectMap(l, p, {"from", "to", "bandwidthGbps", "latencyMs"}));
        LinkSpec ls;
        KVMESH_RETURN_IF_ERROR(String(l, "from", p, ls.from));
        KVMESH_RETURN_IF_ERROR(String(l, "to", p, ls.to));
        KVMESH_RETURN_IF_ERROR(Number(l, "bandwidthGbps", p, ls.bandwidth_gbps));
        KVMESH_RETURN_IF_ERROR(Number(l, "latencyMs", p, ls.latency_ms));
        pl.links.push_back(std::move(ls));
      }
    }
    return Status::Ok();
  }

  StatusOr<InferenceGraph> Root(const YAML::Node& root) {
    if (!root.IsMap()) return Fail(root, "(document)", "expected a mapping with apiVersion, kind, metadata, spec, got " + KindName(root));
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      if (key != "apiVersion" && key != "kind" && key != "metadata" && key != "spec" && key != "status") {
        return Fail(it->first, key.empty() ? "(document)" : key,
                    "unknown top-level field; known: apiVersion, kind, metadata, spec, status");
      }
    }
    std::string api_version, kind;
    KVMESH_RETURN_IF_ERROR(String(root, "apiVersion", "", api_version));
    KVMESH_RETURN_IF_ERROR(String(root, "kind", "", kind));
    if (api_version != kApiVersion) {
      return Fail(Get(root, "apiVersion"), "apiVersion", "must be " + std::string(kApiVersion) + ", got " + Quote(api_version));
    }
    if (kind != kKind) return Fail(Get(root, "kind"), "kind", "must be " + std::string(kKind) + ", got " + Quote(kind));

    InferenceGraph g;
    YAML::Node md = Get(root, "metadata");
    if (!Absent(md)) {
      if (!md.IsMap()) return Fail(md, "metadata", "expected a mapping, got " + KindName(md));
      // Unknown metadata (uid, resourceVersion, annotations, ...) is the API server's business.
      KVMESH_RETURN_IF_ERROR(String(md, "name", "metadata", g.name));
      KVMESH_RETURN_IF_ERROR(String(md, "namespace", "metadata", g.namespace_));
      KVMESH_RETURN_IF_ERROR(Integer(md, "generation", "metadata", g.generation));
      YAML::Node labels = Get(md, "labels");
      if (!Absent(labels)) {
        if (!labels.IsMap()) return Fail(labels, "metadata.labels", "expected a mapping, got " + KindName(labels));
        for (auto it = labels.begin(); it != labels.end(); ++it) {
          if (!it->first.IsScalar() || !it->second.IsScalar()) {
            return Fail(it->first, "metadata.labels", "expected string keys and values");
          }
          g.labels[it->first.Scalar()] = it->second.Scalar();
        }
      }
    }
    YAML::Node spec = Get(root, "spec");
    if (!spec.IsDefined()) return Fail(root, "spec", "missing");
    KVMESH_RETURN_IF_ERROR(Spec(spec, g.spec));
    if (Check e = ValidateGraph(g)) {
      std::string line;
      if (auto it = lines.find(e->path); it != lines.end()) line = " (line " + std::to_string(it->second) + ")";
      return InvalidArgumentError(e->path + ": " + e->message + line);
    }
    return g;
  }
};

YAML::Node JsonToYaml(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      YAML::Node n(YAML::NodeType::Map);
      for (auto it = j.begin(); it != j.end(); ++it) n[it.key()] = JsonToYaml(it.value());
      return n;
    }
    case nlohmann::json::value_t::array: {
      YAML::Node n(YAML::NodeType::Sequence);
      for (const auto& v : j) n.push_back(JsonToYaml(v));
      return n;
    }
    case nlohmann::json::value_t::string: {
      YAML::Node n(j.get<std::string>());
      n.SetTag("!");  // quoted: a string, never a number
      return n;
    }
    case nlohmann::json::value_t::null: return YAML::Node(YAML::NodeType::Null);
    default: {
      YAML::Node n(j.dump());  // numbers and booleans as their plain text
      n.SetTag("?");
      return n;
    }
  }
}

Json PoolToJson(const PoolSpec& p) {
  Json j;
  j["replicas"] = p.replicas;
  j["minReplicas"] = p.min_replicas;
  j["maxReplicas"] = p.max_replicas;
  j["gpusPerWorker"] = p.gpus_per_worker;
  j["requests"] = Json{{"cpu", p.requests.cpu}, {"memory", p.requests.memory}};
  j["limits"] = Json{{"cpu", p.limits.cpu}, {"memory", p.limits.memory}};
  j["extraArgs"] = Json::array();
  for (const auto& a : p.extra_args) j["extraArgs"].push_back(a);
  return j;
}

}  // namespace

Status InferenceGraph::Validate() const {
  if (Check e = ValidateGraph(*this)) return InvalidArgumentError(e->path + ": " + e->message);
  return Status::Ok();
}

std::string InferenceGraph::ServedModelName() const {
  if (!spec.model.name.empty()) return spec.model.name;
  std::string_view src = spec.model.source;
  if (src.rfind("builtin:", 0) == 0) return std::string(src.substr(8));
  if (src.rfind("pvc://", 0) == 0) src.remove_prefix(6);
  while (src.size() > 1 && src.back() == '/') src.remove_suffix(1);
  size_t slash = src.rfind('/');
  return std::string(slash == std::string_view::npos ? src : src.substr(slash + 1));
}

StatusOr<InferenceGraph> ParseInferenceGraphYaml(std::string_view text) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError("YAML syntax error at line " + std::to_string(e.mark.line + 1) + ", column " +
                                std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (docs.empty() || (docs.size() == 1 && docs[0].IsNull())) {
    return InvalidArgumentError("empty document: expected an InferenceGraph (apiVersion, kind, metadata, spec)");
  }
  if (docs.size() > 1) {
    return InvalidArgumentError("expected one YAML document, got " + std::to_string(docs.size()));
  }
  try {
    Parser parser;
    return parser.Root(docs[0]);
  } catch (const YAML::Exception& e) {  // defensive: yaml-cpp accessors may throw on odd nodes
    return InvalidArgumentError("YAML error at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

StatusOr<InferenceGraph> LoadInferenceGraphFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open InferenceGraph file " + Quote(path));
  std::ostringstream ss;
  ss << in.rdbuf();
  StatusOr<InferenceGraph> g = ParseInferenceGraphYaml(ss.str());
  if (!g.ok()) return g.status().WithContext(path);
  return g;
}

std::string InferenceGraphToJson(const InferenceGraph& g) {
  const InferenceGraphSpec& s = g.spec;
  Json md;
  md["name"] = g.name;
  if (!g.namespace_.empty()) md["namespace"] = g.namespace_;
  md["labels"] = Json::object();
  for (const auto& [k, v] : g.labels) md["labels"][k] = v;
  if (g.generation != 0) md["generation"] = g.generation;

  Json spec;
  spec["model"] = Json{{"name", s.model.name}, {"source", s.model.source}};
  spec["kvCache"] = Json{{"blockSize", s.kv_cache.block_size},
                         {"deviceMiB", s.kv_cache.device_mib},
                         {"hostMiB", s.kv_cache.host_mib},
                         {"diskMiB", s.kv_cache.disk_mib}};
  spec["router"] = Json{{"replicas", s.router.replicas},
                        {"routingMode", s.router.routing_mode},
                        {"kvCost", s.router.kv_cost},
                        {"overlapWeight", s.router.overlap_weight},
                        {"temperature", s.router.temperature}};
  spec["disaggregation"] = Json{{"mode", s.disaggregation.mode},
                                {"minRemotePrefillTokens", s.disaggregation.min_remote_prefill_tokens},
                                {"maxPrefillQueue", s.disaggregation.max_prefill_queue},
                                {"transferTimeout", s.disaggregation.transfer_timeout},
                                {"onFailure", s.disaggregation.on_failure},
                                {"transport", s.disaggregation.transport}};
  spec["prefill"] = PoolToJson(s.prefill);
  spec["decode"] = PoolToJson(s.decode);
  spec["sla"] = Json{{"ttftMs", s.sla.ttft_ms}, {"itlMs", s.sla.itl_ms}};
  Json placement;
  placement["policy"] = s.placement.policy;
  placement["topologyKey"] = s.placement.topology_key;
  placement["clusters"] = Json::array();
  for (const auto& c : s.placement.clusters) {
    placement["clusters"].push_back(Json{{"name", c.name},
                                         {"kubeconfigSecret", c.kubeconfig_secret},
                                         {"region", c.region},
                                         {"gpuCapacity", c.gpu_capacity}});
  }
  placement["links"] = Json::array();
  for (const auto& l : s.placement.links) {
    placement["links"].push_back(
        Json{{"from", l.from}, {"to", l.to}, {"bandwidthGbps", l.bandwidth_gbps}, {"latencyMs", l.latency_ms}});
  }
  placement["model"] = Json{{"prefillTokensPerS", s.placement.model.prefill_tokens_per_s},
                            {"decodeTokensPerS", s.placement.model.decode_tokens_per_s},
                            {"replicationWindowS", s.placement.model.replication_window_s}};
  spec["placement"] = std::move(placement);

  Json root;
  root["apiVersion"] = kApiVersion;
  root["kind"] = kKind;
  root["metadata"] = std::move(md);
  root["spec"] = std::move(spec);
  return root.dump();
}

StatusOr<InferenceGraph> InferenceGraphFromJson(std::string_view json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("InferenceGraph JSON: ") + e.what());
  }
  try {
    Parser parser;
    return parser.Root(JsonToYaml(j));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("InferenceGraph JSON: ") + e.what());
  }
}

InferenceGraph DefaultLocalGraph() {
  InferenceGraph g;
  g.name = "local-tiny";
  g.spec.model.source = "builtin:tiny";
  g.spec.prefill.replicas = 1;
  g.spec.decode.replicas = 1;
  g.spec.disaggregation.mode = "conditional";
  return g;
}

}  // namespace kvmesh::graph
