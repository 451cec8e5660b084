#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "common/check.h"
#include "common/log.h"

namespace kvmesh {
namespace {

constexpr double kTwoTo63 = 9223372036854775808.0;

bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Appends `in` with invalid UTF-8 replaced by U+FFFD (Prometheus rejects invalid UTF-8), passing
// each valid code point's bytes to `emit`.
template <typename Emit>
void ForEachUtf8(std::string_view in, Emit emit) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      emit(std::string_view(in.data() + i, 1));
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) {
        ok = false;
      } else {
        cp = (cp << 6) | (s[i + k] & 0x3F);
      }
    }
    if (ok) {
      static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      emit(std::string_view(in.data() + i, len));
      i += len;
    } else {
      emit(kReplacement);
      ++i;
    }
  }
}

std::string Escape(std::string_view in, bool escape_quote) {
  std::string out;
  out.reserve(in.size());
  ForEachUtf8(in, [&](std::string_view ch) {
    if (ch.size() == 1) {
      switch (ch[0]) {
        case '\\':
          out += "\\\\";
          return;
        case '\n':
          out += "\\n";
          return;
        case '"':
          if (escape_quote) {
            out += "\\\"";
            return;
          }
          break;
        default:
          break;
      }
    }
    out += ch;
  });
  return out;
}

// Appends `name{labels}` (or just name) then a space and the value.
void AppendSample(std::string& out, std::string_view name, std::string_view labels,
                  std::string_view value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ",";
    out += names[i];
  }
  return out + "]";
}

Status ValidateFamily(MetricType type, const std::string& name, const std::string& help,
                      const std::vector<std::string>& label_names) {
  KVMESH_RETURN_IF_ERROR(ValidateMetricName(name));
  const bool ends_total = name.size() >= 6 && name.compare(name.size() - 6, 6, "_total") == 0;
  if (type == MetricType::kCounter && !ends_total) {
    return InvalidArgumentError("counter name must end in \"_total\": \"" + name + "\"");
  }
  if (type != MetricType::kCounter && ends_total) {
    return InvalidArgumentError(std::string(MetricTypeName(type)) +
                                " name must not end in \"_total\" (counters only): \"" + name +
                                "\"");
  }
  if (help.empty()) return InvalidArgumentError("metric \"" + name + "\" needs help text");
  std::set<std::string> seen;
  for (const std::string& label : label_names) {
    KVMESH_RETURN_IF_ERROR(ValidateLabelName(label).WithContext("metric \"" + name + "\""));
    if (type == MetricType::kHistogram && label == "le") {
      return InvalidArgumentError("histogram \"" + name + "\" must not use the reserved label \"le\"");
    }
    if (!seen.insert(label).second) {
      return InvalidArgumentError("metric \"" + name + "\" has duplicate label name \"" + label +
                                  "\"");
    }
  }
  return Status::Ok();
}

std::vector<std::string> SampleNames(MetricType type, const std::string& name) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_count", name + "_sum"};
}

}  // namespace

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

Status ValidateMetricName(std::string_view name) {
  bool ok = !name.empty() && (IsLower(name[0]) || name[0] == '_');
  for (size_t i = 1; ok && i < name.size(); ++i) {
    ok = IsLower(name[i]) || IsDigit(name[i]) || name[i] == '_';
  }
  if (!ok) {
    return InvalidArgumentError("metric name must match [a-z_][a-z0-9_]* (no ':' or upper case): \"" +
                                std::string(name) + "\"");
  }
  return Status::Ok();
}

Status ValidateLabelName(std::string_view name) {
  bool ok = !name.empty() && (IsLower(name[0]) || name[0] == '_');
  for (size_t i = 1; ok && i < name.size(); ++i) {
    ok = IsLower(name[i]) || IsDigit(name[i]) || name[i] == '_';
  }
  if (!ok) {
    return InvalidArgumentError("label name must match [a-z_][a-z0-9_]*: \"" + std::string(name) +
                                "\"");
  }
  if (name.size() >= 2 && name[0] == '_' && name[1] == '_') {
    return InvalidArgumentError("label names starting with \"__\" are reserved: \"" +
                                std::string(name) + "\"");
  }
  return Status::Ok();
}

std::string EscapeLabelValue(std::string_view value) { return Escape(value, true); }
std::string EscapeHelp(std::string_view help) { return Escape(help, false); }

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "NaN";  // cannot happen with 64 bytes
  return std::string(buf, end);
}

// ---- Counter / Gauge / Histogram --------------------------------------------------------------

void Counter::Inc(double v) {
  if (!(v >= 0)) return;  // negative or NaN
  if (v < kTwoTo63 && v == std::trunc(v)) {
    whole_.fetch_add(static_cast<uint64_t>(v), std::memory_order_relaxed);
  } else {
    fraction_.fetch_add(v, std::memory_order_relaxed);
  }
}

double Counter::Value() const {
  return static_cast<double>(whole_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

void Gauge::Inc(double v) { value_.fetch_add(v, std::memory_order_relaxed); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = bounds_->size();  // +Inf, also for NaN
  if (!std::isnan(v)) {
    i = static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), v) -
                            bounds_->begin());
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snap;
  snap.cumulative_counts.resize(bounds_->size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snap.cumulative_counts[i] = running;
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

// ---- families ---------------------------------------------------------------------------------

namespace internal {

FamilyBase::FamilyBase(MetricType type, std::string name, std::string help,
                       std::vector<std::string> label_names)
    : type_(type), name_(std::move(name)), help_(std::move(help)),
      label_names_(std::move(label_names)) {}

Status FamilyBase::CheckLabelCount(const std::vector<std::string>& values) const {
  if (values.size() != label_names_.size()) {
    return InvalidArgumentError("metric \"" + name_ + "\" has labels " + JoinNames(label_names_) +
                                ", got " + std::to_string(values.size()) + " value(s)");
  }
  return Status::Ok();
}

void FamilyBase::RenderHeader(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += EscapeHelp(help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += MetricTypeName(type_);
  out += '\n';
}

std::string FamilyBase::FormatLabels(const std::vector<std::string>& values) const {
  std::string out;
  for (size_t i = 0; i < label_names_.size() && i < values.size(); ++i) {
    if (i) out += ',';
    out += label_names_[i];
    out += "=\"";
    out += EscapeLabelValue(values[i]);
    out += '"';
  }
  return out;
}

namespace {
CounterFamily* BugsFamily(MetricsRegistry& registry) {
  auto family = registry.AddCounter(
      "kvmesh_internal_bugs_total",
      "Internal bugs detected (KVMESH_BUG) that were logged and did not stop the process",
      {"component"});
  return family.ok() ? *family : nullptr;
}
}  // namespace

void ReportWrongLabelCount(const std::string& family, size_t want, size_t got) {
  KVMESH_BUG("metrics", "metric \"" + family + "\" has " + std::to_string(want) +
                            " label(s), WithLabels() got " + std::to_string(got) +
                            " value(s); the update goes to a detached child");
}

void ReportBug(std::string_view component, std::string_view message, const char* file,
               int line) {
  Log(LogLevel::kError, component, std::string("BUG: ") + std::string(message),
      {{"file", file}, {"line", line}});
  static CounterFamily* const bugs = BugsFamily(DefaultMetricsRegistry());
  if (bugs != nullptr) bugs->WithLabels({std::string(component)}).Inc();
}

}  // namespace internal

void CounterFamily::RenderChild(const Counter& child, const std::string& labels,
                                std::string& out) const {
  AppendSample(out, name(), labels, FormatMetricValue(child.Value()));
}

void GaugeFamily::RenderChild(const Gauge& child, const std::string& labels,
                              std::string& out) const {
  AppendSample(out, name(), labels, FormatMetricValue(child.Value()));
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds)
    : Family(MetricType::kHistogram, std::move(name), std::move(help), std::move(label_names)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::RenderChild(const Histogram& child, const std::string& labels,
                                  std::string& out) const {
  const Histogram::Snapshot snap = child.Read();
  const std::string bucket_name = name() + "_bucket";
  const std::string prefix = labels.empty() ? std::string() : labels + ",";
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    const double le = i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
    AppendSample(out, bucket_name, prefix + "le=\"" + FormatMetricValue(le) + "\"",
                 std::to_string(snap.cumulative_counts[i]));
  }
  AppendSample(out, name() + "_sum", labels, FormatMetricValue(snap.sum));
  AppendSample(out, name() + "_count", labels, std::to_string(snap.count));
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (count < 1 || !(start > 0) || !(factor > 1) || !std::isfinite(start) ||
      !std::isfinite(factor)) {
    return {};
  }
  std::vector<double> out;
  double b = start;
  for (int i = 0; i < count && std::isfinite(b); ++i, b *= factor) out.push_back(b);
  return out;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  if (count < 1 || !(width > 0) || !std::isfinite(start) || !std::isfinite(width)) return {};
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(start + width * i);
  return out;
}

const std::vector<double>& DefaultLatencyBuckets() {
  static const std::vector<double> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30, 60};
  return kBuckets;
}

// ---- registry ---------------------------------------------------------------------------------

template <typename F>
StatusOr<F*> MetricsRegistry::Add(std::unique_ptr<F> family) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& name = family->name();
  auto it = families_.find(name);
  if (it != families_.end()) {
    const internal::FamilyBase& old = *it->second;
    std::string diff;
    if (old.type() != family->type()) {
      diff = "type " + std::string(MetricTypeName(old.type())) + " vs " +
             std::string(MetricTypeName(family->type()));
    } else if (old.label_names() != family->label_names()) {
      diff = "labels " + JoinNames(old.label_names()) + " vs " + JoinNames(family->label_names());
    } else if (old.help() != family->help()) {
      diff = "help \"" + old.help() + "\" vs \"" + family->help() + "\"";
    } else if constexpr (std::is_same_v<F, HistogramFamily>) {
      if (static_cast<const HistogramFamily&>(old).bounds() != family->bounds()) {
        diff = "different buckets";
      }
    }
    if (!diff.empty()) {
      return AlreadyExistsError("metric \"" + name + "\" is already registered differently (" +
                                diff + ")");
    }
    return static_cast<F*>(it->second.get());
  }
  const std::vector<std::string> samples = SampleNames(family->type(), name);
  for (const std::string& s : samples) {
    auto taken = sample_names_.find(s);
    if (taken != sample_names_.end()) {
      return AlreadyExistsError("metric \"" + name + "\" would emit samples named \"" + s +
                                "\", which metric \"" + taken->second + "\" already emits");
    }
  }
  for (const std::string& s : samples) sample_names_.emplace(s, name);
  F* raw = family.get();
  // A family without labels has exactly one child; create it now so it renders as 0.
  if (raw->label_names().empty()) raw->WithLabels({});
  families_.emplace(name, std::move(family));
  return raw;
}

StatusOr<CounterFamily*> MetricsRegistry::AddCounter(std::string name, std::string help,
                                                     std::vector<std::string> label_names) {
  KVMESH_RETURN_IF_ERROR(ValidateFamily(MetricType::kCounter, name, help, label_names));
  return Add(std::make_unique<CounterFamily>(MetricType::kCounter, std::move(name),
                                             std::move(help), std::move(label_names)));
}

StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(std::string name, std::string help,
                                                 std::vector<std::string> label_names) {
  KVMESH_RETURN_IF_ERROR(ValidateFamily(MetricType::kGauge, name, help, label_names));
  return Add(std::make_unique<GaugeFamily>(MetricType::kGauge, std::move(name), std::move(help),
                                           std::move(label_names)));
}

StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(std::string name, std::string help,
                                                         std::vector<std::string> label_names,
                                                         std::vector<double> buckets) {
  KVMESH_RETURN_IF_ERROR(ValidateFamily(MetricType::kHistogram, name, help, label_names));
  if (!buckets.empty() && buckets.back() == std::numeric_limits<double>::infinity()) {
    buckets.pop_back();  // +Inf is implicit
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i])) {
      return InvalidArgumentError("histogram \"" + name + "\" bucket " + std::to_string(i) +
                                  " is not finite: " + FormatMetricValue(buckets[i]));
    }
    if (i > 0 && !(buckets[i] > buckets[i - 1])) {
      return InvalidArgumentError("histogram \"" + name +
                                  "\" buckets must be strictly increasing: bucket " +
                                  std::to_string(i) + " is " + FormatMetricValue(buckets[i]) +
                                  " after " + FormatMetricValue(buckets[i - 1]));
    }
  }
  return Add(std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                               std::move(label_names), std::move(buckets)));
}

std::string MetricsRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) family->Render(out);
  return out;
}

std::vector<std::string> MetricsRegistry::FamilyNames() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(families_.size());
  for (const auto& [name, family] : families_) out.push_back(name);
  return out;
}

MetricsRegistry& DefaultMetricsRegistry() {
  // Never destroyed. kvmesh_internal_bugs_total is registered up front so its name is reserved.
  static MetricsRegistry* const registry = [] {
    auto* r = new MetricsRegistry();
    (void)internal::BugsFamily(*r);
    return r;
  }();
  return *registry;
}

}  // namespace kvmesh
