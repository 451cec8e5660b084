#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/utf8.h"

namespace kvmesh::tokenizer {
namespace {

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* mc) const { pcre2_match_context_free(mc); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* js) const { pcre2_jit_stack_free(js); }
};

// One JIT stack per thread (a JIT stack cannot be shared by concurrent matches). 4 MiB covers
// long whitespace runs under (?!\S).
pcre2_match_context* ThreadMatchContext() {
  thread_local std::unique_ptr<pcre2_jit_stack, JitStackDeleter> stack(
      pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr));
  thread_local std::unique_ptr<pcre2_match_context, MatchContextDeleter> context([] {
    pcre2_match_context* mc = pcre2_match_context_create(nullptr);
    if (mc != nullptr && stack != nullptr) pcre2_jit_stack_assign(mc, nullptr, stack.get());
    return mc;
  }());
  return context.get();
}

}  // namespace

StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2_LITERAL does not allow PCRE2_UCP (which only matters for classes anyway).
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error_code, buffer, sizeof(buffer));
    return InvalidArgumentError("regex does not compile at offset " + std::to_string(error_offset) +
                                ": " + reinterpret_cast<const char*>(buffer) + " (pattern \"" +
                                std::string(pattern) + "\")");
  }
  std::unique_ptr<Regex> regex(new Regex());
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(code, nullptr));
  if (md == nullptr) return matches;
  pcre2_match_context* mc = ThreadMatchContext();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  uint32_t options = 0;  // The subject is checked for valid UTF-8 once, on the first call.
  while (offset <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), offset, options, md.get(), mc)
                        : pcre2_match(code, subject, text.size(), offset, options, md.get(), mc);
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH or a limit: stop with what we have.
    options = PCRE2_NO_UTF_CHECK;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t begin = ov[0];
    const size_t end = ov[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      offset = end;
    } else {
      // Empty match: advance one character.
      if (begin >= text.size()) break;
      const size_t n = Utf8CharLength(text, begin);
      offset = begin + (n == 0 ? 1 : n);
    }
  }
  return matches;
}

StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return InvalidArgumentError("unknown split behavior \"" + std::string(name) + "\"");
}

std::vector<std::string_view> SplitByRegex(const Regex& regex, std::string_view text,
                                           SplitBehavior behavior, bool invert) {
  // Build (begin, end, is_match) spans covering the text, then apply the behavior.
  struct Span {
    size_t begin, end;
    bool delim;
  };
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [b, e] : regex.FindAll(text)) {
    if (b > prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev < text.size()) spans.push_back({prev, text.size(), invert});

  std::vector<std::string_view> out;
  out.reserve(spans.size());
  auto piece = [&](size_t b, size_t e) { return text.substr(b, e - b); };
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans)
        if (!s.delim) out.push_back(piece(s.begin, s.end));
      break;
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out.push_back(piece(s.begin, s.end));
      break;
    case SplitBehavior::kContiguous: {
      size_t i = 0;
      while (i < spans.size()) {
        size_t j = i;
        while (j + 1 < spans.size() && spans[j + 1].delim && spans[i].delim) ++j;
        out.push_back(piece(spans[i].begin, spans[j].end));
        i = j + 1;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (!open) start = s.begin;
        open = true;
        if (s.delim) {
          out.push_back(piece(start, s.end));
          open = false;
        }
      }
      if (open) out.push_back(piece(start, text.size()));
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (s.delim) {
          if (open) out.push_back(piece(start, s.begin));
          start = s.begin;
          open = true;
        } else if (!open) {
          start = s.begin;
          open = true;
        }
      }
      if (open) out.push_back(piece(start, text.size()));
      break;
    }
  }
  return out;
}

const std::array<std::string, 256>& ByteToUnicodeTable() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 256 + n++;
      AppendUtf8(cp, &t[b]);
    }
    return t;
  }();
  return table;
}

int UnicodeToByte(uint32_t codepoint) {
  static const std::array<int, 324> inverse = [] {
    std::array<int, 324> inv;
    inv.fill(-1);
    const auto& table = ByteToUnicodeTable();
    for (int b = 0; b < 256; ++b) {
      size_t pos = 0;
      inv[NextCodepoint(table[b], &pos)] = b;
    }
    return inv;
  }();
  return codepoint < inverse.size() ? inverse[codepoint] : -1;
}

std::string BytesToUnicode(std::string_view text) {
  const auto& table = ByteToUnicodeTable();
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) out.append(table[static_cast<uint8_t>(c)]);
  return out;
}

}  // namespace kvmesh::tokenizer
