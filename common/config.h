// Typed configuration: one struct per component, loaded from defaults < config file (YAML or
// JSON) < environment < command-line flags, then validated.
//
// A config struct lists its fields once, in a Visit() member; that one declaration feeds the YAML
// key, the flag and the environment variable:
//
//   struct KvCacheConfig {
//     uint32_t block_size = 16;
//     std::chrono::milliseconds lease_ttl{30000};
//     template <class V> void Visit(V& v) {
//       v("block_size", block_size, "tokens per KV block");
//       v("lease_ttl", lease_ttl, "how long a prefill lease pins its blocks");
//     }
//     Status Validate() const;  // optional; names the bad field
//   };
//   struct RouterConfig {
//     std::string listen = "127.0.0.1:8000";
//     KvCacheConfig kv_cache;                      // nested: YAML mapping `kv_cache:`
//     std::string api_key;
//     template <class V> void Visit(V& v) {
//       v("listen", listen, "address to serve on");
//       v("kv_cache", kv_cache, "KV cache settings");
//       v("api_key", api_key, "bearer token", kConfigSecret);  // redacted in RenderConfigJson
//     }
//   };
//
// Key "kv_cache.block_size" <-> YAML `kv_cache: {block_size: 16}` <-> flag --kv-cache.block-size
// (or --kv_cache.block_size, `--flag=value` or `--flag value`) <-> env <PREFIX>_KV_CACHE_BLOCK_SIZE.
// `--config PATH` (or env <PREFIX>_CONFIG) names the file. Bool flags: `--x`, `--x=false`, `--no-x`.
// Lists: a YAML sequence, or comma-separated in a flag or env var. Durations: "250ms", "1.5s",
// "2m", "1h", "100us", "10ns" (or 0).
//
// Invariants: loading never throws (yaml-cpp and nlohmann exceptions are caught here); every error
// is kInvalidArgument and names the key, flag or env var, the bad value, and for files the line and
// column. The environment is read only through the injected EnvLookup.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh {

// Returns the value of an environment variable, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process environment (the one place kvmesh calls getenv for configuration).
EnvLookup ProcessEnvLookup();
// A fixed map, for tests.
EnvLookup MapEnvLookup(std::map<std::string, std::string> vars);

// Per-field flags (last argument of a Visit() entry).
inline constexpr unsigned kConfigSecret = 1u;  // value is redacted when the config is rendered
// A list whose flag may be given more than once: the first occurrence on the command line replaces
// the value (from defaults, file or env), later ones append (`--link a --link b` = `--link a,b`).
inline constexpr unsigned kConfigRepeatable = 2u;

enum class ConfigFieldType {
  kBool, kInt32, kInt64, kUint32, kUint64, kDouble, kString, kStringList, kDuration,
};

namespace config_internal {

struct FieldRef {
  std::string key;  // dotted path, e.g. "kv_cache.block_size"
  std::string help;
  ConfigFieldType type;
  void* ptr;  // points at the field; its type is given by `type`
  // For kDuration: the field is a std::chrono::duration<int64-like, ratio<num, den>>.
  int64_t period_num = 1;
  int64_t period_den = 1;
  bool secret = false;
  bool repeatable = false;  // kStringList only: see kConfigRepeatable
};

struct Schema {
  std::vector<FieldRef> fields;
  std::vector<std::string> sections;  // dotted paths of nested structs
  std::vector<std::pair<std::string, std::function<Status()>>> validators;  // nested, post-order
  Status error;  // set when the declaration itself is bad (duplicate or reserved key)
};

template <class D>
struct IsDuration : std::false_type {};
template <class R, class P>
struct IsDuration<std::chrono::duration<R, P>> : std::true_type {};

template <class F>
constexpr ConfigFieldType TypeOf() {
  if constexpr (std::is_same_v<F, bool>) return ConfigFieldType::kBool;
  else if constexpr (std::is_same_v<F, int32_t>) return ConfigFieldType::kInt32;
  else if constexpr (std::is_same_v<F, int64_t>) return ConfigFieldType::kInt64;
  else if constexpr (std::is_same_v<F, uint32_t>) return ConfigFieldType::kUint32;
  else if constexpr (std::is_same_v<F, uint64_t>) return ConfigFieldType::kUint64;
  else if constexpr (std::is_same_v<F, double>) return ConfigFieldType::kDouble;
  else if constexpr (std::is_same_v<F, std::string>) return ConfigFieldType::kString;
  else if constexpr (std::is_same_v<F, std::vector<std::string>>) return ConfigFieldType::kStringList;
  else if constexpr (IsDuration<F>::value) {
    static_assert(std::is_same_v<typename F::rep, int64_t> || std::is_same_v<typename F::rep, long long>,
                  "config durations must have a 64-bit signed integer rep (std::chrono::milliseconds etc.)");
    return ConfigFieldType::kDuration;
  } else {
    static_assert(sizeof(F) == 0, "unsupported config field type");
  }
}

class Collector;
template <class T>
concept HasVisit = requires(T& t, Collector& c) { t.Visit(c); };
template <class T>
concept HasValidate = requires(const T& t) { { t.Validate() } -> std::same_as<Status>; };

void AddField(Schema& schema, FieldRef field);
void AddSection(Schema& schema, const std::string& key);

class Collector {
 public:
  explicit Collector(Schema* schema) : schema_(schema) {}

  template <class F>
  void operator()(std::string_view name, F& field, std::string_view help, unsigned flags = 0) {
    std::string key = prefix_.empty() ? std::string(name) : prefix_ + "." + std::string(name);
    if constexpr (HasVisit<F>) {
      AddSection(*schema_, key);
      std::string saved = std::exchange(prefix_, key);
      field.Visit(*this);
      prefix_ = std::move(saved);
      if constexpr (HasValidate<F>) {
        schema_->validators.emplace_back(key, [&field] { return field.Validate(); });
      }
    } else {
      FieldRef ref{key, std::string(help), TypeOf<F>(), &field};
      if constexpr (IsDuration<F>::value) {
        ref.period_num = F::period::num;
        ref.period_den = F::period::den;
      }
      ref.secret = (flags & kConfigSecret) != 0;
      ref.repeatable = (flags & kConfigRepeatable) != 0 && ref.type == ConfigFieldType::kStringList;
      AddField(*schema_, std::move(ref));
    }
  }

 private:
  Schema* schema_;
  std::string prefix_;
};

template <class T>
Schema Collect(T& config) {
  Schema schema;
  Collector c(&schema);
  config.Visit(c);
  return schema;
}

struct ArgsResult {
  std::vector<std::string> positional;
  std::string config_path;  // empty: no file
  bool help = false;
};

// Applies file (if any), env and flags to the fields of `schema`, in that order.
StatusOr<ArgsResult> Load(const Schema& schema, std::span<char* const> args, const EnvLookup& env,
                          std::string_view env_prefix);
// Applies one YAML/JSON document; `source` names it in error messages.
Status ApplyDocument(const Schema& schema, std::string_view text, std::string_view source);
Status RunValidators(const Schema& schema);
std::string RenderJson(const Schema& schema, int indent);
// `defaults` is collected from a default-constructed config; its values are shown as defaults.
std::string RenderHelp(const Schema& defaults, std::string_view env_prefix);

template <class T>
Status Validate(const Schema& schema, const T& config) {
  KVMESH_RETURN_IF_ERROR(RunValidators(schema));
  if constexpr (HasValidate<T>) KVMESH_RETURN_IF_ERROR(config.Validate());
  return Status::Ok();
}

}  // namespace config_internal

// A loaded configuration plus what the command line held besides flags.
template <class T>
struct LoadedConfig {
  T config;
  std::vector<std::string> positional;  // non-flag arguments, and everything after `--`
  std::string config_path;              // the file that was read, or empty
  bool help_requested = false;          // -h/--help; `config` is then defaults only, unvalidated
};

// Loads T from defaults < file < env < flags and validates it (nested Validate() first, then
// T::Validate()). env_prefix like "KVMESH_ROUTER" (a trailing '_' is added when missing).
// Returns kInvalidArgument naming the bad key/flag/env var and value, or the Validate() status.
template <class T>
StatusOr<LoadedConfig<T>> LoadConfigWithArgs(std::span<char* const> args, const EnvLookup& env,
                                             std::string_view env_prefix) {
  LoadedConfig<T> out;
  config_internal::Schema schema = config_internal::Collect(out.config);
  KVMESH_RETURN_IF_ERROR(schema.error);
  KVMESH_ASSIGN_OR_RETURN(config_internal::ArgsResult r,
                          config_internal::Load(schema, args, env, env_prefix));
  out.positional = std::move(r.positional);
  out.config_path = std::move(r.config_path);
  out.help_requested = r.help;
  if (r.help) {
    out.config = T{};
    return out;
  }
  KVMESH_RETURN_IF_ERROR(config_internal::Validate(schema, out.config));
  return out;
}

// As LoadConfigWithArgs, for programs that take no positional arguments: a positional argument
// or --help is an error.
template <class T>
StatusOr<T> LoadConfig(std::span<char* const> args, const EnvLookup& env,
                       std::string_view env_prefix) {
  KVMESH_ASSIGN_OR_RETURN(LoadedConfig<T> loaded, LoadConfigWithArgs<T>(args, env, env_prefix));
  if (loaded.help_requested) return InvalidArgumentError("--help is not supported here");
  if (!loaded.positional.empty()) {
    return InvalidArgumentError("unexpected argument '" + loaded.positional.front() + "'");
  }
  return std::move(loaded.config);
}

// Defaults < `text` (a YAML or JSON document; `source` names it in errors), then Validate().
// For configs that arrive as a string (a ConfigMap, a test).
template <class T>
StatusOr<T> ParseConfigText(std::string_view text, std::string_view source) {
  T config;
  config_internal::Schema schema = config_internal::Collect(config);
  KVMESH_RETURN_IF_ERROR(schema.error);
  KVMESH_RETURN_IF_ERROR(config_internal::ApplyDocument(schema, text, source));
  KVMESH_RETURN_IF_ERROR(config_internal::Validate(schema, config));
  return config;
}

// The effective config as JSON (nested objects; durations as "250ms"; secrets as "<redacted>").
// indent < 0: one line (for logs).
template <class T>
std::string RenderConfigJson(const T& config, int indent = -1) {
  T copy = config;
  return config_internal::RenderJson(config_internal::Collect(copy), indent);
}

// Help text: one line per field with its flag, type, default, env var and help.
template <class T>
std::string RenderConfigHelp(std::string_view env_prefix) {
  T defaults{};
  return config_internal::RenderHelp(config_internal::Collect(defaults), env_prefix);
}

// Logs the effective config at INFO ("effective config", config=<json>). Call once at start-up.
void LogEffectiveConfigJson(std::string_view component, const std::string& json);
template <class T>
void LogEffectiveConfig(std::string_view component, const T& config) {
  LogEffectiveConfigJson(component, RenderConfigJson(config));
}

}  // namespace kvmesh
