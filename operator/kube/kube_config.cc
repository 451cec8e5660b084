// Kubeconfig, in-cluster configuration and their resolution order (see kube_client.h).
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "operator/kube/kube_client.h"

namespace kvmesh::kube {
namespace {

namespace fs = std::filesystem;

StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(what + ": cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

// Standard base64 (RFC 4648), whitespace ignored, padding optional.
StatusOr<std::string> Base64Decode(const std::string& in, const std::string& field) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    int v = value(c);
    if (v < 0) return InvalidArgumentError(field + ": not base64 (character '" + std::string(1, c) + "')");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string Resolve(const fs::path& base_dir, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  if (path.is_absolute()) return p;
  return (base_dir / path).lexically_normal().string();
}

// The entry named `name` in a kubeconfig list (`clusters`, `users`, `contexts`), its `key` map.
StatusOr<YAML::Node> FindNamed(const YAML::Node& root, const std::string& list,
                               const std::string& key, const std::string& name) {
  YAML::Node seq = root[list];
  if (seq && seq.IsSequence()) {
    for (const auto& entry : seq) {
      if (entry["name"] && entry["name"].as<std::string>() == name) {
        YAML::Node inner = entry[key];
        if (!inner || !inner.IsMap()) {
          return InvalidArgumentError("kubeconfig: " + list + " entry '" + name + "' has no " + key);
        }
        return inner;
      }
    }
  }
  return InvalidArgumentError("kubeconfig: no " + key + " named '" + name + "' in " + list);
}

std::string Str(const YAML::Node& n, const char* key) {
  YAML::Node v = n[key];
  return v && v.IsScalar() ? v.as<std::string>() : std::string();
}

StatusOr<KubeConfig> ParseKubeconfig(const std::string& text, const fs::path& base_dir,
                                     const std::string& context_override) {
  KubeConfig config;
  YAML::Node root = YAML::Load(text);
  if (!root || !root.IsMap()) return InvalidArgumentError("kubeconfig: not a YAML map");
  std::string context_name = context_override.empty() ? Str(root, "current-context") : context_override;
  if (context_name.empty()) {
    return InvalidArgumentError("kubeconfig: no current-context and no context given");
  }
  KVMESH_ASSIGN_OR_RETURN(YAML::Node context, FindNamed(root, "contexts", "context", context_name));
  std::string cluster_name = Str(context, "cluster");
  std::string user_name = Str(context, "user");
  if (cluster_name.empty()) {
    return InvalidArgumentError("kubeconfig: context '" + context_name + "' names no cluster");
  }
  config.namespace_ = Str(context, "namespace");

  KVMESH_ASSIGN_OR_RETURN(YAML::Node cluster, FindNamed(root, "clusters", "cluster", cluster_name));
  config.server = Str(cluster, "server");
  if (config.server.empty()) {
    return InvalidArgumentError("kubeconfig: cluster '" + cluster_name + "' has no server");
  }
  while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
  config.insecure_skip_tls_verify = cluster["insecure-skip-tls-verify"] &&
                                    cluster["insecure-skip-tls-verify"].as<bool>();
  if (std::string data = Str(cluster, "certificate-authority-data"); !data.empty()) {
    KVMESH_ASSIGN_OR_RETURN(config.ca_data,
                            Base64Decode(data, "cluster '" + cluster_name + "' certificate-authority-data"));
  } else if (std::string file = Str(cluster, "certificate-authority"); !file.empty()) {
    config.ca_file = Resolve(base_dir, file);
    if (!fs::exists(config.ca_file)) {
      return InvalidArgumentError("kubeconfig: certificate-authority " + config.ca_file +
                                  " does not exist");
    }
  }

  if (!user_name.empty()) {
    KVMESH_ASSIGN_OR_RETURN(YAML::Node user, FindNamed(root, "users", "user", user_name));
    const std::string where = "user '" + user_name + "' ";
    if (std::string data = Str(user, "client-certificate-data"); !data.empty()) {
      KVMESH_ASSIGN_OR_RETURN(config.client_cert_data, Base64Decode(data, where + "client-certificate-data"));
    } else if (std::string file = Str(user, "client-certificate"); !file.empty()) {
      KVMESH_ASSIGN_OR_RETURN(config.client_cert_data,
                              ReadFile(Resolve(base_dir, file), "kubeconfig " + where + "client-certificate"));
    }
    if (std::string data = Str(user, "client-key-data"); !data.empty()) {
      KVMESH_ASSIGN_OR_RETURN(config.client_key_data, Base64Decode(data, where + "client-key-data"));
    } else if (std::string file = Str(user, "client-key"); !file.empty()) {
      KVMESH_ASSIGN_OR_RETURN(config.client_key_data,
                              ReadFile(Resolve(base_dir, file), "kubeconfig " + where + "client-key"));
    }
    if (config.client_cert_data.empty() != config.client_key_data.empty()) {
      return InvalidArgumentError("kubeconfig: " + where + "needs both a client certificate and a key");
    }
    if (std::string token = Str(user, "token"); !token.empty()) {
      config.token = Trim(token);
    } else if (std::string file = Str(user, "tokenFile"); !file.empty()) {
      KVMESH_ASSIGN_OR_RETURN(std::string token,
                              ReadFile(Resolve(base_dir, file), "kubeconfig " + where + "tokenFile"));
      config.token = Trim(token);
    }
    if (config.token.empty() && config.client_cert_data.empty() &&
        (user["exec"] || user["auth-provider"])) {
      return UnimplementedError("kubeconfig: " + where +
                                "uses exec/auth-provider credentials, which kvmesh does not run; "
                                "use a token or a client certificate");
    }
  }
  return config;
}

}  // namespace

StatusOr<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  KVMESH_ASSIGN_OR_RETURN(std::string text, ReadFile(path, "kubeconfig"));
  try {
    auto config = ParseKubeconfig(text, fs::path(path).parent_path(), context);
    if (!config.ok()) return config.status().WithContext(path);
    return config;
  } catch (const std::exception& e) {
    return InvalidArgumentError("kubeconfig " + path + ": " + e.what());
  }
}

StatusOr<KubeConfig> LoadKubeconfigFromText(const std::string& text, const std::string& context) {
  try {
    return ParseKubeconfig(text, fs::current_path(), context);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("kubeconfig text: ") + e.what());
  }
}

StatusOr<KubeConfig> InClusterConfig(const std::string& sa_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0') {
    return FailedPreconditionError("in-cluster config: KUBERNETES_SERVICE_HOST is not set");
  }
  KubeConfig config;
  std::string h = host;
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";  // IPv6
  config.server = "https://" + h + ":" + ((port != nullptr && *port != '\0') ? port : "443");
  fs::path dir(sa_dir);
  KVMESH_ASSIGN_OR_RETURN(std::string token,
                          ReadFile((dir / "token").string(), "in-cluster service account token"));
  config.token = Trim(token);
  if (config.token.empty()) {
    return InvalidArgumentError("in-cluster config: " + (dir / "token").string() + " is empty");
  }
  if (fs::exists(dir / "ca.crt")) config.ca_file = (dir / "ca.crt").string();
  if (auto ns = ReadFile((dir / "namespace").string(), "namespace"); ns.ok()) {
    config.namespace_ = Trim(*ns);
  }
  return config;
}

StatusOr<KubeConfig> ResolveKubeConfig(const std::string& kubeconfig_flag, const std::string& context) {
  if (!kubeconfig_flag.empty()) return LoadKubeconfig(kubeconfig_flag, context);
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    // A list of files: the first one that exists (kubeconfig merging is not supported).
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':')) {
      if (!item.empty() && fs::exists(item)) return LoadKubeconfig(item, context);
    }
    return NotFoundError(std::string("KUBECONFIG=") + env + ": no such file");
  }
  if (const char* host = std::getenv("KUBERNETES_SERVICE_HOST"); host != nullptr && *host != '\0') {
    return InClusterConfig();
  }
  const char* home = std::getenv("HOME");
  if (home != nullptr) {
    std::string path = std::string(home) + "/.kube/config";
    if (fs::exists(path)) return LoadKubeconfig(path, context);
  }
  return NotFoundError(
      "no Kubernetes configuration: no --kubeconfig, no $KUBECONFIG, not in a cluster "
      "(KUBERNETES_SERVICE_HOST unset) and no ~/.kube/config");
}

}  // namespace kvmesh::kube
