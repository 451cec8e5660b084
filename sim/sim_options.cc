// The options of the `kvmesh sim` subcommands (sim/sim_options.h).
#include "sim/sim_options.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "sim/cli_util.h"

namespace kvmesh::sim {
namespace {

constexpr std::string_view kSimEnv = "KVMESH_SIM";
constexpr std::string_view kSweepEnv = "KVMESH_SIM_SWEEP";
constexpr std::string_view kCalibrateEnv = "KVMESH_SIM_CALIBRATE";
constexpr std::string_view kPlacementEnv = "KVMESH_SIM_PLACEMENT";
constexpr std::string_view kPlannerEnv = "KVMESH_SIM_PLANNER";

// config.h's loader over `args` (which runs Flags::Validate()), with positional arguments refused;
// then `build` makes the options, or --help gives default options with help = true.
template <class Flags, class Options>
StatusOr<Options> ParseWith(std::span<const std::string> args, const EnvLookup& env,
                            std::string_view env_prefix, StatusOr<Options> (*build)(const Flags&)) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  KVMESH_ASSIGN_OR_RETURN(LoadedConfig<Flags> loaded, LoadConfigWithArgs<Flags>(argv, env, env_prefix));
  if (loaded.help_requested) {
    Options help;
    help.help = true;
    return help;
  }
  if (!loaded.positional.empty()) {
    return InvalidArgumentError("unexpected argument '" + loaded.positional.front() + "'");
  }
  return build(loaded.config);
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

template <typename T>
std::vector<std::string> Texts(const std::vector<T>& values) {
  std::vector<std::string> out;
  for (T v : values) out.push_back(Number(static_cast<double>(v)));
  return out;
}

Status AtLeast(std::string_view key, double value, double lo) {
  if (std::isfinite(value) && value >= lo) return Status::Ok();
  return InvalidArgumentError(FlagName(key) + ": must be a finite number >= " + Number(lo) + ", got " +
                              Number(value));
}

Status InUnitInterval(std::string_view key, double value, bool zero_ok) {
  if (value <= 1 && (zero_ok ? value >= 0 : value > 0)) return Status::Ok();
  return InvalidArgumentError(FlagName(key) + ": must be in " + (zero_ok ? "[0, 1]" : "(0, 1]") +
                              ", got " + Number(value));
}

Status KnownLink(const std::string& link) {
  if (auto l = LinkByName(link); !l.ok()) return InvalidArgumentError("--link: " + l.status().message());
  return Status::Ok();
}

// "A:B:GBIT:MS" -> a link between the clusters of regions A and B.
StatusOr<placement::Link> ParseLink(const std::string& item) {
  const auto f = SplitList(item, ':');
  if (f.size() != 4 || f[0].empty() || f[1].empty()) {
    return InvalidArgumentError("--link: '" + item + "' is not A:B:GBIT:MS");
  }
  KVMESH_ASSIGN_OR_RETURN(double gbit, ParseFlagNumber<double>("--link " + item + ": GBIT", f[2]));
  KVMESH_ASSIGN_OR_RETURN(double ms, ParseFlagNumber<double>("--link " + item + ": MS", f[3]));
  return placement::Link{std::string(f[0]) + "-1", std::string(f[1]) + "-1", gbit, ms};
}

// "NAME:GPUS" -> one cluster NAME-1 in region NAME.
StatusOr<placement::Cluster> ParseRegion(const std::string& item) {
  const auto f = SplitList(item, ':');
  if (f.size() != 2 || f[0].empty()) return InvalidArgumentError("--regions: '" + item + "' is not NAME:GPUS");
  KVMESH_ASSIGN_OR_RETURN(uint32_t gpus, ParseFlagNumber<uint32_t>("--regions " + item + ": GPUS", f[1]));
  if (gpus > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return InvalidArgumentError("--regions: '" + item + "': too many GPUs");
  }
  return placement::Cluster{std::string(f[0]) + "-1", std::string(f[0]), static_cast<int32_t>(gpus), true};
}

std::vector<std::string> RegionTexts(const PlacementScenario& s) {
  std::vector<std::string> out;
  for (const placement::Cluster& c : s.clusters) out.push_back(c.region + ":" + std::to_string(c.gpu_capacity));
  return out;
}

std::string Usage(std::string_view intro, const std::string& flags_help) {
  return std::string(intro) + "\n" + flags_help +
         "Exit status: 0 ok, 1 runtime failure, 2 usage error (the message names the flag).\n";
}

}  // namespace

std::string FlagName(std::string_view key) {
  std::string out = "--";
  for (char c : key) out += c == '_' ? '-' : c;
  return out;
}

// ---------------------------------------------------------------- shared groups

Status PerfConstantFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(AtLeast("step_overhead_ms", step_overhead_ms, 0));
  KVMESH_RETURN_IF_ERROR(AtLeast("allreduce_latency_us", allreduce_latency_us, 0));
  KVMESH_RETURN_IF_ERROR(AtLeast("eager_launch_us", eager_launch_us, 0));
  KVMESH_RETURN_IF_ERROR(InUnitInterval("prefill_mfu", constants.prefill_mfu, false));
  return InUnitInterval("decode_hbm_efficiency", constants.decode_hbm_efficiency, false);
}

PerfConstants PerfConstantFlags::Get() const {
  PerfConstants c = constants;
  c.step_overhead_s = step_overhead_ms / 1e3;
  c.allreduce_latency_s = allreduce_latency_us / 1e6;
  c.eager_launch_s_per_layer = eager_launch_us / 1e6;
  return c;
}

Status ModelFlags::Validate() const {
  if (auto g = GpuByName(pool.gpu); !g.ok()) return InvalidArgumentError("--gpu: " + g.status().message());
  if (auto m = ModelByName(pool.model); !m.ok()) return InvalidArgumentError("--model: " + m.status().message());
  return perf.Validate();
}

PoolConfig ModelFlags::Pool() const {
  PoolConfig p = pool;
  p.constants = perf.Get();
  return p;
}

Status SyntheticFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(AtLeast(names.num_requests, static_cast<double>(options.num_requests), 1));
  KVMESH_RETURN_IF_ERROR(AtLeast("isl", options.input_tokens, 1));
  KVMESH_RETURN_IF_ERROR(AtLeast("osl", options.output_tokens, 1));
  KVMESH_RETURN_IF_ERROR(AtLeast(names.num_prefixes, options.num_prefixes, 1));
  return InUnitInterval(names.shared_prefix_ratio, options.shared_prefix_ratio, true);
}

// ---------------------------------------------------------------- subcommand flags

SweepFlags::SweepFlags() {
  const SweepOptions d;
  sweep = d;
  instance.pool.gpu = d.gpu;
  instance.pool.model = d.model;
  instance.perf.constants = d.constants;
  instance.perf.constants.fp8_weights = d.fp8;
  workload.options.num_requests = d.num_requests;
  workload.options.input_tokens = d.isl;
  workload.options.output_tokens = d.osl;
  workload.options.shared_prefix_ratio = d.shared_prefix_ratio;
  workload.options.num_prefixes = d.num_prefixes;
  tp = Texts(d.tp);
  max_batch = Texts(d.max_batch);
  max_prefill_tokens = Texts(d.max_prefill_tokens);
  rates = Texts(d.rates);
  rates_per_gpu = Texts(d.rates_per_gpu);
  concurrency = Texts(d.concurrency);
  max_ttft_ms = d.max_ttft_p90_s * 1e3;
}

PlacementFlags::PlacementFlags() : scenario(DefaultPlacementScenario()) {
  instance.pool = scenario.decode_pool;
  instance.perf.constants = scenario.decode_pool.constants;
  workload.options = scenario.workload;
  regions = RegionTexts(scenario);
}

Status SimFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(instance.Validate());
  return workload.Validate();
}

Status SweepFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(instance.Validate());
  return workload.Validate();
}

Status CalibrateFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(perf.Validate());
  if (calibration.routing_workload.empty()) {
    return InvalidArgumentError(FlagName("routing_workload") +
                                ": empty (a trace name, a trace path or synthetic)");
  }
  return Status::Ok();
}

Status PlacementFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(instance.Validate());
  KVMESH_RETURN_IF_ERROR(workload.Validate());
  KVMESH_RETURN_IF_ERROR(AtLeast("decode", scenario.decode_replicas, 1));
  KVMESH_RETURN_IF_ERROR(AtLeast("prefill", scenario.prefill_replicas, 0));
  KVMESH_RETURN_IF_ERROR(AtLeast("rate", workload.options.rate, 0));
  KVMESH_RETURN_IF_ERROR(AtLeast("zipf", workload.options.zipf_s, 0));
  return InUnitInterval("affinity", workload.options.regional_affinity, true);
}

Status PlannerFlags::Validate() const {
  KVMESH_RETURN_IF_ERROR(instance.Validate());
  const PlannerSimOptions& p = options;
  const std::pair<std::string_view, double> non_negative[] = {
      {"itl_target", p.planner.itl_target_s}, {"interval", p.planner.interval_s},
      {"scale_down_window", p.planner.scale_down_window_s}, {"base_rate", p.ramp.base_rate},
      {"peak_rate", p.ramp.peak_rate}, {"up", p.ramp.ramp_up_s}, {"hold", p.ramp.hold_s},
      {"down", p.ramp.ramp_down_s}, {"tail", p.ramp.tail_s}, {"min", p.planner.decode.min_replicas},
      {"max", p.planner.decode.max_replicas}};
  for (const auto& [key, value] : non_negative) KVMESH_RETURN_IF_ERROR(AtLeast(key, value, 0));
  return Status::Ok();
}

namespace {

// ---------------------------------------------------------------- kvmesh sim

StatusOr<SimCliOptions> BuildSim(const SimFlags& f) {
  SimCliOptions o;
  o.config = f.config;
  o.policies = NonEmpty(f.policies);
  if (o.policies.empty()) return InvalidArgumentError("--policies: empty list");
  for (const std::string& p : o.policies) {
    auto r = RoutingForPolicy(p, o.config.routing);
    if (!r.ok()) return InvalidArgumentError("--policies: " + r.status().message());
  }
  if (f.agg < -1) return InvalidArgumentError("--agg: must be >= 0 (or -1: automatic), got " + std::to_string(f.agg));
  const uint32_t agg = f.agg >= 0 ? static_cast<uint32_t>(f.agg) : (f.prefill == 0 && f.decode == 0 ? 1 : 0);
  if (f.prefill > 0 && f.decode == 0 && agg == 0) {
    return InvalidArgumentError("--prefill needs --decode (or --agg): prefill instances cannot decode");
  }
  if (agg == 0 && f.decode == 0) return InvalidArgumentError("the fleet is empty: give --agg N or --decode N");
  const PoolConfig base = f.instance.Pool();
  auto add_pool = [&](router::WorkerRole role, uint32_t count, uint32_t tp) {
    if (count == 0) return;
    PoolConfig p = base;
    p.role = role;
    p.count = count;
    if (tp) p.tp = tp;
    o.config.pools.push_back(p);
  };
  add_pool(router::WorkerRole::kAggregated, agg, 0);
  add_pool(router::WorkerRole::kPrefill, f.prefill, f.prefill_tp);
  add_pool(router::WorkerRole::kDecode, f.decode, f.decode_tp);
  o.config.event_delay_s = f.event_delay_ms / 1000.0;
  o.config.sla_ttft_s = f.sla_ttft_ms / 1000.0;
  o.config.sla_itl_s = f.sla_itl_ms / 1000.0;
  o.config.routing.predicted_ttl = std::chrono::milliseconds(f.predicted_ttl_ms);
  o.synthetic = f.workload.options;
  o.synthetic.block_size = o.config.block_size;
  o.synthetic.seed = o.config.seed;
  o.trace = !f.trace.empty();
  o.trace_options = f.trace_options;
  o.trace_options.path = f.trace;
  o.trace_options.block_size = o.config.block_size;
  o.trace_options.seed = o.config.seed;
  o.out = f.out;
  o.quiet = f.quiet;
  KVMESH_RETURN_IF_ERROR(KnownLink(o.config.link));
  KVMESH_RETURN_IF_ERROR(o.config.Validate());
  return o;
}

// ---------------------------------------------------------------- kvmesh sim sweep

StatusOr<SweepCliOptions> BuildSweep(const SweepFlags& f) {
  SweepCliOptions o;
  SweepOptions& w = o.sweep;
  w = f.sweep;
  w.gpu = f.instance.pool.gpu;
  w.model = f.instance.pool.model;
  w.constants = f.instance.perf.Get();
  w.fp8 = w.constants.fp8_weights;
  w.num_requests = f.workload.options.num_requests;
  w.isl = f.workload.options.input_tokens;
  w.osl = f.workload.options.output_tokens;
  w.shared_prefix_ratio = f.workload.options.shared_prefix_ratio;
  w.num_prefixes = f.workload.options.num_prefixes;
  KVMESH_ASSIGN_OR_RETURN(w.tp, ParseFlagNumbers<uint32_t>("--tp", f.tp));
  KVMESH_ASSIGN_OR_RETURN(w.max_batch, ParseFlagNumbers<uint32_t>("--max-batch", f.max_batch));
  KVMESH_ASSIGN_OR_RETURN(w.max_prefill_tokens,
                          ParseFlagNumbers<uint32_t>("--max-prefill-tokens", f.max_prefill_tokens));
  KVMESH_ASSIGN_OR_RETURN(w.rates, ParseFlagNumbers<double>("--rates", f.rates));
  KVMESH_ASSIGN_OR_RETURN(w.rates_per_gpu, ParseFlagNumbers<double>("--rates-per-gpu", f.rates_per_gpu));
  KVMESH_ASSIGN_OR_RETURN(w.concurrency, ParseFlagNumbers<uint32_t>("--concurrency", f.concurrency));
  w.aggregated = w.disaggregated = false;
  for (const std::string& l : f.layouts) {
    if (l != "agg" && l != "disagg") return InvalidArgumentError("--layouts: '" + l + "' (agg | disagg)");
    (l == "agg" ? w.aggregated : w.disaggregated) = true;
  }
  w.pd_ratios.clear();
  for (const std::string& r : f.pd) {
    const auto ab = SplitList(r, ':');
    auto p = ParseFlagNumber<uint32_t>("--pd", ab[0]);
    auto d = ParseFlagNumber<uint32_t>("--pd", ab.size() == 2 ? ab[1] : "");
    if (ab.size() != 2 || !p.ok() || !d.ok() || *p == 0 || *d == 0) {
      return InvalidArgumentError("--pd: '" + r + "' is not a ratio P:D of positive integers");
    }
    w.pd_ratios.emplace_back(*p, *d);
  }
  KVMESH_RETURN_IF_ERROR(AtLeast("max_ttft_ms", f.max_ttft_ms, 0));
  w.max_ttft_p90_s = f.max_ttft_ms / 1000.0;
  if (!(f.user_rate > 0) || !std::isfinite(f.user_rate)) return InvalidArgumentError("--user-rate: must be > 0");
  o.user_rate = f.user_rate;
  o.out = f.out;
  o.svg = f.svg;
  o.quiet = f.quiet;
  KVMESH_RETURN_IF_ERROR(KnownLink(w.link));
  if (auto p = RoutingForPolicy(w.policy, router::RouterRoutingConfig{}); !p.ok()) {
    return InvalidArgumentError("--policy: " + p.status().message());
  }
  if (Status s = w.Validate(); !s.ok()) return InvalidArgumentError("invalid sweep: " + s.message());
  return o;
}

// ---------------------------------------------------------------- kvmesh sim calibrate

StatusOr<CalibrateCliOptions> BuildCalibrate(const CalibrateFlags& f) {
  CalibrateCliOptions o;
  o.calibration = f.calibration;
  o.calibration.points = NonEmpty(f.calibration.points);
  o.calibration.constants = f.perf.Get();
  o.strict = f.strict;
  if (Status s = o.calibration.Validate(); !s.ok()) return InvalidArgumentError("--" + s.message());
  return o;
}

// ---------------------------------------------------------------- kvmesh sim placement

StatusOr<PlacementCliOptions> BuildPlacement(const PlacementFlags& f) {
  PlacementCliOptions o;
  PlacementScenario& s = o.scenario;
  s = f.scenario;
  const bool default_regions = f.regions == RegionTexts(s);
  s.regions.clear();
  s.clusters.clear();
  for (const std::string& item : NonEmpty(f.regions)) {
    KVMESH_ASSIGN_OR_RETURN(placement::Cluster c, ParseRegion(item));
    s.regions.push_back(c.region);
    s.clusters.push_back(std::move(c));
  }
  // Without --link: the default links between the default regions; none for other regions.
  if (!f.links.empty() || !default_regions) s.links.clear();
  for (const std::string& item : NonEmpty(f.links)) {
    KVMESH_ASSIGN_OR_RETURN(placement::Link l, ParseLink(item));
    s.links.push_back(std::move(l));
  }
  const PoolConfig pool = f.instance.Pool();
  s.decode_pool = pool;
  s.decode_pool.role = router::WorkerRole::kAggregated;
  s.prefill_pool = pool;
  s.prefill_pool.role = router::WorkerRole::kPrefill;
  s.workload = f.workload.options;
  s.workload.seed = s.base.seed;
  if (s.prefill_replicas > 0) s.base.disaggregation.mode = "always";
  o.policies = NonEmpty(f.policies);
  o.json = f.json;
  o.quiet = f.quiet;
  return o;
}

// ---------------------------------------------------------------- kvmesh sim planner

StatusOr<PlannerCliOptions> BuildPlanner(const PlannerFlags& f) {
  PlannerCliOptions o;
  o.options = f.options;
  o.options.pool = f.instance.Pool();
  o.options.ramp.seed = o.options.base.seed;
  o.json = f.json;
  o.quiet = f.quiet;
  return o;
}

}  // namespace

// ---------------------------------------------------------------- parsing

StatusOr<SimCliOptions> ParseSimArgs(std::span<const std::string> args, const EnvLookup& env) {
  return ParseWith<SimFlags, SimCliOptions>(args, env, kSimEnv, BuildSim);
}

StatusOr<SweepCliOptions> ParseSweepArgs(std::span<const std::string> args, const EnvLookup& env) {
  return ParseWith<SweepFlags, SweepCliOptions>(args, env, kSweepEnv, BuildSweep);
}

StatusOr<CalibrateCliOptions> ParseCalibrateArgs(std::span<const std::string> args, const EnvLookup& env) {
  return ParseWith<CalibrateFlags, CalibrateCliOptions>(args, env, kCalibrateEnv, BuildCalibrate);
}

StatusOr<PlacementCliOptions> ParsePlacementArgs(std::span<const std::string> args, const EnvLookup& env) {
  return ParseWith<PlacementFlags, PlacementCliOptions>(args, env, kPlacementEnv, BuildPlacement);
}

StatusOr<PlannerCliOptions> ParsePlannerArgs(std::span<const std::string> args, const EnvLookup& env) {
  return ParseWith<PlannerFlags, PlannerCliOptions>(args, env, kPlannerEnv, BuildPlanner);
}

// ---------------------------------------------------------------- usage

std::string SimUsage() {
  return Usage(R"(usage: kvmesh sim [flags]                 (run every --policies on one fleet and workload)
       kvmesh sim sweep [flags]           (aggregated vs disaggregated Pareto frontiers)
       kvmesh sim calibrate [flags]       (the published calibration points, simulated)
       kvmesh sim placement [flags]       (placement policies on a multi-region workload)
       kvmesh sim planner [flags]         (the SLA planner on a rising-then-falling load)
Each subcommand has its own --help. See docs/simulator.md.

Discrete-event simulation of a serving fleet driven by kvmesh's real routing, disaggregation and
prefix-cache code. Every policy runs on the same fleet and the same (seeded) workload; one JSON
line per policy is printed, then a comparison table.
)",
               RenderConfigHelp<SimFlags>(kSimEnv));
}

std::string SweepUsage() {
  return Usage(R"(usage: kvmesh sim sweep [flags]

Runs the fleet simulator over aggregated and disaggregated layouts of one GPU budget (TP sizes,
P:D instance splits, batch limits, chunk budgets, request rates), prints one JSON line per point,
then a summary line comparing the two Pareto frontiers (tokens/s/GPU vs tokens/s/user) at
--user-rate. See docs/simulator.md, "Sweeps and calibration".
)",
               RenderConfigHelp<SweepFlags>(kSweepEnv));
}

std::string CalibrateUsage() {
  return Usage(R"(usage: kvmesh sim calibrate [flags]

Runs the simulator on the published points it is calibrated against and prints one JSON line per
point: published value, simulated value, ratio to published and whether it is within the tolerance.
  disagg_1node     Dynamo: disaggregated / aggregated tokens/s/GPU, Llama-3.1-70B FP8, 8 x H100,
                   ISL 3000 / OSL 150, at 50 tokens/s/user: 1.3x
  disagg_2node     the same on 16 x H100 at 40 tokens/s/user: 2x
  kv_routing_ttft  Dynamo: mean TTFT random / KV-aware routing, R1-Distill-Llama-70B FP8,
                   2 x 8 H100 (4 x TP4), ISL 4000 / OSL 800 with shared prefixes: 3x
                   (one line for kv:dynamo, one for kv:kvmesh)
The full run takes a few minutes of CPU; --quick runs the same code on tiny grids in seconds.
With --strict the exit status is 3 when a point is outside the tolerance.
)",
               RenderConfigHelp<CalibrateFlags>(kCalibrateEnv));
}

std::string PlacementUsage() {
  return Usage(R"(usage: kvmesh sim placement [flags]

Runs one multi-region workload on the fleet each placement policy builds (the operator's Place()),
routing with the real router (rtt-aware kv:kvmesh), and compares them. See docs/simulator.md,
"Placement comparison".
)",
               RenderConfigHelp<PlacementFlags>(kPlacementEnv));
}

std::string PlannerUsage() {
  return Usage(R"(usage: kvmesh sim planner [flags]   (also: kvmesh sim --planner [flags])

Runs the real SLA planner every interval on a rising-then-falling workload; one aggregated pool
grows (cold instances) and shrinks (drained instances). Prints the decisions timeline. See
docs/simulator.md, "Planner in the simulator".
)",
               RenderConfigHelp<PlannerFlags>(kPlannerEnv));
}

std::optional<int> ReportParse(std::string_view command, const Status& status, bool help,
                               std::string (*usage)()) {
  if (!status.ok()) {
    std::fprintf(stderr, "%.*s: %s (see --help)\n", static_cast<int>(command.size()), command.data(),
                 status.message().c_str());
    return 2;
  }
  if (help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  return std::nullopt;
}

}  // namespace kvmesh::sim
