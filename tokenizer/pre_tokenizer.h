// Pieces of the Hugging Face pre-tokenization pipeline the supported tokenizers use: the PCRE2
// regex used by "Split" and "ByteLevel" pre-tokenizers, and GPT-2's byte <-> unicode table.
//
// Regex runs with PCRE2_UTF | PCRE2_UCP (so \p{L}, \p{N}, \s are Unicode-aware, matching the
// Oniguruma/JS semantics HF uses closely enough for the Llama 3 / Qwen2 / GPT-2 patterns) and is
// JIT-compiled when the library supports it. A compiled Regex is immutable and safe to share
// between threads; every match call uses its own match data.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::tokenizer {

// GPT-2's pre-tokenizer regex (what HF's ByteLevel pre-tokenizer uses when use_regex is true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3's Split pattern.
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class Regex {
 public:
  // InvalidArgument with PCRE2's message and offset when the pattern does not compile.
  // `literal` treats the pattern as a plain string (HF's {"String": ...} pattern).
  static StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches [begin, end) left to right; `text` must be valid UTF-8. Empty matches
  // are skipped. On a matching error (e.g. resource limits) returns what was found so far.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name);

// Splits `text` into pieces by the matches of `regex` per HF's SplitDelimiterBehavior. With
// `invert`, the matches are the pieces and the gaps the delimiters.
std::vector<std::string_view> SplitByRegex(const Regex& regex, std::string_view text,
                                           SplitBehavior behavior, bool invert);

// GPT-2's bytes_to_unicode: byte -> the UTF-8 of the printable char that stands for it.
const std::array<std::string, 256>& ByteToUnicodeTable();
// Inverse: codepoint -> byte, or -1 when the codepoint is not in the table.
int UnicodeToByte(uint32_t codepoint);

// Maps each byte of `text` to its table char (the ByteLevel pre-tokenizer's alphabet change).
std::string BytesToUnicode(std::string_view text);

}  // namespace kvmesh::tokenizer
