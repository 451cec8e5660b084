#include "cli/trace_workload.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace kvmesh::bench {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t Mix(uint64_t a, uint64_t b) {
  return SplitMix64(SplitMix64(a) ^ (b * 0xD6E8FEB86659FD93ull));
}

// Uniform in [0, 1) from 53 random bits.
double Unit(uint64_t x) { return static_cast<double>(x >> 11) * 0x1.0p-53; }

// Domain tags so that the streams of one seed do not overlap.
constexpr uint64_t kTagRequest = 0x7265717565737400ull;
constexpr uint64_t kTagPrefix = 0x7072656669780000ull;
constexpr uint64_t kTagArrival = 0x6172726976616c00ull;
constexpr uint64_t kTagBlock = 0x626c6f636b000000ull;

constexpr std::array<std::string_view, 64> kWords = {
    "the",    "cache",  "model",   "token",  "block",  "prefix",  "router",  "worker",
    "stream", "decode", "prefill", "memory", "query",  "answer",  "system",  "prompt",
    "vector", "tensor", "layer",   "head",   "batch",  "queue",   "request", "reply",
    "server", "client", "index",   "hash",   "event",  "latency", "time",    "rate",
    "load",   "graph",  "node",    "agent",  "data",   "value",   "river",   "mountain",
    "city",   "garden", "window",  "paper",  "music",  "light",   "water",   "stone",
    "cloud",  "forest", "bridge",  "street", "market", "winter",  "summer",  "green",
    "blue",   "quick",  "slow",    "bright", "quiet",  "simple",  "small",   "large"};

}  // namespace

StatusOr<LengthDist> ParseLengthDist(std::string_view name) {
  if (name == "fixed") return LengthDist::kFixed;
  if (name == "uniform") return LengthDist::kUniform;
  if (name == "normal") return LengthDist::kNormal;
  return InvalidArgumentError("unknown length distribution '" + std::string(name) +
                              "' (want fixed, uniform or normal)");
}

std::string_view LengthDistName(LengthDist dist) {
  switch (dist) {
    case LengthDist::kFixed:
      return "fixed";
    case LengthDist::kUniform:
      return "uniform";
    case LengthDist::kNormal:
      return "normal";
  }
  return "fixed";
}

uint32_t SampleLength(const LengthSpec& spec, uint64_t seed) {
  const double mean = spec.mean;
  double v = mean;
  switch (spec.dist) {
    case LengthDist::kFixed:
      break;
    case LengthDist::kUniform: {
      const double lo = mean * (1 - spec.spread), hi = mean * (1 + spec.spread);
      v = lo + (hi - lo) * Unit(SplitMix64(seed));
      break;
    }
    case LengthDist::kNormal: {
      // Box-Muller.
      const double u1 = 1.0 - Unit(SplitMix64(seed)), u2 = Unit(SplitMix64(seed ^ 0x5bd1e995u));
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
      v = std::clamp(mean + z * mean * spec.spread / 2, 1.0, 2.0 * mean);
      break;
    }
  }
  return static_cast<uint32_t>(std::max(1.0, std::round(v)));
}

Status SyntheticOptions::Validate() const {
  if (input.mean == 0) return InvalidArgumentError("input_len must be > 0");
  if (output.mean == 0) return InvalidArgumentError("output_len must be > 0");
  for (const auto* s : {&input, &output}) {
    if (!(s->spread >= 0 && s->spread <= 1)) {
      return InvalidArgumentError("length spread must be in [0, 1], got " +
                                  std::to_string(s->spread));
    }
  }
  if (!(shared_prefix_ratio >= 0 && shared_prefix_ratio < 1)) {
    return InvalidArgumentError("shared_prefix_ratio must be in [0, 1), got " +
                                std::to_string(shared_prefix_ratio));
  }
  if (shared_prefix_ratio > 0 && num_prefixes == 0) {
    return InvalidArgumentError("num_prefixes must be > 0 when shared_prefix_ratio > 0");
  }
  if (vocab_size < 2)
    return InvalidArgumentError("vocab_size must be >= 2, got " + std::to_string(vocab_size));
  return Status::Ok();
}

BenchRequest SyntheticRequest(const SyntheticOptions& o, uint64_t index) {
  const uint64_t r = Mix(Mix(o.seed, kTagRequest), index);
  BenchRequest req;
  req.index = index;
  const uint32_t len = SampleLength(o.input, Mix(r, 1));
  req.max_tokens = SampleLength(o.output, Mix(r, 2));
  req.prompt_len = len;
  uint32_t plen = 0;
  uint64_t group_seed = 0;
  if (o.shared_prefix_ratio > 0) {
    req.prefix_group = static_cast<int32_t>(Mix(r, 3) % o.num_prefixes);
    plen = std::min<uint32_t>(
        len, static_cast<uint32_t>(std::lround(o.shared_prefix_ratio * o.input.mean)));
    group_seed = Mix(Mix(o.seed, kTagPrefix), static_cast<uint64_t>(req.prefix_group));
  }
  req.shared_prefix_len = plen;
  auto pick = [&](uint32_t j, uint64_t modulus) {
    return j < plen ? Mix(group_seed, j) % modulus : Mix(r, 1000 + j) % modulus;
  };
  if (o.text) {
    for (uint32_t j = 0; j < len; ++j) {
      if (j > 0) req.prompt_text += ' ';
      req.prompt_text += kWords[pick(j, kWords.size())];
    }
  } else {
    req.prompt_tokens.reserve(len);
    for (uint32_t j = 0; j < len; ++j)
      req.prompt_tokens.push_back(static_cast<int32_t>(pick(j, o.vocab_size)));
  }
  return req;
}

double PoissonGap(double rate, uint64_t seed, uint64_t k) {
  if (rate <= 0) return 0;
  const double u = Unit(Mix(Mix(seed, kTagArrival), k));
  return -std::log1p(-u) / rate;
}

std::vector<double> PoissonArrivals(double rate, uint64_t seed, size_t n) {
  std::vector<double> out;
  out.reserve(n);
  double t = 0;
  for (size_t k = 0; k < n; ++k) {
    out.push_back(t);
    t += PoissonGap(rate, seed, k);
  }
  return out;
}

// --- trace -----------------------------------------------------------------------------------

Status TraceMapping::Validate() const {
  if (trace_block_tokens == 0) return InvalidArgumentError("trace_block_tokens must be > 0");
  if (!(length_scale > 0 && length_scale <= 16)) {
    return InvalidArgumentError("length_scale must be in (0, 16], got " +
                                std::to_string(length_scale));
  }
  if (!(time_scale >= 0 && std::isfinite(time_scale))) {
    return InvalidArgumentError("time_scale must be >= 0, got " + std::to_string(time_scale));
  }
  if (vocab_size < 2)
    return InvalidArgumentError("vocab_size must be >= 2, got " + std::to_string(vocab_size));
  return Status::Ok();
}

uint32_t TraceMapping::ScaledBlockTokens() const {
  return static_cast<uint32_t>(std::max(1.0, std::round(trace_block_tokens * length_scale)));
}

std::vector<int32_t> HashIdTokens(uint64_t hash_id, uint32_t n, uint32_t vocab_size) {
  std::vector<int32_t> out;
  out.reserve(n);
  const uint64_t h = Mix(kTagBlock, hash_id);
  for (uint32_t j = 0; j < n; ++j) out.push_back(static_cast<int32_t>(Mix(h, j) % vocab_size));
  return out;
}

BenchRequest TraceRecordToRequest(const TraceRecord& record, const TraceMapping& m,
                                  uint64_t index) {
  BenchRequest req;
  req.index = index;
  const uint32_t block = m.ScaledBlockTokens();
  const size_t n = record.hash_ids.size();
  const int64_t before_last = static_cast<int64_t>(n - 1) * m.trace_block_tokens;
  const int64_t last_raw =
      std::clamp<int64_t>(int64_t{record.input_length} - before_last, 1, m.trace_block_tokens);
  const uint32_t last = std::clamp<uint32_t>(
      static_cast<uint32_t>(std::ceil(static_cast<double>(last_raw) * m.length_scale)), 1, block);
  req.prompt_tokens.reserve((n - 1) * block + last);
  for (size_t b = 0; b < n; ++b) {
    const auto t = HashIdTokens(record.hash_ids[b], b + 1 < n ? block : last, m.vocab_size);
    req.prompt_tokens.insert(req.prompt_tokens.end(), t.begin(), t.end());
  }
  req.prompt_len = static_cast<uint32_t>(req.prompt_tokens.size());
  uint32_t out = static_cast<uint32_t>(
      std::max(1.0, std::round(static_cast<double>(record.output_length) * m.length_scale)));
  if (m.max_output_tokens > 0) out = std::min(out, m.max_output_tokens);
  req.max_tokens = out;
  req.arrival_s = record.timestamp_ms * m.time_scale / 1000.0;
  return req;
}

}  // namespace kvmesh::bench
