// Block hashing, compatible with Dynamo's KV router so tools interoperate.
//
//  - local hash of a full block = XXH3-64(seed, little-endian uint32 token ids of the block)
//  - sequence hash: h[0] = local[0]; h[i] = XXH3-64(seed, LE bytes of [h[i-1], local[i]])
//  - seed = 1337, or 1337 + XXH3-64(lora_name) (seed 0) for a LoRA adapter
//  - a tenant cache salt is appended to block 0's bytes before hashing (tenants never share blocks)
//  - a trailing partial block has no hash.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::kv {

using BlockHash = uint64_t;

inline constexpr uint64_t kBlockHashSeed = 1337;

struct BlockHashOptions {
  uint32_t block_size = 16;
  std::string lora_name;   // empty: no LoRA (seed 1337)
  std::string cache_salt;  // empty: no salt; else appended to block 0's bytes
};

struct BlockHashes {
  std::vector<BlockHash> local;     // one per full block
  std::vector<BlockHash> sequence;  // one per full block; sequence[i] covers blocks 0..i
};

// Seed for a LoRA adapter name ("" -> kBlockHashSeed).
uint64_t SeedForLora(std::string_view lora_name);

// Hash of one block's tokens (optionally with salt bytes appended) under `seed`.
BlockHash LocalBlockHash(std::span<const uint32_t> tokens, uint64_t seed,
                         std::string_view salt = {});

// Chains a parent sequence hash with a block's local hash.
BlockHash ChainSequenceHash(BlockHash parent, BlockHash local, uint64_t seed);

// Local and sequence hashes of every full block of `tokens`.
// Fails with kInvalidArgument when block_size is 0.
StatusOr<BlockHashes> ComputeBlockHashes(std::span<const uint32_t> tokens,
                                         const BlockHashOptions& options);

// Only the sequence hashes (the hot path for routing); same rules as ComputeBlockHashes.
StatusOr<std::vector<BlockHash>> ComputeSequenceHashes(std::span<const uint32_t> tokens,
                                                       const BlockHashOptions& options);

}  // namespace kvmesh::kv
