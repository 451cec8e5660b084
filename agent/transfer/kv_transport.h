// KvTransport: moves whole KV blocks between this agent's KV cache and a peer's, one-sided.
//
// Each side registers one block region: `num_blocks` blocks of `block_bytes` each, block i at
// base + i * block_bytes (the engine's block-major KV cache, kernels/backend.h). A side describes
// its region (RegionDescriptor: transport address + remote key + geometry), the descriptor travels
// out of band (the agent's HTTP handshake, GET /v1/kv/transfer_info), and the other side Connect()s
// to it and posts reads (remote -> local, the decode agent pulling a prefill agent's blocks) or
// writes (local -> remote) of block lists.
//
// Implementations: UcxTransport (ucx_transport.h: one-sided RMA GET/PUT of registered memory with
// the peer's packed remote key; tcp, shared memory, whatever UCX_TLS allows) and LoopbackTransport
// (loopback_transport.h: memcpy within one process, for unit tests of the layers above).
//
// Invariants:
//  - Descriptors and block ids come from the network and are untrusted. PostRead/PostWrite check
//    every BlockCopy against both regions (remote_block < remote num_blocks, local_block < local
//    num_blocks, equal block_bytes) before anything is posted: a bad list is InvalidArgument naming
//    the bad id, and nothing moves. Connect() rejects a descriptor whose geometry overflows or
//    whose key/address is empty or oversized. Nothing outside a registered region is ever read or
//    written.
//  - Every successful Post* calls its CompletionCallback exactly once: OK when all bytes moved,
//    an error (Unavailable: peer lost / transport error; Cancelled: Cancel() or Disconnect() or
//    destruction) otherwise. Callbacks run on the thread that calls Progress() (or, for errors
//    found while cancelling, in Cancel()/Disconnect()/the destructor), never inside Post*.
//  - The caller keeps the blocks pinned (block pool refcount) until the callback ran.
//
// Threading: not thread-safe. One thread (the agent's transfer thread) calls every method. The
// destructor cancels outstanding transfers (their callbacks run) and releases registrations,
// endpoints and the UCX context in reverse order of creation.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvmesh::transfer {

// Where one side's blocks live and how a peer reaches them. Serializable (ToJson/FromJson in
// transfer_handle.h); the byte fields are opaque to everyone but the transport that made them.
struct RegionDescriptor {
  std::string transport;       // KvTransport::name() of the side that made it: "ucx", "loopback"
  std::string worker_address;  // UCX: ucp_worker_get_address bytes; loopback: the instance key
  std::string rkey;            // UCX: ucp_rkey_pack bytes; loopback: empty
  uint64_t base = 0;           // remote virtual address of block 0
  uint64_t block_bytes = 0;    // bytes per block (> 0)
  uint32_t num_blocks = 0;     // blocks in the region (> 0)

  friend bool operator==(const RegionDescriptor&, const RegionDescriptor&) = default;
};

// Upper bounds a descriptor from the network must respect (Connect() checks them).
inline constexpr size_t kMaxWorkerAddressBytes = 64 << 10;
inline constexpr size_t kMaxRkeyBytes = 64 << 10;

struct BlockCopy {
  uint32_t remote_block = 0;
  uint32_t local_block = 0;
};

using PeerId = uint64_t;      // 0 is never a valid peer
using TransferId = uint64_t;  // 0 is never a valid transfer
using CompletionCallback = std::function<void(TransferId id, const Status& result)>;

struct TransportStats {
  uint64_t bytes_read = 0;      // completed reads only
  uint64_t bytes_written = 0;   // completed writes only
  uint64_t transfers_ok = 0;
  uint64_t transfers_failed = 0;  // includes cancelled
  uint32_t peers = 0;             // connected now
  uint32_t in_flight = 0;         // posted, callback not yet run
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;

  // "ucx" or "loopback".
  virtual std::string name() const = 0;

  // Registers the local block region; once, before DescribeLocal/Connect/Post*. The memory must
  // outlive the transport. InvalidArgument for null base, zero sizes or overflow;
  // FailedPrecondition when already registered; Unavailable when the transport refuses.
  virtual Status RegisterLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) = 0;

  // Instead of RegisterLocal: allocates the block region inside the transport, zeroed, and
  // registers it. UCX allocates it where its peers reach it fastest (a shared-memory segment that
  // a peer on the same host maps and copies from directly, instead of a cross-memory-attach
  // syscall per read). The memory is owned by the transport and valid until it is destroyed.
  // Unimplemented when the transport cannot allocate (then use RegisterLocal); otherwise the
  // errors of RegisterLocal, or ResourceExhausted when the memory cannot be had.
  virtual StatusOr<void*> AllocateLocal(uint64_t block_bytes, uint32_t num_blocks) {
    (void)block_bytes;
    (void)num_blocks;
    return UnimplementedError(name() + " transport cannot allocate its region");
  }

  // The descriptor a peer passes to Connect(). FailedPrecondition before RegisterLocal.
  virtual StatusOr<RegionDescriptor> DescribeLocal() const = 0;

  // Opens an endpoint to the peer described by `remote` and unpacks its key. InvalidArgument for
  // a descriptor of another transport, bad geometry or oversized fields; Unavailable when the
  // endpoint cannot be created (unreachable address, garbage key). Connecting twice to the same
  // descriptor returns a new PeerId (the caller caches peers).
  virtual StatusOr<PeerId> Connect(const RegionDescriptor& remote) = 0;
  // Cancels the peer's outstanding transfers (callbacks run with Cancelled) and closes it.
  // Unknown ids are ignored.
  virtual void Disconnect(PeerId peer) = 0;

  // remote -> local for each copy. Contiguous runs (consecutive remote and local ids) may be
  // merged into one operation. An empty list completes OK on the next Progress(). Errors (nothing
  // posted, callback never called): NotFound for an unknown peer, InvalidArgument for a bad block
  // id (named) or block_bytes mismatch, FailedPrecondition before RegisterLocal.
  virtual StatusOr<TransferId> PostRead(PeerId peer, std::span<const BlockCopy> copies,
                                        CompletionCallback on_done) = 0;
  // local -> remote, same rules.
  virtual StatusOr<TransferId> PostWrite(PeerId peer, std::span<const BlockCopy> copies,
                                         CompletionCallback on_done) = 0;

  // Drives the transport: runs the callbacks of transfers that finished. Returns how many
  // callbacks ran. Never blocks longer than `timeout_ms` (0 = poll once); with work in flight it
  // may return early when an event arrives.
  virtual int Progress(int timeout_ms) = 0;

  // Aborts a transfer: its callback runs (Cancelled) before Cancel returns, and no later
  // completion of its operations touches the caller's state. Unknown / finished ids are ignored.
  // The local blocks may still be written by an operation the network already had in flight
  // until the callback has run; after it, never.
  virtual void Cancel(TransferId id) = 0;

  virtual TransportStats Stats() const = 0;
};

}  // namespace kvmesh::transfer
