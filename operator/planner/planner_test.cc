#include "operator/planner/planner.h"

#include <cmath>
#include <memory>

#include <gtest/gtest.h>

namespace kvmesh::planner {
namespace {

// One prefill replica: TTFT = load / 20000 s, so 10000 prompt tokens/s at the 500 ms target.
// One decode replica: ITL = 1 ms per sequence, so 50 sequences = 1000 tokens/s at the 50 ms target.
// With ISL 1000 / OSL 100 both pools need rate / 10 replicas.
std::shared_ptr<const PerfProfile> LinearProfile() {
  return std::make_shared<CallbackPerfProfile>([](double, double load) { return load / 20000.0; },
                                               [](double, double c) { return 0.001 * c; });
}

PlannerConfig Config() {
  PlannerConfig c;
  c.ttft_target_s = 0.5;
  c.itl_target_s = 0.05;
  c.prefill = {true, 1, 8};
  c.decode = {true, 1, 8};
  c.predictor = "constant";
  c.interval_s = 30;
  c.scale_up_window_s = 0;
  c.scale_down_window_s = 300;
  c.max_scale_up_step = 4;
  c.max_scale_down_step = 1;
  return c;
}

std::unique_ptr<Planner> Make(const PlannerConfig& c) {
  auto p = Planner::Create(c, LinearProfile());
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return std::move(p).value();
}

LoadSample Sample(double t, double rate, int prefill, int decode, double isl = 1000, double osl = 100) {
  LoadSample s;
  s.time_s = t;
  s.request_rate = rate;
  s.mean_isl = isl;
  s.mean_osl = osl;
  s.prefill_replicas = prefill;
  s.decode_replicas = decode;
  return s;  // latencies unknown: corrections stay at 1
}

// Runs a load trace where the pools follow every decision, as the operator would make them.
struct Loop {
  std::unique_ptr<Planner> planner;
  int prefill = 1, decode = 1;
  double t = 0;
  Decision Step(double rate, double isl = 1000, double osl = 100) {
    Decision d = planner->Decide(t, Sample(t, rate, prefill, decode, isl, osl));
    prefill = d.prefill.replicas;
    decode = d.decode.replicas;
    t += 30;
    return d;
  }
};

TEST(PlannerTest, RisingLoadScalesUpWithinLimitsAndStepSize) {
  Loop loop{Make(Config())};
  int last = 1;
  for (double rate : {5.0, 30.0, 70.0, 100.0, 150.0}) {
    const Decision d = loop.Step(rate);
    EXPECT_LE(d.prefill.replicas, 8);
    EXPECT_LE(d.prefill.replicas - last, 4) << "step limit";
    EXPECT_EQ(d.prefill.replicas, d.decode.replicas) << "same need for both pools in this profile";
    last = d.prefill.replicas;
  }
  EXPECT_EQ(loop.prefill, 8);
  // 30 req/s: 3 replicas at once (scale-up window 0).
  Loop once{Make(Config())};
  const Decision d = once.Step(30);
  EXPECT_EQ(d.prefill.replicas, 3);
  EXPECT_EQ(d.prefill.direction, "up");
  EXPECT_NEAR(d.prefill.needed, 3.0, 1e-6);
  EXPECT_EQ(d.prefill.reason.rfind("scale_up: predicted 30.0 req/s x ISL 1000 needs 3.00 prefill replicas at TTFT 500ms", 0), 0u)
      << d.prefill.reason;
  EXPECT_NE(d.decode.reason.find("decode replicas at ITL 50ms"), std::string::npos) << d.decode.reason;
}

TEST(PlannerTest, StepLimitAndMaxReplicasAreReported) {
  Loop loop{Make(Config())};
  Decision d = loop.Step(200);  // needs 20: 1 -> 5 (step 4)
  EXPECT_EQ(d.prefill.replicas, 5);
  EXPECT_NE(d.prefill.reason.find("step limit 4"), std::string::npos) << d.prefill.reason;
  d = loop.Step(200);  // 5 -> 8 = maxReplicas
  EXPECT_EQ(d.prefill.replicas, 8);
  EXPECT_NE(d.prefill.reason.find("at maxReplicas 8"), std::string::npos) << d.prefill.reason;
  d = loop.Step(200);
  EXPECT_EQ(d.prefill.replicas, 8);
  EXPECT_EQ(d.prefill.direction, "hold");
}

TEST(PlannerTest, FallingLoadScalesDownOnlyAfterTheStabilizationWindow) {
  Loop loop{Make(Config()), 6, 6};
  EXPECT_EQ(loop.Step(60).prefill.replicas, 6);  // t = 0
  // Load drops to 20 req/s (needs 2) from t = 30: the t = 0 recommendation of 6 stays in the
  // 300 s window until t = 330.
  for (int i = 1; i <= 10; ++i) {  // t = 30 .. 300
    const Decision d = loop.Step(20);
    EXPECT_EQ(d.prefill.replicas, 6) << "t=" << d.time_s;
    EXPECT_EQ(d.prefill.direction, "hold");
    EXPECT_NE(d.prefill.reason.find("300s stabilization window"), std::string::npos) << d.prefill.reason;
  }
  Decision d = loop.Step(20);  // t = 330
  EXPECT_EQ(d.time_s, 330);
  EXPECT_EQ(d.prefill.direction, "down");
  EXPECT_EQ(d.prefill.replicas, 5) << "one replica per decision (max_scale_down_step 1)";
  for (int i = 0; i < 10; ++i) d = loop.Step(20);
  EXPECT_EQ(d.prefill.replicas, 2);
  EXPECT_EQ(d.decode.replicas, 2);
}

TEST(PlannerTest, ScaleDownUsesTheHighestRecommendationInTheWindow) {
  PlannerConfig c = Config();
  c.max_scale_down_step = 0;  // unlimited, to see the window's effect alone
  Loop loop{Make(c), 6, 6};
  loop.Step(60);  // t=0: 6
  loop.Step(40);  // t=30: rec 4 (hold)
  loop.Step(20);  // t=60: rec 2 (hold)
  for (int i = 0; i < 8; ++i) loop.Step(20);  // t = 90 .. 300
  EXPECT_EQ(loop.prefill, 6);
  Decision d = loop.Step(20);  // t=330: window (30..330] holds 4 -> down to 4, not 2
  EXPECT_EQ(d.prefill.replicas, 4);
  d = loop.Step(20);  // t=360: window (60..360]: 2
  EXPECT_EQ(d.prefill.replicas, 2);
}

TEST(PlannerTest, NoFlappingUnderNoiseWithinTheToleranceBand) {
  PlannerConfig c = Config();
  c.scale_down_window_s = 0;  // even without the window, the band alone must hold
  Loop loop{Make(c)};
  loop.Step(50);
  ASSERT_EQ(loop.prefill, 5);
  const double noise[] = {52, 48, 54.9, 45.1, 51, 49, 53, 47};
  for (double rate : noise) {
    const Decision d = loop.Step(rate);
    EXPECT_EQ(d.prefill.replicas, 5) << "rate " << rate;
    EXPECT_EQ(d.prefill.direction, "hold");
    EXPECT_NE(d.prefill.reason.find("within 10% of 5"), std::string::npos) << d.prefill.reason;
  }
  // Outside the band it moves.
  EXPECT_EQ(loop.Step(56).prefill.replicas, 6);
}

TEST(PlannerTest, MinAndMaxClampEveryDecision) {
  PlannerConfig c = Config();
  c.prefill = {true, 2, 4};
  c.decode = {true, 3, 5};
  c.scale_down_window_s = 0;
  c.max_scale_down_step = 0;
  c.max_scale_up_step = 0;
  Loop loop{Make(c)};
  Decision d = loop.Step(0);  // no load: never below minReplicas (and never 0)
  EXPECT_EQ(d.prefill.replicas, 2);
  EXPECT_EQ(d.decode.replicas, 3);
  EXPECT_NE(d.prefill.reason.find("no predicted load"), std::string::npos) << d.prefill.reason;
  d = loop.Step(1000);
  EXPECT_EQ(d.prefill.replicas, 4);
  EXPECT_EQ(d.decode.replicas, 5);
  d = loop.Step(0);
  EXPECT_EQ(d.prefill.replicas, 2);
  EXPECT_NE(d.prefill.reason.find("at minReplicas 2"), std::string::npos) << d.prefill.reason;
  // A pool running outside its limits (maxReplicas lowered) is brought back in.
  auto planner = Make(c);
  d = planner->Decide(0, Sample(0, 100, 10, 1));
  EXPECT_EQ(d.prefill.replicas, 4);
  EXPECT_EQ(d.decode.replicas, 5);
}

TEST(PlannerTest, PrefillAndDecodeScaleIndependently) {
  Loop loop{Make(Config())};
  // Long prompts, short answers: 10 req/s x ISL 4000 -> 4 prefill; x OSL 100 -> 1 decode.
  Decision d = loop.Step(10, 4000, 100);
  EXPECT_EQ(d.prefill.replicas, 4);
  EXPECT_EQ(d.decode.replicas, 1);
  // Short prompts, long answers: prefill stays (down waits), decode grows.
  d = loop.Step(10, 500, 600);
  EXPECT_EQ(d.decode.replicas, 5);  // 6000 tok/s / 1000 per replica = 6, step 4 from 1
  EXPECT_EQ(d.prefill.replicas, 4);
  EXPECT_EQ(d.prefill.direction, "hold");
}

TEST(PlannerTest, CorrectionFactorsTightenOrRelaxTheTarget) {
  auto planner = Make(Config());
  // 2 prefill replicas at 10 req/s x 1000 = 5000 tok/s each: the profile expects 0.25 s; we saw
  // 0.5 s -> ratio 2, smoothed 0.5 * 2 + 0.5 * 1 = 1.5. 40 sequences over 2 decode replicas: the
  // profile expects 20 ms ITL; we saw 10 ms -> ratio 0.5 -> 0.75.
  LoadSample s = Sample(0, 10, 2, 2);
  s.ttft_p90_s = 0.5;
  s.itl_p90_s = 0.010;
  s.decode_concurrency = 40;
  Decision d = planner->Decide(0, s);
  EXPECT_NEAR(d.ttft_correction, 1.5, 1e-9);
  EXPECT_NEAR(d.itl_correction, 0.75, 1e-9);
  EXPECT_NEAR(planner->ttft_correction(), 1.5, 1e-9);
  // Prefill target 0.5 / 1.5 -> 6667 tok/s per replica: 10000 / 6667 = 1.5 replicas (vs 1.0).
  EXPECT_NEAR(d.prefill.needed, 1.5, 1e-3);
  EXPECT_EQ(d.prefill.replicas, 2);
  // Decode target 0.05 / 0.75 -> 66.7 sequences -> 1000 tok/s still (ITL grows with c): needs 1.0.
  EXPECT_NEAR(d.decode.needed, 1.0, 1e-3);
  EXPECT_NE(d.prefill.reason.find("correction 1.50"), std::string::npos) << d.prefill.reason;

  // Ratios are clamped: a TTFT 100x the profile moves the factor by at most correction_max.
  auto clamped = Make(Config());
  s.ttft_p90_s = 25;
  d = clamped->Decide(0, s);
  EXPECT_NEAR(d.ttft_correction, 0.5 * 4.0 + 0.5, 1e-9);
}

TEST(PlannerTest, LittlesLawEstimatesDecodeConcurrencyWhenUnknown) {
  auto planner = Make(Config());
  // 10 req/s x 100 tokens x 0.02 s = 20 sequences over 1 replica -> expected ITL 20 ms = observed.
  LoadSample s = Sample(0, 10, 1, 1);
  s.itl_p90_s = 0.02;
  EXPECT_NEAR(planner->Decide(0, s).itl_correction, 1.0, 1e-9);
}

TEST(PlannerTest, MetricsUnavailableHoldsCurrentReplicasAndSaysWhy) {
  auto planner = Make(Config());
  Decision d = planner->Hold(0, UnavailableError("prometheus 127.0.0.1:9 connection refused"));
  EXPECT_FALSE(d.metrics_ok);
  EXPECT_EQ(d.prefill.replicas, 1) << "before any sample: minReplicas";
  planner->Decide(30, Sample(30, 70, 3, 3));
  d = planner->Hold(60, UnavailableError("prometheus 127.0.0.1:9 connection refused"));
  EXPECT_EQ(d.prefill.replicas, 3) << "the last observed replicas, not the last desired";
  EXPECT_EQ(d.decode.replicas, 3);
  EXPECT_EQ(d.prefill.direction, "hold");
  EXPECT_NE(d.prefill.reason.find("metrics unavailable (prometheus 127.0.0.1:9 connection refused)"),
            std::string::npos)
      << d.prefill.reason;
  // A nonsensical sample is a hold too.
  d = planner->Decide(90, Sample(90, std::nan(""), 3, 3));
  EXPECT_FALSE(d.metrics_ok);
  EXPECT_EQ(d.prefill.replicas, 3);
  d = planner->Decide(90, Sample(90, -1, 3, 3));
  EXPECT_FALSE(d.metrics_ok);
}

TEST(PlannerTest, UnattainableTargetGoesToMaxReplicas) {
  PlannerConfig c = Config();
  c.max_scale_up_step = 0;
  auto planner = Planner::Create(c, std::make_shared<CallbackPerfProfile>(
                                        [](double, double) { return 2.0; },  // always 2 s TTFT
                                        [](double, double c) { return 0.001 * c; }));
  ASSERT_TRUE(planner.ok());
  Decision d = (*planner)->Decide(0, Sample(0, 10, 1, 1));
  EXPECT_EQ(d.prefill.replicas, 8);
  EXPECT_NE(d.prefill.reason.find("unattainable"), std::string::npos) << d.prefill.reason;
  EXPECT_EQ(d.decode.replicas, 1);
}

TEST(PlannerTest, LinearTrendScalesAheadOfARamp) {
  PlannerConfig trend = Config();
  trend.predictor = "linear_trend";
  Loop a{Make(trend)};
  Loop b{Make(Config())};  // constant
  Decision da, db;
  for (double rate : {10.0, 20.0, 30.0, 40.0}) {
    da = a.Step(rate);
    db = b.Step(rate);
  }
  EXPECT_NEAR(da.predicted_request_rate, 50, 1e-6);  // one interval ahead
  EXPECT_NEAR(db.predicted_request_rate, 40, 1e-6);
  EXPECT_EQ(da.prefill.replicas, 5);
  EXPECT_EQ(db.prefill.replicas, 4);
}

TEST(PlannerTest, ScaleUpWindowIgnoresASingleSpike) {
  PlannerConfig c = Config();
  c.scale_up_window_s = 60;
  Loop loop{Make(c)};
  loop.Step(10);                              // t=0: 1
  Decision d = loop.Step(50);                 // t=30 spike: min over (−30..30] = 1
  EXPECT_EQ(d.prefill.replicas, 1);
  EXPECT_NE(d.prefill.reason.find("scale-up waits"), std::string::npos) << d.prefill.reason;
  d = loop.Step(10);                          // t=60: back to 1
  EXPECT_EQ(d.prefill.replicas, 1);
  loop.Step(50);                              // t=90
  loop.Step(50);                              // t=120: window [60, 120] = {1, 5, 5} -> 1
  d = loop.Step(50);                          // t=150: window [90, 150] = {5, 5, 5}
  EXPECT_EQ(d.prefill.replicas, 5);
}

TEST(PlannerTest, DisabledPoolAndMissingTargetHold) {
  PlannerConfig c = Config();
  c.prefill.enabled = false;
  c.itl_target_s = 0;
  auto planner = Make(c);
  Decision d = planner->Decide(0, Sample(0, 80, 0, 2));
  EXPECT_EQ(d.prefill.replicas, 0);
  EXPECT_EQ(d.prefill.reason, "hold: no prefill pool");
  EXPECT_EQ(d.decode.replicas, 2);
  EXPECT_NE(d.decode.reason.find("no ITL target"), std::string::npos) << d.decode.reason;
}

TEST(PlannerConfigTest, FromGraphTakesSlaAndPoolLimits) {
  graph::InferenceGraph g;
  g.spec.sla.ttft_ms = 400;
  g.spec.sla.itl_ms = 25;
  g.spec.prefill.replicas = 2;
  g.spec.prefill.min_replicas = 0;
  g.spec.prefill.max_replicas = 6;
  g.spec.decode.replicas = 3;
  g.spec.decode.min_replicas = 2;
  g.spec.decode.max_replicas = 0;  // no autoscaling: max = replicas
  auto c = PlannerConfig::FromGraph(g);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->ttft_target_s, 0.4);
  EXPECT_DOUBLE_EQ(c->itl_target_s, 0.025);
  EXPECT_TRUE(c->prefill.enabled);
  EXPECT_EQ(c->prefill.min_replicas, 1) << "minReplicas 0 still keeps one replica";
  EXPECT_EQ(c->prefill.max_replicas, 6);
  EXPECT_EQ(c->decode.min_replicas, 2);
  EXPECT_EQ(c->decode.max_replicas, 3);
  g.spec.prefill.replicas = 0;
  EXPECT_FALSE(PlannerConfig::FromGraph(g)->prefill.enabled);
}

TEST(PlannerConfigTest, ValidateNamesTheBadField) {
  PlannerConfig c = Config();
  c.tolerance = 1.5;
  EXPECT_NE(c.Validate().message().find("tolerance"), std::string::npos);
  c = Config();
  c.decode = {true, 5, 2};
  EXPECT_NE(c.Validate().message().find("decode"), std::string::npos);
  c = Config();
  c.predictor = "prophet";
  auto p = Planner::Create(c, LinearProfile());
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("prophet"), std::string::npos);
  EXPECT_FALSE(Planner::Create(Config(), nullptr).ok());
}

}  // namespace
}  // namespace kvmesh::planner
