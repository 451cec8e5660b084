#include "operator/placement/hub_prefix_copy.h"

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;
constexpr char kComponent[] = "hub";

std::unique_ptr<http::HttpClient> MakeClient(std::chrono::milliseconds connect, std::chrono::milliseconds read) {
  http::HttpClientOptions o;
  o.connect_timeout = connect;
  o.read_timeout = read;
  o.keep_alive = false;
  o.user_agent = "kvmesh-hub";
  return std::make_unique<http::HttpClient>(o);
}

// The JSON object a POST answered with 200, or an error naming the URL and the answer.
StatusOr<json> PostJson(http::HttpClient& client, const std::string& url, const json& body) {
  StatusOr<http::ClientResponse> got = client.Post(url, body.dump());
  if (!got.ok()) return Status(got.status().code(), "POST " + url + ": " + got.status().message());
  json j = json::parse(got->body, nullptr, false);
  if (got->status != 200) {
    std::string why = got->body.substr(0, 200);
    if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_object() &&
        j["error"].value("message", json()).is_string()) {
      why = j["error"]["message"].get<std::string>();
    }
    return UnavailableError("POST " + url + ": HTTP " + std::to_string(got->status) + ": " + why);
  }
  if (j.is_discarded() || !j.is_object()) return UnavailableError("POST " + url + ": answer is not a JSON object");
  return j;
}

int64_t IntField(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

void AddError(std::string& errors, const std::string& e) {
  if (!errors.empty()) errors += "; ";
  errors += e;
}

}  // namespace

PrefixCopier::PrefixCopier(std::chrono::milliseconds timeout, std::chrono::milliseconds import_timeout)
    : http_(MakeClient(timeout, timeout)), import_http_(MakeClient(timeout, import_timeout)) {}

PrefixCopier::~PrefixCopier() = default;

PrefixCopyResult PrefixCopier::Copy(const std::vector<uint64_t>& chain, const std::vector<std::string>& source_agents,
                                    const std::vector<std::string>& target_agents) {
  PrefixCopyResult r;
  if (chain.empty()) {
    r.error = "the root has no block chain";
    return r;
  }
  if (source_agents.empty() || target_agents.empty()) {
    r.error = std::string("no agents named for the ") + (source_agents.empty() ? "source" : "target") +
              " cluster (annotation kvmesh.dev/member-agents)";
    return r;
  }
  // 1. Export from the first source agent that holds the chain's head.
  json exported;
  std::string errors;
  for (const std::string& url : source_agents) {
    auto e = PostJson(*http_, url + "/v1/kv/export", {{"hashes", chain}});
    if (!e.ok()) {
      AddError(errors, e.status().message());
      continue;
    }
    auto params = e->find("kv_transfer_params");
    auto hashes = e->find("hashes");
    if (params == e->end() || !params->is_object() || hashes == e->end() || !hashes->is_array()) {
      AddError(errors, "POST " + url + "/v1/kv/export: answer lacks kv_transfer_params or hashes");
      continue;
    }
    exported = std::move(*e);
    r.source_agent = url;
    break;
  }
  if (r.source_agent.empty()) {
    r.error = "no source agent exported the prefix: " + errors;
    return r;
  }
  r.exported_blocks = static_cast<int64_t>(exported["hashes"].size());
  // 2. Import into the first target agent that accepts it.
  const json import_body = {{"kv_transfer_params", exported["kv_transfer_params"]}, {"hashes", exported["hashes"]}};
  errors.clear();
  for (const std::string& url : target_agents) {
    auto i = PostJson(*import_http_, url + "/v1/kv/import", import_body);
    if (!i.ok()) {
      AddError(errors, i.status().message());
      continue;
    }
    r.ok = true;
    r.target_agent = url;
    r.imported_blocks = IntField(*i, "imported_blocks");
    r.already_cached_blocks = IntField(*i, "already_cached_blocks");
    r.bytes = IntField(*i, "bytes");
    break;
  }
  if (!r.ok) r.error = "no target agent imported the prefix: " + errors;
  // 3. End the export's lease (a pull that ran has released it already: NotFound then).
  const json& params = exported["kv_transfer_params"];
  json release = {{"lease_id", params.value("lease_id", json(0))}, {"agent_id", params.value("agent_id", json(""))}};
  if (auto rel = http_->Post(r.source_agent + "/v1/kv/leases/release", release.dump()); !rel.ok()) {
    KVMESH_LOG_WARN(kComponent, "could not release a prefix export's lease (it ends at its TTL)",
                    {"agent", r.source_agent}, {"error", rel.status().ToString()});
  }
  return r;
}

}  // namespace kvmesh::placement
