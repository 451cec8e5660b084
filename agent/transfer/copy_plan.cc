#include "agent/transfer/copy_plan.h"

#include <cstdint>
#include <limits>
#include <string>

namespace kvmesh::transfer {
namespace {

bool RegionOverflows(uint64_t base, uint64_t block_bytes, uint32_t num_blocks) {
  unsigned __int128 end = static_cast<unsigned __int128>(block_bytes) * num_blocks + base;
  return end > std::numeric_limits<uint64_t>::max();
}

}  // namespace

StatusOr<std::vector<CopyRun>> PlanCopies(std::span<const BlockCopy> copies, RegionGeometry local,
                                          RegionGeometry remote) {
  if (local.block_bytes != remote.block_bytes) {
    return InvalidArgumentError("block_bytes mismatch: local " + std::to_string(local.block_bytes) +
                                " vs remote " + std::to_string(remote.block_bytes));
  }
  const uint64_t bb = local.block_bytes;
  std::vector<CopyRun> runs;
  uint32_t prev_remote = 0;
  uint32_t prev_local = 0;
  for (size_t i = 0; i < copies.size(); ++i) {
    const BlockCopy& c = copies[i];
    if (c.remote_block >= remote.num_blocks) {
      return InvalidArgumentError("copies[" + std::to_string(i) + "]: remote_block " +
                                  std::to_string(c.remote_block) + " >= remote num_blocks " +
                                  std::to_string(remote.num_blocks));
    }
    if (c.local_block >= local.num_blocks) {
      return InvalidArgumentError("copies[" + std::to_string(i) + "]: local_block " +
                                  std::to_string(c.local_block) + " >= local num_blocks " +
                                  std::to_string(local.num_blocks));
    }
    if (!runs.empty() && c.remote_block == prev_remote + 1 && c.local_block == prev_local + 1) {
      runs.back().bytes += bb;
    } else {
      runs.push_back(CopyRun{c.remote_block * bb, c.local_block * bb, bb});
    }
    prev_remote = c.remote_block;
    prev_local = c.local_block;
  }
  return runs;
}

Status CheckRemoteDescriptor(const RegionDescriptor& remote, std::string_view transport,
                             bool require_rkey) {
  if (remote.transport != transport) {
    return InvalidArgumentError("descriptor is for transport \"" + remote.transport +
                                "\", this transport is \"" + std::string(transport) + "\"");
  }
  if (remote.block_bytes == 0 || remote.num_blocks == 0) {
    return InvalidArgumentError("descriptor geometry must be non-zero: block_bytes " +
                                std::to_string(remote.block_bytes) + ", num_blocks " +
                                std::to_string(remote.num_blocks));
  }
  if (RegionOverflows(remote.base, remote.block_bytes, remote.num_blocks)) {
    return InvalidArgumentError("descriptor region overflows: base " + std::to_string(remote.base) +
                                " + " + std::to_string(remote.block_bytes) + " * " +
                                std::to_string(remote.num_blocks));
  }
  if (remote.worker_address.empty() || remote.worker_address.size() > kMaxWorkerAddressBytes) {
    return InvalidArgumentError("descriptor worker_address size " +
                                std::to_string(remote.worker_address.size()) + " not in [1, " +
                                std::to_string(kMaxWorkerAddressBytes) + "]");
  }
  if ((require_rkey && remote.rkey.empty()) || remote.rkey.size() > kMaxRkeyBytes) {
    return InvalidArgumentError("descriptor rkey size " + std::to_string(remote.rkey.size()) +
                                " not in [" + (require_rkey ? "1" : "0") + ", " +
                                std::to_string(kMaxRkeyBytes) + "]");
  }
  return Status::Ok();
}

Status CheckLocalRegion(const void* base, uint64_t block_bytes, uint32_t num_blocks) {
  if (base == nullptr) return InvalidArgumentError("region base is null");
  if (block_bytes == 0 || num_blocks == 0) {
    return InvalidArgumentError("region geometry must be non-zero: block_bytes " +
                                std::to_string(block_bytes) + ", num_blocks " +
                                std::to_string(num_blocks));
  }
  if (RegionOverflows(reinterpret_cast<uintptr_t>(base), block_bytes, num_blocks)) {
    return InvalidArgumentError("region overflows the address space: " +
                                std::to_string(block_bytes) + " * " + std::to_string(num_blocks));
  }
  return Status::Ok();
}

}  // namespace kvmesh::transfer
