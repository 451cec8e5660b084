#include "agent/transfer/loopback_transport.h"

#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/transfer/copy_plan.h"

namespace kvmesh::transfer {
namespace {

struct Region {
  uint8_t* base = nullptr;
  uint64_t block_bytes = 0;
  uint32_t num_blocks = 0;
};

// Process-wide table of live loopback instances by key ("loopback:<n>"); entries hold the
// registered region so a peer can copy without touching the other transport object.
class Registry {
 public:
  static Registry& Get() {
    static Registry* r = new Registry();  // never destroyed: transports may outlive statics
    return *r;
  }
  std::string Add() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string key = "loopback:" + std::to_string(++next_);
    regions_[key] = Region{};
    return key;
  }
  void SetRegion(const std::string& key, Region region) {
    std::lock_guard<std::mutex> lock(mu_);
    regions_[key] = region;
  }
  void Remove(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    regions_.erase(key);
  }
  // False when the instance is gone or has no region.
  bool Lookup(const std::string& key, Region* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = regions_.find(key);
    if (it == regions_.end() || it->second.base == nullptr) return false;
    *out = it->second;
    return true;
  }

 private:
  std::mutex mu_;
  uint64_t next_ = 0;
  std::unordered_map<std::string, Region> regions_;
};

}  // namespace

class LoopbackTransport final : public KvTransport {
 public:
  LoopbackTransport() : key_(Registry::Get().Add()) {}
  ~LoopbackTransport() override {
    std::vector<TransferId> ids;
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    for (TransferId id : ids) Finish(id, CancelledError("transport destroyed"));
    Registry::Get().Remove(key_);
  }

  std::string name() const override { return "loopback"; }

  Status RegisterLocal(void* base, uint64_t block_bytes, uint32_t num_blocks) override {
    if (local_.base != nullptr) return FailedPreconditionError("local region already registered");
    KVMESH_RETURN_IF_ERROR(CheckLocalRegion(base, block_bytes, num_blocks));
    local_ = Region{static_cast<uint8_t*>(base), block_bytes, num_blocks};
    Registry::Get().SetRegion(key_, local_);
    return Status::Ok();
  }

  StatusOr<RegionDescriptor> DescribeLocal() const override {
    if (local_.base == nullptr) return FailedPreconditionError("RegisterLocal has not been called");
    RegionDescriptor d;
    d.transport = name();
    d.worker_address = key_;
    d.base = reinterpret_cast<uintptr_t>(local_.base);
    d.block_bytes = local_.block_bytes;
    d.num_blocks = local_.num_blocks;
    return d;
  }

  StatusOr<PeerId> Connect(const RegionDescriptor& remote) override {
    KVMESH_RETURN_IF_ERROR(CheckRemoteDescriptor(remote, name(), /*require_rkey=*/false));
    Region r;
    if (!Registry::Get().Lookup(remote.worker_address, &r)) {
      return UnavailableError("loopback peer \"" + remote.worker_address + "\" does not exist");
    }
    if (reinterpret_cast<uintptr_t>(r.base) != remote.base || r.block_bytes != remote.block_bytes ||
        r.num_blocks != remote.num_blocks) {
      return InvalidArgumentError("descriptor geometry does not match loopback peer \"" +
                                  remote.worker_address + "\"");
    }
    PeerId id = ++next_peer_;
    peers_[id] = Peer{remote.worker_address, remote, false};
    return id;
  }

  void Disconnect(PeerId peer) override {
    if (peers_.erase(peer) == 0) return;
    FinishPeer(peer, CancelledError("peer disconnected"));
  }

  StatusOr<TransferId> PostRead(PeerId peer, std::span<const BlockCopy> copies,
                                CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/true);
  }
  StatusOr<TransferId> PostWrite(PeerId peer, std::span<const BlockCopy> copies,
                                 CompletionCallback on_done) override {
    return Post(peer, copies, std::move(on_done), /*read=*/false);
  }

  int Progress(int /*timeout_ms*/) override {
    if (hold_) return 0;
    // Callbacks may post or cancel: iterate over a snapshot of ids.
    std::vector<TransferId> ids;
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    int ran = 0;
    for (TransferId id : ids) {
      auto it = transfers_.find(id);
      if (it == transfers_.end()) continue;
      Finish(id, Execute(it->second));
      ++ran;
    }
    return ran;
  }

  void Cancel(TransferId id) override {
    if (transfers_.count(id) == 0) return;
    Finish(id, CancelledError("transfer " + std::to_string(id) + " cancelled"));
  }

  TransportStats Stats() const override {
    TransportStats s = stats_;
    s.peers = static_cast<uint32_t>(peers_.size());
    s.in_flight = static_cast<uint32_t>(transfers_.size());
    return s;
  }

  void SetHold(bool hold) { hold_ = hold; }
  void FailPeer(PeerId peer) {
    auto it = peers_.find(peer);
    if (it != peers_.end()) it->second.failed = true;
  }

 private:
  struct Peer {
    std::string key;
    RegionDescriptor remote;
    bool failed = false;
  };
  struct Transfer {
    PeerId peer = 0;
    bool read = true;
    std::vector<CopyRun> runs;
    uint64_t bytes = 0;
    CompletionCallback on_done;
  };

  StatusOr<TransferId> Post(PeerId peer, std::span<const BlockCopy> copies,
                            CompletionCallback on_done, bool read) {
    if (local_.base == nullptr) return FailedPreconditionError("RegisterLocal has not been called");
    auto it = peers_.find(peer);
    if (it == peers_.end()) return NotFoundError("unknown peer " + std::to_string(peer));
    KVMESH_ASSIGN_OR_RETURN(
        std::vector<CopyRun> runs,
        PlanCopies(copies, {local_.block_bytes, local_.num_blocks},
                   {it->second.remote.block_bytes, it->second.remote.num_blocks}));
    Transfer t;
    t.peer = peer;
    t.read = read;
    t.bytes = copies.size() * local_.block_bytes;
    t.runs = std::move(runs);
    t.on_done = std::move(on_done);
    TransferId id = ++next_transfer_;
    transfers_.emplace(id, std::move(t));
    return id;
  }

  // Moves the bytes now (at completion time, so a cancelled or failed transfer moves nothing).
  Status Execute(const Transfer& t) {
    auto p = peers_.find(t.peer);
    if (p == peers_.end()) return CancelledError("peer disconnected");
    if (p->second.failed) return UnavailableError("loopback peer " + p->second.key + " failed");
    Region r;
    if (!Registry::Get().Lookup(p->second.key, &r)) {
      return UnavailableError("loopback peer " + p->second.key + " is gone");
    }
    for (const CopyRun& run : t.runs) {
      uint8_t* remote = r.base + run.remote_offset;
      uint8_t* local = local_.base + run.local_offset;
      if (t.read) {
        std::memmove(local, remote, run.bytes);
      } else {
        std::memmove(remote, local, run.bytes);
      }
    }
    return Status::Ok();
  }

  void Finish(TransferId id, const Status& result) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    Transfer t = std::move(it->second);
    transfers_.erase(it);
    if (result.ok()) {
      ++stats_.transfers_ok;
      (t.read ? stats_.bytes_read : stats_.bytes_written) += t.bytes;
    } else {
      ++stats_.transfers_failed;
    }
    if (t.on_done) t.on_done(id, result);
  }

  void FinishPeer(PeerId peer, const Status& result) {
    std::vector<TransferId> ids;
    for (const auto& [id, t] : transfers_) {
      if (t.peer == peer) ids.push_back(id);
    }
    for (TransferId id : ids) Finish(id, result);
  }

  const std::string key_;
  Region local_;
  bool hold_ = false;
  PeerId next_peer_ = 0;
  TransferId next_transfer_ = 0;
  std::map<PeerId, Peer> peers_;
  std::map<TransferId, Transfer> transfers_;  // ordered: completions in post order
  TransportStats stats_;
};

std::unique_ptr<KvTransport> CreateLoopbackTransport() {
  return std::make_unique<LoopbackTransport>();
}

void LoopbackHoldCompletions(KvTransport* transport, bool hold) {
  if (auto* t = dynamic_cast<LoopbackTransport*>(transport)) t->SetHold(hold);
}

void LoopbackFailPeer(KvTransport* transport, PeerId peer) {
  if (auto* t = dynamic_cast<LoopbackTransport*>(transport)) t->FailPeer(peer);
}

}  // namespace kvmesh::transfer
