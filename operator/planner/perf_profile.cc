#include "operator/planner/perf_profile.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

namespace kvmesh::planner {

namespace {

using Curve = TablePerfProfile::Curve;

// Piecewise-linear value of ys at x over sorted xs. Below the first point: the first value. Above
// the last: `extrapolate` continues the last segment (never below the last value), otherwise the
// last value.
double Interp(const std::vector<double>& xs, const std::vector<double>& ys, double x, bool extrapolate) {
  const size_t n = xs.size();
  if (n == 1 || x <= xs.front()) return ys.front();
  if (x >= xs.back()) {
    if (!extrapolate) return ys.back();
    const double dx = xs[n - 1] - xs[n - 2];
    if (dx <= 0) return ys.back();
    const double slope = (ys[n - 1] - ys[n - 2]) / dx;
    return std::max(ys.back(), ys.back() + slope * (x - xs.back()));
  }
  const size_t i = static_cast<size_t>(std::upper_bound(xs.begin(), xs.end(), x) - xs.begin());
  const double x0 = xs[i - 1], x1 = xs[i];
  if (x1 <= x0) return ys[i];
  return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0);
}

// f evaluated on the curves bracketing `key`, interpolated linearly in key (nearest curve outside).
template <typename F>
double AcrossKeys(const std::vector<Curve>& curves, double key, F f) {
  if (key <= curves.front().key) return f(curves.front());
  if (key >= curves.back().key) return f(curves.back());
  const auto it = std::upper_bound(curves.begin(), curves.end(), key,
                                   [](double k, const Curve& c) { return k < c.key; });
  const Curve& hi = *it;
  const Curve& lo = *(it - 1);
  const double w = (key - lo.key) / (hi.key - lo.key);
  return f(lo) * (1 - w) + f(hi) * w;
}

// Groups (key, x, y, z) into curves sorted by key, each sorted by x.
std::vector<Curve> BuildCurves(std::vector<std::array<double, 4>> pts) {
  std::sort(pts.begin(), pts.end());
  std::vector<Curve> curves;
  for (const auto& p : pts) {
    if (curves.empty() || curves.back().key != p[0]) curves.push_back(Curve{p[0], {}, {}, {}});
    curves.back().x.push_back(p[1]);
    curves.back().y.push_back(p[2]);
    curves.back().z.push_back(p[3]);
  }
  return curves;
}

Status CheckPositive(const char* list, size_t i, const char* field, double v) {
  if (!std::isfinite(v) || v <= 0) {
    std::ostringstream os;
    os << list << "[" << i << "]." << field << " must be a finite number > 0, got " << v;
    return InvalidArgumentError(os.str());
  }
  return Status::Ok();
}

// Largest x in [lo, hi] with latency(x) <= target, by bisection (latency assumed non-decreasing).
// Returns {x, attainable}; when not attainable x = lo.
std::pair<double, bool> Bisect(double lo, double hi, double target, const std::function<double(double)>& latency) {
  if (!(target > 0) || !(hi >= lo)) return {lo, false};
  if (!(latency(lo) <= target)) return {lo, false};
  if (latency(hi) <= target) return {hi, true};
  for (int i = 0; i < 60 && hi - lo > 1e-9 * std::max(1.0, hi); ++i) {
    const double mid = 0.5 * (lo + hi);
    if (latency(mid) <= target) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return {lo, true};
}

}  // namespace

double PerfProfile::DecodeTokensPerSecond(double context, double concurrency) const {
  const double itl = ExpectedItl(context, concurrency);
  return itl > 0 ? concurrency / itl : 0;
}

PrefillCapacity PerfProfile::MaxPrefill(double isl, double ttft_target_s) const {
  auto [load, ok] = Bisect(MinPrefillLoad(isl), MaxPrefillLoad(isl), ttft_target_s,
                           [&](double x) { return ExpectedTtft(isl, x); });
  return PrefillCapacity{load, ok};
}

DecodeCapacity PerfProfile::MaxDecode(double context, double itl_target_s) const {
  auto [conc, ok] = Bisect(MinDecodeConcurrency(context), MaxDecodeConcurrency(context), itl_target_s,
                           [&](double c) { return ExpectedItl(context, c); });
  return DecodeCapacity{conc, DecodeTokensPerSecond(context, conc), ok};
}

StatusOr<TablePerfProfile> TablePerfProfile::Create(std::vector<PrefillPoint> prefill,
                                                    std::vector<DecodePoint> decode) {
  if (prefill.empty()) return InvalidArgumentError("profile: prefill has no points");
  if (decode.empty()) return InvalidArgumentError("profile: decode has no points");
  std::vector<std::array<double, 4>> pp, dp;
  for (size_t i = 0; i < prefill.size(); ++i) {
    const PrefillPoint& p = prefill[i];
    KVMESH_RETURN_IF_ERROR(CheckPositive("prefill", i, "isl", p.isl));
    KVMESH_RETURN_IF_ERROR(CheckPositive("prefill", i, "prefill_tokens_per_s", p.prefill_tokens_per_s));
    KVMESH_RETURN_IF_ERROR(CheckPositive("prefill", i, "ttft_s", p.ttft_s));
    pp.push_back({p.isl, p.prefill_tokens_per_s, p.ttft_s, p.prefill_tokens_per_s});
  }
  for (size_t i = 0; i < decode.size(); ++i) {
    const DecodePoint& d = decode[i];
    KVMESH_RETURN_IF_ERROR(CheckPositive("decode", i, "concurrency", d.concurrency));
    KVMESH_RETURN_IF_ERROR(CheckPositive("decode", i, "context", d.context));
    KVMESH_RETURN_IF_ERROR(CheckPositive("decode", i, "itl_s", d.itl_s));
    KVMESH_RETURN_IF_ERROR(CheckPositive("decode", i, "tokens_per_s", d.tokens_per_s));
    dp.push_back({d.context, d.concurrency, d.itl_s, d.tokens_per_s});
  }
  TablePerfProfile t;
  t.prefill_ = BuildCurves(std::move(pp));
  t.decode_ = BuildCurves(std::move(dp));
  return t;
}

StatusOr<TablePerfProfile> TablePerfProfile::FromJson(std::string_view json) {
  try {
    const nlohmann::json j = nlohmann::json::parse(json);
    if (!j.is_object()) return InvalidArgumentError("profile: top level must be an object");
    auto number = [](const nlohmann::json& o, const char* list, size_t i, const char* key) -> StatusOr<double> {
      auto it = o.find(key);
      if (it == o.end() || !it->is_number()) {
        return InvalidArgumentError(std::string("profile: ") + list + "[" + std::to_string(i) + "]." + key +
                                    " is missing or not a number");
      }
      return it->get<double>();
    };
    auto list = [&](const char* name) -> StatusOr<const nlohmann::json*> {
      auto it = j.find(name);
      if (it == j.end() || !it->is_array()) {
        return InvalidArgumentError(std::string("profile: \"") + name + "\" is missing or not a list");
      }
      return &*it;
    };
    KVMESH_ASSIGN_OR_RETURN(const nlohmann::json* pj, list("prefill"));
    KVMESH_ASSIGN_OR_RETURN(const nlohmann::json* dj, list("decode"));
    std::vector<PrefillPoint> prefill;
    for (size_t i = 0; i < pj->size(); ++i) {
      const nlohmann::json& o = (*pj)[i];
      if (!o.is_object()) return InvalidArgumentError("profile: prefill[" + std::to_string(i) + "] is not an object");
      PrefillPoint p;
      KVMESH_ASSIGN_OR_RETURN(p.isl, number(o, "prefill", i, "isl"));
      KVMESH_ASSIGN_OR_RETURN(p.prefill_tokens_per_s, number(o, "prefill", i, "prefill_tokens_per_s"));
      KVMESH_ASSIGN_OR_RETURN(p.ttft_s, number(o, "prefill", i, "ttft_s"));
      prefill.push_back(p);
    }
    std::vector<DecodePoint> decode;
    for (size_t i = 0; i < dj->size(); ++i) {
      const nlohmann::json& o = (*dj)[i];
      if (!o.is_object()) return InvalidArgumentError("profile: decode[" + std::to_string(i) + "] is not an object");
      DecodePoint d;
      KVMESH_ASSIGN_OR_RETURN(d.concurrency, number(o, "decode", i, "concurrency"));
      KVMESH_ASSIGN_OR_RETURN(d.context, number(o, "decode", i, "context"));
      KVMESH_ASSIGN_OR_RETURN(d.itl_s, number(o, "decode", i, "itl_s"));
      KVMESH_ASSIGN_OR_RETURN(d.tokens_per_s, number(o, "decode", i, "tokens_per_s"));
      decode.push_back(d);
    }
    StatusOr<TablePerfProfile> t = Create(std::move(prefill), std::move(decode));
    if (!t.ok()) return t.status().WithContext("profile");
    return t;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("profile: bad JSON: ") + e.what());
  }
}

StatusOr<TablePerfProfile> TablePerfProfile::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("profile: cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return UnavailableError("profile: cannot read " + path);
  StatusOr<TablePerfProfile> t = FromJson(ss.str());
  if (!t.ok()) return t.status().WithContext(path);
  return t;
}

double TablePerfProfile::ExpectedTtft(double isl, double tokens_per_s) const {
  return AcrossKeys(prefill_, isl, [&](const Curve& c) { return Interp(c.x, c.y, tokens_per_s, true); });
}

double TablePerfProfile::ExpectedItl(double context, double concurrency) const {
  return AcrossKeys(decode_, context, [&](const Curve& c) { return Interp(c.x, c.y, concurrency, true); });
}

double TablePerfProfile::DecodeTokensPerSecond(double context, double concurrency) const {
  return AcrossKeys(decode_, context, [&](const Curve& c) { return Interp(c.x, c.z, concurrency, false); });
}

double TablePerfProfile::MinPrefillLoad(double isl) const {
  return AcrossKeys(prefill_, isl, [](const Curve& c) { return c.x.front(); });
}
double TablePerfProfile::MaxPrefillLoad(double isl) const {
  return AcrossKeys(prefill_, isl, [](const Curve& c) { return c.x.back(); });
}
double TablePerfProfile::MinDecodeConcurrency(double context) const {
  return AcrossKeys(decode_, context, [](const Curve& c) { return c.x.front(); });
}
double TablePerfProfile::MaxDecodeConcurrency(double context) const {
  return AcrossKeys(decode_, context, [](const Curve& c) { return c.x.back(); });
}

CallbackPerfProfile::CallbackPerfProfile(TtftFn ttft, ItlFn itl, Options options)
    : ttft_(std::move(ttft)), itl_(std::move(itl)), options_(options) {}

}  // namespace kvmesh::planner
