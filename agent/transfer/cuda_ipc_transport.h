// CudaIpcTransport: KvTransport between two processes on ONE node whose KV caches live in GPU
// memory, by CUDA IPC (cudaIpcGetMemHandle / cudaIpcOpenMemHandle) and device-to-device copies.
//
// RegisterLocal(base, block_bytes, num_blocks) takes a device pointer on options.device from
// cudaMalloc (IPC handles cover whole cudaMalloc allocations; cudaMallocAsync pools, managed and
// host memory are refused). `base` may lie inside the allocation: the transport looks the
// allocation up (cuMemGetAddressRange) and sends base's offset inside it. It also creates the
// transport's own non-blocking stream. DescribeLocal's worker_address is a fixed 160-byte record
// (EncodeIpcAddress): the 64-byte cudaIpcMemHandle_t, that offset, the allocation size, the
// device's PCI bus id and the node's boot id; rkey is empty; base is the device pointer value in
// the exporting process (informational: every process maps the allocation at its own address).
//
// Connect() refuses a descriptor from another node (boot id differs) or from this very process
// (CUDA cannot open a handle in the process that exported it), opens the handle with
// cudaIpcMemLazyEnablePeerAccess and checks the described region against the size of the mapping
// CUDA returned, so a forged descriptor cannot reach past the exported allocation. Opening the
// same handle twice shares one mapping (reference counted; closed by the last Disconnect).
// PostRead/PostWrite validate every copy (copy_plan.h) before anything is enqueued, merge
// contiguous runs, enqueue one cudaMemcpyAsync (device to device; the mapping is addressable from
// this device, over peer access when the memory lives on another GPU) per run on the stream and
// record one CUDA event; Progress() polls the events and runs the callbacks.
//
// CUDA copies cannot be recalled: Cancel(id) and Disconnect() wait for the transfer's event
// (cudaEventSynchronize) and then run its callback with Cancelled, so no copy touches the caller's
// blocks after the callback. An enqueue failure inside Post* synchronizes the stream before
// returning the error (nothing is still in flight; the callback is never called).
//
// Errors from CUDA calls come back as Unavailable "<call> failed at <file>:<line>: <cudaError
// name> (<cudaGetErrorString>)" through one checking macro; nothing aborts. Not thread-safe (the
// KvTransport contract). The destructor cancels outstanding transfers (callbacks run), closes the
// IPC mappings, destroys the events and then the stream: reverse order of creation.
//
// This header needs no CUDA headers; the implementation links CUDA::cudart (target
// kvmesh_transfer_cuda, only built with KVMESH_CUDA). See docs/kv-transfer.md, "Same-node GPU
// path (CUDA IPC)".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "agent/transfer/kv_transport.h"
#include "common/status.h"

namespace kvmesh::transfer {

struct CudaIpcTransportOptions {
  int device = 0;  // CUDA device ordinal (as this process sees it, after CUDA_VISIBLE_DEVICES)
};

// A transport named "cuda_ipc". Errors: InvalidArgument for a negative device or one >= the
// number of usable devices; Unavailable when no CUDA device is usable (no GPU, no driver, or any
// CUDA error during the probe), when the node's boot id cannot be read, or when a CUDA call fails.
StatusOr<std::unique_ptr<KvTransport>> CreateCudaIpcTransport(
    const CudaIpcTransportOptions& options);

namespace cuda_ipc {

inline constexpr char kTransportName[] = "cuda_ipc";
inline constexpr size_t kHandleBytes = 64;    // sizeof(cudaIpcMemHandle_t)
inline constexpr size_t kPciBusIdBytes = 32;  // NUL-padded field ("0000:3b:00.0")
inline constexpr size_t kBootIdBytes = 40;    // NUL-padded field (a UUID is 36 characters)
inline constexpr size_t kAddressBytes = 8 + kHandleBytes + 8 + 8 + kPciBusIdBytes + kBootIdBytes;
inline constexpr char kDefaultBootIdPath[] = "/proc/sys/kernel/random/boot_id";

// What a cuda_ipc descriptor's worker_address carries.
struct IpcAddress {
  std::string handle;        // exactly kHandleBytes bytes
  uint64_t offset = 0;       // bytes from the allocation start to block 0
  uint64_t alloc_bytes = 0;  // size of the exported allocation (>= offset + region bytes)
  std::string pci_bus_id;    // device holding the memory, < kPciBusIdBytes characters
  std::string boot_id;       // node identity, < kBootIdBytes characters, non-empty

  friend bool operator==(const IpcAddress&, const IpcAddress&) = default;
};

// Fixed layout, little-endian integers: magic "KVMCIPC1", handle, offset, alloc_bytes,
// pci_bus_id, boot_id. InvalidArgument when a field does not fit.
StatusOr<std::string> EncodeIpcAddress(const IpcAddress& address);
// InvalidArgument (naming the problem) for a wrong size, a wrong magic, an unterminated or empty
// string field, or offset > alloc_bytes. Never reads past `bytes`.
StatusOr<IpcAddress> DecodeIpcAddress(std::string_view bytes);

// InvalidArgument unless `remote` comes from the node whose boot id is `local_boot_id`, and unless
// the region [offset, offset + block_bytes * num_blocks) fits in alloc_bytes (overflow-safe).
Status CheckIpcAddress(const IpcAddress& remote, std::string_view local_boot_id,
                       uint64_t block_bytes, uint32_t num_blocks);

// The node identity: the first line of `path` (the kernel's boot id), whitespace trimmed.
// Unavailable when the file cannot be read or is empty.
StatusOr<std::string> ReadBootId(const std::string& path = kDefaultBootIdPath);

}  // namespace cuda_ipc
}  // namespace kvmesh::transfer
