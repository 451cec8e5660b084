#include "tests/kube/api_store.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "tests/kube/field_manager.h"
#include "tests/kube/schema.h"

namespace kvmesh::testapi {
namespace {

std::string RvString(uint64_t rv) { return std::to_string(rv); }

std::optional<uint64_t> ParseRv(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0') return std::nullopt;
  return v;
}

std::string Now() { return FormatRfc3339(std::chrono::system_clock::now()); }

std::string MetaString(const Json& obj, const char* field) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  const Json& m = obj["metadata"];
  return m.contains(field) && m[field].is_string() ? m[field].get<std::string>() : "";
}

// Object without server bookkeeping, for "did anything change" comparisons.
Json Comparable(Json obj) {
  if (obj.contains("metadata") && obj["metadata"].is_object()) {
    obj["metadata"].erase("resourceVersion");
    if (obj["metadata"].contains("managedFields") && obj["metadata"]["managedFields"].is_array()) {
      for (Json& e : obj["metadata"]["managedFields"]) e.erase("time");
    }
  }
  return obj;
}

Json WithoutMetaStatus(Json obj) {
  obj.erase("metadata");
  obj.erase("status");
  obj.erase("apiVersion");
  obj.erase("kind");
  return obj;
}

ResourceType Builtin(std::string group, std::string version, std::string resource, std::string kind,
                     bool namespaced, bool status, std::vector<std::string> short_names,
                     bool scale = false) {
  ResourceType t;
  t.group = std::move(group);
  t.version = std::move(version);
  t.resource = std::move(resource);
  t.kind = std::move(kind);
  t.singular = t.kind;
  std::transform(t.singular.begin(), t.singular.end(), t.singular.begin(), ::tolower);
  t.namespaced = namespaced;
  t.has_status = status;
  t.short_names = std::move(short_names);
  t.has_scale = scale;
  return t;
}

}  // namespace

ApiStore::ApiStore(Options options) : options_(options) {
  std::lock_guard<std::mutex> lock(mu_);
  RegisterBuiltinsLocked();
  for (const char* ns : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
    Json obj = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}};
    (void)CreateLocked(*FindTypeLocked("", "v1", "namespaces"), "", obj, {}, true);
  }
}

void ApiStore::RegisterBuiltinsLocked() {
  types_.push_back(Builtin("", "v1", "namespaces", "Namespace", false, true, {"ns"}));
  types_.push_back(Builtin("", "v1", "configmaps", "ConfigMap", true, false, {"cm"}));
  types_.push_back(Builtin("", "v1", "secrets", "Secret", true, false, {}));
  types_.push_back(Builtin("", "v1", "services", "Service", true, true, {"svc"}));
  types_.push_back(Builtin("", "v1", "pods", "Pod", true, true, {"po"}));
  types_.push_back(Builtin("", "v1", "events", "Event", true, false, {"ev"}));
  types_.push_back(Builtin("", "v1", "serviceaccounts", "ServiceAccount", true, false, {"sa"}));
  types_.push_back(Builtin("apps", "v1", "deployments", "Deployment", true, true, {"deploy"}, true));
  types_.push_back(Builtin("apps", "v1", "replicasets", "ReplicaSet", true, true, {"rs"}, true));
  types_.push_back(Builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, true, {"pdb"}));
  types_.push_back(Builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false, {}));
  // RBAC objects are stored (so the Helm bundle applies) but not enforced.
  types_.push_back(Builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false, {}));
  types_.push_back(Builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false, {}));
  types_.push_back(Builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false, {}));
  types_.push_back(Builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false,
                           false, {}));
  types_.push_back(Builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                           "CustomResourceDefinition", false, true, {"crd", "crds"}));
  for (ResourceType& t : types_) {
    if (t.resource == "deployments" || t.resource == "pods" || t.resource == "services") {
      t.categories = {"all"};
    }
    if (t.resource == "replicasets") t.categories = {"all"};
  }
}

void ApiStore::RegisterCrdLocked(const Json& crd) {
  UnregisterCrdLocked(crd);
  const Json& spec = crd["spec"];
  for (const Json& v : spec["versions"]) {
    if (!v.value("served", true)) continue;
    ResourceType t;
    t.group = spec.value("group", "");
    t.version = v.value("name", "");
    t.resource = spec["names"].value("plural", "");
    t.kind = spec["names"].value("kind", "");
    t.singular = spec["names"].value("singular", "");
    if (t.singular.empty()) {
      t.singular = t.kind;
      std::transform(t.singular.begin(), t.singular.end(), t.singular.begin(), ::tolower);
    }
    if (spec["names"].contains("shortNames")) t.short_names = spec["names"]["shortNames"].get<std::vector<std::string>>();
    if (spec["names"].contains("categories")) t.categories = spec["names"]["categories"].get<std::vector<std::string>>();
    t.namespaced = spec.value("scope", "Namespaced") == "Namespaced";
    t.has_status = v.contains("subresources") && v["subresources"].contains("status");
    t.has_scale = v.contains("subresources") && v["subresources"].contains("scale");
    t.custom = true;
    if (v.contains("schema") && v["schema"].contains("openAPIV3Schema")) {
      t.schema = std::make_shared<const Json>(v["schema"]["openAPIV3Schema"]);
    }
    if (v.contains("additionalPrinterColumns")) t.printer_columns = v["additionalPrinterColumns"];
    types_.push_back(std::move(t));
  }
}

void ApiStore::UnregisterCrdLocked(const Json& crd) {
  const std::string group = crd["spec"].value("group", "");
  const std::string plural = crd["spec"]["names"].value("plural", "");
  types_.erase(std::remove_if(types_.begin(), types_.end(),
                              [&](const ResourceType& t) { return t.custom && t.group == group && t.resource == plural; }),
               types_.end());
}

std::vector<ResourceType> ApiStore::Types() const {
  std::lock_guard<std::mutex> lock(mu_);
  return types_;
}

std::optional<ResourceType> ApiStore::FindType(const std::string& group, const std::string& version,
                                               const std::string& resource) const {
  std::lock_guard<std::mutex> lock(mu_);
  const ResourceType* t = FindTypeLocked(group, version, resource);
  if (t == nullptr) return std::nullopt;
  return *t;
}

const ResourceType* ApiStore::FindTypeLocked(const std::string& group, const std::string& version,
                                             const std::string& resource) const {
  for (const ResourceType& t : types_) {
    if (t.group == group && t.version == version && t.resource == resource) return &t;
  }
  return nullptr;
}

std::optional<ResourceType> ApiStore::FindTypeByKind(const std::string& api_version,
                                                     const std::string& kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ResourceType& t : types_) {
    if (t.GroupVersion() == api_version && t.kind == kind) return t;
  }
  return std::nullopt;
}

const ResourceType* ApiStore::StorageTypeLocked(const std::string& gr) const {
  for (const ResourceType& t : types_) {
    if (GrKey(t) == gr) return &t;
  }
  return nullptr;
}

Json ApiStore::RenderLocked(const ResourceType& t, const Json& stored) const {
  Json out = stored;
  out["apiVersion"] = t.GroupVersion();
  out["kind"] = t.kind;
  return out;
}

Json* ApiStore::FindLocked(const std::string& gr, const std::string& ns, const std::string& name) {
  auto b = objects_.find(gr);
  if (b == objects_.end()) return nullptr;
  auto it = b->second.find(ObjKey(ns, name));
  return it == b->second.end() ? nullptr : &it->second;
}

uint64_t ApiStore::CurrentResourceVersion() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rv_;
}

// ---- read ---------------------------------------------------------------------------------------

ApiResult<Json> ApiStore::Get(const ResourceType& t, const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Json* obj = FindLocked(GrKey(t), t.namespaced ? ns : "", name);
  if (obj == nullptr) return NotFoundError(t.group, t.resource, name);
  return RenderLocked(t, *obj);
}

ApiResult<Json> ApiStore::List(const ResourceType& t, const std::string& ns, const ListOptions& opts) {
  auto ls = ParseLabelSelector(opts.label_selector);
  if (!ls.ok()) return ls.error();
  auto fs = FieldSelector::Parse(opts.field_selector);
  if (!fs.ok()) return fs.error();
  std::lock_guard<std::mutex> lock(mu_);
  std::string after;
  if (!opts.continue_token.empty()) {
    std::size_t bar = opts.continue_token.find('|');
    auto rv = ParseRv(opts.continue_token.substr(0, bar));
    if (bar == std::string::npos || !rv) return BadRequestError("invalid continue token \"" + opts.continue_token + "\"");
    if (*rv < history_floor_) {
      return ApiError{410, "Expired",
                      "The provided continue parameter is too old to display a consistent list result. "
                      "You can start a new list without the continue parameter.",
                      {}};
    }
    after = opts.continue_token.substr(bar + 1);
  }
  Json items = Json::array();
  std::string last_key;
  int64_t remaining = 0;
  auto b = objects_.find(GrKey(t));
  if (b != objects_.end()) {
    for (auto it = after.empty() ? b->second.begin() : b->second.upper_bound(after); it != b->second.end(); ++it) {
      const Json& obj = it->second;
      if (t.namespaced && !ns.empty() && MetaString(obj, "namespace") != ns) continue;
      const Json& md = obj["metadata"];
      auto labels = md.find("labels");
      if (!ls.value().Matches(labels != md.end() ? *labels : Json()) || !fs.value().Matches(obj)) continue;
      if (opts.limit > 0 && static_cast<int64_t>(items.size()) >= opts.limit) {
        ++remaining;
        continue;
      }
      items.push_back(RenderLocked(t, obj));
      last_key = it->first;
    }
  }
  Json meta = {{"resourceVersion", RvString(rv_)}};
  if (remaining > 0) {
    meta["continue"] = RvString(rv_) + "|" + last_key;
    meta["remainingItemCount"] = remaining;
  }
  return Json{{"apiVersion", t.GroupVersion()}, {"kind", t.kind + "List"}, {"metadata", meta}, {"items", items}};
}

// ---- write --------------------------------------------------------------------------------------

ApiResult<WriteResult> ApiStore::Create(const ResourceType& t, const std::string& ns, Json body,
                                        const WriteOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  return CreateLocked(t, ns, std::move(body), opts, false);
}

ApiResult<WriteResult> ApiStore::CreateLocked(const ResourceType& t, const std::string& ns, Json body,
                                              const WriteOptions& opts, bool internal) {
  if (!body.is_object()) return BadRequestError("the body of a create must be a JSON object");
  if (body.contains("kind") && body["kind"] != t.kind) {
    return BadRequestError("the API version in the data (" + body.value("apiVersion", "") + ") and kind (" +
                           body["kind"].dump() + ") do not match the resource " + t.GroupResource());
  }
  if (!body.contains("metadata") || !body["metadata"].is_object()) body["metadata"] = Json::object();
  Json& meta = body["metadata"];
  const std::string body_ns = MetaString(body, "namespace");
  if (t.namespaced) {
    if (!body_ns.empty() && body_ns != ns) {
      return BadRequestError("the namespace of the provided object does not match the namespace sent on the request");
    }
    if (ns.empty()) return BadRequestError("a namespace is required to create " + t.GroupResource());
    meta["namespace"] = ns;
    if (FindLocked("/namespaces", "", ns) == nullptr) return NotFoundError("", "namespaces", ns);
  } else {
    meta.erase("namespace");
  }
  std::string name = MetaString(body, "name");
  if (name.empty() && meta.contains("generateName") && meta["generateName"].is_string()) {
    static std::mt19937_64 rng(std::random_device{}());
    static const char kAlnum[] = "bcdfghjklmnpqrstvwxz2456789";
    for (int attempt = 0; attempt < 10; ++attempt) {
      std::string suffix;
      for (int i = 0; i < 5; ++i) suffix += kAlnum[rng() % (sizeof(kAlnum) - 1)];
      name = meta["generateName"].get<std::string>() + suffix;
      if (FindLocked(GrKey(t), t.namespaced ? ns : "", name) == nullptr) break;
    }
    meta["name"] = name;
  }
  if (name.empty()) {
    return InvalidError(t.group, t.kind, "", {"metadata.name: Required value: name or generateName is required"});
  }
  if (FindLocked(GrKey(t), t.namespaced ? ns : "", name) != nullptr) {
    return AlreadyExistsError(t.group, t.resource, name);
  }
  if (t.has_status && !internal && t.resource != "customresourcedefinitions") body.erase("status");
  return WriteLocked(t, nullptr, std::move(body), "", opts, "Update", nullptr);
}

std::vector<std::string> ApiStore::ValidateBuiltinLocked(const ResourceType& t, const Json& obj) const {
  std::vector<std::string> errs;
  const std::string name = MetaString(obj, "name");
  if (!IsDnsSubdomain(name)) {
    errs.push_back("metadata.name: Invalid value: \"" + name +
                   "\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                   "'-' or '.', and must start and end with an alphanumeric character");
  }
  if (obj["metadata"].contains("labels") && !obj["metadata"]["labels"].is_null()) {
    for (const auto& [k, v] : obj["metadata"]["labels"].items()) {
      if (!v.is_string()) errs.push_back("metadata.labels." + k + ": Invalid value: " + v.dump() + ": must be a string");
    }
  }
  if (t.resource == "customresourcedefinitions") {
    const Json spec = obj.value("spec", Json::object());
    const Json names = spec.value("names", Json::object());
    const std::string group = spec.value("group", "");
    const std::string plural = names.value("plural", "");
    if (group.empty()) errs.push_back("spec.group: Required value");
    if (plural.empty()) errs.push_back("spec.names.plural: Required value");
    if (names.value("kind", "").empty()) errs.push_back("spec.names.kind: Required value");
    if (!spec.contains("versions") || !spec["versions"].is_array() || spec["versions"].empty()) {
      errs.push_back("spec.versions: Invalid value: null: must have exactly one version marked as storage version");
    }
    const std::string scope = spec.value("scope", "");
    if (scope != "Namespaced" && scope != "Cluster") {
      errs.push_back("spec.scope: Unsupported value: \"" + scope + "\": supported values: \"Cluster\", \"Namespaced\"");
    }
    if (!plural.empty() && name != plural + "." + group) {
      errs.push_back("metadata.name: Invalid value: \"" + name + "\": must be spec.names.plural+\".\"+spec.group");
    }
  }
  if (t.resource == "deployments" || t.resource == "replicasets") {
    const Json spec = obj.value("spec", Json::object());
    if (!spec.contains("selector")) errs.push_back("spec.selector: Required value");
    if (spec.contains("replicas") && (!spec["replicas"].is_number_integer() || spec["replicas"].get<int64_t>() < 0)) {
      errs.push_back("spec.replicas: Invalid value: " + spec["replicas"].dump() + ": must be greater than or equal to 0");
    }
    if (spec.contains("selector") && spec.contains("template")) {
      auto sel = LabelSelectorFromObject(spec["selector"]);
      Json labels = spec["template"].contains("metadata") ? spec["template"]["metadata"].value("labels", Json::object()) : Json::object();
      if (!sel.ok() || !sel.value().Matches(labels)) {
        errs.push_back("spec.template.metadata.labels: Invalid value: " + labels.dump() + ": `selector` does not match template `labels`");
      }
    }
  }
  return errs;
}

ApiResult<WriteResult> ApiStore::WriteLocked(const ResourceType& t, const Json* old, Json obj,
                                             const std::string& subresource, const WriteOptions& opts,
                                             const std::string& operation, const Json* applied) {
  WriteResult result;
  Json& meta = obj["metadata"];
  const std::string name = MetaString(obj, "name");
  // Status subresource rules.
  if (old != nullptr && t.has_status) {
    if (subresource == "status") {
      Json next = *old;
      if (obj.contains("status")) next["status"] = obj["status"];
      else next.erase("status");
      obj = std::move(next);
    } else if (old->contains("status")) {
      obj["status"] = (*old)["status"];
    } else {
      obj.erase("status");
    }
  }
  Json& m = obj["metadata"];
  (void)meta;
  if (old != nullptr) {
    const Json& om = (*old)["metadata"];
    for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                          "generation", "namespace", "name"}) {
      if (om.contains(f)) m[f] = om[f];
      else m.erase(f);
    }
    if (om.contains("deletionTimestamp")) {
      std::set<std::string> before;
      if (om.contains("finalizers")) for (const Json& f : om["finalizers"]) before.insert(f.get<std::string>());
      if (m.contains("finalizers") && m["finalizers"].is_array()) {
        for (const Json& f : m["finalizers"]) {
          if (f.is_string() && !before.count(f.get<std::string>())) {
            return InvalidError(t.group, t.kind, name,
                                {"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"" + f.get<std::string>() + "\"]"});
          }
        }
      }
    }
  }
  // Validation.
  std::vector<std::string> errs = ValidateBuiltinLocked(t, obj);
  if (t.custom && t.schema && t.schema->is_object() && subresource != "status") {
    SchemaResult sr = ApplySchema(obj, *t.schema);
    if (!sr.unknown_fields.empty() && opts.field_validation == "Strict") {
      std::string msg = "strict decoding error: ";
      for (std::size_t i = 0; i < sr.unknown_fields.size(); ++i) {
        msg += (i ? ", " : "") + std::string("unknown field \"") + sr.unknown_fields[i] + "\"";
      }
      return BadRequestError(msg);
    }
    for (const std::string& u : sr.unknown_fields) result.warnings.push_back("unknown field \"" + u + "\"");
    errs.insert(errs.end(), sr.errors.begin(), sr.errors.end());
  } else if (t.custom && t.schema && t.schema->is_object() && obj.contains("status")) {
    SchemaResult sr = ApplySchema(obj, *t.schema);
    errs.insert(errs.end(), sr.errors.begin(), sr.errors.end());
  }
  if (!errs.empty()) return InvalidError(t.group, t.kind, name, errs);
  // Generation.
  if (old == nullptr) {
    m["generation"] = 1;
  } else {
    const bool has_spec = old->contains("spec") || obj.contains("spec");
    const bool changed = has_spec ? old->value("spec", Json()) != obj.value("spec", Json())
                                  : WithoutMetaStatus(*old) != WithoutMetaStatus(obj);
    int64_t gen = (*old)["metadata"].value("generation", int64_t{1});
    m["generation"] = changed ? gen + 1 : gen;
  }
  // Managed fields.
  {
    const int mode = t.has_status ? (subresource == "status" ? 2 : 1) : 0;
    Json entries = old != nullptr && (*old)["metadata"].contains("managedFields")
                       ? (*old)["metadata"]["managedFields"]
                       : Json::array();
    if (old == nullptr && m.contains("managedFields")) entries = Json::array();
    std::string manager = opts.field_manager.empty() ? "unknown" : opts.field_manager;
    FieldSet mine;
    FieldSet touched;
    if (operation == "Apply") {
      mine = LeafFields(*applied, mode);
    } else {
      touched = old == nullptr ? LeafFields(obj, mode) : ChangedFields(*old, obj, mode);
    }
    Json next = Json::array();
    bool found = false;
    for (Json e : entries) {
      FieldSet fs = FieldSetFromV1(e.value("fieldsV1", Json::object()));
      const bool same = e.value("manager", "") == manager && e.value("operation", "") == operation &&
                        e.value("subresource", "") == subresource;
      if (same) {
        found = true;
        if (operation == "Apply") {
          fs = mine;
        } else {
          fs.insert(touched.begin(), touched.end());
        }
        e["time"] = Now();
      } else if (operation != "Apply") {
        for (const std::string& p : touched) fs.erase(p);
      }
      // Fields no longer in the object are owned by nobody.
      for (auto it = fs.begin(); it != fs.end();) it = ValueAt(obj, *it) ? std::next(it) : fs.erase(it);
      if (fs.empty()) continue;
      e["fieldsV1"] = FieldSetToV1(fs);
      next.push_back(e);
    }
    FieldSet fresh = operation == "Apply" ? mine : touched;
    for (auto it = fresh.begin(); it != fresh.end();) it = ValueAt(obj, *it) ? std::next(it) : fresh.erase(it);
    if (!found && !fresh.empty()) {
      Json e = {{"manager", manager}, {"operation", operation}, {"apiVersion", t.GroupVersion()},
                {"time", Now()}, {"fieldsType", "FieldsV1"}, {"fieldsV1", FieldSetToV1(fresh)}};
      if (!subresource.empty()) e["subresource"] = subresource;
      next.push_back(e);
    }
    if (next.empty()) m.erase("managedFields");
    else m["managedFields"] = next;
  }
  obj["apiVersion"] = t.GroupVersion();
  obj["kind"] = t.kind;
  if (old != nullptr) {
    m["resourceVersion"] = (*old)["metadata"]["resourceVersion"];
    if (Comparable(*old) == Comparable(obj)) {
      // Nothing changed: no new resourceVersion, no event.
      result.object = RenderLocked(t, *old);
      return result;
    }
  } else {
    m["uid"] = [this] {
      char buf[40];
      ++uid_counter_;
      std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-8%03x-%012llx", static_cast<unsigned>(std::random_device{}()),
                    static_cast<unsigned>(uid_counter_ & 0xffff), static_cast<unsigned>((uid_counter_ >> 16) & 0xfff),
                    static_cast<unsigned>(std::random_device{}() & 0xfff), static_cast<unsigned long long>(uid_counter_));
      return std::string(buf);
    }();
    m["creationTimestamp"] = Now();
    result.created = true;
    if (t.resource == "namespaces") obj["status"] = {{"phase", "Active"}};
    if (t.resource == "services" && obj.contains("spec") && !obj["spec"].contains("clusterIP")) {
      obj["spec"]["clusterIP"] = "10.96." + std::to_string((uid_counter_ >> 8) & 0xff) + "." + std::to_string(uid_counter_ & 0xff);
      if (!obj["spec"].contains("type")) obj["spec"]["type"] = "ClusterIP";
    }
  }
  if (t.resource == "customresourcedefinitions") {
    const Json& spec = obj["spec"];
    obj["status"] = {{"acceptedNames", spec["names"]},
                     {"storedVersions", Json::array()},
                     {"conditions", Json::array({
                          {{"type", "NamesAccepted"}, {"status", "True"}, {"reason", "NoConflicts"},
                           {"message", "no conflicts found"}, {"lastTransitionTime", Now()}},
                          {{"type", "Established"}, {"status", "True"}, {"reason", "InitialNamesAccepted"},
                           {"message", "the initial names have been accepted"}, {"lastTransitionTime", Now()}}})}};
    for (const Json& v : spec["versions"]) {
      if (v.value("storage", false)) obj["status"]["storedVersions"].push_back(v.value("name", ""));
    }
    if (old != nullptr && Comparable(*old) == Comparable(obj)) {
      result.object = RenderLocked(t, *old);
      return result;
    }
  }
  if (opts.dry_run) {
    if (old == nullptr) m.erase("uid");
    result.object = obj;
    return result;
  }
  // Finalizers emptied on a deleting object: it goes now.
  if (old != nullptr && m.contains("deletionTimestamp") &&
      (!m.contains("finalizers") || m["finalizers"].empty())) {
    CommitLocked(t, "DELETED", obj, old);
    result.object = RenderLocked(t, obj);
    return result;
  }
  CommitLocked(t, old == nullptr ? "ADDED" : "MODIFIED", obj, old);
  if (t.resource == "customresourcedefinitions") RegisterCrdLocked(obj);
  result.object = RenderLocked(t, objects_[GrKey(t)][ObjKey(MetaString(obj, "namespace"), name)]);
  return result;
}

void ApiStore::CommitLocked(const ResourceType& t, const std::string& type, Json obj, const Json* old) {
  ++rv_;
  ++writes_;
  obj["metadata"]["resourceVersion"] = RvString(rv_);
  const std::string key = ObjKey(MetaString(obj, "namespace"), MetaString(obj, "name"));
  Event e{rv_, GrKey(t), type, nullptr, old != nullptr ? std::make_shared<const Json>(*old) : nullptr};
  if (type == "DELETED") {
    objects_[GrKey(t)].erase(key);
    if (t.resource == "customresourcedefinitions") {
      UnregisterCrdLocked(obj);
      const std::string gr = obj["spec"].value("group", "") + "/" + obj["spec"]["names"].value("plural", "");
      if (auto b = objects_.find(gr); b != objects_.end()) {
        for (const auto& [k, o] : b->second) TrackLocked(gr, k, "DELETED", &o, o);
        objects_.erase(b);
      }
    }
    e.object = std::make_shared<const Json>(std::move(obj));
  } else {
    Json& stored = objects_[GrKey(t)][key];
    stored = std::move(obj);
    e.object = std::make_shared<const Json>(stored);
  }
  TrackLocked(e.gr, key, type, e.old.get(), *e.object);
  history_.push_back(e);
  while (history_.size() > options_.history_limit) {
    history_floor_ = history_.front().rv;
    history_.pop_front();
  }
  DispatchLocked(e);
}

void ApiStore::DispatchLocked(const Event& e) {
  std::vector<uint64_t> dead;
  const std::string ns = MetaString(*e.object, "namespace");
  // The object rendered once per apiVersion for plain JSON watches (most watches of one kind
  // share it): every watcher of a kind gets the same bytes.
  std::map<std::string, std::string> dumped;  // apiVersion -> object JSON
  for (auto& [id, w] : watchers_) {
    if (GrKey(w.type) != e.gr) continue;
    if (!w.req.namespace_.empty() && ns != w.req.namespace_) continue;
    auto matches = [&](const Json* o) {
      if (o == nullptr || o->is_null()) return false;
      const Json& md = (*o)["metadata"];
      auto labels = md.find("labels");
      return (!w.labels || w.labels->Matches(labels != md.end() ? *labels : Json())) &&
             (!w.fields || w.fields->Matches(*o));
    };
    std::string type = e.type;
    const bool now = matches(e.object.get());
    if (e.type == "MODIFIED") {
      const bool before = matches(e.old.get());
      if (!before && !now) continue;
      if (!before) type = "ADDED";
      if (!now) type = "DELETED";
    } else if (!now) {
      continue;
    }
    std::string line;
    if (w.req.render) {
      line = Json{{"type", type}, {"object", w.req.render(RenderLocked(w.type, *e.object))}}.dump();
    } else {
      auto it = dumped.find(w.type.GroupVersion());
      if (it == dumped.end()) {
        const Json& o = *e.object;
        const bool as_stored = o.value("apiVersion", "") == w.type.GroupVersion() && o.value("kind", "") == w.type.kind;
        it = dumped.emplace(w.type.GroupVersion(), as_stored ? o.dump() : RenderLocked(w.type, o).dump()).first;
      }
      line = "{\"type\":\"" + type + "\",\"object\":" + it->second + "}";
    }
    if (!w.sink.send(line + "\n")) dead.push_back(id);
  }
  for (uint64_t id : dead) watchers_.erase(id);
}

ApiResult<WriteResult> ApiStore::Update(const ResourceType& t, const std::string& ns, const std::string& name,
                                        Json body, const std::string& subresource, const WriteOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!body.is_object()) return BadRequestError("the body of an update must be a JSON object");
  const std::string key_ns = t.namespaced ? ns : "";
  Json* cur = FindLocked(GrKey(t), key_ns, name);
  if (cur == nullptr) return NotFoundError(t.group, t.resource, name);
  if (!body.contains("metadata") || !body["metadata"].is_object()) body["metadata"] = Json::object();
  const std::string body_name = MetaString(body, "name");
  if (!body_name.empty() && body_name != name) {
    return BadRequestError("the name of the object (" + body_name + ") does not match the name on the URL (" + name + ")");
  }
  const std::string rv = MetaString(body, "resourceVersion");
  if (rv.empty() && t.custom) {
    return InvalidError(t.group, t.kind, name, {"metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"});
  }
  if (!rv.empty() && rv != MetaString(*cur, "resourceVersion")) {
    return ConflictError(t.group, t.resource, name,
                         "the object has been modified; please apply your changes to the latest version and try again");
  }
  Json old = *cur;
  return WriteLocked(t, &old, std::move(body), subresource, opts, "Update", nullptr);
}

ApiResult<WriteResult> ApiStore::Patch(const ResourceType& t, const std::string& ns, const std::string& name,
                                       const std::string& content_type, const std::string& body,
                                       const std::string& subresource, const WriteOptions& opts) {
  std::string ct = content_type.substr(0, content_type.find(';'));
  if (ct == "application/apply-patch+yaml" || ct == "application/apply-patch+json") {
    auto parsed = ParseBody(body, "yaml");
    if (!parsed.ok()) return parsed.error();
    if (opts.field_manager.empty()) {
      return InvalidError("meta.k8s.io", "PatchOptions", "",
                          {"fieldManager: Required value: is required for apply patch"});
    }
    std::lock_guard<std::mutex> lock(mu_);
    return ApplyLocked(t, ns, name, parsed.value(), subresource, opts);
  }
  const bool merge = ct == "application/merge-patch+json";
  const bool strategic = ct == "application/strategic-merge-patch+json";
  const bool json_patch = ct == "application/json-patch+json";
  if (!merge && !strategic && !json_patch) {
    return ApiError{415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml", {}};
  }
  if (strategic && t.custom) {
    return ApiError{415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    {}};
  }
  Json patch = Json::parse(body, nullptr, false);
  if (patch.is_discarded()) return BadRequestError("error decoding patch: invalid JSON: " + body.substr(0, 200));
  std::lock_guard<std::mutex> lock(mu_);
  Json* cur = FindLocked(GrKey(t), t.namespaced ? ns : "", name);
  if (cur == nullptr) return NotFoundError(t.group, t.resource, name);
  Json old = *cur;
  Json next = RenderLocked(t, old);
  if (json_patch) {
    if (!patch.is_array()) return BadRequestError("json patch must be an array of operations");
    try {
      next = next.patch(patch);
    } catch (const std::exception& e) {
      return ApiError{422, "Invalid", std::string("the server rejected our request due to an error in our request: ") + e.what(), {}};
    }
  } else {
    if (!patch.is_object()) return BadRequestError("merge patch must be a JSON object");
    if (strategic) {
      // Strategic-merge directives are not understood: $patch / $retainKeys / $setElementOrder keys
      // are dropped and the rest merged as a JSON merge patch (documented).
      std::function<void(Json&)> strip = [&](Json& j) {
        if (!j.is_object()) return;
        for (auto it = j.begin(); it != j.end();) {
          if (it.key().rfind("$", 0) == 0 || it.key().rfind("$setElementOrder/", 0) == 0) {
            it = j.erase(it);
          } else {
            strip(*it);
            ++it;
          }
        }
      };
      strip(patch);
    }
    next.merge_patch(patch);
  }
  const std::string rv = MetaString(next, "resourceVersion");
  if (!rv.empty() && rv != MetaString(old, "resourceVersion")) {
    return ConflictError(t.group, t.resource, name,
                         "the object has been modified; please apply your changes to the latest version and try again");
  }
  if (!next.contains("metadata") || !next["metadata"].is_object()) next["metadata"] = Json::object();
  next["metadata"]["name"] = name;
  return WriteLocked(t, &old, std::move(next), subresource, opts, "Update", nullptr);
}

ApiResult<WriteResult> ApiStore::ApplyLocked(const ResourceType& t, const std::string& ns,
                                             const std::string& name, const Json& patch,
                                             const std::string& subresource, const WriteOptions& opts) {
  if (!patch.is_object()) return BadRequestError("apply patch must be an object");
  if (patch.value("kind", t.kind) != t.kind || patch.value("apiVersion", t.GroupVersion()) != t.GroupVersion()) {
    return BadRequestError("the apply configuration's apiVersion/kind (" + patch.value("apiVersion", "") + ", " +
                           patch.value("kind", "") + ") do not match " + t.GroupVersion() + ", " + t.kind);
  }
  const std::string pname = MetaString(patch, "name");
  if (!pname.empty() && pname != name) {
    return BadRequestError("the name of the object (" + pname + ") does not match the name on the URL (" + name + ")");
  }
  Json* cur = FindLocked(GrKey(t), t.namespaced ? ns : "", name);
  const int mode = t.has_status ? (subresource == "status" ? 2 : 1) : 0;
  if (cur == nullptr) {
    if (subresource == "status") return NotFoundError(t.group, t.resource, name);
    Json body = patch;
    if (!body.contains("metadata") || !body["metadata"].is_object()) body["metadata"] = Json::object();
    body["metadata"]["name"] = name;
    // Create as the applier: the manager owns every applied field.
    auto created = [&]() -> ApiResult<WriteResult> {
      if (!body.contains("kind")) body["kind"] = t.kind;
      Json b = body;
      if (t.has_status) b.erase("status");
      if (t.namespaced) {
        const std::string body_ns = MetaString(b, "namespace");
        if (!body_ns.empty() && body_ns != ns) return BadRequestError("the namespace of the provided object does not match the namespace sent on the request");
        if (FindLocked("/namespaces", "", ns) == nullptr) return NotFoundError("", "namespaces", ns);
        b["metadata"]["namespace"] = ns;
      }
      return WriteLocked(t, nullptr, std::move(b), "", opts, "Apply", &patch);
    }();
    return created;
  }
  Json old = *cur;
  const std::string rv = MetaString(patch, "resourceVersion");
  if (!rv.empty() && rv != MetaString(old, "resourceVersion")) {
    return ConflictError(t.group, t.resource, name,
                         "the object has been modified; please apply your changes to the latest version and try again");
  }
  const FieldSet applied = LeafFields(patch, mode);
  // Conflicts with other managers that own a field with a different value.
  Json entries = old["metadata"].value("managedFields", Json::array());
  std::vector<std::string> conflicts;
  FieldSet previous;
  for (Json& e : entries) {
    FieldSet fs = FieldSetFromV1(e.value("fieldsV1", Json::object()));
    if (e.value("manager", "") == opts.field_manager && e.value("operation", "") == "Apply" &&
        e.value("subresource", "") == subresource) {
      previous = fs;
      continue;
    }
    if (e.value("manager", "") == opts.field_manager) continue;
    FieldSet lost;
    for (const std::string& p : applied) {
      for (const std::string& q : fs) {
        if (!PathsOverlap(p, q)) continue;
        if (ValueAt(old, q) == ValueAt(patch, q) && ValueAt(old, p) == ValueAt(patch, p)) continue;
        conflicts.push_back("conflict with \"" + e.value("manager", "") + "\"" +
                            (e.value("operation", "") == "Update" ? " using " + e.value("apiVersion", "") : "") +
                            ": " + ReadablePath(q));
        lost.insert(q);
      }
    }
    if (opts.force) {
      for (const std::string& q : lost) fs.erase(q);
      e["fieldsV1"] = FieldSetToV1(fs);
    }
  }
  if (!conflicts.empty() && !opts.force) {
    std::sort(conflicts.begin(), conflicts.end());
    conflicts.erase(std::unique(conflicts.begin(), conflicts.end()), conflicts.end());
    std::string msg = "Apply failed with " + std::to_string(conflicts.size()) + " conflict" +
                      (conflicts.size() > 1 ? "s" : "") + ": ";
    for (std::size_t i = 0; i < conflicts.size(); ++i) msg += (i ? "\n" : "") + conflicts[i];
    ApiError err{409, "Conflict", msg, {{"name", name}, {"group", t.group}, {"kind", t.resource}}};
    return err;
  }
  Json next = old;
  next["metadata"]["managedFields"] = entries;
  // Fields this manager applied before and no longer applies, owned by nobody else, are removed.
  for (const std::string& p : previous) {
    if (applied.count(p)) continue;
    bool others = false;
    for (const Json& e : entries) {
      if (e.value("manager", "") == opts.field_manager) continue;
      for (const std::string& q : FieldSetFromV1(e.value("fieldsV1", Json::object()))) others = others || PathsOverlap(p, q);
    }
    if (!others) EraseAt(next, p);
  }
  Json body = patch;
  if (body.contains("metadata")) {
    for (const char* f : {"resourceVersion", "managedFields", "uid", "creationTimestamp", "generation"}) body["metadata"].erase(f);
  }
  DeepMerge(next, body);
  return WriteLocked(t, &old, std::move(next), subresource, opts, "Apply", &patch);
}

// ---- delete -------------------------------------------------------------------------------------

ApiResult<Json> ApiStore::Delete(const ResourceType& t, const std::string& ns, const std::string& name,
                                 const DeleteOptions& del, const WriteOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  return DeleteLocked(t, ns, name, del, opts);
}

ApiResult<Json> ApiStore::DeleteLocked(const ResourceType& t, const std::string& ns, const std::string& name,
                                       const DeleteOptions& del, const WriteOptions& opts) {
  Json* cur = FindLocked(GrKey(t), t.namespaced ? ns : "", name);
  if (cur == nullptr) return NotFoundError(t.group, t.resource, name);
  if (!del.precondition_uid.empty() && del.precondition_uid != MetaString(*cur, "uid")) {
    return ConflictError(t.group, t.resource, name,
                         "Precondition failed: UID in precondition: " + del.precondition_uid +
                             ", UID in object meta: " + MetaString(*cur, "uid"));
  }
  if (!del.precondition_resource_version.empty() &&
      del.precondition_resource_version != MetaString(*cur, "resourceVersion")) {
    return ConflictError(t.group, t.resource, name,
                         "Precondition failed: ResourceVersion in precondition: " + del.precondition_resource_version +
                             ", ResourceVersion in object meta: " + MetaString(*cur, "resourceVersion"));
  }
  if (del.propagation_policy != "" && del.propagation_policy != "Background" &&
      del.propagation_policy != "Foreground" && del.propagation_policy != "Orphan") {
    return InvalidError("meta.k8s.io", "DeleteOptions", "",
                        {"propagationPolicy: Unsupported value: \"" + del.propagation_policy +
                         "\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""});
  }
  Json old = *cur;
  if (opts.dry_run) return RenderLocked(t, old);
  Json next = old;
  Json& m = next["metadata"];
  if (!m.contains("finalizers") || !m["finalizers"].is_array()) m["finalizers"] = Json::array();
  auto add_finalizer = [&](const std::string& f) {
    for (const Json& x : m["finalizers"]) if (x == f) return;
    m["finalizers"].push_back(f);
  };
  if (del.propagation_policy == "Foreground") add_finalizer("foregroundDeletion");
  if (del.propagation_policy == "Orphan") add_finalizer("orphan");
  if (m["finalizers"].empty()) {
    m.erase("finalizers");
    if (t.resource == "namespaces") {
      // The namespace controller's job, done at once: everything in the namespace goes.
      for (const ResourceType& rt : std::vector<ResourceType>(types_)) {
        if (!rt.namespaced) continue;
        auto b = objects_.find(GrKey(rt));
        if (b == objects_.end()) continue;
        std::vector<Json> victims;
        for (const auto& [k, o] : b->second) if (MetaString(o, "namespace") == name) victims.push_back(o);
        for (const Json& o : victims) {
          Json gone = o;
          CommitLocked(rt, "DELETED", gone, &o);
        }
      }
    }
    CommitLocked(t, "DELETED", next, &old);
    return RenderLocked(t, next);
  }
  if (!m.contains("deletionTimestamp")) {
    m["deletionTimestamp"] = Now();
    m["deletionGracePeriodSeconds"] = 0;
  }
  if (Comparable(next) == Comparable(old)) return RenderLocked(t, old);
  CommitLocked(t, "MODIFIED", next, &old);
  return RenderLocked(t, objects_[GrKey(t)][ObjKey(t.namespaced ? ns : "", name)]);
}

// ---- watch --------------------------------------------------------------------------------------

ApiResult<uint64_t> ApiStore::Watch(const ResourceType& t, const WatchRequest& req,
                                    const std::function<std::optional<WatchSink>()>& open) {
  Watcher w;
  w.type = t;
  w.req = req;
  if (!req.label_selector.empty()) {
    auto ls = ParseLabelSelector(req.label_selector);
    if (!ls.ok()) return ls.error();
    w.labels = ls.value();
  }
  if (!req.field_selector.empty()) {
    auto fs = FieldSelector::Parse(req.field_selector);
    if (!fs.ok()) return fs.error();
    w.fields = fs.value();
  }
  std::optional<uint64_t> from;
  if (!req.resource_version.empty() && req.resource_version != "0") {
    from = ParseRv(req.resource_version);
    if (!from) return BadRequestError("invalid resourceVersion \"" + req.resource_version + "\"");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const bool gone = from && *from < history_floor_;
  if (gone && !options_.gone_as_event) {
    return GoneError("too old resource version: " + req.resource_version + " (" + RvString(history_floor_ + 1) + ")");
  }
  std::optional<WatchSink> sink = open();
  if (!sink) return uint64_t{0};
  if (gone) {
    ApiError err = GoneError("too old resource version: " + req.resource_version + " (" + RvString(history_floor_ + 1) + ")");
    Json line = {{"type", "ERROR"}, {"object", err.ToStatus()}};
    sink->send(line.dump() + "\n");
    sink->close();
    return uint64_t{0};
  }
  w.sink = std::move(*sink);
  w.id = next_watch_id_++;
  w.last_bookmark = std::chrono::steady_clock::now();
  watchers_[w.id] = w;
  Watcher& reg = watchers_[w.id];
  // Replay: synthetic ADDED for the current state, or the history after `from`.
  std::map<uint64_t, Watcher> only;
  only[reg.id] = reg;
  std::swap(only, watchers_);
  if (!from) {
    auto b = objects_.find(GrKey(t));
    if (b != objects_.end()) {
      for (const auto& [k, o] : b->second) {
        DispatchLocked(Event{0, GrKey(t), "ADDED", std::make_shared<const Json>(o), nullptr});
      }
    }
  } else {
    for (const Event& e : history_) {
      if (e.rv > *from && e.gr == GrKey(t)) DispatchLocked(e);
    }
  }
  const bool alive = !watchers_.empty();
  std::swap(only, watchers_);
  if (!alive) {
    watchers_.erase(w.id);
    return w.id;
  }
  return w.id;
}

void ApiStore::StopWatch(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(id);
}

void ApiStore::TickWatches() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  std::vector<uint64_t> dead;
  for (auto& [id, w] : watchers_) {
    if (w.sink.alive && !w.sink.alive()) {
      dead.push_back(id);
      continue;
    }
    if (now >= w.req.deadline) {
      w.sink.close();
      dead.push_back(id);
      continue;
    }
    if (w.req.bookmarks && now - w.last_bookmark >= options_.bookmark_interval) {
      w.last_bookmark = now;
      Json line = {{"type", "BOOKMARK"},
                   {"object", {{"kind", w.type.kind}, {"apiVersion", w.type.GroupVersion()},
                               {"metadata", {{"resourceVersion", RvString(rv_)},
                                             {"annotations", {{"k8s.io/initial-events-end", "false"}}}}}}}};
      if (!w.sink.send(line.dump() + "\n")) dead.push_back(id);
    }
  }
  for (uint64_t id : dead) watchers_.erase(id);
}

void ApiStore::ExpireHistory() {
  std::lock_guard<std::mutex> lock(mu_);
  history_.clear();
  ++rv_;  // every version handed out so far is "too old" now
  history_floor_ = rv_;
}

std::size_t ApiStore::DropWatches() {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = watchers_.size();
  for (auto& [id, w] : watchers_) w.sink.close();
  watchers_.clear();
  return n;
}

void ApiStore::SetGoneAsEvent(bool v) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.gone_as_event = v;
}

void ApiStore::SetHistoryLimit(std::size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.history_limit = std::max<std::size_t>(n, 1);
}

Json ApiStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {{"writes", writes_}, {"resource_version", RvString(rv_)}, {"watches", watchers_.size()},
          {"history", history_.size()}, {"history_floor", RvString(history_floor_)}};
}

}  // namespace kvmesh::testapi
