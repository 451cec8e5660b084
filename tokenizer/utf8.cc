#include "tokenizer/utf8.h"

namespace kvmesh::tokenizer {
namespace {

// Valid range of the second byte for a given lead byte (Unicode Table 3-7); other continuation
// bytes are always 0x80..0xBF.
bool SecondByteOk(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
  }
}

// Expected length of a character from its lead byte; 0 for a byte that cannot start one.
size_t LeadLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Number of bytes from pos that are a valid (possibly incomplete) prefix of a character.
size_t ValidPrefixLength(std::string_view s, size_t pos, size_t need) {
  const auto lead = static_cast<uint8_t>(s[pos]);
  size_t i = 1;
  while (i < need && pos + i < s.size()) {
    const auto b = static_cast<uint8_t>(s[pos + i]);
    const bool ok = (i == 1) ? SecondByteOk(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++i;
  }
  return i;
}

}  // namespace

size_t Utf8CharLength(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  const size_t need = LeadLength(static_cast<uint8_t>(s[pos]));
  if (need == 0) return 0;
  return ValidPrefixLength(s, pos, need) == need ? need : 0;
}

size_t Utf8InvalidLength(std::string_view s, size_t pos) {
  const size_t need = LeadLength(static_cast<uint8_t>(s[pos]));
  if (need == 0) return 1;
  return ValidPrefixLength(s, pos, need);
}

bool IsValidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = Utf8CharLength(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string Utf8Lossy(std::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t n = Utf8CharLength(s, pos);
    if (n > 0) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      out.append(kReplacementChar);
      pos += Utf8InvalidLength(s, pos);
    }
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t NextCodepoint(std::string_view s, size_t* pos) {
  const auto lead = static_cast<uint8_t>(s[*pos]);
  size_t n = Utf8CharLength(s, *pos);
  if (n == 0) {  // Defensive: treat a stray byte as itself.
    ++*pos;
    return lead;
  }
  uint32_t cp = n == 1 ? lead : n == 2 ? (lead & 0x1F) : n == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[*pos + i]) & 0x3F);
  *pos += n;
  return cp;
}

size_t Utf8EmittablePrefix(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t n = Utf8CharLength(s, pos);
    if (n > 0) {
      pos += n;
      continue;
    }
    const size_t bad = Utf8InvalidLength(s, pos);
    const size_t need = LeadLength(static_cast<uint8_t>(s[pos]));
    // A valid-so-far prefix cut by the end of the buffer may still complete.
    if (need > 0 && pos + bad == s.size() && bad < need) return pos;
    pos += bad;
  }
  return pos;
}

}  // namespace kvmesh::tokenizer
