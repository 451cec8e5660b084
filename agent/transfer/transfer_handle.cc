#include "agent/transfer/transfer_handle.h"

#include <array>
#include <limits>
#include <string>
#include <utility>

namespace kvmesh::transfer {
namespace {

using nlohmann::json;

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr size_t kMaxStringBytes = 4096;  // ids, URLs, dtype, transport names

std::string Describe(const json& v) {
  std::string s = v.dump();
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

Status FieldError(std::string_view field, std::string_view what, const json* v = nullptr) {
  std::string msg = std::string(field) + ": " + std::string(what);
  if (v != nullptr) msg += ", got " + Describe(*v);
  return InvalidArgumentError(std::move(msg));
}

StatusOr<const json*> Field(const json& j, std::string_view field) {
  if (!j.is_object()) return FieldError(field, "expected a JSON object around it", &j);
  auto it = j.find(field);
  if (it == j.end()) return FieldError(field, "missing");
  return &*it;
}

// Integers: JSON integers only (no floats, strings or bools), range-checked in 128 bits.
StatusOr<__int128> IntegerValue(const json& v) {
  if (!v.is_number_integer()) return InvalidArgumentError("must be an integer");
  if (v.is_number_unsigned()) return static_cast<__int128>(v.get<uint64_t>());
  return static_cast<__int128>(v.get<int64_t>());
}

template <typename T>
StatusOr<T> IntField(const json& j, std::string_view field, T lo, T hi) {
  KVMESH_ASSIGN_OR_RETURN(const json* v, Field(j, field));
  auto n = IntegerValue(*v);
  if (!n.ok()) return FieldError(field, n.status().message(), v);
  if (*n < static_cast<__int128>(lo) || *n > static_cast<__int128>(hi)) {
    return FieldError(field, "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                      v);
  }
  return static_cast<T>(*n);
}

StatusOr<std::string> StringField(const json& j, std::string_view field, size_t max_bytes,
                                  bool allow_empty) {
  KVMESH_ASSIGN_OR_RETURN(const json* v, Field(j, field));
  if (!v->is_string()) return FieldError(field, "must be a string", v);
  const std::string& s = v->get_ref<const std::string&>();
  if (!allow_empty && s.empty()) return FieldError(field, "must not be empty");
  if (s.size() > max_bytes) {
    return FieldError(field, "longer than " + std::to_string(max_bytes) + " bytes (" +
                                 std::to_string(s.size()) + ")");
  }
  return s;
}

StatusOr<std::string> Base64Field(const json& j, std::string_view field, size_t max_bytes,
                                  bool allow_empty) {
  // base64 expands 3 -> 4; bound the text before decoding.
  KVMESH_ASSIGN_OR_RETURN(std::string text,
                          StringField(j, field, (max_bytes + 2) / 3 * 4, allow_empty));
  auto bytes = Base64Decode(text);
  if (!bytes.ok()) return FieldError(field, bytes.status().message());
  if (bytes->size() > max_bytes) {
    return FieldError(field, "decodes to more than " + std::to_string(max_bytes) + " bytes");
  }
  return std::move(bytes).value();
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                 static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (rest == 2) {
    uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

StatusOr<std::string> Base64Decode(std::string_view text) {
  static const std::array<int8_t, 256> kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int k = 0; k < 64; ++k) t[static_cast<uint8_t>(kAlphabet[k])] = static_cast<int8_t>(k);
    return t;
  }();
  if (text.size() % 4 != 0) {
    return InvalidArgumentError("base64 length " + std::to_string(text.size()) +
                                " is not a multiple of 4");
  }
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = (text.size() >= 2 && text[text.size() - 2] == '=') ? 2 : 1;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    uint32_t n = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=') {
        if (!last || k < 4 - pad) {
          return InvalidArgumentError("base64 padding '=' at offset " + std::to_string(i + k));
        }
        n <<= 6;
        continue;
      }
      int8_t v = kTable[static_cast<uint8_t>(c)];
      if (v < 0) {
        return InvalidArgumentError("base64 character outside the alphabet at offset " +
                                    std::to_string(i + k));
      }
      n = (n << 6) | static_cast<uint32_t>(v);
    }
    out += static_cast<char>((n >> 16) & 0xff);
    if (!(last && pad == 2)) out += static_cast<char>((n >> 8) & 0xff);
    if (!(last && pad >= 1)) out += static_cast<char>(n & 0xff);
    // Canonical form: bits dropped by padding must be zero.
    if (last && pad == 1 && (n & 0xff) != 0) return InvalidArgumentError("base64 non-zero padding bits");
    if (last && pad == 2 && (n & 0xffff) != 0) return InvalidArgumentError("base64 non-zero padding bits");
  }
  return out;
}

Status CheckLayoutsMatch(const KvLayoutInfo& local, const KvLayoutInfo& peer) {
  auto mismatch = [](std::string_view field, const std::string& a, const std::string& b) {
    return FailedPreconditionError("KV layout mismatch: " + std::string(field) + " local " + a +
                                   " vs peer " + b);
  };
  if (local.block_size != peer.block_size) {
    return mismatch("block_size", std::to_string(local.block_size), std::to_string(peer.block_size));
  }
  if (local.num_layers != peer.num_layers) {
    return mismatch("num_layers", std::to_string(local.num_layers), std::to_string(peer.num_layers));
  }
  if (local.num_kv_heads != peer.num_kv_heads) {
    return mismatch("num_kv_heads", std::to_string(local.num_kv_heads),
                    std::to_string(peer.num_kv_heads));
  }
  if (local.head_dim != peer.head_dim) {
    return mismatch("head_dim", std::to_string(local.head_dim), std::to_string(peer.head_dim));
  }
  if (local.dtype != peer.dtype) return mismatch("dtype", local.dtype, peer.dtype);
  if (local.block_bytes != peer.block_bytes) {
    return mismatch("block_bytes", std::to_string(local.block_bytes),
                    std::to_string(peer.block_bytes));
  }
  return Status::Ok();
}

nlohmann::json KvLayoutInfoToJson(const KvLayoutInfo& layout) {
  return json{{"block_size", layout.block_size},   {"num_layers", layout.num_layers},
              {"num_kv_heads", layout.num_kv_heads}, {"head_dim", layout.head_dim},
              {"dtype", layout.dtype},             {"block_bytes", layout.block_bytes}};
}

StatusOr<KvLayoutInfo> KvLayoutInfoFromJson(const nlohmann::json& j) {
  constexpr int32_t kMax = std::numeric_limits<int32_t>::max();
  KvLayoutInfo l;
  KVMESH_ASSIGN_OR_RETURN(l.block_size, IntField<int32_t>(j, "block_size", 1, kMax));
  KVMESH_ASSIGN_OR_RETURN(l.num_layers, IntField<int32_t>(j, "num_layers", 1, kMax));
  KVMESH_ASSIGN_OR_RETURN(l.num_kv_heads, IntField<int32_t>(j, "num_kv_heads", 1, kMax));
  KVMESH_ASSIGN_OR_RETURN(l.head_dim, IntField<int32_t>(j, "head_dim", 1, kMax));
  KVMESH_ASSIGN_OR_RETURN(l.dtype, StringField(j, "dtype", 64, /*allow_empty=*/false));
  KVMESH_ASSIGN_OR_RETURN(l.block_bytes, IntField<uint64_t>(j, "block_bytes", 1,
                                                            std::numeric_limits<uint64_t>::max()));
  return l;
}

nlohmann::json RegionDescriptorToJson(const RegionDescriptor& region) {
  return json{{"transport", region.transport},
              {"worker_address", Base64Encode(region.worker_address)},
              {"rkey", Base64Encode(region.rkey)},
              {"base", region.base},
              {"block_bytes", region.block_bytes},
              {"num_blocks", region.num_blocks}};
}

StatusOr<RegionDescriptor> RegionDescriptorFromJson(const nlohmann::json& j) {
  RegionDescriptor r;
  KVMESH_ASSIGN_OR_RETURN(r.transport, StringField(j, "transport", 64, /*allow_empty=*/false));
  KVMESH_ASSIGN_OR_RETURN(r.worker_address, Base64Field(j, "worker_address", kMaxWorkerAddressBytes,
                                                        /*allow_empty=*/false));
  KVMESH_ASSIGN_OR_RETURN(r.rkey, Base64Field(j, "rkey", kMaxRkeyBytes, /*allow_empty=*/true));
  KVMESH_ASSIGN_OR_RETURN(r.base,
                          IntField<uint64_t>(j, "base", 0, std::numeric_limits<uint64_t>::max()));
  KVMESH_ASSIGN_OR_RETURN(r.block_bytes, IntField<uint64_t>(j, "block_bytes", 1,
                                                            std::numeric_limits<uint64_t>::max()));
  KVMESH_ASSIGN_OR_RETURN(r.num_blocks, IntField<uint32_t>(j, "num_blocks", 1,
                                                           std::numeric_limits<uint32_t>::max()));
  // The region must fit in the address space: base + block_bytes * num_blocks without overflow.
  unsigned __int128 end = static_cast<unsigned __int128>(r.block_bytes) * r.num_blocks + r.base;
  if (end > std::numeric_limits<uint64_t>::max()) {
    return FieldError("num_blocks", "region base + block_bytes * num_blocks overflows 64 bits");
  }
  return r;
}

nlohmann::json TransferInfoToJson(const TransferInfo& info) {
  return json{{"agent_id", info.agent_id},
              {"layout", KvLayoutInfoToJson(info.layout)},
              {"region", RegionDescriptorToJson(info.region)}};
}

StatusOr<TransferInfo> TransferInfoFromJson(const nlohmann::json& j) {
  TransferInfo info;
  KVMESH_ASSIGN_OR_RETURN(info.agent_id, StringField(j, "agent_id", kMaxStringBytes, false));
  KVMESH_ASSIGN_OR_RETURN(const json* layout, Field(j, "layout"));
  auto l = KvLayoutInfoFromJson(*layout);
  if (!l.ok()) return l.status().WithContext("layout");
  info.layout = std::move(l).value();
  KVMESH_ASSIGN_OR_RETURN(const json* region, Field(j, "region"));
  auto r = RegionDescriptorFromJson(*region);
  if (!r.ok()) return r.status().WithContext("region");
  info.region = std::move(r).value();
  if (info.region.block_bytes != info.layout.block_bytes) {
    return FieldError("region.block_bytes", "differs from layout.block_bytes " +
                                                std::to_string(info.layout.block_bytes) + " (" +
                                                std::to_string(info.region.block_bytes) + ")");
  }
  return info;
}

nlohmann::json TransferHandleToJson(const TransferHandle& handle) {
  return json{{"peer_url", handle.peer_url},
              {"agent_id", handle.agent_id},
              {"lease_id", handle.lease_id},
              {"lease_expiry_unix_ms", handle.lease_expiry_unix_ms},
              {"num_tokens", handle.num_tokens},
              {"first_token", handle.first_token},
              {"block_size", handle.block_size},
              {"block_ids", handle.block_ids}};
}

StatusOr<TransferHandle> TransferHandleFromJson(const nlohmann::json& j) {
  constexpr int32_t kMax32 = std::numeric_limits<int32_t>::max();
  TransferHandle h;
  KVMESH_ASSIGN_OR_RETURN(h.peer_url, StringField(j, "peer_url", kMaxStringBytes, false));
  if (h.peer_url.rfind("http://", 0) != 0 && h.peer_url.rfind("https://", 0) != 0) {
    return FieldError("peer_url", "must start with http:// or https://, got \"" + h.peer_url + "\"");
  }
  KVMESH_ASSIGN_OR_RETURN(h.agent_id, StringField(j, "agent_id", kMaxStringBytes, false));
  KVMESH_ASSIGN_OR_RETURN(h.lease_id, IntField<uint64_t>(j, "lease_id", 1,
                                                         std::numeric_limits<uint64_t>::max()));
  KVMESH_ASSIGN_OR_RETURN(h.lease_expiry_unix_ms,
                          IntField<int64_t>(j, "lease_expiry_unix_ms", 0,
                                            std::numeric_limits<int64_t>::max()));
  KVMESH_ASSIGN_OR_RETURN(h.num_tokens, IntField<int32_t>(j, "num_tokens", 1, kMax32));
  KVMESH_ASSIGN_OR_RETURN(h.first_token, IntField<int32_t>(j, "first_token", 0, kMax32));
  KVMESH_ASSIGN_OR_RETURN(h.block_size, IntField<int32_t>(j, "block_size", 1, kMax32));
  KVMESH_ASSIGN_OR_RETURN(const json* ids, Field(j, "block_ids"));
  if (!ids->is_array()) return FieldError("block_ids", "must be an array", ids);
  const uint64_t want =
      (static_cast<uint64_t>(h.num_tokens) + static_cast<uint64_t>(h.block_size) - 1) /
      static_cast<uint64_t>(h.block_size);
  if (want > kMaxHandleBlocks) {
    return FieldError("block_ids", "ceil(num_tokens / block_size) = " + std::to_string(want) +
                                       " exceeds " + std::to_string(kMaxHandleBlocks));
  }
  if (ids->size() != want) {
    return FieldError("block_ids", "has " + std::to_string(ids->size()) +
                                       " ids, expected ceil(num_tokens / block_size) = " +
                                       std::to_string(want));
  }
  h.block_ids.reserve(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) {
    const json& v = (*ids)[i];
    auto n = IntegerValue(v);
    if (!n.ok() || *n < 0 || *n > std::numeric_limits<uint32_t>::max()) {
      return FieldError("block_ids[" + std::to_string(i) + "]", "must be an integer in [0, 2^32)",
                        &v);
    }
    h.block_ids.push_back(static_cast<uint32_t>(*n));
  }
  return h;
}

}  // namespace kvmesh::transfer
