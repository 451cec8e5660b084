#include "router/kv_indexer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/http_client.h"
#include "common/log.h"
#include "kv/block_hash.h"
#include "kv/kv_event_zmq.h"

namespace kvmesh::router {

namespace {

constexpr const char* kComponent = "router.kv_indexer";
constexpr int kReceiveTimeoutMs = 100;  // bounds how long Stop()/RemoveWorker() wait

// A worker whose stream has been quiet this long is compared with its inventory.
std::chrono::milliseconds IdleCheckInterval(const KvIndexerOptions& o) {
  return std::max(std::chrono::milliseconds(100), 10 * o.retry_interval);
}

// Host of "http(s)://host:port" (brackets of an IPv6 literal kept).
std::string HostOfUrl(const std::string& url) {
  size_t p = url.find("://");
  std::string rest = p == std::string::npos ? url : url.substr(p + 3);
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (rest.find(']') == std::string::npos || colon > rest.find(']'))) {
    rest.resize(colon);
  }
  return rest;
}

// tcp://0.0.0.0:P and tcp://*:P name "every interface" of the worker: replace with its host.
std::string ResolveWildcard(const std::string& endpoint, const std::string& worker_url) {
  for (const char* wildcard : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"}) {
    std::string w(wildcard);
    if (endpoint.rfind(w, 0) == 0) {
      return "tcp://" + HostOfUrl(worker_url) + ":" + endpoint.substr(w.size());
    }
  }
  return endpoint;
}

struct Inventory {
  std::string agent_id;
  uint32_t block_size = 0;
  int64_t seq = -1;
  std::string events_endpoint;
  std::string replay_endpoint;
  std::string topic;
  std::array<std::vector<kv::BlockHash>, kv::kNumMedia> hashes;
};

StatusOr<Inventory> ParseInventory(const std::string& body) {
  Inventory inv;
  try {
    auto j = nlohmann::json::parse(body);
    if (!j.is_object()) return InvalidArgumentError("inventory is not a JSON object");
    inv.agent_id = j.value("agent_id", std::string());
    inv.block_size = j.value("block_size", 0u);
    inv.seq = j.value("seq", int64_t{-1});
    inv.events_endpoint = j.value("events_endpoint", std::string());
    inv.replay_endpoint = j.value("replay_endpoint", std::string());
    inv.topic = j.value("topic", std::string());
    if (j.contains("tiers")) {
      for (const auto& t : j.at("tiers")) {
        auto medium = kv::ParseMedium(t.value("medium", std::string("GPU")));
        if (!medium) {
          return InvalidArgumentError("inventory tier has unknown medium '" +
                                      t.value("medium", std::string()) + "'");
        }
        auto& out = inv.hashes[static_cast<int>(*medium)];
        for (const auto& h : t.at("hashes")) {
          // Hashes are uint64; a producer that writes them signed keeps the bit pattern.
          out.push_back(h.is_number_unsigned() ? h.get<uint64_t>()
                                               : static_cast<uint64_t>(h.get<int64_t>()));
        }
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("inventory does not parse: ") + e.what());
  }
  return inv;
}

}  // namespace

struct KvIndexer::Impl {
  struct Counters {
    std::atomic<uint64_t> batches{0}, gaps{0}, replays{0}, resyncs{0}, decode_errors{0};
  };
  struct Metrics {
    Counter* batches = nullptr;
    Counter* gaps = nullptr;
    Counter* replays = nullptr;
    Counter* resyncs = nullptr;
    Counter* decode_errors = nullptr;
    Gauge* index_blocks = nullptr;
  };

  // One followed worker. The fields after `thread` are touched only by its thread.
  struct Follower {
    Impl* impl = nullptr;
    std::shared_ptr<const WorkerState> worker;
    kv::WorkerId id = 0;
    std::atomic<bool> synced{false};
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;  // guarded by mu
    std::thread thread;

    std::string events_endpoint, replay_endpoint, topic;
    bool endpoints_from_inventory = false;
    std::unique_ptr<kv::KvEventSubscriber> sub;
    bool need_resync = true;
    bool has_expected = false;  // false: the next live batch sets the baseline (vLLM start)
    uint64_t expected = 0;
    std::optional<uint64_t> last_live;  // seq of the last live message (they arrive in order)
    std::string agent_id;
    bool logged_problem = false;  // one loud log per failure streak
    std::chrono::steady_clock::time_point last_activity;  // last live message or snapshot
    // Workers without inventory (vLLM, SGLang) hash blocks their own way: the worker's hash ->
    // the router's (Dynamo-compatible) sequence hash, recomputed from the event's token ids.
    std::unordered_map<kv::BlockHash, kv::BlockHash> foreign;
    kv::KvEventBatch Translate(const kv::KvEventBatch& batch);

    bool Stopping() {
      std::lock_guard lock(mu);
      return stop;
    }
    bool WaitFor(std::chrono::milliseconds d) {
      std::unique_lock lock(mu);
      return !cv.wait_for(lock, d, [&] { return stop; });
    }
    void Run();
    bool Connect(http::HttpClient& client);
    bool Resync(http::HttpClient& client);
    void PollSummaries(http::HttpClient& client);
    void OnLive(http::HttpClient& client, kv::DecodedKvEventFrames& f);
    bool FillFromReplay(uint64_t need_through, bool* nothing_missed);
    void IdleCheck(http::HttpClient& client);
    void Apply(uint64_t seq, const kv::KvEventBatch& batch);
    StatusOr<Inventory> FetchInventory(http::HttpClient& client);
    void LogProblem(const char* what, const std::string& detail) {
      if (!logged_problem) {
        KVMESH_LOG_WARN(kComponent, what, {"worker", worker->spec.url}, {"detail", detail});
        logged_problem = true;
      }
    }
  };

  kv::PrefixIndex* index = nullptr;
  KvIndexerOptions options;
  Counters c;
  Metrics m;
  std::atomic<int64_t> gauge_updated_ns{0};

  mutable std::mutex mu;
  std::map<kv::WorkerId, std::unique_ptr<Follower>> followers;  // guarded by mu
  bool stopped = false;                                          // guarded by mu

  void Count(std::atomic<uint64_t>& n, Counter* metric, uint64_t v = 1) {
    n.fetch_add(v, std::memory_order_relaxed);
    if (metric) metric->Inc(static_cast<double>(v));
  }
  void UpdateBlocksGauge(bool force) {
    if (!m.index_blocks) return;
    const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    int64_t last = gauge_updated_ns.load(std::memory_order_relaxed);
    if (!force && now - last < 200'000'000) return;
    gauge_updated_ns.store(now, std::memory_order_relaxed);
    m.index_blocks->Set(static_cast<double>(index->Stats().blocks));
  }
  static void StopFollower(Follower& f) {
    {
      std::lock_guard lock(f.mu);
      f.stop = true;
    }
    f.cv.notify_all();
    if (f.thread.joinable()) f.thread.join();
  }
};

// vLLM/SGLang block hashes are not the router's: a BlockStored that carries its token ids is
// re-hashed the kvmesh/Dynamo way (local XXH3 of the block's tokens, chained from the parent's
// translated hash; LoRA name -> seed), and the worker's hashes are remembered so its later
// BlockRemoved can be translated too. A BlockStored without token ids (or with a block size other
// than the router's) is kept as it is: such a worker must publish compatible hashes itself. A
// stored block whose parent is unknown cannot be chained and is skipped (the next full prefix
// the worker stores brings it back).
kv::KvEventBatch KvIndexer::Impl::Follower::Translate(const kv::KvEventBatch& batch) {
  kv::KvEventBatch out;
  out.ts = batch.ts;
  out.dp_rank = batch.dp_rank;
  const uint32_t bs = impl->options.block_size;
  for (const kv::KvEvent& ev : batch.events) {
    if (const auto* st = std::get_if<kv::BlockStored>(&ev)) {
      const uint32_t ebs = st->block_size != 0 ? st->block_size : bs;
      if (ebs != bs || st->token_ids.size() != st->hashes.size() * static_cast<size_t>(bs)) {
        out.events.push_back(ev);
        continue;
      }
      std::optional<kv::BlockHash> parent;
      if (st->parent_hash) {
        auto it = foreign.find(*st->parent_hash);
        if (it == foreign.end()) continue;
        parent = it->second;
      }
      const uint64_t seed = st->lora_name ? kv::SeedForLora(*st->lora_name) : kv::kBlockHashSeed;
      out.events.push_back(ev);
      kv::BlockStored& t = std::get<kv::BlockStored>(out.events.back());
      t.parent_hash = parent;
      const std::span<const uint32_t> tokens(st->token_ids);
      for (size_t i = 0; i < st->hashes.size(); ++i) {
        const kv::BlockHash local = kv::LocalBlockHash(tokens.subspan(i * bs, bs), seed);
        const kv::BlockHash h = parent ? kv::ChainSequenceHash(*parent, local, seed) : local;
        foreign[st->hashes[i]] = h;
        t.hashes[i] = h;
        parent = h;
      }
    } else if (std::holds_alternative<kv::BlockRemoved>(ev)) {
      out.events.push_back(ev);
      for (kv::BlockHash& h : std::get<kv::BlockRemoved>(out.events.back()).hashes) {
        auto it = foreign.find(h);
        if (it == foreign.end()) continue;  // stored untranslated (no token ids): removed as is
        h = it->second;
        foreign.erase(it);
      }
    } else {
      foreign.clear();  // AllBlocksCleared
      out.events.push_back(ev);
    }
  }
  return out;
}

void KvIndexer::Impl::Follower::Apply(uint64_t seq, const kv::KvEventBatch& batch) {
  // Our own seq tracking decides about gaps.
  if (worker->spec.has_inventory) {
    impl->index->ApplyBatch(id, seq, batch);
  } else {
    impl->index->ApplyBatch(id, seq, Translate(batch));
  }
  expected = seq + 1;
  has_expected = true;
  impl->Count(impl->c.batches, impl->m.batches);
  impl->UpdateBlocksGauge(false);
}

StatusOr<Inventory> KvIndexer::Impl::Follower::FetchInventory(http::HttpClient& client) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (worker->spec.is_cluster_router && !impl->options.summary_authorization.empty()) {
    headers.emplace_back("Authorization", impl->options.summary_authorization);
  }
  KVMESH_ASSIGN_OR_RETURN(http::ClientResponse r,
                          client.Get(worker->spec.url + "/v1/kv/inventory", std::move(headers)));
  if (r.status != 200) {
    return UnavailableError("GET " + worker->spec.url + "/v1/kv/inventory: HTTP " +
                            std::to_string(r.status));
  }
  return ParseInventory(r.body);
}

// Resolves the endpoints (spec, else the inventory) and subscribes. False: retry later.
bool KvIndexer::Impl::Follower::Connect(http::HttpClient& client) {
  const WorkerSpec& spec = worker->spec;
  if (!spec.events_endpoint.empty()) {
    events_endpoint = ResolveWildcard(spec.events_endpoint, spec.url);
    replay_endpoint = spec.replay_endpoint.empty() ? ""
                                                   : ResolveWildcard(spec.replay_endpoint, spec.url);
    topic = spec.topic;
    endpoints_from_inventory = false;
  } else if (spec.has_inventory) {
    auto inv = FetchInventory(client);
    if (!inv.ok()) {
      LogProblem("cannot fetch inventory for event endpoints; retrying", inv.status().message());
      return false;
    }
    if (inv->events_endpoint.empty()) {
      LogProblem("inventory names no events_endpoint; worker not indexed", spec.url);
      return false;
    }
    events_endpoint = ResolveWildcard(inv->events_endpoint, spec.url);
    replay_endpoint =
        inv->replay_endpoint.empty() ? "" : ResolveWildcard(inv->replay_endpoint, spec.url);
    topic = spec.topic.empty() ? inv->topic : spec.topic;
    endpoints_from_inventory = true;
  } else {
    LogProblem("worker without inventory needs events_endpoint; not indexed", spec.url);
    return false;
  }
  auto sub = kv::KvEventSubscriber::Create(events_endpoint, topic);
  if (!sub.ok()) {
    LogProblem("cannot subscribe to KV events; retrying", sub.status().message());
    return false;
  }
  this->sub = std::move(*sub);
  need_resync = true;
  KVMESH_LOG_INFO(kComponent, "subscribed to KV events", {"worker", spec.url}, {"id", id},
                  {"events_endpoint", events_endpoint}, {"replay_endpoint", replay_endpoint},
                  {"topic", topic});
  return true;
}

// Rebuilds this worker's index entries: from the inventory (kvmesh agents) or, without one,
// by clearing them and taking the next live batch as the new baseline. False: retry later.
bool KvIndexer::Impl::Follower::Resync(http::HttpClient& client) {
  const WorkerSpec& spec = worker->spec;
  last_live.reset();
  if (!spec.has_inventory) {
    impl->Count(impl->c.resyncs, impl->m.resyncs);  // before the index changes (see below)
    impl->index->ClearWorker(id);
    foreign.clear();
    has_expected = false;
    need_resync = false;
    synced.store(true);
    impl->UpdateBlocksGauge(true);
    KVMESH_LOG_INFO(kComponent, "worker cleared; indexing from live events", {"worker", spec.url});
    return true;
  }
  auto inv = FetchInventory(client);
  if (!inv.ok()) {
    LogProblem("inventory fetch failed; retrying", inv.status().message());
    return false;
  }
  if (inv->block_size != impl->options.block_size) {
    if (!logged_problem) {
      KVMESH_LOG_ERROR(kComponent,
                       "WORKER NOT INDEXED: its KV block size differs from the router's; fix "
                       "--block-size (router) or the worker's engine block size",
                       {"worker", spec.url}, {"worker_block_size", inv->block_size},
                       {"router_block_size", impl->options.block_size});
      logged_problem = true;
    }
    impl->index->ClearWorker(id);
    synced.store(false);
    return false;
  }
  if (endpoints_from_inventory) {
    const std::string ev = ResolveWildcard(inv->events_endpoint, spec.url);
    const std::string rp =
        inv->replay_endpoint.empty() ? "" : ResolveWildcard(inv->replay_endpoint, spec.url);
    if (ev != events_endpoint || rp != replay_endpoint) {
      // The worker restarted on other ports: subscribe to the new ones first, then snapshot.
      KVMESH_LOG_INFO(kComponent, "worker's event endpoints changed; resubscribing",
                      {"worker", spec.url}, {"events_endpoint", ev});
      sub.reset();
      return false;
    }
  }
  if (!agent_id.empty() && inv->agent_id != agent_id) {
    KVMESH_LOG_INFO(kComponent, "worker restarted (new agent_id)", {"worker", spec.url},
                    {"old", agent_id}, {"new", inv->agent_id});
  }
  agent_id = inv->agent_id;
  size_t total = 0;
  for (const auto& t : inv->hashes) total += t.size();
  // seq -1 (nothing published yet) wraps so that the next expected seq is 0.
  const uint64_t seq = static_cast<uint64_t>(inv->seq);
  // Counted before the index changes: whoever sees the new entries also sees the resync.
  impl->Count(impl->c.resyncs, impl->m.resyncs);
  impl->index->ReplaceWorker(id, inv->hashes, seq);
  expected = seq + 1;
  has_expected = true;
  need_resync = false;
  logged_problem = false;
  last_activity = std::chrono::steady_clock::now();
  synced.store(true);
  impl->UpdateBlocksGauge(true);
  KVMESH_LOG_INFO(kComponent, "worker synced from inventory", {"worker", spec.url},
                  {"seq", static_cast<long long>(inv->seq)}, {"blocks", total},
                  {"agent_id", agent_id});
  return true;
}

// Replays from `expected` and applies what comes back. True when every batch up to
// need_through (inclusive) has been applied; *nothing_missed is set when the publisher had
// nothing from `expected` on (an empty answer).
bool KvIndexer::Impl::Follower::FillFromReplay(uint64_t need_through, bool* nothing_missed) {
  if (nothing_missed) *nothing_missed = false;
  if (replay_endpoint.empty() || !has_expected) return false;
  const uint64_t from = expected;
  auto r = sub->Replay(replay_endpoint, from, static_cast<int>(impl->options.replay_timeout.count()));
  if (!r.ok()) {
    KVMESH_LOG_WARN(kComponent, "replay failed", {"worker", worker->spec.url},
                    {"from_seq", from}, {"error", r.status().message()});
    return false;
  }
  if (r->empty()) {
    if (nothing_missed) *nothing_missed = true;
    return false;
  }
  if (r->front().seq != from) {
    KVMESH_LOG_INFO(kComponent, "replay window exceeded", {"worker", worker->spec.url},
                    {"from_seq", from}, {"first_replayed", r->front().seq});
    return false;
  }
  // The consecutive run from `from` is applied. Whether it reaches need_through is known first,
  // so that the replay is counted before the index changes (as resyncs are).
  size_t run = 0;
  while (run < r->size() && (*r)[run].seq == from + run) ++run;
  const bool complete = from + run > need_through;
  if (complete) impl->Count(impl->c.replays, impl->m.replays);
  for (size_t k = 0; k < run; ++k) Apply((*r)[k].seq, (*r)[k].batch);
  if (!complete) {
    KVMESH_LOG_INFO(kComponent, "replay ended before the missing seq (worker restarted?)",
                    {"worker", worker->spec.url}, {"applied_through", expected - 1},
                    {"needed_through", need_through});
    return false;
  }
  return true;
}

void KvIndexer::Impl::Follower::OnLive(http::HttpClient& client, kv::DecodedKvEventFrames& f) {
  const uint64_t seq = f.seq;
  if (last_live && seq <= *last_live) {
    // One publisher sends in order, so a live seq that does not grow means a new publisher
    // (the worker restarted and numbers from 0 again).
    KVMESH_LOG_INFO(kComponent, "event seq went backwards (worker restarted); resyncing",
                    {"worker", worker->spec.url}, {"last", *last_live}, {"got", seq});
    need_resync = true;
    if (!Resync(client)) return;  // the run loop retries; this batch is covered by the snapshot
  }
  last_live = seq;
  if (!has_expected) {  // no baseline yet (a worker without inventory after a resync)
    Apply(seq, f.batch);
    return;
  }
  if (seq < expected) return;  // already reflected by the snapshot or a replay
  if (seq > expected) {
    impl->Count(impl->c.gaps, impl->m.gaps);
    KVMESH_LOG_DEBUG(kComponent, "event gap", {"worker", worker->spec.url}, {"expected", expected},
                     {"got", seq});
    if (!FillFromReplay(seq - 1, nullptr)) {
      if (worker->spec.has_inventory) {
        need_resync = true;
        if (!Resync(client)) return;
        last_live = seq;
        if (seq < expected) return;
        if (seq > expected) {  // the snapshot is older than this batch: should not happen
          KVMESH_LOG_WARN(kComponent, "inventory older than a live batch; resyncing again",
                          {"worker", worker->spec.url}, {"seq", seq}, {"expected", expected});
          need_resync = true;
          return;
        }
      } else {
        // No inventory to rebuild from: drop what we know and restart from this batch.
        impl->Count(impl->c.resyncs, impl->m.resyncs);
        impl->index->ClearWorker(id);
        KVMESH_LOG_INFO(kComponent, "gap without replay; worker cleared, indexing from live",
                        {"worker", worker->spec.url}, {"seq", seq});
        Apply(seq, f.batch);
        return;
      }
    }
    if (seq < expected) return;  // the replay already covered it
  }
  Apply(seq, f.batch);
}

// A quiet stream hides two things no live message will reveal: a lost tail of batches and a
// worker that restarted (on the same or other ports). Compare with a fresh inventory.
void KvIndexer::Impl::Follower::IdleCheck(http::HttpClient& client) {
  last_activity = std::chrono::steady_clock::now();
  auto inv = FetchInventory(client);
  if (!inv.ok()) return;  // the health checks report an unreachable worker
  const WorkerSpec& spec = worker->spec;
  bool moved = false;
  if (endpoints_from_inventory) {
    moved = ResolveWildcard(inv->events_endpoint, spec.url) != events_endpoint ||
            (inv->replay_endpoint.empty() ? ""
                                          : ResolveWildcard(inv->replay_endpoint, spec.url)) !=
                replay_endpoint;
  }
  if (moved || inv->agent_id != agent_id) {
    KVMESH_LOG_INFO(kComponent, "worker restarted while quiet; resyncing", {"worker", spec.url},
                    {"agent_id", inv->agent_id}, {"endpoints_changed", moved});
    if (moved) sub.reset();
    need_resync = true;
    return;
  }
  if (has_expected && inv->seq >= 0 && static_cast<uint64_t>(inv->seq) >= expected) {
    impl->Count(impl->c.gaps, impl->m.gaps);
    KVMESH_LOG_DEBUG(kComponent, "missed a tail of batches", {"worker", spec.url},
                     {"expected", expected}, {"inventory_seq", static_cast<long long>(inv->seq)});
    if (!FillFromReplay(static_cast<uint64_t>(inv->seq), nullptr)) need_resync = true;
  }
}

// A cluster router: poll its prefix summary (an inventory of the blocks its index holds) and
// replace this worker's entries with each one. Errors keep the last summary: the registry's
// health checks and breaker decide whether the cluster gets traffic.
void KvIndexer::Impl::Follower::PollSummaries(http::HttpClient& client) {
  do {
    auto inv = FetchInventory(client);
    if (!inv.ok()) {
      LogProblem("cluster summary fetch failed; keeping the last one", inv.status().message());
      continue;
    }
    if (inv->block_size != impl->options.block_size) {
      LogProblem("CLUSTER NOT INDEXED: its block size differs from this router's",
                 "cluster " + std::to_string(inv->block_size) + " vs router " +
                     std::to_string(impl->options.block_size));
      impl->index->ClearWorker(id);
      synced.store(false);
      continue;
    }
    if (logged_problem) {
      KVMESH_LOG_INFO(kComponent, "cluster summary fetched again", {"worker", worker->spec.url});
    }
    logged_problem = false;
    const uint64_t seq = static_cast<uint64_t>(inv->seq);
    impl->Count(impl->c.resyncs, impl->m.resyncs);  // before the index changes, as in Resync
    impl->index->ReplaceWorker(id, inv->hashes, seq);
    if (!synced.exchange(true)) {
      size_t total = 0;
      for (const auto& t : inv->hashes) total += t.size();
      KVMESH_LOG_INFO(kComponent, "cluster summary synced", {"worker", worker->spec.url},
                      {"blocks", total});
    }
    impl->UpdateBlocksGauge(false);
  } while (WaitFor(impl->options.summary_interval));
}

void KvIndexer::Impl::Follower::Run() {
  http::HttpClientOptions o;
  o.connect_timeout = impl->options.inventory_timeout;
  o.read_timeout = impl->options.inventory_timeout;
  http::HttpClient client(o);  // one client per thread
  if (worker->spec.is_cluster_router) {
    PollSummaries(client);
    return;
  }
  while (!Stopping()) {
    if (!sub) {
      if (!Connect(client)) {
        if (!WaitFor(impl->options.retry_interval)) break;
        continue;
      }
    }
    if (need_resync) {
      if (!Resync(client)) {
        if (sub && !WaitFor(impl->options.retry_interval)) break;
        continue;
      }
    }
    auto r = sub->Receive(kReceiveTimeoutMs);
    if (!r.ok()) {
      const StatusCode code = r.status().code();
      if (code == StatusCode::kInvalidArgument || code == StatusCode::kDataLoss) {
        // A message that does not decode: its seq is lost, so treat it as a gap and catch up
        // from the replay window now (a later live seq would also reveal it).
        impl->Count(impl->c.decode_errors, impl->m.decode_errors);
        impl->Count(impl->c.gaps, impl->m.gaps);
        KVMESH_LOG_WARN(kComponent, "KV event message does not decode", {"worker", worker->spec.url},
                        {"error", r.status().message()});
        if (!has_expected) continue;
        bool nothing_missed = false;
        if (!FillFromReplay(expected, &nothing_missed) && !nothing_missed &&
            worker->spec.has_inventory) {
          need_resync = true;
        }
        continue;
      }
      LogProblem("KV event receive failed; resubscribing", r.status().message());
      sub.reset();
      if (!WaitFor(impl->options.retry_interval)) break;
      continue;
    }
    if (!r->has_value()) {
      if (worker->spec.has_inventory &&
          std::chrono::steady_clock::now() - last_activity >= IdleCheckInterval(impl->options)) {
        IdleCheck(client);
      }
      continue;
    }
    last_activity = std::chrono::steady_clock::now();
    OnLive(client, **r);
  }
}

KvIndexer::KvIndexer(kv::PrefixIndex* index, KvIndexerOptions options, MetricsRegistry* metrics)
    : impl_(std::make_unique<Impl>()) {
  impl_->index = index;
  impl_->options = options;
  if (metrics) {
    auto counter = [&](const char* name, const char* help) -> Counter* {
      auto f = metrics->AddCounter(name, help, {});
      if (!f.ok()) {
        KVMESH_LOG_ERROR(kComponent, "metric registration failed", {"error", f.status().message()});
        return nullptr;
      }
      return &(*f)->WithLabels({});
    };
    Impl::Metrics& m = impl_->m;
    m.batches = counter("kvmesh_router_kv_event_batches_total",
                        "KV event batches applied to the global index (live and replayed)");
    m.gaps = counter("kvmesh_router_kv_event_gaps_total",
                     "Gaps in a worker's event sequence (missed or undecodable batches)");
    m.replays = counter("kvmesh_router_kv_event_replays_total", "Gaps filled by replay");
    m.resyncs = counter("kvmesh_router_kv_event_resyncs_total",
                        "Workers rebuilt from an inventory snapshot (incl. cold start) or cleared");
    m.decode_errors = counter("kvmesh_router_kv_event_decode_errors_total",
                              "KV event messages that did not decode");
    auto g = metrics->AddGauge("kvmesh_router_kv_index_blocks",
                               "Distinct KV blocks in the router's global index", {});
    if (g.ok()) m.index_blocks = &(*g)->WithLabels({});
  }
}

KvIndexer::~KvIndexer() { Stop(); }

void KvIndexer::AddWorker(std::shared_ptr<const WorkerState> worker) {
  if (!worker) return;
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped || impl_->followers.count(worker->id)) return;
  auto f = std::make_unique<Impl::Follower>();
  f->impl = impl_.get();
  f->id = worker->id;
  f->worker = std::move(worker);
  Impl::Follower* raw = f.get();
  f->thread = std::thread([raw] { raw->Run(); });
  impl_->followers.emplace(raw->id, std::move(f));
}

void KvIndexer::RemoveWorker(kv::WorkerId id) {
  std::unique_ptr<Impl::Follower> f;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->followers.find(id);
    if (it != impl_->followers.end()) {
      f = std::move(it->second);
      impl_->followers.erase(it);
    }
  }
  if (f) Impl::StopFollower(*f);  // joined: nothing of this worker is applied after this
  impl_->index->RemoveWorker(id);
  impl_->UpdateBlocksGauge(true);
}

void KvIndexer::Stop() {
  std::map<kv::WorkerId, std::unique_ptr<Impl::Follower>> all;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
    all.swap(impl_->followers);
  }
  for (auto& [id, f] : all) {
    std::lock_guard lock(f->mu);
    f->stop = true;
    f->cv.notify_all();
  }
  for (auto& [id, f] : all) Impl::StopFollower(*f);
}

bool KvIndexer::Synced(kv::WorkerId id) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->followers.find(id);
  return it != impl_->followers.end() && it->second->synced.load();
}

KvIndexerStats KvIndexer::Stats() const {
  KvIndexerStats s;
  s.batches = impl_->c.batches.load();
  s.gaps = impl_->c.gaps.load();
  s.replays = impl_->c.replays.load();
  s.resyncs = impl_->c.resyncs.load();
  s.decode_errors = impl_->c.decode_errors.load();
  return s;
}

}  // namespace kvmesh::router
