#include "operator/planner/load_predictor.h"

#include <cmath>

#include <gtest/gtest.h>

namespace kvmesh::planner {
namespace {

std::unique_ptr<LoadPredictor> Make(const char* name, int window) {
  auto p = MakeLoadPredictor(name, window);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return std::move(p).value();
}

// A ramp 10, 20, ..., 60 req/s sampled every 30 s; the next sample (t = 180) would be 70.
void FeedRamp(LoadPredictor& p) {
  for (int i = 0; i < 6; ++i) p.Observe(30.0 * i, 10.0 * (i + 1));
}

TEST(LoadPredictorTest, NothingObservedPredictsNothing) {
  for (const char* name : {"constant", "moving_average", "linear_trend"}) {
    auto p = Make(name, 4);
    EXPECT_FALSE(p->Predict(0).has_value()) << name;
    EXPECT_EQ(p->name(), name);
  }
}

TEST(LoadPredictorTest, ConstantIsTheLastValueAndLagsARamp) {
  auto p = Make("constant", 6);
  FeedRamp(*p);
  EXPECT_DOUBLE_EQ(*p->Predict(180), 60);
  EXPECT_EQ(p->num_observations(), 1u);
}

TEST(LoadPredictorTest, MovingAverageAveragesTheWindowAndLagsMore) {
  auto p = Make("moving_average", 3);
  FeedRamp(*p);
  EXPECT_DOUBLE_EQ(*p->Predict(180), 50);  // (40 + 50 + 60) / 3
  EXPECT_EQ(p->num_observations(), 3u);
}

TEST(LoadPredictorTest, LinearTrendFollowsARampUpAndDown) {
  auto up = Make("linear_trend", 6);
  FeedRamp(*up);
  EXPECT_NEAR(*up->Predict(180), 70, 1e-9);
  EXPECT_NEAR(*up->Predict(210), 80, 1e-9);

  auto down = Make("linear_trend", 3);
  for (int i = 0; i < 10; ++i) down->Observe(30.0 * i, 100.0 - 10.0 * i);  // ... 30, 20, 10
  EXPECT_NEAR(*down->Predict(300), 0, 1e-9);
  EXPECT_DOUBLE_EQ(*down->Predict(330), 0);  // -10 clamped: a load is never negative
}

TEST(LoadPredictorTest, LinearTrendOnNoiseStaysNearTheMean) {
  auto p = Make("linear_trend", 8);
  const double noise[] = {+1, -1, +1, -1, +1, -1, +1, -1};
  for (int i = 0; i < 8; ++i) p->Observe(30.0 * i, 50 + noise[i]);
  EXPECT_NEAR(*p->Predict(240), 50, 2.0);
}

TEST(LoadPredictorTest, LinearTrendWithOnePointOrOneTimeIsTheMean) {
  auto p = Make("linear_trend", 4);
  p->Observe(5, 12);
  EXPECT_DOUBLE_EQ(*p->Predict(100), 12);
  p->Observe(5, 18);
  EXPECT_DOUBLE_EQ(*p->Predict(100), 15);
}

TEST(LoadPredictorTest, IgnoresNonFiniteValuesAndClampsTimeGoingBack) {
  auto p = Make("linear_trend", 4);
  p->Observe(0, 10);
  p->Observe(30, std::nan(""));
  p->Observe(60, INFINITY);
  EXPECT_EQ(p->num_observations(), 1u);
  p->Observe(30, 20);
  p->Observe(10, 20);  // earlier than the previous: treated as t = 30
  EXPECT_EQ(p->num_observations(), 3u);
  EXPECT_TRUE(std::isfinite(*p->Predict(60)));
}

TEST(LoadPredictorTest, FactoryRejectsUnknownNamesAndBadWindows) {
  auto bad = MakeLoadPredictor("arima", 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("arima"), std::string::npos);
  EXPECT_FALSE(MakeLoadPredictor("moving_average", 0).ok());
}

}  // namespace
}  // namespace kvmesh::planner
