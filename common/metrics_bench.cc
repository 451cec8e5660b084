// Micro-benchmarks for the metrics registry: the update hot paths and a /metrics scrape.
//   ninja -C build kvmesh_common_metrics_bench && build/common/kvmesh_common_metrics_bench
#include <string>

#include <benchmark/benchmark.h>

#include "common/metrics.h"

namespace kvmesh {
namespace {

MetricsRegistry& BenchRegistry() {
  static MetricsRegistry* const reg = new MetricsRegistry();
  return *reg;
}

Counter& SharedCounter() {
  static Counter& c =
      (*BenchRegistry().AddCounter("kvmesh_bench_ops_total", "Ops.", {"kind"}))->WithLabels({"a"});
  return c;
}

// One counter; with Threads(2) both threads hit the same cache line (worst case contention).
void BM_CounterInc(benchmark::State& state) {
  Counter& c = SharedCounter();
  for (auto _ : state) c.Inc();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2)->UseRealTime();

// Fractional increments take the compare-and-swap path on a double.
void BM_CounterIncFractional(benchmark::State& state) {
  Counter& c = SharedCounter();
  for (auto _ : state) c.Inc(0.5);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterIncFractional)->Threads(1)->Threads(2)->UseRealTime();

// Each thread its own child (children are cache-line aligned, so no false sharing).
void BM_CounterIncPerThreadChild(benchmark::State& state) {
  CounterFamily* fam = *BenchRegistry().AddCounter("kvmesh_bench_ops_total", "Ops.", {"kind"});
  Counter& c = fam->WithLabels({"thread" + std::to_string(state.thread_index())});
  for (auto _ : state) c.Inc();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterIncPerThreadChild)->Threads(1)->Threads(2)->UseRealTime();

// Looking the child up by label values on every update (what hot paths should avoid).
void BM_CounterWithLabelsLookupAndInc(benchmark::State& state) {
  CounterFamily* fam = *BenchRegistry().AddCounter("kvmesh_bench_ops_total", "Ops.", {"kind"});
  for (auto _ : state) fam->WithLabels({"a"}).Inc();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterWithLabelsLookupAndInc);

void BM_HistogramObserve(benchmark::State& state) {
  static Histogram& h = (*BenchRegistry().AddHistogram("kvmesh_bench_latency_seconds", "Latency.",
                                                       {}, DefaultLatencyBuckets()))
                            ->WithLabels({});
  double v = 0.0001;
  for (auto _ : state) {
    h.Observe(v);
    v = v > 50 ? 0.0001 : v * 1.7;  // walk across the buckets
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2)->UseRealTime();

// A scrape of ~1000 series: 400 counters, 400 gauges, 10 histograms x 17 lines, plus headers.
void BM_Render1000Series(benchmark::State& state) {
  MetricsRegistry reg;
  CounterFamily* c = *reg.AddCounter("kvmesh_bench_requests_total", "Requests.", {"worker", "code"});
  GaugeFamily* g = *reg.AddGauge("kvmesh_bench_blocks_free", "Free blocks.", {"worker", "tier"});
  HistogramFamily* h = *reg.AddHistogram("kvmesh_bench_ttft_seconds", "TTFT.", {"worker"},
                                         DefaultLatencyBuckets());
  for (int w = 0; w < 100; ++w) {
    const std::string worker = "worker-" + std::to_string(w);
    for (const char* code : {"200", "400", "429", "503"}) c->WithLabels({worker, code}).Inc(w);
    for (const char* tier : {"GPU", "CPU", "DISK", "REMOTE"}) g->WithLabels({worker, tier}).Set(w);
    if (w < 10) h->WithLabels({worker}).Observe(0.01 * w);
  }
  size_t series = 0;
  for (const char ch : reg.Render()) series += ch == '\n';
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = reg.Render();
    bytes += text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["lines"] = static_cast<double>(series);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_Render1000Series)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvmesh

BENCHMARK_MAIN();
