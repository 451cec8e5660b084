#include "sim/perf_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace kvmesh::sim {
namespace {

PerfModel MakeOrDie(std::string_view gpu, std::string_view model, uint32_t tp, bool fp8 = false,
                    PerfConstants c = {}) {
  c.fp8_weights = fp8;
  auto g = GpuByName(gpu);
  auto m = ModelByName(model);
  EXPECT_TRUE(g.ok() && m.ok());
  auto pm = PerfModel::Make(*g, *m, tp, c);
  EXPECT_TRUE(pm.ok()) << pm.status().ToString();
  return *std::move(pm);
}

TEST(PerfModelTest, LookupsAreCaseInsensitiveAndListKnownNames) {
  ASSERT_TRUE(GpuByName("H100").ok());
  EXPECT_EQ(GpuByName("H100")->name, "h100");
  EXPECT_DOUBLE_EQ(GpuByName("h200")->hbm_gbps, 4800);
  EXPECT_DOUBLE_EQ(GpuByName("h100")->bf16_tflops, 989);  // dense, not the sparse 1,979
  EXPECT_TRUE(ModelByName("Llama-3.1-70B").ok());
  EXPECT_TRUE(LinkByName("IB400").ok());
  auto bad = GpuByName("a100");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  EXPECT_NE(bad.status().message().find("h100, h200, b200"), std::string::npos);
  EXPECT_EQ(ModelByName("llama-2").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(LinkByName("carrier-pigeon").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(KnownGpus(), (std::vector<std::string>{"h100", "h200", "b200"}));
  EXPECT_EQ(KnownModels().size(), 3u);
}

TEST(PerfModelTest, KvBytesPerTokenMatchPerfModelMd) {
  // 2 (K,V) x layers x KV heads x head dim x 2 bytes.
  EXPECT_EQ(ModelByName("llama-3.1-8b")->kv_bytes_per_token, 131072u);
  EXPECT_EQ(ModelByName("llama-3.1-70b")->kv_bytes_per_token, 327680u);
  EXPECT_EQ(ModelByName("gpt-oss-120b")->kv_bytes_per_token, 73728u);
  for (const std::string& name : KnownModels()) {
    ModelSpec m = *ModelByName(name);
    EXPECT_EQ(m.kv_bytes_per_token, 2ull * m.layers * m.kv_heads * m.head_dim * 2) << name;
  }
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  EXPECT_EQ(m.KvBytes(12000), 3932160000ull);  // ~3.9 GB
}

TEST(PerfModelTest, TransferOf12kTokenPromptMatchesPublishedEstimates) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  const uint64_t bytes = m.KvBytes(12000);
  const double ib = PerfModel::TransferSeconds(bytes, *LinkByName("ib400"));
  const double nvl = PerfModel::TransferSeconds(bytes, *LinkByName("nvlink"));
  const double tcp = PerfModel::TransferSeconds(bytes, *LinkByName("tcp"));
  // Hand-derived: 20 us + 3.932e9 / 45e9 = 87.4 ms; 10 us + 3.932e9 / 450e9 = 8.75 ms.
  EXPECT_NEAR(ib, 0.08740, 0.0001);
  EXPECT_NEAR(nvl, 0.008748, 0.00001);
  EXPECT_NEAR(tcp, 1.966, 0.001);
  // PERF-MODEL.md: ~79 ms over one 400G NIC (line rate 50 GB/s; we use the achievable 45 GB/s),
  // ~9 ms over NVLink.
  EXPECT_NEAR(ib / 0.079, 1.0, 0.15);
  EXPECT_NEAR(nvl / 0.009, 1.0, 0.05);
  EXPECT_DOUBLE_EQ(PerfModel::TransferSeconds(0, *LinkByName("ib400")), 20e-6);
}

TEST(PerfModelTest, H100Llama70bFp8Tp4DecodeStepAtBatchOne) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  const double step = m.DecodeStepSeconds(1, 1000);
  // Hand-derived: (70.6e9 + 1000 x 327680) B / (4 x 0.8 x 3.35e12 B/s) = 6.62 ms, plus 160
  // all-reduces x (8 us + 1.5 x 16 KB / 450 GB/s) = 1.29 ms, plus 2 ms overhead = 9.91 ms.
  EXPECT_NEAR(step, 0.009905, 0.00002);
  // Plausible: vLLM/TRT-LLM serve a single 70B FP8 user at ~60-150 tokens/s on 4 H100s.
  EXPECT_GT(1 / step, 60);
  EXPECT_LT(1 / step, 150);
}

TEST(PerfModelTest, PrefillIsComputeBoundWithAttention) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-8b", 1);
  // 2 x 8.03e9 x 3000 / (0.5 x 989e12) = 97.4 ms; attention 4 x 4096 x 32 x (3000 x 1500) /
  // (0.5 x 989e12) = 4.8 ms; overhead 2 ms.
  EXPECT_NEAR(m.PrefillSeconds(3000, 0), 0.10420, 0.0001);
  // A one-token prefill is bounded by reading the weights: 16.06 GB / 2.68 TB/s = 6.0 ms + 2 ms.
  EXPECT_NEAR(m.PrefillSeconds(1, 0), 16.06e9 / (0.8 * 3350e9) + 0.002, 0.0001);
  // The single-sequence case of the batched form.
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(1000, 500), m.PrefillBatchSeconds(1000, 1000 * (500 + 500.0)));
  // Zero new tokens (fully cached) still recomputes one token.
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(0, 4096), m.PrefillSeconds(1, 4096));
}

TEST(PerfModelTest, TimesAreMonotonicAndPositive) {
  // With the eager-launch floor a short prefill is flat at the floor (non-decreasing); without it
  // the GPU roofline grows strictly with every token.
  for (double eager : {150e-6, 0.0})
  for (const char* model : {"llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b"}) {
    PerfConstants c;
    c.eager_launch_s_per_layer = eager;
    PerfModel m = MakeOrDie("h200", model, model == std::string("llama-3.1-8b") ? 1 : 4, false, c);
    double prev = 0;
    for (uint32_t n : {1u, 16u, 128u, 512u, 2048u, 8192u, 32768u}) {
      const double t = m.PrefillSeconds(n, 0);
      if (eager > 0) {
        EXPECT_GE(t, prev) << model << " n=" << n;
      } else {
        EXPECT_GT(t, prev) << model << " n=" << n;
      }
      EXPECT_GE(m.PrefillSeconds(n, 4096), t) << model;
      prev = t;
    }
    prev = 0;
    for (uint32_t b : {1u, 2u, 8u, 32u, 128u, 512u}) {
      const double t = m.DecodeStepSeconds(b, uint64_t{b} * 2000);
      EXPECT_GE(t, prev) << model << " b=" << b;
      EXPECT_GT(t, 0);
      EXPECT_LE(m.DecodeStepSeconds(b, 1000), m.DecodeStepSeconds(b, 100000)) << model;
      prev = t;
    }
  }
}

TEST(PerfModelTest, DecodeBecomesComputeBoundAtLargeBatch) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-8b", 1);
  // Batch 4096 with tiny contexts: 2 x 8.03e9 x 4096 / (0.5 x 989e12) = 133 ms >> 6 ms of weights.
  const double t = m.DecodeStepSeconds(4096, 4096);
  EXPECT_NEAR(t - 0.002, 2 * 8.03e9 * 4096 / (0.5 * 989e12), 0.002);
}

TEST(PerfModelTest, TensorParallelScalesWithAllReduceCost) {
  PerfModel tp1 = MakeOrDie("h100", "llama-3.1-8b", 1);
  PerfModel tp2 = MakeOrDie("h100", "llama-3.1-8b", 2);
  PerfModel tp4 = MakeOrDie("h100", "llama-3.1-8b", 4);
  EXPECT_EQ(tp1.AllReduceSeconds(1000), 0);
  // 64 all-reduces x (8 us + 2 x 1/2 x 1000 x 4096 x 2 B / 450 GB/s).
  EXPECT_NEAR(tp2.AllReduceSeconds(1000), 64 * (8e-6 + 8192000.0 / 450e9), 1e-9);
  const double p1 = tp1.PrefillSeconds(8192, 0), p2 = tp2.PrefillSeconds(8192, 0),
               p4 = tp4.PrefillSeconds(8192, 0);
  EXPECT_LT(p2, p1);
  EXPECT_LT(p4, p2);
  EXPECT_GT(p2, p1 / 2);  // communication and fixed overhead keep it from halving
  const double d1 = tp1.DecodeStepSeconds(1, 1000), d4 = tp4.DecodeStepSeconds(1, 1000);
  EXPECT_LT(d4, d1);
  EXPECT_GT(d4, d1 / 4);
  // KV capacity grows faster than tp (weights are paid once).
  EXPECT_GT(tp2.KvCapacityTokens(), 2 * tp1.KvCapacityTokens());
}

TEST(PerfModelTest, KvCapacityAndModelsThatDoNotFit) {
  // (80 GB x 0.9 - 1 GB reserve) - 16.06 GB of bf16 weights = 54.94 GB / 131072 B per token.
  EXPECT_EQ(MakeOrDie("h100", "llama-3.1-8b", 1).KvCapacityTokens(), 419158u);
  // 8 x 71 GB - 70.6 GB FP8 weights = 497.4 GB / 327680.
  EXPECT_EQ(MakeOrDie("h100", "llama-3.1-70b", 8, true).KvCapacityTokens(), 1517944u);
  GpuSpec h100 = *GpuByName("h100");
  ModelSpec l70 = *ModelByName("llama-3.1-70b");
  auto bf16_one = PerfModel::Make(h100, l70, 1);  // 141 GB of bf16 weights on 80 GB
  ASSERT_FALSE(bf16_one.ok());
  EXPECT_EQ(bf16_one.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bf16_one.status().message().find("does not fit"), std::string::npos);
  EXPECT_NE(bf16_one.status().message().find("141.2 GB"), std::string::npos);
  // 141.2 GB of bf16 weights in 2 x 71 GB: fits, with room for only ~2.4k tokens of KV.
  auto bf16_two = PerfModel::Make(h100, l70, 2);
  ASSERT_TRUE(bf16_two.ok());
  EXPECT_EQ(bf16_two->KvCapacityTokens(), 2441u);
  PerfConstants tight;
  tight.memory_utilization = 0.8;  // 2 x 63 GB < 141.2 GB
  EXPECT_EQ(PerfModel::Make(h100, l70, 2, tight).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(PerfModel::Make(h100, l70, 4).ok());
  EXPECT_EQ(PerfModel::Make(h100, l70, 3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PerfModel::Make(h100, l70, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PerfModel::Make(h100, l70, 16).status().code(), StatusCode::kInvalidArgument);
  PerfConstants bad;
  bad.prefill_mfu = 0;
  EXPECT_EQ(PerfModel::Make(h100, l70, 4, bad).status().code(), StatusCode::kInvalidArgument);
  ModelSpec broken = l70;
  broken.kv_bytes_per_token = 0;
  EXPECT_FALSE(PerfModel::Make(h100, broken, 4).ok());
}

TEST(PerfModelTest, MoeReadsOnlyTouchedExpertsAndSlidingWindowCapsKv) {
  PerfModel m = MakeOrDie("h100", "gpt-oss-120b", 1);
  ModelSpec spec = m.model();
  const double all = spec.total_params_b * 1e9 * spec.weight_bytes_per_param;  // ~66.6 GB
  EXPECT_NEAR(m.WeightBytes(), all, 1);
  // At batch 1 a step reads the active parameters only: 5.1e9 x 0.57 B.
  EXPECT_NEAR(m.DecodeWeightBytesRead(1), 5.1e9 * 0.57, 1e6);
  EXPECT_LT(m.DecodeWeightBytesRead(8), m.DecodeWeightBytesRead(64));
  EXPECT_NEAR(m.DecodeWeightBytesRead(4096), all, all * 1e-6);
  // Decode at batch 1 is far faster than a dense model of the same total size would be.
  EXPECT_LT(m.DecodeStepSeconds(1, 1000), 0.002 + all / (0.8 * 3350e9) / 4);
  // Sliding window: 100k tokens of context read the full KV in 18 layers and 128 tokens in the
  // other 18, so about half of the naive 100k x 73728 B.
  const double naive = 100000.0 * 73728 / (0.8 * 3350e9);
  const double t = m.DecodeStepSeconds(1, 100000) - m.DecodeStepSeconds(1, 0);
  EXPECT_NEAR(t, naive / 2, naive * 0.01);
  // MXFP4 weights of ~117 B parameters fit one 80 GB H100.
  EXPECT_GT(m.KvCapacityTokens(), 0u);
}

TEST(PerfModelTest, MixedStepAmortisesWeightReads) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  const double decode = m.DecodeStepSeconds(32, 32 * 3000);
  const double prefill = m.PrefillBatchSeconds(256, 256 * 128.0);
  const double mixed = m.MixedStepSeconds(32, 32 * 3000, 256, 256 * 128.0);
  EXPECT_GE(mixed, decode);
  EXPECT_LT(mixed, decode + prefill);
}

// Decode-only steps replay a CUDA graph; a step carrying prefill tokens launches its kernels
// eagerly and cannot finish before the last launch: layers x eager_launch_s_per_layer.
TEST(PerfModelTest, StepsWithPrefillPayEagerLaunchDecodeOnlyStepsDoNot) {
  PerfConstants c;
  c.eager_launch_s_per_layer = 150e-6;
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 8, true, c);
  c.eager_launch_s_per_layer = 0;
  PerfModel graphs = MakeOrDie("h100", "llama-3.1-70b", 8, true, c);
  // Decode only: identical with or without the eager cost.
  EXPECT_DOUBLE_EQ(m.DecodeStepSeconds(16, 16 * 3000), graphs.DecodeStepSeconds(16, 16 * 3000));
  // 16 decodes + a 64-token chunk: the GPU part (~5 ms) is below 80 x 150 us = 12 ms of launches.
  const double small = m.MixedStepSeconds(16, 16 * 3000, 64, 64 * 1500.0);
  EXPECT_LT(graphs.MixedStepSeconds(16, 16 * 3000, 64, 64 * 1500.0), 0.012);
  EXPECT_NEAR(small, 80 * 150e-6 + 0.002, 1e-9);
  // A 3000-token prefill keeps the GPU busier than the launches take: no extra cost.
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(3000, 0), graphs.PrefillSeconds(3000, 0));
}

// Attention is a separate kernel from the GEMMs: in a compute-bound mixed step the decode
// sequences' KV reads add to the step instead of hiding under the prefill's GEMM FLOPs.
TEST(PerfModelTest, DecodeKvReadsAddToAComputeBoundMixedStep) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  const uint64_t ctx = 32 * 3000;
  const double kv_s = 327680.0 * ctx / (0.8 * 3350e9 * 4);  // 31.5 GB at 10.7 TB/s: 2.9 ms
  const double with = m.MixedStepSeconds(32, ctx, 2048, 2048 * 1024.0);
  const double without = m.MixedStepSeconds(32, 0, 2048, 2048 * 1024.0);
  EXPECT_NEAR(with - without, kv_s, 1e-9);
}

// The first analytic sanity check against Dynamo's disaggregation chart (docs/simulator.md):
// Llama-3.1-70B FP8 on H100, ISL 3000 / OSL 150, tokens/s/GPU at a tokens/s/user target, best
// aggregated vs best disaggregated layout on one node (8 GPUs) and two nodes (16 GPUs). This is a
// model sanity check with loose bounds, not the calibration (that runs through the engine).
struct Frontier {
  SteadyStatePoint agg, disagg;
};

Frontier BestLayouts(uint32_t gpus, double user_rate, bool chunked, uint32_t chunk,
                     const PerfConstants& constants = {}) {
  const uint32_t isl = 3000, osl = 150;
  std::vector<SteadyStatePoint> agg, disagg;
  std::vector<PerfModel> models;
  for (uint32_t tp : {2u, 4u, 8u}) {
    models.push_back(MakeOrDie("h100", "llama-3.1-70b", tp, true, constants));
  }
  for (const PerfModel& m : models) {
    for (uint32_t b = 1; b <= 512; b = b < 16 ? b + 1 : b + b / 8) {
      auto p = AggregatedSteadyState(m, isl, osl, b, chunked, chunk);
      if (p.ok()) agg.push_back(*p);
    }
  }
  for (const PerfModel& pm : models) {
    for (const PerfModel& dm : models) {
      for (uint32_t np = 1; np * pm.tp() < gpus; ++np) {
        const uint32_t left = gpus - np * pm.tp();
        const uint32_t nd = left / dm.tp();
        if (nd == 0) continue;
        for (uint32_t b = 1; b <= 512; b = b < 16 ? b + 1 : b + b / 8) {
          auto p = DisaggregatedSteadyState(pm, np, dm, nd, isl, osl, b);
          if (p.ok()) disagg.push_back(*p);
        }
      }
    }
  }
  Frontier f;
  auto a = BestAtUserRate(agg, user_rate);
  auto d = BestAtUserRate(disagg, user_rate);
  EXPECT_TRUE(a.ok() && d.ok());
  if (a.ok()) f.agg = *a;
  if (d.ok()) f.disagg = *d;
  return f;
}

TEST(PerfModelCalibrationTest, DisaggregationSanityCheckLlama70bH100) {
  struct Case {
    uint32_t gpus;
    double user_rate;
    double published_gain;
  };
  struct Mode {
    bool chunked;
    uint32_t chunk;
    const char* name;
  };
  for (Mode mode : {Mode{false, 0, "unchunked"}, Mode{true, 2048, "chunk 2048"},
                    Mode{true, 0, "ideal chunking"}}) {
    for (Case c : {Case{8, 50, 1.3}, Case{16, 40, 2.0}}) {
      Frontier f = BestLayouts(c.gpus, c.user_rate, mode.chunked, mode.chunk);
      const double gain = f.disagg.tokens_per_s_gpu / f.agg.tokens_per_s_gpu;
      std::printf(
          "[calib] %2u GPUs @ >= %.0f tok/s/user, agg %-14s: best agg %-18s b=%-3u %.1f tok/s/user "
          "%.1f tok/s/GPU | best disagg %-34s b=%-3u %.1f tok/s/user %.1f tok/s/GPU | gain %.2fx "
          "(published %.1fx)\n",
          c.gpus, c.user_rate, mode.name, f.agg.layout.c_str(), f.agg.batch,
          f.agg.tokens_per_s_user, f.agg.tokens_per_s_gpu, f.disagg.layout.c_str(), f.disagg.batch,
          f.disagg.tokens_per_s_user, f.disagg.tokens_per_s_gpu, gain, c.published_gain);
      EXPECT_GE(f.agg.tokens_per_s_user, c.user_rate);
      EXPECT_GE(f.disagg.tokens_per_s_user, c.user_rate);
      // Loose bounds (a sanity check, not the calibration): when prefill interferes with decode
      // (whole prompts or 2048-token chunks) disaggregation must win in the interactive region,
      // and not absurdly. Ideal chunking is printed for the docs: it favours aggregation.
      if (mode.chunk != 0 || !mode.chunked) {
        EXPECT_GT(gain, 1.0) << mode.name;
        EXPECT_LT(gain, 5.0) << mode.name;
      }
    }
  }
}

// Which constant moves the gain how much (the sensitivity table in docs/simulator.md).
TEST(PerfModelCalibrationTest, DisaggregationGainSensitivity) {
  struct Variant {
    const char* name;
    PerfConstants c;
  };
  std::vector<Variant> variants;
  variants.push_back({"defaults", {}});
  auto add = [&](const char* name, auto mutate) {
    PerfConstants c;
    mutate(c);
    variants.push_back({name, c});
  };
  add("step_overhead 0.5 ms", [](PerfConstants& c) { c.step_overhead_s = 0.0005; });
  add("step_overhead 5 ms", [](PerfConstants& c) { c.step_overhead_s = 0.005; });
  add("prefill_mfu 0.35", [](PerfConstants& c) { c.prefill_mfu = 0.35; });
  add("prefill_mfu 0.7", [](PerfConstants& c) { c.prefill_mfu = 0.7; });
  add("decode_hbm_efficiency 0.6", [](PerfConstants& c) { c.decode_hbm_efficiency = 0.6; });
  add("decode_hbm_efficiency 0.9", [](PerfConstants& c) { c.decode_hbm_efficiency = 0.9; });
  add("allreduce_latency 20 us", [](PerfConstants& c) { c.allreduce_latency_s = 20e-6; });
  add("allreduce_latency 2 us", [](PerfConstants& c) { c.allreduce_latency_s = 2e-6; });
  double low_overhead = 0, high_overhead = 0;
  for (const Variant& v : variants) {
    std::printf("[sens] %-26s", v.name);
    for (uint32_t chunk : {1u, 2048u, 0u}) {  // 1 = unchunked (marker), 2048, 0 = ideal
      const bool chunked = chunk != 1;
      const uint32_t c = chunked ? chunk : 0;
      Frontier one = BestLayouts(8, 50, chunked, c, v.c);
      Frontier two = BestLayouts(16, 40, chunked, c, v.c);
      const double g1 = one.disagg.tokens_per_s_gpu / one.agg.tokens_per_s_gpu;
      const double g2 = two.disagg.tokens_per_s_gpu / two.agg.tokens_per_s_gpu;
      std::printf(" | %.2f, %.2f", g1, g2);
      if (!chunked && v.c.step_overhead_s == 0.0005) low_overhead = g2;
      if (!chunked && v.c.step_overhead_s == 0.005) high_overhead = g2;
    }
    std::printf("\n");
  }
  // Fixed per-step costs hurt small interleaved aggregated batches more than big decode batches.
  EXPECT_GT(high_overhead, low_overhead);
}

TEST(PerfModelCalibrationTest, AggregatedFrontierTradesUserRateForGpuRate) {
  PerfModel m = MakeOrDie("h100", "llama-3.1-70b", 4, true);
  double prev_gpu = 0, prev_user = 1e9;
  for (uint32_t b : {1u, 4u, 16u, 64u}) {
    auto p = AggregatedSteadyState(m, 3000, 150, b);
    ASSERT_TRUE(p.ok());
    EXPECT_GT(p->tokens_per_s_gpu, prev_gpu);
    // Small batches sit on the eager-launch floor of their mixed steps: equal user rate there.
    EXPECT_LE(p->tokens_per_s_user, prev_user);
    prev_gpu = p->tokens_per_s_gpu;
    prev_user = p->tokens_per_s_user;
  }
  EXPECT_EQ(AggregatedSteadyState(m, 3000, 150, 100000).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(AggregatedSteadyState(m, 0, 150, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(BestAtUserRate({}, 10).status().code(), StatusCode::kNotFound);
  // 70B FP8 on one H100 holds ~1.2k tokens of KV: it cannot prefill a 3000-token prompt.
  PerfModel tp1 = MakeOrDie("h100", "llama-3.1-70b", 1, true);
  EXPECT_LT(tp1.KvCapacityTokens(), 3000u);
  EXPECT_EQ(DisaggregatedSteadyState(tp1, 1, m, 1, 3000, 150, 8).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_TRUE(DisaggregatedSteadyState(m, 1, m, 1, 3000, 150, 8).ok());
}

}  // namespace
}  // namespace kvmesh::sim
