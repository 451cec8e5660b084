#include "sim/sim_cli.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string_view>

#include "sim/calibrate.h"
#include "sim/cli_util.h"
#include "sim/sweep.h"

namespace kvmesh::sim {

const char kSimUsage[] =
    R"(usage: kvmesh sim [fleet flags] [workload flags] [--policies LIST] [--out FILE.json]
       kvmesh sim sweep [flags]   (Pareto frontiers of layouts; kvmesh sim sweep --help)
       kvmesh sim calibrate [flags]   (published calibration points; kvmesh sim calibrate --help)

Discrete-event simulation of a serving fleet driven by kvmesh's real routing, disaggregation and
prefix-cache code (docs/simulator.md). Every policy runs on the same fleet and the same workload;
one JSON line per policy is printed, then a comparison table.

fleet:
  --gpu NAME                 h100 | h200 | b200 (default h100)
  --model NAME               llama-3.1-8b | llama-3.1-70b | gpt-oss-120b (default llama-3.1-8b)
  --tp N                     GPUs per instance (tensor parallel; default 1)
  --fp8                      FP8 weights and GEMMs
  --agg N                    aggregated instances (default 1 unless --prefill/--decode)
  --prefill N, --decode N    disaggregated prefill / decode instances
  --prefill-tp N, --decode-tp N   per-pool tensor parallel (default --tp)
  --max-batch N              running sequences per instance (default 256)
  --max-prefill-tokens N     new prefill tokens per engine step (default 8192)
  --kv-blocks N              KV blocks per instance (default: from the GPU memory model)
  --link NAME                nvlink | ib400 | tcp: prefill -> decode KV transfer (default nvlink)
  --block-size N             tokens per KV block (default 16)
routing (the router's own settings):
  --policies LIST            comma-separated: random,round_robin,least_loaded,kv:dynamo,kv:kvmesh
                             (default kv:kvmesh)
  --disagg MODE              off | conditional | always (default conditional)
  --min-remote-prefill-tokens N   (default 64)
  --max-prefill-queue N      (default 8)
  --overlap-weight X, --temperature X, --predicted-ttl-ms N
  --max-inflight N           router's max_inflight_per_worker (default 256)
  --event-delay-ms X         KV event delivery delay to the router's index (default 5)
workload (synthetic unless --trace):
  --rate R                   requests/s, Poisson (default 10; <= 0: all at t=0)
  --num-requests N           (default 1000)
  --isl N, --osl N           mean input / output tokens (default 3000 / 150)
  --length-jitter X          uniform +/- fraction (default 0)
  --shared-prefix-ratio X    leading fraction of a prompt shared in its group (default 0)
  --num-prefixes N           prefix groups (default 1)
  --zipf S                   Zipf skew of group popularity (default 0 = uniform)
  --multi-turn X             fraction of requests continuing a conversation (default 0)
  --trace PATH               replay a Mooncake .jsonl or Azure .csv trace
  --time-scale X             trace time multiplier (0.5 = twice as fast; default 1)
  --max-requests N           truncate the trace (default: all)
  --repeat N                 replay the trace N times back to back (default 1)
output:
  --sla-ttft-ms X, --sla-itl-ms X   goodput SLA (default 2000 / 50)
  --seed N                   (default 1)
  --out FILE.json            write the results as a JSON array
  --quiet                    JSON lines only, no table
  -h, --help
Exit status: 0 ok, 1 runtime failure, 2 usage error.
)";

StatusOr<SimCliOptions> ParseSimArgs(std::span<const std::string> args) {
  SimCliOptions o;
  PoolConfig base;
  uint32_t agg = 0, prefill = 0, decode = 0, prefill_tp = 0, decode_tp = 0;
  bool agg_set = false;
  double event_delay_ms = 5, sla_ttft_ms = 2000, sla_itl_ms = 50;
  uint64_t predicted_ttl_ms = 2000;

  using Setter = std::function<Status(std::string_view flag, std::string_view value)>;
  auto num = [](auto* target) -> Setter {
    return [target](std::string_view f, std::string_view v) { return ParseFlagNumber(f, v, target); };
  };
  auto str = [](std::string* target) -> Setter {
    return [target](std::string_view, std::string_view v) {
      *target = std::string(v);
      return Status::Ok();
    };
  };
  const std::map<std::string, Setter, std::less<>> with_value = {
      {"gpu", str(&base.gpu)},
      {"model", str(&base.model)},
      {"tp", num(&base.tp)},
      {"agg", [&](std::string_view f, std::string_view v) {
         agg_set = true;
         return ParseFlagNumber(f, v, &agg);
       }},
      {"prefill", num(&prefill)},
      {"decode", num(&decode)},
      {"prefill-tp", num(&prefill_tp)},
      {"decode-tp", num(&decode_tp)},
      {"max-batch", num(&base.max_batch)},
      {"max-prefill-tokens", num(&base.max_prefill_tokens)},
      {"kv-blocks", num(&base.kv_blocks)},
      {"link", str(&o.config.link)},
      {"block-size", num(&o.config.block_size)},
      {"policies", [&](std::string_view f, std::string_view v) {
         o.policies = SplitNames(v);
         if (o.policies.empty()) return InvalidArgumentError(std::string(f) + ": empty list");
         for (const std::string& p : o.policies) {
           auto r = RoutingForPolicy(p, o.config.routing);
           if (!r.ok()) return InvalidArgumentError(std::string(f) + ": " + r.status().message());
         }
         return Status::Ok();
       }},
      {"disagg", str(&o.config.disaggregation.mode)},
      {"min-remote-prefill-tokens", num(&o.config.disaggregation.min_remote_prefill_tokens)},
      {"max-prefill-queue", num(&o.config.disaggregation.max_prefill_queue)},
      {"overlap-weight", num(&o.config.routing.overlap_weight)},
      {"temperature", num(&o.config.routing.temperature)},
      {"predicted-ttl-ms", num(&predicted_ttl_ms)},
      {"max-inflight", num(&o.config.max_inflight_per_worker)},
      {"event-delay-ms", num(&event_delay_ms)},
      {"rate", num(&o.synthetic.rate)},
      {"num-requests", num(&o.synthetic.num_requests)},
      {"isl", num(&o.synthetic.input_tokens)},
      {"osl", num(&o.synthetic.output_tokens)},
      {"length-jitter", num(&o.synthetic.length_jitter)},
      {"shared-prefix-ratio", num(&o.synthetic.shared_prefix_ratio)},
      {"num-prefixes", num(&o.synthetic.num_prefixes)},
      {"zipf", num(&o.synthetic.zipf_s)},
      {"multi-turn", num(&o.synthetic.multi_turn_ratio)},
      {"trace", [&](std::string_view, std::string_view v) {
         o.trace = true;
         o.trace_options.path = std::string(v);
         return Status::Ok();
       }},
      {"time-scale", num(&o.trace_options.time_scale)},
      {"max-requests", num(&o.trace_options.max_requests)},
      {"repeat", num(&o.trace_options.repeat)},
      {"sla-ttft-ms", num(&sla_ttft_ms)},
      {"sla-itl-ms", num(&sla_itl_ms)},
      {"seed", num(&o.config.seed)},
      {"out", str(&o.out)},
  };

  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "-h" || arg == "--help") {
      o.help = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      return InvalidArgumentError("unexpected argument '" + std::string(arg) + "' (see --help)");
    }
    std::string_view name = arg.substr(2);
    if (name == "fp8") {
      base.constants.fp8_weights = true;
      continue;
    }
    if (name == "synthetic") continue;  // the default workload; accepted for clarity
    if (name == "quiet") {
      o.quiet = true;
      continue;
    }
    std::optional<std::string_view> value;
    if (const size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const auto it = with_value.find(name);
    if (it == with_value.end()) {
      return InvalidArgumentError("unknown flag --" + std::string(name) + " (see --help)");
    }
    if (!value) {
      if (i + 1 >= args.size()) return InvalidArgumentError("--" + std::string(name) + " needs a value");
      value = args[++i];
    }
    KVMESH_RETURN_IF_ERROR(it->second("--" + std::string(name), *value));
  }
  if (o.help) return o;

  if (!agg_set && prefill == 0 && decode == 0) agg = 1;
  if (prefill > 0 && decode == 0 && agg == 0) {
    return InvalidArgumentError("--prefill needs --decode (or --agg): prefill instances cannot decode");
  }
  if (agg == 0 && decode == 0) return InvalidArgumentError("the fleet is empty: give --agg N or --decode N");
  auto add_pool = [&](router::WorkerRole role, uint32_t count, uint32_t tp) {
    if (count == 0) return;
    PoolConfig p = base;
    p.role = role;
    p.count = count;
    if (tp) p.tp = tp;
    o.config.pools.push_back(p);
  };
  add_pool(router::WorkerRole::kAggregated, agg, 0);
  add_pool(router::WorkerRole::kPrefill, prefill, prefill_tp);
  add_pool(router::WorkerRole::kDecode, decode, decode_tp);
  o.config.event_delay_s = event_delay_ms / 1000.0;
  o.config.sla_ttft_s = sla_ttft_ms / 1000.0;
  o.config.sla_itl_s = sla_itl_ms / 1000.0;
  o.config.routing.predicted_ttl = std::chrono::milliseconds(predicted_ttl_ms);
  o.synthetic.block_size = o.config.block_size;
  o.synthetic.seed = o.config.seed;
  o.trace_options.block_size = o.config.block_size;
  o.trace_options.seed = o.config.seed;
  // Names first (clear messages), then the config's own checks.
  for (const PoolConfig& p : o.config.pools) {
    if (auto g = GpuByName(p.gpu); !g.ok()) return InvalidArgumentError("--gpu: " + g.status().message());
    if (auto m = ModelByName(p.model); !m.ok()) return InvalidArgumentError("--model: " + m.status().message());
  }
  if (auto l = LinkByName(o.config.link); !l.ok()) return InvalidArgumentError("--link: " + l.status().message());
  KVMESH_RETURN_IF_ERROR(o.config.Validate());
  return o;
}

int RunSimCommand(std::span<char*> args) {
  // `kvmesh sim sweep ...`: layouts x batch limits x rates -> Pareto frontiers (sim/sweep.h).
  if (!args.empty() && std::string_view(args[0]) == "sweep") return RunSweepCommand(args.subspan(1));
  // `kvmesh sim calibrate ...`: the published points, simulated (sim/calibrate.h).
  if (!args.empty() && std::string_view(args[0]) == "calibrate") {
    return RunCalibrateCommand(args.subspan(1));
  }
  std::vector<std::string> a(args.begin(), args.end());
  auto parsed = ParseSimArgs(a);
  if (!parsed.ok()) {
    std::fprintf(stderr, "kvmesh sim: %s\n", parsed.status().message().c_str());
    return 2;
  }
  const SimCliOptions& o = *parsed;
  if (o.help) {
    std::fputs(kSimUsage, stdout);
    return 0;
  }
  auto make_workload = [&]() -> StatusOr<std::unique_ptr<Workload>> {
    if (o.trace) return MakeTraceWorkload(o.trace_options);
    return MakeSyntheticWorkload(o.synthetic);
  };
  {  // Workload errors are usage errors (bad options, unreadable trace).
    auto w = make_workload();
    if (!w.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", w.status().message().c_str());
      return 2;
    }
  }
  std::vector<SimResult> results;
  std::string json_array = "[";
  for (const std::string& policy : o.policies) {
    SimConfig c = o.config;
    auto routing = RoutingForPolicy(policy, c.routing);
    if (!routing.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", routing.status().message().c_str());
      return 2;
    }
    c.routing = *routing;
    auto w = make_workload();
    if (!w.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", w.status().message().c_str());
      return 1;
    }
    auto r = RunFleetSim(c, **w, policy);
    if (!r.ok()) {
      std::fprintf(stderr, "kvmesh sim: %s\n", r.status().message().c_str());
      return r.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
    }
    const std::string line = SimResultJson(*r);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (results.size()) json_array += ",";
    json_array += line;
    results.push_back(std::move(*r));
  }
  json_array += "]\n";
  if (!o.quiet) std::printf("\n%s", SimResultTable(results).c_str());
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << json_array;
    if (!f.good()) {
      std::fprintf(stderr, "kvmesh sim: cannot write %s\n", o.out.c_str());
      return 1;
    }
  }
  for (const SimResult& r : results) {
    if (!r.pool_errors.empty()) {
      std::fprintf(stderr, "kvmesh sim: %s: internal error: %s\n", r.policy.c_str(), r.pool_errors.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace kvmesh::sim
