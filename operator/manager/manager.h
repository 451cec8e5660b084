// Manager: the running kvmesh-operator. It wires the parts of operator/kube and
// operator/controller into a controller process:
//   - a KubeClient from the kubeconfig / in-cluster config;
//   - /metrics, /healthz, /readyz on its own HTTP server (always, leader or not);
//   - optional leader election (Lease); while this replica leads it runs the controllers, and
//     when it loses the lease it stops them (reconciles stop being started at once; see
//     docs/operator.md for the window of an in-flight reconcile) and becomes a candidate again;
//   - controllers: informers on InferenceGraphs and on the children the operator labels
//     (Deployments, Pods, Services, ConfigMaps, PodDisruptionBudgets); every change enqueues the
//     owning graph's key in a rate-limited WorkQueue; `workers` threads run Reconciler::Reconcile
//     (one key never on two threads) once every informer has synced; errors requeue with per-key
//     backoff, requeue_after with a delay; every graph is enqueued again every resync_period
//     (level-based safety net). The reconciler reads the graph and its children from these
//     informer caches (controller::InformerObjectReader, children indexed by graph label) and
//     writes to the API server, so a reconcile of an unchanged graph makes no API request.
// Thread-safety: Start/Shutdown from one thread (the service runner's main thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/http_server.h"
#include "common/status.h"
#include "operator/manager/operator_config.h"

namespace kvmesh::op {

class Manager {
 public:
  static StatusOr<std::unique_ptr<Manager>> Create(const OperatorConfig& config);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Serves /metrics /healthz /readyz, then leads (or campaigns) and runs the controllers.
  Status Start();
  // Stops controllers (in-flight reconciles finish), releases the lease, stops serving.
  void Shutdown();

  uint16_t port() const;

 private:
  struct Impl;
  explicit Manager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::op
