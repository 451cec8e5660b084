// Helpers of the test Kubernetes API server (test-only code): the API error type (a Kubernetes
// `Status` object), YAML -> JSON, label/field selectors, the JSONPath subset of printer columns,
// query-string parsing and RFC 3339 time.
//
// Invariants: nothing here throws; parse errors come back as ApiError (400 BadRequest) naming the
// offending text.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/label_selector.h"

namespace kvmesh::testapi {

using Json = nlohmann::json;

// A failed API call, rendered as a meta/v1 Status object.
struct ApiError {
  int code = 500;
  std::string reason;   // NotFound, AlreadyExists, Conflict, Invalid, Gone, Expired, BadRequest...
  std::string message;
  Json details = Json::object();  // {"name","group","kind"} where known
  int retry_after_seconds = 0;    // > 0 adds Retry-After (429)

  Json ToStatus() const;
};

ApiError NotFoundError(std::string_view group, std::string_view resource, std::string_view name);
ApiError AlreadyExistsError(std::string_view group, std::string_view resource, std::string_view name);
ApiError ConflictError(std::string_view group, std::string_view resource, std::string_view name,
                       std::string_view why);
ApiError InvalidError(std::string_view group, std::string_view kind, std::string_view name,
                      const std::vector<std::string>& causes);
ApiError BadRequestError(std::string message);
ApiError GoneError(std::string message);

// A value or an ApiError.
template <class T>
class ApiResult {
 public:
  ApiResult(T value) : v_(std::move(value)) {}  // NOLINT(runtime/explicit)
  ApiResult(ApiError error) : v_(std::move(error)) {}  // NOLINT(runtime/explicit)
  bool ok() const { return v_.index() == 0; }
  const T& value() const { return std::get<0>(v_); }
  T& value() { return std::get<0>(v_); }
  const ApiError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, ApiError> v_;
};

// YAML (one document) -> JSON with YAML 1.2 core-schema scalars (quoted scalars stay strings).
ApiResult<Json> YamlToJson(std::string_view yaml);
// Body of a request: JSON, or YAML when `content_type` says yaml.
ApiResult<Json> ParseBody(std::string_view body, std::string_view content_type);

// labelSelector (common/label_selector.h, the same parser the operator uses): a bad selector is a
// 400 BadRequest "unable to parse requirement: ...", as the real API server answers.
using LabelSelector = ::kvmesh::LabelSelector;
ApiResult<LabelSelector> ParseLabelSelector(std::string_view text);
// From a meta/v1 LabelSelector object ({matchLabels, matchExpressions}).
ApiResult<LabelSelector> LabelSelectorFromObject(const Json& selector);

// fieldSelector: path=value, path==value, path!=value; comma-separated. Paths are dotted into the
// object (metadata.name, involvedObject.uid, status.phase, ...).
class FieldSelector {
 public:
  static ApiResult<FieldSelector> Parse(std::string_view text);
  bool Matches(const Json& object) const;

 private:
  struct Req {
    std::string path;
    bool negate;
    std::string value;
  };
  std::vector<Req> reqs_;
};

// JSONPath subset of additionalPrinterColumns: .a.b, .a[0].b, .a[?(@.k=="v")].b. Returns nullopt
// when the path does not resolve.
std::optional<Json> EvalJsonPath(const Json& object, std::string_view path);

// a=b&c=d with %XX and '+' decoded. A repeated key keeps its last value.
std::map<std::string, std::string> ParseQuery(std::string_view query);
std::string UrlDecode(std::string_view s);

std::string FormatRfc3339(std::chrono::system_clock::time_point t);
std::optional<std::chrono::system_clock::time_point> ParseRfc3339(std::string_view s);
// "5s", "3m", "2h", "4d" as kubectl prints ages.
std::string HumanAge(std::chrono::system_clock::duration d);

// Returns true when `name` is a DNS-1123 subdomain (lower-case alphanumerics, '-', '.', <= 253).
bool IsDnsSubdomain(std::string_view name);

}  // namespace kvmesh::testapi
