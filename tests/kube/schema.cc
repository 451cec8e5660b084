#include "tests/kube/schema.h"

#include <regex>

namespace kvmesh::testapi {
namespace {

std::string Short(const Json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

bool TypeMatches(const Json& v, const std::string& type, const Json& schema) {
  if (schema.value("x-kubernetes-int-or-string", false)) return v.is_number_integer() || v.is_string();
  if (type.empty()) return true;
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "integer") return v.is_number_integer() || (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<long long>(v.get<double>())));
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  return true;
}

void Walk(Json& v, const Json& schema, const std::string& path, bool root, SchemaResult& out) {
  if (!schema.is_object()) return;
  const std::string type = schema.value("type", "");
  if (v.is_null()) {
    if (!schema.value("nullable", false) && !type.empty()) {
      out.errors.push_back(path + ": Invalid value: \"null\": " + path + " in body must be of type " + type + ": \"null\"");
    }
    return;
  }
  if (!TypeMatches(v, type, schema)) {
    std::string got = v.is_string() ? "string" : v.is_boolean() ? "boolean" : v.is_number_integer() ? "integer"
                      : v.is_number() ? "number" : v.is_array() ? "array" : "object";
    out.errors.push_back(path + ": Invalid value: \"" + got + "\": " + path + " in body must be of type " + type + ": \"" + got + "\"");
    return;
  }
  if (schema.contains("enum") && schema["enum"].is_array()) {
    bool ok = false;
    std::string list;
    for (const Json& e : schema["enum"]) {
      ok = ok || e == v;
      if (!list.empty()) list += ", ";
      list += e.dump();
    }
    if (!ok) out.errors.push_back(path + ": Unsupported value: " + Short(v) + ": supported values: " + list);
  }
  if (v.is_number()) {
    double d = v.get<double>();
    if (schema.contains("minimum")) {
      double m = schema["minimum"].get<double>();
      bool ex = schema.value("exclusiveMinimum", false);
      if (ex ? d <= m : d < m) {
        out.errors.push_back(path + ": Invalid value: " + Short(v) + ": " + path + " in body should be greater than " +
                             (ex ? "" : "or equal to ") + schema["minimum"].dump());
      }
    }
    if (schema.contains("maximum")) {
      double m = schema["maximum"].get<double>();
      bool ex = schema.value("exclusiveMaximum", false);
      if (ex ? d >= m : d > m) {
        out.errors.push_back(path + ": Invalid value: " + Short(v) + ": " + path + " in body should be less than " +
                             (ex ? "" : "or equal to ") + schema["maximum"].dump());
      }
    }
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (schema.contains("maxLength") && s.size() > schema["maxLength"].get<std::size_t>()) {
      out.errors.push_back(path + ": Too long: may not be more than " + schema["maxLength"].dump() + " bytes");
    }
    if (schema.contains("minLength") && s.size() < schema["minLength"].get<std::size_t>()) {
      out.errors.push_back(path + ": Invalid value: " + Short(v) + ": " + path + " in body should be at least " +
                           schema["minLength"].dump() + " chars long");
    }
    if (schema.contains("pattern") && schema["pattern"].is_string()) {
      try {
        std::regex re(schema["pattern"].get<std::string>(), std::regex::ECMAScript);
        if (!std::regex_search(s, re)) {
          out.errors.push_back(path + ": Invalid value: " + Short(v) + ": " + path + " in body should match '" +
                               schema["pattern"].get<std::string>() + "'");
        }
      } catch (const std::regex_error&) {
        // An unsupported pattern is not enforced (documented).
      }
    }
  }
  if (v.is_array()) {
    if (schema.contains("minItems") && v.size() < schema["minItems"].get<std::size_t>()) {
      out.errors.push_back(path + ": Invalid value: " + std::to_string(v.size()) + ": " + path +
                           " in body should have at least " + schema["minItems"].dump() + " items");
    }
    if (schema.contains("maxItems") && v.size() > schema["maxItems"].get<std::size_t>()) {
      out.errors.push_back(path + ": Too many: " + std::to_string(v.size()) + ": must have at most " +
                           schema["maxItems"].dump() + " items");
    }
    if (schema.contains("items")) {
      for (std::size_t i = 0; i < v.size(); ++i) {
        Walk(v[i], schema["items"], path + "[" + std::to_string(i) + "]", false, out);
      }
    }
  }
  if (v.is_object()) {
    const bool preserve = schema.value("x-kubernetes-preserve-unknown-fields", false);
    const Json* props = schema.contains("properties") && schema["properties"].is_object() ? &schema["properties"] : nullptr;
    const Json* addl = schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
    if (props != nullptr) {
      for (const auto& [k, ps] : props->items()) {
        if (!v.contains(k) && ps.is_object() && ps.contains("default")) v[k] = ps["default"];
      }
    }
    std::vector<std::string> prune;
    for (auto& [k, child] : v.items()) {
      const std::string cp = path.empty() ? k : path + "." + k;
      if (root && (k == "apiVersion" || k == "kind" || k == "metadata")) continue;
      if (props != nullptr && props->contains(k)) {
        Walk(child, (*props)[k], cp, false, out);
      } else if (addl != nullptr && addl->is_object()) {
        Walk(child, *addl, cp, false, out);
      } else if ((addl != nullptr && addl->is_boolean() && addl->get<bool>()) || preserve) {
        continue;
      } else {
        prune.push_back(k);
        out.unknown_fields.push_back(cp);
      }
    }
    for (const std::string& k : prune) v.erase(k);
    if (schema.contains("required") && schema["required"].is_array()) {
      for (const Json& r : schema["required"]) {
        if (r.is_string() && !v.contains(r.get<std::string>())) {
          out.errors.push_back((path.empty() ? "" : path + ".") + r.get<std::string>() + ": Required value");
        }
      }
    }
  }
}

}  // namespace

SchemaResult ApplySchema(Json& object, const Json& schema) {
  SchemaResult out;
  Walk(object, schema, "", true, out);
  return out;
}

}  // namespace kvmesh::testapi
