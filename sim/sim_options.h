// The options of every `kvmesh sim` subcommand (docs/simulator.md, "Command line"), each declared
// once with common/config.h: one Visit() feeds the flag (--max-batch), the environment variable
// (KVMESH_SIM_MAX_BATCH, KVMESH_SIM_SWEEP_MAX_BATCH, ...), the key of a --config YAML/JSON file
// (max_batch) and the --help text (with the defaults of a default-constructed struct).
//
// Option groups that several subcommands share are one struct each, visited in place (their flags
// have no prefix): ModelFlags (--gpu --model --fp8 + PerfConstantFlags), SyntheticFlags (--isl
// --osl --num-requests --shared-prefix-ratio --num-prefixes). A subcommand that has always spelled
// a shared flag otherwise (placement's --requests) renames it in SyntheticFlags::names.
//
// Values config.h has no type for (number lists, P:D ratios, NAME:GPUS regions, A:B:GBIT:MS links)
// are string lists in the flags structs and are parsed by Parse*Args; so are units (ms, us) that
// differ from the library's seconds.
//
// Invariants: Parse*Args never throws and returns either complete options or InvalidArgument
// whose message names the flag and the bad value; --help returns the defaults with help = true.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "sim/calibrate.h"
#include "sim/fleet_sim.h"
#include "sim/placement_sim.h"
#include "sim/planner_sim.h"
#include "sim/sweep.h"
#include "sim/workload.h"

namespace kvmesh::sim {

// "--max-batch" for key "max_batch".
std::string FlagName(std::string_view key);

// ---------------------------------------------------------------- shared groups

// The perf-model constants (PerfConstants) in the units users think in.
struct PerfConstantFlags {
  PerfConstants constants;  // prefill_mfu and decode_hbm_efficiency are bound directly
  double step_overhead_ms = PerfConstants{}.step_overhead_s * 1e3;
  double allreduce_latency_us = PerfConstants{}.allreduce_latency_s * 1e6;
  double eager_launch_us = PerfConstants{}.eager_launch_s_per_layer * 1e6;

  template <class V>
  void Visit(V& v) {
    v("step_overhead_ms", step_overhead_ms, "perf model: fixed cost of one engine step, ms");
    v("prefill_mfu", constants.prefill_mfu, "perf model: fraction of peak FLOP/s prefill reaches");
    v("decode_hbm_efficiency", constants.decode_hbm_efficiency,
      "perf model: fraction of HBM bandwidth decode reaches");
    v("allreduce_latency_us", allreduce_latency_us, "perf model: fixed cost of one TP all-reduce, us");
    v("eager_launch_us", eager_launch_us,
      "perf model: CPU launch time per layer of an eager (prefill) step, us");
  }
  Status Validate() const;      // every value finite and >= 0; efficiencies in (0, 1]
  PerfConstants Get() const;    // `constants` with the converted values
};

// One instance type: --gpu, --model, --fp8 and the perf-model constants, into a PoolConfig.
struct ModelFlags {
  PoolConfig pool;  // gpu and model bound here; a subcommand may bind more of it (tp, max_batch)
  PerfConstantFlags perf;

  template <class V>
  void Visit(V& v) {
    v("gpu", pool.gpu, "GPU type: h100 | h200 | b200");
    v("model", pool.model, "model: llama-3.1-8b | llama-3.1-70b | gpt-oss-120b");
    v("fp8", perf.constants.fp8_weights, "FP8 weights and GEMMs");
    perf.Visit(v);
  }
  Status Validate() const;  // "--gpu: ...", "--model: ..." for unknown names, then perf
  PoolConfig Pool() const;  // `pool` with constants = perf.Get()
};

// Spellings of the SyntheticFlags keys that some subcommand spells differently.
struct SyntheticFlagNames {
  std::string_view num_requests = "num_requests";
  std::string_view shared_prefix_ratio = "shared_prefix_ratio";
  std::string_view num_prefixes = "num_prefixes";
};

// The synthetic workload's size and shape, into a SyntheticOptions.
struct SyntheticFlags {
  SyntheticOptions options;
  SyntheticFlagNames names;

  template <class V>
  void Visit(V& v) {
    v(names.num_requests, options.num_requests, "requests in the workload");
    v("isl", options.input_tokens, "mean input (prompt) tokens");
    v("osl", options.output_tokens, "mean output tokens");
    v(names.shared_prefix_ratio, options.shared_prefix_ratio,
      "leading fraction of a prompt shared within its prefix group, 0..1");
    v(names.num_prefixes, options.num_prefixes, "prefix groups");
  }
  Status Validate() const;  // counts >= 1, ratio in [0, 1]; names the flag as spelled
};

// ---------------------------------------------------------------- kvmesh sim

struct SimFlags {
  ModelFlags instance;
  int32_t agg = -1;  // -1: 1 unless --prefill/--decode are given, else 0
  uint32_t prefill = 0, decode = 0, prefill_tp = 0, decode_tp = 0;
  SimConfig config;  // link, block size, router settings and seed bound directly
  std::vector<std::string> policies = {"kv:kvmesh"};
  uint64_t predicted_ttl_ms = 2000;
  double event_delay_ms = SimConfig{}.event_delay_s * 1e3;
  SyntheticFlags workload;
  std::string trace;
  TraceOptions trace_options;
  bool synthetic = false;
  double sla_ttft_ms = SimConfig{}.sla_ttft_s * 1e3;
  double sla_itl_ms = SimConfig{}.sla_itl_s * 1e3;
  std::string out;
  bool quiet = false;

  Status Validate() const;  // the groups, then single-flag ranges; names the flag

  template <class V>
  void Visit(V& v) {
    instance.Visit(v);
    v("tp", instance.pool.tp, "GPUs per instance (tensor parallel)");
    v("agg", agg, "aggregated instances; -1 = 1 unless --prefill/--decode are given");
    v("prefill", prefill, "disaggregated prefill instances");
    v("decode", decode, "disaggregated decode instances");
    v("prefill_tp", prefill_tp, "tensor parallel of prefill instances; 0 = --tp");
    v("decode_tp", decode_tp, "tensor parallel of decode instances; 0 = --tp");
    v("max_batch", instance.pool.max_batch, "running sequences per instance");
    v("max_prefill_tokens", instance.pool.max_prefill_tokens, "new prefill tokens per engine step");
    v("kv_blocks", instance.pool.kv_blocks, "KV blocks per instance; 0 = from the GPU memory model");
    v("link", config.link, "prefill -> decode KV link: nvlink | ib400 | tcp");
    v("block_size", config.block_size, "tokens per KV block");
    v("policies", policies,
      "routing policies to compare: random, round_robin, least_loaded, kv:dynamo, kv:kvmesh");
    v("disagg", config.disaggregation.mode, "router disaggregation: off | conditional | always");
    v("min_remote_prefill_tokens", config.disaggregation.min_remote_prefill_tokens,
      "router: shortest uncached prompt prefilled remotely");
    v("max_prefill_queue", config.disaggregation.max_prefill_queue,
      "router: requests in flight on one prefill worker");
    v("overlap_weight", config.routing.overlap_weight, "router: weight of prefill blocks in the kv cost");
    v("temperature", config.routing.temperature, "router: softmax temperature; 0 = lowest cost wins");
    v("predicted_ttl_ms", predicted_ttl_ms, "router: lifetime of predicted index entries, ms");
    v("max_inflight", config.max_inflight_per_worker, "router: max_inflight_per_worker");
    v("event_delay_ms", event_delay_ms, "KV event delivery delay to the router's index, ms");
    v("rate", workload.options.rate, "requests/s, Poisson; <= 0 = all at t=0");
    v("concurrency", config.concurrency,
      "closed loop: keep this many requests in the fleet (arrival times ignored); 0 = open loop");
    workload.Visit(v);
    v("length_jitter", workload.options.length_jitter, "uniform +/- fraction of the lengths");
    v("zipf", workload.options.zipf_s, "Zipf skew of prefix-group popularity; 0 = uniform");
    v("multi_turn", workload.options.multi_turn_ratio, "fraction of requests continuing a conversation");
    v("synthetic", synthetic, "the synthetic workload (the default without --trace)");
    v("trace", trace, "replay this Mooncake .jsonl or Azure .csv trace instead");
    v("time_scale", trace_options.time_scale, "trace time multiplier (0.5 = twice as fast)");
    v("max_requests", trace_options.max_requests, "truncate the trace; 0 = all");
    v("repeat", trace_options.repeat, "replay the trace this many times back to back");
    v("input_scale", trace_options.input_scale,
      "trace prompt length multiplier, in (0, 16]; a hash id's blocks scale with it");
    v("output_scale", trace_options.output_scale, "trace output length multiplier, in (0, 16]");
    v("sla_ttft_ms", sla_ttft_ms, "goodput SLA: TTFT, ms");
    v("sla_itl_ms", sla_itl_ms, "goodput SLA: mean inter-token latency, ms");
    v("seed", config.seed, "random seed (workload and router)");
    v("out", out, "write the results as a JSON array to this file");
    v("quiet", quiet, "JSON lines only, no table");
  }
};

struct SimCliOptions {
  SimConfig config;
  std::vector<std::string> policies;
  bool trace = false;  // --trace given: replay instead of synthetic
  TraceOptions trace_options;
  SyntheticOptions synthetic;
  std::string out;
  bool help = false;
  bool quiet = false;
};

// ---------------------------------------------------------------- kvmesh sim sweep

struct SweepFlags {
  SweepFlags();  // defaults from SweepOptions{}
  ModelFlags instance;
  SweepOptions sweep;  // scalar options bound directly
  SyntheticFlags workload;
  std::vector<std::string> tp, layouts = {"agg", "disagg"}, pd, max_batch, max_prefill_tokens,
      rates, rates_per_gpu, concurrency;
  double user_rate = 50;
  double max_ttft_ms = 0;
  std::string out, svg;
  bool quiet = false;

  Status Validate() const;  // the groups, then single-flag ranges; names the flag

  template <class V>
  void Visit(V& v) {
    instance.Visit(v);
    v("gpus", sweep.gpus, "GPU budget of every layout");
    v("tp", tp, "candidate TP sizes (configs that do not fit are skipped)");
    v("layouts", layouts, "which layouts: agg, disagg");
    v("pd", pd, "P:D instance ratios, e.g. 1:1,2:1; empty = every split of the budget");
    v("max_batch", max_batch, "running sequences per aggregated / decode instance (swept)");
    v("max_prefill_tokens", max_prefill_tokens, "prefill tokens per engine step (swept)");
    v("prefill_max_batch", sweep.prefill_max_batch, "prefill instances' max_batch");
    v("link", sweep.link, "prefill -> decode KV link: nvlink | ib400 | tcp");
    v("policy", sweep.policy, "routing policy");
    v("disagg_mode", sweep.disagg_mode, "router disaggregation: conditional | always");
    v("max_prefill_queue", sweep.max_prefill_queue, "router's max_prefill_queue; 0 = unbounded");
    workload.Visit(v);
    v("rates", rates, "offered requests/s for the whole fleet");
    v("rates_per_gpu", rates_per_gpu, "used when --rates is empty: each x --gpus");
    v("concurrency", concurrency, "closed loop instead of rates: requests kept in the fleet (swept)");
    v("seed", sweep.seed, "random seed");
    v("user_rate", user_rate, "tokens/s/user at which the frontiers are compared");
    v("max_ttft_ms", max_ttft_ms, "points with TTFT p90 above this stay off the frontiers; 0 = no limit");
    v("out", out, "write points, frontiers and summary (JSON) to this file");
    v("svg", svg, "write a plot of points and frontiers to this file");
    v("quiet", quiet, "print only the summary line");
  }
};

struct SweepCliOptions {
  SweepOptions sweep;
  double user_rate = 50;
  std::string out, svg;
  bool quiet = false;
  bool help = false;
};

// ---------------------------------------------------------------- kvmesh sim calibrate

struct CalibrateFlags {
  CalibrationOptions calibration;  // constants come from `perf`
  PerfConstantFlags perf;
  bool strict = false;

  Status Validate() const;  // the groups, then single-flag ranges; names the flag

  template <class V>
  void Visit(V& v) {
    v("points", calibration.points, "published points: disagg_1node, disagg_2node, kv_routing_ttft");
    v("quick", calibration.quick, "tiny grids and request counts (smoke test; not calibration results)");
    v("num_requests", calibration.num_requests, "requests per simulated point; 0 = the point's default");
    v("seed", calibration.seed, "random seed");
    v("tolerance", calibration.tolerance, "relative tolerance of the verdict");
    v("routing_workload", calibration.routing_workload,
      "kv_routing_ttft workload: a trace under shared/data/traces, a trace path, or synthetic");
    perf.Visit(v);
    v("strict", strict, "exit 3 when a point is outside the tolerance");
  }
};

struct CalibrateCliOptions {
  CalibrationOptions calibration;
  bool strict = false;
  bool help = false;
};

// ---------------------------------------------------------------- kvmesh sim placement

struct PlacementFlags {
  PlacementFlags();  // defaults from DefaultPlacementScenario()
  PlacementScenario scenario;  // replica counts, routing policy, affinity bound directly
  ModelFlags instance;         // the replicas (decode and prefill pools alike)
  SyntheticFlags workload{.options = {}, .names = {"requests", "shared_prefix", "prefixes"}};
  std::vector<std::string> policies = {"spread", "pack", "cache-locality"};
  std::vector<std::string> regions;  // NAME:GPUS
  std::vector<std::string> links;    // A:B:GBIT:MS; empty = the defaults (none with --regions)
  std::string json;
  bool quiet = false;

  Status Validate() const;  // the groups, then single-flag ranges; names the flag

  template <class V>
  void Visit(V& v) {
    v("policies", policies, "placement policies: spread, pack, cache-locality, single");
    v("regions", regions, "NAME:GPUS, one cluster NAME-1 per region");
    v("link", links,
      "inter-region link A:B:GBIT:MS (one-way ms); replaces the default links (none by default "
      "with --regions)",
      kConfigRepeatable);
    v("decode", scenario.decode_replicas, "decode (aggregated) replicas to place");
    v("prefill", scenario.prefill_replicas, "prefill replicas; 0 = aggregated serving");
    instance.Visit(v);
    v("tp", instance.pool.tp, "GPUs per replica");
    v("rate", workload.options.rate, "requests/s, Poisson");
    workload.Visit(v);
    v("zipf", workload.options.zipf_s, "Zipf skew of system-prompt popularity");
    v("affinity", workload.options.regional_affinity,
      "probability a request comes from its prefix's home region");
    v("routing", scenario.routing_policy, "router policy for every placement");
    v("warm_homes", scenario.warm_homes,
      "start each hot prefix cached in one instance of its home cluster (every policy)");
    v("execute_copies", scenario.execute_copies,
      "run Place()'s replicate decisions as prefix copies over the inter-cluster links");
    v("seed", scenario.base.seed, "random seed");
    v("json", json, "write the runs as JSON to this file");
    v("quiet", quiet, "print the JSON instead of the table");
  }
};

struct PlacementCliOptions {
  PlacementScenario scenario;
  std::vector<std::string> policies;
  std::string json;
  bool quiet = false;
  bool help = false;
};

// ---------------------------------------------------------------- kvmesh sim planner

struct PlannerFlags {
  PlannerSimOptions options = DefaultPlannerSimOptions();  // bound directly
  ModelFlags instance{.pool = DefaultPlannerSimOptions().pool, .perf = {}};
  std::string json;
  bool quiet = false;

  Status Validate() const;  // the groups, then single-flag ranges; names the flag

  template <class V>
  void Visit(V& v) {
    instance.Visit(v);
    v("tp", instance.pool.tp, "GPUs per replica");
    v("replicas", instance.pool.count, "replicas at the start");
    v("min", options.planner.decode.min_replicas, "planner: fewest decode replicas");
    v("max", options.planner.decode.max_replicas, "planner: most decode replicas");
    v("itl_target", options.planner.itl_target_s, "planner: ITL p90 target, seconds");
    v("interval", options.planner.interval_s, "planner interval, seconds");
    v("scale_down_window", options.planner.scale_down_window_s,
      "HPA-style scale-down stabilization, seconds");
    v("base_rate", options.ramp.base_rate, "requests/s at the start and the end");
    v("peak_rate", options.ramp.peak_rate, "requests/s at the top");
    v("up", options.ramp.ramp_up_s, "ramp up, seconds");
    v("hold", options.ramp.hold_s, "at peak, seconds");
    v("down", options.ramp.ramp_down_s, "ramp down, seconds");
    v("tail", options.ramp.tail_s, "at base after the ramp down, seconds");
    v("isl", options.ramp.input_tokens, "input (prompt) tokens");
    v("osl", options.ramp.output_tokens, "output tokens");
    v("seed", options.base.seed, "random seed");
    v("json", json, "write the timeline as JSON to this file");
    v("quiet", quiet, "print the JSON instead of the table");
  }
};

struct PlannerCliOptions {
  PlannerSimOptions options;
  std::string json;
  bool quiet = false;
  bool help = false;
};

// ---------------------------------------------------------------- parsing

// Each: flags (and env <prefix>_*, --config FILE) -> options. InvalidArgument naming the flag.
StatusOr<SimCliOptions> ParseSimArgs(std::span<const std::string> args, const EnvLookup& env);
StatusOr<SweepCliOptions> ParseSweepArgs(std::span<const std::string> args, const EnvLookup& env);
StatusOr<CalibrateCliOptions> ParseCalibrateArgs(std::span<const std::string> args,
                                                 const EnvLookup& env);
StatusOr<PlacementCliOptions> ParsePlacementArgs(std::span<const std::string> args,
                                                 const EnvLookup& env);
StatusOr<PlannerCliOptions> ParsePlannerArgs(std::span<const std::string> args, const EnvLookup& env);

// --help text: a few lines on the command, then one line per flag rendered from the declarations.
std::string SimUsage();
std::string SweepUsage();
std::string CalibrateUsage();
std::string PlacementUsage();
std::string PlannerUsage();

// Prints `status` (an error: returns 2) or, when `help`, usage() (returns 0) for `command`;
// nullopt when the command should run.
std::optional<int> ReportParse(std::string_view command, const Status& status, bool help,
                               std::string (*usage)());

// The start of every Run*Command: parses `args` with the process environment and returns the exit
// code when the command should not run (bad command line: 2, --help: 0), else the options.
template <class Options>
std::pair<std::optional<int>, Options> ParseCommandLine(
    std::string_view command, StatusOr<Options> (*parse)(std::span<const std::string>, const EnvLookup&),
    std::span<char* const> args, std::string (*usage)()) {
  const std::vector<std::string> a(args.begin(), args.end());
  StatusOr<Options> parsed = parse(a, ProcessEnvLookup());
  const bool help = parsed.ok() && parsed->help;
  std::optional<int> exit_code = ReportParse(command, parsed.status(), help, usage);
  if (exit_code) return {exit_code, Options{}};
  return {std::nullopt, std::move(*parsed)};
}

}  // namespace kvmesh::sim
