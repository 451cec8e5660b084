#include "agent/engine/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "agent/engine/engine_test_util.h"

namespace kvmesh::engine {
namespace {

namespace fs = std::filesystem;

using test_util::TempDir;

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file: 8-byte LE length, `header` verbatim, `data_size` zero bytes.
std::string MakeFile(const std::string& header, size_t data_size) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  out.append(data_size, '\0');
  return out;
}

Status ParseBytes(const std::string& bytes) {
  return ParseSafetensorsHeader(
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
             "test.safetensors")
      .status();
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  Status st = ParseBytes(bytes);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("test.safetensors"), std::string::npos) << st.ToString();
}

TEST(SafetensorsTest, RoundTripF32Bf16AndMetadata) {
  TempDir dir;
  SafetensorsWriter w;
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
  std::vector<float> b = {1.0f, 0.5f, -0.25f, 3.0f};
  ASSERT_TRUE(w.AddF32("a", {2, 3}, a).ok());
  ASSERT_TRUE(w.AddBf16("b", {4}, b).ok());
  ASSERT_TRUE(w.AddF32("empty", {0, 5}, {}).ok());
  w.SetMetadata("format", "pt");
  const std::string path = dir.path() + "/m.safetensors";
  ASSERT_TRUE(w.Write(path).ok());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()),
            1);  // no temp

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  const TensorView* va = (*f)->Find("a");
  ASSERT_NE(va, nullptr);
  EXPECT_EQ(va->dtype, SafetensorsDtype::kF32);
  EXPECT_EQ(va->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(6);
  ToFloat32(*va, got.data());
  EXPECT_EQ(got, a);
  const TensorView* vb = (*f)->Find("b");
  ASSERT_NE(vb, nullptr);
  EXPECT_EQ(vb->dtype, SafetensorsDtype::kBF16);
  std::vector<float> gb(4);
  ToFloat32(*vb, gb.data());
  EXPECT_EQ(gb, b);  // all exactly representable in bf16
  EXPECT_EQ((*f)->Find("empty")->numel(), 0);
  EXPECT_EQ((*f)->Find("missing"), nullptr);

  // The JSON header is padded with spaces to a multiple of 8, and output is deterministic.
  const std::string bytes = w.Serialize();
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string json_part = bytes.substr(8, n);
  const size_t last = json_part.find_last_not_of(' ');
  ASSERT_NE(last, std::string::npos);
  EXPECT_EQ(json_part[last], '}');
  EXPECT_LT(n - last - 1, 8u);
  EXPECT_EQ(bytes, w.Serialize());
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  SafetensorsWriter w;
  std::vector<float> v(4, 1.0f);
  EXPECT_EQ(w.AddF32("x", {3}, v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.AddF32("x", {-1, -4}, v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.AddF32("", {4}, v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.AddF32("__metadata__", {4}, v).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(w.AddF32("x", {4}, v).ok());
  EXPECT_EQ(w.AddBf16("x", {2, 2}, v).code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, Bf16Conversions) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd mantissa) and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above the halfway point rounds up.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // Largest float rounds to infinity in bf16, as in PyTorch.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(SafetensorsTest, Fp16Conversions) {
  EXPECT_EQ(Fp16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(Fp16ToFloat(0x7bff), 65504.0f);                      // largest normal
  EXPECT_EQ(Fp16ToFloat(0x0400), std::ldexp(1.0f, -14));         // smallest normal
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(Fp16ToFloat(0x03ff), 1023 * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(Fp16ToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(Fp16ToFloat(0x8000)));
  EXPECT_EQ(Fp16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fp16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(Fp16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(Fp16ToFloat(0x7c01)));
}

TEST(SafetensorsTest, ReadsF16Tensor) {
  TempDir dir;
  const std::vector<uint16_t> vals = {0x3c00, 0x0001, 0x7c00, 0xfe00};
  std::vector<uint8_t> raw;
  for (uint16_t v : vals) {
    raw.push_back(static_cast<uint8_t>(v & 0xff));
    raw.push_back(static_cast<uint8_t>(v >> 8));
  }
  SafetensorsWriter w;
  ASSERT_TRUE(w.AddRaw("h", SafetensorsDtype::kF16, {2, 2}, raw).ok());
  ASSERT_TRUE(w.Write(dir.path() + "/h.safetensors").ok());
  auto f = SafetensorsFile::Open(dir.path() + "/h.safetensors");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  std::vector<float> got(4);
  ToFloat32(*(*f)->Find("h"), got.data());
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(got[2]));
  EXPECT_TRUE(std::isnan(got[3]));
}

// ---- one test per bad-file case ----

TEST(SafetensorsBadFileTest, ShorterThanEightBytes) {
  ExpectInvalid("", "shorter than the 8-byte");
  ExpectInvalid(std::string(7, '\0'), "shorter than the 8-byte");
}

TEST(SafetensorsBadFileTest, HeaderLengthPastEnd) {
  std::string f = MakeFile("{}", 0);
  f[0] = 100;
  ExpectInvalid(f, "past the end of the file");
}

TEST(SafetensorsBadFileTest, HugeHeaderLength) {
  std::string f = MakeFile("{}", 0);
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>(0xff);
  ExpectInvalid(f, "huge header length");
  std::string g = MakeFile("{}", 0);
  uint64_t n = kSafetensorsMaxHeaderBytes + 1;
  std::memcpy(g.data(), &n, 8);
  ExpectInvalid(g, "huge header length");
}

TEST(SafetensorsBadFileTest, MalformedJson) {
  ExpectInvalid(MakeFile("{\"a\": ", 0), "malformed JSON");
  ExpectInvalid(MakeFile("not json", 0), "malformed JSON");
}

TEST(SafetensorsBadFileTest, JsonNotAnObject) {
  ExpectInvalid(MakeFile("[1, 2]", 0), "not an object");
  ExpectInvalid(MakeFile(R"({"t": 3})", 0), "not an object");
}

TEST(SafetensorsBadFileTest, UnsupportedDtypeIsUnimplemented) {
  Status st = ParseBytes(MakeFile(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8));
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_NE(st.message().find("'I64'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'w'"), std::string::npos) << st.message();
  st = ParseBytes(MakeFile(R"({"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,8]}})", 8));
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  ExpectInvalid(MakeFile(R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", 4), "dtype");
}

TEST(SafetensorsBadFileTest, ShapeNotNonNegativeInts) {
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                "non-negative integer");
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                "non-negative integer");
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", 4), "shape");
}

TEST(SafetensorsBadFileTest, NumelOverflow) {
  ExpectInvalid(
      MakeFile(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
               4),
      "overflows");
}

TEST(SafetensorsBadFileTest, DataOffsetsNotTwoInts) {
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                "two non-negative integers");
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", 4),
                "two non-negative integers");
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[1]}})", 4), "two non-negative integers");
}

TEST(SafetensorsBadFileTest, BeginAfterEnd) {
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8), "> end");
}

TEST(SafetensorsBadFileTest, EndPastDataSection) {
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
                "past the end of the data section");
}

TEST(SafetensorsBadFileTest, LyingHeader) {
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                "lying header");
  ExpectInvalid(MakeFile(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", 8),
                "lying header");
}

TEST(SafetensorsBadFileTest, OverlappingRanges) {
  ExpectInvalid(MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12),
                "overlap");
}

TEST(SafetensorsBadFileTest, GapAndTrailingBytes) {
  ExpectInvalid(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap");
  ExpectInvalid(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8),
                "trailing bytes");
}

TEST(SafetensorsBadFileTest, BadMetadata) {
  ExpectInvalid(MakeFile(R"({"__metadata__":{"k":1}})", 0), "__metadata__");
  ExpectInvalid(MakeFile(R"({"__metadata__":[]})", 0), "__metadata__");
}

TEST(SafetensorsBadFileTest, MisorderedRangesAreFine) {
  // Offsets need not follow key order; the reader sorts them.
  Status st = ParseBytes(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                  8));
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST(SafetensorsFileTest, OpenErrorsNameTheFile) {
  TempDir dir;
  auto missing = SafetensorsFile::Open(dir.path() + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  const std::string p = dir.path() + "/empty.safetensors";
  WriteBytes(p, "");
  auto empty = SafetensorsFile::Open(p);
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find(p), std::string::npos);
  auto d = SafetensorsFile::Open(dir.path());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
}

// ---- multi-shard sets ----

void WriteIndex(const std::string& dir, const std::string& weight_map) {
  WriteBytes(dir + "/model.safetensors.index.json",
             R"({"metadata": {"total_size": 0}, "weight_map": )" + weight_map + "}");
}

void WriteShards(const std::string& dir) {
  std::vector<float> v = {1, 2};
  SafetensorsWriter a, b;
  ASSERT_TRUE(a.AddF32("x", {2}, v).ok());
  ASSERT_TRUE(b.AddF32("y", {1, 2}, v).ok());
  ASSERT_TRUE(a.Write(dir + "/model-00001-of-00002.safetensors").ok());
  ASSERT_TRUE(b.Write(dir + "/model-00002-of-00002.safetensors").ok());
}

TEST(SafetensorsSetTest, LoadsShardsThroughIndex) {
  TempDir dir;
  WriteShards(dir.path());
  WriteIndex(dir.path(), R"({"x": "model-00001-of-00002.safetensors",
                             "y": "model-00002-of-00002.safetensors"})");
  auto set = SafetensorsSet::Open(dir.path());
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ((*set)->files().size(), 2u);
  ASSERT_NE((*set)->Find("x"), nullptr);
  ASSERT_NE((*set)->Find("y"), nullptr);
  EXPECT_EQ((*set)->Find("y")->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ((*set)->tensors().size(), 2u);
}

TEST(SafetensorsSetTest, MissingShardFile) {
  TempDir dir;
  WriteShards(dir.path());
  WriteIndex(dir.path(), R"({"x": "model-00001-of-00002.safetensors", "y": "gone.safetensors"})");
  auto set = SafetensorsSet::Open(dir.path());
  EXPECT_EQ(set.status().code(), StatusCode::kNotFound);
  EXPECT_NE(set.status().message().find("gone.safetensors"), std::string::npos);
}

TEST(SafetensorsSetTest, TensorListedButAbsent) {
  TempDir dir;
  WriteShards(dir.path());
  WriteIndex(dir.path(), R"({"x": "model-00001-of-00002.safetensors",
                             "z": "model-00001-of-00002.safetensors"})");
  auto set = SafetensorsSet::Open(dir.path());
  EXPECT_EQ(set.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(set.status().message().find("'z'"), std::string::npos) << set.status().message();
}

TEST(SafetensorsSetTest, PathTraversalInShardName) {
  TempDir dir;
  WriteShards(dir.path());
  for (const char* bad : {"../x.safetensors", "/etc/passwd", "sub/x.safetensors", "..", ""}) {
    WriteIndex(dir.path(), std::string(R"({"x": ")") + bad + "\"}");
    auto set = SafetensorsSet::Open(dir.path());
    EXPECT_EQ(set.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(set.status().message().find("plain file name"), std::string::npos) << bad;
  }
}

TEST(SafetensorsSetTest, MalformedIndexAndEmptyFolder) {
  TempDir dir;
  auto none = SafetensorsSet::Open(dir.path());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  WriteBytes(dir.path() + "/model.safetensors.index.json", "{\"weight_map\": [");
  EXPECT_EQ(SafetensorsSet::Open(dir.path()).status().code(), StatusCode::kInvalidArgument);
  WriteBytes(dir.path() + "/model.safetensors.index.json", "{\"other\": {}}");
  EXPECT_EQ(SafetensorsSet::Open(dir.path()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvmesh::engine
