#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/log.h"

namespace kvmesh {

EnvLookup ProcessEnvLookup() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

EnvLookup MapEnvLookup(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

void LogEffectiveConfigJson(std::string_view component, const std::string& json) {
  KVMESH_LOG_INFO(component, "effective config", {"config", json});
}

namespace config_internal {
namespace {

constexpr std::string_view kReservedKeys[] = {"config", "help", "h"};

std::string_view TypeName(ConfigFieldType t) {
  switch (t) {
    case ConfigFieldType::kBool: return "bool";
    case ConfigFieldType::kInt32: return "int32";
    case ConfigFieldType::kInt64: return "int64";
    case ConfigFieldType::kUint32: return "uint32";
    case ConfigFieldType::kUint64: return "uint64";
    case ConfigFieldType::kDouble: return "double";
    case ConfigFieldType::kString: return "string";
    case ConfigFieldType::kStringList: return "list of strings";
    case ConfigFieldType::kDuration: return "duration";
  }
  return "?";
}

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string EnvName(std::string_view prefix, std::string_view key) {
  std::string out(prefix);
  if (!out.empty() && out.back() != '_') out += '_';
  for (char c : key) {
    out += (c == '.' || c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string FlagName(std::string_view key) {
  std::string out = "--";
  for (char c : key) out += (c == '_') ? '-' : c;
  return out;
}

// "--kv-cache.block-size" and "--kv_cache.block_size" both name "kv_cache.block_size".
std::string NormalizeFlag(std::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

const FieldRef* FindField(const Schema& s, std::string_view key) {
  for (const auto& f : s.fields) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

bool IsSection(const Schema& s, std::string_view key) {
  return std::find(s.sections.begin(), s.sections.end(), key) != s.sections.end();
}

template <class I>
Status ParseInt(std::string_view s, ConfigFieldType type, I* out) {
  std::string_view body = s;
  if (body.starts_with('+')) body.remove_prefix(1);
  if (body.empty()) return InvalidArgumentError("expected " + std::string(TypeName(type)) + ", got ''");
  I v{};
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return InvalidArgumentError("value " + std::string(s) + " is out of range for " +
                                std::string(TypeName(type)) + " [" +
                                std::to_string(std::numeric_limits<I>::min()) + ", " +
                                std::to_string(std::numeric_limits<I>::max()) + "]");
  }
  if (ec != std::errc() || ptr != body.data() + body.size()) {
    if (std::is_unsigned_v<I> && body.starts_with('-')) {
      return InvalidArgumentError("value " + std::string(s) + " is out of range for " +
                                  std::string(TypeName(type)) + " (must be >= 0)");
    }
    return InvalidArgumentError("expected " + std::string(TypeName(type)) + ", got " + Quote(s));
  }
  *out = v;
  return Status::Ok();
}

StatusOr<bool> ParseBool(std::string_view s) {
  std::string l = Lower(s);
  if (l == "true" || l == "1" || l == "yes" || l == "on") return true;
  if (l == "false" || l == "0" || l == "no" || l == "off") return false;
  return InvalidArgumentError("expected bool (true/false), got " + Quote(s));
}

StatusOr<double> ParseDouble(std::string_view s) {
  double v = 0;
  std::string_view body = s;
  if (body.starts_with('+')) body.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return InvalidArgumentError("value " + std::string(s) + " is out of range for double");
  }
  if (ec != std::errc() || ptr != body.data() + body.size() || body.empty() || !std::isfinite(v)) {
    return InvalidArgumentError("expected a finite number, got " + Quote(s));
  }
  return v;
}

struct DurationUnit {
  std::string_view suffix;
  int64_t num;  // seconds = num / den
  int64_t den;
};
constexpr DurationUnit kDurationUnits[] = {
    {"ns", 1, 1000000000}, {"us", 1, 1000000}, {"ms", 1, 1000},
    {"s", 1, 1},           {"m", 60, 1},       {"h", 3600, 1},
};

// Parses "250ms" into a count of the field's period; must be a whole number of periods.
StatusOr<int64_t> ParseDuration(std::string_view s, int64_t period_num, int64_t period_den) {
  const std::string bad = "expected a duration like 500ms, 2s, 1.5m or 1h, got " + Quote(s);
  if (s == "0") return int64_t{0};
  size_t split = s.size();
  while (split > 0 && std::isalpha(static_cast<unsigned char>(s[split - 1]))) --split;
  std::string_view number = s.substr(0, split);
  std::string_view suffix = s.substr(split);
  const DurationUnit* unit = nullptr;
  for (const auto& u : kDurationUnits) {
    if (u.suffix == suffix) unit = &u;
  }
  if (unit == nullptr || number.empty()) return InvalidArgumentError(bad);
  double value = 0;
  auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc() || ptr != number.data() + number.size() || !std::isfinite(value)) {
    return InvalidArgumentError(bad);
  }
  // count = value * unit / period, computed in long double to keep small units exact.
  long double count = static_cast<long double>(value) * unit->num * period_den /
                      (static_cast<long double>(unit->den) * period_num);
  long double rounded = std::round(count);
  if (std::fabs(count - rounded) > 1e-6L * std::max<long double>(1, std::fabs(count))) {
    return InvalidArgumentError("duration " + Quote(s) + " is not a whole number of the field's unit");
  }
  if (rounded > static_cast<long double>(std::numeric_limits<int64_t>::max()) ||
      rounded < static_cast<long double>(std::numeric_limits<int64_t>::min())) {
    return InvalidArgumentError("duration " + Quote(s) + " is out of range");
  }
  return static_cast<int64_t>(rounded);
}

std::string FormatDuration(int64_t count, int64_t period_num, int64_t period_den) {
  for (const auto& u : kDurationUnits) {
    if (u.num == period_num && u.den == period_den) return std::to_string(count) + std::string(u.suffix);
  }
  return std::to_string(count) + "*" + std::to_string(period_num) + "/" + std::to_string(period_den) + "s";
}

std::vector<std::string> SplitList(std::string_view s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    out.emplace_back(s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// Sets a scalar field from text. Errors name the problem and value; the caller adds where.
Status SetFromString(const FieldRef& f, std::string_view s) {
  switch (f.type) {
    case ConfigFieldType::kBool: {
      KVMESH_ASSIGN_OR_RETURN(bool v, ParseBool(s));
      *static_cast<bool*>(f.ptr) = v;
      return Status::Ok();
    }
    case ConfigFieldType::kInt32: return ParseInt(s, f.type, static_cast<int32_t*>(f.ptr));
    case ConfigFieldType::kInt64: return ParseInt(s, f.type, static_cast<int64_t*>(f.ptr));
    case ConfigFieldType::kUint32: return ParseInt(s, f.type, static_cast<uint32_t*>(f.ptr));
    case ConfigFieldType::kUint64: return ParseInt(s, f.type, static_cast<uint64_t*>(f.ptr));
    case ConfigFieldType::kDouble: {
      KVMESH_ASSIGN_OR_RETURN(double v, ParseDouble(s));
      *static_cast<double*>(f.ptr) = v;
      return Status::Ok();
    }
    case ConfigFieldType::kString:
      *static_cast<std::string*>(f.ptr) = std::string(s);
      return Status::Ok();
    case ConfigFieldType::kStringList:
      *static_cast<std::vector<std::string>*>(f.ptr) = SplitList(s);
      return Status::Ok();
    case ConfigFieldType::kDuration: {
      KVMESH_ASSIGN_OR_RETURN(int64_t count, ParseDuration(s, f.period_num, f.period_den));
      // Every std::chrono::duration<int64_t, P> has the layout of its rep.
      *static_cast<int64_t*>(f.ptr) = count;
      return Status::Ok();
    }
  }
  return InternalError("unknown field type");
}

nlohmann::json ValueJson(const FieldRef& f) {
  switch (f.type) {
    case ConfigFieldType::kBool: return *static_cast<const bool*>(f.ptr);
    case ConfigFieldType::kInt32: return *static_cast<const int32_t*>(f.ptr);
    case ConfigFieldType::kInt64: return *static_cast<const int64_t*>(f.ptr);
    case ConfigFieldType::kUint32: return *static_cast<const uint32_t*>(f.ptr);
    case ConfigFieldType::kUint64: return *static_cast<const uint64_t*>(f.ptr);
    case ConfigFieldType::kDouble: return *static_cast<const double*>(f.ptr);
    case ConfigFieldType::kString: {
      const auto& s = *static_cast<const std::string*>(f.ptr);
      if (f.secret && !s.empty()) return "<redacted>";
      return s;
    }
    case ConfigFieldType::kStringList: {
      const auto& v = *static_cast<const std::vector<std::string>*>(f.ptr);
      if (f.secret && !v.empty()) return "<redacted>";
      return v;
    }
    case ConfigFieldType::kDuration:
      return FormatDuration(*static_cast<const int64_t*>(f.ptr), f.period_num, f.period_den);
  }
  return nullptr;
}

std::string Where(std::string_view source, const YAML::Mark& mark) {
  if (mark.is_null()) return std::string(source);
  return std::string(source) + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string NodeKind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "scalar " + Quote(n.Scalar());
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

// `key_mark` locates the key, for values (null) that have no position of their own.
Status ApplyNode(const FieldRef& f, const YAML::Node& v, const YAML::Mark& key_mark,
                 std::string_view source) {
  const std::string ctx = Where(source, v.IsNull() ? key_mark : v.Mark()) + ": key '" + f.key + "'";
  if (f.type == ConfigFieldType::kStringList) {
    if (v.IsNull()) {
      static_cast<std::vector<std::string>*>(f.ptr)->clear();
      return Status::Ok();
    }
    if (!v.IsSequence()) {
      return InvalidArgumentError(ctx + ": expected a list of strings, got " + NodeKind(v));
    }
    std::vector<std::string> out;
    for (const auto& item : v) {
      if (!item.IsScalar()) {
        return InvalidArgumentError(ctx + ": expected a list of strings, got an item that is " + NodeKind(item));
      }
      out.push_back(item.Scalar());
    }
    *static_cast<std::vector<std::string>*>(f.ptr) = std::move(out);
    return Status::Ok();
  }
  if (!v.IsScalar()) {
    return InvalidArgumentError(ctx + ": expected " + std::string(TypeName(f.type)) + ", got " + NodeKind(v));
  }
  Status st = SetFromString(f, v.Scalar());
  if (!st.ok()) return InvalidArgumentError(ctx + ": " + st.message());
  return Status::Ok();
}

Status ApplyMap(const Schema& schema, const YAML::Node& map, const std::string& path,
                std::string_view source) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    // Copies: the iterator yields a temporary pair, so references would dangle.
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    if (!k.IsScalar()) {
      return InvalidArgumentError(Where(source, k.Mark()) + ": keys must be plain strings");
    }
    std::string key = path.empty() ? k.Scalar() : path + "." + k.Scalar();
    if (IsSection(schema, key)) {
      if (v.IsNull()) continue;
      if (!v.IsMap()) {
        return InvalidArgumentError(Where(source, v.Mark()) + ": key '" + key +
                                    "' must be a mapping, got " + NodeKind(v));
      }
      KVMESH_RETURN_IF_ERROR(ApplyMap(schema, v, key, source));
    } else if (const FieldRef* f = FindField(schema, key)) {
      KVMESH_RETURN_IF_ERROR(ApplyNode(*f, v, k.Mark(), source));
    } else {
      return InvalidArgumentError(Where(source, k.Mark()) + ": unknown key '" + key + "'");
    }
  }
  return Status::Ok();
}

bool LooksLikeJson(std::string_view text, std::string_view source) {
  if (source.ends_with(".json")) return true;
  size_t i = text.find_first_not_of(" \t\r\n");
  return i != std::string_view::npos && text[i] == '{';
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgumentError("cannot read config file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return InvalidArgumentError("error reading config file '" + path + "'");
  return ss.str();
}

struct PendingFlag {
  const FieldRef* field;
  std::string value;
  std::string spelling;  // as typed, for errors
};

}  // namespace

void AddField(Schema& schema, FieldRef field) {
  if (!schema.error.ok()) return;
  for (auto r : kReservedKeys) {
    if (field.key == r) {
      schema.error = InternalError("config key '" + field.key + "' is reserved for the loader");
      return;
    }
  }
  if (FindField(schema, field.key) != nullptr || IsSection(schema, field.key)) {
    schema.error = InternalError("config key '" + field.key + "' is declared twice");
    return;
  }
  schema.fields.push_back(std::move(field));
}

void AddSection(Schema& schema, const std::string& key) {
  if (!schema.error.ok()) return;
  if (FindField(schema, key) != nullptr || IsSection(schema, key)) {
    schema.error = InternalError("config key '" + key + "' is declared twice");
    return;
  }
  schema.sections.push_back(key);
}

Status ApplyDocument(const Schema& schema, std::string_view text, std::string_view source) {
  if (LooksLikeJson(text, source)) {
    // yaml-cpp reads JSON too, but its messages for broken JSON are poor; check with a JSON parser.
    try {
      [[maybe_unused]] auto parsed = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      std::string what = e.what();
      if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
      return InvalidArgumentError(std::string(source) + ": invalid JSON: " + what);
    }
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(Where(source, e.mark) + ": invalid YAML: " + e.msg);
  }
  if (root.IsNull()) return Status::Ok();  // empty file: defaults
  if (!root.IsMap()) {
    return InvalidArgumentError(std::string(source) + ": the config must be a mapping of keys, got " +
                                NodeKind(root));
  }
  try {
    return ApplyMap(schema, root, "", source);
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(Where(source, e.mark) + ": " + e.msg);
  }
}

StatusOr<ArgsResult> Load(const Schema& schema, std::span<char* const> args, const EnvLookup& env,
                          std::string_view env_prefix) {
  ArgsResult result;
  std::vector<PendingFlag> flags;
  std::optional<std::string> config_flag;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) result.positional.emplace_back(args[i]);
      break;
    }
    if (arg == "-h" || arg == "--help") {
      result.help = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      if (arg.size() > 1 && arg.starts_with('-')) {
        return InvalidArgumentError("unknown flag " + std::string(arg) + " (flags start with --)");
      }
      result.positional.emplace_back(arg);
      continue;
    }
    std::string_view body = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const std::string spelling = "--" + std::string(body);
    const std::string key = NormalizeFlag(body);
    const FieldRef* f = key == "config" ? nullptr : FindField(schema, key);
    if (key != "config" && f == nullptr) {
      // --no-<bool>
      const FieldRef* neg = key.starts_with("no_") ? FindField(schema, key.substr(3)) : nullptr;
      if (neg != nullptr && neg->type == ConfigFieldType::kBool && !value) {
        flags.push_back({neg, "false", spelling});
        continue;
      }
      return InvalidArgumentError("unknown flag " + spelling);
    }
    if (!value) {
      if (f != nullptr && f->type == ConfigFieldType::kBool) {
        value = "true";
      } else if (i + 1 < args.size() && !std::string_view(args[i + 1]).starts_with("--")) {
        value = std::string(args[++i]);
      } else {
        return InvalidArgumentError("flag " + spelling + " needs a value");
      }
    }
    if (f == nullptr) {
      config_flag = *value;
    } else {
      flags.push_back({f, *value, spelling});
    }
  }
  if (result.help) return result;

  // Config file: --config, else <PREFIX>_CONFIG.
  if (config_flag) {
    result.config_path = *config_flag;
  } else if (auto p = env(EnvName(env_prefix, "config")); p && !p->empty()) {
    result.config_path = *p;
  }
  if (!result.config_path.empty()) {
    KVMESH_ASSIGN_OR_RETURN(std::string text, ReadFile(result.config_path));
    KVMESH_RETURN_IF_ERROR(ApplyDocument(schema, text, result.config_path));
  }
  for (const auto& f : schema.fields) {
    const std::string name = EnvName(env_prefix, f.key);
    if (auto v = env(name)) {
      Status st = SetFromString(f, *v);
      if (!st.ok()) return InvalidArgumentError("env " + name + ": " + st.message());
    }
  }
  std::vector<const FieldRef*> appending;  // repeatable lists already set by an earlier flag
  for (const auto& p : flags) {
    if (p.field->repeatable &&
        std::find(appending.begin(), appending.end(), p.field) != appending.end()) {
      auto* list = static_cast<std::vector<std::string>*>(p.field->ptr);
      for (std::string& item : SplitList(p.value)) list->push_back(std::move(item));
      continue;
    }
    if (p.field->repeatable) appending.push_back(p.field);
    Status st = SetFromString(*p.field, p.value);
    if (!st.ok()) return InvalidArgumentError("flag " + p.spelling + ": " + st.message());
  }
  return result;
}

Status RunValidators(const Schema& schema) {
  for (const auto& [key, validate] : schema.validators) {
    Status st = validate();
    if (!st.ok()) return st.WithContext(key);
  }
  return Status::Ok();
}

std::string RenderJson(const Schema& schema, int indent) {
  nlohmann::json root = nlohmann::json::object();
  for (const auto& f : schema.fields) {
    std::string pointer = "/" + f.key;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    root[nlohmann::json::json_pointer(pointer)] = ValueJson(f);
  }
  return root.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string RenderHelp(const Schema& defaults, std::string_view env_prefix) {
  std::string out = "flags (also settable in the --config file as YAML/JSON keys, or by env var):\n";
  out += "  --config PATH  YAML or JSON config file [env " + EnvName(env_prefix, "config") + "]\n";
  out += "  -h, --help     show this help\n";
  for (const auto& f : defaults.fields) {
    out += "  " + FlagName(f.key) + " <" + std::string(TypeName(f.type)) + ">  " + f.help;
    nlohmann::json def = ValueJson(f);
    out += " (default " + def.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ")";
    if (f.repeatable) out += " (repeatable)";
    out += " [env " + EnvName(env_prefix, f.key) + "]\n";
  }
  return out;
}

}  // namespace config_internal
}  // namespace kvmesh
