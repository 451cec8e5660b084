#include "operator/controller/diff.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

bool IsEmptyValue(const json& j) {
  return j.is_null() || (j.is_object() && j.empty()) || (j.is_array() && j.empty());
}

// `in_quantities`: inside a resources.requests / resources.limits map.
bool Differs(const json& desired, const json& live, bool in_quantities) {
  if (desired.is_object()) {
    if (!live.is_object()) return !(desired.empty() && live.is_null());
    for (auto it = desired.begin(); it != desired.end(); ++it) {
      auto l = live.find(it.key());
      if (l == live.end()) {
        if (IsEmptyValue(it.value())) continue;
        return true;
      }
      // The values of a requests/limits map are quantities.
      const bool q = in_quantities || it.key() == "requests" || it.key() == "limits";
      if (Differs(it.value(), *l, q)) return true;
    }
    return false;
  }
  if (desired.is_array()) {
    if (!live.is_array()) return !(desired.empty() && live.is_null());
    if (desired.size() != live.size()) return true;
    for (size_t i = 0; i < desired.size(); ++i) {
      if (Differs(desired[i], live[i], false)) return true;
    }
    return false;
  }
  if (desired.is_null()) return !live.is_null();
  if (desired.is_number() && live.is_number()) {
    return desired.get<double>() != live.get<double>();
  }
  if (desired == live) return false;
  if (in_quantities && desired.is_string() && live.is_string()) {
    long double a = 0, b = 0;
    if (ParseQuantity(desired.get<std::string>(), a) && ParseQuantity(live.get<std::string>(), b)) {
      return std::fabs(static_cast<double>(a - b)) > 1e-9 * std::max(1.0, std::fabs(static_cast<double>(a)));
    }
  }
  return true;
}

}  // namespace

bool ParseQuantity(const std::string& text, long double& value) {
  if (text.empty()) return false;
  std::string_view s = text;
  static constexpr struct {
    std::string_view suffix;
    long double mult;
  } kSuffixes[] = {
      {"Ki", 1024.0L}, {"Mi", 1048576.0L}, {"Gi", 1073741824.0L}, {"Ti", 1099511627776.0L},
      {"Pi", 1125899906842624.0L}, {"Ei", 1152921504606846976.0L}, {"n", 1e-9L}, {"u", 1e-6L},
      {"m", 1e-3L}, {"k", 1e3L}, {"M", 1e6L}, {"G", 1e9L}, {"T", 1e12L}, {"P", 1e15L}, {"E", 1e18L},
  };
  long double mult = 1.0L;
  for (const auto& sx : kSuffixes) {
    if (s.size() > sx.suffix.size() && s.substr(s.size() - sx.suffix.size()) == sx.suffix) {
      mult = sx.mult;
      s.remove_suffix(sx.suffix.size());
      break;
    }
  }
  // Digits, one optional '.', an optional exponent (1e3); a leading sign.
  std::string num(s);
  for (char c : num) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) return false;
  }
  char* end = nullptr;
  long double v = std::strtold(num.c_str(), &end);
  if (end == num.c_str() || *end != '\0') return false;
  value = v * mult;
  return true;
}

bool NeedsApply(const json& desired, const json& live) { return Differs(desired, live, false); }

}  // namespace kvmesh::controller
