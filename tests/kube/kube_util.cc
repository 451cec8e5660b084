#include "tests/kube/kube_util.h"

#include <cctype>
#include <cstdio>
#include <ctime>
#include <regex>

#include <yaml-cpp/yaml.h>

namespace kvmesh::testapi {

Json ApiError::ToStatus() const {
  Json s = {{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", Json::object()},
            {"status", "Failure"}, {"message", message}, {"reason", reason}, {"code", code}};
  if (!details.empty()) s["details"] = details;
  if (retry_after_seconds > 0) s["details"]["retryAfterSeconds"] = retry_after_seconds;
  return s;
}

static std::string Qualified(std::string_view group, std::string_view resource) {
  std::string r(resource);
  if (!group.empty()) r += "." + std::string(group);
  return r;
}

ApiError NotFoundError(std::string_view group, std::string_view resource, std::string_view name) {
  return {404, "NotFound", Qualified(group, resource) + " \"" + std::string(name) + "\" not found",
          {{"name", name}, {"group", group}, {"kind", resource}}};
}

ApiError AlreadyExistsError(std::string_view group, std::string_view resource,
                            std::string_view name) {
  return {409, "AlreadyExists",
          Qualified(group, resource) + " \"" + std::string(name) + "\" already exists",
          {{"name", name}, {"group", group}, {"kind", resource}}};
}

ApiError ConflictError(std::string_view group, std::string_view resource, std::string_view name,
                       std::string_view why) {
  return {409, "Conflict",
          "Operation cannot be fulfilled on " + Qualified(group, resource) + " \"" +
              std::string(name) + "\": " + std::string(why),
          {{"name", name}, {"group", group}, {"kind", resource}}};
}

ApiError InvalidError(std::string_view group, std::string_view kind, std::string_view name,
                      const std::vector<std::string>& causes) {
  std::string msg = std::string(kind) + (group.empty() ? "" : "." + std::string(group)) + " \"" +
                    std::string(name) + "\" is invalid: ";
  Json jc = Json::array();
  for (std::size_t i = 0; i < causes.size(); ++i) {
    if (i) msg += ", ";
    msg += causes[i];
    std::string field = causes[i].substr(0, causes[i].find(':'));
    jc.push_back({{"reason", "FieldValueInvalid"}, {"message", causes[i]}, {"field", field}});
  }
  if (causes.size() > 1) msg = msg.substr(0, msg.find(": ") + 2) + "[" + msg.substr(msg.find(": ") + 2) + "]";
  return {422, "Invalid", msg,
          {{"name", name}, {"group", group}, {"kind", kind}, {"causes", jc}}};
}

ApiError BadRequestError(std::string message) { return {400, "BadRequest", std::move(message), {}}; }
ApiError GoneError(std::string message) { return {410, "Expired", std::move(message), {}}; }

// ---- YAML -------------------------------------------------------------------------------------

static Json ScalarToJson(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str") return s;
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kFloat(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  if (std::regex_match(s, kInt)) {
    try {
      return std::stoll(s);
    } catch (...) {
      return s;
    }
  }
  if (std::regex_match(s, kFloat)) {
    try {
      return std::stod(s);
    } catch (...) {
      return s;
    }
  }
  return s;
}

static Json NodeToJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return ScalarToJson(n);
    case YAML::NodeType::Sequence: {
      Json a = Json::array();
      for (const auto& e : n) a.push_back(NodeToJson(e));
      return a;
    }
    case YAML::NodeType::Map: {
      Json o = Json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = NodeToJson(kv.second);
      return o;
    }
  }
  return nullptr;
}

ApiResult<Json> YamlToJson(std::string_view yaml) {
  try {
    return NodeToJson(YAML::Load(std::string(yaml)));
  } catch (const std::exception& e) {
    return BadRequestError(std::string("invalid YAML: ") + e.what());
  }
}

ApiResult<Json> ParseBody(std::string_view body, std::string_view content_type) {
  if (content_type.find("protobuf") != std::string_view::npos || content_type.find("cbor") != std::string_view::npos) {
    return ApiError{415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json, application/yaml (protobuf and CBOR are not supported by the test API server)",
                    {}};
  }
  if (content_type.find("yaml") != std::string_view::npos) return YamlToJson(body);
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return BadRequestError("the request body is not valid JSON: " +
                           std::string(body.substr(0, 200)));
  }
  return j;
}

// ---- selectors --------------------------------------------------------------------------------

static std::string Trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

ApiResult<LabelSelector> ParseLabelSelector(std::string_view text) {
  auto sel = LabelSelector::Parse(text);
  if (!sel.ok()) return BadRequestError("unable to parse requirement: " + sel.status().message());
  return *std::move(sel);
}

ApiResult<LabelSelector> LabelSelectorFromObject(const Json& selector) {
  auto sel = LabelSelector::FromObject(selector);
  if (!sel.ok()) return BadRequestError(sel.status().message());
  return *std::move(sel);
}

ApiResult<FieldSelector> FieldSelector::Parse(std::string_view text) {
  FieldSelector sel;
  for (const std::string& part : SplitSelectorTerms(text)) {
    std::size_t p = part.find("!=");
    Req r;
    if (p != std::string::npos) {
      r = {Trim(part.substr(0, p)), true, Trim(part.substr(p + 2))};
    } else if ((p = part.find("==")) != std::string::npos) {
      r = {Trim(part.substr(0, p)), false, Trim(part.substr(p + 2))};
    } else if ((p = part.find('=')) != std::string::npos) {
      r = {Trim(part.substr(0, p)), false, Trim(part.substr(p + 1))};
    } else {
      return BadRequestError("invalid selector: '" + std::string(text) +
                             "'; can't understand '" + part + "'");
    }
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

bool FieldSelector::Matches(const Json& object) const {
  for (const Req& r : reqs_) {
    const Json* cur = &object;
    std::size_t start = 0;
    bool found = true;
    while (start <= r.path.size()) {
      std::size_t dot = r.path.find('.', start);
      std::string key = r.path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!cur->is_object() || !cur->contains(key)) {
        found = false;
        break;
      }
      cur = &(*cur)[key];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    std::string val;
    if (found) val = cur->is_string() ? cur->get<std::string>() : (cur->is_null() ? "" : cur->dump());
    if ((val == r.value) == r.negate) return false;
  }
  return true;
}

// ---- JSONPath subset ---------------------------------------------------------------------------

std::optional<Json> EvalJsonPath(const Json& object, std::string_view path) {
  std::string p = Trim(path);
  if (p.size() >= 2 && p.front() == '{' && p.back() == '}') p = p.substr(1, p.size() - 2);
  if (!p.empty() && p[0] == '$') p = p.substr(1);
  const Json* cur = &object;
  std::size_t i = 0;
  static const std::regex kFilter(R"(^\?\(@\.([A-Za-z0-9_]+)\s*==\s*["']([^"']*)["']\)$)");
  while (i < p.size()) {
    if (p[i] == '.') {
      std::size_t j = i + 1;
      while (j < p.size() && p[j] != '.' && p[j] != '[') ++j;
      std::string key = p.substr(i + 1, j - i - 1);
      if (!cur->is_object() || !cur->contains(key)) return std::nullopt;
      cur = &(*cur)[key];
      i = j;
    } else if (p[i] == '[') {
      std::size_t j = p.find(']', i);
      if (j == std::string::npos) return std::nullopt;
      std::string inner = p.substr(i + 1, j - i - 1);
      std::smatch m;
      if (!cur->is_array()) return std::nullopt;
      if (std::regex_match(inner, m, kFilter)) {
        const Json* hit = nullptr;
        for (const Json& e : *cur) {
          if (e.is_object() && e.contains(m[1].str()) && e[m[1].str()].is_string() &&
              e[m[1].str()].get<std::string>() == m[2].str()) {
            hit = &e;
            break;
          }
        }
        if (hit == nullptr) return std::nullopt;
        cur = hit;
      } else {
        char* end = nullptr;
        long idx = std::strtol(inner.c_str(), &end, 10);
        if (end == inner.c_str() || idx < 0 || static_cast<std::size_t>(idx) >= cur->size()) return std::nullopt;
        cur = &(*cur)[static_cast<std::size_t>(idx)];
      }
      i = j + 1;
    } else {
      return std::nullopt;
    }
  }
  return *cur;
}

// ---- misc -------------------------------------------------------------------------------------

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> ParseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  std::size_t start = 0;
  while (start < query.size()) {
    std::size_t amp = query.find('&', start);
    std::string_view part = query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    if (!part.empty()) {
      std::size_t eq = part.find('=');
      if (eq == std::string_view::npos) {
        out[UrlDecode(part)] = "";
      } else {
        out[UrlDecode(part.substr(0, eq))] = UrlDecode(part.substr(eq + 1));
      }
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return out;
}

std::string FormatRfc3339(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseRfc3339(std::string_view s) {
  std::tm tm{};
  std::string str(s);
  if (strptime(str.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string HumanAge(std::chrono::system_clock::duration d) {
  long long s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 3600 * 2) return std::to_string(s / 60) + "m";
  if (s < 86400 * 2) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

bool IsDnsSubdomain(std::string_view name) {
  static const std::regex kRe(R"(^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)");
  return !name.empty() && name.size() <= 253 && std::regex_match(std::string(name), kRe);
}

}  // namespace kvmesh::testapi
