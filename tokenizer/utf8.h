// UTF-8 helpers shared by the tokenizer: validation, lossy repair and the "complete prefix" test
// the streaming decoder uses so that it never emits half a character.
//
// Invalid input is repaired the way Rust's String::from_utf8_lossy / the WHATWG decoder do it:
// each maximal invalid subpart becomes one U+FFFD. These functions never fail and never read past
// the end of their input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvmesh::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length in bytes of the valid UTF-8 character starting at s[pos]; 0 if the bytes there are not a
// complete valid character (invalid, or truncated by the end of `s`).
size_t Utf8CharLength(std::string_view s, size_t pos);

// Number of bytes of the invalid sequence at s[pos] that one U+FFFD replaces (the maximal subpart,
// at least 1). Precondition: Utf8CharLength(s, pos) == 0 and pos < s.size().
size_t Utf8InvalidLength(std::string_view s, size_t pos);

bool IsValidUtf8(std::string_view s);

// `s` with each maximal invalid subpart replaced by U+FFFD.
std::string Utf8Lossy(std::string_view s);

// Appends the UTF-8 encoding of `cp` (cp <= 0x10FFFF, not a surrogate) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// Decodes the character at s[*pos] (must be valid) and advances *pos.
uint32_t NextCodepoint(std::string_view s, size_t* pos);

// For streaming: the length of the longest prefix of `s` that can be emitted now. Complete valid
// characters are emitted as is; a definitely invalid sequence is emitted (the caller repairs it with
// Utf8Lossy); only a trailing sequence that is a valid but incomplete character start is held back.
size_t Utf8EmittablePrefix(std::string_view s);

}  // namespace kvmesh::tokenizer
