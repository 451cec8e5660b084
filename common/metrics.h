// Prometheus metrics registry and text exposition (format 0.0.4).
//
// prometheus-cpp is not packaged for Debian 12, so kvmesh carries this small registry. A registry
// holds metric families (counter, gauge, histogram); a family has a name, help text and label names,
// and one child per tuple of label values. Render() writes the whole registry in the Prometheus text
// format, which `promtool check metrics` accepts (tested).
//
// Invariants:
//  - Families and children are never destroyed or moved while their registry lives, so the
//    pointers and references handed out stay valid: hot paths look a child up once and keep it.
//    (DefaultMetricsRegistry() is never destroyed.) Children cannot be removed: never put unbounded
//    values (request ids, prompts) in labels.
//  - Updating a child is lock-free (relaxed atomics); looking a child up by label values takes the
//    family's mutex; registering a family and Render() take the registry's mutex.
//  - Output is deterministic: families sorted by name, children sorted by label values.
//  - Names follow kvmesh's rules (docs/metrics.md): metric names [a-z_][a-z0-9_]* (Prometheus's
//    regex without ':' and without upper case), label names [a-z_][a-z0-9_]* not starting with
//    "__", counters end in "_total" and nothing else does. Violations are an error Status.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh {

// Content-Type of Render()'s output, for the /metrics HTTP handler.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };
std::string_view MetricTypeName(MetricType type);  // "counter", "gauge", "histogram"

// A monotonically increasing value. Inc() is lock-free: whole-number increments (the common case)
// are one atomic integer add; fractional ones a compare-and-swap loop on a double.
class alignas(64) Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds v. A negative or NaN v is ignored (counters never go down).
  void Inc(double v = 1.0);
  double Value() const;

 private:
  std::atomic<uint64_t> whole_{0};
  std::atomic<double> fraction_{0.0};
};

// A value that goes up and down. All operations are lock-free.
class alignas(64) Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0);
  void Dec(double v = 1.0) { Inc(-v); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with upper bounds (le) fixed at registration; lock-free.
// An observation v lands in the first bucket with v <= bound, else in +Inf (NaN lands in +Inf and
// makes the sum NaN, as in the Go client).
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf; non-decreasing
    double sum = 0;
    uint64_t count = 0;  // == cumulative_counts.back()
  };
  // A consistent-enough view: counts are read bucket by bucket, so an Observe() racing with it
  // may be partly visible, but cumulative counts never decrease and count == the +Inf bucket.
  Snapshot Read() const;

 private:
  const std::vector<double>* bounds_;                     // owned by the family
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;       // bounds_->size() + 1, non-cumulative
  alignas(64) std::atomic<double> sum_{0.0};
};

namespace internal {

// Shared part of the three family types: name, help, label names.
class FamilyBase {
 public:
  FamilyBase(MetricType type, std::string name, std::string help,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  MetricType type() const { return type_; }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends this family in the text format (nothing if it has no children).
  virtual void Render(std::string& out) const = 0;

 protected:
  Status CheckLabelCount(const std::vector<std::string>& values) const;
  // Appends "# HELP" and "# TYPE" lines.
  void RenderHeader(std::string& out) const;
  // `a="x",b="y"` for this family's label names and `values` (escaped); empty with no labels.
  std::string FormatLabels(const std::vector<std::string>& values) const;

 private:
  const MetricType type_;
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
};

template <typename T>
class Family : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;

  // The child for `values` (one per label name, in order), created on first use; the reference
  // stays valid while the registry lives. With the wrong number of values it reports a
  // KVMESH_BUG (log + kvmesh_internal_bugs_total{component="metrics"}) and returns a detached
  // child that is never rendered, so a caller's mistake never crashes the server.
  T& WithLabels(std::vector<std::string> values);
  // Same, but the wrong number of values is an InvalidArgument error naming the family.
  StatusOr<T*> TryWithLabels(std::vector<std::string> values);

  void Render(std::string& out) const override;

 protected:
  virtual std::unique_ptr<T> NewChild() const = 0;
  // Appends one child's sample lines; `labels` is FormatLabels() of its values.
  virtual void RenderChild(const T& child, const std::string& labels, std::string& out) const = 0;

 private:
  mutable std::mutex mu_;
  // Children keyed by label values in label_names() order. Guarded by mu_; a child is never
  // destroyed or moved while the family lives.
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
  std::unique_ptr<T> detached_;  // guarded by mu_; sink for wrong label counts, never rendered
};

}  // namespace internal

class CounterFamily : public internal::Family<Counter> {
 public:
  using Family::Family;

 private:
  std::unique_ptr<Counter> NewChild() const override { return std::make_unique<Counter>(); }
  void RenderChild(const Counter& child, const std::string& labels,
                   std::string& out) const override;
};

class GaugeFamily : public internal::Family<Gauge> {
 public:
  using Family::Family;

 private:
  std::unique_ptr<Gauge> NewChild() const override { return std::make_unique<Gauge>(); }
  void RenderChild(const Gauge& child, const std::string& labels,
                   std::string& out) const override;
};

class HistogramFamily : public internal::Family<Histogram> {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds);
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::unique_ptr<Histogram> NewChild() const override {
    return std::make_unique<Histogram>(&bounds_);
  }
  void RenderChild(const Histogram& child, const std::string& labels,
                   std::string& out) const override;

  const std::vector<double> bounds_;  // strictly increasing, finite; +Inf is implicit
};

// Bucket helpers. Both return an empty vector if the arguments make no valid buckets
// (count < 1, start <= 0 or factor <= 1 for exponential, width <= 0 for linear).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);
// 1 ms .. 60 s, for request and step latencies in seconds.
const std::vector<double>& DefaultLatencyBuckets();

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Register a family, or return the existing one if a family with the same name, type, help and
  // label names (and bounds) exists. Errors:
  //  - InvalidArgument: bad metric or label name, duplicate or reserved label name ("le" in a
  //    histogram), empty help, counter name without "_total" or non-counter name with it,
  //    histogram bounds not strictly increasing or not finite (a trailing +Inf is dropped).
  //  - AlreadyExists: the name (or, for histograms, name_bucket/_sum/_count) is taken by a family
  //    with a different type, help, labels or bounds.
  // The returned pointer is valid while the registry lives.
  StatusOr<CounterFamily*> AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names);
  StatusOr<GaugeFamily*> AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names);
  StatusOr<HistogramFamily*> AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> buckets);

  // The full text exposition (format 0.0.4), families sorted by name.
  std::string Render() const;

  std::vector<std::string> FamilyNames() const;  // sorted

 private:
  template <typename F>
  StatusOr<F*> Add(std::unique_ptr<F> family);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>> families_;  // guarded by mu_
  // Every sample name a family emits (name, or name_bucket/_sum/_count) -> family name.
  std::map<std::string, std::string> sample_names_;  // guarded by mu_
};

// The process-wide registry; /metrics renders it. Never destroyed.
MetricsRegistry& DefaultMetricsRegistry();

// Name checks (exposed for tests and for components that build names).
Status ValidateMetricName(std::string_view name);
Status ValidateLabelName(std::string_view name);

// Text-format helpers (exposed for tests).
std::string EscapeLabelValue(std::string_view value);  // \ -> \\, " -> \", newline -> \n
std::string EscapeHelp(std::string_view help);         // \ -> \\, newline -> \n
std::string FormatMetricValue(double v);               // shortest round-trip; +Inf, -Inf, NaN

// ---- implementation of the Family template ---------------------------------------------------

namespace internal {
void ReportWrongLabelCount(const std::string& family, size_t want, size_t got);

template <typename T>
T& Family<T>::WithLabels(std::vector<std::string> values) {
  if (values.size() != label_names().size()) [[unlikely]] {
    ReportWrongLabelCount(name(), label_names().size(), values.size());
    std::lock_guard<std::mutex> lock(mu_);
    if (!detached_) detached_ = NewChild();
    return *detached_;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    it = children_.emplace(std::move(values), NewChild()).first;
  }
  return *it->second;
}

template <typename T>
StatusOr<T*> Family<T>::TryWithLabels(std::vector<std::string> values) {
  KVMESH_RETURN_IF_ERROR(CheckLabelCount(values));
  return &WithLabels(std::move(values));
}

template <typename T>
void Family<T>::Render(std::string& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (children_.empty()) return;
  RenderHeader(out);
  for (const auto& [values, child] : children_) RenderChild(*child, FormatLabels(values), out);
}
}  // namespace internal

}  // namespace kvmesh
