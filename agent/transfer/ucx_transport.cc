#include "agent/transfer/ucx_transport.h"

#include <poll.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include <ucp/api/ucp.h>

#include "agent/transfer/copy_plan.h"
#include "common/log.h"

namespace kvmesh::transfer {
namespace {

// The one checking macro for UCX calls: a failed call becomes Unavailable naming the call, UCX's
// status string and file:line, and is returned from the enclosing function.
#define KVMESH_UCX_CHECK(call)                                                   \
  do {                                                                           \
    ucs_status_t kvmesh_ucx_status_ = (call);                                    \
    if (kvmesh_ucx_status_ != UCS_OK) {                                          \
      return UcxError(CallName(#call), kvmesh_ucx_status_, __FILE__, __LINE__);  \
    }                                                                            \
  } while (0)

// "ucp_mem_map(context_, &mp, &memh)" -> "ucp_mem_map".
std::string CallName(std::string_view text) { return std::string(text.substr(0, text.find('('))); }

Status UcxError(std::string_view call, ucs_status_t status, const char* file, int line) {
  std::string c(call);
  std::string f(file);
  if (auto slash = f.rfind('/'); slash != std::string::npos) f = f.substr(slash + 1);
  return UnavailableError(c + ": " + ucs_status_string(status) + " (" + f + ":" +
                          std::to_string(line) + ")");
}

// UCX parses worker addresses and packed keys without a length; bytes from the network are copied
// into a zero-padded buffer so a truncated or forged one cannot make UCX read past our memory
// (each md's packed key is at most 255 bytes and there are at most 64 mds).
constexpr size_t kUnpackPadding = 64 * 256 + 64;
std::vector<uint8_t> Padded(const std::string& bytes) {
  std::vector<uint8_t> out(bytes.size() + kUnpackPadding, 0);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// How long Cancel/Disconnect/the destructor drive progress waiting for a force-closed endpoint's
// requests to complete. UCX completes them at once on force close; this only bounds a UCX bug.
constexpr auto kDrainLimit = std::chrono::seconds(10);

}  // namespace

class UcxTransport final : public KvTransport {
 public:
  UcxTransport() = default;
  ~UcxTransport() override;

  Status Init(const UcxTransportOptions& options);

  std::string name() const override { return "ucx"; }
  Status RegisterLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) override;
  StatusOr<void*> AllocateLocal(uint64_t block_bytes, uint32_t num_blocks) override;
  StatusOr<RegionDescriptor> DescribeLocal() const override;
  StatusOr<PeerId> Connect(const RegionDescriptor& remote) override;
  void Disconnect(PeerId peer) override;
  StatusOr<TransferId> PostRead(PeerId peer, std::span<const BlockCopy> copies,
                                CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/true);
  }
  StatusOr<TransferId> PostWrite(PeerId peer, std::span<const BlockCopy> copies,
                                 CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/false);
  }
  int Progress(int timeout_ms) override;
  void Cancel(TransferId id) override;
  TransportStats Stats() const override;

 private:
  // Touches a peer's mapped region in the background (shared memory only); stopped and joined
  // before the key (and with it the mapping) is released.
  struct Prefaulter {
    std::atomic<bool> stop{false};
    std::thread thread;
    uint8_t sink = 0;
    ~Prefaulter() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  };
  struct Peer {
    ucp_ep_h ep = nullptr;
    ucp_rkey_h rkey = nullptr;
    std::shared_ptr<Prefaulter> prefault;
    RegionDescriptor remote;
    bool failed = false;
    ucs_status_t error = UCS_OK;
  };
  struct Transfer {
    PeerId peer = 0;
    bool read = true;
    uint64_t bytes = 0;
    uint32_t ops_pending = 0;  // UCX requests posted whose callback has not run
    Status error;              // first error of an operation
    bool done_queued = false;
    CompletionCallback on_done;
  };
  // user_data of every UCX request: which transfer it belongs to.
  struct OpContext {
    UcxTransport* self;
    TransferId id;
  };

  static void OnOpDone(void* request, ucs_status_t status, void* user_data);
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);

  StatusOr<TransferId> Post(PeerId peer, std::span<const BlockCopy> copies,
                            CompletionCallback on_done, bool read);
  // Accounts for one nbx call's result: NULL (done now), an error pointer, or a request.
  void TrackOp(TransferId id, Transfer& t, ucs_status_ptr_t ptr, const char* call);
  void OpFinished(TransferId id, ucs_status_t status);
  void MaybeQueueDone(TransferId id, Transfer& t);
  int RunDone();
  void HandleFailedPeers();
  // Force-closes the peer's endpoint, waits until each of its requests completed, then runs the
  // callbacks of its transfers with `result`. Removes the peer.
  void ClosePeer(PeerId peer, const Status& result);
  int ProgressWorker();
  std::shared_ptr<Prefaulter> PrefaultMappedPeer(ucp_rkey_h rkey, const RegionDescriptor& remote);
  Status MapLocal(void* base, uint64_t block_bytes, uint32_t num_blocks);  // base null: UCX allocates

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_address_t* address_ = nullptr;
  size_t address_len_ = 0;
  int efd_ = -1;  // -1 when the transports offer no wakeup: Progress(timeout) polls
  ucp_mem_h memh_ = nullptr;
  std::string packed_rkey_;
  uint8_t* base_ = nullptr;
  uint64_t block_bytes_ = 0;
  uint32_t num_blocks_ = 0;

  PeerId next_peer_ = 0;
  TransferId next_transfer_ = 0;
  std::map<PeerId, Peer> peers_;
  std::map<TransferId, Transfer> transfers_;
  std::deque<TransferId> done_;  // finished transfers whose callback has not run
  std::vector<PeerId> failed_peers_;
  TransportStats stats_;
};

Status UcxTransport::Init(const UcxTransportOptions& options) {
  // Shared memory (posix, sysv) supports UCP_ERR_HANDLING_MODE_PEER only with these on; without
  // them an endpoint over shm alone is "unreachable" ("no peer failure handler"). UCX 1.13 does not
  // apply them through ucp_config_modify (it warns "invalid configurations"), only from the
  // environment, which ucp_config_read reads; a value the operator set wins.
  const std::string& tls = options.tls;
  if (tls.empty() || tls.find("posix") != std::string::npos ||
      tls.find("sysv") != std::string::npos || tls.find("sm") != std::string::npos ||
      tls.find("mm") != std::string::npos) {
    setenv("UCX_POSIX_ERROR_HANDLING", "y", /*overwrite=*/0);
    setenv("UCX_SYSV_ERROR_HANDLING", "y", /*overwrite=*/0);
  }
  ucp_config_t* config = nullptr;
  KVMESH_UCX_CHECK(ucp_config_read(nullptr, nullptr, &config));
  struct ConfigRelease {
    ucp_config_t* c;
    ~ConfigRelease() { ucp_config_release(c); }
  } release{config};
  if (!options.tls.empty()) {
    ucs_status_t s = ucp_config_modify(config, "TLS", options.tls.c_str());
    if (s != UCS_OK) {
      return UcxError("ucp_config_modify(TLS=" + options.tls + ")", s, __FILE__, __LINE__);
    }
  }
  if (!options.net_devices.empty()) {
    ucs_status_t s = ucp_config_modify(config, "NET_DEVICES", options.net_devices.c_str());
    if (s != UCS_OK) {
      return UcxError("ucp_config_modify(NET_DEVICES=" + options.net_devices + ")", s, __FILE__,
                      __LINE__);
    }
  }
  // Wakeup lets Progress(timeout) sleep on the worker's fd; if no transport in `tls` supports it,
  // fall back to RMA alone and poll.
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  ucs_status_t s = ucp_init(&params, config, &context_);
  if (s != UCS_OK) {
    params.features = UCP_FEATURE_RMA;
    s = ucp_init(&params, config, &context_);
  }
  if (s != UCS_OK) {
    context_ = nullptr;
    return UcxError("ucp_init(tls=" + (options.tls.empty() ? std::string("default") : options.tls) +
                        ")",
                    s, __FILE__, __LINE__);
  }
  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = ucp_worker_create(context_, &wparams, &worker_);
  if (s != UCS_OK) {
    worker_ = nullptr;
    return UcxError("ucp_worker_create(tls=" +
                        (options.tls.empty() ? std::string("default") : options.tls) + ")",
                    s, __FILE__, __LINE__);
  }
  KVMESH_UCX_CHECK(ucp_worker_get_address(worker_, &address_, &address_len_));
  if (params.features & UCP_FEATURE_WAKEUP) {
    int fd = -1;
    if (ucp_worker_get_efd(worker_, &fd) == UCS_OK) efd_ = fd;
  }
  KVMESH_LOG_INFO("transfer", "ucx transport ready",
                  {"tls", options.tls.empty() ? std::string("default") : options.tls},
                  {"net_devices", options.net_devices}, {"wakeup", efd_ >= 0},
                  {"address_bytes", static_cast<unsigned long>(address_len_)});
  return Status::Ok();
}

UcxTransport::~UcxTransport() {
  // Reverse order of creation: transfers and endpoints (with their keys), the registration, the
  // worker address, the worker, the context.
  std::vector<PeerId> ids;
  for (const auto& [id, p] : peers_) ids.push_back(id);
  for (PeerId id : ids) ClosePeer(id, CancelledError("transport destroyed"));
  // Empty-list transfers have no peer operations but may still wait in done_.
  for (auto& [id, t] : transfers_) {
    if (t.error.ok()) t.error = CancelledError("transport destroyed");
    MaybeQueueDone(id, t);
  }
  RunDone();
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  if (address_ != nullptr) ucp_worker_release_address(worker_, address_);
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

Status UcxTransport::RegisterLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) {
  if (memh_ != nullptr) return FailedPreconditionError("local region already registered");
  KVMESH_RETURN_IF_ERROR(CheckLocalRegion(base, block_bytes, num_blocks));  // null base included
  return MapLocal(base, block_bytes, num_blocks);
}

StatusOr<void*> UcxTransport::AllocateLocal(uint64_t block_bytes, uint32_t num_blocks) {
  if (memh_ != nullptr) return FailedPreconditionError("local region already registered");
  // Geometry checks with a stand-in address (the real one is not known yet).
  KVMESH_RETURN_IF_ERROR(CheckLocalRegion(reinterpret_cast<void*>(uintptr_t{4096}), block_bytes, num_blocks));
  KVMESH_RETURN_IF_ERROR(MapLocal(nullptr, block_bytes, num_blocks));
  std::memset(base_, 0, block_bytes * num_blocks);
  return static_cast<void*>(base_);
}

Status UcxTransport::MapLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) {
  if (memh_ != nullptr) return FailedPreconditionError("local region already registered");
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  mp.length = block_bytes * num_blocks;
  if (base != nullptr) {
    KVMESH_RETURN_IF_ERROR(CheckLocalRegion(base, block_bytes, num_blocks));
    mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_ADDRESS;
    mp.address = base;
  } else {
    // UCX allocates (UCX_MEM_ALLOC_METHOD: by default an md's shared-memory segment first).
    mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    mp.flags = UCP_MEM_MAP_ALLOCATE;
  }
  ucp_mem_h memh = nullptr;
  KVMESH_UCX_CHECK(ucp_mem_map(context_, &mp, &memh));
  if (base == nullptr) {
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
    ucs_status_t qs = ucp_mem_query(memh, &attr);
    if (qs != UCS_OK || attr.address == nullptr || attr.length < mp.length) {
      ucp_mem_unmap(context_, memh);
      return qs != UCS_OK ? UcxError("ucp_mem_query", qs, __FILE__, __LINE__)
                          : ResourceExhaustedError("ucp_mem_map(ALLOCATE) returned a short region");
    }
    base = attr.address;
  }
  void* rkey_buf = nullptr;
  size_t rkey_len = 0;
  ucs_status_t s = ucp_rkey_pack(context_, memh, &rkey_buf, &rkey_len);
  if (s != UCS_OK) {
    ucp_mem_unmap(context_, memh);
    return UcxError("ucp_rkey_pack", s, __FILE__, __LINE__);
  }
  packed_rkey_.assign(static_cast<const char*>(rkey_buf), rkey_len);
  ucp_rkey_buffer_release(rkey_buf);
  memh_ = memh;
  base_ = static_cast<uint8_t*>(base);
  block_bytes_ = block_bytes;
  num_blocks_ = num_blocks;
  return Status::Ok();
}

StatusOr<RegionDescriptor> UcxTransport::DescribeLocal() const {
  if (memh_ == nullptr) return FailedPreconditionError("RegisterLocal has not been called");
  RegionDescriptor d;
  d.transport = name();
  d.worker_address.assign(reinterpret_cast<const char*>(address_), address_len_);
  d.rkey = packed_rkey_;
  d.base = reinterpret_cast<uintptr_t>(base_);
  d.block_bytes = block_bytes_;
  d.num_blocks = num_blocks_;
  return d;
}

StatusOr<PeerId> UcxTransport::Connect(const RegionDescriptor& remote) {
  KVMESH_RETURN_IF_ERROR(CheckRemoteDescriptor(remote, name(), /*require_rkey=*/true));
  std::vector<uint8_t> address = Padded(remote.worker_address);
  ucp_ep_params_t ep_params{};
  ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                         UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep_params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep_params.err_handler.cb = &UcxTransport::OnEpError;
  ep_params.err_handler.arg = this;
  ucp_ep_h ep = nullptr;
  KVMESH_UCX_CHECK(ucp_ep_create(worker_, &ep_params, &ep));
  std::vector<uint8_t> rkey_buf = Padded(remote.rkey);
  ucp_rkey_h rkey = nullptr;
  ucs_status_t s = ucp_ep_rkey_unpack(ep, rkey_buf.data(), &rkey);
  if (s != UCS_OK) {
    ucp_request_param_t cp{};
    cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &cp);
    if (UCS_PTR_IS_PTR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(req);
    }
    return UcxError("ucp_ep_rkey_unpack", s, __FILE__, __LINE__);
  }
  PeerId id = ++next_peer_;
  Peer& p = peers_[id];
  p.ep = ep;
  p.rkey = rkey;
  p.remote = remote;
  p.prefault = PrefaultMappedPeer(rkey, remote);
  return id;
}

std::shared_ptr<UcxTransport::Prefaulter> UcxTransport::PrefaultMappedPeer(
    ucp_rkey_h rkey, const RegionDescriptor& remote) {
  // Over shared memory the peer's region is mapped into this process (ucp_rkey_ptr succeeds). The
  // first touch of each of its pages costs a fault (on a VM with shadow paging ~6-8 us, even when
  // the page-table entry exists), paid inside a get: a fresh 8 MiB window read at ~0.6 GB/s
  // against ~10 GB/s once touched. A background thread touches one byte per page of the mapping
  // right after connect, so pulls soon run at copy speed without delaying the first one.
  void* local = nullptr;
  if (ucp_rkey_ptr(rkey, remote.base, &local) != UCS_OK || local == nullptr) return nullptr;
  auto pf = std::make_shared<Prefaulter>();
  const uintptr_t page = 4096;
  const uintptr_t start = reinterpret_cast<uintptr_t>(local);
  const uintptr_t bytes = remote.block_bytes * remote.num_blocks;
  pf->thread = std::thread([pf = pf.get(), start, bytes, page] {
    const auto t0 = std::chrono::steady_clock::now();
    uint8_t sink = 0;
    uintptr_t off = 0;
    for (; off < bytes && !pf->stop.load(std::memory_order_relaxed); off += page) {
      sink ^= *reinterpret_cast<volatile const uint8_t*>(start + off);
    }
    pf->sink = sink;
    KVMESH_LOG_DEBUG("transfer", "touched the peer's mapped KV region",
                     {"bytes", static_cast<int64_t>(std::min(off, bytes))},
                     {"ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()});
  });
  return pf;
}

void UcxTransport::Disconnect(PeerId peer) {
  if (peers_.count(peer) == 0) return;
  ClosePeer(peer, CancelledError("peer " + std::to_string(peer) + " disconnected"));
}

StatusOr<TransferId> UcxTransport::Post(PeerId peer, std::span<const BlockCopy> copies,
                                        CompletionCallback on_done, bool read) {
  if (memh_ == nullptr) return FailedPreconditionError("RegisterLocal has not been called");
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return NotFoundError("unknown peer " + std::to_string(peer));
  Peer& p = pit->second;
  KVMESH_ASSIGN_OR_RETURN(std::vector<CopyRun> runs,
                          PlanCopies(copies, {block_bytes_, num_blocks_},
                                     {p.remote.block_bytes, p.remote.num_blocks}));
  const TransferId id = ++next_transfer_;
  Transfer& t = transfers_[id];
  t.peer = peer;
  t.read = read;
  t.bytes = copies.size() * block_bytes_;
  t.on_done = std::move(on_done);
  if (p.failed) {
    // The error handler ran but Progress() has not closed the peer yet.
    t.error = UnavailableError("peer " + std::to_string(peer) + " failed: " +
                               ucs_status_string(p.error));
  } else if (!runs.empty()) {
    for (const CopyRun& run : runs) {
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      rp.cb.send = &UcxTransport::OnOpDone;
      rp.user_data = new OpContext{this, id};
      uint8_t* local = base_ + run.local_offset;
      uint64_t remote = p.remote.base + run.remote_offset;
      ucs_status_ptr_t r = read ? ucp_get_nbx(p.ep, local, run.bytes, remote, p.rkey, &rp)
                                : ucp_put_nbx(p.ep, local, run.bytes, remote, p.rkey, &rp);
      if (!UCS_PTR_IS_PTR(r)) delete static_cast<OpContext*>(rp.user_data);
      TrackOp(id, t, r, read ? "ucp_get_nbx" : "ucp_put_nbx");
      if (!t.error.ok()) break;  // stop posting; what is already posted completes
    }
    // Writes: one flush after the runs for remote completion (a put's own completion only means
    // the local buffer is reusable). Reads need none: a get completes when its data is here.
  }
  if (!read && !copies.empty() && t.error.ok()) {
    ucp_request_param_t fp{};
    fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    fp.cb.send = &UcxTransport::OnOpDone;
    fp.user_data = new OpContext{this, id};
    ucs_status_ptr_t r = ucp_ep_flush_nbx(p.ep, &fp);
    if (!UCS_PTR_IS_PTR(r)) delete static_cast<OpContext*>(fp.user_data);
    TrackOp(id, t, r, "ucp_ep_flush_nbx");
  }
  MaybeQueueDone(id, t);
  return id;
}

void UcxTransport::TrackOp(TransferId id, Transfer& t, ucs_status_ptr_t ptr, const char* call) {
  (void)id;
  if (ptr == nullptr) return;  // completed in place
  if (UCS_PTR_IS_ERR(ptr)) {
    if (t.error.ok()) t.error = UcxError(call, UCS_PTR_STATUS(ptr), __FILE__, __LINE__);
    return;
  }
  ++t.ops_pending;
}

void UcxTransport::OnOpDone(void* request, ucs_status_t status, void* user_data) {
  auto* ctx = static_cast<OpContext*>(user_data);
  UcxTransport* self = ctx->self;
  TransferId id = ctx->id;
  delete ctx;
  ucp_request_free(request);
  self->OpFinished(id, status);
}

void UcxTransport::OpFinished(TransferId id, ucs_status_t status) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;  // cannot happen: transfers outlive their requests
  Transfer& t = it->second;
  --t.ops_pending;
  if (status != UCS_OK && t.error.ok()) {
    t.error = status == UCS_ERR_CANCELED
                  ? CancelledError("transfer " + std::to_string(id) + " cancelled")
                  : UcxError(t.read ? "ucp_get_nbx" : "ucp_put_nbx", status, __FILE__, __LINE__);
  }
  MaybeQueueDone(id, t);
}

void UcxTransport::MaybeQueueDone(TransferId id, Transfer& t) {
  if (t.ops_pending == 0 && !t.done_queued) {
    t.done_queued = true;
    done_.push_back(id);
  }
}

int UcxTransport::RunDone() {
  int ran = 0;
  // Callbacks may post (appending to done_) or cancel: take what is queued now.
  std::deque<TransferId> batch;
  batch.swap(done_);
  for (TransferId id : batch) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) continue;
    Transfer t = std::move(it->second);
    transfers_.erase(it);
    if (t.error.ok()) {
      ++stats_.transfers_ok;
      (t.read ? stats_.bytes_read : stats_.bytes_written) += t.bytes;
    } else {
      ++stats_.transfers_failed;
    }
    if (t.on_done) t.on_done(id, t.error);
    ++ran;
  }
  return ran;
}

void UcxTransport::OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* self = static_cast<UcxTransport*>(arg);
  for (auto& [id, p] : self->peers_) {
    if (p.ep == ep && !p.failed) {
      p.failed = true;
      p.error = status;
      self->failed_peers_.push_back(id);
      KVMESH_LOG_WARN("transfer", "ucx peer failed", {"peer", static_cast<unsigned long>(id)},
                      {"status", ucs_status_string(status)});
    }
  }
}

void UcxTransport::HandleFailedPeers() {
  while (!failed_peers_.empty()) {
    PeerId id = failed_peers_.back();
    failed_peers_.pop_back();
    auto it = peers_.find(id);
    if (it == peers_.end()) continue;
    ClosePeer(id, UnavailableError("peer " + std::to_string(id) + " failed: " +
                                   ucs_status_string(it->second.error)));
  }
}

void UcxTransport::ClosePeer(PeerId peer, const Status& result) {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return;
  Peer p = it->second;
  peers_.erase(it);
  if (p.prefault) {  // stop touching the mapping before the key that maps it goes
    p.prefault->stop = true;
    if (p.prefault->thread.joinable()) p.prefault->thread.join();
  }
  // Our status wins over UCX's UCS_ERR_CANCELED for every transfer of this peer.
  std::vector<TransferId> ids;
  for (auto& [id, t] : transfers_) {
    if (t.peer == peer) {
      ids.push_back(id);
      if (t.ops_pending > 0 || !t.done_queued) t.error = result;  // finished ones keep theirs
    }
  }
  ucp_request_param_t cp{};
  cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t close_req = ucp_ep_close_nbx(p.ep, &cp);
  auto deadline = std::chrono::steady_clock::now() + kDrainLimit;
  auto pending = [&] {
    for (TransferId id : ids) {
      auto t = transfers_.find(id);
      if (t != transfers_.end() && t->second.ops_pending > 0) return true;
    }
    return false;
  };
  while (pending() && std::chrono::steady_clock::now() < deadline) ucp_worker_progress(worker_);
  // Every operation that used the key has completed (force close cancels them); release it.
  if (!pending()) {
    ucp_rkey_destroy(p.rkey);
  } else {
    // A UCX bug: the requests still reference our OpContexts and the key. Leak both rather than
    // free memory UCX may still touch; the transfers are dropped without a callback later.
    KVMESH_LOG_ERROR("transfer", "ucx requests did not complete after force close",
                     {"peer", static_cast<unsigned long>(peer)});
  }
  if (UCS_PTR_IS_PTR(close_req)) {
    while (ucp_request_check_status(close_req) == UCS_INPROGRESS &&
           std::chrono::steady_clock::now() < deadline) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(close_req);
  }
  for (TransferId id : ids) {
    auto t = transfers_.find(id);
    if (t == transfers_.end()) continue;
    if (t->second.ops_pending > 0) {
      t->second.ops_pending = 0;  // see the bug path above; run the callback anyway
    }
    MaybeQueueDone(id, t->second);
  }
  // Run this peer's callbacks now (Cancel/Disconnect/destructor contract); others stay queued.
  std::deque<TransferId> keep;
  std::deque<TransferId> mine;
  for (TransferId id : done_) {
    bool is_mine = false;
    for (TransferId x : ids) is_mine |= x == id;
    (is_mine ? mine : keep).push_back(id);
  }
  done_.swap(mine);
  RunDone();
  for (TransferId id : done_) keep.push_back(id);  // posted from those callbacks
  done_.swap(keep);
}

int UcxTransport::ProgressWorker() {
  int events = 0;
  while (ucp_worker_progress(worker_) != 0) ++events;
  HandleFailedPeers();
  return events;
}

int UcxTransport::Progress(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  ProgressWorker();
  int ran = RunDone();
  if (ran > 0 || timeout_ms <= 0) return ran;
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    if (efd_ >= 0) {
      ucs_status_t s = ucp_worker_arm(worker_);
      if (s == UCS_OK) {
        int wait_ms = static_cast<int>(
            std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count());
        pollfd pfd{efd_, POLLIN, 0};
        poll(&pfd, 1, wait_ms);
      }
      // UCS_ERR_BUSY: events are pending; progress again.
    }
    ProgressWorker();
    ran += RunDone();
    if (ran > 0 || efd_ >= 0) break;  // an event arrived (or the wait ended)
  }
  return ran;
}

void UcxTransport::Cancel(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  Transfer& t = it->second;
  if (t.ops_pending == 0) {
    // Nothing on the wire: finish it alone; its callback runs now with Cancelled.
    t.error = CancelledError("transfer " + std::to_string(id) + " cancelled");
    if (!t.done_queued) done_.push_back(id);
    t.done_queued = true;
    std::deque<TransferId> keep;
    for (TransferId x : done_) {
      if (x != id) keep.push_back(x);
    }
    done_ = {id};
    RunDone();
    for (TransferId x : done_) keep.push_back(x);
    done_.swap(keep);
    return;
  }
  ClosePeer(t.peer, CancelledError("transfer " + std::to_string(id) + " cancelled"));
}

TransportStats UcxTransport::Stats() const {
  TransportStats s = stats_;
  s.peers = static_cast<uint32_t>(peers_.size());
  s.in_flight = static_cast<uint32_t>(transfers_.size());
  return s;
}

StatusOr<std::unique_ptr<KvTransport>> CreateUcxTransport(const UcxTransportOptions& options) {
  auto t = std::make_unique<UcxTransport>();
  KVMESH_RETURN_IF_ERROR(t->Init(options));
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace kvmesh::transfer
