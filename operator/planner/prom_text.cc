#include "operator/planner/prom_text.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace kvmesh::planner {

namespace {

bool NameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'; }
bool NameChar(char c) { return NameStart(c) || (c >= '0' && c <= '9'); }

StatusOr<double> ParseValue(std::string_view s) {
  if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (s == "+Inf" || s == "Inf" || s == "+inf" || s == "inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf" || s == "-inf") return -std::numeric_limits<double>::infinity();
  if (s.empty()) return InvalidArgumentError("empty value");
  const std::string str(s);
  char* end = nullptr;
  const double v = std::strtod(str.c_str(), &end);
  if (end != str.c_str() + str.size()) return InvalidArgumentError("bad value \"" + str + "\"");
  return v;
}

StatusOr<PromSample> ParseLine(std::string_view line) {
  PromSample s;
  size_t i = 0;
  if (i >= line.size() || !NameStart(line[i])) return InvalidArgumentError("bad metric name");
  while (i < line.size() && NameChar(line[i])) ++i;
  s.name = std::string(line.substr(0, i));
  auto skip_spaces = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  };
  skip_spaces();
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      skip_spaces();
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      const size_t start = i;
      if (i >= line.size() || !NameStart(line[i])) return InvalidArgumentError("bad label name in " + s.name);
      while (i < line.size() && NameChar(line[i])) ++i;
      std::string label(line.substr(start, i - start));
      skip_spaces();
      if (i >= line.size() || line[i] != '=') return InvalidArgumentError("want '=' after label " + label);
      ++i;
      skip_spaces();
      if (i >= line.size() || line[i] != '"') return InvalidArgumentError("want '\"' to open label " + label);
      ++i;
      std::string value;
      bool closed = false;
      while (i < line.size()) {
        const char c = line[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < line.size()) {
          const char e = line[i++];
          value += e == 'n' ? '\n' : e;
        } else {
          value += c;
        }
      }
      if (!closed) return InvalidArgumentError("unterminated value of label " + label);
      s.labels[std::move(label)] = std::move(value);
      skip_spaces();
      if (i < line.size() && line[i] == ',') {
        ++i;
        continue;
      }
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      return InvalidArgumentError("want ',' or '}' in the labels of " + s.name);
    }
  }
  skip_spaces();
  const size_t vstart = i;
  while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
  KVMESH_ASSIGN_OR_RETURN(s.value, ParseValue(line.substr(vstart, i - vstart)));
  skip_spaces();
  if (i < line.size()) {  // optional integer timestamp (ms)
    const size_t tstart = i;
    if (line[i] == '-') ++i;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
    if (i == tstart || i != line.size()) return InvalidArgumentError("bad timestamp after the value of " + s.name);
  }
  return s;
}

}  // namespace

StatusOr<std::vector<PromSample>> ParsePrometheusText(std::string_view text) {
  std::vector<PromSample> out;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    StatusOr<PromSample> s = ParseLine(line);
    if (!s.ok()) return InvalidArgumentError("line " + std::to_string(line_no) + ": " + s.status().message());
    out.push_back(std::move(s).value());
  }
  return out;
}

double HistogramQuantile(double q, std::vector<std::pair<double, double>> buckets) {
  if (std::isnan(q)) return std::numeric_limits<double>::quiet_NaN();
  if (q < 0) return -std::numeric_limits<double>::infinity();
  if (q > 1) return std::numeric_limits<double>::infinity();
  std::sort(buckets.begin(), buckets.end());
  if (buckets.size() < 2 || !std::isinf(buckets.back().first)) return std::numeric_limits<double>::quiet_NaN();
  // Cumulative counts must not decrease (they can, slightly, from racing scrapes): fix as Prometheus does.
  for (size_t i = 1; i < buckets.size(); ++i) buckets[i].second = std::max(buckets[i].second, buckets[i - 1].second);
  const double total = buckets.back().second;
  if (!(total > 0)) return std::numeric_limits<double>::quiet_NaN();
  const double rank = q * total;
  size_t b = 0;
  while (b < buckets.size() && buckets[b].second < rank) ++b;
  if (b >= buckets.size() - 1) return buckets[buckets.size() - 2].first;  // +Inf bucket
  if (b == 0 && buckets[0].first <= 0) return buckets[0].first;
  double lower = 0, lower_count = 0;
  if (b > 0) {
    lower = buckets[b - 1].first;
    lower_count = buckets[b - 1].second;
  }
  const double upper = buckets[b].first;
  const double in_bucket = buckets[b].second - lower_count;
  if (in_bucket <= 0) return upper;
  return lower + (upper - lower) * (rank - lower_count) / in_bucket;
}

}  // namespace kvmesh::planner
