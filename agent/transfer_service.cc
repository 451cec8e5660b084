#include "agent/transfer_service.h"

#include <algorithm>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/http_client.h"
#include "common/log.h"

namespace kvmesh::agent {

namespace {

using Clock = std::chrono::steady_clock;

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TransferService::TransferService(std::unique_ptr<transfer::KvTransport> transport,
                                 TransferServiceOptions options, AgentMetrics* metrics)
    : options_(std::move(options)), transport_(std::move(transport)), metrics_(metrics) {}

StatusOr<float*> TransferService::AllocateRegion(uint64_t block_bytes, uint32_t num_blocks) {
  if (region_allocated_ || thread_.joinable()) return FailedPreconditionError("KV region already set up");
  KVMESH_ASSIGN_OR_RETURN(void* mem, transport_->AllocateLocal(block_bytes, num_blocks));
  region_allocated_ = true;
  return static_cast<float*>(mem);
}

Status TransferService::Start(engine::Engine* engine, void* base, uint64_t block_bytes,
                              uint32_t num_blocks) {
  if (thread_.joinable()) return FailedPreconditionError("transfer service already started");
  if (!region_allocated_) KVMESH_RETURN_IF_ERROR(transport_->RegisterLocal(base, block_bytes, num_blocks));
  KVMESH_ASSIGN_OR_RETURN(local_region_, transport_->DescribeLocal());
  engine_ = engine;
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

TransferService::~TransferService() { Stop(); }

StatusOr<transfer::TransferInfo> TransferService::LocalInfo(const std::string& agent_id) const {
  if (local_region_.num_blocks == 0) return FailedPreconditionError("KV transfer region is not registered");
  transfer::TransferInfo info;
  info.agent_id = agent_id;
  info.layout = options_.local_layout;
  info.region = local_region_;
  return info;
}

void TransferService::ExpectHandle(const std::string& request_id, transfer::TransferHandle handle,
                                   std::vector<uint64_t> chain) {
  std::lock_guard<std::mutex> lock(mu_);
  handles_[request_id] = Expected{std::move(handle), std::move(chain)};
}

void TransferService::Forget(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  handles_.erase(request_id);
}

void TransferService::StartImport(const std::string& request_id,
                                  std::span<const engine::ImportBlock> blocks) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      jobs_.push_back(Job{request_id, {blocks.begin(), blocks.end()}, Clock::now()});
      ++pending_;
      cv_.notify_one();
      return;
    }
  }
  if (engine_ != nullptr) engine_->CompleteImport(request_id, CancelledError("agent is stopping"));
}

size_t TransferService::num_pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

void TransferService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void TransferService::Fail(const std::string& id, const char* reason, Status status) {
  KVMESH_LOG_WARN("transfer", "KV pull failed", {"request", id}, {"reason", reason},
                  {"error", status.ToString()});
  if (metrics_ != nullptr) metrics_->transfer_failures->WithLabels({reason}).Inc();
  if (engine_ != nullptr) engine_->CompleteImport(id, std::move(status));
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_ > 0) --pending_;
}

void TransferService::DropPeer(const std::string& peer_url) {
  auto it = peers_.find(peer_url);
  if (it == peers_.end()) return;
  transport_->Disconnect(it->second.peer);
  peers_.erase(it);
}

StatusOr<transfer::PeerId> TransferService::PeerFor(const transfer::TransferHandle& h) {
  if (auto it = peers_.find(h.peer_url); it != peers_.end()) {
    if (it->second.agent_id == h.agent_id) return it->second.peer;
    DropPeer(h.peer_url);  // the peer restarted (new instance id): handshake again
  }
  http::HttpClientOptions copts;
  copts.connect_timeout = std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::milliseconds(2000));
  copts.read_timeout = options_.timeout;
  copts.max_response_body_bytes = 1 << 20;
  http::HttpClient client(copts);
  KVMESH_ASSIGN_OR_RETURN(http::ClientResponse resp, client.Get(h.peer_url + "/v1/kv/transfer_info"));
  if (resp.status != 200) {
    return UnavailableError("handshake with " + h.peer_url + ": HTTP " + std::to_string(resp.status));
  }
  nlohmann::json j = nlohmann::json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return UnavailableError("handshake with " + h.peer_url + ": response is not JSON");
  KVMESH_ASSIGN_OR_RETURN(transfer::TransferInfo info, transfer::TransferInfoFromJson(j));
  if (info.agent_id != h.agent_id) {
    return FailedPreconditionError("handshake with " + h.peer_url + ": peer is agent '" + info.agent_id +
                                   "' but the handle names '" + h.agent_id + "' (peer restarted?)");
  }
  KVMESH_RETURN_IF_ERROR(transfer::CheckLayoutsMatch(options_.local_layout, info.layout));
  KVMESH_ASSIGN_OR_RETURN(transfer::PeerId peer, transport_->Connect(info.region));
  peers_[h.peer_url] = PeerEntry{h.agent_id, peer};
  KVMESH_LOG_INFO("transfer", "connected to KV peer", {"peer", h.peer_url}, {"agent_id", h.agent_id},
                  {"transport", transport_->name()});
  return peer;
}

void TransferService::ReleaseLease(const transfer::TransferHandle& h, uint64_t bytes_read) {
  http::HttpClientOptions copts;
  copts.connect_timeout = std::chrono::milliseconds(1000);
  copts.read_timeout = std::chrono::milliseconds(1000);
  http::HttpClient client(copts);
  nlohmann::json body = {{"lease_id", h.lease_id}, {"agent_id", h.agent_id}, {"bytes_read", bytes_read},
                         {"transport", transport_->name()}};
  auto resp = client.Post(h.peer_url + "/v1/kv/leases/release", body.dump());
  if (!resp.ok() || resp->status != 200) {
    KVMESH_LOG_DEBUG("transfer", "lease release not acknowledged (the lease expires by itself)",
                     {"peer", h.peer_url},
                     {"error", resp.ok() ? std::to_string(resp->status) : resp.status().ToString()});
  }
}

void TransferService::Begin(Job job) {
  std::optional<Expected> found;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = handles_.find(job.request_id); it != handles_.end()) {
      found = std::move(it->second);
      handles_.erase(it);
    }
  }
  if (!found) {
    Fail(job.request_id, "handle", InvalidArgumentError("no transfer handle for request " + job.request_id));
    return;
  }
  transfer::TransferHandle h = std::move(found->handle);
  const std::vector<uint64_t> chain = std::move(found->chain);
  if (h.block_size != options_.local_layout.block_size) {
    ReleaseLease(h);
    Fail(job.request_id, "layout",
         FailedPreconditionError("handle block_size " + std::to_string(h.block_size) +
                                 " != local block_size " + std::to_string(options_.local_layout.block_size)));
    return;
  }
  std::vector<transfer::BlockCopy> copies;
  copies.reserve(job.blocks.size());
  for (const engine::ImportBlock& b : job.blocks) {
    if (b.index < 0 || static_cast<size_t>(b.index) >= h.block_ids.size()) {
      ReleaseLease(h);
      Fail(job.request_id, "handle",
           InvalidArgumentError("handle has " + std::to_string(h.block_ids.size()) +
                                " blocks but block " + std::to_string(b.index) + " is needed"));
      return;
    }
    copies.push_back({h.block_ids[static_cast<size_t>(b.index)], b.block});
  }
  if (h.lease_expiry_unix_ms <= UnixMillisNow()) {
    Fail(job.request_id, "expired", FailedPreconditionError("lease " + std::to_string(h.lease_id) + " has expired"));
    return;
  }
  auto peer = PeerFor(h);
  if (!peer.ok()) {
    const bool layout = peer.status().code() == StatusCode::kFailedPrecondition;
    Fail(job.request_id, layout ? "layout" : "handshake", peer.status());
    return;
  }
  if (Status claimed = Claim(h, chain); !claimed.ok()) {
    Fail(job.request_id, "lease", claimed);
    return;
  }
  Parked p{job.request_id, std::move(h), *peer, std::move(copies), job.start,
           Clock::now() + options_.debug_pull_delay};
  if (options_.debug_pull_delay.count() > 0) {
    parked_.push_back(std::move(p));
  } else {
    Post(std::move(p));
  }
}

Status TransferService::Claim(const transfer::TransferHandle& h, const std::vector<uint64_t>& chain) {
  http::HttpClientOptions copts;
  copts.connect_timeout = std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::milliseconds(2000));
  copts.read_timeout = options_.timeout;
  copts.max_response_body_bytes = 16 << 20;
  http::HttpClient client(copts);
  nlohmann::json body = {{"lease_id", h.lease_id}, {"agent_id", h.agent_id},
                         {"hold_ms", options_.timeout.count() + 1000}};
  KVMESH_ASSIGN_OR_RETURN(http::ClientResponse resp, client.Post(h.peer_url + "/v1/kv/leases/claim", body.dump()));
  if (resp.status != 200) {
    return FailedPreconditionError("claim of lease " + std::to_string(h.lease_id) + " at " + h.peer_url +
                                   " refused: HTTP " + std::to_string(resp.status) + " " + resp.body.substr(0, 200));
  }
  nlohmann::json j = nlohmann::json::parse(resp.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("block_ids") || !j["block_ids"].is_array() ||
      !j.contains("num_tokens") || !j["num_tokens"].is_number_integer()) {
    return UnavailableError("claim of lease " + std::to_string(h.lease_id) + ": malformed answer");
  }
  std::vector<uint32_t> ids;
  for (const auto& v : j["block_ids"]) {
    if (!v.is_number_unsigned()) return UnavailableError("claim answer: block id is not an unsigned integer");
    ids.push_back(v.get<uint32_t>());
  }
  if (ids != h.block_ids || j["num_tokens"].get<int64_t>() != h.num_tokens) {
    return InvalidArgumentError("handle does not match lease " + std::to_string(h.lease_id) +
                                ": block ids or token count differ (forged or stale handle)");
  }
  if (!chain.empty()) {
    std::vector<uint64_t> hashes;
    if (auto hs = j.find("hashes"); hs != j.end() && hs->is_array()) {
      for (const auto& v : *hs) {
        if (!v.is_number_unsigned()) return UnavailableError("claim answer: hash is not an unsigned integer");
        hashes.push_back(v.get<uint64_t>());
      }
    }
    if (hashes != chain) {
      ReleaseLease(h);  // claimed just now, and nobody pulls a prefix under another chain's name
      return InvalidArgumentError("lease " + std::to_string(h.lease_id) +
                                  " does not hold the requested prefix: its block hashes differ");
    }
  }
  return Status::Ok();
}

void TransferService::Post(Parked p) {
  auto a = std::make_unique<Active>();
  a->request_id = p.request_id;
  a->peer = p.peer;
  a->bytes = p.copies.size() * local_region_.block_bytes;
  a->start = Clock::now();
  a->deadline = p.start + options_.timeout;
  Active* raw = a.get();
  auto tid = transport_->PostRead(p.peer, p.copies, [raw](transfer::TransferId, const Status& st) {
    raw->done = true;
    raw->result = st;
    raw->completed_at = Clock::now();
  });
  a->posted_at = Clock::now();
  a->handle = std::move(p.handle);
  if (!tid.ok()) {
    const bool bad_handle = tid.status().code() == StatusCode::kInvalidArgument;
    DropPeer(a->handle.peer_url);
    ReleaseLease(a->handle);
    Fail(a->request_id, bad_handle ? "handle" : "transport", tid.status());
    return;
  }
  active_[*tid] = std::move(a);
}

void TransferService::Finish(Active& a) {
  const double seconds = std::chrono::duration<double>(Clock::now() - a.start).count();
  KVMESH_LOG_DEBUG("transfer", "KV pull finished", {"request", a.request_id}, {"bytes", static_cast<int64_t>(a.bytes)},
                   {"seconds", seconds}, {"ok", a.result.ok()},
                   {"post_ms", std::chrono::duration<double, std::milli>(a.posted_at - a.start).count()},
                   {"complete_ms", std::chrono::duration<double, std::milli>(a.completed_at - a.start).count()});
  if (a.result.ok()) {
    if (metrics_ != nullptr) {
      metrics_->transfer_bytes->WithLabels({transport_->name(), "in"}).Inc(static_cast<double>(a.bytes));
      metrics_->transfer_seconds->WithLabels({transport_->name(), "in"}).Observe(seconds);
    }
    ReleaseLease(a.handle, a.bytes);
    if (engine_ != nullptr) engine_->CompleteImport(a.request_id, Status::Ok());
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_ > 0) --pending_;
    return;
  }
  const bool timeout = a.result.code() == StatusCode::kDeadlineExceeded;
  DropPeer(a.handle.peer_url);  // a cancelled or failed UCX endpoint is closed: handshake again
  ReleaseLease(a.handle);
  Fail(a.request_id, timeout ? "timeout" : "transport", a.result);
}

void TransferService::Loop() {
  for (;;) {
    std::vector<Job> ready;
    bool stopping = false;
    // Progress even with nothing of ours in flight: a peer may be reading from us over a
    // software-RMA transport.
    const Clock::time_point polled = Clock::now();
    // Busy-poll while pulls are in flight: shared-memory completions do not wake the worker's
    // event fd, and a pull is short.
    const int completed = transport_->Progress(active_.empty() ? 5 : 0);
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (active_.empty() && parked_.empty() && completed == 0 && !stopping_ &&
          Clock::now() - polled < std::chrono::milliseconds(1)) {
        // The transport returned at once (nothing to wait on): do not spin.
        cv_.wait_for(lock, std::chrono::milliseconds(2));
      }
      stopping = stopping_;
      ready.assign(std::make_move_iterator(jobs_.begin()), std::make_move_iterator(jobs_.end()));
      jobs_.clear();
    }
    if (stopping) {
      for (Job& j : ready) Fail(j.request_id, "cancelled", CancelledError("agent is stopping"));
      for (Parked& p : parked_) {
        ReleaseLease(p.handle);
        Fail(p.request_id, "cancelled", CancelledError("agent is stopping"));
      }
      parked_.clear();
      for (auto& [tid, a] : active_) {
        if (!a->done) transport_->Cancel(tid);
        if (!a->done) a->result = CancelledError("agent is stopping");
        a->done = true;
        ReleaseLease(a->handle);
        Fail(a->request_id, "cancelled", CancelledError("agent is stopping: " + a->result.message()));
      }
      active_.clear();
      break;
    }
    for (Job& j : ready) Begin(std::move(j));
    if (!parked_.empty()) {
      const Clock::time_point t = Clock::now();
      std::vector<Parked> due;
      for (auto it = parked_.begin(); it != parked_.end();) {
        if (it->post_at <= t) {
          due.push_back(std::move(*it));
          it = parked_.erase(it);
        } else {
          ++it;
        }
      }
      for (Parked& p : due) Post(std::move(p));
    }
    const Clock::time_point now = Clock::now();
    for (auto it = active_.begin(); it != active_.end();) {
      Active& a = *it->second;
      if (!a.done && now >= a.deadline) {
        transport_->Cancel(it->first);
        a.done = true;
        a.result = DeadlineExceededError("KV pull from " + a.handle.peer_url + " took longer than " +
                                         std::to_string(options_.timeout.count()) + " ms");
      }
      if (a.done) {
        Finish(a);
        it = active_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace kvmesh::agent
