#include "sim/fleet_sim.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/block_pool.h"
#include "kv/kv_event.h"
#include "kv/prefix_index.h"
#include "router/routing.h"

namespace kvmesh::sim {

Status SimConfig::Validate() const {
  if (pools.empty()) return InvalidArgumentError("pools: the fleet has no pool");
  bool decode_capable = false;
  for (size_t i = 0; i < pools.size(); ++i) {
    const PoolConfig& p = pools[i];
    const std::string at = "pools[" + std::to_string(i) + "].";
    if (p.count == 0) return InvalidArgumentError(at + "count must be > 0");
    if (p.max_batch == 0) return InvalidArgumentError(at + "max_batch must be > 0");
    if (p.max_prefill_tokens == 0) return InvalidArgumentError(at + "max_prefill_tokens must be > 0");
    if (p.kv_blocks == 1) return InvalidArgumentError(at + "kv_blocks must be 0 (auto) or >= 2");
    if (router::CanDecode(p.role)) decode_capable = true;
  }
  if (!decode_capable) {
    return InvalidArgumentError("pools: no aggregated or decode pool (prefill alone cannot serve)");
  }
  if (block_size == 0) return InvalidArgumentError("block_size must be > 0");
  if (max_jump_steps == 0) return InvalidArgumentError("max_jump_steps must be > 0");
  if (max_inflight_per_worker == 0) return InvalidArgumentError("max_inflight_per_worker must be > 0");
  if (!(event_delay_s >= 0) || !std::isfinite(event_delay_s)) {
    return InvalidArgumentError("event_delay_s must be a finite number >= 0");
  }
  if (!(sla_ttft_s > 0) || !(sla_itl_s > 0)) {
    return InvalidArgumentError("sla_ttft_s and sla_itl_s must be > 0");
  }
  if (!clusters.empty()) {
    const size_t n = clusters.size();
    for (size_t i = 0; i < pools.size(); ++i) {
      if (pools[i].cluster >= n) {
        return InvalidArgumentError("pools[" + std::to_string(i) + "].cluster " +
                                    std::to_string(pools[i].cluster) + " is not a cluster index");
      }
    }
    if (region_rtt_ms.empty()) return InvalidArgumentError("region_rtt_ms: no region");
    for (size_t r = 0; r < region_rtt_ms.size(); ++r) {
      if (region_rtt_ms[r].size() != n) {
        return InvalidArgumentError("region_rtt_ms[" + std::to_string(r) + "] must have one entry per cluster");
      }
      for (double v : region_rtt_ms[r]) {
        if (!(v >= 0) || !std::isfinite(v)) {
          return InvalidArgumentError("region_rtt_ms[" + std::to_string(r) + "]: RTTs must be finite and >= 0");
        }
      }
    }
    if (cluster_links.size() != n) return InvalidArgumentError("cluster_links must be clusters x clusters");
    for (size_t a = 0; a < n; ++a) {
      if (cluster_links[a].size() != n) return InvalidArgumentError("cluster_links must be clusters x clusters");
      for (size_t b = 0; b < n; ++b) {
        if (a != b && !(cluster_links[a][b].bandwidth_gbps > 0)) {
          return InvalidArgumentError("cluster_links[" + std::to_string(a) + "][" + std::to_string(b) +
                                      "].bandwidth_gbps must be > 0");
        }
      }
    }
    if (!(payload_bytes_per_token >= 0) || !std::isfinite(payload_bytes_per_token)) {
      return InvalidArgumentError("payload_bytes_per_token must be finite and >= 0");
    }
  }
  const size_t num_clusters = std::max<size_t>(clusters.size(), 1);
  for (size_t k = 0; k < prefix_seeds.size(); ++k) {
    const PrefixSeed& seed = prefix_seeds[k];
    const std::string at = "prefix_seeds[" + std::to_string(k) + "]";
    if (!(seed.at_s >= 0) || !std::isfinite(seed.at_s)) {
      return InvalidArgumentError(at + ".at_s must be finite and >= 0");
    }
    if (seed.cluster >= num_clusters) return InvalidArgumentError(at + ".cluster is not a cluster");
    if (seed.from_cluster != PrefixSeed::kNoSource && seed.from_cluster >= num_clusters) {
      return InvalidArgumentError(at + ".from_cluster is not a cluster");
    }
    if (seed.hashes.empty()) return InvalidArgumentError(at + ".hashes is empty");
  }
  if (scale && !(scale_interval_s > 0 && std::isfinite(scale_interval_s))) {
    return InvalidArgumentError("scale_interval_s must be > 0 when a scaling hook is set");
  }
  KVMESH_RETURN_IF_ERROR(routing.Validate());
  KVMESH_RETURN_IF_ERROR(disaggregation.Validate());
  return Status::Ok();
}

StatusOr<router::RouterRoutingConfig> RoutingForPolicy(std::string_view policy,
                                                       const router::RouterRoutingConfig& base) {
  router::RouterRoutingConfig r = base;
  if (policy == "random" || policy == "round_robin" || policy == "least_loaded") {
    r.mode = std::string(policy);
  } else if (policy == "kv" || policy == "kv:kvmesh") {
    r.mode = "kv";
    r.kv_cost = "kvmesh";
  } else if (policy == "kv:dynamo") {
    r.mode = "kv";
    r.kv_cost = "dynamo";
  } else {
    return InvalidArgumentError("unknown policy '" + std::string(policy) +
                                "': want random, round_robin, least_loaded, kv:dynamo or kv:kvmesh");
  }
  return r;
}

namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

// Weighted histogram with log-spaced buckets (0.2% wide) from 1 us to ~3 hours: percentiles of
// 10^8 inter-token gaps without storing them.
class LogHistogram {
 public:
  LogHistogram() : counts_(kBuckets, 0) {}
  void Add(double x, uint64_t weight) {
    if (weight == 0) return;
    counts_[Bucket(x)] += weight;
    total_ += weight;
    sum_ += x * static_cast<double>(weight);
  }
  double Quantile(double q) const {
    if (total_ == 0) return 0;
    const double want = q * static_cast<double>(total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (static_cast<double>(seen) >= want && counts_[i] > 0) return Mid(i);
    }
    return Mid(counts_.size() - 1);
  }
  double Mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0; }

 private:
  static constexpr double kMin = 1e-6;
  static constexpr double kLogRatio = 0.002;  // ln(bucket width ratio)
  static constexpr size_t kBuckets = 12000;
  static size_t Bucket(double x) {
    if (!(x > kMin)) return 0;
    const double b = std::log(x / kMin) / kLogRatio;
    return std::min(kBuckets - 1, static_cast<size_t>(b) + 1);
  }
  static double Mid(size_t i) {
    if (i == 0) return kMin;
    return kMin * std::exp((static_cast<double>(i) - 0.5) * kLogRatio);
  }
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  double sum_ = 0;
};

Percentiles PercentilesOf(std::vector<double>& v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
    return v[i];
  };
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  double s = 0;
  for (double x : v) s += x;
  p.mean = s / static_cast<double>(v.size());
  return p;
}

enum class EventKind : uint8_t {
  kArrival,
  kStepEnd,
  kKvDelivery,
  kTransferDone,
  kScaleTick,
  kPrefixSeed,
};

struct Event {
  double t;
  uint64_t seq;  // insertion order: ties at the same time run first-in first-out
  uint64_t version;
  uint32_t target;
  EventKind kind;
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

// A request's life in the fleet. Sequence fields describe it on the instance currently running
// it (the decode instance once its prefill moved).
struct Req {
  SimRequest r;
  double first_token = -1;
  uint32_t decode_inst = kNone;
  uint32_t prefill_inst = kNone;  // remote prefill instance, kNone when local
  router::LoadGuard pguard;       // router load on the prefill instance (remote only)
  router::LoadGuard dguard;       // router load on the decode instance
  std::vector<kv::BlockId> blocks;  // on the current instance, in sequence order
  std::vector<kv::BlockId> lease;   // the prefill instance's blocks, held until the transfer ends
  uint32_t kv = 0;         // tokens whose KV is computed on the current instance
  uint32_t target = 0;     // prefill goal: prompt + generated (recompute after preemption too)
  uint32_t generated = 0;  // output tokens produced
  uint32_t committed = 0;  // leading prompt blocks hashed in the current instance's pool
  uint32_t cached_at_first_prefill = 0;
  double rtt_s = 0;        // round trip between the request's region and its decode cluster
  bool remote = false;     // served by a cluster outside the request's region
  bool holds_prefill = false;  // counted in the remote prefill instance's `holds`
  bool prefilling = false;
  bool first_admission_done = false;
};

// Collects a pool's events, merging consecutive stores of one sequence into one BlockStored.
class InstanceSink final : public kv::KvEventSink {
 public:
  void Emit(kv::KvEvent event) override {
    if (!pending.empty()) {
      if (auto* s = std::get_if<kv::BlockStored>(&event)) {
        if (auto* last = std::get_if<kv::BlockStored>(&pending.back());
            last != nullptr && last->medium == s->medium && s->parent_hash.has_value() &&
            !last->hashes.empty() && *s->parent_hash == last->hashes.back() &&
            s->token_ids.empty() && last->token_ids.empty()) {
          last->hashes.insert(last->hashes.end(), s->hashes.begin(), s->hashes.end());
          return;
        }
      } else if (auto* r = std::get_if<kv::BlockRemoved>(&event)) {
        if (auto* last = std::get_if<kv::BlockRemoved>(&pending.back());
            last != nullptr && last->medium == r->medium) {
          last->hashes.insert(last->hashes.end(), r->hashes.begin(), r->hashes.end());
          return;
        }
      }
    }
    pending.push_back(std::move(event));
  }
  std::vector<kv::KvEvent> pending;
};

struct Pool {
  PoolConfig config;
  std::optional<PerfModel> perf;
  uint32_t num_blocks = 0;  // per instance, excluding the null block
};

struct Instance {
  uint32_t id = 0;
  uint32_t cluster = 0;
  uint32_t pool_index = 0;
  const Pool* pool = nullptr;
  // Scaling: requests that still need this instance (as decode or remote prefill instance).
  uint32_t holds = 0;
  bool draining = false;  // no new requests; removed once holds == 0 and idle
  bool removed = false;
  double added_at = 0;
  double removed_at = 0;
  std::shared_ptr<router::WorkerState> worker;
  std::unique_ptr<InstanceSink> sink;
  std::unique_ptr<kv::BlockPool> blocks;
  std::deque<uint32_t> waiting;    // request slots, FCFS
  std::vector<uint32_t> running;   // admission order (the back is preempted first)
  std::deque<uint32_t> incoming;   // remote-prefilled requests waiting for blocks (decode side)
  std::deque<uint32_t> ready;      // KV transferred in: wait for a batch slot only
  double link_free_at = 0;         // inbound link busy until (transfers are serialized)
  // The step in flight.
  bool busy = false;
  uint64_t version = 0;
  double step_start = 0;
  bool decode_only = false;
  uint32_t jump_k = 0;             // decode steps in this event (decode-only jumps)
  std::vector<double> cum;         // cum[i] = end of decode step i+1, relative to step_start
  double step_seconds = 0;         // mixed/prefill step
  std::vector<std::pair<uint32_t, uint32_t>> chunks;  // (request, new tokens) this step
  std::vector<uint32_t> decoders;  // requests decoding this step
  // KV events waiting for delivery to the index.
  std::deque<std::pair<double, kv::KvEventBatch>> outbox;
  uint64_t event_seq = 0;
  bool dirty = false;
};

class Simulator {
 public:
  Simulator(const SimConfig& config, Workload& workload) : config_(config), workload_(workload) {}

  Status Init(const std::string& label);
  void Run();
  SimResult Finish();

 private:
  // Event plumbing.
  void Push(double t, EventKind kind, uint32_t target, uint64_t version = 0) {
    events_.push(Event{t, next_seq_++, version, target, kind});
  }
  void PullArrival();
  void OnArrival();
  void OnStepEnd(Instance& in);
  void OnTransferDone(uint32_t slot);
  void FlushEvents();
  void OnScaleTick();
  void OnPrefixSeed(const PrefixSeed& seed);
  void MarkDirty(Instance& in) {
    if (!in.dirty) {
      in.dirty = true;
      dirty_.push_back(in.id);
    }
  }
  Status AddInstance(Pool* pool, uint32_t pool_index);
  void SetActive(Instance& in, bool active);
  void RemoveDrained();
  void ReleaseHolds(Req& q);

  // Scheduling.
  void NotifyWork(Instance& in);
  void PlanStep(Instance& in);
  bool Admit(Instance& in, Req& q, uint32_t budget, uint32_t* take);
  void Preempt(Instance& in, uint32_t slot);
  void TryReceive(Instance& in);
  void CommitPromptBlocks(Instance& in, Req& q);
  void CompletePrefill(Instance& in, uint32_t slot);
  void FinishRequest(Instance& in, uint32_t slot);
  void Reject(uint32_t slot);
  double DecodeStep(const Instance& in, uint32_t batch, uint64_t context) const {
    return in.pool->perf->DecodeStepSeconds(batch, context);
  }
  void RecordBug(const std::string& what) {
    if (bug_.empty()) bug_ = what;
  }

  uint32_t NewSlot() {
    if (!free_slots_.empty()) {
      const uint32_t s = free_slots_.back();
      free_slots_.pop_back();
      return s;
    }
    reqs_.emplace_back();
    return static_cast<uint32_t>(reqs_.size() - 1);
  }
  void FreeSlot(uint32_t s) {
    Req& q = reqs_[s];
    q.pguard.Release();
    q.dguard.Release();
    q.blocks.clear();
    q.lease.clear();
    q.r.hashes.clear();
    free_slots_.push_back(s);
  }
  uint32_t BlocksFor(uint64_t tokens) const {
    return static_cast<uint32_t>((tokens + config_.block_size - 1) / config_.block_size);
  }

  const SimConfig& config_;
  Workload& workload_;
  LinkSpec link_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::vector<Instance> inst_;
  std::vector<router::WorkerState*> decode_workers_;
  std::vector<router::WorkerState*> prefill_workers_;
  std::vector<router::WorkerState*> cands_;  // scratch
  std::vector<router::WorkerState*> pre_;    // scratch
  uint32_t min_decode_blocks_ = 0;
  uint32_t min_prefill_blocks_ = 0;
  std::unique_ptr<kv::PrefixIndex> index_;
  std::unique_ptr<router::RoutingPolicy> policy_;
  kv::QueryResult overlaps_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t next_seq_ = 0;
  double now_ = 0;
  std::vector<Req> reqs_;
  std::vector<uint32_t> free_slots_;
  std::optional<SimRequest> next_arrival_;
  std::deque<SimRequest> closed_arrivals_;  // closed loop: entered, arrival events pending
  std::vector<uint32_t> dirty_;
  std::string bug_;
  uint32_t draining_ = 0;  // instances draining, not yet removed
  uint32_t present_ = 0;   // instances not removed
  // Interval accumulators for the scaling hook.
  uint64_t iv_arrivals_ = 0;
  double iv_isl_ = 0, iv_osl_ = 0;
  std::vector<double> iv_ttft_, iv_itl_;

  // Results.
  SimResult res_;
  double first_arrival_ = -1;
  double last_finish_ = 0;
  std::vector<double> ttft_, e2e_;
  LogHistogram itl_;
  double user_tps_sum_ = 0;
  uint64_t user_tps_n_ = 0;
  uint64_t good_ = 0;
};

Status Simulator::Init(const std::string& label) {
  KVMESH_RETURN_IF_ERROR(config_.Validate());
  KVMESH_ASSIGN_OR_RETURN(link_, LinkByName(config_.link));
  KVMESH_ASSIGN_OR_RETURN(policy_, router::CreateRoutingPolicy(config_.routing, config_.seed));
  res_.policy = label.empty() ? (config_.routing.mode == "kv" ? "kv:" + config_.routing.kv_cost
                                                              : config_.routing.mode)
                              : label;
  res_.workload = workload_.Describe();
  if (config_.concurrency > 0) {  // the workload's arrival times are not used
    res_.workload += ", closed loop at concurrency " + std::to_string(config_.concurrency);
  }
  kv::PrefixIndexOptions io;
  io.clock = [this] {
    return std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(static_cast<int64_t>(now_ * 1e9)));
  };
  index_ = std::make_unique<kv::PrefixIndex>(std::move(io));

  uint32_t total = 0;
  for (const PoolConfig& pc : config_.pools) total += pc.count;
  inst_.reserve(total);
  min_decode_blocks_ = min_prefill_blocks_ = kNone;
  for (size_t pi = 0; pi < config_.pools.size(); ++pi) {
    auto pool = std::make_unique<Pool>();
    pool->config = config_.pools[pi];
    const std::string at = "pools[" + std::to_string(pi) + "]: ";
    auto gpu = GpuByName(pool->config.gpu);
    if (!gpu.ok()) return InvalidArgumentError(at + gpu.status().message());
    auto model = ModelByName(pool->config.model);
    if (!model.ok()) return InvalidArgumentError(at + model.status().message());
    auto perf = PerfModel::Make(*gpu, *model, pool->config.tp, pool->config.constants);
    if (!perf.ok()) return InvalidArgumentError(at + perf.status().message());
    pool->perf.emplace(std::move(*perf));
    uint64_t blocks = pool->config.kv_blocks
                          ? pool->config.kv_blocks - 1
                          : pool->perf->KvCapacityTokens() / config_.block_size;
    blocks = std::min<uint64_t>(blocks, std::numeric_limits<uint32_t>::max() - 2);
    if (blocks < 1) return InvalidArgumentError(at + "no room for one KV block");
    pool->num_blocks = static_cast<uint32_t>(blocks);
    res_.gpus += pool->config.count * pool->config.tp;
    if (router::CanDecode(pool->config.role)) {
      min_decode_blocks_ = std::min(min_decode_blocks_, pool->num_blocks);
    }
    if (router::CanPrefillRemote(pool->config.role)) {
      min_prefill_blocks_ = std::min(min_prefill_blocks_, pool->num_blocks);
    }
    for (uint32_t c = 0; c < pool->config.count; ++c) {
      KVMESH_RETURN_IF_ERROR(AddInstance(pool.get(), static_cast<uint32_t>(pi)));
    }
    pools_.push_back(std::move(pool));
  }
  res_.instances = total;
  res_.completed_by_cluster.assign(config_.clusters.size(), 0);
  return Status::Ok();
}

Status Simulator::AddInstance(Pool* pool, uint32_t pool_index) {
  const uint32_t id = static_cast<uint32_t>(inst_.size());
  Instance in;
  in.id = id;
  in.cluster = pool->config.cluster;
  in.pool_index = pool_index;
  in.pool = pool;
  in.added_at = now_;
  in.worker = std::make_shared<router::WorkerState>();
  in.worker->id = id;
  in.worker->spec.role = pool->config.role;
  in.worker->spec.url = "sim://" + std::to_string(id);
  in.worker->ready.store(true);
  in.sink = std::make_unique<InstanceSink>();
  kv::BlockPoolOptions bo;
  bo.num_blocks = pool->num_blocks + 1;
  bo.block_size = config_.block_size;
  KVMESH_ASSIGN_OR_RETURN(in.blocks, kv::BlockPool::Create(bo, in.sink.get()));
  inst_.push_back(std::move(in));
  SetActive(inst_.back(), true);
  ++present_;
  res_.peak_instances = std::max(res_.peak_instances, present_);
  return Status::Ok();
}

// Adds or removes an instance's worker from the router's candidate lists.
void Simulator::SetActive(Instance& in, bool active) {
  auto update = [&](std::vector<router::WorkerState*>& v) {
    auto it = std::find(v.begin(), v.end(), in.worker.get());
    if (active && it == v.end()) v.push_back(in.worker.get());
    if (!active && it != v.end()) v.erase(it);
  };
  if (router::CanDecode(in.pool->config.role)) update(decode_workers_);
  if (router::CanPrefillRemote(in.pool->config.role)) update(prefill_workers_);
}

void Simulator::ReleaseHolds(Req& q) {
  if (q.decode_inst != kNone) {
    --inst_[q.decode_inst].holds;
    q.decode_inst = kNone;
  }
  if (q.holds_prefill) {
    --inst_[q.prefill_inst].holds;
    q.holds_prefill = false;
  }
}

void Simulator::RemoveDrained() {
  for (Instance& in : inst_) {
    if (!in.draining || in.removed || in.holds > 0 || in.busy) continue;
    in.removed = true;
    in.removed_at = now_;
    --draining_;
    --present_;
    ++res_.instances_removed;
  }
}

void Simulator::OnScaleTick() {
  IntervalStats st;
  st.time_s = now_;
  st.interval_s = config_.scale_interval_s;
  st.arrivals = iv_arrivals_;
  if (iv_arrivals_ > 0) {
    st.mean_isl = iv_isl_ / static_cast<double>(iv_arrivals_);
    st.mean_osl = iv_osl_ / static_cast<double>(iv_arrivals_);
  }
  st.completed = iv_ttft_.size();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  st.ttft_p90_s = iv_ttft_.empty() ? nan : PercentilesOf(iv_ttft_).p90;
  st.itl_p90_s = iv_itl_.empty() ? nan : PercentilesOf(iv_itl_).p90;
  st.in_flight = res_.requests - res_.completed - res_.rejected;
  st.active.assign(pools_.size(), 0);
  st.draining.assign(pools_.size(), 0);
  for (const Instance& in : inst_) {
    if (in.removed) continue;
    (in.draining ? st.draining : st.active)[in.pool_index]++;
  }
  iv_arrivals_ = 0;
  iv_isl_ = iv_osl_ = 0;
  iv_ttft_.clear();
  iv_itl_.clear();

  std::vector<uint32_t> want = config_.scale(st);
  want.resize(pools_.size(), 0);
  // Keep at least one decode-capable instance taking requests.
  uint32_t decode_left = 0;
  for (size_t p = 0; p < pools_.size(); ++p) {
    if (router::CanDecode(pools_[p]->config.role)) decode_left += want[p];
  }
  if (decode_left == 0) {
    for (size_t p = 0; p < pools_.size(); ++p) {
      if (router::CanDecode(pools_[p]->config.role)) {
        want[p] = 1;
        break;
      }
    }
  }
  for (size_t p = 0; p < pools_.size(); ++p) {
    uint32_t active = st.active[p];
    // Grow: take back draining instances first (warm caches), then start new ones.
    for (size_t i = inst_.size(); i-- > 0 && active < want[p];) {
      Instance& in = inst_[i];
      if (in.pool_index != p || !in.draining || in.removed) continue;
      in.draining = false;
      --draining_;
      SetActive(in, true);
      ++active;
    }
    while (active < want[p]) {
      if (!AddInstance(pools_[p].get(), static_cast<uint32_t>(p)).ok()) {
        RecordBug("could not add an instance");
        break;
      }
      ++res_.instances_added;
      ++active;
    }
    // Shrink: drain the most recently added active instances.
    for (size_t i = inst_.size(); i-- > 0 && active > want[p];) {
      Instance& in = inst_[i];
      if (in.pool_index != p || in.draining || in.removed) continue;
      in.draining = true;
      ++draining_;
      SetActive(in, false);
      --active;
    }
  }
  RemoveDrained();
  if (next_arrival_ || !closed_arrivals_.empty() || res_.requests > res_.completed + res_.rejected) {
    Push(now_ + config_.scale_interval_s, EventKind::kScaleTick, 0);
  }
}

void Simulator::PullArrival() {
  if (config_.concurrency > 0) {  // closed loop: the next request enters now
    std::optional<SimRequest> r = workload_.Next();
    if (!r) return;
    r->arrival_s = now_;
    closed_arrivals_.push_back(std::move(*r));
    Push(now_, EventKind::kArrival, 0);  // same-time events run in insertion order: FIFO
    return;
  }
  next_arrival_ = workload_.Next();
  if (next_arrival_) Push(next_arrival_->arrival_s, EventKind::kArrival, 0);
}

void Simulator::Run() {
  // Seeds first: one at the time of the first arrival applies before it.
  for (uint32_t k = 0; k < config_.prefix_seeds.size(); ++k) {
    Push(config_.prefix_seeds[k].at_s, EventKind::kPrefixSeed, k);
  }
  for (uint32_t k = 0; k < std::max(config_.concurrency, 1u); ++k) PullArrival();
  while (!events_.empty()) {
    const Event e = events_.top();
    events_.pop();
    now_ = e.t;
    ++res_.events;
    switch (e.kind) {
      case EventKind::kArrival:
        OnArrival();
        break;
      case EventKind::kStepEnd: {
        Instance& in = inst_[e.target];
        if (e.version == in.version && in.busy) OnStepEnd(in);
        break;
      }
      case EventKind::kKvDelivery: {
        Instance& in = inst_[e.target];
        auto& [t, batch] = in.outbox.front();
        index_->ApplyBatch(in.id, ++in.event_seq, batch);
        in.outbox.pop_front();
        break;
      }
      case EventKind::kTransferDone:
        OnTransferDone(e.target);
        break;
      case EventKind::kScaleTick:
        OnScaleTick();
        break;
      case EventKind::kPrefixSeed:
        OnPrefixSeed(config_.prefix_seeds[e.target]);
        break;
    }
    FlushEvents();
    if (draining_ > 0) RemoveDrained();
  }
}

void Simulator::FlushEvents() {
  for (uint32_t id : dirty_) {
    Instance& in = inst_[id];
    in.dirty = false;
    if (in.sink->pending.empty()) continue;
    kv::KvEventBatch batch;
    batch.ts = now_;
    batch.events = std::move(in.sink->pending);
    in.sink->pending.clear();
    if (config_.event_delay_s <= 0) {
      index_->ApplyBatch(in.id, ++in.event_seq, batch);
    } else {
      in.outbox.emplace_back(now_ + config_.event_delay_s, std::move(batch));
      Push(now_ + config_.event_delay_s, EventKind::kKvDelivery, in.id);
    }
  }
  dirty_.clear();
}

void Simulator::OnPrefixSeed(const PrefixSeed& seed) {
  Instance* target = nullptr;
  for (Instance& in : inst_) {
    if (!in.removed && !in.draining && in.cluster == seed.cluster) {
      target = &in;
      break;
    }
  }
  if (target == nullptr) {
    ++res_.prefix_seeds_skipped;
    return;
  }
  kv::BlockPool& pool = *target->blocks;
  const std::span<const kv::BlockHash> chain(seed.hashes);
  const size_t cached = pool.PeekCachedPrefix(chain);
  auto alloc = pool.AllocateForSequence(chain.first(cached), chain.size() - cached);
  if (!alloc) {
    ++res_.prefix_seeds_skipped;
    return;
  }
  for (size_t i = 0; i < alloc->fresh.size(); ++i) {
    const size_t b = cached + i;
    std::optional<kv::BlockHash> parent;
    if (b > 0) parent = chain[b - 1];
    const Status s = pool.CommitBlock(alloc->fresh[i], chain[b], parent, {});
    if (!s.ok()) RecordBug("CommitBlock: " + s.ToString());
  }
  // Unpinned in chain order, so the chain's tail is evicted first, as after a request.
  std::vector<kv::BlockId> all = std::move(alloc->cached);
  all.insert(all.end(), alloc->fresh.begin(), alloc->fresh.end());
  pool.Free(all);
  if (!alloc->fresh.empty()) MarkDirty(*target);
  ++res_.prefix_seeds_applied;
  if (seed.from_cluster != PrefixSeed::kNoSource && seed.from_cluster != seed.cluster) {
    const uint64_t bytes = target->pool->perf->KvBytes(uint64_t{alloc->fresh.size()} * config_.block_size);
    res_.prefix_copy_blocks += alloc->fresh.size();
    res_.prefix_copy_bytes += bytes;
    res_.cross_cluster_bytes += bytes;
  }
}

// ---- routing (the router's Choose + PlanPrefill + LoadGuard, router/router.cc) --------------

void Simulator::OnArrival() {
  SimRequest r;
  if (config_.concurrency > 0) {  // the next one enters when this one ends
    r = std::move(closed_arrivals_.front());
    closed_arrivals_.pop_front();
  } else {
    r = std::move(*next_arrival_);
    next_arrival_.reset();
    PullArrival();
  }
  ++res_.requests;
  if (first_arrival_ < 0) {
    first_arrival_ = now_;
    for (Instance& w : inst_) w.added_at = now_;
    if (config_.scale) Push(now_ + config_.scale_interval_s, EventKind::kScaleTick, 0);
  }

  const uint32_t slot = NewSlot();
  Req& q = reqs_[slot];
  q = Req{};
  q.r = std::move(r);
  if (q.r.output_tokens == 0) q.r.output_tokens = 1;
  if (q.r.input_tokens == 0) q.r.input_tokens = 1;
  ++iv_arrivals_;
  iv_isl_ += q.r.input_tokens;
  iv_osl_ += q.r.output_tokens;
  // Workloads give full-block hashes of the prompt; a mismatching block size would be a bug.
  if (q.r.hashes.size() > q.r.input_tokens / config_.block_size) {
    q.r.hashes.resize(q.r.input_tokens / config_.block_size);
  }
  // A request that can never fit one instance's KV is refused up front (vLLM rejects it too).
  if (BlocksFor(uint64_t{q.r.input_tokens} + q.r.output_tokens) > min_decode_blocks_) {
    Reject(slot);
    return;
  }

  const bool multi = !config_.clusters.empty();
  if (multi) {
    if (q.r.region >= config_.region_rtt_ms.size()) {
      RecordBug("a request's region " + std::to_string(q.r.region) + " has no region_rtt_ms row");
      Reject(slot);
      return;
    }
    // The global tier's view from the request's region: every worker's rtt_ms is the round trip
    // from there to its cluster (single-threaded: set per decision).
    const std::vector<double>& rtt = config_.region_rtt_ms[q.r.region];
    for (Instance& w : inst_) w.worker->rtt_ms = rtt[w.cluster];
  }
  const uint32_t max_inflight = config_.max_inflight_per_worker;
  cands_.clear();
  for (router::WorkerState* w : decode_workers_) {
    if (w->inflight.load(std::memory_order_relaxed) < max_inflight) cands_.push_back(w);
  }
  if (cands_.empty()) {  // router: 503, every decode-capable worker is full
    Reject(slot);
    return;
  }
  router::RouteInput in;
  in.hashes = q.r.hashes;
  in.prompt_tokens = q.r.input_tokens;
  in.max_new_tokens = q.r.output_tokens;
  in.block_size = config_.block_size;
  const bool disagg = config_.disaggregation.mode != "off";
  overlaps_.workers.clear();
  if (policy_->uses_overlap() || disagg) index_->QueryInto(q.r.hashes, {}, overlaps_);
  const router::RouteChoice choice = policy_->Choose(in, cands_, overlaps_);
  router::PrefillPlan plan;
  if (disagg) {
    pre_.clear();
    for (router::WorkerState* w : prefill_workers_) {
      if (w == choice.worker || w->inflight.load(std::memory_order_relaxed) >= max_inflight) continue;
      if (multi && config_.cluster_local_prefill &&
          inst_[w->id].cluster != inst_[choice.worker->id].cluster) {
        continue;
      }
      pre_.push_back(w);
    }
    plan = router::PlanPrefill(config_.disaggregation, in, choice, pre_, overlaps_, *policy_);
  } else {
    const uint64_t cached = uint64_t{choice.overlap_blocks} * config_.block_size;
    plan.uncached_tokens =
        cached >= q.r.input_tokens ? 0 : q.r.input_tokens - static_cast<uint32_t>(cached);
  }
  const bool remote = plan.remote && plan.prefill_worker != nullptr &&
                      BlocksFor(q.r.input_tokens) <= min_prefill_blocks_;
  Instance& d = inst_[choice.worker->id];
  q.decode_inst = d.id;
  ++d.holds;
  if (multi) {
    q.rtt_s = config_.region_rtt_ms[q.r.region][d.cluster] / 1000.0;
    q.remote = config_.clusters[d.cluster].region != q.r.region;
  }
  if (policy_->uses_overlap() || disagg) {
    index_->AddPredicted(d.id, q.r.hashes, config_.routing.predicted_ttl);
    if (remote) index_->AddPredicted(plan.prefill_worker->id, q.r.hashes, config_.routing.predicted_ttl);
  }
  q.target = q.r.input_tokens;
  if (remote) {
    Instance& p = inst_[plan.prefill_worker->id];
    q.prefill_inst = p.id;
    ++p.holds;
    q.holds_prefill = true;
    q.pguard = router::LoadGuard(p.worker, plan.uncached_tokens, 0, true);
    ++res_.remote_prefills;
    p.waiting.push_back(slot);
    NotifyWork(p);
  } else {
    q.dguard = router::LoadGuard(d.worker, plan.uncached_tokens, BlocksFor(uint64_t{q.r.input_tokens} + q.r.output_tokens),
                                 true);
    d.waiting.push_back(slot);
    NotifyWork(d);
  }
}

void Simulator::Reject(uint32_t slot) {
  ++res_.rejected;
  ReleaseHolds(reqs_[slot]);
  FreeSlot(slot);
  if (config_.concurrency > 0) PullArrival();
}

// ---- instance scheduler ----------------------------------------------------------------------

void Simulator::NotifyWork(Instance& in) {
  if (!in.busy) {
    PlanStep(in);
    return;
  }
  if (!in.decode_only || in.jump_k <= 1) return;  // picked up when the current step ends
  // Truncate the decode jump at the first step boundary at or after now.
  const double rel = now_ - in.step_start;
  const auto it = std::lower_bound(in.cum.begin(), in.cum.begin() + in.jump_k, rel);
  const uint32_t k = static_cast<uint32_t>(it - in.cum.begin()) + 1;
  if (k >= in.jump_k) return;
  in.jump_k = k;
  ++in.version;
  Push(in.step_start + in.cum[k - 1], EventKind::kStepEnd, in.id, in.version);
}

// Allocates blocks for a waiting request's prefill (all-or-nothing). False: no room.
bool Simulator::Admit(Instance& in, Req& q, uint32_t budget, uint32_t* take) {
  const uint32_t bs = config_.block_size;
  q.target = q.r.input_tokens + q.generated;
  // The last token is always recomputed (its logits are needed): look up at most
  // (target - 1) / bs leading blocks, and only prompt blocks have hashes.
  const size_t lookup_n = std::min<size_t>(q.r.hashes.size(), (q.target - 1) / bs);
  const std::span<const kv::BlockHash> lookup(q.r.hashes.data(), lookup_n);
  const size_t cached = in.blocks->PeekCachedPrefix(lookup);
  const uint32_t total = BlocksFor(q.target);
  auto alloc = in.blocks->AllocateForSequence(lookup, total - cached);
  if (!alloc) return false;
  q.blocks = std::move(alloc->cached);
  q.blocks.insert(q.blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
  q.committed = static_cast<uint32_t>(cached);
  q.kv = static_cast<uint32_t>(cached) * bs;
  q.prefilling = true;
  if (!q.first_admission_done) {
    q.first_admission_done = true;
    q.cached_at_first_prefill = q.kv;
  }
  *take = std::min(q.target - q.kv, budget);
  return true;
}

void Simulator::Preempt(Instance& in, uint32_t slot) {
  Req& q = reqs_[slot];
  in.blocks->Free(q.blocks);
  q.blocks.clear();
  q.kv = 0;
  q.committed = 0;
  q.prefilling = false;
  in.waiting.push_front(slot);
  ++res_.preemptions;
}

void Simulator::PlanStep(Instance& in) {
  const PoolConfig& pc = in.pool->config;
  kv::BlockPool& pool = *in.blocks;
  in.chunks.clear();
  in.decoders.clear();

  // 0. Sequences whose KV was transferred in hold their blocks already: they take batch slots
  // first (they cannot be stuck behind a waiting prefill that needs those blocks).
  while (!in.ready.empty() && in.running.size() < pc.max_batch) {
    in.running.push_back(in.ready.front());
    in.ready.pop_front();
  }

  // 1. Every decoding sequence needs a block for its next token; preempt from the back if not.
  bool preempted = false;
  for (;;) {
    uint64_t need = 0;
    for (uint32_t s : in.running) {
      const Req& q = reqs_[s];
      if (q.prefilling) continue;
      const uint32_t want = BlocksFor(uint64_t{q.kv} + 1);
      if (want > q.blocks.size()) need += want - q.blocks.size();
    }
    if (need <= pool.num_blocks_free()) break;
    const uint32_t victim = in.running.back();
    in.running.pop_back();
    if (in.running.empty() && pool.num_blocks_used() == reqs_[victim].blocks.size()) {
      // Alone and still no room: it can never finish here (cannot happen with the up-front
      // check, kept so a config error cannot loop forever).
      pool.Free(reqs_[victim].blocks);
      reqs_[victim].blocks.clear();
      RecordBug("a request outgrew an empty instance's KV");
      Reject(victim);
      continue;
    }
    Preempt(in, victim);
    preempted = true;
  }
  for (uint32_t s : in.running) {
    Req& q = reqs_[s];
    if (q.prefilling) continue;
    const uint32_t want = BlocksFor(uint64_t{q.kv} + 1);
    if (want > q.blocks.size()) {
      auto more = pool.Allocate(want - q.blocks.size());
      if (!more) {
        RecordBug("decode block allocation failed after the capacity check");
        continue;
      }
      q.blocks.insert(q.blocks.end(), more->begin(), more->end());
    }
    in.decoders.push_back(s);
  }

  // 2. Chunked prefills already running continue first, then waiting requests are admitted.
  uint32_t budget = pc.max_prefill_tokens;
  for (uint32_t s : in.running) {
    Req& q = reqs_[s];
    if (!q.prefilling || budget == 0) continue;
    const uint32_t take = std::min(q.target - q.kv, budget);
    in.chunks.emplace_back(s, take);
    budget -= take;
  }
  while (!preempted && !in.waiting.empty() && in.running.size() < pc.max_batch) {
    const uint32_t s = in.waiting.front();
    Req& q = reqs_[s];
    if (budget == 0) break;
    uint32_t take = 0;
    if (!Admit(in, q, budget, &take)) break;
    in.waiting.pop_front();
    in.running.push_back(s);
    in.chunks.emplace_back(s, take);
    budget -= take;
  }
  if (in.chunks.empty() && in.decoders.empty()) {
    in.busy = false;
    return;
  }

  in.busy = true;
  in.step_start = now_;
  ++in.version;
  uint64_t context = 0;
  for (uint32_t s : in.decoders) context += reqs_[s].kv;
  const uint32_t b = static_cast<uint32_t>(in.decoders.size());
  if (!in.chunks.empty()) {
    uint64_t tokens = 0;
    double pairs = 0;
    for (const auto& [s, take] : in.chunks) {
      tokens += take;
      pairs += static_cast<double>(take) * (static_cast<double>(reqs_[s].kv) + take / 2.0);
    }
    // One engine step: decode tokens and prefill chunks share the weight reads.
    const double t = in.pool->perf->MixedStepSeconds(b, context, tokens, pairs);
    in.decode_only = false;
    in.jump_k = 1;
    in.step_seconds = t;
    ++res_.engine_steps;
    Push(now_ + t, EventKind::kStepEnd, in.id, in.version);
    return;
  }

  // 3. Decode only: jump to the earliest finish, as far as free blocks allow.
  uint32_t k = config_.max_jump_steps;
  for (uint32_t s : in.decoders) {
    const Req& q = reqs_[s];
    k = std::min(k, q.r.output_tokens - q.generated);
  }
  auto need_for = [&](uint32_t steps) {
    uint64_t need = 0;
    for (uint32_t s : in.decoders) {
      const Req& q = reqs_[s];
      const uint32_t want = BlocksFor(uint64_t{q.kv} + steps);
      if (want > q.blocks.size()) need += want - q.blocks.size();
    }
    return need;
  };
  if (k > 1 && need_for(k) > pool.num_blocks_free()) {
    uint32_t lo = 1, hi = k;  // need_for(lo) fits (step 1 allocated above), need_for(hi) not
    while (hi - lo > 1) {
      const uint32_t mid = lo + (hi - lo) / 2;
      (need_for(mid) <= pool.num_blocks_free() ? lo : hi) = mid;
    }
    k = lo;
  }
  if (k > 1) {
    for (uint32_t s : in.decoders) {
      Req& q = reqs_[s];
      const uint32_t want = BlocksFor(uint64_t{q.kv} + k);
      if (want > q.blocks.size()) {
        auto more = pool.Allocate(want - q.blocks.size());
        if (!more) {
          RecordBug("jump block allocation failed after the capacity check");
          continue;
        }
        q.blocks.insert(q.blocks.end(), more->begin(), more->end());
      }
    }
  }
  in.decode_only = true;
  in.jump_k = k;
  in.cum.resize(k);
  double t = 0;
  for (uint32_t i = 0; i < k; ++i) {
    t += DecodeStep(in, b, context + uint64_t{i} * b);
    in.cum[i] = t;
  }
  Push(now_ + in.cum[k - 1], EventKind::kStepEnd, in.id, in.version);
}

void Simulator::CommitPromptBlocks(Instance& in, Req& q) {
  const uint32_t full = std::min<uint32_t>(q.kv / config_.block_size,
                                           static_cast<uint32_t>(q.r.hashes.size()));
  for (uint32_t i = q.committed; i < full; ++i) {
    std::optional<kv::BlockHash> parent;
    if (i > 0) parent = q.r.hashes[i - 1];
    const Status s = in.blocks->CommitBlock(q.blocks[i], q.r.hashes[i], parent, {});
    if (!s.ok()) RecordBug("CommitBlock: " + s.ToString());
  }
  if (full > q.committed) {
    q.committed = full;
    MarkDirty(in);
  }
}

void Simulator::OnStepEnd(Instance& in) {
  in.busy = false;
  const uint32_t b = static_cast<uint32_t>(in.decoders.size());
  // Decoders: k tokens each.
  if (b > 0) {
    const uint32_t k = in.jump_k;
    const double first_step_end = in.step_start + (in.decode_only ? in.cum[0] : in.step_seconds);
    uint32_t fresh = 0;
    for (uint32_t s : in.decoders) {
      Req& q = reqs_[s];
      if (q.generated == 1) {  // its first gap runs from the first token (maybe on another instance)
        itl_.Add(first_step_end - q.first_token, 1);
        ++fresh;
      }
      q.kv += k;
      q.generated += k;
    }
    if (in.decode_only) {
      itl_.Add(in.cum[0], b - fresh);
      for (uint32_t i = 1; i < k; ++i) itl_.Add(in.cum[i] - in.cum[i - 1], b);
      res_.engine_steps += k;
    } else {
      itl_.Add(in.step_seconds, b - fresh);
    }
  }
  // Prefill chunks.
  for (const auto& [s, take] : in.chunks) {
    Req& q = reqs_[s];
    q.kv += take;
    CommitPromptBlocks(in, q);
    if (q.kv >= q.target) CompletePrefill(in, s);
  }
  // Retire finished and moved-out sequences (CompletePrefill/FinishRequest mark them).
  size_t w = 0;
  for (uint32_t s : in.running) {
    Req& q = reqs_[s];
    const bool done_here = q.generated >= q.r.output_tokens ||
                           (!q.prefilling && q.prefill_inst == in.id && q.decode_inst != in.id);
    if (done_here) {
      if (q.generated >= q.r.output_tokens) FinishRequest(in, s);
      continue;
    }
    in.running[w++] = s;
  }
  in.running.resize(w);
  if (!in.incoming.empty()) TryReceive(in);
  PlanStep(in);
}

void Simulator::CompletePrefill(Instance& in, uint32_t slot) {
  Req& q = reqs_[slot];
  q.prefilling = false;
  ++q.generated;
  if (q.first_token < 0) q.first_token = now_;
  if (q.prefill_inst == in.id && q.decode_inst != in.id) {
    // Remote prefill done: the router streams the first token, drops the prefill load, then
    // sends the decode worker the request (router.cc: pguard.Release(); LoadGuard dguard(...)).
    q.pguard.Release();
    if (q.generated >= q.r.output_tokens) return;  // finished on the prefill worker
    Instance& d = inst_[q.decode_inst];
    q.dguard = router::LoadGuard(d.worker, 0, BlocksFor(uint64_t{q.r.input_tokens} + q.r.output_tokens),
                                 false);
    q.lease = std::move(q.blocks);
    q.blocks.clear();
    d.incoming.push_back(slot);
    TryReceive(d);
    return;
  }
  q.dguard.PrefillDone();
}

void Simulator::TryReceive(Instance& d) {
  const uint32_t bs = config_.block_size;
  while (!d.incoming.empty()) {
    const uint32_t slot = d.incoming.front();
    Req& q = reqs_[slot];
    const std::span<const kv::BlockHash> lookup(q.r.hashes);
    const size_t cached = d.blocks->PeekCachedPrefix(lookup);
    const uint32_t total = BlocksFor(q.r.input_tokens);
    auto alloc = d.blocks->AllocateForSequence(lookup, total - cached);
    if (!alloc) break;
    d.incoming.pop_front();
    q.blocks = std::move(alloc->cached);
    q.blocks.insert(q.blocks.end(), alloc->fresh.begin(), alloc->fresh.end());
    q.committed = static_cast<uint32_t>(cached);
    const uint64_t moved = q.r.input_tokens - std::min<uint64_t>(q.r.input_tokens, cached * bs);
    const uint64_t bytes = d.pool->perf->KvBytes(moved);
    res_.transfer_bytes += bytes;
    const uint32_t from = inst_[q.prefill_inst].cluster;
    const bool cross = !config_.clusters.empty() && from != d.cluster;
    if (cross) {
      res_.cross_cluster_bytes += bytes;
      res_.cross_cluster_kv_bytes += bytes;
    }
    const LinkSpec& link = cross ? config_.cluster_links[from][d.cluster] : link_;
    const double start = std::max(now_, d.link_free_at);
    const double done = moved > 0 ? start + PerfModel::TransferSeconds(bytes, link) : now_;
    d.link_free_at = std::max(d.link_free_at, done);
    Push(done, EventKind::kTransferDone, slot);
  }
}

void Simulator::OnTransferDone(uint32_t slot) {
  Req& q = reqs_[slot];
  Instance& p = inst_[q.prefill_inst];
  Instance& d = inst_[q.decode_inst];
  p.blocks->Free(q.lease);  // the lease is released
  q.lease.clear();
  if (q.holds_prefill) {
    --p.holds;
    q.holds_prefill = false;
  }
  q.kv = q.r.input_tokens;
  CommitPromptBlocks(d, q);
  d.ready.push_back(slot);
  NotifyWork(d);
  if (!p.busy) PlanStep(p);  // freed blocks may admit a waiting prefill
}

void Simulator::FinishRequest(Instance& in, uint32_t slot) {
  Req& q = reqs_[slot];
  in.blocks->Free(q.blocks);
  q.blocks.clear();
  if (!q.lease.empty()) {  // finished on the prefill worker (one output token) before any move
    in.blocks->Free(q.lease);
    q.lease.clear();
  }
  // The user sees the round trip to the serving cluster on top of the fleet's own latency.
  const double e2e = now_ - q.r.arrival_s + q.rtt_s;
  const double ttft = q.first_token - q.r.arrival_s + q.rtt_s;
  ++res_.completed;
  if (!config_.clusters.empty()) {
    ++res_.completed_by_cluster[inst_[q.decode_inst].cluster];
    if (q.remote) {
      ++res_.remote_requests;
      res_.cross_cluster_bytes += static_cast<uint64_t>(
          config_.payload_bytes_per_token * (static_cast<double>(q.r.input_tokens) + q.r.output_tokens));
    }
  }
  res_.prompt_tokens += q.r.input_tokens;
  res_.cached_prompt_tokens += q.cached_at_first_prefill;
  res_.output_tokens += q.r.output_tokens;
  ttft_.push_back(ttft);
  e2e_.push_back(e2e);
  double tpot = 0;
  if (config_.scale) iv_ttft_.push_back(ttft);
  if (q.r.output_tokens > 1) {
    const double decode_s = now_ - q.first_token;
    tpot = decode_s / (q.r.output_tokens - 1);
    if (config_.scale) iv_itl_.push_back(tpot);
    if (decode_s > 0) {
      user_tps_sum_ += (q.r.output_tokens - 1) / decode_s;
      ++user_tps_n_;
    }
  }
  if (ttft <= config_.sla_ttft_s && tpot <= config_.sla_itl_s) ++good_;
  last_finish_ = std::max(last_finish_, now_);
  ReleaseHolds(q);
  FreeSlot(slot);
  if (config_.concurrency > 0) PullArrival();
}

SimResult Simulator::Finish() {
  for (Instance& in : inst_) {
    res_.leaked_blocks += in.blocks->num_blocks_used();
    if (res_.pool_errors.empty()) {
      const Status s = in.blocks->CheckInvariants();
      if (!s.ok()) res_.pool_errors = "instance " + std::to_string(in.id) + ": " + s.ToString();
    }
  }
  if (res_.pool_errors.empty() && !bug_.empty()) res_.pool_errors = bug_;
  const double dur = first_arrival_ < 0 ? 0 : last_finish_ - first_arrival_;
  for (const Instance& in : inst_) {
    const double end = in.removed ? in.removed_at : std::max(last_finish_, in.added_at);
    res_.gpu_seconds += in.pool->config.tp * std::max(0.0, end - in.added_at);
  }
  res_.duration_s = dur;
  if (dur > 0) {
    res_.output_tokens_per_s = static_cast<double>(res_.output_tokens) / dur;
    res_.goodput_rps = static_cast<double>(good_) / dur;
  }
  if (res_.gpus > 0) {
    res_.output_tokens_per_s_per_gpu = res_.output_tokens_per_s / res_.gpus;
    res_.goodput_rps_per_gpu = res_.goodput_rps / res_.gpus;
  }
  res_.tokens_per_s_per_user = user_tps_n_ ? user_tps_sum_ / static_cast<double>(user_tps_n_) : 0;
  res_.ttft_s = PercentilesOf(ttft_);
  res_.e2e_s = PercentilesOf(e2e_);
  res_.itl_s = {itl_.Quantile(0.5), itl_.Quantile(0.9), itl_.Quantile(0.99), itl_.Mean()};
  res_.sla_attainment = res_.completed ? static_cast<double>(good_) / res_.completed : 0;
  res_.cache_hit_ratio = res_.prompt_tokens ? static_cast<double>(res_.cached_prompt_tokens) /
                                                  static_cast<double>(res_.prompt_tokens)
                                            : 0;
  return res_;
}

nlohmann::json PercentilesJson(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"mean", p.mean}};
}

}  // namespace

StatusOr<SimResult> RunFleetSim(const SimConfig& config, Workload& workload,
                                std::string policy_label) {
  const auto t0 = std::chrono::steady_clock::now();
  Simulator sim(config, workload);
  KVMESH_RETURN_IF_ERROR(sim.Init(policy_label));
  sim.Run();
  SimResult r = sim.Finish();
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::string SimResultJson(const SimResult& r) {
  nlohmann::json j = {
      {"policy", r.policy},
      {"workload", r.workload},
      {"requests", r.requests},
      {"completed", r.completed},
      {"rejected", r.rejected},
      {"gpus", r.gpus},
      {"instances", r.instances},
      {"duration_s", r.duration_s},
      {"prompt_tokens", r.prompt_tokens},
      {"cached_prompt_tokens", r.cached_prompt_tokens},
      {"output_tokens", r.output_tokens},
      {"output_tokens_per_s", r.output_tokens_per_s},
      {"output_tokens_per_s_per_gpu", r.output_tokens_per_s_per_gpu},
      {"tokens_per_s_per_user", r.tokens_per_s_per_user},
      {"ttft_s", PercentilesJson(r.ttft_s)},
      {"itl_s", PercentilesJson(r.itl_s)},
      {"e2e_s", PercentilesJson(r.e2e_s)},
      {"goodput_rps", r.goodput_rps},
      {"goodput_rps_per_gpu", r.goodput_rps_per_gpu},
      {"sla_attainment", r.sla_attainment},
      {"cache_hit_ratio", r.cache_hit_ratio},
      {"remote_prefills", r.remote_prefills},
      {"transfer_bytes", r.transfer_bytes},
      {"preemptions", r.preemptions},
      {"engine_steps", r.engine_steps},
      {"events", r.events},
      {"leaked_blocks", r.leaked_blocks},
      {"remote_requests", r.remote_requests},
      {"cross_cluster_bytes", r.cross_cluster_bytes},
      {"cross_cluster_kv_bytes", r.cross_cluster_kv_bytes},
      {"completed_by_cluster", r.completed_by_cluster},
      {"prefix_seeds_applied", r.prefix_seeds_applied},
      {"prefix_seeds_skipped", r.prefix_seeds_skipped},
      {"prefix_copy_blocks", r.prefix_copy_blocks},
      {"prefix_copy_bytes", r.prefix_copy_bytes},
      {"instances_added", r.instances_added},
      {"instances_removed", r.instances_removed},
      {"peak_instances", r.peak_instances},
      {"gpu_seconds", r.gpu_seconds},
      {"pool_errors", r.pool_errors},
      {"wall_s", r.wall_s},
  };
  return j.dump();
}

std::string SimResultTable(const std::vector<SimResult>& results) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "%-14s %9s %9s %9s %9s %9s %9s %9s %9s %8s %9s %10s\n", "policy",
                "done", "tok/s/gpu", "tok/s/usr", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99",
                "e2e_p50", "hit", "goodput", "xfer_GB");
  out += line;
  for (const SimResult& r : results) {
    std::snprintf(line, sizeof(line),
                  "%-14s %9llu %9.1f %9.1f %9.3f %9.3f %9.4f %9.4f %9.3f %8.3f %9.2f %10.2f\n",
                  r.policy.c_str(), static_cast<unsigned long long>(r.completed),
                  r.output_tokens_per_s_per_gpu, r.tokens_per_s_per_user, r.ttft_s.p50,
                  r.ttft_s.p99, r.itl_s.p50, r.itl_s.p99, r.e2e_s.p50, r.cache_hit_ratio,
                  r.goodput_rps, static_cast<double>(r.transfer_bytes) / 1e9);
    out += line;
  }
  return out;
}

}  // namespace kvmesh::sim
