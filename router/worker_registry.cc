#include "router/worker_registry.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "common/check.h"
#include "common/http_client.h"
#include "common/log.h"

namespace kvmesh::router {

namespace {

constexpr const char* kComponent = "router.workers";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Subtracts v from a counter (std::atomic<T>& or std::atomic_ref<T>), saturating at 0 (a
// would-be underflow is a bug, not a wrap).
template <typename T, typename Atomic>
void SubSaturating(Atomic&& a, T v) {
  if (v == 0) return;
  T cur = a.load(std::memory_order_relaxed);
  while (true) {
    T next = cur >= v ? cur - v : 0;
    if (a.compare_exchange_weak(cur, next, std::memory_order_relaxed)) break;
  }
  if (cur < v) KVMESH_BUG(kComponent, "worker load counter would underflow");
}

// host:port of a normalized http(s)://host:port URL.
std::string HostPortOf(const std::string& url) {
  size_t p = url.find("://");
  return p == std::string::npos ? url : url.substr(p + 3);
}

WorkerSpec Normalized(WorkerSpec spec) {
  if (spec.name.empty()) spec.name = HostPortOf(spec.url);
  return spec;
}

bool SameSpec(const WorkerSpec& a, const WorkerSpec& b) {
  return a.url == b.url && a.role == b.role && a.name == b.name &&
         a.events_endpoint == b.events_endpoint && a.replay_endpoint == b.replay_endpoint &&
         a.topic == b.topic && a.has_inventory == b.has_inventory &&
         a.is_cluster_router == b.is_cluster_router && a.rtt_ms == b.rtt_ms && a.region == b.region;
}

// Validates and normalizes "http(s)://host:port[/]". Errors name the value.
StatusOr<std::string> NormalizeUrl(std::string_view raw) {
  std::string url(raw);
  while (!url.empty() && url.back() == '/') url.pop_back();
  std::string_view rest;
  if (url.rfind("http://", 0) == 0) {
    rest = std::string_view(url).substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    rest = std::string_view(url).substr(8);
  } else {
    return InvalidArgumentError("worker url '" + std::string(raw) +
                                "' must start with http:// or https://");
  }
  if (rest.find_first_of("/?#@ \t") != std::string_view::npos) {
    return InvalidArgumentError("worker url '" + std::string(raw) +
                                "' must be scheme://host:port with no path, query or user");
  }
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || (rest.find(']') != std::string_view::npos &&
                                          colon < rest.find(']'))) {
    return InvalidArgumentError("worker url '" + std::string(raw) + "' needs an explicit port");
  }
  std::string_view host = rest.substr(0, colon);
  std::string_view port = rest.substr(colon + 1);
  if (host.empty() || host == "[]") {
    return InvalidArgumentError("worker url '" + std::string(raw) + "' has an empty host");
  }
  if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string_view::npos) {
    return InvalidArgumentError("worker url '" + std::string(raw) +
                                "' has a malformed host (IPv6 needs [brackets])");
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    return InvalidArgumentError("worker url '" + std::string(raw) + "' has a bad port '" +
                                std::string(port) + "'");
  }
  return url;
}

Status ValidateSpecs(const std::vector<WorkerSpec>& specs, std::string_view where) {
  std::set<std::string> seen;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto url = NormalizeUrl(specs[i].url);
    if (!url.ok()) {
      return InvalidArgumentError(std::string(where) + " entry " + std::to_string(i) + ": " +
                                  url.status().message());
    }
    if (*url != specs[i].url) {
      return InvalidArgumentError(std::string(where) + " entry " + std::to_string(i) +
                                  ": url '" + specs[i].url + "' is not normalized (use " + *url +
                                  ")");
    }
    if (!seen.insert(*url).second) {
      return InvalidArgumentError(std::string(where) + " entry " + std::to_string(i) +
                                  ": duplicate url " + *url);
    }
    if (!specs[i].has_inventory && specs[i].events_endpoint.empty()) {
      return InvalidArgumentError(std::string(where) + " entry " + std::to_string(i) + " (" +
                                  *url + "): a worker without inventory needs events_endpoint");
    }
  }
  return Status::Ok();
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open workers file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return UnavailableError("cannot read workers file " + path);
  return ss.str();
}

// State label of a worker for kvmesh_router_workers.
const char* GaugeState(const WorkerState& w) {
  if (w.breaker_state() != BreakerState::kClosed) return "open";
  return w.ready.load() ? "ready" : "not_ready";
}

}  // namespace

// ---- names and parsing -------------------------------------------------------------------------

const char* WorkerRoleName(WorkerRole role) {
  switch (role) {
    case WorkerRole::kAggregated: return "aggregated";
    case WorkerRole::kPrefill: return "prefill";
    case WorkerRole::kDecode: return "decode";
  }
  return "aggregated";
}

StatusOr<WorkerRole> ParseWorkerRole(std::string_view name) {
  if (name == "aggregated" || name == "agg" || name == "both") return WorkerRole::kAggregated;
  if (name == "prefill") return WorkerRole::kPrefill;
  if (name == "decode") return WorkerRole::kDecode;
  return InvalidArgumentError("unknown worker role '" + std::string(name) +
                              "' (want aggregated, prefill or decode)");
}

const char* BreakerStateName(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed: return "closed";
    case BreakerState::kOpen: return "open";
    case BreakerState::kHalfOpen: return "half_open";
  }
  return "closed";
}

StatusOr<WorkerSpec> ParseWorkerUrl(std::string_view text) {
  WorkerSpec spec;
  std::string_view url = text;
  size_t eq = text.find('=');
  if (eq != std::string_view::npos) {
    url = text.substr(0, eq);
    auto role = ParseWorkerRole(text.substr(eq + 1));
    if (!role.ok()) {
      return InvalidArgumentError("worker '" + std::string(text) + "': " +
                                  role.status().message());
    }
    spec.role = *role;
  }
  KVMESH_ASSIGN_OR_RETURN(spec.url, NormalizeUrl(url));
  return spec;
}

StatusOr<std::vector<WorkerSpec>> ParseWorkerFile(std::string_view text) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("workers file does not parse: ") + e.what());
  }
  std::vector<WorkerSpec> out;
  if (!root || root.IsNull()) return out;  // an empty file is an empty fleet
  YAML::Node list;
  if (root.IsMap()) {
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>("");
      if (key != "workers") {
        return InvalidArgumentError("workers file: unknown top-level key '" + key +
                                    "' (want 'workers')");
      }
    }
    list = root["workers"];
    if (!list || list.IsNull()) return out;
  } else {
    list = root;  // a bare list is accepted too
  }
  if (!list.IsSequence()) {
    return InvalidArgumentError("workers file: 'workers' must be a list");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node e = list[i];
    const std::string where = "workers[" + std::to_string(i) + "]";
    if (!e.IsMap()) return InvalidArgumentError(where + ": must be a map with at least 'url'");
    WorkerSpec spec;
    std::string url_text;
    try {
      for (const auto& kv : e) {
        const std::string key = kv.first.as<std::string>();
        if (!kv.second.IsScalar()) {
          return InvalidArgumentError(where + "." + key + ": must be a string");
        }
        const std::string value = kv.second.as<std::string>();
        if (key == "url") {
          url_text = value;
        } else if (key == "role") {
          auto role = ParseWorkerRole(value);
          if (!role.ok()) return InvalidArgumentError(where + ".role: " + role.status().message());
          spec.role = *role;
        } else if (key == "name") {
          spec.name = value;
        } else if (key == "events_endpoint") {
          spec.events_endpoint = value;
        } else if (key == "replay_endpoint") {
          spec.replay_endpoint = value;
        } else if (key == "topic") {
          spec.topic = value;
        } else if (key == "kind") {
          if (value == "kvmesh") {
            spec.has_inventory = true;
          } else if (value == "vllm" || value == "sglang") {
            spec.has_inventory = false;
          } else if (value == "router") {
            spec.has_inventory = true;
            spec.is_cluster_router = true;
          } else {
            return InvalidArgumentError(where + ".kind: unknown kind '" + value +
                                        "' (want kvmesh, vllm or router)");
          }
        } else if (key == "rtt_ms") {
          char* end = nullptr;
          const double v = std::strtod(value.c_str(), &end);
          if (value.empty() || end != value.c_str() + value.size() || !(v >= 0) || v > 1e6) {
            return InvalidArgumentError(where + ".rtt_ms: want a number of milliseconds in "
                                        "[0, 1e6], got '" + value + "'");
          }
          spec.rtt_ms = v;
        } else if (key == "region") {
          spec.region = value;
        } else {
          return InvalidArgumentError(where + ": unknown field '" + key + "'");
        }
      }
    } catch (const YAML::Exception& ex) {
      return InvalidArgumentError(where + ": " + ex.what());
    }
    if (url_text.empty()) return InvalidArgumentError(where + ".url: missing");
    auto url = NormalizeUrl(url_text);
    if (!url.ok()) return InvalidArgumentError(where + ".url: " + url.status().message());
    spec.url = *url;
    if (!seen.insert(spec.url).second) {
      return InvalidArgumentError(where + ".url: duplicate url " + spec.url);
    }
    if (!spec.has_inventory && spec.events_endpoint.empty()) {
      return InvalidArgumentError(where + ".events_endpoint: required for kind vllm (" +
                                  spec.url + ")");
    }
    out.push_back(std::move(spec));
  }
  return out;
}

// ---- LoadBoard -----------------------------------------------------------------------------

LoadBoard::LoadBoard()
    : cells_(static_cast<uint64_t*>(
          std::calloc(size_t{kNumFields} * kCapacity, sizeof(uint64_t)))) {
  KVMESH_CHECK(cells_ != nullptr, "out of memory (load board)");
}

LoadBoard::~LoadBoard() { std::free(cells_); }

void SetLoadForTesting(WorkerState& w, uint64_t prefill_tokens, uint64_t decode_blocks,
                       uint32_t inflight) {
  w.prefill_tokens.store(prefill_tokens, std::memory_order_relaxed);
  w.decode_blocks.store(decode_blocks, std::memory_order_relaxed);
  w.inflight.store(inflight, std::memory_order_relaxed);
  if (w.board) {
    w.board->Cell(w.id, LoadBoard::kPrefillTokens).store(prefill_tokens, std::memory_order_relaxed);
    w.board->Cell(w.id, LoadBoard::kQueueUnits)
        .store(decode_blocks + 4 * uint64_t{inflight}, std::memory_order_relaxed);
    w.board->Cell(w.id, LoadBoard::kDecodeBlocks).store(decode_blocks, std::memory_order_relaxed);
  }
}

// ---- LoadGuard -----------------------------------------------------------------------------

LoadGuard::LoadGuard(std::shared_ptr<WorkerState> worker, uint64_t prefill_tokens,
                     uint64_t decode_blocks, bool counts_as_prefill)
    : worker_(std::move(worker)),
      prefill_tokens_(prefill_tokens),
      decode_blocks_(decode_blocks),
      prefill_slot_(counts_as_prefill) {
  if (!worker_) {
    prefill_tokens_ = decode_blocks_ = 0;
    prefill_slot_ = false;
    return;
  }
  worker_->inflight.fetch_add(1, std::memory_order_relaxed);
  if (prefill_slot_) worker_->prefills_inflight.fetch_add(1, std::memory_order_relaxed);
  worker_->prefill_tokens.fetch_add(prefill_tokens_, std::memory_order_relaxed);
  worker_->decode_blocks.fetch_add(decode_blocks_, std::memory_order_relaxed);
  if (const LoadBoard* b = worker_->board.get()) {
    const kv::WorkerId id = worker_->id;
    b->Cell(id, LoadBoard::kPrefillTokens).fetch_add(prefill_tokens_, std::memory_order_relaxed);
    b->Cell(id, LoadBoard::kQueueUnits).fetch_add(decode_blocks_ + 4, std::memory_order_relaxed);
    b->Cell(id, LoadBoard::kDecodeBlocks).fetch_add(decode_blocks_, std::memory_order_relaxed);
  }
}

LoadGuard::~LoadGuard() { Release(); }

LoadGuard::LoadGuard(LoadGuard&& other) noexcept
    : worker_(std::move(other.worker_)),
      prefill_tokens_(std::exchange(other.prefill_tokens_, 0)),
      decode_blocks_(std::exchange(other.decode_blocks_, 0)),
      prefill_slot_(std::exchange(other.prefill_slot_, false)) {}

LoadGuard& LoadGuard::operator=(LoadGuard&& other) noexcept {
  if (this != &other) {
    Release();
    worker_ = std::move(other.worker_);
    prefill_tokens_ = std::exchange(other.prefill_tokens_, 0);
    decode_blocks_ = std::exchange(other.decode_blocks_, 0);
    prefill_slot_ = std::exchange(other.prefill_slot_, false);
  }
  return *this;
}

void LoadGuard::PrefillDone() {
  if (!worker_) return;
  if (prefill_slot_) {
    SubSaturating<uint32_t>(worker_->prefills_inflight, 1);
    prefill_slot_ = false;
  }
  SubSaturating<uint64_t>(worker_->prefill_tokens, prefill_tokens_);
  if (const LoadBoard* b = worker_->board.get()) {
    SubSaturating<uint64_t>(b->Cell(worker_->id, LoadBoard::kPrefillTokens), prefill_tokens_);
  }
  prefill_tokens_ = 0;
}

void LoadGuard::Release() {
  if (!worker_) return;
  PrefillDone();
  SubSaturating<uint64_t>(worker_->decode_blocks, decode_blocks_);
  SubSaturating<uint32_t>(worker_->inflight, 1);
  if (const LoadBoard* b = worker_->board.get()) {
    const kv::WorkerId id = worker_->id;
    SubSaturating<uint64_t>(b->Cell(id, LoadBoard::kDecodeBlocks), decode_blocks_);
    SubSaturating<uint64_t>(b->Cell(id, LoadBoard::kQueueUnits), decode_blocks_ + 4);
  }
  decode_blocks_ = 0;
  worker_.reset();
}

// ---- WorkerRegistry ------------------------------------------------------------------------

struct WorkerRegistry::Impl {
  struct Metrics {
    GaugeFamily* workers = nullptr;            // {role, state}
    CounterFamily* transitions = nullptr;      // {to}
    Counter* probe_failures = nullptr;
    GaugeFamily* inflight = nullptr;           // {worker}
  };

  MetricsRegistry* metrics_registry = nullptr;
  Metrics m;

  // Membership. change_mu serializes membership changes and on_change calls (so callbacks arrive
  // in order); mu guards the maps below. Table readers take neither.
  std::mutex change_mu;
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<WorkerState>> members;  // url -> state; guarded by mu
  std::set<std::string> static_urls;                            // immutable after Create
  kv::WorkerId next_id = 1;                                     // guarded by mu; never reused
  const std::shared_ptr<LoadBoard> board = std::make_shared<LoadBoard>();
  // A new worker's state with the next id (callers hold mu).
  std::shared_ptr<WorkerState> NewWorker(WorkerSpec spec) {
    auto w = std::make_shared<WorkerState>();
    w->id = next_id++;
    w->spec = std::move(spec);
    w->role = w->spec.role;
    w->rtt_ms = w->spec.rtt_ms;
    if (LoadBoard::Covers(w->id)) w->board = board;
    return w;
  }
  std::atomic<std::shared_ptr<const WorkerTable>> table{std::make_shared<const WorkerTable>()};
  std::atomic<std::shared_ptr<const WorkerView>> view{
      [this] {
        auto v = std::make_shared<WorkerView>();
        v->table = table.load();
        return std::shared_ptr<const WorkerView>(std::move(v));
      }()};

  // Makes `t` the current membership (callers hold mu): the table, then its view.
  void Publish(std::shared_ptr<const WorkerTable> t) {
    auto v = std::make_shared<WorkerView>();
    v->table = t;
    bool on_board = true;
    for (const auto& w : *t) {
      if (CanDecode(w->role)) {
        v->decode.push_back(w.get());
        v->decode_ids.push_back(w->id);
        v->decode_max_id = std::max(v->decode_max_id, w->id);
        on_board &= w->board != nullptr;
        v->decode_any_rtt |= w->rtt_ms != 0;
      }
      if (CanPrefillRemote(w->role)) v->prefill.push_back(w.get());
    }
    if (on_board) v->board = board;
    v->decode_consecutive = true;
    for (size_t i = 1; i < v->decode_ids.size(); ++i) {
      v->decode_consecutive &= v->decode_ids[i] == v->decode_ids[0] + i;
    }
    table.store(std::move(t));
    view.store(std::move(v));
  }

  // Threads.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopping = false;  // guarded by stop_mu
  bool started = false;   // guarded by stop_mu
  std::thread health_thread;
  std::thread file_thread;
  std::string file_content;  // last content seen (applied or rejected); file thread only

  // Waits up to d or until Stop(); returns false when stopping.
  bool WaitFor(std::chrono::milliseconds d) {
    std::unique_lock lock(stop_mu);
    return !stop_cv.wait_for(lock, d, [&] { return stopping; });
  }

  void CountTransition(BreakerState to) {
    if (m.transitions) m.transitions->WithLabels({BreakerStateName(to)}).Inc();
  }

  void UpdateGauges() {
    if (!m.workers) return;
    std::map<std::pair<std::string, std::string>, int> counts;
    for (WorkerRole r : {WorkerRole::kAggregated, WorkerRole::kPrefill, WorkerRole::kDecode}) {
      for (const char* s : {"ready", "not_ready", "open"}) counts[{WorkerRoleName(r), s}] = 0;
    }
    auto t = table.load();
    for (const auto& w : *t) {
      ++counts[{WorkerRoleName(w->spec.role), GaugeState(*w)}];
      if (m.inflight) m.inflight->WithLabels({w->spec.name}).Set(w->inflight.load());
    }
    for (const auto& [key, n] : counts) m.workers->WithLabels({key.first, key.second}).Set(n);
  }
};

WorkerRegistry::WorkerRegistry(WorkerRegistryOptions options, MetricsRegistry* metrics)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  impl_->metrics_registry = metrics;
}

StatusOr<std::unique_ptr<WorkerRegistry>> WorkerRegistry::Create(WorkerRegistryOptions options,
                                                                 MetricsRegistry* metrics) {
  if (options.breaker_failures == 0) {
    return InvalidArgumentError("breaker_failures must be >= 1");
  }
  if (options.health_interval.count() <= 0 || options.health_timeout.count() <= 0 ||
      options.file_poll_interval.count() <= 0) {
    return InvalidArgumentError(
        "health_interval, health_timeout and file_poll_interval must be > 0");
  }
  for (auto& s : options.static_workers) {
    auto url = NormalizeUrl(s.url);
    if (url.ok()) s.url = *url;
  }
  KVMESH_RETURN_IF_ERROR(ValidateSpecs(options.static_workers, "static workers"));
  std::vector<WorkerSpec> from_file;
  std::string file_content;
  if (!options.file.empty()) {
    KVMESH_ASSIGN_OR_RETURN(file_content, ReadFile(options.file));
    auto parsed = ParseWorkerFile(file_content);
    if (!parsed.ok()) {
      return InvalidArgumentError(options.file + ": " + parsed.status().message());
    }
    from_file = std::move(*parsed);
  }
  std::unique_ptr<WorkerRegistry> r(new WorkerRegistry(std::move(options), metrics));
  Impl& impl = *r->impl_;
  if (metrics) {
    KVMESH_ASSIGN_OR_RETURN(impl.m.workers,
                            metrics->AddGauge("kvmesh_router_workers",
                                              "Workers known to the router by role and state "
                                              "(ready, not_ready, open = breaker not closed)",
                                              {"role", "state"}));
    KVMESH_ASSIGN_OR_RETURN(impl.m.transitions,
                            metrics->AddCounter("kvmesh_router_worker_breaker_transitions_total",
                                                "Circuit breaker transitions by target state",
                                                {"to"}));
    KVMESH_ASSIGN_OR_RETURN(CounterFamily * pf,
                            metrics->AddCounter("kvmesh_router_worker_probe_failures_total",
                                                "Health probes (GET /ready) that did not return 200",
                                                {}));
    impl.m.probe_failures = &pf->WithLabels({});
    KVMESH_ASSIGN_OR_RETURN(impl.m.inflight,
                            metrics->AddGauge("kvmesh_router_worker_inflight",
                                              "Requests the router has in flight on each worker",
                                              {"worker"}));
  }
  for (const auto& s : r->options_.static_workers) impl.static_urls.insert(s.url);
  impl.file_content = std::move(file_content);
  // Initial membership: static workers, then the file's (a static URL wins over a file entry).
  std::vector<WorkerSpec> all = r->options_.static_workers;
  for (auto& s : from_file) {
    if (!impl.static_urls.count(s.url)) all.push_back(std::move(s));
  }
  {
    auto table = std::make_shared<WorkerTable>();
    std::lock_guard lock(impl.mu);
    for (auto& s : all) {
      auto w = impl.NewWorker(Normalized(std::move(s)));
      impl.members[w->spec.url] = w;
      table->push_back(w);
    }
    impl.Publish(std::move(table));
  }
  impl.UpdateGauges();
  return r;
}

WorkerRegistry::~WorkerRegistry() { Stop(); }

std::shared_ptr<const WorkerTable> WorkerRegistry::Table() const { return impl_->table.load(); }

std::shared_ptr<WorkerState> WorkerRegistry::Find(kv::WorkerId id) const {
  auto t = impl_->table.load();
  for (const auto& w : *t) {
    if (w->id == id) return w;
  }
  return nullptr;
}

void WorkerRegistry::SetWorkers(std::vector<WorkerSpec> workers) {
  Impl& impl = *impl_;
  std::lock_guard change(impl.change_mu);
  WorkerTable added;
  std::vector<kv::WorkerId> removed;
  {
    std::lock_guard lock(impl.mu);
    std::map<std::string, WorkerSpec> wanted;
    for (auto& s : workers) {
      auto url = NormalizeUrl(s.url);
      if (!url.ok()) {
        KVMESH_LOG_WARN(kComponent, "ignoring worker with a bad url", {"error", url.status().message()});
        continue;
      }
      s.url = *url;
      if (impl.static_urls.count(s.url)) continue;  // static entries stay as configured
      if (!s.has_inventory && s.events_endpoint.empty()) {
        KVMESH_LOG_WARN(kComponent, "ignoring worker without inventory and without events_endpoint",
                        {"url", s.url});
        continue;
      }
      if (wanted.count(s.url)) {
        KVMESH_LOG_WARN(kComponent, "ignoring duplicate worker url", {"url", s.url});
        continue;
      }
      std::string key = s.url;
      wanted.emplace(std::move(key), Normalized(std::move(s)));
    }
    auto table = std::make_shared<WorkerTable>();
    std::map<std::string, std::shared_ptr<WorkerState>> next;
    for (auto& [url, w] : impl.members) {
      if (impl.static_urls.count(url)) {
        next[url] = w;
        continue;
      }
      auto it = wanted.find(url);
      if (it != wanted.end() && SameSpec(it->second, w->spec)) {
        next[url] = w;
        wanted.erase(it);
      } else {  // gone, or changed in a way that needs a fresh identity (role, endpoints, kind)
        w->removed.store(true);
        removed.push_back(w->id);
        if (impl.m.inflight) impl.m.inflight->WithLabels({w->spec.name}).Set(0);
      }
    }
    for (auto& [url, spec] : wanted) {
      auto w = impl.NewWorker(std::move(spec));
      next[url] = w;
      added.push_back(w);
    }
    if (added.empty() && removed.empty()) return;
    // Keep the table in id order (stable across rebuilds, old workers first).
    for (auto& [url, w] : next) table->push_back(w);
    std::sort(table->begin(), table->end(),
              [](const auto& a, const auto& b) { return a->id < b->id; });
    impl.members = std::move(next);
    impl.Publish(std::move(table));
  }
  KVMESH_LOG_INFO(kComponent, "workers changed", {"added", added.size()}, {"removed", removed.size()},
                  {"total", impl.table.load()->size()});
  for (const auto& w : added) {
    KVMESH_LOG_INFO(kComponent, "worker added", {"id", w->id}, {"url", w->spec.url},
                    {"role", WorkerRoleName(w->spec.role)});
  }
  // Probe new workers at once so they become routable without waiting a full interval.
  if (!added.empty()) {
    http::HttpClientOptions o;
    o.connect_timeout = o.read_timeout = options_.health_timeout;
    http::HttpClient client(o);
    for (const auto& w : added) {
      auto r = client.Get(w->spec.url + "/ready");
      w->ready.store(r.ok() && r->status == 200);
    }
  }
  impl.UpdateGauges();
  if (options_.on_change) options_.on_change(added, removed);
}

std::shared_ptr<const WorkerView> WorkerRegistry::View() const { return impl_->view.load(); }

std::shared_ptr<WorkerState> WorkerView::Find(const WorkerState* w) const {
  if (w == nullptr) return nullptr;
  auto it = std::lower_bound(table->begin(), table->end(), w->id,
                             [](const auto& a, kv::WorkerId id) { return a->id < id; });
  return it != table->end() && it->get() == w ? *it : nullptr;
}

void WorkerRegistry::SelectCandidates(const WorkerView& view, CandidateKind kind,
                                      const std::unordered_set<kv::WorkerId>& exclude,
                                      const WorkerState* skip, std::vector<WorkerState*>& out,
                                      std::vector<WorkerState*>* excluded) const {
  out.clear();
  if (excluded != nullptr) excluded->clear();
  const std::vector<WorkerState*>& from =
      kind == CandidateKind::kDecode ? view.decode : view.prefill;
  if (out.capacity() < from.size()) out.reserve(from.size());
  const bool any_excluded = !exclude.empty();
  for (WorkerState* w : from) {
    if (w == skip || !Routable(*w)) continue;
    if (any_excluded && exclude.count(w->id) != 0) {
      if (excluded != nullptr) excluded->push_back(w);
      continue;
    }
    out.push_back(w);
  }
}

bool WorkerRegistry::RoutableWithBreaker(const WorkerState& w, BreakerState breaker) const {
  switch (breaker) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return NowNs() >= w.open_until_ns.load() && !w.half_open_probe_taken.load();
    case BreakerState::kHalfOpen:
      return !w.half_open_probe_taken.load();
  }
  return false;
}

bool WorkerRegistry::Admit(WorkerState& w) {
  int state = w.breaker.load();
  if (state == static_cast<int>(BreakerState::kClosed)) return true;
  if (state == static_cast<int>(BreakerState::kOpen)) {
    if (NowNs() < w.open_until_ns.load()) return false;
    if (w.breaker.compare_exchange_strong(state, static_cast<int>(BreakerState::kHalfOpen))) {
      impl_->CountTransition(BreakerState::kHalfOpen);
      KVMESH_LOG_INFO(kComponent, "breaker half-open", {"url", w.spec.url});
    } else if (state == static_cast<int>(BreakerState::kClosed)) {
      return true;  // closed meanwhile
    }
  }
  bool expected = false;
  return w.half_open_probe_taken.compare_exchange_strong(expected, true);
}

void WorkerRegistry::ReportSuccess(WorkerState& w) {
  w.consecutive_failures.store(0);
  int state = w.breaker.load();
  if (state == static_cast<int>(BreakerState::kClosed)) return;
  if (w.breaker.compare_exchange_strong(state, static_cast<int>(BreakerState::kClosed))) {
    w.half_open_probe_taken.store(false);
    impl_->CountTransition(BreakerState::kClosed);
    KVMESH_LOG_INFO(kComponent, "breaker closed", {"url", w.spec.url});
    impl_->UpdateGauges();
  }
}

void WorkerRegistry::ReportFailure(WorkerState& w) {
  uint32_t failures = w.consecutive_failures.fetch_add(1) + 1;
  int state = w.breaker.load();
  bool open = false;
  if (state == static_cast<int>(BreakerState::kHalfOpen)) {
    open = true;  // the trial failed
  } else if (state == static_cast<int>(BreakerState::kClosed) &&
             failures >= options_.breaker_failures) {
    open = true;
  }
  if (!open) return;
  w.open_until_ns.store(NowNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      options_.breaker_open)
                                      .count());
  if (w.breaker.compare_exchange_strong(state, static_cast<int>(BreakerState::kOpen))) {
    w.half_open_probe_taken.store(false);
    impl_->CountTransition(BreakerState::kOpen);
    KVMESH_LOG_WARN(kComponent, "breaker open", {"url", w.spec.url},
                    {"consecutive_failures", failures},
                    {"open_ms", static_cast<long long>(options_.breaker_open.count())});
    impl_->UpdateGauges();
  }
}

Status WorkerRegistry::Start() {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.stop_mu);
    if (impl.started) return FailedPreconditionError("worker registry already started");
    impl.started = true;
    impl.stopping = false;
  }
  auto probe_all = [this](http::HttpClient& client) {
    Impl& im = *impl_;
    auto t = im.table.load();
    for (const auto& w : *t) {
      if (w->removed.load()) continue;
      auto r = client.Get(w->spec.url + "/ready");
      const bool ok = r.ok() && r->status == 200;
      const bool was_ready = w->ready.exchange(ok);
      if (ok != was_ready) {
        KVMESH_LOG_INFO(kComponent, ok ? "worker ready" : "worker not ready", {"url", w->spec.url},
                        {"detail", r.ok() ? "HTTP " + std::to_string(r->status)
                                          : r.status().message()});
      }
      if (!ok && im.m.probe_failures) im.m.probe_failures->Inc();
      // Breaker: a probe is a request like any other. While open (and not yet due for half-open)
      // it only refreshes `ready`; once due it is the half-open trial if the slot is free.
      const BreakerState s = w->breaker_state();
      bool counts = s == BreakerState::kClosed;
      if (s != BreakerState::kClosed) counts = Admit(*w);
      if (counts) {
        if (ok) {
          ReportSuccess(*w);
        } else {
          ReportFailure(*w);
        }
      }
    }
    im.UpdateGauges();
  };
  {
    http::HttpClientOptions o;
    o.connect_timeout = o.read_timeout = options_.health_timeout;
    http::HttpClient client(o);
    probe_all(client);
  }
  // Tell the owner about the initial workers (the indexer starts following them), before the
  // file thread can report changes.
  if (options_.on_change) {
    std::lock_guard change(impl.change_mu);
    auto t = impl.table.load();
    options_.on_change(*t, {});
  }
  impl.health_thread = std::thread([this, probe_all] {
    http::HttpClientOptions o;
    o.connect_timeout = o.read_timeout = options_.health_timeout;
    http::HttpClient client(o);  // one client per thread
    while (impl_->WaitFor(options_.health_interval)) probe_all(client);
  });
  if (!options_.file.empty()) {
    impl.file_thread = std::thread([this] {
      Impl& im = *impl_;
      bool missing_logged = false;
      while (im.WaitFor(options_.file_poll_interval)) {
        auto content = ReadFile(options_.file);
        if (!content.ok()) {
          if (!missing_logged) {
            KVMESH_LOG_WARN(kComponent, "workers file unreadable; keeping the current workers",
                            {"error", content.status().message()});
            missing_logged = true;
          }
          continue;
        }
        missing_logged = false;
        if (*content == im.file_content) continue;
        im.file_content = *content;
        auto parsed = ParseWorkerFile(*content);
        if (!parsed.ok()) {
          KVMESH_LOG_ERROR(kComponent, "workers file does not parse; keeping the current workers",
                           {"file", options_.file}, {"error", parsed.status().message()});
          continue;
        }
        KVMESH_LOG_INFO(kComponent, "workers file changed", {"file", options_.file},
                        {"workers", parsed->size()});
        SetWorkers(std::move(*parsed));
      }
    });
  }
  return Status::Ok();
}

void WorkerRegistry::Stop() {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.stop_mu);
    impl.stopping = true;
  }
  impl.stop_cv.notify_all();
  if (impl.health_thread.joinable()) impl.health_thread.join();
  if (impl.file_thread.joinable()) impl.file_thread.join();
}

}  // namespace kvmesh::router
