#include "tests/kube/field_manager.h"

#include <vector>

namespace kvmesh::testapi {
namespace {

constexpr char kSep = '\x1f';

bool Skipped(const std::string& path) {
  static const std::set<std::string> kSkip = {
      "apiVersion", "kind",
      std::string("metadata") + kSep + "name", std::string("metadata") + kSep + "namespace",
      std::string("metadata") + kSep + "uid", std::string("metadata") + kSep + "resourceVersion",
      std::string("metadata") + kSep + "generation", std::string("metadata") + kSep + "creationTimestamp",
      std::string("metadata") + kSep + "managedFields", std::string("metadata") + kSep + "deletionTimestamp",
      std::string("metadata") + kSep + "deletionGracePeriodSeconds", std::string("metadata") + kSep + "selfLink"};
  return kSkip.count(path) > 0;
}

void Leaves(const Json& v, const std::string& prefix, FieldSet& out) {
  if (!prefix.empty() && Skipped(prefix)) return;
  if (v.is_object() && !v.empty()) {
    for (const auto& [k, child] : v.items()) Leaves(child, prefix.empty() ? k : prefix + kSep + k, out);
    return;
  }
  if (!prefix.empty()) out.insert(prefix);
}

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> segs;
  std::size_t start = 0;
  while (true) {
    std::size_t p = path.find(kSep, start);
    segs.push_back(path.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return segs;
}

bool StatusFilter(const std::string& path, int mode) {
  const bool is_status = path == "status" || path.rfind(std::string("status") + kSep, 0) == 0;
  if (mode == 1) return !is_status;
  if (mode == 2) return is_status;
  return true;
}

}  // namespace

FieldSet LeafFields(const Json& object, int status_mode) {
  FieldSet all;
  Leaves(object, "", all);
  FieldSet out;
  for (const std::string& p : all) {
    if (StatusFilter(p, status_mode)) out.insert(p);
  }
  return out;
}

FieldSet ChangedFields(const Json& a, const Json& b, int status_mode) {
  FieldSet fa = LeafFields(a, status_mode), fb = LeafFields(b, status_mode), out;
  for (const std::string& p : fb) {
    if (!fa.count(p) || ValueAt(a, p) != ValueAt(b, p)) out.insert(p);
  }
  for (const std::string& p : fa) {
    if (!fb.count(p)) out.insert(p);
  }
  return out;
}

Json FieldSetToV1(const FieldSet& set) {
  Json root = Json::object();
  for (const std::string& p : set) {
    Json* cur = &root;
    for (const std::string& seg : Split(p)) {
      Json& next = (*cur)["f:" + seg];
      if (!next.is_object()) next = Json::object();
      cur = &next;
    }
  }
  return root;
}

static void FromV1(const Json& v, const std::string& prefix, FieldSet& out) {
  bool any = false;
  if (v.is_object()) {
    for (const auto& [k, child] : v.items()) {
      if (k.rfind("f:", 0) != 0) continue;
      any = true;
      std::string seg = k.substr(2);
      FromV1(child, prefix.empty() ? seg : prefix + kSep + seg, out);
    }
  }
  if (!any && !prefix.empty()) out.insert(prefix);
}

FieldSet FieldSetFromV1(const Json& v1) {
  FieldSet out;
  FromV1(v1, "", out);
  return out;
}

std::optional<Json> ValueAt(const Json& object, const std::string& path) {
  const Json* cur = &object;
  for (const std::string& seg : Split(path)) {
    if (!cur->is_object() || !cur->contains(seg)) return std::nullopt;
    cur = &(*cur)[seg];
  }
  return *cur;
}

void EraseAt(Json& object, const std::string& path) {
  std::vector<std::string> segs = Split(path);
  Json* cur = &object;
  std::vector<Json*> chain;
  for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
    if (!cur->is_object() || !cur->contains(segs[i])) return;
    chain.push_back(cur);
    cur = &(*cur)[segs[i]];
  }
  if (cur->is_object()) cur->erase(segs.back());
  // Drop maps left empty by the removal.
  for (std::size_t i = chain.size(); i-- > 0;) {
    Json& child = (*chain[i])[segs[i]];
    if (child.is_object() && child.empty()) chain[i]->erase(segs[i]);
    else break;
  }
}

bool PathsOverlap(const std::string& a, const std::string& b) {
  if (a == b) return true;
  const std::string& s = a.size() < b.size() ? a : b;
  const std::string& l = a.size() < b.size() ? b : a;
  return l.compare(0, s.size(), s) == 0 && l[s.size()] == kSep;
}

std::string ReadablePath(const std::string& path) {
  std::string out;
  for (const std::string& seg : Split(path)) out += "." + seg;
  return out;
}

void DeepMerge(Json& base, const Json& patch) {
  if (!patch.is_object() || !base.is_object()) {
    base = patch;
    return;
  }
  for (const auto& [k, v] : patch.items()) {
    if (v.is_object() && base.contains(k) && base[k].is_object()) {
      DeepMerge(base[k], v);
    } else {
      base[k] = v;
    }
  }
}

}  // namespace kvmesh::testapi
