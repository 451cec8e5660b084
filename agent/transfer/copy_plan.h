// CopyPlan: the validation and run-merging shared by every KvTransport implementation.
//
// A block list from the network is untrusted. PlanCopies checks every BlockCopy against both
// regions before anything moves and turns the list into byte runs, merging consecutive copies whose
// remote and local ids both advance by one (one RMA operation per run instead of per block).
// CheckRemoteDescriptor is what Connect() checks about a peer's descriptor.
//
// Invariants: a returned run lies entirely inside both regions (offset + bytes <= block_bytes *
// num_blocks on each side, computed without overflow); on error nothing is returned.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "agent/transfer/kv_transport.h"
#include "common/status.h"

namespace kvmesh::transfer {

struct CopyRun {
  uint64_t remote_offset = 0;  // bytes from the remote region's base
  uint64_t local_offset = 0;   // bytes from the local region's base
  uint64_t bytes = 0;

  friend bool operator==(const CopyRun&, const CopyRun&) = default;
};

struct RegionGeometry {
  uint64_t block_bytes = 0;
  uint32_t num_blocks = 0;
};

// InvalidArgument naming the first bad copy ("copies[3]: remote_block 17 >= remote num_blocks 16")
// or the block_bytes mismatch. An empty list yields no runs.
StatusOr<std::vector<CopyRun>> PlanCopies(std::span<const BlockCopy> copies, RegionGeometry local,
                                          RegionGeometry remote);

// InvalidArgument when `remote` is of another transport than `transport`, has zero or overflowing
// geometry (base + block_bytes * num_blocks past 2^64), an empty or oversized worker_address, or
// an oversized rkey (an empty rkey is rejected when `require_rkey`).
Status CheckRemoteDescriptor(const RegionDescriptor& remote, std::string_view transport,
                             bool require_rkey);

// InvalidArgument for a null base, zero sizes, or a region whose end overflows the address space.
Status CheckLocalRegion(const void* base, uint64_t block_bytes, uint32_t num_blocks);

}  // namespace kvmesh::transfer
