#include "operator/planner/load_predictor.h"

#include <algorithm>
#include <cmath>

namespace kvmesh::planner {

void LoadPredictor::Observe(double time_s, double value) {
  if (!std::isfinite(value) || !std::isfinite(time_s)) return;
  if (!points_.empty() && time_s < points_.back().first) time_s = points_.back().first;
  points_.emplace_back(time_s, value);
  while (points_.size() > window_) points_.pop_front();
}

std::optional<double> ConstantPredictor::Predict(double) const {
  if (points().empty()) return std::nullopt;
  return std::max(0.0, points().back().second);
}

std::optional<double> MovingAveragePredictor::Predict(double) const {
  if (points().empty()) return std::nullopt;
  double sum = 0;
  for (const auto& [t, v] : points()) sum += v;
  return std::max(0.0, sum / static_cast<double>(points().size()));
}

std::optional<double> LinearTrendPredictor::Predict(double at_time_s) const {
  const auto& p = points();
  if (p.empty()) return std::nullopt;
  const double n = static_cast<double>(p.size());
  double mean_t = 0, mean_v = 0;
  for (const auto& [t, v] : p) {
    mean_t += t;
    mean_v += v;
  }
  mean_t /= n;
  mean_v /= n;
  double stt = 0, stv = 0;
  for (const auto& [t, v] : p) {
    stt += (t - mean_t) * (t - mean_t);
    stv += (t - mean_t) * (v - mean_v);
  }
  if (stt <= 0 || !std::isfinite(at_time_s)) return std::max(0.0, mean_v);
  const double predicted = mean_v + stv / stt * (at_time_s - mean_t);
  return std::isfinite(predicted) ? std::max(0.0, predicted) : std::max(0.0, mean_v);
}

StatusOr<std::unique_ptr<LoadPredictor>> MakeLoadPredictor(std::string_view name, int window) {
  if (window < 1) {
    return InvalidArgumentError("predictor window must be >= 1, got " + std::to_string(window));
  }
  if (name == "constant") return std::unique_ptr<LoadPredictor>(new ConstantPredictor());
  if (name == "moving_average") {
    return std::unique_ptr<LoadPredictor>(new MovingAveragePredictor(static_cast<size_t>(window)));
  }
  if (name == "linear_trend") {
    return std::unique_ptr<LoadPredictor>(new LinearTrendPredictor(static_cast<size_t>(window)));
  }
  return InvalidArgumentError("unknown predictor \"" + std::string(name) +
                              "\" (want constant, moving_average or linear_trend)");
}

}  // namespace kvmesh::planner
