// Checker for tests/planner_prometheus_test.sh: reads the load of kvmesh_test_planner_exporter
// back through the planner's two metrics sources and checks it against the exporter's known
// pattern (20 req/s, ISL 3000, OSL 150, TTFT p90 0.475 s, ITL p90 0.038 s):
//   1. PrometheusSource against the real Prometheus that scrapes the exporter;
//   2. ScrapeSource straight against the exporter's /metrics (two scrapes 2 s apart);
//   3. error paths: a malformed PromQL query (Prometheus rejects it) and a Prometheus that is down;
//   4. one Planner decision on the Prometheus sample, with a small table profile.
// Usage: kvmesh_test_planner_source_check --prometheus URL --scrape URL --dead-url URL
// Exit 0 if every check passed; prints one line per check.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "operator/planner/metrics_source.h"
#include "operator/planner/planner.h"

namespace {

using kvmesh::planner::LoadSample;

int failures = 0;

void Expect(const char* what, double got, double want, double rel_tol) {
  const bool ok = std::isfinite(got) && std::fabs(got - want) <= rel_tol * std::fabs(want);
  std::printf("%s %-32s got %.6g want %.6g (+-%.0f%%)\n", ok ? "ok  " : "FAIL", what, got, want, rel_tol * 100);
  if (!ok) ++failures;
}

void ExpectTrue(const char* what, bool cond, const std::string& detail) {
  std::printf("%s %-32s %s\n", cond ? "ok  " : "FAIL", what, detail.c_str());
  if (!cond) ++failures;
}

void CheckLoad(const char* source, const LoadSample& s) {
  std::string p = source;
  Expect((p + " request_rate").c_str(), s.request_rate, 20, 0.15);
  Expect((p + " mean_isl").c_str(), s.mean_isl, 3000, 0.05);
  Expect((p + " mean_osl").c_str(), s.mean_osl, 150, 0.05);
  Expect((p + " ttft_p90_s").c_str(), s.ttft_p90_s, 0.475, 0.01);
  Expect((p + " itl_p90_s").c_str(), s.itl_p90_s, 0.038, 0.01);
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string prom, scrape, dead;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--prometheus") == 0) prom = argv[i + 1];
    else if (std::strcmp(argv[i], "--scrape") == 0) scrape = argv[i + 1];
    else if (std::strcmp(argv[i], "--dead-url") == 0) dead = argv[i + 1];
  }
  if (prom.empty() || scrape.empty() || dead.empty()) {
    std::fprintf(stderr, "usage: %s --prometheus URL --scrape URL --dead-url URL\n", argv[0]);
    return 2;
  }

  // 1. Prometheus. The script waited until the exporter had been scraped for a while; the window is
  // short so the test is quick.
  kvmesh::planner::PrometheusSource::Options po;
  po.url = prom;
  po.window = "10s";
  po.selector = "namespace=\"test\"";  // the target label the script's Prometheus config adds
  kvmesh::planner::PrometheusSource source(po);
  std::printf("query: %s\n", source.RateQuery().c_str());
  kvmesh::StatusOr<LoadSample> ps = source.Sample(Now());
  ExpectTrue("prometheus sample ok", ps.ok(), ps.ok() ? "" : ps.status().ToString());
  if (ps.ok()) CheckLoad("prometheus", *ps);

  // 2. Direct scrape.
  kvmesh::planner::ScrapeSource::Options so;
  so.targets = {scrape};
  kvmesh::planner::ScrapeSource scraper(so);
  kvmesh::StatusOr<LoadSample> first = scraper.Sample(Now());
  ExpectTrue("scrape baseline", !first.ok() && first.status().code() == kvmesh::StatusCode::kFailedPrecondition,
             first.status().ToString());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  kvmesh::StatusOr<LoadSample> ss = scraper.Sample(Now());
  ExpectTrue("scrape sample ok", ss.ok(), ss.ok() ? "" : ss.status().ToString());
  if (ss.ok()) CheckLoad("scrape", *ss);

  // 3. Errors.
  kvmesh::StatusOr<std::optional<double>> bad = source.Query("sum(rate(");
  ExpectTrue("bad query rejected", !bad.ok() && bad.status().code() == kvmesh::StatusCode::kInvalidArgument,
             bad.status().ToString());
  po.url = dead;
  po.timeout = std::chrono::milliseconds(1000);
  kvmesh::planner::PrometheusSource down(po);
  kvmesh::StatusOr<LoadSample> ds = down.Sample(Now());
  ExpectTrue("prometheus down -> unavailable", !ds.ok() && ds.status().code() == kvmesh::StatusCode::kUnavailable,
             ds.status().ToString());

  // 4. A decision on the observed load: 20 req/s x 3000 tokens = 60k prompt tokens/s; a prefill
  // replica does 24k tok/s at TTFT 0.3 s -> 2.5 -> 3 replicas; decode: 20 x 150 = 3000 tok/s and a
  // replica does 6000 tok/s at 20 ms ITL -> 0.5 -> 1 replica. (Both stay on the same whole number
  // of replicas for any measured rate within the 15% checked above.)
  if (ps.ok()) {
    auto profile = kvmesh::planner::TablePerfProfile::FromJson(R"({
      "prefill": [{"isl": 3000, "prefill_tokens_per_s": 10000, "ttft_s": 0.2},
                  {"isl": 3000, "prefill_tokens_per_s": 24000, "ttft_s": 0.3},
                  {"isl": 3000, "prefill_tokens_per_s": 40000, "ttft_s": 2.0}],
      "decode": [{"concurrency": 8, "context": 3075, "itl_s": 0.01, "tokens_per_s": 800},
                 {"concurrency": 120, "context": 3075, "itl_s": 0.02, "tokens_per_s": 6000},
                 {"concurrency": 200, "context": 3075, "itl_s": 0.1, "tokens_per_s": 2000}]})");
    ExpectTrue("profile parsed", profile.ok(), profile.status().ToString());
    kvmesh::planner::PlannerConfig c;
    c.ttft_target_s = 0.3;
    c.itl_target_s = 0.02;
    c.prefill = {true, 1, 8};
    c.decode = {true, 1, 8};
    auto planner = kvmesh::planner::Planner::Create(
        c, std::make_shared<kvmesh::planner::TablePerfProfile>(std::move(profile).value()));
    ExpectTrue("planner created", planner.ok(), planner.status().ToString());
    LoadSample s = *ps;
    s.prefill_replicas = 1;
    s.decode_replicas = 1;
    s.ttft_p90_s = kvmesh::planner::kUnknown;  // keep the corrections at 1 for a checkable answer
    s.itl_p90_s = kvmesh::planner::kUnknown;
    kvmesh::planner::Decision d = (*planner)->Decide(s.time_s, s);
    std::printf("prefill: %s\ndecode: %s\n", d.prefill.reason.c_str(), d.decode.reason.c_str());
    ExpectTrue("prefill scales 1 -> 3", d.prefill.replicas == 3 && d.prefill.direction == "up", d.prefill.reason);
    ExpectTrue("decode holds at 1", d.decode.replicas == 1, d.decode.reason);
  }

  std::printf(failures == 0 ? "PASS\n" : "FAIL: %d check(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
