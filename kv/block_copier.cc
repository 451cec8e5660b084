#include "kv/block_copier.h"

#include <cstring>

namespace kvmesh::kv {

Status MemcpyBlockCopier::CopyToHost(void* dst, const void* src, size_t n) {
  if (n != 0) std::memcpy(dst, src, n);
  return Status::Ok();
}

Status MemcpyBlockCopier::CopyFromHost(void* dst, const void* src, size_t n) {
  if (n != 0) std::memcpy(dst, src, n);
  return Status::Ok();
}

HostBlockMemory::HostBlockMemory(uint32_t num_blocks, size_t block_bytes)
    : num_blocks_(num_blocks),
      block_bytes_(block_bytes),
      bytes_(static_cast<size_t>(num_blocks) * block_bytes) {}

std::span<std::byte> HostBlockMemory::BlockBytes(BlockId block) {
  if (block >= num_blocks_) return {};
  return std::span<std::byte>(bytes_).subspan(static_cast<size_t>(block) * block_bytes_,
                                              block_bytes_);
}

}  // namespace kvmesh::kv
