#include "sim/sim_options.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace kvmesh::sim {
namespace {

EnvLookup NoEnv() { return MapEnvLookup({}); }

// Every flag docs/simulator.md documents for a subcommand, with a valid value ("" = a bool flag),
// and a check that the value arrived where the simulator reads it.
template <class Options>
struct FlagCase {
  std::vector<std::string> args;
  std::function<bool(const Options&)> applied;
};

template <class Options>
void ExpectAccepted(StatusOr<Options> (*parse)(std::span<const std::string>, const EnvLookup&),
                    const std::vector<FlagCase<Options>>& cases) {
  for (const auto& c : cases) {
    auto o = parse(c.args, NoEnv());
    ASSERT_TRUE(o.ok()) << c.args[0] << ": " << o.status().ToString();
    EXPECT_TRUE(c.applied(*o)) << c.args[0];
  }
}

template <class Options>
void ExpectRejected(StatusOr<Options> (*parse)(std::span<const std::string>, const EnvLookup&),
                    const std::vector<std::pair<std::vector<std::string>, std::string>>& cases) {
  for (const auto& [args, needle] : cases) {
    auto o = parse(args, NoEnv());
    ASSERT_FALSE(o.ok()) << args[0];
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(needle), std::string::npos)
        << "want '" << needle << "' in: " << o.status().message();
  }
}

TEST(SimOptionsTest, SimAcceptsEveryDocumentedFlag) {
  using O = SimCliOptions;
  auto pool = [](const O& o) { return o.config.pools.at(0); };
  ExpectAccepted<O>(ParseSimArgs, {
      {{"--gpu", "h200"}, [&](const O& o) { return pool(o).gpu == "h200"; }},
      {{"--model", "llama-3.1-70b", "--tp", "4"}, [&](const O& o) { return pool(o).model == "llama-3.1-70b" && pool(o).tp == 4; }},
      {{"--fp8"}, [&](const O& o) { return pool(o).constants.fp8_weights; }},
      {{"--agg", "3"}, [&](const O& o) { return pool(o).count == 3; }},
      {{"--prefill", "1", "--decode", "2", "--prefill-tp", "2", "--decode-tp", "4"},
       [](const O& o) {
         return o.config.pools.size() == 2 && o.config.pools[0].tp == 2 && o.config.pools[1].count == 2 &&
                o.config.pools[1].tp == 4;
       }},
      {{"--max-batch", "64"}, [&](const O& o) { return pool(o).max_batch == 64; }},
      {{"--max-prefill-tokens", "2048"}, [&](const O& o) { return pool(o).max_prefill_tokens == 2048; }},
      {{"--kv-blocks", "1000"}, [&](const O& o) { return pool(o).kv_blocks == 1000; }},
      {{"--link", "tcp"}, [](const O& o) { return o.config.link == "tcp"; }},
      {{"--block-size", "32"},
       [](const O& o) { return o.config.block_size == 32 && o.synthetic.block_size == 32; }},
      {{"--policies", "random,kv:dynamo"},
       [](const O& o) { return o.policies == std::vector<std::string>{"random", "kv:dynamo"}; }},
      {{"--disagg", "always"}, [](const O& o) { return o.config.disaggregation.mode == "always"; }},
      {{"--min-remote-prefill-tokens", "128"},
       [](const O& o) { return o.config.disaggregation.min_remote_prefill_tokens == 128; }},
      {{"--max-prefill-queue", "3"}, [](const O& o) { return o.config.disaggregation.max_prefill_queue == 3; }},
      {{"--overlap-weight", "2.5"}, [](const O& o) { return o.config.routing.overlap_weight == 2.5; }},
      {{"--temperature", "0.1"}, [](const O& o) { return o.config.routing.temperature == 0.1; }},
      {{"--predicted-ttl-ms", "500"},
       [](const O& o) { return o.config.routing.predicted_ttl == std::chrono::milliseconds(500); }},
      {{"--max-inflight", "7"}, [](const O& o) { return o.config.max_inflight_per_worker == 7; }},
      {{"--event-delay-ms", "2"}, [](const O& o) { return o.config.event_delay_s == 0.002; }},
      {{"--rate", "40"}, [](const O& o) { return o.synthetic.rate == 40; }},
      {{"--concurrency", "64"}, [](const O& o) { return o.config.concurrency == 64; }},
      {{"--num-requests", "200"}, [](const O& o) { return o.synthetic.num_requests == 200; }},
      {{"--isl", "1024", "--osl", "32"},
       [](const O& o) { return o.synthetic.input_tokens == 1024 && o.synthetic.output_tokens == 32; }},
      {{"--length-jitter", "0.2"}, [](const O& o) { return o.synthetic.length_jitter == 0.2; }},
      {{"--shared-prefix-ratio", "0.5"}, [](const O& o) { return o.synthetic.shared_prefix_ratio == 0.5; }},
      {{"--num-prefixes", "4"}, [](const O& o) { return o.synthetic.num_prefixes == 4; }},
      {{"--zipf", "1.1"}, [](const O& o) { return o.synthetic.zipf_s == 1.1; }},
      {{"--multi-turn", "0.3"}, [](const O& o) { return o.synthetic.multi_turn_ratio == 0.3; }},
      {{"--synthetic"}, [](const O& o) { return !o.trace; }},
      {{"--trace", "t.jsonl", "--time-scale", "0.5", "--max-requests", "10", "--repeat", "2"},
       [](const O& o) {
         return o.trace && o.trace_options.path == "t.jsonl" && o.trace_options.time_scale == 0.5 &&
                o.trace_options.max_requests == 10 && o.trace_options.repeat == 2 &&
                o.trace_options.input_scale == 1.0 && o.trace_options.output_scale == 1.0;
       }},
      {{"--trace", "t.jsonl", "--input-scale", "0.40625", "--output-scale", "4"},
       [](const O& o) {
         return o.trace_options.input_scale == 0.40625 && o.trace_options.output_scale == 4.0;
       }},
      {{"--sla-ttft-ms", "1000", "--sla-itl-ms", "25"},
       [](const O& o) { return o.config.sla_ttft_s == 1 && o.config.sla_itl_s == 0.025; }},
      {{"--seed", "9"},
       [](const O& o) { return o.config.seed == 9 && o.synthetic.seed == 9 && o.trace_options.seed == 9; }},
      {{"--out", "x.json", "--quiet"}, [](const O& o) { return o.out == "x.json" && o.quiet; }},
      {{"--step-overhead-ms", "4"}, [&](const O& o) { return pool(o).constants.step_overhead_s == 0.004; }},
  });
}

TEST(SimOptionsTest, SimDefaultsAreTheDocumentedOnes) {
  auto o = ParseSimArgs({}, NoEnv());
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  ASSERT_EQ(o->config.pools.size(), 1u);
  const PoolConfig& p = o->config.pools[0];
  EXPECT_EQ(p.role, router::WorkerRole::kAggregated);
  EXPECT_EQ(p.count, 1u);
  EXPECT_EQ(p.gpu, "h100");
  EXPECT_EQ(p.model, "llama-3.1-8b");
  EXPECT_EQ(p.tp, 1u);
  EXPECT_FALSE(p.constants.fp8_weights);
  EXPECT_EQ(p.max_batch, 256u);
  EXPECT_EQ(p.max_prefill_tokens, 8192u);
  EXPECT_EQ(p.kv_blocks, 0u);
  EXPECT_EQ(o->config.link, "nvlink");
  EXPECT_EQ(o->config.block_size, 16u);
  EXPECT_EQ(o->policies, std::vector<std::string>{"kv:kvmesh"});
  EXPECT_EQ(o->config.disaggregation.mode, "conditional");
  EXPECT_EQ(o->config.disaggregation.min_remote_prefill_tokens, 64u);
  EXPECT_EQ(o->config.disaggregation.max_prefill_queue, 8u);
  EXPECT_EQ(o->config.routing.overlap_weight, 1);
  EXPECT_EQ(o->config.routing.temperature, 0);
  EXPECT_EQ(o->config.routing.predicted_ttl, std::chrono::milliseconds(2000));
  EXPECT_EQ(o->config.max_inflight_per_worker, 256u);
  EXPECT_EQ(o->config.event_delay_s, 0.005);
  EXPECT_EQ(o->synthetic.rate, 10);
  EXPECT_EQ(o->config.concurrency, 0u);
  EXPECT_EQ(o->synthetic.num_requests, 1000u);
  EXPECT_EQ(o->synthetic.input_tokens, 3000u);
  EXPECT_EQ(o->synthetic.output_tokens, 150u);
  EXPECT_EQ(o->synthetic.num_prefixes, 1u);
  EXPECT_EQ(o->config.sla_ttft_s, 2.0);
  EXPECT_EQ(o->config.sla_itl_s, 0.05);
  EXPECT_EQ(o->config.seed, 1u);
  EXPECT_FALSE(o->trace);
  EXPECT_FALSE(o->quiet);
  // The perf-model constants are the model's own, exactly (the ms/us flags round-trip).
  const PerfConstants d;
  EXPECT_EQ(p.constants.step_overhead_s, d.step_overhead_s);
  EXPECT_EQ(p.constants.allreduce_latency_s, d.allreduce_latency_s);
  EXPECT_EQ(p.constants.eager_launch_s_per_layer, d.eager_launch_s_per_layer);
  EXPECT_EQ(p.constants.prefill_mfu, d.prefill_mfu);
  EXPECT_EQ(p.constants.decode_hbm_efficiency, d.decode_hbm_efficiency);
}

TEST(SimOptionsTest, SimErrorsNameTheFlagAndValue) {
  ExpectRejected<SimCliOptions>(ParseSimArgs, {
      {{"--bogus", "1"}, "unknown flag --bogus"},
      {{"--agg", "two"}, "--agg: expected int32, got 'two'"},
      {{"--agg", "-2"}, "--agg: must be >= 0"},
      {{"--tp", "-1"}, "--tp"},
      {{"--rate", "fast"}, "--rate: expected a finite number, got 'fast'"},
      {{"--isl", "0"}, "--isl: must be"},
      {{"--shared-prefix-ratio", "1.5"}, "--shared-prefix-ratio: must be in [0, 1], got 1.5"},
      {{"--step-overhead-ms", "-1"}, "--step-overhead-ms"},
      {{"--prefill-mfu", "0"}, "--prefill-mfu"},
      {{"--gpu", "tpu"}, "--gpu"},
      {{"--policies", ","}, "--policies: empty list"},
      {{"--isl"}, "--isl needs a value"},
      {{"stray"}, "unexpected argument 'stray'"},
  });
}

TEST(SimOptionsTest, EnvAndConfigFileSetOptionsFlagsWin) {
  const std::string path = testing::TempDir() + "kvmesh_sim_options_test.yaml";
  std::ofstream(path) << "rate: 7\nisl: 512\npolicies: [random, kv:kvmesh]\n";
  auto o = ParseSimArgs(std::vector<std::string>{"--config", path, "--isl", "256"},
                        MapEnvLookup({{"KVMESH_SIM_RATE", "9"}, {"KVMESH_SIM_AGG", "2"}}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->synthetic.rate, 9);            // env over file
  EXPECT_EQ(o->synthetic.input_tokens, 256u);  // flag over file
  EXPECT_EQ(o->policies, (std::vector<std::string>{"random", "kv:kvmesh"}));
  EXPECT_EQ(o->config.pools[0].count, 2u);
  auto bad = ParseSimArgs({}, MapEnvLookup({{"KVMESH_SIM_NUM_REQUESTS", "many"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("KVMESH_SIM_NUM_REQUESTS"), std::string::npos);
  std::remove(path.c_str());
}

TEST(SimOptionsTest, SweepAcceptsEveryDocumentedFlagWithDefaults) {
  using O = SweepCliOptions;
  ExpectAccepted<O>(ParseSweepArgs, {
      {{"--gpu", "b200", "--model", "llama-3.1-8b", "--fp8"},
       [](const O& o) { return o.sweep.gpu == "b200" && o.sweep.model == "llama-3.1-8b" && o.sweep.fp8; }},
      {{"--gpus", "16"}, [](const O& o) { return o.sweep.gpus == 16; }},
      {{"--tp", "2,4"}, [](const O& o) { return o.sweep.tp == std::vector<uint32_t>{2, 4}; }},
      {{"--layouts", "agg"}, [](const O& o) { return o.sweep.aggregated && !o.sweep.disaggregated; }},
      {{"--pd", "1:1,3:1"}, [](const O& o) { return o.sweep.pd_ratios.size() == 2 && o.sweep.pd_ratios[1].first == 3; }},
      {{"--max-batch", "8,64"}, [](const O& o) { return o.sweep.max_batch == std::vector<uint32_t>{8, 64}; }},
      {{"--max-prefill-tokens", "512,2048"},
       [](const O& o) { return o.sweep.max_prefill_tokens == std::vector<uint32_t>{512, 2048}; }},
      {{"--prefill-max-batch", "128"}, [](const O& o) { return o.sweep.prefill_max_batch == 128; }},
      {{"--link", "ib400"}, [](const O& o) { return o.sweep.link == "ib400"; }},
      {{"--policy", "random"}, [](const O& o) { return o.sweep.policy == "random"; }},
      {{"--disagg-mode", "always"}, [](const O& o) { return o.sweep.disagg_mode == "always"; }},
      {{"--max-prefill-queue", "4"}, [](const O& o) { return o.sweep.max_prefill_queue == 4; }},
      {{"--step-overhead-ms", "5", "--prefill-mfu", "0.6", "--decode-hbm-efficiency", "0.7",
        "--allreduce-latency-us", "10", "--eager-launch-us", "0"},
       [](const O& o) {
         const PerfConstants& c = o.sweep.constants;
         return c.step_overhead_s == 0.005 && c.prefill_mfu == 0.6 && c.decode_hbm_efficiency == 0.7 &&
                c.allreduce_latency_s == 10e-6 && c.eager_launch_s_per_layer == 0;
       }},
      {{"--isl", "4000", "--osl", "800", "--shared-prefix-ratio", "0.75", "--num-prefixes", "200"},
       [](const O& o) {
         return o.sweep.isl == 4000 && o.sweep.osl == 800 && o.sweep.shared_prefix_ratio == 0.75 &&
                o.sweep.num_prefixes == 200;
       }},
      {{"--rates", "1.5,3"}, [](const O& o) { return o.sweep.rates == std::vector<double>{1.5, 3}; }},
      {{"--rates-per-gpu", "0.5"}, [](const O& o) { return o.sweep.rates_per_gpu == std::vector<double>{0.5}; }},
      {{"--concurrency", "32,64"}, [](const O& o) { return o.sweep.concurrency == std::vector<uint32_t>{32, 64}; }},
      {{"--num-requests", "100", "--seed", "3"},
       [](const O& o) { return o.sweep.num_requests == 100 && o.sweep.seed == 3; }},
      {{"--user-rate", "40", "--max-ttft-ms", "2500"},
       [](const O& o) { return o.user_rate == 40 && o.sweep.max_ttft_p90_s == 2.5; }},
      {{"--out", "a.json", "--svg", "a.svg", "--quiet"},
       [](const O& o) { return o.out == "a.json" && o.svg == "a.svg" && o.quiet; }},
  });
  // Defaults: SweepOptions{} and docs/simulator.md "Flags" of the sweep.
  auto d = ParseSweepArgs({}, NoEnv());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const SweepOptions& s = d->sweep;
  EXPECT_EQ(s.gpu, "h100");
  EXPECT_EQ(s.model, "llama-3.1-70b");
  EXPECT_FALSE(s.fp8);
  EXPECT_EQ(s.gpus, 8u);
  EXPECT_EQ(s.tp, (std::vector<uint32_t>{1, 2, 4, 8}));
  EXPECT_TRUE(s.aggregated && s.disaggregated);
  EXPECT_TRUE(s.pd_ratios.empty());
  EXPECT_EQ(s.max_batch, (std::vector<uint32_t>{8, 16, 32, 64, 128}));
  EXPECT_EQ(s.max_prefill_tokens, (std::vector<uint32_t>{8192}));
  EXPECT_EQ(s.prefill_max_batch, 256u);
  EXPECT_EQ(s.max_prefill_queue, 0u);
  EXPECT_TRUE(s.rates.empty());
  EXPECT_EQ(s.rates_per_gpu, (std::vector<double>{0.25, 0.5, 1, 2}));
  EXPECT_TRUE(s.concurrency.empty());
  EXPECT_EQ(s.num_requests, 400u);
  EXPECT_EQ(s.isl, 3000u);
  EXPECT_EQ(s.osl, 150u);
  EXPECT_EQ(s.max_ttft_p90_s, 0);
  EXPECT_EQ(d->user_rate, 50);
  const PerfConstants c;
  EXPECT_EQ(s.constants.step_overhead_s, c.step_overhead_s);
  EXPECT_EQ(s.constants.allreduce_latency_s, c.allreduce_latency_s);
  EXPECT_EQ(s.constants.eager_launch_s_per_layer, c.eager_launch_s_per_layer);
}

TEST(SimOptionsTest, SweepListItemErrorsNameTheFlag) {
  ExpectRejected<SweepCliOptions>(ParseSweepArgs, {
      {{"--tp", "2,x"}, "--tp: 'x' is not a non-negative integer"},
      {{"--max-batch", "8,,16"}, "--max-batch: '' is not"},
      {{"--rates-per-gpu", "0.5,fast"}, "--rates-per-gpu: 'fast' is not a number"},
      {{"--concurrency", "8,-1"}, "--concurrency: '-1' is not"},
      {{"--pd", "2:0"}, "--pd: '2:0' is not a ratio"},
      {{"--pd", "2:1:1"}, "--pd: '2:1:1'"},
      {{"--layouts", "both"}, "--layouts: 'both'"},
      {{"--max-ttft-ms", "-5"}, "--max-ttft-ms"},
  });
}

TEST(SimOptionsTest, CalibrateFlagsAndDefaults) {
  auto d = ParseCalibrateArgs({}, NoEnv());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->calibration.points,
            (std::vector<std::string>{"disagg_1node", "disagg_2node", "kv_routing_ttft"}));
  EXPECT_FALSE(d->calibration.quick);
  EXPECT_EQ(d->calibration.num_requests, 0u);
  EXPECT_EQ(d->calibration.seed, 1u);
  EXPECT_EQ(d->calibration.tolerance, 0.15);
  EXPECT_FALSE(d->strict);
  EXPECT_EQ(d->calibration.routing_workload, CalibrationOptions{}.routing_workload);
  EXPECT_EQ(d->calibration.routing_workload, "dynamo_mooncake_trace_1000.jsonl");
  auto o = ParseCalibrateArgs(std::vector<std::string>{"--quick", "--num-requests", "50", "--tolerance", "0.2",
                                                       "--decode-hbm-efficiency", "0.9"},
                              NoEnv());
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->calibration.quick);
  EXPECT_EQ(o->calibration.num_requests, 50u);
  EXPECT_EQ(o->calibration.tolerance, 0.2);
  EXPECT_EQ(o->calibration.constants.decode_hbm_efficiency, 0.9);
  for (const std::string w : {"synthetic", "mooncake_conversation_trace.jsonl", "/data/t.jsonl"}) {
    auto r = ParseCalibrateArgs(std::vector<std::string>{"--routing-workload", w}, NoEnv());
    ASSERT_TRUE(r.ok()) << w << ": " << r.status().ToString();
    EXPECT_EQ(r->calibration.routing_workload, w);
  }
  auto env = ParseCalibrateArgs({}, MapEnvLookup({{"KVMESH_SIM_CALIBRATE_ROUTING_WORKLOAD", "synthetic"}}));
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->calibration.routing_workload, "synthetic");
  ExpectRejected<CalibrateCliOptions>(ParseCalibrateArgs, {
      {{"--routing-workload", ""}, "--routing-workload: empty"},
      {{"--routing-workload="}, "--routing-workload: empty"},
      {{"--tolerance", "2"}, "--tolerance"},
      {{"--seed", "-3"}, "--seed"},
      {{"--points", "disagg_9node"}, "disagg_9node"},
      {{"--quick=maybe"}, "--quick: expected bool"},
  });
}

TEST(SimOptionsTest, PlacementFlagsDefaultsAndLists) {
  auto d = ParsePlacementArgs({}, NoEnv());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const PlacementScenario def = DefaultPlacementScenario();
  EXPECT_EQ(d->policies, (std::vector<std::string>{"spread", "pack", "cache-locality"}));
  EXPECT_EQ(d->scenario.regions, def.regions);
  ASSERT_EQ(d->scenario.clusters.size(), def.clusters.size());
  EXPECT_EQ(d->scenario.clusters[1].name, "eu-west-1");
  EXPECT_EQ(d->scenario.clusters[1].gpu_capacity, 16);
  ASSERT_EQ(d->scenario.links.size(), 3u);  // the default links
  EXPECT_EQ(d->scenario.links[2].latency_ms, 60);
  EXPECT_EQ(d->scenario.decode_replicas, 12);
  EXPECT_EQ(d->scenario.prefill_replicas, 0);
  EXPECT_EQ(d->scenario.decode_pool.model, "llama-3.1-8b");
  EXPECT_EQ(d->scenario.workload.num_requests, 6000u);
  EXPECT_EQ(d->scenario.workload.rate, 60);
  EXPECT_EQ(d->scenario.workload.regional_affinity, 0.9);
  EXPECT_EQ(d->scenario.routing_policy, "kv:kvmesh");
  EXPECT_EQ(d->scenario.base.disaggregation.mode, "off");
  EXPECT_TRUE(d->scenario.warm_homes);
  EXPECT_TRUE(d->scenario.execute_copies);
  auto cold = ParsePlacementArgs(std::vector<std::string>{"--no-warm-homes", "--execute-copies=false"}, NoEnv());
  ASSERT_TRUE(cold.ok()) << cold.status().ToString();
  EXPECT_FALSE(cold->scenario.warm_homes);
  EXPECT_FALSE(cold->scenario.execute_copies);

  // --link is repeatable; the two spellings of one list agree.
  auto l = ParsePlacementArgs(
      std::vector<std::string>{"--regions", "a:4,b:8,c:2", "--link", "a:b:100:40", "--link=b:c:10:5", "--requests",
                               "50", "--shared-prefix", "0.3", "--prefixes", "5", "--prefill", "2", "--tp", "2",
                               "--gpu", "h200", "--affinity", "0.5", "--zipf", "0.8", "--routing", "random",
                               "--seed", "4", "--json", "p.json", "--quiet"},
      NoEnv());
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  const PlacementScenario& s = l->scenario;
  EXPECT_EQ(s.regions, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(s.clusters[2].name, "c-1");
  EXPECT_EQ(s.clusters[1].gpu_capacity, 8);
  ASSERT_EQ(s.links.size(), 2u);
  EXPECT_EQ(s.links[1].from, "b-1");
  EXPECT_EQ(s.links[1].to, "c-1");
  EXPECT_EQ(s.links[1].bandwidth_gbps, 10);
  EXPECT_EQ(s.links[1].latency_ms, 5);
  EXPECT_EQ(s.workload.num_requests, 50u);
  EXPECT_EQ(s.workload.shared_prefix_ratio, 0.3);
  EXPECT_EQ(s.workload.num_prefixes, 5u);
  EXPECT_EQ(s.workload.regional_affinity, 0.5);
  EXPECT_EQ(s.workload.zipf_s, 0.8);
  EXPECT_EQ(s.workload.seed, 4u);
  EXPECT_EQ(s.base.seed, 4u);
  EXPECT_EQ(s.prefill_replicas, 2);
  EXPECT_EQ(s.base.disaggregation.mode, "always");
  EXPECT_EQ(s.decode_pool.tp, 2u);
  EXPECT_EQ(s.prefill_pool.gpu, "h200");
  EXPECT_EQ(s.prefill_pool.role, router::WorkerRole::kPrefill);
  EXPECT_EQ(s.routing_policy, "random");
  EXPECT_EQ(l->json, "p.json");
  EXPECT_TRUE(l->quiet);
  // --regions without --link: no links (the defaults name the default regions' clusters).
  auto r = ParsePlacementArgs(std::vector<std::string>{"--regions", "us-east:8,eu-west:8"}, NoEnv());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->scenario.links.empty());

  ExpectRejected<PlacementCliOptions>(ParsePlacementArgs, {
      {{"--link", "a:b:100"}, "--link: 'a:b:100' is not A:B:GBIT:MS"},
      {{"--link", "a:b:fast:4"}, "--link a:b:fast:4: GBIT: 'fast' is not a number"},
      {{"--regions", "a:4,b"}, "--regions: 'b' is not NAME:GPUS"},
      {{"--regions", "a:-4"}, "--regions a:-4: GPUS: '-4' is not a non-negative integer"},
      {{"--decode", "0"}, "--decode: must be"},
      {{"--requests", "0"}, "--requests: must be"},
      {{"--shared-prefix", "2"}, "--shared-prefix: must be in [0, 1]"},
      {{"--affinity", "x"}, "--affinity: expected a finite number, got 'x'"},
      {{"--num-requests", "10"}, "unknown flag --num-requests"},
  });
}

TEST(SimOptionsTest, PlannerFlagsAndDefaults) {
  auto d = ParsePlannerArgs({}, NoEnv());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const PlannerSimOptions def = DefaultPlannerSimOptions();
  EXPECT_EQ(d->options.pool.model, "llama-3.1-70b");
  EXPECT_EQ(d->options.pool.tp, 4u);
  EXPECT_EQ(d->options.pool.count, 1u);
  EXPECT_EQ(d->options.planner.decode.min_replicas, 1);
  EXPECT_EQ(d->options.planner.decode.max_replicas, 12);
  EXPECT_EQ(d->options.planner.itl_target_s, 0.04);
  EXPECT_EQ(d->options.planner.interval_s, 15);
  EXPECT_EQ(d->options.planner.scale_down_window_s, 60);
  EXPECT_EQ(d->options.ramp.base_rate, 2);
  EXPECT_EQ(d->options.ramp.peak_rate, 30);
  EXPECT_EQ(d->options.ramp.ramp_up_s, 60);
  EXPECT_EQ(d->options.ramp.input_tokens, 1000u);
  EXPECT_EQ(d->options.ramp.output_tokens, 200u);
  EXPECT_EQ(d->options.pool.constants.step_overhead_s, def.pool.constants.step_overhead_s);
  EXPECT_FALSE(d->options.planner.prefill.enabled);

  using O = PlannerCliOptions;
  ExpectAccepted<O>(ParsePlannerArgs, {
      {{"--gpu", "h200", "--model", "llama-3.1-8b", "--tp", "1"},
       [](const O& o) { return o.options.pool.gpu == "h200" && o.options.pool.model == "llama-3.1-8b" && o.options.pool.tp == 1; }},
      {{"--replicas", "3"}, [](const O& o) { return o.options.pool.count == 3; }},
      {{"--min", "2", "--max", "6"},
       [](const O& o) { return o.options.planner.decode.min_replicas == 2 && o.options.planner.decode.max_replicas == 6; }},
      {{"--itl-target", "0.03"}, [](const O& o) { return o.options.planner.itl_target_s == 0.03; }},
      {{"--interval", "10", "--scale-down-window", "30"},
       [](const O& o) { return o.options.planner.interval_s == 10 && o.options.planner.scale_down_window_s == 30; }},
      {{"--base-rate", "1", "--peak-rate", "40"},
       [](const O& o) { return o.options.ramp.base_rate == 1 && o.options.ramp.peak_rate == 40; }},
      {{"--up", "10", "--hold", "20", "--down", "30", "--tail", "40"},
       [](const O& o) {
         const RampOptions& r = o.options.ramp;
         return r.ramp_up_s == 10 && r.hold_s == 20 && r.ramp_down_s == 30 && r.tail_s == 40;
       }},
      {{"--isl", "500", "--osl", "100"},
       [](const O& o) { return o.options.ramp.input_tokens == 500 && o.options.ramp.output_tokens == 100; }},
      {{"--seed", "5"}, [](const O& o) { return o.options.ramp.seed == 5 && o.options.base.seed == 5; }},
      {{"--json", "t.json", "--quiet"}, [](const O& o) { return o.json == "t.json" && o.quiet; }},
  });
  ExpectRejected<PlannerCliOptions>(ParsePlannerArgs, {
      {{"--up", "-5"}, "--up: must be a finite number >= 0, got -5"},
      {{"--interval", "soon"}, "--interval: expected a finite number, got 'soon'"},
      {{"--max", "3000000000"}, "--max: value 3000000000 is out of range for int32"},
      {{"--min", "-1"}, "--min: must be a finite number >= 0, got -1"},
      {{"--replicas", "-1"}, "--replicas"},
      {{"--model", "gpt-9"}, "--model"},
  });
}

TEST(SimOptionsTest, HelpComesFromTheDeclarations) {
  for (const auto& [parse_help, usage, flag] :
       std::vector<std::tuple<bool, std::string, std::string>>{
           {ParseSimArgs(std::vector<std::string>{"--help"}, NoEnv())->help, SimUsage(),
            "--num-requests <uint64>  requests in the workload (default 1000) [env KVMESH_SIM_NUM_REQUESTS]"},
           {ParseSweepArgs(std::vector<std::string>{"-h"}, NoEnv())->help, SweepUsage(),
            "--num-requests <uint64>  requests in the workload (default 400) [env KVMESH_SIM_SWEEP_NUM_REQUESTS]"},
           {ParseCalibrateArgs(std::vector<std::string>{"--help"}, NoEnv())->help, CalibrateUsage(),
            "--tolerance <double>  relative tolerance of the verdict (default 0.15)"},
           {ParseCalibrateArgs(std::vector<std::string>{"--help"}, NoEnv())->help, CalibrateUsage(),
            "(default \"dynamo_mooncake_trace_1000.jsonl\") [env KVMESH_SIM_CALIBRATE_ROUTING_WORKLOAD]"},
           {ParsePlacementArgs(std::vector<std::string>{"--help"}, NoEnv())->help, PlacementUsage(),
            "--requests <uint64>  requests in the workload (default 6000) [env KVMESH_SIM_PLACEMENT_REQUESTS]"},
           {ParsePlannerArgs(std::vector<std::string>{"--help"}, NoEnv())->help, PlannerUsage(),
            "--max <int32>  planner: most decode replicas (default 12)"},
       }) {
    EXPECT_TRUE(parse_help);
    EXPECT_NE(usage.find(flag), std::string::npos) << usage;
  }
  EXPECT_NE(PlacementUsage().find("(repeatable)"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::sim
