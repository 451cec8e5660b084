// Load predictors for the SLA planner: given the values of one load signal (request rate, mean ISL
// or mean OSL) observed at past sample times, predict its value at a future time (the next
// decision). Each predictor is documented in docs/planner.md and selected by name:
//
//   constant        the last observed value (what a purely reactive autoscaler assumes);
//   moving_average  the mean of the last `window` values (smooths noise, lags a ramp);
//   linear_trend    least-squares line through the last `window` (time, value) points,
//                   evaluated at the prediction time (follows a ramp, amplifies noise a little).
//
// Invariants: predictions are finite and >= 0 (a load is never negative); non-finite
// observations are ignored; with no observation Predict() returns nullopt. Not thread-safe.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace kvmesh::planner {

class LoadPredictor {
 public:
  virtual ~LoadPredictor() = default;

  // Records `value` observed at `time_s` (seconds on any monotonic scale). Non-finite values are
  // ignored; a time earlier than the previous observation's is treated as equal to it.
  void Observe(double time_s, double value);
  // The predicted value at `at_time_s` (>= 0), or nullopt before the first observation.
  virtual std::optional<double> Predict(double at_time_s) const = 0;
  virtual std::string_view name() const = 0;

  size_t num_observations() const { return points_.size(); }

 protected:
  explicit LoadPredictor(size_t window) : window_(window < 1 ? 1 : window) {}
  // The last `window` observations, oldest first.
  const std::deque<std::pair<double, double>>& points() const { return points_; }

 private:
  size_t window_;
  std::deque<std::pair<double, double>> points_;  // (time_s, value), at most window_ of them
};

// The last value.
class ConstantPredictor : public LoadPredictor {
 public:
  ConstantPredictor() : LoadPredictor(1) {}
  std::optional<double> Predict(double at_time_s) const override;
  std::string_view name() const override { return "constant"; }
};

// Mean of the last `window` values.
class MovingAveragePredictor : public LoadPredictor {
 public:
  explicit MovingAveragePredictor(size_t window) : LoadPredictor(window) {}
  std::optional<double> Predict(double at_time_s) const override;
  std::string_view name() const override { return "moving_average"; }
};

// Ordinary least squares over the last `window` (time, value) points, evaluated at at_time_s and
// clamped at 0. With one point, or all points at one time, it is the mean (no slope to fit).
class LinearTrendPredictor : public LoadPredictor {
 public:
  explicit LinearTrendPredictor(size_t window) : LoadPredictor(window) {}
  std::optional<double> Predict(double at_time_s) const override;
  std::string_view name() const override { return "linear_trend"; }
};

// "constant", "moving_average" or "linear_trend" (window >= 1; ignored by constant).
// InvalidArgument naming the unknown name or the bad window.
StatusOr<std::unique_ptr<LoadPredictor>> MakeLoadPredictor(std::string_view name, int window);

}  // namespace kvmesh::planner
