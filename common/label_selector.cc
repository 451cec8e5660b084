#include "common/label_selector.h"

#include <algorithm>

namespace kvmesh {
namespace {

using json = nlohmann::json;

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::vector<std::string> SplitSelectorTerms(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : s) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(Trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!Trim(cur).empty() || !out.empty()) out.push_back(Trim(cur));
  return out;
}

namespace {

bool ValueChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

bool ValidKey(const std::string& k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char c) { return ValueChar(c) || c == '/'; });
}

bool ValidValue(const std::string& v) { return std::all_of(v.begin(), v.end(), ValueChar); }

std::string JsonString(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

}  // namespace

StatusOr<LabelSelector> LabelSelector::Parse(std::string_view text) {
  LabelSelector sel;
  for (const std::string& term : SplitSelectorTerms(text)) {
    auto bad = [&] {
      return InvalidArgumentError("label selector \"" + std::string(text) +
                                  "\": cannot parse requirement \"" + term + "\"");
    };
    if (term.empty()) return bad();
    Requirement r;
    const size_t paren = term.find('(');
    if (paren != std::string::npos) {
      // key in (a,b) | key notin (a,b)
      if (term.back() != ')') return bad();
      std::string head = Trim(std::string_view(term).substr(0, paren));
      size_t sp = head.find_last_of(" \t");
      if (sp == std::string::npos) return bad();
      const std::string op = head.substr(sp + 1);
      r.key = Trim(head.substr(0, sp));
      if (op == "in") {
        r.op = Op::kIn;
      } else if (op == "notin") {
        r.op = Op::kNotIn;
      } else {
        return bad();
      }
      for (std::string& v : SplitSelectorTerms(std::string_view(term).substr(paren + 1, term.size() - paren - 2))) {
        r.values.push_back(std::move(v));
      }
    } else if (size_t ne = term.find("!="); ne != std::string::npos) {
      r.key = Trim(std::string_view(term).substr(0, ne));
      r.op = Op::kNotEq;
      r.values.push_back(Trim(std::string_view(term).substr(ne + 2)));
    } else if (size_t eq = term.find('='); eq != std::string::npos) {
      r.key = Trim(std::string_view(term).substr(0, eq));
      r.op = Op::kEq;
      const size_t value_at = term.compare(eq, 2, "==") == 0 ? eq + 2 : eq + 1;
      r.values.push_back(Trim(std::string_view(term).substr(value_at)));
    } else if (term[0] == '!') {
      r.key = Trim(std::string_view(term).substr(1));
      r.op = Op::kNotExists;
    } else {
      r.key = term;
      r.op = Op::kExists;
    }
    if (!ValidKey(r.key)) return bad();
    for (const std::string& v : r.values) {
      if (!ValidValue(v)) return bad();
    }
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

StatusOr<LabelSelector> LabelSelector::FromObject(const json& selector) {
  LabelSelector sel;
  if (!selector.is_object()) return sel;
  if (auto it = selector.find("matchLabels"); it != selector.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      sel.reqs_.push_back({k, Op::kEq, {JsonString(v)}});
    }
  }
  if (auto it = selector.find("matchExpressions"); it != selector.end() && it->is_array()) {
    for (const json& e : *it) {
      Requirement r;
      r.key = e.is_object() ? e.value("key", "") : "";
      const std::string op = e.is_object() ? e.value("operator", "") : "";
      if (op == "In") {
        r.op = Op::kIn;
      } else if (op == "NotIn") {
        r.op = Op::kNotIn;
      } else if (op == "Exists") {
        r.op = Op::kExists;
      } else if (op == "DoesNotExist") {
        r.op = Op::kNotExists;
      } else {
        return InvalidArgumentError("label selector: invalid operator \"" + op + "\" for key \"" +
                                    r.key + "\"");
      }
      if (auto v = e.find("values"); v != e.end() && v->is_array()) {
        for (const json& x : *v) r.values.push_back(JsonString(x));
      }
      sel.reqs_.push_back(std::move(r));
    }
  }
  for (const Requirement& r : sel.reqs_) {
    if (!ValidKey(r.key)) {
      return InvalidArgumentError("label selector: invalid key \"" + r.key + "\"");
    }
  }
  return sel;
}

bool LabelSelector::Matches(const json& labels) const {
  for (const Requirement& r : reqs_) {
    const json* v = nullptr;
    if (labels.is_object()) {
      auto it = labels.find(r.key);
      if (it != labels.end()) v = &*it;
    }
    const bool has = v != nullptr;
    const std::string val = has && v->is_string() ? v->get<std::string>() : "";
    const bool in = has && std::find(r.values.begin(), r.values.end(), val) != r.values.end();
    switch (r.op) {
      case Op::kEq:
      case Op::kIn:
        if (!in) return false;
        break;
      case Op::kNotEq:
      case Op::kNotIn:
        if (in) return false;
        break;
      case Op::kExists:
        if (!has) return false;
        break;
      case Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

std::string LabelSelector::EqualityValue(const std::string& key) const {
  for (const Requirement& r : reqs_) {
    if (r.key != key) continue;
    if ((r.op == Op::kEq || r.op == Op::kIn) && r.values.size() == 1) return r.values[0];
  }
  return "";
}

}  // namespace kvmesh
