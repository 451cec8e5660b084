// Wire codec for KV events in vLLM's ZMQ format (vllm/distributed/kv_events.py), both directions.
//
// A message is three ZMQ frames: [topic, seq (8 bytes, big-endian), payload], where payload is a
// msgpack KVEventBatch. We EMIT msgspec's array_like + tag form:
//   batch            = [ts: float64, [event...], dp_rank: int]      (dp_rank omitted when unset)
//   BlockStored      = ["BlockStored", block_hashes, parent_block_hash|nil, token_ids, block_size,
//                       lora_id|nil, medium, lora_name|nil]
//   BlockRemoved     = ["BlockRemoved", block_hashes, medium]
//   AllBlocksCleared = ["AllBlocksCleared"]
// and ACCEPT that form plus the map form ({"type": "BlockStored", "block_hashes": ...}; batch
// {"ts", "events", "data_parallel_rank"}), in any mix, ignoring unknown map keys and extra
// trailing array fields, with trailing optional fields absent. Block hashes may be int64
// (negative values keep their bit pattern), uint64, or bin (bytes: the low 64 bits of the
// big-endian integer, vLLM's own VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES mapping). docs/kv-events.md
// is the full specification.
//
// Invariants: decoding untrusted bytes never throws, never reads out of bounds, and never
// allocates more than the input justifies: every declared array/map/str/bin length is checked
// against the bytes that remain (and against DecodeLimits) before anything is reserved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/kv_event.h"

namespace kvmesh::kv {

// Bounds applied to untrusted input. Exceeding one is kInvalidArgument naming the limit.
struct DecodeLimits {
  size_t max_payload_bytes = 64u << 20;    // msgpack batch frame
  size_t max_events_per_batch = 65536;
  size_t max_hashes_per_event = 1u << 20;
  size_t max_tokens_per_event = 1u << 24;
  size_t max_string_bytes = 4096;          // tags, keys, medium, lora_name, topic
  int max_depth = 32;                      // nesting of arrays/maps, also in skipped values
};

// ZMQ frame count of one message: topic, seq, payload.
inline constexpr size_t kKvEventFrameCount = 3;

// Encodes a batch as msgpack in the tagged-array form above. Never fails.
std::string EncodeKvEventBatch(const KvEventBatch& batch);

// Decodes one msgpack batch. Errors: kDataLoss for malformed msgpack (truncated, bad type byte,
// declared length past the end, trailing bytes); kInvalidArgument for a well-formed value of the
// wrong shape (wrong type, unknown event tag, unknown medium, limit exceeded). The message names
// the field, the event index and the byte offset.
StatusOr<KvEventBatch> DecodeKvEventBatch(std::string_view payload,
                                          const DecodeLimits& limits = {});

// 8-byte big-endian sequence frame, and back (kInvalidArgument unless exactly 8 bytes).
std::string EncodeKvEventSeq(uint64_t seq);
StatusOr<uint64_t> DecodeKvEventSeq(std::string_view frame);

// [topic, seq, payload] for one batch.
std::vector<std::string> EncodeKvEventFrames(std::string_view topic, uint64_t seq,
                                             const KvEventBatch& batch);

struct DecodedKvEventFrames {
  std::string topic;
  uint64_t seq = 0;
  KvEventBatch batch;
};

// Decodes one multipart message. Errors: kInvalidArgument for a frame count other than 3, a seq
// frame that is not 8 bytes, a topic or payload over the limits; else DecodeKvEventBatch's.
StatusOr<DecodedKvEventFrames> DecodeKvEventFrames(std::span<const std::string> frames,
                                                   const DecodeLimits& limits = {});

}  // namespace kvmesh::kv
