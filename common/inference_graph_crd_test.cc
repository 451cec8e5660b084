// Proves that the InferenceGraph CRD (crds/inferencegraph.yaml) describes exactly the C++ type of
// common/inference_graph.h: the same fields, types, defaults, enums and ranges, and that every
// example graph in examples/ validates against the schema and is defaulted by it to what the C++
// parser makes of it.
//
// A small structural-schema validator lives here (type, properties with unknown fields rejected as
// kubectl's strict field validation does, required, enum, minimum/maximum, minLength/maxLength,
// pattern, items, x-kubernetes-list-type map, defaults applied top-down like the API server). CEL
// rules (x-kubernetes-validations) are not interpreted: each rule text maps to a C++ predicate in
// kCelRules, and a rule in the CRD without an entry fails the test, so a new rule needs a checker.
// GCC 12 reports a false -Wmaybe-uninitialized inside libstdc++'s <regex> at -O1 with the
// sanitizers (std::function moved in regex_automaton.h); not in this file's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/inference_graph.h"

namespace kvmesh::graph {
namespace {

using Json = nlohmann::json;
using Ptr = nlohmann::json::json_pointer;

std::string SourceDir() {
  const char* s = std::getenv("KVMESH_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// yaml-cpp node -> JSON with YAML 1.1 scalar resolution for plain scalars, as Kubernetes' YAML
// decoder does (so an unquoted `off` in the CRD would become false and fail the enum checks).
Json YamlToJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      Json j = Json::object();
      for (auto it = n.begin(); it != n.end(); ++it) j[it->first.Scalar()] = YamlToJson(it->second);
      return j;
    }
    case YAML::NodeType::Sequence: {
      Json j = Json::array();
      for (const auto& v : n) j.push_back(YamlToJson(v));
      return j;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted
      static const std::regex kInt("[-+]?[0-9]+");
      static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
      static const std::set<std::string> kTrue = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
      static const std::set<std::string> kFalse = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
      if (s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
      if (kTrue.count(s)) return true;
      if (kFalse.count(s)) return false;
      if (std::regex_match(s, kInt)) return std::stoll(s);
      if (std::regex_match(s, kFloat)) return std::stod(s);
      return s;
    }
    default:
      return nullptr;
  }
}

// Numbers compare by value (the C++ side prints 1.0 where YAML says 1).
bool JsonEqual(const Json& a, const Json& b, const std::string& path, std::string* diff) {
  if (a.is_number() && b.is_number()) {
    if (a.get<double>() == b.get<double>()) return true;
    *diff = path + ": " + a.dump() + " != " + b.dump();
    return false;
  }
  if (a.type() != b.type()) {
    *diff = path + ": " + a.dump() + " != " + b.dump();
    return false;
  }
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key())) {
        *diff = path + "/" + it.key() + ": only on the left";
        return false;
      }
      if (!JsonEqual(it.value(), b[it.key()], path + "/" + it.key(), diff)) return false;
    }
    for (auto it = b.begin(); it != b.end(); ++it) {
      if (!a.contains(it.key())) {
        *diff = path + "/" + it.key() + ": only on the right";
        return false;
      }
    }
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) {
      *diff = path + ": array sizes " + std::to_string(a.size()) + " != " + std::to_string(b.size());
      return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
      if (!JsonEqual(a[i], b[i], path + "/" + std::to_string(i), diff)) return false;
    }
    return true;
  }
  if (a == b) return true;
  *diff = path + ": " + a.dump() + " != " + b.dump();
  return false;
}

// ---------------------------------------------------------------------------------------------
// CEL rules of the CRD, each as the C++ predicate it means. `self` is the (defaulted) object the
// rule is attached to.

const std::map<std::string, std::function<bool(const Json&)>>& CelRules() {
  static const auto* rules = new std::map<std::string, std::function<bool(const Json&)>>{
      // With the API server's own metadata.name check (a DNS-1123 subdomain, modelled in
      // SchemaErrors) this makes the name a DNS label, as the C++ requires.
      {"size(self.metadata.name) <= 63 && !self.metadata.name.contains('.')",
       [](const Json& s) {
         std::string name = s["metadata"].value("name", "");
         return name.size() <= 63 && name.find('.') == std::string::npos;
       }},
      {"self.disaggregation.mode != 'off' || self.prefill.replicas == 0",
       [](const Json& s) { return s["disaggregation"]["mode"] != "off" || s["prefill"]["replicas"] == 0; }},
      {"self.disaggregation.mode != 'always' || self.prefill.replicas >= 1",
       [](const Json& s) {
         return s["disaggregation"]["mode"] != "always" || s["prefill"]["replicas"].get<int64_t>() >= 1;
       }},
      {"self.minReplicas <= self.replicas",
       [](const Json& s) { return s["minReplicas"].get<int64_t>() <= s["replicas"].get<int64_t>(); }},
      {"self.maxReplicas == 0 || self.maxReplicas >= self.replicas",
       [](const Json& s) {
         return s["maxReplicas"] == 0 || s["maxReplicas"].get<int64_t>() >= s["replicas"].get<int64_t>();
       }},
      {"self.policy == 'single' || size(self.clusters) != 1",
       [](const Json& s) { return s["policy"] == "single" || s["clusters"].size() != 1; }},
      {"self.from != self.to", [](const Json& s) { return s["from"] != s["to"]; }},
  };
  return *rules;
}

// ---------------------------------------------------------------------------------------------
// Structural-schema defaulting and validation.

// Absent or null properties take their default; then recurse (so `default: {}` gets its own
// properties' defaults), as the API server does.
void ApplyDefaults(const Json& schema, Json& v) {
  if (v.is_object() && schema.contains("properties")) {
    for (const auto& [key, sub] : schema["properties"].items()) {
      if ((!v.contains(key) || v[key].is_null()) && sub.contains("default")) v[key] = sub["default"];
      if (v.contains(key)) ApplyDefaults(sub, v[key]);
    }
  }
  if (v.is_array() && schema.contains("items")) {
    for (auto& item : v) ApplyDefaults(schema["items"], item);
  }
}

size_t Utf8Length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

const std::regex& CompiledPattern(const std::string& pattern) {
  static auto* cache = new std::map<std::string, std::regex>();
  auto it = cache->find(pattern);
  if (it == cache->end()) it = cache->emplace(pattern, std::regex(pattern, std::regex::ECMAScript)).first;
  return it->second;
}

void Validate(const Json& schema, const Json& v, const std::string& path, std::vector<std::string>& errors) {
  auto fail = [&](const std::string& msg) { errors.push_back(path + ": " + msg); };
  const std::string type = schema.value("type", "");
  if (type == "object" && !v.is_object()) return fail("expected object, got " + v.dump());
  if (type == "array" && !v.is_array()) return fail("expected array, got " + v.dump());
  if (type == "string" && !v.is_string()) return fail("expected string, got " + v.dump());
  if (type == "integer" && !v.is_number_integer()) return fail("expected integer, got " + v.dump());
  if (type == "number" && !v.is_number()) return fail("expected number, got " + v.dump());
  if (type == "boolean" && !v.is_boolean()) return fail("expected boolean, got " + v.dump());
  if (schema.contains("enum")) {
    bool found = false;
    for (const auto& e : schema["enum"]) found = found || e == v;
    if (!found) fail("not one of " + schema["enum"].dump() + ": " + v.dump());
  }
  if (v.is_number()) {
    double d = v.get<double>();
    if (schema.contains("minimum") && d < schema["minimum"].get<double>()) fail("below minimum: " + v.dump());
    if (schema.contains("maximum") && d > schema["maximum"].get<double>()) fail("above maximum: " + v.dump());
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (schema.contains("minLength") && Utf8Length(s) < schema["minLength"].get<size_t>()) fail("shorter than minLength");
    if (schema.contains("maxLength") && Utf8Length(s) > schema["maxLength"].get<size_t>()) fail("longer than maxLength");
    if (schema.contains("pattern") && !std::regex_search(s, CompiledPattern(schema["pattern"].get<std::string>()))) {
      fail("does not match " + schema["pattern"].get<std::string>() + ": " + v.dump());
    }
  }
  if (v.is_object() && schema.contains("properties")) {
    for (const auto& r : schema.value("required", Json::array())) {
      if (!v.contains(r.get<std::string>())) fail("missing required field " + r.get<std::string>());
    }
    for (const auto& [key, value] : v.items()) {
      if (!schema["properties"].contains(key)) {
        fail("unknown field " + key);
        continue;
      }
      Validate(schema["properties"][key], value, path + "." + key, errors);
    }
  }
  if (v.is_array() && schema.contains("items")) {
    for (size_t i = 0; i < v.size(); ++i) {
      Validate(schema["items"], v[i], path + "[" + std::to_string(i) + "]", errors);
    }
    if (schema.value("x-kubernetes-list-type", "") == "map") {
      std::set<std::string> seen;
      for (const auto& item : v) {
        std::string key;
        for (const auto& k : schema["x-kubernetes-list-map-keys"]) key += item.value(k.get<std::string>(), Json()).dump() + "|";
        if (!seen.insert(key).second) fail("duplicate entry with key " + key);
      }
    }
  }
  if (schema.contains("x-kubernetes-validations") && errors.empty()) {  // CEL runs on a well-typed value
    for (const auto& rule : schema["x-kubernetes-validations"]) {
      auto it = CelRules().find(rule["rule"].get<std::string>());
      if (it == CelRules().end()) {
        fail("no C++ checker for CEL rule " + rule["rule"].dump() + " (add it to CelRules)");
      } else if (!it->second(v)) {
        fail(rule["message"].get<std::string>());
      }
    }
  }
}

class InferenceGraphCrdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    crd_text_ = new std::string(ReadFile(SourceDir() + "/crds/inferencegraph.yaml"));
    crd_ = new Json(YamlToJson(YAML::Load(*crd_text_)));
  }
  static void TearDownTestSuite() {
    delete crd_;
    delete crd_text_;
  }

  static const Json& Version() { return (*crd_)["spec"]["versions"][0]; }
  static const Json& Root() { return Version()["schema"]["openAPIV3Schema"]; }
  static const Json& SpecSchema() { return Root()["properties"]["spec"]; }

  // Defaults applied, then validated; returns the errors. Also applies the API server's own rule
  // for every object name (a DNS-1123 subdomain), which is not part of the CRD.
  static std::vector<std::string> SchemaErrors(Json object) {
    ApplyDefaults(Root(), object);
    std::vector<std::string> errors;
    std::string name = object.contains("metadata") ? object["metadata"].value("name", "") : "";
    static const std::regex kSubdomain("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$");
    if (name.size() > 253 || !std::regex_match(name, kSubdomain)) errors.push_back("metadata.name: invalid " + name);
    Validate(Root(), object, "", errors);
    return errors;
  }

  static Json Defaulted(Json object) {
    ApplyDefaults(Root(), object);
    return object;
  }

  // The C++ verdict on an API object (JSON).
  static Status CppVerdict(const Json& object) { return InferenceGraphFromJson(object.dump()).status(); }

  // An object with every spec field present (examples/kubernetes-llama.yaml as the C++ renders it,
  // autoscaling off so that replica ranges can be probed alone).
  static Json FullObject() {
    auto g = LoadInferenceGraphFile(SourceDir() + "/examples/kubernetes-llama.yaml");
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    Json j = Json::parse(InferenceGraphToJson(*g));
    for (const char* pool : {"prefill", "decode"}) {
      j["spec"][pool]["minReplicas"] = 0;
      j["spec"][pool]["maxReplicas"] = 0;
    }
    return j;
  }

  static std::string* crd_text_;
  static Json* crd_;
};
std::string* InferenceGraphCrdTest::crd_text_ = nullptr;
Json* InferenceGraphCrdTest::crd_ = nullptr;

// Calls fn(pointer, schema) for every property under `schema`; array items get index 0.
void ForEachProperty(const Json& schema, const std::string& ptr,
                     const std::function<void(const std::string&, const Json&)>& fn) {
  if (schema.contains("properties")) {
    for (const auto& [key, sub] : schema["properties"].items()) {
      fn(ptr + "/" + key, sub);
      ForEachProperty(sub, ptr + "/" + key, fn);
    }
  }
  if (schema.contains("items")) ForEachProperty(schema["items"], ptr + "/0", fn);
}

TEST_F(InferenceGraphCrdTest, NamesScopeVersionAndSubresources) {
  const Json& c = *crd_;
  EXPECT_EQ(c["apiVersion"], "apiextensions.k8s.io/v1");
  EXPECT_EQ(c["kind"], "CustomResourceDefinition");
  EXPECT_EQ(c["metadata"]["name"], "inferencegraphs.kvmesh.dev");
  EXPECT_EQ(c["spec"]["group"], "kvmesh.dev");
  EXPECT_EQ(c["spec"]["scope"], "Namespaced");
  EXPECT_EQ(c["spec"]["names"]["kind"], kKind);
  EXPECT_EQ(c["spec"]["names"]["plural"], "inferencegraphs");
  EXPECT_EQ(c["spec"]["names"]["singular"], "inferencegraph");
  EXPECT_EQ(c["spec"]["names"]["shortNames"], Json::array({"ig"}));
  EXPECT_EQ(c["spec"]["names"]["categories"], Json::array({"kvmesh"}));
  ASSERT_EQ(c["spec"]["versions"].size(), 1u);
  EXPECT_EQ(std::string("kvmesh.dev/") + Version()["name"].get<std::string>(), kApiVersion);
  EXPECT_EQ(Version()["served"], true);
  EXPECT_EQ(Version()["storage"], true);
  EXPECT_EQ(Version()["subresources"]["status"], Json::object());
  EXPECT_FALSE(Version()["subresources"].contains("scale"));
}

TEST_F(InferenceGraphCrdTest, PrinterColumnsPointAtSchemaFieldsOfTheirType) {
  std::vector<std::string> names;
  for (const auto& col : Version()["additionalPrinterColumns"]) {
    names.push_back(col["name"]);
    std::string path = col["jsonPath"];
    ASSERT_EQ(path.rfind(".", 0), 0u) << path;
    if (path == ".metadata.creationTimestamp") {
      EXPECT_EQ(col["type"], "date");
      continue;
    }
    const Json* s = &Root();
    std::stringstream parts(path.substr(1));
    std::string part;
    while (std::getline(parts, part, '.')) {
      ASSERT_TRUE(s->contains("properties") && (*s)["properties"].contains(part)) << path << " not in the schema";
      s = &(*s)["properties"][part];
    }
    EXPECT_EQ((*s)["type"], col["type"]) << path;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"Model", "Prefill-Ready", "Prefill", "Decode-Ready", "Decode", "Phase",
                                             "Endpoint", "Age"}));
}

TEST_F(InferenceGraphCrdTest, SchemaIsStructuralAndDefaultsAreValid) {
  std::vector<std::string> problems;
  ForEachProperty(Root(), "", [&](const std::string& ptr, const Json& s) {
    if (ptr == "/metadata") return;
    if (!s.contains("type")) problems.push_back(ptr + ": no type");
    if (s.contains("properties") && s["type"] != "object") problems.push_back(ptr + ": properties on a non-object");
    if (s.contains("items") && s["type"] != "array") problems.push_back(ptr + ": items on a non-array");
    if (s["type"] == "array" && !s.contains("items")) problems.push_back(ptr + ": array without items");
    if (s.contains("$ref") || s.contains("additionalProperties")) problems.push_back(ptr + ": not structural");
    if (s.contains("enum")) {  // a bounded length keeps the CEL cost estimate of rules using it small
      size_t longest = 0;
      for (const auto& v : s["enum"]) longest = std::max(longest, v.get<std::string>().size());
      if (s.value("maxLength", size_t{0}) != longest) problems.push_back(ptr + ": maxLength should be the longest enum value");
    }
    if (s.contains("default")) {
      Json d = s["default"];
      ApplyDefaults(s, d);
      std::vector<std::string> errors;
      Validate(s, d, ptr, errors);
      for (const auto& e : errors) problems.push_back("default " + e);
    }
    if (ptr.rfind("/spec/", 0) == 0 && ptr.find("/0/") == std::string::npos && !s.contains("default")) {
      problems.push_back(ptr + ": spec field without a default (the C++ type has one for every field)");
    }
  });
  for (const auto& p : problems) ADD_FAILURE() << p;
  // Every CEL rule in the CRD has a checker here.
  std::function<void(const Json&)> walk = [&](const Json& j) {
    if (j.is_object()) {
      if (j.contains("x-kubernetes-validations")) {
        for (const auto& r : j["x-kubernetes-validations"]) {
          EXPECT_TRUE(CelRules().count(r["rule"].get<std::string>())) << r["rule"];
          EXPECT_TRUE(r.contains("message")) << r["rule"];
        }
      }
      for (const auto& [k, v] : j.items()) walk(v);
    } else if (j.is_array()) {
      for (const auto& v : j) walk(v);
    }
  };
  walk(Root());
}

// Defaulting `spec: {}` by the schema gives exactly the spec the C++ emits for the defaults, and
// the embedded local default graph is the same.
TEST_F(InferenceGraphCrdTest, SchemaDefaultsEqualCppDefaults) {
  Json empty = {{"apiVersion", kApiVersion}, {"kind", kKind}, {"metadata", {{"name", "g"}}}, {"spec", Json::object()}};
  Json by_schema = Defaulted(empty)["spec"];
  auto g = InferenceGraphFromJson(empty.dump());
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Json by_cpp = Json::parse(InferenceGraphToJson(*g))["spec"];
  std::string diff;
  EXPECT_TRUE(JsonEqual(by_schema, by_cpp, "spec", &diff)) << diff;
  Json local = Json::parse(InferenceGraphToJson(DefaultLocalGraph()))["spec"];
  EXPECT_TRUE(JsonEqual(by_schema, local, "spec", &diff)) << diff;
  EXPECT_TRUE(SchemaErrors(empty).empty());
}

// Every field the C++ emits (all of them, lists non-empty) is in the schema with a matching type,
// and every schema property under spec is emitted by the C++.
TEST_F(InferenceGraphCrdTest, FieldSetsAndTypesAreEqual) {
  Json full = FullObject();
  ASSERT_FALSE(full["spec"]["placement"]["clusters"].empty());
  ASSERT_FALSE(full["spec"]["placement"]["links"].empty());
  ASSERT_FALSE(full["spec"]["decode"]["extraArgs"].empty());
  std::function<void(const Json&, const Json&, const std::string&)> walk = [&](const Json& v, const Json& s,
                                                                              const std::string& path) {
    std::string type = s.value("type", "");
    if (v.is_object()) {
      EXPECT_EQ(type, "object") << path;
      for (const auto& [k, sub] : v.items()) {
        if (!s.contains("properties") || !s["properties"].contains(k)) {
          ADD_FAILURE() << path << "/" << k << " is emitted by the C++ but not in the schema";
          continue;
        }
        walk(sub, s["properties"][k], path + "/" + k);
      }
    } else if (v.is_array()) {
      EXPECT_EQ(type, "array") << path;
      for (const auto& item : v) walk(item, s["items"], path + "/0");
    } else if (v.is_number_integer()) {
      EXPECT_EQ(type, "integer") << path;
    } else if (v.is_number_float()) {
      EXPECT_EQ(type, "number") << path;
    } else if (v.is_string()) {
      EXPECT_EQ(type, "string") << path;
    } else {
      ADD_FAILURE() << path << ": unexpected JSON " << v.dump();
    }
  };
  walk(full["spec"], SpecSchema(), "/spec");
  ForEachProperty(SpecSchema(), "/spec", [&](const std::string& ptr, const Json&) {
    EXPECT_TRUE(full.contains(Ptr(ptr))) << ptr << " is in the schema but the C++ type has no such field";
  });
}

// Each enum in the schema equals the set the C++ accepts: every value parses, and an outside value
// is rejected with a message listing exactly the schema's values.
TEST_F(InferenceGraphCrdTest, EnumsEqualTheValuesCppAccepts) {
  int enums = 0;
  ForEachProperty(SpecSchema(), "/spec", [&](const std::string& ptr, const Json& s) {
    if (!s.contains("enum")) return;
    ++enums;
    for (const auto& value : s["enum"]) {
      Json obj = FullObject();
      obj[Ptr(ptr)] = value;
      if (ptr == "/spec/disaggregation/mode" && value == "off") obj["spec"]["prefill"]["replicas"] = 0;
      EXPECT_TRUE(CppVerdict(obj).ok()) << ptr << "=" << value << ": " << CppVerdict(obj).ToString();
      EXPECT_TRUE(SchemaErrors(obj).empty()) << ptr << "=" << value;
    }
    Json obj = FullObject();
    obj[Ptr(ptr)] = "not-a-valid-value";
    Status st = CppVerdict(obj);
    ASSERT_FALSE(st.ok()) << ptr;
    EXPECT_FALSE(SchemaErrors(obj).empty()) << ptr;
    // "...: must be one of a, b, c, got "not-a-valid-value""
    std::string msg(st.message());
    size_t from = msg.find("must be one of ");
    size_t to = msg.find(", got ");
    ASSERT_TRUE(from != std::string::npos && to != std::string::npos) << msg;
    std::set<std::string> cpp_values;
    std::stringstream list(msg.substr(from + 15, to - from - 15));
    std::string item;
    while (std::getline(list, item, ',')) cpp_values.insert(item.substr(item.find_first_not_of(' ')));
    std::set<std::string> schema_values;
    for (const auto& v : s["enum"]) schema_values.insert(v.get<std::string>());
    EXPECT_EQ(cpp_values, schema_values) << ptr;
  });
  EXPECT_EQ(enums, 5);  // routingMode, kvCost, mode, onFailure, policy
}

// Each minimum/maximum is the C++ range: the bound is accepted by both, one step outside by neither.
TEST_F(InferenceGraphCrdTest, RangesEqualCppRanges) {
  int bounds = 0;
  ForEachProperty(SpecSchema(), "/spec", [&](const std::string& ptr, const Json& s) {
    for (const char* bound : {"minimum", "maximum"}) {
      if (!s.contains(bound)) continue;
      ++bounds;
      const bool integer = s["type"] == "integer";
      const double edge = s[bound].get<double>();
      const double step = integer ? 1 : 0.5;
      for (const double value : {edge, std::string(bound) == "minimum" ? edge - step : edge + step}) {
        const bool inside = value == edge;
        Json obj = FullObject();
        if (integer) {
          obj[Ptr(ptr)] = static_cast<int64_t>(value);
        } else {
          obj[Ptr(ptr)] = value;
        }
        const std::string leaf = ptr.substr(ptr.rfind('/') + 1);
        if (leaf == "minReplicas" || leaf == "maxReplicas") obj[Ptr(ptr.substr(0, ptr.rfind('/')) + "/replicas")] = 1024;
        Status cpp = CppVerdict(obj);
        std::vector<std::string> errors = SchemaErrors(obj);
        EXPECT_EQ(cpp.ok(), inside) << ptr << "=" << value << ": " << cpp.ToString();
        EXPECT_EQ(errors.empty(), inside) << ptr << "=" << value << ": " << (errors.empty() ? "" : errors[0]);
      }
    }
  });
  EXPECT_GE(bounds, 30);
}

// Hand-picked values around the patterns, CEL rules and list rules: the schema and the C++ agree.
TEST_F(InferenceGraphCrdTest, SchemaAndCppAgreeOnProbes) {
  struct Probe {
    std::string ptr;
    Json value;
    bool valid;
  };
  const std::vector<Probe> probes = {
      {"/spec/disaggregation/transferTimeout", "500ms", true},
      {"/spec/disaggregation/transferTimeout", "1.5m", true},
      {"/spec/disaggregation/transferTimeout", "2h", true},
      {"/spec/disaggregation/transferTimeout", "0s", false},
      {"/spec/disaggregation/transferTimeout", "0.0ms", false},
      {"/spec/disaggregation/transferTimeout", "10", false},
      {"/spec/disaggregation/transferTimeout", "10 s", false},
      {"/spec/disaggregation/transferTimeout", "-1s", false},
      {"/spec/disaggregation/transferTimeout", "1d", false},
      {"/spec/disaggregation/transferTimeout", "", false},
      {"/spec/prefill/requests/cpu", "500m", true},
      {"/spec/prefill/requests/cpu", "", true},
      {"/spec/prefill/limits/memory", "1.5Gi", true},
      {"/spec/decode/requests/memory", "8 Gi", false},
      {"/spec/decode/limits/cpu", "Gi", false},
      {"/spec/decode/limits/cpu", "2x", false},
      {"/spec/model/name", "llama-3.1-8b", true},
      {"/spec/model/name", "two words", false},
      {"/spec/model/name", "tab\there", false},
      {"/spec/model/source", "", false},
      {"/spec/disaggregation/transport", "tcp,sm", true},
      {"/spec/disaggregation/transport", "tcp sm", false},
      {"/spec/placement/topologyKey", "", false},
      {"/spec/placement/clusters/0/name", "Bad_Name", false},
      {"/spec/placement/clusters/1/name", "us-east", false},  // duplicate
      {"/spec/placement/links/0/to", "us-east", false},       // from == to
      {"/spec/decode/extraArgs/0", "", false},
      {"/spec/prefill/minReplicas", 3, false},  // > replicas (2)
      {"/spec/prefill/maxReplicas", 1, false},  // < replicas (2)
      {"/spec/prefill/maxReplicas", 2, true},
      {"/spec/decode/replicas", 0, false},
      {"/spec/router/replicas", "2", false},    // strings are not integers
      {"/spec/sla/ttftMs", "fast", false},
      {"/spec/decode/replicsa", 2, false},      // unknown field
      {"/metadata/name", "bad.name", false},
      {"/metadata/name", "Bad", false},
      {"/metadata/name", "-bad", false},
      {"/metadata/name", std::string(64, 'a'), false},
      {"/metadata/name", std::string(63, 'a'), true},
  };
  for (const Probe& p : probes) {
    Json obj = FullObject();
    obj[Ptr(p.ptr)] = p.value;
    Status cpp = CppVerdict(obj);
    std::vector<std::string> errors = SchemaErrors(obj);
    EXPECT_EQ(cpp.ok(), p.valid) << p.ptr << "=" << p.value << ": " << cpp.ToString();
    EXPECT_EQ(errors.empty(), p.valid) << p.ptr << "=" << p.value << ": " << (errors.empty() ? "" : errors[0]);
  }
  // Cross-field rules.
  Json off = FullObject();
  off["spec"]["disaggregation"]["mode"] = "off";
  EXPECT_FALSE(CppVerdict(off).ok());
  EXPECT_FALSE(SchemaErrors(off).empty());
  Json always = FullObject();
  always["spec"]["disaggregation"]["mode"] = "always";
  always["spec"]["prefill"]["replicas"] = 0;
  EXPECT_FALSE(CppVerdict(always).ok());
  EXPECT_FALSE(SchemaErrors(always).empty());
  Json one_cluster = FullObject();
  one_cluster["spec"]["placement"]["clusters"].erase(1);
  one_cluster["spec"]["placement"]["links"] = Json::array();
  EXPECT_FALSE(CppVerdict(one_cluster).ok());
  EXPECT_FALSE(SchemaErrors(one_cluster).empty());
  one_cluster["spec"]["placement"]["policy"] = "single";
  EXPECT_TRUE(CppVerdict(one_cluster).ok()) << CppVerdict(one_cluster).ToString();
  EXPECT_TRUE(SchemaErrors(one_cluster).empty());
  Json nulls = FullObject();
  nulls["spec"]["router"]["routingMode"] = nullptr;  // null = default, in both
  EXPECT_TRUE(CppVerdict(nulls).ok());
  EXPECT_TRUE(SchemaErrors(nulls).empty());
}

// Rules the schema cannot state (or states only partly) and that only the operator's C++
// validation catches: it reports them in status (Degraded, reason InvalidSpec). Listed so that a
// schema change that closes a gap moves the case to the probes above.
TEST_F(InferenceGraphCrdTest, KnownGapsAreCaughtByTheCppOnly) {
  const std::vector<std::pair<std::string, Json>> gaps = {
      {"/spec/disaggregation/transferTimeout", "0.5ms"},  // whole milliseconds
      {"/spec/model/source", "builtin:"},                 // preset name missing
      {"/spec/model/source", "pvc://Bad_Claim/x"},        // claim must be a DNS label
      {"/spec/placement/links/0/to", "nowhere"},          // link to an unknown cluster
  };
  for (const auto& [ptr, value] : gaps) {
    Json obj = FullObject();
    obj[Ptr(ptr)] = value;
    EXPECT_FALSE(CppVerdict(obj).ok()) << ptr << "=" << value;
    EXPECT_TRUE(SchemaErrors(obj).empty()) << ptr << "=" << value;
  }
}

// Every example graph validates against the schema, and the schema's defaults turn it into the
// spec the C++ parser makes of it.
TEST_F(InferenceGraphCrdTest, ExamplesValidateAndDefaultLikeCpp) {
  int graphs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(SourceDir() + "/examples")) {
    if (entry.path().extension() != ".yaml") continue;
    std::string text = ReadFile(entry.path().string());
    Json obj = YamlToJson(YAML::Load(text));
    if (!obj.is_object() || obj.value("kind", "") != kKind) continue;
    ++graphs;
    SCOPED_TRACE(entry.path().string());
    std::vector<std::string> errors = SchemaErrors(obj);
    for (const auto& e : errors) ADD_FAILURE() << e;
    auto g = ParseInferenceGraphYaml(text);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    std::string diff;
    EXPECT_TRUE(JsonEqual(Defaulted(obj)["spec"], Json::parse(InferenceGraphToJson(*g))["spec"], "spec", &diff)) << diff;
  }
  EXPECT_GE(graphs, 4);
}

// The validator itself rejects what it should (so the tests above cannot pass vacuously).
TEST_F(InferenceGraphCrdTest, ValidatorRejectsWrongTypesAndUnknownFields) {
  Json obj = FullObject();
  obj["spec"]["kvCache"]["blockSize"] = "16";
  EXPECT_FALSE(SchemaErrors(obj).empty());
  obj = FullObject();
  obj["spec"]["extra"] = 1;
  EXPECT_FALSE(SchemaErrors(obj).empty());
  obj = FullObject();
  obj.erase("spec");
  EXPECT_FALSE(SchemaErrors(obj).empty());
  obj = FullObject();
  obj["spec"]["placement"]["links"][0].erase("to");
  EXPECT_FALSE(SchemaErrors(obj).empty());
  EXPECT_EQ(YamlToJson(YAML::Load("off")), false);  // YAML 1.1, as Kubernetes reads it
  EXPECT_EQ(YamlToJson(YAML::Load("\"off\"")), "off");
}

}  // namespace
}  // namespace kvmesh::graph
