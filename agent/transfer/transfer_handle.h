// Wire types of the remote-prefill protocol (docs/kv-transfer.md), as JSON:
//
//  - KvLayoutInfo: what must match between two agents for their blocks to be interchangeable
//    (block size, layers, KV heads, head dim, dtype, bytes per block). Compared at handshake; a
//    mismatch is an error naming the first differing field, never garbage KV.
//  - TransferInfo: a prefill agent's answer to GET /v1/kv/transfer_info (its instance id, layout
//    and RegionDescriptor). The decode agent fetches it once per peer (the handshake).
//  - TransferHandle: what the prefill agent returns with the first token in
//    `kv_transfer_params` and the decode agent receives back (through the router): the peer's URL
//    and instance id, the lease, the block ids holding the prompt's KV and the first token.
//
// Everything parsed here comes from the network: parsers check types, ranges and sizes (block id
// count must equal ceil(num_tokens / block_size) and stay <= kMaxHandleBlocks, byte fields are
// base64 and bounded) and return InvalidArgument naming the field; they never throw.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/transfer/kv_transport.h"
#include "common/status.h"

namespace kvmesh::transfer {

inline constexpr size_t kMaxHandleBlocks = 1 << 20;

struct KvLayoutInfo {
  int32_t block_size = 0;
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  std::string dtype;       // "float32" (CPU backend), "bfloat16" (GPU)
  uint64_t block_bytes = 0;

  friend bool operator==(const KvLayoutInfo&, const KvLayoutInfo&) = default;
};

// OK when equal; else FailedPrecondition "KV layout mismatch: <field> local <a> vs peer <b>".
Status CheckLayoutsMatch(const KvLayoutInfo& local, const KvLayoutInfo& peer);

struct TransferInfo {
  std::string agent_id;  // random per process start: a restarted peer is a different peer
  KvLayoutInfo layout;
  RegionDescriptor region;
};

struct TransferHandle {
  std::string peer_url;   // "http://127.0.0.1:8101": handshake + lease release
  std::string agent_id;   // must equal the TransferInfo's agent_id at that URL
  uint64_t lease_id = 0;
  int64_t lease_expiry_unix_ms = 0;  // after this the prefill agent may have freed the blocks
  int32_t num_tokens = 0;            // prompt tokens whose KV the blocks hold (> 0)
  int32_t first_token = -1;          // sampled by the prefill agent (>= 0)
  int32_t block_size = 0;            // (> 0)
  std::vector<uint32_t> block_ids;   // in sequence order, ceil(num_tokens / block_size) of them
};

nlohmann::json KvLayoutInfoToJson(const KvLayoutInfo& layout);
StatusOr<KvLayoutInfo> KvLayoutInfoFromJson(const nlohmann::json& j);

// Byte fields are base64 in JSON.
nlohmann::json RegionDescriptorToJson(const RegionDescriptor& region);
StatusOr<RegionDescriptor> RegionDescriptorFromJson(const nlohmann::json& j);

nlohmann::json TransferInfoToJson(const TransferInfo& info);
StatusOr<TransferInfo> TransferInfoFromJson(const nlohmann::json& j);

nlohmann::json TransferHandleToJson(const TransferHandle& handle);
// `j` is the kv_transfer_params object (extra keys such as do_remote_prefill are ignored).
StatusOr<TransferHandle> TransferHandleFromJson(const nlohmann::json& j);

std::string Base64Encode(std::string_view bytes);
// InvalidArgument for characters outside the alphabet or bad padding.
StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace kvmesh::transfer
