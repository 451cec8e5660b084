#include "router/auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace kvmesh::router {
namespace {

TEST(AuthTest, ParsesLineFormatWithComments) {
  auto e = ParseApiKeys("# keys\nsk-a  team-a\n\n  sk-b\tteam-b   # second\nsk-c team-a\n");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[0].key, "sk-a");
  EXPECT_EQ((*e)[0].tenant, "team-a");
  EXPECT_EQ((*e)[1].key, "sk-b");
  EXPECT_EQ((*e)[1].tenant, "team-b");
  EXPECT_EQ((*e)[2].tenant, "team-a");
}

TEST(AuthTest, ParsesYamlMap) {
  auto e = ParseApiKeys("sk-a: team-a\n\"sk-b\": team-b\n");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[1].key, "sk-b");
  EXPECT_EQ((*e)[1].tenant, "team-b");
}

TEST(AuthTest, RejectsMalformedFiles) {
  auto three = ParseApiKeys("sk-a team-a\nsk-b team b\n");
  ASSERT_FALSE(three.ok());
  EXPECT_NE(three.status().message().find("line 2"), std::string::npos) << three.status().message();
  EXPECT_FALSE(ParseApiKeys("sk-a\n").ok());
  EXPECT_FALSE(ParseApiKeys("# nothing\n").ok());
  auto dup = ParseApiKeys("sk-a t1\nsk-a t2\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("duplicate"), std::string::npos);
  EXPECT_FALSE(ParseApiKeys("sk-a: [x, y]\n").ok());
}

TEST(AuthTest, BearerKeysMapToTenants) {
  Auth a = Auth::FromEntries({{"sk-a", "team-a"}, {"sk-b", "team-b"}, {"sk-c", "team-a"}}, "", "secret");
  EXPECT_TRUE(a.enabled());
  auto ta = a.Authenticate("Bearer sk-a");
  ASSERT_TRUE(ta.ok());
  EXPECT_EQ((*ta)->name, "team-a");
  auto tc = a.Authenticate("bearer  sk-c ");
  ASSERT_TRUE(tc.ok());
  EXPECT_EQ((*tc)->name, "team-a");
  EXPECT_EQ((*tc)->salt, (*ta)->salt);  // one tenant, one salt
  auto tb = a.Authenticate("Bearer sk-b");
  ASSERT_TRUE(tb.ok());
  EXPECT_NE((*tb)->salt, (*ta)->salt);
  for (const char* bad : {"", "Bearer", "Bearer ", "Basic sk-a", "Bearer sk-a2", "Bearer sk-", "sk-a"}) {
    auto r = a.Authenticate(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << bad;
  }
}

TEST(AuthTest, SaltIsHmacOfTenantAndSecret) {
  // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
  EXPECT_EQ(TenantSalt("Jefe", "what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c7");
  EXPECT_EQ(TenantSalt("s", "t").size(), 32u);
  EXPECT_NE(TenantSalt("s1", "t"), TenantSalt("s2", "t"));
  Auth a = Auth::FromEntries({{"k", "t"}}, "", "s");
  EXPECT_EQ((*a.Authenticate("Bearer k"))->salt, TenantSalt("s", "t"));
  // An empty secret is random per Auth.
  Auth r1 = Auth::FromEntries({{"k", "t"}}, "", "");
  Auth r2 = Auth::FromEntries({{"k", "t"}}, "", "");
  EXPECT_NE((*r1.Authenticate("Bearer k"))->salt, (*r2.Authenticate("Bearer k"))->salt);
}

TEST(AuthTest, NoKeysMeansOneAnonymousTenant) {
  Auth a = Auth::FromEntries({}, "", "s");
  EXPECT_FALSE(a.enabled());
  auto t = a.Authenticate("");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->name, "anonymous");
  EXPECT_EQ((*t)->salt, TenantSalt("s", "anonymous"));
  EXPECT_TRUE(a.Authenticate("Bearer whatever").ok());
  EXPECT_TRUE(a.AuthorizeAdmin("").ok());
}

TEST(AuthTest, AdminKey) {
  Auth with = Auth::FromEntries({{"sk-a", "team-a"}}, "adm", "s");
  EXPECT_TRUE(with.AuthorizeAdmin("Bearer adm").ok());
  EXPECT_EQ(with.AuthorizeAdmin("Bearer sk-a").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(with.AuthorizeAdmin("").code(), StatusCode::kUnauthenticated);
  EXPECT_FALSE(with.Authenticate("Bearer adm").ok());  // the admin key is not an API key
  Auth without = Auth::FromEntries({{"sk-a", "team-a"}}, "", "s");
  EXPECT_TRUE(without.AuthorizeAdmin("Bearer sk-a").ok());
  EXPECT_EQ(without.AuthorizeAdmin("Bearer nope").code(), StatusCode::kUnauthenticated);
}

TEST(AuthTest, CreateReadsTheFileAndNamesItInErrors) {
  const auto dir = std::filesystem::temp_directory_path() / ("kvmesh-auth-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "keys").string();
  std::ofstream(good) << "sk-1 t1\n";
  RouterAuthConfig c;
  c.api_keys_file = good;
  auto a = Auth::Create(c);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->num_keys(), 1u);
  const std::string bad = (dir / "bad").string();
  std::ofstream(bad) << "sk-1\n";
  c.api_keys_file = bad;
  auto b = Auth::Create(c);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find(bad), std::string::npos);
  c.api_keys_file = (dir / "missing").string();
  EXPECT_FALSE(Auth::Create(c).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvmesh::router
