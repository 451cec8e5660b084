// Auth: the router's API keys and tenants.
//
// api_keys_file holds one "KEY TENANT" pair per line ('#' starts a comment) or a YAML map
// {KEY: TENANT}. A request authenticates with "Authorization: Bearer KEY"; the key is compared in
// constant time (SHA-256 digests compared with CRYPTO_memcmp against every configured key, no
// early exit). Each tenant gets a cache salt derived server-side:
// hex(first 16 bytes of HMAC-SHA256(salt_secret, tenant)); with an empty salt_secret a random
// 32-byte secret is drawn per process. Clients never choose their salt, so two tenants never share
// KV blocks, and a tenant's own requests do.
//
// With no keys file the router has one anonymous tenant ("anonymous") and every request is
// accepted; RouterConfig::Validate() then allows only loopback hosts. Admin endpoints
// (/admin/*, /debug/*) need admin_key when one is set, else any valid key.
//
// Immutable after Create(): all methods are thread-safe.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "router/router_config.h"

namespace kvmesh::router {

struct Tenant {
  std::string name;
  std::string salt;  // 32 hex chars
};

struct ApiKeyEntry {
  std::string key;
  std::string tenant;
};

// Parses an api_keys_file's text (either format). InvalidArgument naming the line for a malformed
// line, an empty key or tenant, or a duplicate key; an empty list is InvalidArgument too.
StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(std::string_view text);

// hex(first 16 bytes of HMAC-SHA256(secret, tenant)).
std::string TenantSalt(std::string_view secret, std::string_view tenant);

class Auth {
 public:
  // Reads api_keys_file (if set). Errors name the file and line.
  static StatusOr<Auth> Create(const RouterAuthConfig& config);
  // From parsed entries (tests, and Create()).
  static Auth FromEntries(std::vector<ApiKeyEntry> entries, std::string admin_key,
                          std::string salt_secret);

  bool enabled() const { return !keys_.empty(); }
  size_t num_keys() const { return keys_.size(); }

  // The tenant of `authorization` (the Authorization header's value). Unauthenticated (401) when
  // keys are configured and the header is missing, not "Bearer ...", or names no known key.
  StatusOr<const Tenant*> Authenticate(std::string_view authorization) const;
  // For /admin/* and /debug/*: the admin key when set, else any valid key (or anonymous when
  // auth is off). Unauthenticated otherwise.
  Status AuthorizeAdmin(std::string_view authorization) const;

 private:
  struct Key {
    std::array<unsigned char, 32> digest;
    size_t tenant;  // index into tenants_
  };
  Auth() = default;
  static std::array<unsigned char, 32> Digest(std::string_view key);

  std::vector<Tenant> tenants_;  // tenants_[0] is "anonymous" when auth is off
  std::vector<Key> keys_;
  bool has_admin_key_ = false;
  std::array<unsigned char, 32> admin_digest_{};
};

}  // namespace kvmesh::router
