// Fuzz target: tokenizer.json parsing never crashes; for any input text the byte-level tokenizer
// round-trips (Decode(Encode(s)) == s with invalid UTF-8 repaired) and streaming decode of any id
// sequence equals Decode.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using kvmesh::tokenizer::StreamingDecoder;
using kvmesh::tokenizer::Tokenizer;

// Small but complete: added tokens, Split regex + ByteLevel, template post-processor.
constexpr char kTinyJson[] = R"({"added_tokens":[{"id":6,"content":"<s>","special":true}],
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":" ?\\p{L}+|\\s+"},"behavior":"Isolated"},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}]},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"Ġ":3,"Ġab":4,"c":5},"merges":["a b",["Ġ","ab"]]}})";

const Tokenizer& ByteLevel() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::FromJson(kvmesh::tokenizer::testing::ReadTestFile("llama3_bpe.json"),
                                 "llama3_bpe.json");
    if (!t.ok()) std::abort();
    return std::move(t).value();
  }();
  return *tok;
}

}  // namespace

std::vector<std::string> KvmeshFuzzSeeds() {
  return {std::string("\x00", 1) + kTinyJson, "\x01Hello world <|eot_id|> 123 \xF0\x9F\x98\x80",
          "\x02\x01\x00\x00\x00\x40\x01\x00\x00\xf0\x00\x00\x00"};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0: {  // Parse arbitrary JSON; if it loads, it must encode/decode without crashing.
      auto t = Tokenizer::FromJson(rest, "fuzz");
      if (t.ok()) (*t)->Decode((*t)->Encode("ab abc <s>", true), true);
      return 0;
    }
    case 1:
    case 3:
    case 5:
    case 7: {  // Round trip of arbitrary text.
      const Tokenizer& tok = ByteLevel();
      if (tok.Decode(tok.Encode(rest, false), false) != kvmesh::tokenizer::Utf8Lossy(rest)) {
        std::abort();
      }
      return 0;
    }
    default: {  // Arbitrary ids: streaming == Decode, output always valid UTF-8.
      const Tokenizer& tok = ByteLevel();
      std::vector<int32_t> ids;
      for (size_t i = 0; i + 2 <= rest.size(); i += 2) {
        uint16_t v;
        std::memcpy(&v, rest.data() + i, 2);
        ids.push_back(static_cast<int32_t>(v % 400) - 20);  // includes invalid ids
      }
      StreamingDecoder dec(tok, (size & 1) != 0);
      std::string streamed;
      for (int32_t id : ids) streamed += dec.Push(id);
      streamed += dec.Flush();
      if (streamed != tok.Decode(ids, (size & 1) != 0)) std::abort();
      if (!kvmesh::tokenizer::IsValidUtf8(streamed)) std::abort();
      return 0;
    }
  }
}
