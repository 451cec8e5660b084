// TransferService: the agent's side of KV transfer. Owns the KvTransport (its local region = the
// engine's KV cache) and one transfer thread that progresses it.
//
// Prefill side: nothing to post. The thread keeps progressing the transport, because UCX's
// software RMA (e.g. GET over tcp) needs the target worker to make progress for a peer's reads.
//
// Decode side (engine::KvImporter): the worker API registers the TransferHandle of a kImportedKv
// request with ExpectHandle() before submitting it; when the engine calls StartImport() the thread
//  1. validates the handle against the request (block size, every needed index < block count),
//  2. handshakes with the peer once per (peer_url, agent_id) — GET <peer>/v1/kv/transfer_info —
//     checking the instance id and that the KV layouts match, and connects the transport,
//  3. claims the lease (POST <peer>/v1/kv/leases/claim): the peer answers with the block ids it
//     really pinned for that lease and keeps them pinned for the pull; a handle whose ids,
//     token count or block size differ from the lease's is forged or stale and is rejected before
//     any byte moves (for a prefix copy, also one whose block hashes differ from the lease's),
//  4. posts one read of the needed blocks (remote = handle.block_ids[index], local = engine block),
//  5. on completion releases the lease (POST <peer>/v1/kv/leases/release, best effort) and calls
//     Engine::CompleteImport(id, status).
// Every started import completes exactly once, OK or error, within `timeout` of StartImport (a
// transfer over the deadline is cancelled); a failed peer is disconnected and re-handshaken next
// time. The engine decides what an error means (recompute or fail the request).
//
// Threading: ExpectHandle/Forget/StartImport may be called from any thread; everything else runs on
// the transfer thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent/agent_metrics.h"
#include "agent/engine/engine.h"
#include "agent/transfer/kv_transport.h"
#include "agent/transfer/transfer_handle.h"

namespace kvmesh::agent {

struct TransferServiceOptions {
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds debug_pull_delay{0};
  transfer::KvLayoutInfo local_layout;
};

class TransferService final : public engine::KvImporter {
 public:
  // `metrics` may be null. Nothing runs until Start().
  TransferService(std::unique_ptr<transfer::KvTransport> transport, TransferServiceOptions options,
                  AgentMetrics* metrics);
  ~TransferService() override;  // Stop()

  // Lets the transport allocate the KV cache region (before Start; the engine's
  // kv_cache_allocator): memory its peers read fastest, owned by the transport, so the service
  // must outlive the engine. Errors: the transport's.
  StatusOr<float*> AllocateRegion(uint64_t block_bytes, uint32_t num_blocks);

  // Registers the engine's KV cache (unless AllocateRegion made it) (block i at base + i * block_bytes) with the transport and
  // starts the transfer thread; `engine` receives CompleteImport calls. Once. Errors: the
  // transport's.
  Status Start(engine::Engine* engine, void* base, uint64_t block_bytes, uint32_t num_blocks);

  // The KV layout of the local engine (sent at handshake, compared with peers'); before Start().
  void SetLocalLayout(const transfer::KvLayoutInfo& layout) { options_.local_layout = layout; }

  // What GET /v1/kv/transfer_info returns for this agent.
  StatusOr<transfer::TransferInfo> LocalInfo(const std::string& agent_id) const;

  // `chain` (optional): the block hashes the peer's pinned blocks must hold (a prefix copy,
  // docs/kv-transfer.md); the claim then fails unless the peer's lease lists exactly these.
  void ExpectHandle(const std::string& request_id, transfer::TransferHandle handle,
                    std::vector<uint64_t> chain = {});
  void Forget(const std::string& request_id);
  void StartImport(const std::string& request_id, std::span<const engine::ImportBlock> blocks) override;

  // Fails every pending import (Cancelled), joins the thread. Idempotent.
  void Stop();

  size_t num_pending() const;

 private:
  struct Job {
    std::string request_id;
    std::vector<engine::ImportBlock> blocks;
    std::chrono::steady_clock::time_point start;
  };
  // A pull that is connected and claimed, waiting for debug_pull_delay before its reads.
  struct Parked {
    std::string request_id;
    transfer::TransferHandle handle;
    transfer::PeerId peer = 0;
    std::vector<transfer::BlockCopy> copies;
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::time_point post_at;
  };
  struct Active {
    std::string request_id;
    transfer::TransferHandle handle;
    transfer::PeerId peer = 0;
    uint64_t bytes = 0;
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::time_point deadline;
    bool done = false;
    Status result;
    std::chrono::steady_clock::time_point posted_at;     // PostRead returned
    std::chrono::steady_clock::time_point completed_at;  // the transport's callback ran
  };
  struct PeerEntry {
    std::string agent_id;
    transfer::PeerId peer = 0;
  };

  void Loop();
  void Begin(Job job);
  void Post(Parked p);
  Status Claim(const transfer::TransferHandle& h, const std::vector<uint64_t>& chain);
  void Finish(Active& a);
  StatusOr<transfer::PeerId> PeerFor(const transfer::TransferHandle& h);
  void DropPeer(const std::string& peer_url);
  // `bytes_read` (what this pull moved) is reported so the prefill agent can count its "out" bytes.
  void ReleaseLease(const transfer::TransferHandle& h, uint64_t bytes_read = 0);
  void Fail(const std::string& id, const char* reason, Status status);

  TransferServiceOptions options_;  // local_layout set before Start(), then immutable
  std::unique_ptr<transfer::KvTransport> transport_;  // transfer thread only (LocalInfo: const, safe)
  AgentMetrics* const metrics_;
  engine::Engine* engine_ = nullptr;
  transfer::RegionDescriptor local_region_;
  bool region_allocated_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Expected {
    transfer::TransferHandle handle;
    std::vector<uint64_t> chain;
  };
  std::unordered_map<std::string, Expected> handles_;  // guarded by mu_
  std::deque<Job> jobs_;                                                 // guarded by mu_
  bool stopping_ = false;                                                // guarded by mu_
  size_t pending_ = 0;                                                   // guarded by mu_

  std::vector<Parked> parked_;                                  // transfer thread
  std::map<std::string, PeerEntry> peers_;                      // transfer thread: by peer_url
  std::unordered_map<transfer::TransferId, std::unique_ptr<Active>> active_;  // transfer thread
  std::thread thread_;
};

}  // namespace kvmesh::agent
