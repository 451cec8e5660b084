#include "kv/block_hash.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <bit>
#include <cstring>

namespace kvmesh::kv {
namespace {
static_assert(std::endian::native == std::endian::little,
              "block hashing assumes a little-endian host (token bytes are hashed in place)");
}  // namespace

uint64_t SeedForLora(std::string_view lora_name) {
  if (lora_name.empty()) return kBlockHashSeed;
  return kBlockHashSeed + XXH3_64bits(lora_name.data(), lora_name.size());
}

BlockHash LocalBlockHash(std::span<const uint32_t> tokens, uint64_t seed, std::string_view salt) {
  if (salt.empty()) {
    return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), seed);
  }
  XXH3_state_t state;
  XXH3_64bits_reset_withSeed(&state, seed);
  XXH3_64bits_update(&state, tokens.data(), tokens.size_bytes());
  XXH3_64bits_update(&state, salt.data(), salt.size());
  return XXH3_64bits_digest(&state);
}

BlockHash ChainSequenceHash(BlockHash parent, BlockHash local, uint64_t seed) {
  uint64_t buf[2] = {parent, local};
  return XXH3_64bits_withSeed(buf, sizeof(buf), seed);
}

namespace {
template <bool kKeepLocal>
Status HashBlocks(std::span<const uint32_t> tokens, const BlockHashOptions& options,
                  std::vector<BlockHash>* local, std::vector<BlockHash>* sequence) {
  if (options.block_size == 0) return InvalidArgumentError("block_size must be > 0, got 0");
  const uint64_t seed = SeedForLora(options.lora_name);
  const size_t n = tokens.size() / options.block_size;
  if constexpr (kKeepLocal) local->reserve(n);
  sequence->reserve(n);
  BlockHash parent = 0;
  for (size_t i = 0; i < n; ++i) {
    auto block = tokens.subspan(i * options.block_size, options.block_size);
    BlockHash h = LocalBlockHash(block, seed, i == 0 ? std::string_view(options.cache_salt)
                                                     : std::string_view());
    if constexpr (kKeepLocal) local->push_back(h);
    parent = (i == 0) ? h : ChainSequenceHash(parent, h, seed);
    sequence->push_back(parent);
  }
  return Status::Ok();
}
}  // namespace

StatusOr<BlockHashes> ComputeBlockHashes(std::span<const uint32_t> tokens,
                                         const BlockHashOptions& options) {
  BlockHashes out;
  KVMESH_RETURN_IF_ERROR(HashBlocks<true>(tokens, options, &out.local, &out.sequence));
  return out;
}

StatusOr<std::vector<BlockHash>> ComputeSequenceHashes(std::span<const uint32_t> tokens,
                                                       const BlockHashOptions& options) {
  std::vector<BlockHash> seq;
  KVMESH_RETURN_IF_ERROR(HashBlocks<false>(tokens, options, nullptr, &seq));
  return seq;
}

}  // namespace kvmesh::kv
