#include "agent/transfer/transfer_handle.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::transfer {
namespace {

using nlohmann::json;

KvLayoutInfo Layout() {
  return KvLayoutInfo{16, 2, 4, 64, "float32", 16 * 2 * 2 * 4 * 64 * 4};
}

RegionDescriptor Region() {
  RegionDescriptor r;
  r.transport = "ucx";
  r.worker_address = std::string("\x00\x01\xff\xfe worker", 11);
  r.rkey = std::string("\x10\x00\x7f", 3);
  r.base = 0x7f0000001000ull;
  r.block_bytes = Layout().block_bytes;
  r.num_blocks = 128;
  return r;
}

TransferHandle Handle() {
  TransferHandle h;
  h.peer_url = "http://127.0.0.1:8101";
  h.agent_id = "a1b2c3";
  h.lease_id = 42;
  h.lease_expiry_unix_ms = 1767225600000;
  h.num_tokens = 33;
  h.first_token = 17;
  h.block_size = 16;
  h.block_ids = {7, 3, 4000000000u};
  return h;
}

TEST(Base64Test, RoundTripsEveryLengthAndByte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  for (size_t n = 0; n <= all.size(); n += (n < 8 ? 1 : 37)) {
    std::string in = all.substr(0, n);
    auto out = Base64Decode(Base64Encode(in));
    ASSERT_TRUE(out.ok()) << n;
    EXPECT_EQ(*out, in);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(*Base64Decode("Zm9vYg=="), "foob");
}

TEST(Base64Test, RejectsMalformedText) {
  for (const char* bad : {"Zm9", "Zm9v!A==", "Z===", "=Zm9", "Zm=v", "Zh==", "Zm9=Zm9v", "Zm 9"}) {
    auto r = Base64Decode(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(LayoutTest, RoundTripAndMismatchNamesTheField) {
  auto back = KvLayoutInfoFromJson(KvLayoutInfoToJson(Layout()));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, Layout());
  EXPECT_TRUE(CheckLayoutsMatch(Layout(), Layout()).ok());
  KvLayoutInfo peer = Layout();
  peer.num_kv_heads = 8;
  Status s = CheckLayoutsMatch(Layout(), peer);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "KV layout mismatch: num_kv_heads local 4 vs peer 8");
  peer = Layout();
  peer.dtype = "bfloat16";
  EXPECT_EQ(CheckLayoutsMatch(Layout(), peer).message(),
            "KV layout mismatch: dtype local float32 vs peer bfloat16");
  peer = Layout();
  peer.block_bytes += 1;
  EXPECT_NE(CheckLayoutsMatch(Layout(), peer).message().find("block_bytes"), std::string::npos);
}

TEST(TransferInfoTest, RoundTripsAndEncodesBytesAsBase64) {
  TransferInfo info{"agent-7", Layout(), Region()};
  json j = TransferInfoToJson(info);
  EXPECT_EQ(j["region"]["rkey"], Base64Encode(Region().rkey));
  auto back = TransferInfoFromJson(json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->agent_id, "agent-7");
  EXPECT_EQ(back->layout, Layout());
  EXPECT_EQ(back->region, Region());
}

TEST(TransferHandleTest, RoundTripsAndIgnoresExtraKeys) {
  json j = TransferHandleToJson(Handle());
  j["do_remote_prefill"] = true;
  auto back = TransferHandleFromJson(json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->peer_url, Handle().peer_url);
  EXPECT_EQ(back->agent_id, Handle().agent_id);
  EXPECT_EQ(back->lease_id, 42u);
  EXPECT_EQ(back->lease_expiry_unix_ms, Handle().lease_expiry_unix_ms);
  EXPECT_EQ(back->num_tokens, 33);
  EXPECT_EQ(back->first_token, 17);
  EXPECT_EQ(back->block_size, 16);
  EXPECT_EQ(back->block_ids, Handle().block_ids);
}

struct Mutation {
  const char* field;  // expected in the error message
  std::function<void(json&)> apply;
};

void ExpectRejected(const json& j, const std::function<StatusOr<int>(const json&)>& parse,
                    const Mutation& m) {
  json bad = j;
  m.apply(bad);
  StatusOr<int> r = parse(bad);
  ASSERT_FALSE(r.ok()) << "accepted with bad " << m.field << ": " << bad.dump();
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(m.field), std::string::npos)
      << "error does not name " << m.field << ": " << r.status().ToString();
}

TEST(TransferHandleTest, RejectsEveryMalformedField) {
  json good = TransferHandleToJson(Handle());
  auto parse = [](const json& j) -> StatusOr<int> {
    auto r = TransferHandleFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  ASSERT_TRUE(parse(good).ok());
  std::vector<Mutation> cases = {
      {"peer_url", [](json& j) { j.erase("peer_url"); }},
      {"peer_url", [](json& j) { j["peer_url"] = 5; }},
      {"peer_url", [](json& j) { j["peer_url"] = ""; }},
      {"peer_url", [](json& j) { j["peer_url"] = "ftp://x"; }},
      {"peer_url", [](json& j) { j["peer_url"] = "http://" + std::string(5000, 'a'); }},
      {"agent_id", [](json& j) { j["agent_id"] = nullptr; }},
      {"agent_id", [](json& j) { j["agent_id"] = ""; }},
      {"lease_id", [](json& j) { j["lease_id"] = "42"; }},
      {"lease_id", [](json& j) { j["lease_id"] = 0; }},
      {"lease_id", [](json& j) { j["lease_id"] = -1; }},
      {"lease_id", [](json& j) { j["lease_id"] = 1.5; }},
      {"lease_expiry_unix_ms", [](json& j) { j["lease_expiry_unix_ms"] = -5; }},
      {"lease_expiry_unix_ms", [](json& j) { j["lease_expiry_unix_ms"] = true; }},
      {"num_tokens", [](json& j) { j["num_tokens"] = 0; }},
      {"num_tokens", [](json& j) { j["num_tokens"] = 1ll << 40; }},
      {"first_token", [](json& j) { j["first_token"] = -1; }},
      {"first_token", [](json& j) { j.erase("first_token"); }},
      {"block_size", [](json& j) { j["block_size"] = 0; }},
      {"block_ids", [](json& j) { j["block_ids"] = "1,2,3"; }},
      {"block_ids", [](json& j) { j["block_ids"].push_back(1); }},
      {"block_ids", [](json& j) { j["block_ids"].erase(0); }},
      {"block_ids[1]", [](json& j) { j["block_ids"][1] = -3; }},
      {"block_ids[2]", [](json& j) { j["block_ids"][2] = 1ull << 32; }},
      {"block_ids[0]", [](json& j) { j["block_ids"][0] = "7"; }},
      {"block_ids", [](json& j) {
         j["num_tokens"] = 2000000000;
         j["block_size"] = 1;
       }},
  };
  for (const Mutation& m : cases) ExpectRejected(good, parse, m);
  EXPECT_FALSE(parse(json::array()).ok());
  EXPECT_FALSE(parse(json("string")).ok());
}

TEST(TransferInfoTest, RejectsEveryMalformedField) {
  json good = TransferInfoToJson(TransferInfo{"agent-7", Layout(), Region()});
  auto parse = [](const json& j) -> StatusOr<int> {
    auto r = TransferInfoFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  ASSERT_TRUE(parse(good).ok());
  std::vector<Mutation> cases = {
      {"agent_id", [](json& j) { j.erase("agent_id"); }},
      {"layout", [](json& j) { j["layout"] = 3; }},
      {"block_size", [](json& j) { j["layout"]["block_size"] = 0; }},
      {"num_layers", [](json& j) { j["layout"]["num_layers"] = -2; }},
      {"num_kv_heads", [](json& j) { j["layout"]["num_kv_heads"] = "4"; }},
      {"head_dim", [](json& j) { j["layout"]["head_dim"] = 1ll << 33; }},
      {"dtype", [](json& j) { j["layout"]["dtype"] = ""; }},
      {"block_bytes", [](json& j) { j["layout"]["block_bytes"] = 0; }},
      {"region", [](json& j) { j.erase("region"); }},
      {"transport", [](json& j) { j["region"]["transport"] = ""; }},
      {"worker_address", [](json& j) { j["region"]["worker_address"] = "not base64!"; }},
      {"worker_address", [](json& j) { j["region"]["worker_address"] = ""; }},
      {"worker_address",
       [](json& j) { j["region"]["worker_address"] = Base64Encode(std::string(70000, 'a')); }},
      {"rkey", [](json& j) { j["region"]["rkey"] = "abc"; }},
      {"rkey", [](json& j) { j["region"]["rkey"] = Base64Encode(std::string(70000, 'a')); }},
      {"base", [](json& j) { j["region"]["base"] = -1; }},
      {"block_bytes", [](json& j) { j["region"]["block_bytes"] = 0; }},
      {"num_blocks", [](json& j) { j["region"]["num_blocks"] = 0; }},
      {"num_blocks", [](json& j) { j["region"]["num_blocks"] = 1ll << 32; }},
      {"num_blocks", [](json& j) {  // base + block_bytes * num_blocks past 2^64
         j["region"]["base"] = ~0ull - 4096;
       }},
      {"region.block_bytes", [](json& j) {
         j["region"]["block_bytes"] = 1024;
       }},
  };
  for (const Mutation& m : cases) ExpectRejected(good, parse, m);
}

TEST(RegionDescriptorTest, EmptyRkeyIsAllowedForLoopback) {
  RegionDescriptor r = Region();
  r.transport = "loopback";
  r.rkey.clear();
  auto back = RegionDescriptorFromJson(RegionDescriptorToJson(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
}

}  // namespace
}  // namespace kvmesh::transfer
