#include "tokenizer/utf8.h"

#include <gtest/gtest.h>

namespace kvmesh::tokenizer {
namespace {

TEST(Utf8Test, ValidAndInvalid) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE4\xBD\xA0 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

TEST(Utf8Test, LossyReplacesMaximalSubparts) {
  // Like Rust's from_utf8_lossy: "\xF0\x9F\x98" (truncated 4-byte) is one U+FFFD.
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x98" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(Utf8Lossy("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("\xE0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // E0 80: 80 not a valid 2nd byte
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
}

TEST(Utf8Test, EmittablePrefixHoldsOnlyIncompleteTail) {
  const std::string smile = "\xF0\x9F\x98\x80";
  EXPECT_EQ(Utf8EmittablePrefix("ab"), 2u);
  EXPECT_EQ(Utf8EmittablePrefix("ab" + smile.substr(0, 1)), 2u);
  EXPECT_EQ(Utf8EmittablePrefix("ab" + smile.substr(0, 3)), 2u);
  EXPECT_EQ(Utf8EmittablePrefix("ab" + smile), 6u);
  EXPECT_EQ(Utf8EmittablePrefix("a\x80"), 2u);       // invalid: emit (as U+FFFD) now
  EXPECT_EQ(Utf8EmittablePrefix("a\xC3" "b"), 3u);    // broken sequence followed by more
}

TEST(Utf8Test, AppendAndDecodeCodepoints) {
  for (uint32_t cp : {0x41u, 0xE9u, 0x4F60u, 0x1F600u, 0x10FFFFu}) {
    std::string s;
    AppendUtf8(cp, &s);
    size_t pos = 0;
    EXPECT_EQ(NextCodepoint(s, &pos), cp);
    EXPECT_EQ(pos, s.size());
  }
}

}  // namespace
}  // namespace kvmesh::tokenizer
