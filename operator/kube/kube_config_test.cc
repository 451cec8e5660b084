#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "operator/kube/kube_client.h"

namespace kvmesh::kube {
namespace {

namespace fs = std::filesystem;

std::string TestData(const std::string& name) {
  const char* src = std::getenv("KVMESH_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/operator/kube/testdata/" + name;
}

// Sets or unsets an environment variable for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::string old_;
  bool had_ = false;
};

TEST(KubeConfigTest, CurrentContextWithTokenAndCaData) {
  auto c = LoadKubeconfig(TestData("kubeconfig.yaml"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server, "https://127.0.0.1:6443");  // trailing slash dropped
  EXPECT_EQ(c->token, "abc.def.ghi");
  EXPECT_EQ(c->ca_data, "-----BEGIN CERTIFICATE-----\nFAKECA\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(c->namespace_, "kvmesh-system");
  EXPECT_FALSE(c->insecure_skip_tls_verify);
  EXPECT_TRUE(c->client_cert_data.empty());
}

TEST(KubeConfigTest, FilesRelativeToTheKubeconfigFolder) {
  auto c = LoadKubeconfig(TestData("kubeconfig.yaml"), "files");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server, "https://kube.example:443");
  EXPECT_EQ(c->token, "file-token");
  EXPECT_EQ(fs::path(c->ca_file), fs::path(TestData("certs/ca.crt")).lexically_normal());
  EXPECT_NE(c->client_cert_data.find("CLIENT"), std::string::npos);
  EXPECT_NE(c->client_key_data.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(c->namespace_, "");
}

TEST(KubeConfigTest, ErrorsNameWhatIsMissing) {
  auto missing = LoadKubeconfig(TestData("kubeconfig.yaml"), "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);

  auto dangling = LoadKubeconfig(TestData("kubeconfig.yaml"), "dangling");
  ASSERT_FALSE(dangling.ok());
  EXPECT_NE(dangling.status().message().find("no-such-cluster"), std::string::npos);

  auto exec = LoadKubeconfig(TestData("kubeconfig.yaml"), "exec");
  ASSERT_FALSE(exec.ok());
  EXPECT_EQ(exec.status().code(), StatusCode::kUnimplemented);

  auto nofile = LoadKubeconfig(TestData("does-not-exist.yaml"));
  EXPECT_EQ(nofile.status().code(), StatusCode::kNotFound);
}

TEST(KubeConfigTest, BadYamlAndBadBase64AreInvalidArgument) {
  fs::path dir = fs::temp_directory_path() / ("kvmesh-kubeconfig-" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    std::ofstream(dir / "bad.yaml") << "clusters: [unclosed\n";
    std::ofstream(dir / "b64.yaml") << "current-context: x\n"
                                       "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                                       "clusters: [{name: c, cluster: {server: 'https://h', "
                                       "certificate-authority-data: 'not*base64'}}]\n"
                                       "users: [{name: u, user: {token: t}}]\n";
  }
  EXPECT_EQ(LoadKubeconfig((dir / "bad.yaml").string()).status().code(), StatusCode::kInvalidArgument);
  auto b64 = LoadKubeconfig((dir / "b64.yaml").string());
  EXPECT_EQ(b64.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(b64.status().message().find("certificate-authority-data"), std::string::npos);
  fs::remove_all(dir);
}

TEST(KubeConfigTest, InClusterReadsServiceAccountFiles) {
  fs::path dir = fs::temp_directory_path() / ("kvmesh-sa-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "token") << "sa-token\n";
  std::ofstream(dir / "ca.crt") << "PEM";
  std::ofstream(dir / "namespace") << "kvmesh-system";
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "10.0.0.1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "6443");
    auto c = InClusterConfig(dir.string());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->server, "https://10.0.0.1:6443");
    EXPECT_EQ(c->token, "sa-token");
    EXPECT_EQ(c->ca_file, (dir / "ca.crt").string());
    EXPECT_EQ(c->namespace_, "kvmesh-system");
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "fd00::1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", nullptr);
    auto c = InClusterConfig(dir.string());
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->server, "https://[fd00::1]:443");
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", nullptr);
    EXPECT_EQ(InClusterConfig(dir.string()).status().code(), StatusCode::kFailedPrecondition);
  }
  fs::remove_all(dir);
}

TEST(KubeConfigTest, ResolveOrderFlagThenEnvThenInClusterThenHome) {
  ScopedEnv host("KUBERNETES_SERVICE_HOST", nullptr);
  fs::path home = fs::temp_directory_path() / ("kvmesh-home-" + std::to_string(getpid()));
  fs::create_directories(home / ".kube");
  fs::copy_file(TestData("kubeconfig.yaml"), home / ".kube" / "config",
                fs::copy_options::overwrite_existing);
  ScopedEnv home_env("HOME", home.c_str());
  {
    ScopedEnv kc("KUBECONFIG", nullptr);
    auto c = ResolveKubeConfig("", "");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->server, "https://127.0.0.1:6443");  // ~/.kube/config
  }
  {
    std::string list = "/does/not/exist:" + TestData("kubeconfig.yaml");
    ScopedEnv kc("KUBECONFIG", list.c_str());
    auto c = ResolveKubeConfig("", "files");  // first existing file of $KUBECONFIG
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->server, "https://kube.example:443");
    // The flag wins over the environment.
    auto f = ResolveKubeConfig(TestData("kubeconfig.yaml"), "exec");
    EXPECT_EQ(f.status().code(), StatusCode::kUnimplemented);
  }
  fs::remove_all(home / ".kube");
  {
    ScopedEnv kc("KUBECONFIG", nullptr);
    auto none = ResolveKubeConfig("", "");
    EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  }
  fs::remove_all(home);
}

TEST(KubeConfigTest, ClientRejectsBadServerAndBadPem) {
  KubeConfig c;
  c.server = "ftp://x";
  EXPECT_EQ(CreateKubeClient(c).status().code(), StatusCode::kInvalidArgument);
  c.server = "https://127.0.0.1:1";
  c.ca_data = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n";
  auto bad = CreateKubeClient(c);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// A real certificate and key made by the openssl tool at test time are accepted as CA, client
// certificate and key data.
TEST(KubeConfigTest, ClientAcceptsRealPemMaterial) {
  fs::path dir = fs::temp_directory_path() / ("kvmesh-pem-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=kvmesh-test -keyout " +
                    (dir / "k.pem").string() + " -out " + (dir / "c.pem").string() + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl tool not available";
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  KubeConfig c;
  c.server = "https://127.0.0.1:1";
  c.ca_data = read(dir / "c.pem");
  c.client_cert_data = c.ca_data;
  c.client_key_data = read(dir / "k.pem");
  auto ok = CreateKubeClient(c);
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  c.client_key_data = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  EXPECT_EQ(CreateKubeClient(c).status().code(), StatusCode::kInvalidArgument);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvmesh::kube
