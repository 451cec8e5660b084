// Performance profiles for the SLA planner: what ONE replica of a pool can do while meeting a
// latency target.
//
//  - Prefill: at prompt length `isl`, the largest prefill load (prompt tokens/s into one replica)
//    at which TTFT p90 stays <= a target; and the TTFT p90 expected at a given load.
//  - Decode: at context length `context` (tokens held per sequence), the largest concurrency (and
//    the output tokens/s it yields) at which ITL p90 stays <= a target; and the ITL p90 expected
//    at a given concurrency.
//
// Two implementations: TablePerfProfile interpolates measured points (the JSON a `kvmesh bench`
// sweep writes, format in docs/planner.md), CallbackPerfProfile wraps two functions (the
// simulator's GPU/model performance model). The "max under a target" queries are derived from the
// expected-latency curves by bisection, assuming latency does not fall as load rises; neither
// profile extrapolates beyond its load range (measured range for a table, the configured caps for
// a callback), so capacity is never over-promised.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::planner {

struct PrefillCapacity {
  double tokens_per_s = 0;  // prompt tokens/s one replica sustains within the target
  bool attainable = false;  // false: even the lightest load misses the target (tokens_per_s is
                            // then the lightest load's, a best effort)
};

struct DecodeCapacity {
  double concurrency = 0;   // sequences decoding at once in one replica
  double tokens_per_s = 0;  // output tokens/s of one replica at that concurrency
  bool attainable = false;  // false: even concurrency at the low end misses the target
};

class PerfProfile {
 public:
  virtual ~PerfProfile() = default;

  // TTFT p90 (s) of one replica at prompt length isl fed `tokens_per_s` prompt tokens/s.
  virtual double ExpectedTtft(double isl, double tokens_per_s) const = 0;
  // ITL p90 (s) of one replica running `concurrency` sequences of `context` tokens.
  virtual double ExpectedItl(double context, double concurrency) const = 0;
  // Output tokens/s of one replica at that point (default: concurrency / ExpectedItl).
  virtual double DecodeTokensPerSecond(double context, double concurrency) const;

  // The load ranges the profile knows (the bisection bounds).
  virtual double MinPrefillLoad(double isl) const = 0;
  virtual double MaxPrefillLoad(double isl) const = 0;
  virtual double MinDecodeConcurrency(double context) const = 0;
  virtual double MaxDecodeConcurrency(double context) const = 0;

  PrefillCapacity MaxPrefill(double isl, double ttft_target_s) const;
  DecodeCapacity MaxDecode(double context, double itl_target_s) const;
};

// Measured points, interpolated piecewise-linearly: first along the load axis within each ISL
// (context) value, then between the two nearest ISL (context) values; outside the measured ISL
// (context) range the nearest one is used; beyond the measured loads latency is extrapolated
// from the last segment (never below the last point) and capacity is capped at the last load.
class TablePerfProfile : public PerfProfile {
 public:
  struct PrefillPoint {
    double isl = 0;
    double prefill_tokens_per_s = 0;
    double ttft_s = 0;
  };
  struct DecodePoint {
    double concurrency = 0;
    double context = 0;
    double itl_s = 0;
    double tokens_per_s = 0;
  };

  // Errors: InvalidArgument if either list is empty, or a value is not finite or not > 0
  // (naming the list, the index and the field).
  static StatusOr<TablePerfProfile> Create(std::vector<PrefillPoint> prefill,
                                           std::vector<DecodePoint> decode);
  // {"prefill": [{"isl", "prefill_tokens_per_s", "ttft_s"}...],
  //  "decode": [{"concurrency", "context", "itl_s", "tokens_per_s"}...]}; unknown keys are
  // ignored (a sweep may record more). InvalidArgument on bad JSON or values.
  static StatusOr<TablePerfProfile> FromJson(std::string_view json);
  // FromJson of a file's contents; NotFound/Unavailable if it cannot be read.
  static StatusOr<TablePerfProfile> FromFile(const std::string& path);

  double ExpectedTtft(double isl, double tokens_per_s) const override;
  double ExpectedItl(double context, double concurrency) const override;
  double DecodeTokensPerSecond(double context, double concurrency) const override;
  double MinPrefillLoad(double isl) const override;
  double MaxPrefillLoad(double isl) const override;
  double MinDecodeConcurrency(double context) const override;
  double MaxDecodeConcurrency(double context) const override;

  // One curve: points at one ISL (context), sorted by load x; y latency, z throughput.
  struct Curve {
    double key = 0;
    std::vector<double> x, y, z;
  };

 private:
  TablePerfProfile() = default;
  std::vector<Curve> prefill_;  // sorted by key (isl)
  std::vector<Curve> decode_;   // sorted by key (context)
};

// Functions of the caller (e.g. the simulator's performance model). Loads searched within
// [min, max] given here.
class CallbackPerfProfile : public PerfProfile {
 public:
  using TtftFn = std::function<double(double isl, double tokens_per_s)>;
  using ItlFn = std::function<double(double context, double concurrency)>;
  struct Options {
    double min_prefill_tokens_per_s = 1;
    double max_prefill_tokens_per_s = 1e7;
    double min_decode_concurrency = 1;
    double max_decode_concurrency = 4096;
  };
  CallbackPerfProfile(TtftFn ttft, ItlFn itl, Options options);
  CallbackPerfProfile(TtftFn ttft, ItlFn itl) : CallbackPerfProfile(std::move(ttft), std::move(itl), Options{}) {}

  double ExpectedTtft(double isl, double tokens_per_s) const override { return ttft_(isl, tokens_per_s); }
  double ExpectedItl(double context, double concurrency) const override { return itl_(context, concurrency); }
  double MinPrefillLoad(double) const override { return options_.min_prefill_tokens_per_s; }
  double MaxPrefillLoad(double) const override { return options_.max_prefill_tokens_per_s; }
  double MinDecodeConcurrency(double) const override { return options_.min_decode_concurrency; }
  double MaxDecodeConcurrency(double) const override { return options_.max_decode_concurrency; }

 private:
  TtftFn ttft_;
  ItlFn itl_;
  Options options_;
};

}  // namespace kvmesh::planner
