#include "router/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <utility>

namespace kvmesh::router {

namespace {

constexpr char kAnonymous[] = "anonymous";

std::string Trim(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 15]);
  }
  return out;
}

Status CheckEntries(const std::vector<ApiKeyEntry>& entries) {
  if (entries.empty()) return InvalidArgumentError("api keys file has no keys");
  std::set<std::string> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!seen.insert(entries[i].key).second) {
      return InvalidArgumentError("api keys file: key #" + std::to_string(i + 1) + " (tenant '" +
                                  entries[i].tenant + "') is a duplicate");
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<ApiKeyEntry>> ParseLines(std::string_view text) {
  std::vector<ApiKeyEntry> out;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    std::string t = Trim(line);
    if (t.empty()) continue;
    std::istringstream in(t);
    std::string key, tenant, extra;
    in >> key >> tenant;
    if (key.empty() || tenant.empty() || (in >> extra)) {
      return InvalidArgumentError("api keys file line " + std::to_string(line_no) +
                                  ": expected \"KEY TENANT\"");
    }
    out.push_back({key, tenant});
  }
  return out;
}

}  // namespace

StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(std::string_view text) {
  std::vector<ApiKeyEntry> out;
  bool is_map = false;
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (root.IsMap()) {
      is_map = true;
      for (const auto& kv : root) {
        if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
          return InvalidArgumentError("api keys file line " + std::to_string(kv.first.Mark().line + 1) +
                                      ": expected KEY: TENANT");
        }
        std::string key = Trim(kv.first.Scalar());
        std::string tenant = Trim(kv.second.Scalar());
        if (key.empty() || tenant.empty()) {
          return InvalidArgumentError("api keys file line " + std::to_string(kv.first.Mark().line + 1) +
                                      ": empty key or tenant");
        }
        out.push_back({key, tenant});
      }
    }
  } catch (const std::exception&) {
    is_map = false;  // not YAML: the line format decides
  }
  if (!is_map) {
    KVMESH_ASSIGN_OR_RETURN(out, ParseLines(text));
  }
  KVMESH_RETURN_IF_ERROR(CheckEntries(out));
  return out;
}

std::string TenantSalt(std::string_view secret, std::string_view tenant) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(tenant.data()), tenant.size(), mac, &len);
  return Hex(mac, 16);
}

std::array<unsigned char, 32> Auth::Digest(std::string_view key) {
  std::array<unsigned char, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), d.data());
  return d;
}

Auth Auth::FromEntries(std::vector<ApiKeyEntry> entries, std::string admin_key, std::string salt_secret) {
  if (salt_secret.empty()) {
    unsigned char buf[32];
    if (RAND_bytes(buf, sizeof(buf)) != 1) {  // OpenSSL's CSPRNG unavailable: the OS's
      std::random_device rd;
      for (unsigned char& b : buf) b = static_cast<unsigned char>(rd());
    }
    salt_secret.assign(reinterpret_cast<const char*>(buf), sizeof(buf));
  }
  Auth a;
  if (entries.empty()) {
    a.tenants_.push_back({kAnonymous, TenantSalt(salt_secret, kAnonymous)});
  }
  for (const ApiKeyEntry& e : entries) {
    size_t idx = a.tenants_.size();
    for (size_t i = 0; i < a.tenants_.size(); ++i) {
      if (a.tenants_[i].name == e.tenant) idx = i;
    }
    if (idx == a.tenants_.size()) a.tenants_.push_back({e.tenant, TenantSalt(salt_secret, e.tenant)});
    a.keys_.push_back({Digest(e.key), idx});
  }
  if (!admin_key.empty()) {
    a.has_admin_key_ = true;
    a.admin_digest_ = Digest(admin_key);
  }
  return a;
}

StatusOr<Auth> Auth::Create(const RouterAuthConfig& config) {
  std::vector<ApiKeyEntry> entries;
  if (!config.api_keys_file.empty()) {
    std::ifstream in(config.api_keys_file);
    if (!in) return InvalidArgumentError("auth.api_keys_file: cannot read '" + config.api_keys_file + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    auto parsed = ParseApiKeys(ss.str());
    if (!parsed.ok()) {
      return InvalidArgumentError("auth.api_keys_file '" + config.api_keys_file + "': " + parsed.status().message());
    }
    entries = std::move(*parsed);
  }
  return FromEntries(std::move(entries), config.admin_key, config.salt_secret);
}

namespace {

// The token of "Bearer TOKEN" (scheme case-insensitive), or "" if the header is not that.
std::string_view BearerToken(std::string_view h) {
  constexpr std::string_view kScheme = "bearer ";
  if (h.size() <= kScheme.size()) return {};
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(h[i])) != kScheme[i]) return {};
  }
  h.remove_prefix(kScheme.size());
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.remove_suffix(1);
  return h;
}

}  // namespace

StatusOr<const Tenant*> Auth::Authenticate(std::string_view authorization) const {
  if (keys_.empty()) return &tenants_[0];
  std::string_view token = BearerToken(authorization);
  if (token.empty()) {
    return UnauthenticatedError(authorization.empty()
                                    ? "missing API key: send \"Authorization: Bearer <key>\""
                                    : "malformed Authorization header: expected \"Bearer <key>\"");
  }
  const auto d = Digest(token);
  size_t found = tenants_.size();
  // Every key is compared, matched or not, so timing does not depend on which key matched.
  for (const Key& k : keys_) {
    const bool eq = CRYPTO_memcmp(d.data(), k.digest.data(), d.size()) == 0;
    found = eq ? k.tenant : found;
  }
  if (found == tenants_.size()) return UnauthenticatedError("invalid API key");
  return &tenants_[found];
}

Status Auth::AuthorizeAdmin(std::string_view authorization) const {
  if (!has_admin_key_) {
    auto t = Authenticate(authorization);
    return t.ok() ? Status::Ok() : t.status();
  }
  std::string_view token = BearerToken(authorization);
  if (token.empty()) return UnauthenticatedError("admin endpoints need \"Authorization: Bearer <admin key>\"");
  const auto d = Digest(token);
  if (CRYPTO_memcmp(d.data(), admin_digest_.data(), d.size()) != 0) {
    return UnauthenticatedError("invalid admin key");
  }
  return Status::Ok();
}

}  // namespace kvmesh::router
