#include "operator/controller/object_reader.h"

#include <algorithm>

#include "operator/controller/desired_state.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// Splits on commas outside parentheses.
std::vector<std::string> SplitTopLevel(const std::string& s) {
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

bool ValidKey(const std::string& k) {
  if (k.empty()) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '/' || c == '-';
  });
}

bool ValidValue(const std::string& v) {
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string MetaString(const json& obj, const char* field) {
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return "";
  auto it = md->find(field);
  return it != md->end() && it->is_string() ? it->get<std::string>() : "";
}

const json& Labels(const json& obj) {
  static const json kNull;
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return kNull;
  auto it = md->find("labels");
  return it != md->end() ? *it : kNull;
}

std::string RefKey(const kube::ResourceRef& r) { return r.group + "/" + r.resource; }

}  // namespace

// ---- LabelSelector --------------------------------------------------------------------------

StatusOr<LabelSelector> LabelSelector::Parse(const std::string& text) {
  LabelSelector sel;
  for (const std::string& term : SplitTopLevel(text)) {
    auto bad = [&] {
      return InvalidArgumentError("label selector \"" + text + "\": cannot parse requirement \"" + term + "\"");
    };
    if (term.empty()) return bad();
    Requirement r;
    const size_t paren = term.find('(');
    if (paren != std::string::npos) {
      // key in (a,b) | key notin (a,b)
      if (term.back() != ')') return bad();
      std::string head = Trim(term.substr(0, paren));
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
      const std::string inner = term.substr(paren + 1, term.size() - paren - 2);
      for (const std::string& v : SplitTopLevel(inner)) {
        if (!ValidValue(v)) return bad();
        r.values.push_back(v);
      }
    } else if (size_t ne = term.find("!="); ne != std::string::npos) {
      r.key = Trim(term.substr(0, ne));
      r.op = Op::kNotEq;
      r.values.push_back(Trim(term.substr(ne + 2)));
    } else if (size_t eq = term.find('='); eq != std::string::npos) {
      r.key = Trim(term.substr(0, eq));
      r.op = Op::kEq;
      const size_t value_at = term.compare(eq, 2, "==") == 0 ? eq + 2 : eq + 1;
      r.values.push_back(Trim(term.substr(value_at)));
    } else if (term[0] == '!') {
      r.key = Trim(term.substr(1));
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

// ---- ClientObjectReader -------------------------------------------------------------------

StatusOr<json> ClientObjectReader::Get(const kube::ResourceRef& r, const std::string& ns,
                                       const std::string& name) {
  return client_.Get(r, ns, name);
}

StatusOr<std::vector<json>> ClientObjectReader::List(const kube::ResourceRef& r, const std::string& ns,
                                                     const std::string& label_selector) {
  kube::ListOptions o;
  o.label_selector = label_selector;
  KVMESH_ASSIGN_OR_RETURN(kube::ListResult list, client_.List(r, ns, o));
  std::sort(list.items.begin(), list.items.end(), [](const json& a, const json& b) {
    return MetaString(a, "name") < MetaString(b, "name");
  });
  return std::move(list.items);
}

// ---- InformerObjectReader ------------------------------------------------------------------

std::vector<std::string> GraphIndexValues(const json& obj) {
  const json& labels = Labels(obj);
  if (!labels.is_object()) return {};
  auto it = labels.find(kGraphLabel);
  if (it == labels.end() || !it->is_string()) return {};
  return {MetaString(obj, "namespace") + "/" + it->get<std::string>()};
}

void InformerObjectReader::Add(const kube::ResourceRef& r, const kube::Informer* informer) {
  informers_[RefKey(r)] = informer;
}

const kube::Informer* InformerObjectReader::Find(const kube::ResourceRef& r) const {
  auto it = informers_.find(RefKey(r));
  return it == informers_.end() ? nullptr : it->second;
}

StatusOr<json> InformerObjectReader::Get(const kube::ResourceRef& r, const std::string& ns,
                                         const std::string& name) {
  const kube::Informer* inf = Find(r);
  if (inf == nullptr) return fallback_.Get(r, ns, name);
  std::optional<json> obj = inf->Get(r.namespaced ? ns + "/" + name : name);
  if (!obj) return NotFoundError(r.resource + " \"" + name + "\" not in the informer cache");
  return std::move(*obj);
}

StatusOr<std::vector<json>> InformerObjectReader::List(const kube::ResourceRef& r, const std::string& ns,
                                                       const std::string& label_selector) {
  const kube::Informer* inf = Find(r);
  if (inf == nullptr) return fallback_.List(r, ns, label_selector);
  KVMESH_ASSIGN_OR_RETURN(LabelSelector sel, LabelSelector::Parse(label_selector));
  const std::string graph = sel.EqualityValue(kGraphLabel);
  std::vector<json> candidates =
      !graph.empty() && inf->HasIndex(kGraphIndex) ? inf->ByIndex(kGraphIndex, ns + "/" + graph) : inf->List();
  std::vector<json> out;
  for (json& o : candidates) {
    if (r.namespaced && !ns.empty() && MetaString(o, "namespace") != ns) continue;
    if (!sel.Matches(Labels(o))) continue;
    out.push_back(std::move(o));
  }
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return MetaString(a, "name") < MetaString(b, "name");
  });
  return out;
}

}  // namespace kvmesh::controller
