// Reading the Prometheus text exposition format (0.0.4) back, for the planner's ScrapeSource: a
// parser into samples, and Prometheus's histogram_quantile() over cumulative buckets.
//
// The parser accepts what common/metrics.h renders and what Prometheus's Go client writes:
// `# HELP`/`# TYPE`/other comments (skipped), `name{label="value",...} value [timestamp]`, label
// values with \\, \" and \n escapes, values as Go floats plus NaN, +Inf, -Inf. Errors name the line.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::planner {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// InvalidArgument "line N: ..." on a malformed sample line.
StatusOr<std::vector<PromSample>> ParsePrometheusText(std::string_view text);

// Prometheus's histogram_quantile(q, buckets): `buckets` are (upper bound `le`, cumulative count)
// in any order, +Inf included. Linear interpolation inside the bucket holding rank q * total; the
// first bucket's lower bound is 0 (when its bound is > 0); a rank in the +Inf bucket returns the
// highest finite bound. NaN when there are no observations, no +Inf bucket, or q is outside
// [0, 1] (-Inf / +Inf for q < 0 / q > 1, as Prometheus).
double HistogramQuantile(double q, std::vector<std::pair<double, double>> buckets);

}  // namespace kvmesh::planner
