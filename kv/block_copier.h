// Byte movement between the engine's KV memory (G1) and host memory (G2, disk staging).
//
// The tiers never touch G1 memory directly: they reach a block's bytes through BlockMemory (the
// engine's accessor for its KV tensors) and move them through a BlockCopier. In CPU mode both
// are plain host memory and MemcpyBlockCopier does the work; the CUDA engine later plugs in a
// copier built on cudaMemcpyAsync (+ a stream sync in Synchronize()) and a BlockMemory over its
// device tensors, without changing the tiers.
//
// Invariants: a BlockMemory span for a valid block id is exactly block_bytes() long and stays
// valid for the lifetime of the BlockMemory. Copies never overlap source and destination.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "kv/block_pool.h"

namespace kvmesh::kv {

// Moves `n` bytes between engine (G1) memory and host memory.
class BlockCopier {
 public:
  virtual ~BlockCopier() = default;
  // G1 -> host. `dst` is host memory, `src` engine memory. Error status if the copy failed.
  virtual Status CopyToHost(void* dst, const void* src, size_t n) = 0;
  // Host -> G1. `dst` is engine memory, `src` host memory. Error status if the copy failed.
  virtual Status CopyFromHost(void* dst, const void* src, size_t n) = 0;
  // Waits for copies issued so far (asynchronous copiers). The tiers call it before they reuse
  // or read a host buffer they copied into/out of.
  virtual Status Synchronize() { return Status::Ok(); }
};

// Synchronous std::memcpy; for CPU mode and tests. Never fails.
class MemcpyBlockCopier final : public BlockCopier {
 public:
  Status CopyToHost(void* dst, const void* src, size_t n) override;
  Status CopyFromHost(void* dst, const void* src, size_t n) override;
};

// The engine's accessor for the bytes of a G1 block.
class BlockMemory {
 public:
  virtual ~BlockMemory() = default;
  // The block's bytes (block_bytes() long); an empty span for an id out of range.
  virtual std::span<std::byte> BlockBytes(BlockId block) = 0;
  virtual size_t block_bytes() const = 0;
};

// One host buffer of num_blocks * block_bytes, allocated once (CPU mode, demo, tests).
class HostBlockMemory final : public BlockMemory {
 public:
  HostBlockMemory(uint32_t num_blocks, size_t block_bytes);
  std::span<std::byte> BlockBytes(BlockId block) override;
  size_t block_bytes() const override { return block_bytes_; }
  uint32_t num_blocks() const { return num_blocks_; }

 private:
  uint32_t num_blocks_;
  size_t block_bytes_;
  std::vector<std::byte> bytes_;
};

}  // namespace kvmesh::kv
