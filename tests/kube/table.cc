// Table (meta.k8s.io/v1) rendering for `kubectl get`.
#include "tests/kube/test_apiserver.h"

namespace kvmesh::testapi {
namespace {

struct Column {
  std::string name;
  std::string type;
  std::string format;
  std::string description;
  int priority = 0;
};

std::string Str(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

std::string Age(const Json& obj) {
  auto t = ParseRfc3339(obj["metadata"].value("creationTimestamp", ""));
  if (!t) return "<unknown>";
  return HumanAge(std::chrono::system_clock::now() - *t);
}

int64_t Int(const Json& obj, std::initializer_list<const char*> path) {
  const Json* cur = &obj;
  for (const char* p : path) {
    if (!cur->is_object() || !cur->contains(p)) return 0;
    cur = &(*cur)[p];
  }
  return cur->is_number_integer() ? cur->get<int64_t>() : 0;
}

Json CustomCell(const Json& col, const Json& obj) {
  auto v = EvalJsonPath(obj, col.value("jsonPath", ""));
  const std::string type = col.value("type", "string");
  if (!v || v->is_null()) return nullptr;
  if (type == "date") {
    auto t = ParseRfc3339(Str(*v));
    return t ? Json(HumanAge(std::chrono::system_clock::now() - *t)) : Json(Str(*v));
  }
  if (type == "integer" && v->is_number()) return v->get<int64_t>();
  if (type == "number" && v->is_number()) return v->get<double>();
  if (type == "boolean" && v->is_boolean()) return *v;
  if (v->is_string()) return *v;
  return v->dump();
}

}  // namespace

Json ToTable(const ResourceType& t, const std::vector<Json>& objects, const std::string& resource_version) {
  std::vector<Column> cols = {{"Name", "string", "name", "Name must be unique within a namespace.", 0}};
  std::function<Json(const Json&)> cells;  // all cells after Name
  if (t.custom && t.printer_columns.is_array() && !t.printer_columns.empty()) {
    for (const Json& c : t.printer_columns) {
      cols.push_back({c.value("name", ""), c.value("type", "string") == "date" ? "date" : c.value("type", "string"),
                      c.value("format", ""), c.value("description", ""), c.value("priority", 0)});
    }
    cells = [&t](const Json& o) {
      Json row = Json::array();
      for (const Json& c : t.printer_columns) row.push_back(CustomCell(c, o));
      return row;
    };
  } else if (t.resource == "pods") {
    cols.push_back({"Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0});
    cols.push_back({"Status", "string", "", "The aggregate status of the containers in this pod.", 0});
    cols.push_back({"Restarts", "string", "", "The number of times the containers in this pod have been restarted.", 0});
    cols.push_back({"Age", "string", "", "CreationTimestamp", 0});
    cells = [](const Json& o) {
      int64_t total = 0, ready = 0, restarts = 0;
      if (o.contains("spec") && o["spec"].contains("containers")) total = static_cast<int64_t>(o["spec"]["containers"].size());
      if (o.contains("status") && o["status"].contains("containerStatuses")) {
        for (const Json& cs : o["status"]["containerStatuses"]) {
          ready += cs.value("ready", false) ? 1 : 0;
          restarts += cs.value("restartCount", int64_t{0});
        }
      }
      std::string phase = o.contains("status") ? o["status"].value("phase", "Pending") : "Pending";
      if (o["metadata"].contains("deletionTimestamp")) phase = "Terminating";
      return Json::array({std::to_string(ready) + "/" + std::to_string(total), phase, std::to_string(restarts), Age(o)});
    };
  } else if (t.resource == "deployments") {
    for (const char* n : {"Ready", "Up-to-date", "Available", "Age"}) cols.push_back({n, n == std::string("Ready") || n == std::string("Age") ? "string" : "integer", "", n, 0});
    cells = [](const Json& o) {
      return Json::array({std::to_string(Int(o, {"status", "readyReplicas"})) + "/" +
                              std::to_string(o.contains("spec") ? o["spec"].value("replicas", int64_t{1}) : 1),
                          Int(o, {"status", "updatedReplicas"}), Int(o, {"status", "availableReplicas"}), Age(o)});
    };
  } else if (t.resource == "replicasets") {
    for (const char* n : {"Desired", "Current", "Ready"}) cols.push_back({n, "integer", "", n, 0});
    cols.push_back({"Age", "string", "", "CreationTimestamp", 0});
    cells = [](const Json& o) {
      return Json::array({Int(o, {"spec", "replicas"}), Int(o, {"status", "replicas"}), Int(o, {"status", "readyReplicas"}), Age(o)});
    };
  } else if (t.resource == "services") {
    for (const char* n : {"Type", "Cluster-IP", "External-IP", "Port(s)", "Age"}) cols.push_back({n, "string", "", n, 0});
    cells = [](const Json& o) {
      std::string ports;
      if (o.contains("spec") && o["spec"].contains("ports")) {
        for (const Json& p : o["spec"]["ports"]) {
          if (!ports.empty()) ports += ",";
          ports += Str(p.value("port", Json(0))) + "/" + p.value("protocol", "TCP");
        }
      }
      const Json spec = o.value("spec", Json::object());
      return Json::array({spec.value("type", "ClusterIP"), spec.value("clusterIP", "<none>"), "<none>",
                          ports.empty() ? "<none>" : ports, Age(o)});
    };
  } else if (t.resource == "namespaces") {
    cols.push_back({"Status", "string", "", "The status of the namespace", 0});
    cols.push_back({"Age", "string", "", "CreationTimestamp", 0});
    cells = [](const Json& o) {
      return Json::array({o["metadata"].contains("deletionTimestamp") ? "Terminating" : "Active", Age(o)});
    };
  } else if (t.resource == "events") {
    cols = {{"Last Seen", "string", "", "Last time the event occurred", 0},
            {"Type", "string", "", "Type of this event", 0},
            {"Reason", "string", "", "Reason", 0},
            {"Object", "string", "", "The object that this event is about", 0},
            {"Message", "string", "", "A human-readable description", 0}};
    cells = nullptr;
  } else if (t.resource == "customresourcedefinitions") {
    cols.push_back({"Created At", "date", "", "CreationTimestamp", 0});
    cells = [](const Json& o) { return Json::array({o["metadata"].value("creationTimestamp", "")}); };
  } else if (t.resource == "leases") {
    cols.push_back({"Holder", "string", "", "holderIdentity", 0});
    cols.push_back({"Age", "string", "", "CreationTimestamp", 0});
    cells = [](const Json& o) {
      return Json::array({o.contains("spec") ? o["spec"].value("holderIdentity", "") : "", Age(o)});
    };
  } else {
    cols.push_back({"Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0});
    cells = [](const Json& o) { return Json::array({Age(o)}); };
  }
  Json defs = Json::array();
  for (const Column& c : cols) {
    defs.push_back({{"name", c.name}, {"type", c.type}, {"format", c.format}, {"description", c.description},
                    {"priority", c.priority}});
  }
  Json rows = Json::array();
  for (const Json& o : objects) {
    Json row = Json::array();
    if (t.resource == "events") {
      const Json io = o.value("involvedObject", Json::object());
      std::string last = o.value("lastTimestamp", o.value("eventTime", ""));
      auto ts = ParseRfc3339(last);
      row = Json::array({ts ? HumanAge(std::chrono::system_clock::now() - *ts) : "<unknown>", o.value("type", ""),
                         o.value("reason", ""), io.value("kind", "") + "/" + io.value("name", ""), o.value("message", "")});
    } else {
      row.push_back(o["metadata"].value("name", ""));
      for (const Json& c : cells(o)) row.push_back(c);
    }
    rows.push_back({{"cells", row}, {"object", o}});
  }
  return {{"kind", "Table"}, {"apiVersion", "meta.k8s.io/v1"},
          {"metadata", {{"resourceVersion", resource_version}}}, {"columnDefinitions", defs}, {"rows", rows}};
}

}  // namespace kvmesh::testapi
