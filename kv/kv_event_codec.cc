#include "kv/kv_event_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

namespace kvmesh::kv {
namespace {

// ---------------------------------------------------------------------------------------------
// Writer: minimal-size msgpack encodings.

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void Nil() { Byte(0xc0); }
  void Uint(uint64_t v) {
    if (v < 0x80) {
      Byte(static_cast<uint8_t>(v));
    } else if (v <= 0xff) {
      Byte(0xcc);
      BigEndian(v, 1);
    } else if (v <= 0xffff) {
      Byte(0xcd);
      BigEndian(v, 2);
    } else if (v <= 0xffffffffu) {
      Byte(0xce);
      BigEndian(v, 4);
    } else {
      Byte(0xcf);
      BigEndian(v, 8);
    }
  }
  void Int(int64_t v) {
    if (v >= 0) return Uint(static_cast<uint64_t>(v));
    const auto bits = static_cast<uint64_t>(v);
    if (v >= -32) {
      Byte(static_cast<uint8_t>(bits & 0xff));
    } else if (v >= std::numeric_limits<int8_t>::min()) {
      Byte(0xd0);
      BigEndian(bits, 1);
    } else if (v >= std::numeric_limits<int16_t>::min()) {
      Byte(0xd1);
      BigEndian(bits, 2);
    } else if (v >= std::numeric_limits<int32_t>::min()) {
      Byte(0xd2);
      BigEndian(bits, 4);
    } else {
      Byte(0xd3);
      BigEndian(bits, 8);
    }
  }
  void Float64(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    Byte(0xcb);
    BigEndian(bits, 8);
  }
  void Str(std::string_view s) {
    const size_t n = s.size();
    if (n < 32) {
      Byte(static_cast<uint8_t>(0xa0 | n));
    } else if (n <= 0xff) {
      Byte(0xd9);
      BigEndian(n, 1);
    } else if (n <= 0xffff) {
      Byte(0xda);
      BigEndian(n, 2);
    } else {
      Byte(0xdb);
      BigEndian(n, 4);
    }
    out_.append(s);
  }
  void ArrayHeader(size_t n) {
    if (n < 16) {
      Byte(static_cast<uint8_t>(0x90 | n));
    } else if (n <= 0xffff) {
      Byte(0xdc);
      BigEndian(n, 2);
    } else {
      Byte(0xdd);
      BigEndian(n, 4);
    }
  }

 private:
  void Byte(uint8_t b) { out_.push_back(static_cast<char>(b)); }
  void BigEndian(uint64_t v, int width) {
    for (int i = width - 1; i >= 0; --i) Byte(static_cast<uint8_t>((v >> (8 * i)) & 0xff));
  }
  std::string& out_;
};

void WriteHashes(Writer& w, const std::vector<BlockHash>& hashes) {
  w.ArrayHeader(hashes.size());
  for (BlockHash h : hashes) w.Uint(h);
}

void WriteEvent(Writer& w, const KvEvent& event) {
  if (const auto* s = std::get_if<BlockStored>(&event)) {
    w.ArrayHeader(8);
    w.Str("BlockStored");
    WriteHashes(w, s->hashes);
    if (s->parent_hash) {
      w.Uint(*s->parent_hash);
    } else {
      w.Nil();
    }
    w.ArrayHeader(s->token_ids.size());
    for (uint32_t t : s->token_ids) w.Uint(t);
    w.Uint(s->block_size);
    if (s->lora_id) {
      w.Int(*s->lora_id);
    } else {
      w.Nil();
    }
    w.Str(MediumWireName(s->medium));
    if (s->lora_name) {
      w.Str(*s->lora_name);
    } else {
      w.Nil();
    }
  } else if (const auto* r = std::get_if<BlockRemoved>(&event)) {
    w.ArrayHeader(3);
    w.Str("BlockRemoved");
    WriteHashes(w, r->hashes);
    w.Str(MediumWireName(r->medium));
  } else {
    w.ArrayHeader(1);
    w.Str("AllBlocksCleared");
  }
}

// ---------------------------------------------------------------------------------------------
// Reader: a bounded cursor over untrusted bytes. Every length is checked against the bytes that
// remain before it is used; nothing here allocates.

enum class Kind { kNil, kBool, kInt, kFloat, kStr, kBin, kArray, kMap, kExt, kInvalid };

Kind KindOf(uint8_t b) {
  if (b <= 0x7f || b >= 0xe0) return Kind::kInt;
  if (b <= 0x8f) return Kind::kMap;
  if (b <= 0x9f) return Kind::kArray;
  if (b <= 0xbf) return Kind::kStr;
  switch (b) {
    case 0xc0: return Kind::kNil;
    case 0xc2: case 0xc3: return Kind::kBool;
    case 0xc4: case 0xc5: case 0xc6: return Kind::kBin;
    case 0xc7: case 0xc8: case 0xc9: return Kind::kExt;
    case 0xca: case 0xcb: return Kind::kFloat;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: return Kind::kInt;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return Kind::kInt;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return Kind::kExt;
    case 0xd9: case 0xda: case 0xdb: return Kind::kStr;
    case 0xdc: case 0xdd: return Kind::kArray;
    case 0xde: case 0xdf: return Kind::kMap;
    default: return Kind::kInvalid;  // 0xc1
  }
}

std::string_view KindName(Kind k) {
  switch (k) {
    case Kind::kNil: return "nil";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kBin: return "bin";
    case Kind::kArray: return "array";
    case Kind::kMap: return "map";
    case Kind::kExt: return "ext";
    case Kind::kInvalid: return "invalid byte 0xc1";
  }
  return "?";
}

struct Int {
  bool negative = false;
  uint64_t bits = 0;  // two's complement bit pattern when negative
};

class Reader {
 public:
  Reader(std::string_view data, const DecodeLimits& limits)
      : p_(reinterpret_cast<const uint8_t*>(data.data())), n_(data.size()), limits_(limits) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }
  const DecodeLimits& limits() const { return limits_; }

  Status DataLoss(std::string_view field, std::string_view what, size_t at) const {
    return DataLossError(std::string(field) + ": " + std::string(what) + " at byte offset " +
                         std::to_string(at));
  }
  Status Invalid(std::string_view field, std::string_view what, size_t at) const {
    return InvalidArgumentError(std::string(field) + ": " + std::string(what) +
                                " at byte offset " + std::to_string(at));
  }

  StatusOr<Kind> Peek(std::string_view field) const {
    if (pos_ >= n_) return DataLoss(field, "unexpected end of input", pos_);
    Kind k = KindOf(p_[pos_]);
    if (k == Kind::kInvalid) return DataLoss(field, "invalid msgpack byte 0xc1", pos_);
    return k;
  }

  // Consumes a nil and returns true if the next value is nil.
  bool TryNil() {
    if (pos_ < n_ && p_[pos_] == 0xc0) {
      ++pos_;
      return true;
    }
    return false;
  }

  StatusOr<uint32_t> ArrayHeader(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k != Kind::kArray) return WrongType(field, "array", k, at);
    uint8_t b = p_[pos_];
    uint64_t count;
    if (b <= 0x9f) {
      count = b & 0x0f;
      ++pos_;
    } else {
      KVMESH_ASSIGN_OR_RETURN(count, LengthField(field, b == 0xdc ? 2 : 4));
    }
    if (count > remaining()) {
      return DataLoss(field, "array declares " + std::to_string(count) + " elements but only " +
                                 std::to_string(remaining()) + " bytes remain",
                      at);
    }
    return static_cast<uint32_t>(count);
  }

  StatusOr<uint32_t> MapHeader(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k != Kind::kMap) return WrongType(field, "map", k, at);
    uint8_t b = p_[pos_];
    uint64_t count;
    if (b <= 0x8f) {
      count = b & 0x0f;
      ++pos_;
    } else {
      KVMESH_ASSIGN_OR_RETURN(count, LengthField(field, b == 0xde ? 2 : 4));
    }
    if (2 * count > remaining()) {
      return DataLoss(field, "map declares " + std::to_string(count) + " entries but only " +
                                 std::to_string(remaining()) + " bytes remain",
                      at);
    }
    return static_cast<uint32_t>(count);
  }

  StatusOr<std::string_view> Str(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k != Kind::kStr) return WrongType(field, "str", k, at);
    uint8_t b = p_[pos_];
    uint64_t len;
    if (b <= 0xbf) {
      len = b & 0x1f;
      ++pos_;
    } else {
      KVMESH_ASSIGN_OR_RETURN(len, LengthField(field, b == 0xd9 ? 1 : (b == 0xda ? 2 : 4)));
    }
    return Bytes(field, "str", len, at, limits_.max_string_bytes);
  }

  StatusOr<std::string_view> Bin(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k != Kind::kBin) return WrongType(field, "bin", k, at);
    uint8_t b = p_[pos_];
    KVMESH_ASSIGN_OR_RETURN(uint64_t len,
                            LengthField(field, b == 0xc4 ? 1 : (b == 0xc5 ? 2 : 4)));
    return Bytes(field, "bin", len, at, std::numeric_limits<size_t>::max());
  }

  StatusOr<Int> Integer(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k != Kind::kInt) return WrongType(field, "int", k, at);
    uint8_t b = p_[pos_];
    if (b <= 0x7f) {
      ++pos_;
      return Int{false, b};
    }
    if (b >= 0xe0) {
      ++pos_;
      return Int{true, static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(b)))};
    }
    const int width = 1 << ((b - 0xcc) & 3);  // cc..cf and d0..d3 share the 1/2/4/8 pattern
    KVMESH_ASSIGN_OR_RETURN(uint64_t raw, LengthField(field, width));
    if (b <= 0xcf) return Int{false, raw};
    // Signed: sign-extend from `width` bytes.
    const int shift = 64 - 8 * width;
    const auto v = static_cast<int64_t>(raw << shift) >> shift;
    return Int{v < 0, static_cast<uint64_t>(v)};
  }

  // A float, or an int converted to double.
  StatusOr<double> Number(std::string_view field) {
    const size_t at = pos_;
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    if (k == Kind::kInt) {
      KVMESH_ASSIGN_OR_RETURN(Int i, Integer(field));
      return i.negative ? static_cast<double>(static_cast<int64_t>(i.bits))
                        : static_cast<double>(i.bits);
    }
    if (k != Kind::kFloat) return WrongType(field, "float or int", k, at);
    const bool is_f32 = p_[pos_] == 0xca;
    KVMESH_ASSIGN_OR_RETURN(uint64_t raw, LengthField(field, is_f32 ? 4 : 8));
    if (is_f32) {
      auto bits = static_cast<uint32_t>(raw);
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return static_cast<double>(f);
    }
    double d;
    std::memcpy(&d, &raw, sizeof d);
    return d;
  }

  // Skips one value of any type. `depth` is the nesting level of the value being skipped.
  Status Skip(std::string_view field, int depth) {
    const size_t at = pos_;
    if (depth > limits_.max_depth) {
      return Invalid(field, "nesting deeper than max_depth " + std::to_string(limits_.max_depth),
                     at);
    }
    KVMESH_ASSIGN_OR_RETURN(Kind k, Peek(field));
    const uint8_t b = p_[pos_];
    switch (k) {
      case Kind::kNil:
      case Kind::kBool:
        ++pos_;
        return Status::Ok();
      case Kind::kInt:
        return Integer(field).status();
      case Kind::kFloat:
        return Number(field).status();
      case Kind::kStr: {
        // Skipped strings are not held, so the string limit does not apply.
        uint64_t len;
        if (b <= 0xbf) {
          len = b & 0x1f;
          ++pos_;
        } else {
          KVMESH_ASSIGN_OR_RETURN(len, LengthField(field, b == 0xd9 ? 1 : (b == 0xda ? 2 : 4)));
        }
        return Bytes(field, "str", len, at, std::numeric_limits<size_t>::max()).status();
      }
      case Kind::kBin:
        return Bin(field).status();
      case Kind::kExt: {
        uint64_t len;
        if (b >= 0xd4 && b <= 0xd8) {
          len = uint64_t{1} << (b - 0xd4);
          ++pos_;
        } else {
          KVMESH_ASSIGN_OR_RETURN(len, LengthField(field, b == 0xc7 ? 1 : (b == 0xc8 ? 2 : 4)));
        }
        return Bytes(field, "ext", len + 1, at, std::numeric_limits<size_t>::max()).status();
      }
      case Kind::kArray: {
        KVMESH_ASSIGN_OR_RETURN(uint32_t n, ArrayHeader(field));
        for (uint32_t i = 0; i < n; ++i) KVMESH_RETURN_IF_ERROR(Skip(field, depth + 1));
        return Status::Ok();
      }
      case Kind::kMap: {
        KVMESH_ASSIGN_OR_RETURN(uint32_t n, MapHeader(field));
        for (uint64_t i = 0; i < 2 * uint64_t{n}; ++i) {
          KVMESH_RETURN_IF_ERROR(Skip(field, depth + 1));
        }
        return Status::Ok();
      }
      case Kind::kInvalid:
        break;
    }
    return DataLoss(field, "invalid msgpack byte", at);
  }

 private:
  Status WrongType(std::string_view field, std::string_view want, Kind got, size_t at) const {
    return Invalid(field,
                   "expected " + std::string(want) + ", got " + std::string(KindName(got)), at);
  }

  // Consumes the type byte and a big-endian field of `width` bytes after it.
  StatusOr<uint64_t> LengthField(std::string_view field, int width) {
    const size_t at = pos_;
    if (remaining() < 1 + static_cast<size_t>(width)) {
      return DataLoss(field, "truncated value", at);
    }
    uint64_t v = 0;
    for (int i = 1; i <= width; ++i) v = (v << 8) | p_[pos_ + i];
    pos_ += 1 + width;
    return v;
  }

  StatusOr<std::string_view> Bytes(std::string_view field, std::string_view kind, uint64_t len,
                                   size_t at, size_t limit) {
    if (len > remaining()) {
      return DataLoss(field, std::string(kind) + " declares " + std::to_string(len) +
                                 " bytes but only " + std::to_string(remaining()) + " remain",
                      at);
    }
    if (len > limit) {
      return Invalid(field, std::string(kind) + " of " + std::to_string(len) +
                                " bytes exceeds max_string_bytes " + std::to_string(limit),
                     at);
    }
    std::string_view out(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return out;
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const DecodeLimits& limits_;
};

// ---------------------------------------------------------------------------------------------
// Schema decoding.

// Depths: batch 0, events list 1, event 2, event fields 3, list elements 4.
constexpr int kEventDepth = 2;
constexpr int kFieldDepth = 3;

StatusOr<BlockHash> ReadHash(Reader& r, std::string_view field) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(Kind k, r.Peek(field));
  if (k == Kind::kInt) {
    KVMESH_ASSIGN_OR_RETURN(Int i, r.Integer(field));
    return i.bits;
  }
  if (k == Kind::kBin) {
    // vLLM's maybe_convert_block_hash: int.from_bytes(b, "big") & (2**64 - 1).
    KVMESH_ASSIGN_OR_RETURN(std::string_view bytes, r.Bin(field));
    uint64_t v = 0;
    for (char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
    return v;
  }
  return r.Invalid(field, "expected int or bin block hash, got " + std::string(KindName(k)), at);
}

// Reads an array of elements with `read_one`, refusing more than `max` (named `limit_name` in the
// error) before reserving anything.
template <typename T, typename ReadOne>
StatusOr<std::vector<T>> ReadList(Reader& r, std::string_view field, size_t max,
                                  std::string_view what, std::string_view limit_name,
                                  ReadOne read_one) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.ArrayHeader(field));
  if (n > max) {
    return r.Invalid(field,
                     std::to_string(n) + " " + std::string(what) + " exceed " +
                         std::string(limit_name) + " " + std::to_string(max),
                     at);
  }
  std::vector<T> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    auto v = read_one(r, field);
    if (!v.ok()) return v.status().WithContext("element " + std::to_string(i));
    out.push_back(*v);
  }
  return out;
}

StatusOr<std::vector<BlockHash>> ReadHashList(Reader& r, std::string_view field) {
  return ReadList<BlockHash>(r, field, r.limits().max_hashes_per_event, "hashes",
                             "max_hashes_per_event", ReadHash);
}

StatusOr<std::optional<BlockHash>> ReadOptionalHash(Reader& r, std::string_view field) {
  if (r.TryNil()) return std::optional<BlockHash>();
  KVMESH_ASSIGN_OR_RETURN(BlockHash h, ReadHash(r, field));
  return std::optional<BlockHash>(h);
}

StatusOr<uint32_t> ReadUint32(Reader& r, std::string_view field) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(Int i, r.Integer(field));
  if (i.negative || i.bits > std::numeric_limits<uint32_t>::max()) {
    return r.Invalid(field,
                     "value " + (i.negative ? std::to_string(static_cast<int64_t>(i.bits))
                                            : std::to_string(i.bits)) +
                         " out of range [0, 2^32)",
                     at);
  }
  return static_cast<uint32_t>(i.bits);
}

StatusOr<std::vector<uint32_t>> ReadTokenList(Reader& r, std::string_view field) {
  return ReadList<uint32_t>(r, field, r.limits().max_tokens_per_event, "tokens",
                            "max_tokens_per_event", ReadUint32);
}

StatusOr<std::optional<int64_t>> ReadOptionalInt64(Reader& r, std::string_view field) {
  if (r.TryNil()) return std::optional<int64_t>();
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(Int i, r.Integer(field));
  if (!i.negative && i.bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return r.Invalid(field, "value " + std::to_string(i.bits) + " exceeds int64", at);
  }
  return std::optional<int64_t>(static_cast<int64_t>(i.bits));
}

StatusOr<std::optional<std::string>> ReadOptionalStr(Reader& r, std::string_view field) {
  if (r.TryNil()) return std::optional<std::string>();
  KVMESH_ASSIGN_OR_RETURN(std::string_view s, r.Str(field));
  return std::optional<std::string>(std::string(s));
}

// nil -> G1; "GPU"/"CPU"/"DISK" (any case); any other string is an error, so a tier we do not
// model is never silently counted as GPU memory.
StatusOr<Medium> ReadMedium(Reader& r, std::string_view field) {
  if (r.TryNil()) return Medium::kG1;
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(std::string_view s, r.Str(field));
  std::optional<Medium> m = ParseMedium(s);
  if (!m) return r.Invalid(field, "unknown medium \"" + std::string(s) + "\"", at);
  return *m;
}

// All event fields, filled from either form before the event is built.
struct EventFields {
  std::optional<std::vector<BlockHash>> hashes;
  std::optional<BlockHash> parent_hash;
  std::vector<uint32_t> token_ids;
  std::optional<uint32_t> block_size;
  std::optional<int64_t> lora_id;
  Medium medium = Medium::kG1;
  std::optional<std::string> lora_name;
};

enum class EventType { kStored, kRemoved, kCleared };

StatusOr<EventType> ParseTag(Reader& r, std::string_view tag, size_t at) {
  if (tag == "BlockStored") return EventType::kStored;
  if (tag == "BlockRemoved") return EventType::kRemoved;
  if (tag == "AllBlocksCleared") return EventType::kCleared;
  return r.Invalid("type", "unknown event tag \"" + std::string(tag) + "\"", at);
}

// Reads the value of a named field into `f`; unknown names are skipped.
Status ReadNamedField(Reader& r, std::string_view name, EventFields& f) {
  if (name == "block_hashes") {
    KVMESH_ASSIGN_OR_RETURN(f.hashes, ReadHashList(r, name));
  } else if (name == "parent_block_hash") {
    KVMESH_ASSIGN_OR_RETURN(f.parent_hash, ReadOptionalHash(r, name));
  } else if (name == "token_ids") {
    KVMESH_ASSIGN_OR_RETURN(f.token_ids, ReadTokenList(r, name));
  } else if (name == "block_size") {
    KVMESH_ASSIGN_OR_RETURN(f.block_size, ReadUint32(r, name));
  } else if (name == "lora_id") {
    KVMESH_ASSIGN_OR_RETURN(f.lora_id, ReadOptionalInt64(r, name));
  } else if (name == "medium") {
    KVMESH_ASSIGN_OR_RETURN(f.medium, ReadMedium(r, name));
  } else if (name == "lora_name") {
    KVMESH_ASSIGN_OR_RETURN(f.lora_name, ReadOptionalStr(r, name));
  } else {
    return r.Skip(name, kFieldDepth);
  }
  return Status::Ok();
}

// Field order after the tag in the array_like form (vLLM's declaration order).
constexpr std::string_view kStoredFields[] = {"block_hashes", "parent_block_hash", "token_ids",
                                              "block_size",   "lora_id",           "medium",
                                              "lora_name"};
constexpr size_t kStoredRequired = 4;  // block_hashes .. block_size
constexpr std::string_view kRemovedFields[] = {"block_hashes", "medium"};
constexpr size_t kRemovedRequired = 1;

StatusOr<KvEvent> BuildEvent(Reader& r, EventType type, EventFields&& f, size_t at) {
  switch (type) {
    case EventType::kStored: {
      if (!f.hashes) return r.Invalid("BlockStored", "missing block_hashes", at);
      if (!f.block_size) return r.Invalid("BlockStored", "missing block_size", at);
      BlockStored s;
      s.parent_hash = f.parent_hash;
      s.hashes = std::move(*f.hashes);
      s.token_ids = std::move(f.token_ids);
      s.block_size = *f.block_size;
      s.lora_id = f.lora_id;
      s.lora_name = std::move(f.lora_name);
      s.medium = f.medium;
      return KvEvent(std::move(s));
    }
    case EventType::kRemoved: {
      if (!f.hashes) return r.Invalid("BlockRemoved", "missing block_hashes", at);
      BlockRemoved rm;
      rm.hashes = std::move(*f.hashes);
      rm.medium = f.medium;
      return KvEvent(std::move(rm));
    }
    case EventType::kCleared:
      break;
  }
  return KvEvent(AllBlocksCleared{});
}

StatusOr<KvEvent> ReadArrayEvent(Reader& r) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.ArrayHeader("event"));
  if (n == 0) return r.Invalid("event", "empty array has no type tag", at);
  const size_t tag_at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(std::string_view tag, r.Str("type"));
  KVMESH_ASSIGN_OR_RETURN(EventType type, ParseTag(r, tag, tag_at));
  std::span<const std::string_view> names;
  size_t required = 0;
  if (type == EventType::kStored) {
    names = kStoredFields;
    required = kStoredRequired;
  } else if (type == EventType::kRemoved) {
    names = kRemovedFields;
    required = kRemovedRequired;
  }
  const size_t fields = n - 1;
  if (fields < required) {
    return r.Invalid(tag, "array has " + std::to_string(fields) + " fields, needs at least " +
                              std::to_string(required),
                     at);
  }
  EventFields f;
  for (size_t i = 0; i < fields; ++i) {
    if (i < names.size()) {
      KVMESH_RETURN_IF_ERROR(ReadNamedField(r, names[i], f));
    } else {
      KVMESH_RETURN_IF_ERROR(r.Skip("extra trailing field", kFieldDepth));
    }
  }
  return BuildEvent(r, type, std::move(f), at);
}

StatusOr<KvEvent> ReadMapEvent(Reader& r) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.MapHeader("event"));
  EventFields f;
  std::optional<EventType> type;
  for (uint32_t i = 0; i < n; ++i) {
    KVMESH_ASSIGN_OR_RETURN(Kind key_kind, r.Peek("event key"));
    if (key_kind != Kind::kStr) {  // not a field of ours: skip key and value
      KVMESH_RETURN_IF_ERROR(r.Skip("event key", kFieldDepth));
      KVMESH_RETURN_IF_ERROR(r.Skip("event value", kFieldDepth));
      continue;
    }
    KVMESH_ASSIGN_OR_RETURN(std::string_view key, r.Str("event key"));
    if (key == "type") {
      const size_t tag_at = r.offset();
      KVMESH_ASSIGN_OR_RETURN(std::string_view tag, r.Str("type"));
      KVMESH_ASSIGN_OR_RETURN(type, ParseTag(r, tag, tag_at));
    } else {
      KVMESH_RETURN_IF_ERROR(ReadNamedField(r, key, f));
    }
  }
  if (!type) return r.Invalid("event", "map has no \"type\" key", at);
  return BuildEvent(r, *type, std::move(f), at);
}

Status ReadEvents(Reader& r, std::vector<KvEvent>& events) {
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.ArrayHeader("events"));
  if (n > r.limits().max_events_per_batch) {
    return r.Invalid("events", std::to_string(n) + " events exceed max_events_per_batch " +
                                   std::to_string(r.limits().max_events_per_batch),
                     at);
  }
  events.clear();
  events.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    auto kind = r.Peek("event");
    StatusOr<KvEvent> e = !kind.ok()                 ? StatusOr<KvEvent>(kind.status())
                          : *kind == Kind::kMap      ? ReadMapEvent(r)
                          : *kind == Kind::kArray    ? ReadArrayEvent(r)
                                                     : StatusOr<KvEvent>(r.Invalid(
                                                           "event",
                                                           "expected array or map, got " +
                                                               std::string(KindName(*kind)),
                                                           r.offset()));
    if (!e.ok()) return e.status().WithContext("event " + std::to_string(i));
    events.push_back(std::move(e).value());
  }
  return Status::Ok();
}

Status ReadDpRank(Reader& r, std::optional<int64_t>& dp_rank) {
  KVMESH_ASSIGN_OR_RETURN(dp_rank, ReadOptionalInt64(r, "data_parallel_rank"));
  return Status::Ok();
}

}  // namespace

std::string EncodeKvEventBatch(const KvEventBatch& batch) {
  std::string out;
  Writer w(out);
  w.ArrayHeader(batch.dp_rank ? 3 : 2);
  w.Float64(batch.ts);
  w.ArrayHeader(batch.events.size());
  for (const KvEvent& e : batch.events) WriteEvent(w, e);
  if (batch.dp_rank) w.Int(*batch.dp_rank);
  return out;
}

StatusOr<KvEventBatch> DecodeKvEventBatch(std::string_view payload, const DecodeLimits& limits) {
  if (payload.size() > limits.max_payload_bytes) {
    return InvalidArgumentError("payload of " + std::to_string(payload.size()) +
                                " bytes exceeds max_payload_bytes " +
                                std::to_string(limits.max_payload_bytes));
  }
  Reader r(payload, limits);
  KvEventBatch batch;
  bool have_ts = false;
  bool have_events = false;
  const size_t at = r.offset();
  KVMESH_ASSIGN_OR_RETURN(Kind k, r.Peek("batch"));
  if (k == Kind::kArray) {
    KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.ArrayHeader("batch"));
    if (n < 2) {
      return r.Invalid("batch", "array has " + std::to_string(n) + " fields, needs ts and events",
                       at);
    }
    KVMESH_ASSIGN_OR_RETURN(batch.ts, r.Number("ts"));
    KVMESH_RETURN_IF_ERROR(ReadEvents(r, batch.events));
    have_ts = have_events = true;
    if (n >= 3) KVMESH_RETURN_IF_ERROR(ReadDpRank(r, batch.dp_rank));
    for (uint32_t i = 3; i < n; ++i) KVMESH_RETURN_IF_ERROR(r.Skip("extra trailing field", 1));
  } else if (k == Kind::kMap) {
    KVMESH_ASSIGN_OR_RETURN(uint32_t n, r.MapHeader("batch"));
    for (uint32_t i = 0; i < n; ++i) {
      KVMESH_ASSIGN_OR_RETURN(Kind key_kind, r.Peek("batch key"));
      if (key_kind != Kind::kStr) {
        KVMESH_RETURN_IF_ERROR(r.Skip("batch key", 1));
        KVMESH_RETURN_IF_ERROR(r.Skip("batch value", 1));
        continue;
      }
      KVMESH_ASSIGN_OR_RETURN(std::string_view key, r.Str("batch key"));
      if (key == "ts") {
        KVMESH_ASSIGN_OR_RETURN(batch.ts, r.Number("ts"));
        have_ts = true;
      } else if (key == "events") {
        KVMESH_RETURN_IF_ERROR(ReadEvents(r, batch.events));
        have_events = true;
      } else if (key == "data_parallel_rank" || key == "dp_rank") {
        KVMESH_RETURN_IF_ERROR(ReadDpRank(r, batch.dp_rank));
      } else {
        KVMESH_RETURN_IF_ERROR(r.Skip(key, 1));
      }
    }
    if (!have_ts) return r.Invalid("batch", "map has no \"ts\" key", at);
    if (!have_events) return r.Invalid("batch", "map has no \"events\" key", at);
  } else {
    return r.Invalid("batch", "expected array or map, got " + std::string(KindName(k)), at);
  }
  if (!std::isfinite(batch.ts)) return r.Invalid("ts", "timestamp is not finite", at);
  if (r.remaining() != 0) {
    return r.DataLoss("batch", std::to_string(r.remaining()) + " trailing bytes after the batch",
                      r.offset());
  }
  return batch;
}

std::string EncodeKvEventSeq(uint64_t seq) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((seq >> (8 * (7 - i))) & 0xff);
  return out;
}

StatusOr<uint64_t> DecodeKvEventSeq(std::string_view frame) {
  if (frame.size() != 8) {
    return InvalidArgumentError("seq frame must be 8 bytes (big-endian), got " +
                                std::to_string(frame.size()));
  }
  uint64_t v = 0;
  for (char c : frame) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::vector<std::string> EncodeKvEventFrames(std::string_view topic, uint64_t seq,
                                             const KvEventBatch& batch) {
  std::vector<std::string> frames;
  frames.reserve(kKvEventFrameCount);
  frames.emplace_back(topic);
  frames.push_back(EncodeKvEventSeq(seq));
  frames.push_back(EncodeKvEventBatch(batch));
  return frames;
}

StatusOr<DecodedKvEventFrames> DecodeKvEventFrames(std::span<const std::string> frames,
                                                   const DecodeLimits& limits) {
  if (frames.size() != kKvEventFrameCount) {
    return InvalidArgumentError("expected 3 frames (topic, seq, payload), got " +
                                std::to_string(frames.size()));
  }
  if (frames[0].size() > limits.max_string_bytes) {
    return InvalidArgumentError("topic of " + std::to_string(frames[0].size()) +
                                " bytes exceeds max_string_bytes " +
                                std::to_string(limits.max_string_bytes));
  }
  DecodedKvEventFrames out;
  KVMESH_ASSIGN_OR_RETURN(out.seq, DecodeKvEventSeq(frames[1]));
  auto batch = DecodeKvEventBatch(frames[2], limits);
  if (!batch.ok()) return batch.status().WithContext("seq " + std::to_string(out.seq));
  out.topic = frames[0];
  out.batch = std::move(batch).value();
  return out;
}

}  // namespace kvmesh::kv
