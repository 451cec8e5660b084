// The internal KV event model, shared by the block pool and tiers (producers), the agent's
// publisher, the wire codec (kv/kv_event_codec.h) and the router's global index (consumers).
//
// Events mirror vLLM's KV events so that kvmesh and vLLM/SGLang workers can share one router:
//   BlockStored{parent_hash, hashes, token_ids, block_size, lora, medium}
//   BlockRemoved{hashes, medium}
//   AllBlocksCleared{}
// A producer numbers batches per worker with a monotonically increasing sequence number; a gap
// in the numbers tells a consumer it missed events (it then replays or resyncs from inventory).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kv/block_hash.h"

namespace kvmesh::kv {

// Storage tier. Wire strings (vLLM's `medium`): G1 "GPU" (the engine's own KV memory, also in
// CPU mode), G2 "CPU" (host offload tier), G3 "DISK" (local disk tier).
enum class Medium : uint8_t { kG1 = 0, kG2 = 1, kG3 = 2 };
inline constexpr int kNumMedia = 3;

std::string_view MediumWireName(Medium m);
// Accepts "GPU"/"CPU"/"DISK" (case-insensitive) and a missing medium (nullopt -> G1).
std::optional<Medium> ParseMedium(std::string_view wire);

struct BlockStored {
  std::optional<BlockHash> parent_hash;  // sequence hash of the block before hashes[0], if any
  std::vector<BlockHash> hashes;         // sequence hashes, in prefix order
  std::vector<uint32_t> token_ids;       // hashes.size() * block_size tokens (may be empty)
  uint32_t block_size = 0;
  std::optional<int64_t> lora_id;
  std::optional<std::string> lora_name;
  Medium medium = Medium::kG1;
  friend bool operator==(const BlockStored&, const BlockStored&) = default;
};

struct BlockRemoved {
  std::vector<BlockHash> hashes;
  Medium medium = Medium::kG1;
  friend bool operator==(const BlockRemoved&, const BlockRemoved&) = default;
};

struct AllBlocksCleared {
  friend bool operator==(const AllBlocksCleared&, const AllBlocksCleared&) = default;
};

using KvEvent = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

struct KvEventBatch {
  double ts = 0;  // seconds since the Unix epoch
  std::vector<KvEvent> events;
  std::optional<int64_t> dp_rank;
  friend bool operator==(const KvEventBatch&, const KvEventBatch&) = default;
};

// Where producers (block pool, tiers) send events. Called on the producer's thread; an
// implementation that crosses threads does its own synchronization.
class KvEventSink {
 public:
  virtual ~KvEventSink() = default;
  virtual void Emit(KvEvent event) = 0;
};

}  // namespace kvmesh::kv
