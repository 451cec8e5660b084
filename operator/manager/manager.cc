#include "operator/manager/manager.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/log.h"
#include "common/metrics.h"
#include "operator/controller/desired_state.h"
#include "operator/controller/object_reader.h"
#include "operator/controller/reconciler.h"
#include "operator/kube/informer.h"
#include "operator/kube/kube_client.h"
#include "operator/kube/leader_election.h"
#include "operator/kube/workqueue.h"
#include "operator/planner/perf_profile.h"
#include "operator/planner/planner_loop.h"
#include "operator/planner/planner_metrics.h"

namespace kvmesh::op {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr char kComponent[] = "operator";

std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

std::string DefaultIdentity() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return EnvOr("POD_NAME", host[0] != '\0' ? host : "kvmesh-operator") + "-" +
         std::to_string(getpid());
}

// The graph key ("ns/name") a child object belongs to: its controller ownerReference of kind
// InferenceGraph, else the kvmesh.dev/graph label (pods are owned by ReplicaSets). "" = none.
std::string OwnerGraphKey(const json& obj) {
  const json& md = obj.value("metadata", json::object());
  const std::string ns = md.value("namespace", "");
  if (auto refs = md.find("ownerReferences"); refs != md.end() && refs->is_array()) {
    for (const json& r : *refs) {
      if (r.value("kind", "") == "InferenceGraph" && r.contains("name")) {
        return ns + "/" + r["name"].get<std::string>();
      }
    }
  }
  if (auto labels = md.find("labels"); labels != md.end() && labels->is_object()) {
    if (auto g = labels->find(controller::kGraphLabel); g != labels->end() && g->is_string()) {
      return ns + "/" + g->get<std::string>();
    }
  }
  return "";
}

struct Metrics {
  CounterFamily* reconciles = nullptr;
  HistogramFamily* duration = nullptr;
  GaugeFamily* queue_depth = nullptr;
  CounterFamily* watch_restarts = nullptr;
  CounterFamily* relists = nullptr;
  CounterFamily* api_requests = nullptr;
  CounterFamily* writes = nullptr;
  CounterFamily* stale_reads = nullptr;
  GaugeFamily* is_leader = nullptr;
  GaugeFamily* graphs = nullptr;

  static StatusOr<Metrics> Register(MetricsRegistry& r) {
    Metrics m;
    KVMESH_ASSIGN_OR_RETURN(m.reconciles, r.AddCounter("kvmesh_operator_reconcile_total",
                                                       "Reconciles by result (ok, requeue, error)",
                                                       {"result"}));
    KVMESH_ASSIGN_OR_RETURN(
        m.duration, r.AddHistogram("kvmesh_operator_reconcile_duration_seconds",
                                   "Time of one reconcile of one InferenceGraph", {},
                                   {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}));
    KVMESH_ASSIGN_OR_RETURN(m.queue_depth, r.AddGauge("kvmesh_operator_queue_depth",
                                                      "Keys ready in the work queue", {}));
    KVMESH_ASSIGN_OR_RETURN(m.watch_restarts,
                            r.AddCounter("kvmesh_operator_watch_restarts_total",
                                         "Watches started again after a stream ended or failed",
                                         {"resource"}));
    KVMESH_ASSIGN_OR_RETURN(m.relists, r.AddCounter("kvmesh_operator_relists_total",
                                                    "LISTs after the first (410 Gone recoveries)",
                                                    {"resource"}));
    KVMESH_ASSIGN_OR_RETURN(m.api_requests,
                            r.AddCounter("kvmesh_operator_api_requests_total",
                                         "Kubernetes API requests by kind (read, write)", {"kind"}));
    KVMESH_ASSIGN_OR_RETURN(m.writes, r.AddCounter("kvmesh_operator_writes_total",
                                                   "Writes by the reconciler by what they wrote",
                                                   {"what"}));
    KVMESH_ASSIGN_OR_RETURN(
        m.stale_reads,
        r.AddCounter("kvmesh_operator_stale_cache_reads_total",
                     "Cached reads the API server contradicted when confirming a write (no write made)",
                     {}));
    KVMESH_ASSIGN_OR_RETURN(m.is_leader, r.AddGauge("kvmesh_operator_is_leader",
                                                    "1 while this replica runs the controllers", {}));
    KVMESH_ASSIGN_OR_RETURN(m.graphs, r.AddGauge("kvmesh_operator_graphs",
                                                 "InferenceGraphs in the informer cache", {}));
    return m;
  }
};

// Adds to `c` what `now` grew since `last` (sources are cumulative numbers).
void AddDelta(Counter& c, uint64_t now, uint64_t& last) {
  if (now > last) c.Inc(static_cast<double>(now - last));
  last = now;
}

// The controllers of one leadership term: informers, queue, workers. Built at Start, gone at Stop.
class Controllers {
 public:
  Controllers(kube::KubeClient* client, const OperatorConfig& config, Metrics* metrics,
              std::shared_ptr<const planner::PerfProfile> profile, const planner::PlannerMetrics* planner_metrics)
      : config_(config), metrics_(metrics), queue_(kube::WorkQueueOptions{}) {
    kube::InformerOptions graphs;
    graphs.resource = kube::InferenceGraphs();
    graphs.ns = config.watch_namespace;
    graph_informer_ = std::make_unique<kube::Informer>(client, graphs);
    graph_informer_->AddHandlers(
        {[this](const json& o) { Enqueue(kube::Informer::KeyOf(o)); },
         [this](const json&, const json& o) { Enqueue(kube::Informer::KeyOf(o)); },
         [this](const json& o) { Enqueue(kube::Informer::KeyOf(o)); }});
    const std::string selector = std::string("app.kubernetes.io/managed-by=") + controller::kFieldManager;
    for (const kube::ResourceRef& r : {kube::Deployments(), kube::Pods(), kube::Services(),
                                       kube::ConfigMaps(), kube::PodDisruptionBudgets()}) {
      kube::InformerOptions o;
      o.resource = r;
      o.ns = config.watch_namespace;
      o.label_selector = selector;
      auto inf = std::make_unique<kube::Informer>(client, o);
      inf->AddIndex(controller::kGraphIndex, controller::GraphIndexValues);
      inf->AddHandlers({[this](const json& c) { EnqueueOwner(c); },
                        [this](const json& old_c, const json& c) {
                          EnqueueOwner(old_c);
                          EnqueueOwner(c);
                        },
                        [this](const json& c) { EnqueueOwner(c); }});
      child_informers_.push_back(std::move(inf));
    }
    // The reconciler reads the graph and its children from these caches (writes go to the API
    // server; see reconciler.h on stale reads).
    reader_ = std::make_unique<controller::InformerObjectReader>(*client);
    reader_->Add(kube::InferenceGraphs(), graph_informer_.get());
    const kube::ResourceRef children[] = {kube::Deployments(), kube::Pods(), kube::Services(),
                                          kube::ConfigMaps(), kube::PodDisruptionBudgets()};
    for (size_t i = 0; i < child_informers_.size(); ++i) reader_->Add(children[i], child_informers_[i].get());

    controller::ReconcilerOptions ro;
    ro.settings = config.pods.s;
    ro.drain_timeout = std::chrono::duration_cast<std::chrono::seconds>(config.drain_timeout);
    ro.degraded_grace = std::chrono::duration_cast<std::chrono::seconds>(config.degraded_grace);
    ro.instance = EnvOr("POD_NAME", "kvmesh-operator");

    // The SLA planner: its decisions are the desired replicas of the pools it owns.
    planner::PlannerLoopOptions po;
    po.interval_s = std::chrono::duration<double>(config.planner.interval).count();
    po.prometheus_url = config.planner.prometheus_url;
    po.prometheus_window = config.planner.prometheus_window;
    po.selector = config.planner.selector;
    po.profile = std::move(profile);
    po.scale_down_window_s = std::chrono::duration<double>(config.planner.scale_down_window).count();
    auto loop = planner::PlannerLoop::Create(*client, po, planner_metrics);
    if (loop.ok()) {
      planner_ = std::move(*loop);
      planner::PlannerLoop* p = planner_.get();
      ro.desired_replicas = [p](const controller::GraphMeta& m, const std::string& pool) {
        return p->DesiredReplicas(m.namespace_ + "/" + m.name, pool);
      };
    } else {
      KVMESH_LOG_ERROR(kComponent, "planner off", {"error", loop.status().ToString()});
    }
    reconciler_ = std::make_unique<controller::Reconciler>(*client, *reader_, ro);
  }

  Status Start() {
    KVMESH_RETURN_IF_ERROR(graph_informer_->Start());
    for (auto& inf : child_informers_) KVMESH_RETURN_IF_ERROR(inf->Start());
    for (uint32_t i = 0; i < std::max<uint32_t>(1, config_.workers); ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
    resync_ = std::thread([this] { ResyncLoop(); });
    if (planner_) planner_thread_ = std::thread([this] { PlannerThread(); });
    return Status::Ok();
  }

  // Stops taking keys; in-flight reconciles finish; informers stop.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    queue_.ShutDown();
    for (auto& t : workers_) t.join();
    workers_.clear();
    if (resync_.joinable()) resync_.join();
    if (planner_thread_.joinable()) planner_thread_.join();
    graph_informer_->Stop();
    for (auto& inf : child_informers_) inf->Stop();
  }

  bool Synced() const {
    if (!graph_informer_->HasSynced()) return false;
    for (const auto& inf : child_informers_) {
      if (!inf->HasSynced()) return false;
    }
    return true;
  }

  // Exports cumulative numbers as metrics (called before each /metrics render).
  void SyncMetrics() {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    metrics_->queue_depth->WithLabels({}).Set(static_cast<double>(queue_.Len()));
    metrics_->graphs->WithLabels({}).Set(static_cast<double>(graph_informer_->ListKeys().size()));
    auto informer_metrics = [&](const kube::Informer& inf, const std::string& name) {
      AddDelta(metrics_->watch_restarts->WithLabels({name}), inf.watch_restarts(),
               last_[name + "/w"]);
      AddDelta(metrics_->relists->WithLabels({name}), inf.relists(), last_[name + "/r"]);
    };
    informer_metrics(*graph_informer_, "inferencegraphs");
    const char* names[] = {"deployments", "pods", "services", "configmaps", "poddisruptionbudgets"};
    for (size_t i = 0; i < child_informers_.size(); ++i) informer_metrics(*child_informers_[i], names[i]);
    const controller::ReconcilerStats s = reconciler_->stats();
    AddDelta(metrics_->writes->WithLabels({"apply"}), s.applies, last_["apply"]);
    AddDelta(metrics_->writes->WithLabels({"delete"}), s.deletes, last_["delete"]);
    AddDelta(metrics_->writes->WithLabels({"status"}), s.status_updates, last_["status"]);
    AddDelta(metrics_->writes->WithLabels({"finalizer"}), s.finalizer_updates, last_["finalizer"]);
    AddDelta(metrics_->writes->WithLabels({"event"}), s.events, last_["event"]);
    AddDelta(metrics_->stale_reads->WithLabels({}), s.stale_reads, last_["stale"]);
  }

 private:
  void Enqueue(const std::string& key) {
    if (!key.empty()) queue_.Add(key);
  }
  void EnqueueOwner(const json& child) { Enqueue(OwnerGraphKey(child)); }

  void WorkerLoop() {
    // Reconciles read the caches: wait until every informer has listed once (controller-runtime's
    // WaitForCacheSync), so a first pass does not take an unsynced cache for "nothing exists".
    while (!Synced()) {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stopping_; })) return;
    }
    for (;;) {
      kube::WorkQueue::Item item = queue_.Get();
      if (item.shutdown) return;
      const auto start = Clock::now();
      controller::ReconcileResult r = reconciler_->Reconcile(item.key);
      metrics_->duration->WithLabels({}).Observe(
          std::chrono::duration<double>(Clock::now() - start).count());
      if (!r.ok) {
        metrics_->reconciles->WithLabels({"error"}).Inc();
        KVMESH_LOG_WARN(kComponent, "reconcile failed; retrying with backoff", {"graph", item.key},
                        {"error", r.error.ToString()}, {"retries", queue_.NumRequeues(item.key)});
        queue_.AddRateLimited(item.key);
      } else if (r.requeue_after.count() > 0) {
        metrics_->reconciles->WithLabels({"requeue"}).Inc();
        queue_.Forget(item.key);
        queue_.AddAfter(item.key, r.requeue_after);
      } else {
        metrics_->reconciles->WithLabels({"ok"}).Inc();
        queue_.Forget(item.key);
      }
      queue_.Done(item.key);
    }
  }

  void ResyncLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (cv_.wait_for(lock, config_.resync_period, [this] { return stopping_; })) return;
      lock.unlock();
      for (const std::string& key : graph_informer_->ListKeys()) Enqueue(key);
      lock.lock();
    }
  }

  // Steps the planner over the cached graphs about once a second (each graph decides once per
  // planner.interval); a graph whose desired replicas changed is reconciled at once.
  void PlannerThread() {
    const auto tick = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000), config_.planner.interval);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (cv_.wait_for(lock, tick, [this] { return stopping_; })) return;
      lock.unlock();
      if (Synced()) {
        for (const std::string& key : planner_->Step(graph_informer_->List())) Enqueue(key);
      }
      lock.lock();
    }
  }

  const OperatorConfig& config_;
  Metrics* const metrics_;
  kube::WorkQueue queue_;
  std::unique_ptr<kube::Informer> graph_informer_;
  std::vector<std::unique_ptr<kube::Informer>> child_informers_;
  std::unique_ptr<controller::InformerObjectReader> reader_;  // over the informers above
  std::unique_ptr<planner::PlannerLoop> planner_;            // null: planner options invalid
  std::unique_ptr<controller::Reconciler> reconciler_;        // reads through reader_
  std::vector<std::thread> workers_;
  std::thread resync_;
  std::thread planner_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::mutex metrics_mu_;
  std::map<std::string, uint64_t> last_;  // guarded by metrics_mu_
};

}  // namespace

Status OperatorConfig::Validate() const {
  if (workers == 0) return InvalidArgumentError("workers: must be >= 1");
  if (resync_period.count() <= 0) return InvalidArgumentError("resync_period: must be > 0");
  if (api_timeout.count() <= 0) return InvalidArgumentError("api_timeout: must be > 0");
  if (planner.interval.count() <= 0) return InvalidArgumentError("planner.interval: must be > 0");
  if (planner.scale_down_window.count() < 0) return InvalidArgumentError("planner.scale_down_window: must be >= 0");
  const auto& le = leader_election;
  if (le.enabled && !(le.lease_duration > le.renew_deadline && le.renew_deadline > le.retry_period &&
                      le.retry_period.count() > 0)) {
    return InvalidArgumentError(
        "leader_election: need lease_duration > renew_deadline > retry_period > 0");
  }
  if (pods.s.agent_port <= 0 || pods.s.agent_port > 65535 || pods.s.router_port <= 0 ||
      pods.s.router_port > 65535) {
    return InvalidArgumentError("pods.agent_port / pods.router_port: must be 1..65535");
  }
  return Status::Ok();
}

struct Manager::Impl {
  OperatorConfig config;
  std::unique_ptr<kube::KubeClient> client;
  std::unique_ptr<http::HttpServer> http;
  std::unique_ptr<kube::LeaderElector> elector;
  Metrics metrics;
  std::shared_ptr<const planner::PerfProfile> planner_profile;  // null: --planner.profile unset
  planner::PlannerMetrics planner_metrics;

  // Leadership changes are applied by the control thread (elector callbacks must not block).
  std::mutex mu;
  std::condition_variable cv;
  bool want_running = false;  // guarded by mu
  bool shutting_down = false;  // guarded by mu
  std::thread control;
  std::mutex controllers_mu;  // guards controllers
  std::unique_ptr<Controllers> controllers;
  std::atomic<bool> running{false};
  uint64_t last_reads = 0, last_writes = 0;  // guarded by controllers_mu

  void ControlLoop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return shutting_down || want_running != running.load(); });
      const bool stop_all = shutting_down;
      const bool want = want_running && !shutting_down;
      lock.unlock();
      if (want && !running.load()) {
        auto c = std::make_unique<Controllers>(client.get(), config, &metrics, planner_profile, &planner_metrics);
        Status s = c->Start();
        if (!s.ok()) {
          KVMESH_LOG_ERROR(kComponent, "cannot start controllers", {"error", s.ToString()});
          c->Stop();
        } else {
          std::lock_guard<std::mutex> g(controllers_mu);
          controllers = std::move(c);
          running = true;
          metrics.is_leader->WithLabels({}).Set(1);
          KVMESH_LOG_INFO(kComponent, "controllers started");
        }
      } else if (!want && running.load()) {
        StopControllers();
      }
      if (stop_all) return;
      lock.lock();
    }
  }

  void StopControllers() {
    std::unique_ptr<Controllers> c;
    {
      std::lock_guard<std::mutex> g(controllers_mu);
      c = std::move(controllers);
      running = false;
    }
    metrics.is_leader->WithLabels({}).Set(0);
    if (c) c->Stop();
    KVMESH_LOG_INFO(kComponent, "controllers stopped");
  }

  void SetWantRunning(bool v) {
    {
      std::lock_guard<std::mutex> lock(mu);
      want_running = v;
    }
    cv.notify_all();
  }

  http::HttpResponse RenderMetrics() {
    {
      std::lock_guard<std::mutex> g(controllers_mu);
      if (controllers) controllers->SyncMetrics();
      AddDelta(metrics.api_requests->WithLabels({"read"}), client->reads(), last_reads);
      AddDelta(metrics.api_requests->WithLabels({"write"}), client->writes(), last_writes);
    }
    http::HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = DefaultMetricsRegistry().Render();
    return r;
  }

  // Ready: a standby replica is ready (it serves metrics and campaigns); the leader once its
  // informers have synced.
  http::HttpResponse Ready() {
    std::lock_guard<std::mutex> g(controllers_mu);
    const bool leading = controllers != nullptr;
    const bool synced = leading && controllers->Synced();
    json body = {{"leader", leading}, {"synced", synced}};
    const bool standby = config.leader_election.enabled && !leading;
    return http::JsonResponse(standby || synced ? 200 : 503, body.dump());
  }
};

Manager::Manager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Manager::~Manager() { Shutdown(); }

StatusOr<std::unique_ptr<Manager>> Manager::Create(const OperatorConfig& config) {
  KVMESH_RETURN_IF_ERROR(config.Validate());
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  KVMESH_ASSIGN_OR_RETURN(kube::KubeConfig kc, kube::ResolveKubeConfig(config.kubeconfig, config.context));
  kube::KubeClientOptions co;
  co.timeout = config.api_timeout;
  KVMESH_ASSIGN_OR_RETURN(impl->client, kube::CreateKubeClient(kc, co));
  KVMESH_ASSIGN_OR_RETURN(impl->metrics, Metrics::Register(DefaultMetricsRegistry()));
  KVMESH_ASSIGN_OR_RETURN(impl->planner_metrics, planner::PlannerMetrics::Register(DefaultMetricsRegistry()));
  if (!config.planner.profile.empty()) {
    auto table = planner::TablePerfProfile::FromFile(config.planner.profile);
    if (!table.ok()) return InvalidArgumentError("planner.profile: " + table.status().message());
    impl->planner_profile = std::make_shared<const planner::TablePerfProfile>(std::move(*table));
  }
  http::HttpServerOptions ho;
  ho.host = config.host;
  ho.port = static_cast<uint16_t>(config.port);
  impl->http = std::make_unique<http::HttpServer>(ho);
  Impl* p = impl.get();
  impl->http->Route("GET", "/healthz", [](const http::HttpRequest&) {
    return http::JsonResponse(200, R"({"status":"ok"})");
  });
  impl->http->Route("GET", "/readyz", [p](const http::HttpRequest&) { return p->Ready(); });
  impl->http->Route("GET", "/metrics", [p](const http::HttpRequest&) { return p->RenderMetrics(); });
  if (config.leader_election.enabled) {
    kube::LeaderElectionConfig le;
    const auto& c = config.leader_election;
    le.lease_namespace = c.lease_namespace.empty() ? EnvOr("POD_NAMESPACE", "default") : c.lease_namespace;
    le.lease_name = c.lease_name;
    le.identity = c.identity.empty() ? DefaultIdentity() : c.identity;
    le.lease_duration = c.lease_duration;
    le.renew_deadline = c.renew_deadline;
    le.retry_period = c.retry_period;
    le.on_started_leading = [p] {
      KVMESH_LOG_INFO(kComponent, "became leader");
      p->SetWantRunning(true);
    };
    le.on_stopped_leading = [p] {
      KVMESH_LOG_WARN(kComponent, "lost leadership; stopping controllers");
      p->SetWantRunning(false);
    };
    le.on_new_leader = [](const std::string& id) {
      KVMESH_LOG_INFO(kComponent, "leader observed", {"identity", id});
    };
    impl->elector = std::make_unique<kube::LeaderElector>(impl->client.get(), le);
  }
  return std::unique_ptr<Manager>(new Manager(std::move(impl)));
}

uint16_t Manager::port() const { return impl_->http ? impl_->http->port() : 0; }

Status Manager::Start() {
  Impl& m = *impl_;
  KVMESH_RETURN_IF_ERROR(m.http->Start());
  m.control = std::thread([&m] { m.ControlLoop(); });
  if (m.elector) {
    KVMESH_RETURN_IF_ERROR(m.elector->Start());
  } else {
    m.SetWantRunning(true);
  }
  if (!m.config.ready_file.empty()) {
    json ready = {{"http", "http://" + (m.config.host == "0.0.0.0" ? std::string("127.0.0.1")
                                                                   : m.config.host) +
                               ":" + std::to_string(m.http->port())},
                  {"port", m.http->port()},
                  {"pid", getpid()}};
    KVMESH_RETURN_IF_ERROR(WriteFileAtomic(m.config.ready_file, ready.dump() + "\n"));
  }
  KVMESH_LOG_INFO(kComponent, "serving", {"port", m.http->port()},
                  {"leader_election", m.config.leader_election.enabled});
  return Status::Ok();
}

void Manager::Shutdown() {
  if (!impl_) return;
  Impl& m = *impl_;
  // Controllers stop first (in-flight reconciles finish), then the lease is released, so a
  // successor never writes while this replica still does.
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.shutting_down = true;
  }
  m.cv.notify_all();
  if (m.control.joinable()) m.control.join();
  if (m.running.load()) m.StopControllers();
  if (m.elector) m.elector->Stop();
  if (m.http) m.http->Stop(std::chrono::milliseconds(1000));
}

}  // namespace kvmesh::op
