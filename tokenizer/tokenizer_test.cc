#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "tokenizer/test_util.h"
#include "tokenizer/utf8.h"

namespace kvmesh::tokenizer {
namespace {

using testing::ReadTestFile;

std::unique_ptr<Tokenizer> Load(const std::string& file) {
  auto t = Tokenizer::FromJson(ReadTestFile(file), file);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::string RandomUtf8(std::mt19937& rng, size_t chars) {
  // Mix of ASCII (incl. whitespace/control), Latin-1, CJK, emoji and astral codepoints.
  std::uniform_int_distribution<int> kind(0, 9);
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp = 0;
    switch (kind(rng)) {
      case 0: cp = std::uniform_int_distribution<uint32_t>(0, 0x7F)(rng); break;
      case 1: cp = " \t\n"[std::uniform_int_distribution<int>(0, 2)(rng)]; break;
      case 2: cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng); break;
      case 3: cp = std::uniform_int_distribution<uint32_t>(0x4E00, 0x9FFF)(rng); break;
      case 4: cp = std::uniform_int_distribution<uint32_t>(0x1F300, 0x1FAFF)(rng); break;
      case 5: cp = std::uniform_int_distribution<uint32_t>(0xE000, 0xFFFD)(rng); break;
      case 6: cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng); break;
      default: cp = std::uniform_int_distribution<uint32_t>('a', 'z')(rng); break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    AppendUtf8(cp, &s);
  }
  return s;
}

std::string RandomBytes(std::mt19937& rng, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(rng() & 0xFF));
  return s;
}

const char* const kFiles[] = {"llama3_bpe.json", "gpt2_bpe.json", "llama2_spm.json",
                              "mistral_metaspace.json"};

TEST(TokenizerTest, ByteLevelRoundTripsRandomText) {
  std::mt19937 rng(42);
  for (const char* file : {"llama3_bpe.json", "gpt2_bpe.json"}) {
    auto tok = Load(file);
    ASSERT_NE(tok, nullptr);
    for (int i = 0; i < 200; ++i) {
      const std::string s = RandomUtf8(rng, 1 + rng() % 40);
      EXPECT_EQ(tok->Decode(tok->Encode(s, false), false), s) << file;
      EXPECT_EQ(tok->Decode(tok->Encode(s, true), true), s) << file;
    }
    for (int i = 0; i < 200; ++i) {
      // Arbitrary bytes: invalid sequences are repaired to U+FFFD before encoding.
      const std::string s = RandomBytes(rng, 1 + rng() % 40);
      EXPECT_EQ(tok->Decode(tok->Encode(s, false), false), Utf8Lossy(s)) << file;
    }
  }
}

TEST(TokenizerTest, SentencePieceRoundTripsRandomText) {
  std::mt19937 rng(7);
  for (const char* file : {"llama2_spm.json", "mistral_metaspace.json"}) {
    auto tok = Load(file);
    ASSERT_NE(tok, nullptr);
    for (int i = 0; i < 200; ++i) {
      // Byte fallback covers every char; the decoder strips the one leading space the normalizer
      // adds, so text without a leading space round-trips.
      std::string s = RandomUtf8(rng, 1 + rng() % 40);
      if (s[0] == ' ') s[0] = 'x';
      EXPECT_EQ(tok->Decode(tok->Encode(s, true), true), s) << file;
    }
  }
}

TEST(TokenizerTest, StreamingConcatenationEqualsDecode) {
  std::mt19937 rng(3);
  for (const char* file : kFiles) {
    auto tok = Load(file);
    ASSERT_NE(tok, nullptr);
    for (bool skip : {true, false}) {
      for (int i = 0; i < 100; ++i) {
        std::string s = RandomUtf8(rng, 1 + rng() % 30);
        if (i % 3 == 0) s = "<s>" + s + "<|eot_id|>";
        const auto ids = tok->Encode(s, true);
        StreamingDecoder dec(*tok, skip);
        std::string streamed;
        for (int32_t id : ids) {
          const std::string part = dec.Push(id);
          EXPECT_TRUE(IsValidUtf8(part));
          streamed += part;
        }
        streamed += dec.Flush();
        EXPECT_EQ(streamed, tok->Decode(ids, skip)) << file << " skip=" << skip;
      }
    }
  }
}

TEST(TokenizerTest, StreamingHoldsBackPartialCharacters) {
  auto tok = Load("llama3_bpe.json");
  ASSERT_NE(tok, nullptr);
  // The 4 bytes of U+1F600 are 4 separate byte-level tokens in this small vocab.
  const auto ids = tok->Encode("a\xF0\x9F\x98\x80" "b", false);
  ASSERT_EQ(ids.size(), 6u);
  StreamingDecoder dec(*tok);
  EXPECT_EQ(dec.Push(ids[0]), "a");
  EXPECT_EQ(dec.Push(ids[1]), "");
  EXPECT_EQ(dec.Push(ids[2]), "");
  EXPECT_EQ(dec.Push(ids[3]), "");
  EXPECT_EQ(dec.Push(ids[4]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(dec.Push(ids[5]), "b");
  EXPECT_EQ(dec.Flush(), "");

  // An unfinished character at the end becomes U+FFFD, like Decode.
  StreamingDecoder cut(*tok);
  EXPECT_EQ(cut.Push(ids[1]), "");
  EXPECT_EQ(cut.Push(ids[2]), "");
  EXPECT_EQ(cut.Flush(), std::string(kReplacementChar));
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{ids[1], ids[2]}, false), kReplacementChar);
}

TEST(TokenizerTest, SentencePieceByteFallbackAndLeadingSpace) {
  auto tok = Load("llama2_spm.json");
  ASSERT_NE(tok, nullptr);
  const auto ids = tok->Encode("the 你", true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids[0], *tok->bos_id());
  EXPECT_EQ(*tok->IdToToken(ids.back()), "<0xA0>");  // 你 = E4 BD A0 via byte fallback
  StreamingDecoder dec(*tok);
  std::string out;
  for (int32_t id : ids) out += dec.Push(id);
  out += dec.Flush();
  EXPECT_EQ(out, "the 你");
  // A byte-fallback group that is not valid UTF-8 decodes to one U+FFFD per byte token (HF rule).
  const int32_t e4 = *tok->TokenToId("<0xE4>"), bd = *tok->TokenToId("<0xBD>");
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{e4, bd}, true),
            std::string(kReplacementChar) + std::string(kReplacementChar));
}

TEST(TokenizerTest, AddedTokensLongestMatchAndStrip) {
  const char* json = R"({
    "added_tokens": [
      {"id": 10, "content": "<a>", "special": true},
      {"id": 11, "content": "<a><b>", "special": true},
      {"id": 12, "content": "[L]", "special": false, "lstrip": true},
      {"id": 13, "content": "[R]", "special": false, "rstrip": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "<": 3, ">": 4, "ab": 5},
              "merges": ["a b"]}})";
  auto tok = Tokenizer::FromJson(json, "inline");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto& t = **tok;
  EXPECT_EQ(t.Encode("<a><b>ab<a>", false), (std::vector<int32_t>{11, 5, 10}));
  EXPECT_EQ(t.Encode("a  [L]b", false), (std::vector<int32_t>{0, 12, 1}));
  EXPECT_EQ(t.Encode("a[R]  b", false), (std::vector<int32_t>{0, 13, 1}));
  EXPECT_EQ(t.vocab_size(), 14);
  EXPECT_TRUE(t.IsSpecial(10));
  EXPECT_FALSE(t.IsSpecial(12));
  EXPECT_FALSE(t.IsSpecial(5));
  EXPECT_EQ(t.TokenToId("<a><b>"), 11);
  EXPECT_EQ(t.IdToToken(5), "ab");
  EXPECT_EQ(t.IdToToken(99), std::nullopt);
  EXPECT_EQ(t.Decode(std::vector<int32_t>{11, 5, 99, 12}, true), "ab[L]");
  EXPECT_EQ(t.Decode(std::vector<int32_t>{11, 5}, false), "<a><b>ab");
  EXPECT_EQ(t.bos_id(), std::nullopt);
}

TEST(TokenizerTest, SpecialIdsAndConfig) {
  auto tok = Load("llama3_bpe.json");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), tok->TokenToId("<|begin_of_text|>"));
  EXPECT_EQ(tok->eos_id(), tok->TokenToId("<|end_of_text|>"));
  EXPECT_EQ(tok->vocab_size(), 323);
  EXPECT_TRUE(tok->IsSpecial(*tok->TokenToId("<|eot_id|>")));
  EXPECT_FALSE(tok->IsSpecial(*tok->TokenToId("<tool_call>")));
  ASSERT_TRUE(tok->ApplyTokenizerConfig(R"({"eos_token": {"content": "<|eot_id|>"}})").ok());
  EXPECT_EQ(tok->eos_id(), tok->TokenToId("<|eot_id|>"));
  EXPECT_EQ(tok->ApplyTokenizerConfig(R"({"eos_token": "<nope>"})").code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->ApplyTokenizerConfig("[").code(), StatusCode::kInvalidArgument);

  auto spm = Load("llama2_spm.json");
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->eos_id(), 2);
}

TEST(TokenizerTest, FromFileReadsSiblingConfig) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "kvmesh_tok_from_file";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << ReadTestFile("llama3_bpe.json");
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|eot_id|>"})";
  auto tok = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->eos_id(), (*tok)->TokenToId("<|eot_id|>"));
  std::filesystem::remove_all(dir);
  EXPECT_EQ(Tokenizer::FromFile((dir / "tokenizer.json").string()).status().code(),
            StatusCode::kNotFound);
}

nlohmann::json Base() { return nlohmann::json::parse(ReadTestFile("llama3_bpe.json")); }

void ExpectError(const nlohmann::json& j, StatusCode code, const std::string& needle) {
  auto t = Tokenizer::FromJson(j.dump(), "my/tokenizer.json");
  ASSERT_FALSE(t.ok()) << needle;
  EXPECT_EQ(t.status().code(), code) << t.status().ToString();
  EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status().ToString();
  EXPECT_NE(t.status().message().find("my/tokenizer.json"), std::string::npos);
}

TEST(TokenizerTest, ErrorsNameTheFileAndField) {
  auto t = Tokenizer::FromJson("{\"model\": ", "bad.json");
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("bad.json: malformed JSON"), std::string::npos);

  auto j = Base();
  j["model"]["type"] = "WordPiece";
  ExpectError(j, StatusCode::kUnimplemented, "model.type \"WordPiece\"");
  j["model"]["type"] = "Unigram";
  ExpectError(j, StatusCode::kUnimplemented, "\"Unigram\"");

  j = Base();
  j["model"]["merges"].push_back({"Ġt", "nosuchtoken"});
  ExpectError(j, StatusCode::kInvalidArgument, "\"nosuchtoken\" not in model.vocab");
  j = Base();
  j["model"]["merges"].push_back("x y z");
  ExpectError(j, StatusCode::kInvalidArgument, "model.merges[");
  j = Base();
  j["model"]["merges"].push_back({"a", "a"});  // "aa" is not in the vocab
  ExpectError(j, StatusCode::kInvalidArgument, "result \"aa\" not in model.vocab");

  j = Base();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  ExpectError(j, StatusCode::kInvalidArgument, "pre_tokenizer.pretokenizers[0].pattern.Regex");
  j = Base();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectError(j, StatusCode::kUnimplemented, "pre_tokenizer.type \"Whitespace\"");
  j = Base();
  j["model"]["vocab"]["bad"] = "x";
  ExpectError(j, StatusCode::kInvalidArgument, "model.vocab[\"bad\"]");
  j = Base();
  j["model"]["vocab"]["huge"] = int64_t{1} << 40;
  ExpectError(j, StatusCode::kInvalidArgument, "out-of-range id");
  j = Base();
  j["model"]["vocab"]["far"] = 3000000;
  ExpectError(j, StatusCode::kInvalidArgument, "too sparse");
  j = Base();
  j.erase("model");
  ExpectError(j, StatusCode::kInvalidArgument, "\"model\"");
  j = Base();
  j["added_tokens"] = 5;
  ExpectError(j, StatusCode::kInvalidArgument, "added_tokens");
  j = Base();
  j["model"]["unk_token"] = "<missing>";
  ExpectError(j, StatusCode::kInvalidArgument, "unk_token");
}

TEST(TokenizerTest, NeverCrashesOnMangledJson) {
  const std::string good = ReadTestFile("llama2_spm.json");
  std::mt19937 rng(11);
  for (int i = 0; i < 200; ++i) {
    std::string s = good;
    // Truncate or flip a few bytes; the result must be an error or a working tokenizer.
    if (i % 2 == 0) s.resize(rng() % s.size());
    for (int k = 0; k < 3; ++k) s[rng() % s.size()] = static_cast<char>(rng() & 0x7F);
    auto t = Tokenizer::FromJson(s, "mangled");
    if (t.ok()) (*t)->Decode((*t)->Encode("hello world", true), true);
  }
}

TEST(TokenizerTest, ConcurrentEncodeIsConsistent) {
  auto tok = Load("llama3_bpe.json");
  ASSERT_NE(tok, nullptr);
  const std::string text = "The router sends each request to the worker. 12345 你好 😀\n";
  const auto want = tok->Encode(text, true);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i)
        if (tok->Encode(text, true) != want) ++mismatches;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace kvmesh::tokenizer
