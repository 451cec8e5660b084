#include "agent/transfer/cuda_ipc_transport.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuMemGetAddressRange_v3020 (driver API reached through cudart)

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/transfer/copy_plan.h"
#include "common/log.h"
#include "kernels/cuda_device.h"

namespace kvmesh::transfer {
namespace cuda_ipc {
namespace {

constexpr char kMagic[8] = {'K', 'V', 'M', 'C', 'I', 'P', 'C', '1'};

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}

// A NUL-padded field of `width` bytes; `s` must be shorter than `width`.
void PutPadded(std::string* out, const std::string& s, size_t width) {
  out->append(s);
  out->append(width - s.size(), '\0');
}

StatusOr<std::string> GetPadded(std::string_view field, const char* name) {
  const size_t len = field.find('\0');
  if (len == std::string_view::npos) {
    return InvalidArgumentError(std::string("cuda_ipc address: ") + name + " is not terminated");
  }
  if (len == 0) return InvalidArgumentError(std::string("cuda_ipc address: ") + name + " is empty");
  return std::string(field.substr(0, len));
}

}  // namespace

StatusOr<std::string> EncodeIpcAddress(const IpcAddress& a) {
  if (a.handle.size() != kHandleBytes) {
    return InvalidArgumentError("cuda_ipc address: handle is " + std::to_string(a.handle.size()) +
                                " bytes, want " + std::to_string(kHandleBytes));
  }
  if (a.pci_bus_id.empty() || a.pci_bus_id.size() >= kPciBusIdBytes ||
      a.pci_bus_id.find('\0') != std::string::npos) {
    return InvalidArgumentError("cuda_ipc address: bad pci_bus_id \"" + a.pci_bus_id + "\"");
  }
  if (a.boot_id.empty() || a.boot_id.size() >= kBootIdBytes ||
      a.boot_id.find('\0') != std::string::npos) {
    return InvalidArgumentError("cuda_ipc address: bad boot_id \"" + a.boot_id + "\"");
  }
  if (a.offset > a.alloc_bytes) {
    return InvalidArgumentError("cuda_ipc address: offset " + std::to_string(a.offset) +
                                " > alloc_bytes " + std::to_string(a.alloc_bytes));
  }
  std::string out;
  out.reserve(kAddressBytes);
  out.append(kMagic, sizeof(kMagic));
  out.append(a.handle);
  PutU64(&out, a.offset);
  PutU64(&out, a.alloc_bytes);
  PutPadded(&out, a.pci_bus_id, kPciBusIdBytes);
  PutPadded(&out, a.boot_id, kBootIdBytes);
  return out;
}

StatusOr<IpcAddress> DecodeIpcAddress(std::string_view bytes) {
  if (bytes.size() != kAddressBytes) {
    return InvalidArgumentError("cuda_ipc address is " + std::to_string(bytes.size()) +
                                " bytes, want " + std::to_string(kAddressBytes));
  }
  if (bytes.substr(0, sizeof(kMagic)) != std::string_view(kMagic, sizeof(kMagic))) {
    return InvalidArgumentError("cuda_ipc address: bad magic (not made by a cuda_ipc transport)");
  }
  size_t pos = sizeof(kMagic);
  IpcAddress a;
  a.handle = std::string(bytes.substr(pos, kHandleBytes));
  pos += kHandleBytes;
  a.offset = GetU64(bytes.substr(pos, 8));
  pos += 8;
  a.alloc_bytes = GetU64(bytes.substr(pos, 8));
  pos += 8;
  KVMESH_ASSIGN_OR_RETURN(a.pci_bus_id, GetPadded(bytes.substr(pos, kPciBusIdBytes), "pci_bus_id"));
  pos += kPciBusIdBytes;
  KVMESH_ASSIGN_OR_RETURN(a.boot_id, GetPadded(bytes.substr(pos, kBootIdBytes), "boot_id"));
  if (a.offset > a.alloc_bytes) {
    return InvalidArgumentError("cuda_ipc address: offset " + std::to_string(a.offset) +
                                " > alloc_bytes " + std::to_string(a.alloc_bytes));
  }
  return a;
}

Status CheckIpcAddress(const IpcAddress& remote, std::string_view local_boot_id,
                       uint64_t block_bytes, uint32_t num_blocks) {
  if (remote.boot_id != local_boot_id) {
    return InvalidArgumentError("cuda_ipc descriptor comes from another node (boot_id " +
                                remote.boot_id + ", this node " + std::string(local_boot_id) +
                                "): CUDA IPC works only between processes on one node; use the "
                                "ucx transport across nodes");
  }
  const unsigned __int128 end =
      static_cast<unsigned __int128>(block_bytes) * num_blocks + remote.offset;
  if (end > remote.alloc_bytes) {
    return InvalidArgumentError("cuda_ipc descriptor region [" + std::to_string(remote.offset) +
                                ", +" + std::to_string(block_bytes) + " * " +
                                std::to_string(num_blocks) + ") exceeds the exported allocation (" +
                                std::to_string(remote.alloc_bytes) + " bytes)");
  }
  return Status::Ok();
}

StatusOr<std::string> ReadBootId(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return UnavailableError("cannot read the node identity from " + path +
                            " (needed to refuse CUDA IPC descriptors of other nodes)");
  }
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  line.erase(line.begin(), std::find_if(line.begin(), line.end(), not_space));
  line.erase(std::find_if(line.rbegin(), line.rend(), not_space).base(), line.end());
  if (line.empty()) return UnavailableError("node identity file " + path + " is empty");
  return line;
}

}  // namespace cuda_ipc

namespace {

Status CudaError(cudaError_t err, const char* call, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  return UnavailableError(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                          ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

// The one checking macro for CUDA calls in this file: returns Unavailable naming the call.
#define KVMESH_CUDA_IPC_CHECK(call)                                  \
  do {                                                               \
    const cudaError_t kvmesh_cuda_err_ = (call);                     \
    if (kvmesh_cuda_err_ != cudaSuccess) {                           \
      return CudaError(kvmesh_cuda_err_, #call, __FILE__, __LINE__); \
    }                                                                \
  } while (0)

// For paths that cannot return a status (destructor, Cancel, Disconnect): log and go on.
void LogIfError(const Status& s) {
  if (!s.ok()) {
    KVMESH_LOG(LogLevel::kWarn, "transfer", "cuda_ipc cleanup failed", {"error", s.ToString()});
  }
}

// Handles exported by live transports of this process: CUDA cannot open them here.
class ExportedHandles {
 public:
  static ExportedHandles& Get() {
    static ExportedHandles* h = new ExportedHandles();  // never destroyed
    return *h;
  }
  void Add(const std::string& handle) {
    std::lock_guard<std::mutex> lock(mu_);
    handles_.insert(handle);
  }
  void Remove(const std::string& handle) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handles_.find(handle);
    if (it != handles_.end()) handles_.erase(it);
  }
  bool Contains(const std::string& handle) {
    std::lock_guard<std::mutex> lock(mu_);
    return handles_.count(handle) > 0;
  }

 private:
  std::mutex mu_;
  std::multiset<std::string> handles_;
};

std::string HandleBytes(const cudaIpcMemHandle_t& h) {
  static_assert(sizeof(cudaIpcMemHandle_t) == cuda_ipc::kHandleBytes);
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

// How often Progress() polls the events while transfers are in flight.
constexpr std::chrono::microseconds kPollInterval(20);

class CudaIpcTransport final : public KvTransport {
 public:
  CudaIpcTransport(int device, std::string pci_bus_id, std::string boot_id,
                   PFN_cuMemGetAddressRange_v3020 get_range)
      : device_(device),
        pci_bus_id_(std::move(pci_bus_id)),
        boot_id_(std::move(boot_id)),
        get_range_(get_range) {}

  ~CudaIpcTransport() override {
    LogIfError(UseDevice());
    // Reverse order of creation: transfers (and their events), mappings, the stream.
    std::vector<TransferId> ids;
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    for (TransferId id : ids) {
      WaitAndFinish(
          id, CancelledError("transfer " + std::to_string(id) + " cancelled: transport destroyed"));
    }
    std::vector<PeerId> peers;
    for (const auto& [id, p] : peers_) peers.push_back(id);
    for (PeerId id : peers) Disconnect(id);
    for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
    free_events_.clear();
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    if (registered_) ExportedHandles::Get().Remove(local_address_.handle);
  }

  std::string name() const override { return cuda_ipc::kTransportName; }

  Status RegisterLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) override {
    if (registered_) return FailedPreconditionError("local region already registered");
    KVMESH_RETURN_IF_ERROR(CheckLocalRegion(base, block_bytes, num_blocks));
    KVMESH_RETURN_IF_ERROR(UseDevice());
    cudaPointerAttributes attr{};
    KVMESH_CUDA_IPC_CHECK(cudaPointerGetAttributes(&attr, base));
    if (attr.type != cudaMemoryTypeDevice || attr.device != device_) {
      return InvalidArgumentError(
          "cuda_ipc RegisterLocal: base is not device memory of device " + std::to_string(device_) +
          " (cudaPointerAttributes type " + std::to_string(static_cast<int>(attr.type)) +
          ", device " + std::to_string(attr.device) + "); the KV cache must come from cudaMalloc");
    }
    CUdeviceptr alloc_start = 0;
    size_t alloc_bytes = 0;
    const CUresult r = get_range_(&alloc_start, &alloc_bytes, reinterpret_cast<CUdeviceptr>(base));
    if (r != CUDA_SUCCESS) {
      return UnavailableError("cuMemGetAddressRange(base) failed with CUresult " +
                              std::to_string(static_cast<int>(r)));
    }
    const uint64_t offset = reinterpret_cast<uintptr_t>(base) - alloc_start;
    const unsigned __int128 end = static_cast<unsigned __int128>(block_bytes) * num_blocks + offset;
    if (end > alloc_bytes) {
      return InvalidArgumentError(
          "cuda_ipc RegisterLocal: region of " + std::to_string(block_bytes) + " * " +
          std::to_string(num_blocks) + " bytes at offset " + std::to_string(offset) +
          " exceeds its allocation of " + std::to_string(alloc_bytes) + " bytes");
    }
    cudaIpcMemHandle_t handle{};
    KVMESH_CUDA_IPC_CHECK(cudaIpcGetMemHandle(&handle, reinterpret_cast<void*>(alloc_start)));
    cudaStream_t stream = nullptr;
    KVMESH_CUDA_IPC_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // Success: set the outputs.
    stream_ = stream;
    local_base_ = static_cast<uint8_t*>(base);
    local_geometry_ = RegionGeometry{block_bytes, num_blocks};
    local_address_.handle = HandleBytes(handle);
    local_address_.offset = offset;
    local_address_.alloc_bytes = alloc_bytes;
    local_address_.pci_bus_id = pci_bus_id_;
    local_address_.boot_id = boot_id_;
    ExportedHandles::Get().Add(local_address_.handle);
    registered_ = true;
    return Status::Ok();
  }

  StatusOr<RegionDescriptor> DescribeLocal() const override {
    if (!registered_) return FailedPreconditionError("RegisterLocal has not been called");
    RegionDescriptor d;
    d.transport = name();
    KVMESH_ASSIGN_OR_RETURN(d.worker_address, cuda_ipc::EncodeIpcAddress(local_address_));
    d.base = reinterpret_cast<uintptr_t>(local_base_);
    d.block_bytes = local_geometry_.block_bytes;
    d.num_blocks = local_geometry_.num_blocks;
    return d;
  }

  StatusOr<PeerId> Connect(const RegionDescriptor& remote) override {
    KVMESH_RETURN_IF_ERROR(CheckRemoteDescriptor(remote, name(), /*require_rkey=*/false));
    if (!remote.rkey.empty()) {
      return InvalidArgumentError("cuda_ipc descriptor has a non-empty rkey (" +
                                  std::to_string(remote.rkey.size()) + " bytes)");
    }
    KVMESH_ASSIGN_OR_RETURN(cuda_ipc::IpcAddress address,
                            cuda_ipc::DecodeIpcAddress(remote.worker_address));
    KVMESH_RETURN_IF_ERROR(
        cuda_ipc::CheckIpcAddress(address, boot_id_, remote.block_bytes, remote.num_blocks));
    if (ExportedHandles::Get().Contains(address.handle)) {
      return InvalidArgumentError(
          "cuda_ipc descriptor was exported by this process: CUDA IPC handles cannot be opened "
          "by the process that made them");
    }
    KVMESH_RETURN_IF_ERROR(UseDevice());
    // CUDA can open handles of devices this process does not see (CUDA_VISIBLE_DEVICES); only a
    // visible other device gets the peer-access check, which names both devices on failure.
    int remote_device = -1;
    if (cudaDeviceGetByPCIBusId(&remote_device, address.pci_bus_id.c_str()) != cudaSuccess) {
      (void)cudaGetLastError();
      remote_device = -1;
    }
    if (remote_device >= 0 && remote_device != device_) {
      int can_access = 0;
      KVMESH_CUDA_IPC_CHECK(cudaDeviceCanAccessPeer(&can_access, device_, remote_device));
      if (can_access == 0) {
        return UnavailableError("cuda_ipc: device " + std::to_string(device_) +
                                " cannot access peer device " + std::to_string(remote_device) +
                                " (" + address.pci_bus_id + ")");
      }
    }
    KVMESH_ASSIGN_OR_RETURN(Mapping * mapping, OpenMapping(address.handle));
    // The authoritative bound: the size of what CUDA actually mapped, not what the peer claims.
    const unsigned __int128 end =
        static_cast<unsigned __int128>(remote.block_bytes) * remote.num_blocks + address.offset;
    if (end > mapping->bytes) {
      ReleaseMapping(address.handle);
      return InvalidArgumentError(
          "cuda_ipc descriptor region (offset " + std::to_string(address.offset) + ", " +
          std::to_string(remote.block_bytes) + " * " + std::to_string(remote.num_blocks) +
          " bytes) exceeds the mapped allocation of " + std::to_string(mapping->bytes) + " bytes");
    }
    Peer p;
    p.handle = address.handle;
    p.base = mapping->ptr + address.offset;
    p.geometry = RegionGeometry{remote.block_bytes, remote.num_blocks};
    const PeerId id = ++next_peer_;
    peers_.emplace(id, std::move(p));
    return id;
  }

  void Disconnect(PeerId peer) override {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    const std::string handle = it->second.handle;
    peers_.erase(it);  // Post* from the callbacks below sees NotFound
    std::vector<TransferId> ids;
    for (const auto& [id, t] : transfers_) {
      if (t.peer == peer) ids.push_back(id);
    }
    for (TransferId id : ids) {
      WaitAndFinish(id, CancelledError("transfer " + std::to_string(id) + " cancelled: peer " +
                                       std::to_string(peer) + " disconnected"));
    }
    ReleaseMapping(handle);  // after its copies finished
  }

  StatusOr<TransferId> PostRead(PeerId peer, std::span<const BlockCopy> copies,
                                CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/true);
  }
  StatusOr<TransferId> PostWrite(PeerId peer, std::span<const BlockCopy> copies,
                                 CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/false);
  }

  int Progress(int timeout_ms) override {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int ran = PollOnce();
    while (ran == 0 && timeout_ms > 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      if (transfers_.empty()) {  // idle: wait out the timeout like a worker sleeping on its fd
        std::this_thread::sleep_until(deadline);
        break;
      }
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(kPollInterval, deadline - now));
      ran = PollOnce();
    }
    return ran;
  }

  void Cancel(TransferId id) override {
    if (transfers_.count(id) == 0) return;
    LogIfError(UseDevice());
    WaitAndFinish(id,
                  CancelledError("transfer " + std::to_string(id) +
                                 " cancelled (CUDA copies cannot be recalled: waited for them)"));
  }

  TransportStats Stats() const override {
    TransportStats s = stats_;
    s.peers = static_cast<uint32_t>(peers_.size());
    s.in_flight = static_cast<uint32_t>(transfers_.size());
    return s;
  }

 private:
  struct Mapping {
    uint8_t* ptr = nullptr;  // start of the opened allocation in this process
    uint64_t bytes = 0;      // its size as CUDA reports it
    int refs = 0;
  };
  struct Peer {
    std::string handle;  // key into mappings_
    uint8_t* base = nullptr;
    RegionGeometry geometry;
  };
  struct Transfer {
    PeerId peer = 0;
    bool read = true;
    uint64_t bytes = 0;
    cudaEvent_t event = nullptr;  // null for an empty copy list
    CompletionCallback on_done;
  };

  Status UseDevice() {
    KVMESH_CUDA_IPC_CHECK(cudaSetDevice(device_));
    return Status::Ok();
  }

  StatusOr<Mapping*> OpenMapping(const std::string& handle) {
    auto it = mappings_.find(handle);
    if (it != mappings_.end()) {
      ++it->second.refs;
      return &it->second;
    }
    cudaIpcMemHandle_t h{};
    std::memcpy(&h, handle.data(), sizeof(h));
    void* ptr = nullptr;
    KVMESH_CUDA_IPC_CHECK(cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess));
    CUdeviceptr start = 0;
    size_t bytes = 0;
    const CUresult r = get_range_(&start, &bytes, reinterpret_cast<CUdeviceptr>(ptr));
    if (r != CUDA_SUCCESS) {
      (void)cudaIpcCloseMemHandle(ptr);
      return UnavailableError("cuMemGetAddressRange(opened IPC mapping) failed with CUresult " +
                              std::to_string(static_cast<int>(r)));
    }
    const uint64_t skip = reinterpret_cast<uintptr_t>(ptr) - start;  // 0 in practice
    Mapping m{static_cast<uint8_t*>(ptr), bytes - std::min<uint64_t>(skip, bytes), 1};
    return &mappings_.emplace(handle, m).first->second;
  }

  void ReleaseMapping(const std::string& handle) {
    auto it = mappings_.find(handle);
    if (it == mappings_.end()) return;
    if (--it->second.refs > 0) return;
    const cudaError_t err = cudaIpcCloseMemHandle(it->second.ptr);
    if (err != cudaSuccess) {
      LogIfError(CudaError(err, "cudaIpcCloseMemHandle(mapping)", __FILE__, __LINE__));
    }
    mappings_.erase(it);
  }

  StatusOr<cudaEvent_t> AcquireEvent() {
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    KVMESH_CUDA_IPC_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void ReleaseEvent(cudaEvent_t e) {
    if (e != nullptr) free_events_.push_back(e);
  }

  // Enqueues the copies of one transfer and its event. On failure, waits for whatever was
  // already enqueued so that nothing still writes after the error is returned.
  Status Enqueue(const Peer& peer, const std::vector<CopyRun>& runs, bool read, cudaEvent_t event) {
    for (const CopyRun& run : runs) {
      uint8_t* remote = peer.base + run.remote_offset;
      uint8_t* local = local_base_ + run.local_offset;
      const cudaError_t err =
          read ? cudaMemcpyAsync(local, remote, run.bytes, cudaMemcpyDeviceToDevice, stream_)
               : cudaMemcpyAsync(remote, local, run.bytes, cudaMemcpyDeviceToDevice, stream_);
      if (err != cudaSuccess) {
        const Status s =
            CudaError(err, "cudaMemcpyAsync(run, cudaMemcpyDeviceToDevice)", __FILE__, __LINE__);
        (void)cudaStreamSynchronize(stream_);
        return s;
      }
    }
    const cudaError_t err = cudaEventRecord(event, stream_);
    if (err != cudaSuccess) {
      const Status s = CudaError(err, "cudaEventRecord(event, stream_)", __FILE__, __LINE__);
      (void)cudaStreamSynchronize(stream_);
      return s;
    }
    return Status::Ok();
  }

  StatusOr<TransferId> Post(PeerId peer, std::span<const BlockCopy> copies,
                            CompletionCallback on_done, bool read) {
    if (!registered_) return FailedPreconditionError("RegisterLocal has not been called");
    auto it = peers_.find(peer);
    if (it == peers_.end()) return NotFoundError("unknown peer " + std::to_string(peer));
    KVMESH_ASSIGN_OR_RETURN(std::vector<CopyRun> runs,
                            PlanCopies(copies, local_geometry_, it->second.geometry));
    Transfer t;
    t.peer = peer;
    t.read = read;
    t.bytes = copies.size() * local_geometry_.block_bytes;
    t.on_done = std::move(on_done);
    if (!runs.empty()) {
      KVMESH_RETURN_IF_ERROR(UseDevice());
      KVMESH_ASSIGN_OR_RETURN(cudaEvent_t event, AcquireEvent());
      const Status s = Enqueue(it->second, runs, read, event);
      if (!s.ok()) {
        ReleaseEvent(event);
        return s;
      }
      t.event = event;
    }
    const TransferId id = ++next_transfer_;
    transfers_.emplace(id, std::move(t));
    return id;
  }

  // Runs the callbacks of the transfers whose events completed (or failed).
  int PollOnce() {
    if (transfers_.empty()) return 0;
    std::vector<TransferId> ids;  // callbacks may post or cancel: iterate over a snapshot
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    int ran = 0;
    for (TransferId id : ids) {
      auto it = transfers_.find(id);
      if (it == transfers_.end()) continue;
      Status result;
      if (it->second.event != nullptr) {
        const cudaError_t err = cudaEventQuery(it->second.event);
        if (err == cudaErrorNotReady) continue;
        if (err != cudaSuccess) {
          result = CudaError(err, "cudaEventQuery(transfer event)", __FILE__, __LINE__);
        }
      }
      Finish(id, result);
      ++ran;
    }
    return ran;
  }

  // Waits until the transfer's copies are done (they cannot be recalled), then finishes it.
  void WaitAndFinish(TransferId id, const Status& result) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    if (it->second.event != nullptr) {
      const cudaError_t err = cudaEventSynchronize(it->second.event);
      if (err != cudaSuccess) {
        LogIfError(CudaError(err, "cudaEventSynchronize(transfer event)", __FILE__, __LINE__));
      }
    }
    Finish(id, result);
  }

  void Finish(TransferId id, const Status& result) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    Transfer t = std::move(it->second);
    transfers_.erase(it);
    ReleaseEvent(t.event);
    if (result.ok()) {
      ++stats_.transfers_ok;
      (t.read ? stats_.bytes_read : stats_.bytes_written) += t.bytes;
    } else {
      ++stats_.transfers_failed;
    }
    if (t.on_done) t.on_done(id, result);
  }

  const int device_;
  const std::string pci_bus_id_;
  const std::string boot_id_;
  const PFN_cuMemGetAddressRange_v3020 get_range_;

  // Set by RegisterLocal, together.
  bool registered_ = false;
  uint8_t* local_base_ = nullptr;
  RegionGeometry local_geometry_;
  cuda_ipc::IpcAddress local_address_;
  cudaStream_t stream_ = nullptr;

  PeerId next_peer_ = 0;
  TransferId next_transfer_ = 0;
  std::map<std::string, Mapping> mappings_;  // by handle bytes; node stable (Mapping* handed out)
  std::map<PeerId, Peer> peers_;
  std::map<TransferId, Transfer> transfers_;  // ordered: completions in post order
  std::vector<cudaEvent_t> free_events_;      // reused: no event creation per transfer
  TransportStats stats_;
};

StatusOr<PFN_cuMemGetAddressRange_v3020> GetAddressRangeEntryPoint() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  KVMESH_CUDA_IPC_CHECK(cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 3020,
                                                         cudaEnableDefault, &found));
  if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return UnavailableError("the CUDA driver does not provide cuMemGetAddressRange (query result " +
                            std::to_string(static_cast<int>(found)) + ")");
  }
  return reinterpret_cast<PFN_cuMemGetAddressRange_v3020>(fn);
}

}  // namespace

StatusOr<std::unique_ptr<KvTransport>> CreateCudaIpcTransport(
    const CudaIpcTransportOptions& options) {
  if (options.device < 0) {
    return InvalidArgumentError("cuda_ipc: device " + std::to_string(options.device) +
                                " is negative");
  }
  const int devices = kernels::cuda::UsableDeviceCount();
  if (devices == 0) {
    return UnavailableError(
        "cuda_ipc: no usable CUDA device (no GPU visible, no driver, or a CUDA error during the "
        "device probe); use the ucx transport");
  }
  if (options.device >= devices) {
    return InvalidArgumentError("cuda_ipc: device " + std::to_string(options.device) +
                                " out of range: " + std::to_string(devices) + " usable device(s)");
  }
  KVMESH_CUDA_IPC_CHECK(cudaSetDevice(options.device));
  char bus_id[cuda_ipc::kPciBusIdBytes] = {};
  KVMESH_CUDA_IPC_CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), options.device));
  KVMESH_ASSIGN_OR_RETURN(std::string boot_id, cuda_ipc::ReadBootId());
  KVMESH_ASSIGN_OR_RETURN(PFN_cuMemGetAddressRange_v3020 get_range, GetAddressRangeEntryPoint());
  std::unique_ptr<KvTransport> t = std::make_unique<CudaIpcTransport>(
      options.device, std::string(bus_id), std::move(boot_id), get_range);
  return t;
}

}  // namespace kvmesh::transfer
