// Synthetic and trace-replay workloads for the fleet simulator (docs/simulator.md "Workloads").
//
// Block identities: a prompt is a stream of blocks, each with a *content key* (which group prefix,
// conversation or trace hash id it came from, and its index there). The local hash of a block is a
// mix of its content key; the sequence hash chains local hashes with kv::ChainSequenceHash, as
// workers do, so two prompts share exactly as many leading hashes as leading full blocks.
#include "sim/workload.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "kv/trace_loader.h"

namespace kvmesh::sim {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Local hash of block `index` of content `key` in namespace `domain`.
kv::BlockHash LocalHash(uint64_t domain, uint64_t key, uint64_t index) {
  return SplitMix64(SplitMix64(SplitMix64(domain) ^ key) ^ index);
}

// Domains keep content keys of different kinds apart.
constexpr uint64_t kDomainGroup = 1;         // shared prefix group g
constexpr uint64_t kDomainConversation = 2;  // a conversation's own tokens
constexpr uint64_t kDomainTraceId = 3;       // a Mooncake hash id
constexpr uint64_t kDomainUnique = 4;        // tokens of one request only

// Deterministic generator (SplitMix64 stream): the same seed gives the same workload on every
// platform (std:: distributions are implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(SplitMix64(seed ^ 0x5eed5eed5eedull)) {}
  uint64_t NextU64() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t Below(uint64_t n) { return n <= 1 ? 0 : NextU64() % n; }
  double Exponential(double rate) { return -std::log1p(-Uniform()) / rate; }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------
// Synthetic

struct Conversation {
  uint64_t key = 0;
  uint32_t group = 0;
  uint32_t region = 0;
  uint32_t prefix_tokens = 0;   // leading tokens shared with the group
  uint32_t history_tokens = 0;  // prompt + output of the turns so far
  uint64_t last_used = 0;
};

class SyntheticWorkload final : public Workload {
 public:
  explicit SyntheticWorkload(const SyntheticOptions& o) : o_(o), rng_(o.seed) {
    if (o_.zipf_s > 0 && o_.num_prefixes > 1) {
      zipf_cdf_.resize(o_.num_prefixes);
      double sum = 0;
      for (uint32_t g = 0; g < o_.num_prefixes; ++g) {
        sum += 1.0 / std::pow(static_cast<double>(g) + 1, o_.zipf_s);
        zipf_cdf_[g] = sum;
      }
      for (double& c : zipf_cdf_) c /= sum;
    }
  }

  std::optional<SimRequest> Next() override {
    if (next_id_ >= o_.num_requests) return std::nullopt;
    SimRequest r;
    r.id = next_id_++;
    if (o_.rate <= 0) {
      r.arrival_s = 0;
    } else if (o_.poisson) {
      clock_s_ += rng_.Exponential(o_.rate);
      r.arrival_s = clock_s_;
    } else {
      r.arrival_s = static_cast<double>(r.id) / o_.rate;
    }
    r.output_tokens = Draw(o_.output_tokens);

    Conversation* conv = nullptr;
    const bool continues =
        !conversations_.empty() && o_.multi_turn_ratio > 0 && rng_.Uniform() < o_.multi_turn_ratio;
    if (continues) {
      conv = &conversations_[rng_.Below(conversations_.size())];
      const uint32_t turn =
          Draw(o_.turn_tokens > 0 ? o_.turn_tokens : std::max<uint32_t>(1, o_.input_tokens / 4));
      const uint64_t input = uint64_t{conv->history_tokens} + turn;
      if (input > o_.max_input_tokens) {
        conv = nullptr;  // too long: start a fresh conversation instead
      } else {
        r.input_tokens = static_cast<uint32_t>(input);
      }
    }
    if (conv == nullptr) {
      conv = NewConversation();
      r.input_tokens = Draw(o_.input_tokens);
      conv->prefix_tokens =
          static_cast<uint32_t>(std::floor(o_.shared_prefix_ratio * r.input_tokens));
    }
    r.region = conv->region;
    FillHashes(*conv, r.input_tokens, &r.hashes);
    conv->history_tokens = r.input_tokens + r.output_tokens;
    conv->last_used = r.id;
    return r;
  }

  std::string Describe() const override {
    std::ostringstream s;
    s << "synthetic "
      << (o_.rate <= 0 ? "burst"
          : o_.poisson ? "poisson"
                       : "uniform")
      << " rate=" << o_.rate << "/s n=" << o_.num_requests << " isl=" << o_.input_tokens
      << " osl=" << o_.output_tokens << " jitter=" << o_.length_jitter
      << " shared_prefix=" << o_.shared_prefix_ratio << " prefixes=" << o_.num_prefixes
      << " zipf=" << o_.zipf_s << " multi_turn=" << o_.multi_turn_ratio
      << " regions=" << o_.num_regions << " affinity=" << o_.regional_affinity
      << " block=" << o_.block_size << " seed=" << o_.seed;
    return s.str();
  }

 private:
  uint32_t Draw(uint32_t mean) {
    if (o_.length_jitter <= 0) return std::max<uint32_t>(mean, 1);
    const double v = mean * (1 + o_.length_jitter * (2 * rng_.Uniform() - 1));
    return static_cast<uint32_t>(std::max(1.0, std::round(v)));
  }

  uint32_t PickGroup() {
    if (o_.num_prefixes <= 1) return 0;
    if (zipf_cdf_.empty()) return static_cast<uint32_t>(rng_.Below(o_.num_prefixes));
    const double u = rng_.Uniform();
    auto it = std::upper_bound(zipf_cdf_.begin(), zipf_cdf_.end(), u);
    return static_cast<uint32_t>(std::min<size_t>(it - zipf_cdf_.begin(), o_.num_prefixes - 1));
  }

  Conversation* NewConversation() {
    Conversation c;
    c.key = SplitMix64(o_.seed * 0x100000001b3ull + next_conversation_++);
    c.group = PickGroup();
    const uint32_t home = c.group % o_.num_regions;
    c.region = home;
    if (o_.num_regions > 1 && rng_.Uniform() >= o_.regional_affinity) {
      // Any other region, uniformly.
      c.region =
          static_cast<uint32_t>((home + 1 + rng_.Below(o_.num_regions - 1)) % o_.num_regions);
    }
    if (o_.multi_turn_ratio <= 0) {  // nobody continues: keep one scratch slot
      conversations_.resize(1);
      conversations_[0] = c;
      return &conversations_[0];
    }
    if (conversations_.size() < o_.max_conversations) {
      conversations_.push_back(c);
      return &conversations_.back();
    }
    // Replace the least recently used conversation (it has ended).
    auto lru = std::min_element(
        conversations_.begin(), conversations_.end(),
        [](const Conversation& a, const Conversation& b) { return a.last_used < b.last_used; });
    *lru = c;
    return &*lru;
  }

  // Block k of a conversation's token stream is the group's block k while it lies wholly in the
  // shared prefix, else the conversation's own block k (a later turn's prompt is the earlier
  // prompt + output + new tokens, so its blocks extend the earlier ones).
  void FillHashes(const Conversation& c, uint32_t input_tokens, std::vector<kv::BlockHash>* out) {
    const uint32_t bs = o_.block_size;
    const uint32_t blocks = input_tokens / bs;
    const uint32_t shared_blocks = c.prefix_tokens / bs;
    out->resize(blocks);
    kv::BlockHash parent = 0;
    for (uint32_t k = 0; k < blocks; ++k) {
      const kv::BlockHash local = k < shared_blocks
                                      ? LocalHash(kDomainGroup, o_.seed * 1000003 + c.group, k)
                                      : LocalHash(kDomainConversation, c.key, k);
      parent = k == 0 ? local : kv::ChainSequenceHash(parent, local, kv::kBlockHashSeed);
      (*out)[k] = parent;
    }
  }

  SyntheticOptions o_;
  Rng rng_;
  std::vector<double> zipf_cdf_;
  std::vector<Conversation> conversations_;  // bounded by max_conversations
  uint64_t next_id_ = 0;
  uint64_t next_conversation_ = 0;
  double clock_s_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Trace replay

// One replayed record, compact: Mooncake records keep their hash ids, Azure ones have none.
struct CompactRecord {
  double time_s = 0;  // trace time, seconds from the first record
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  std::vector<uint64_t> hash_ids;
};

class TraceWorkload final : public Workload {
 public:
  TraceWorkload(const TraceOptions& o, std::string format, std::vector<CompactRecord> records)
      : o_(o), format_(std::move(format)), records_(std::move(records)) {
    const size_t n = records_.size();
    const double span = n == 0 ? 0 : records_.back().time_s - records_.front().time_s;
    // Copies follow each other with the trace's mean gap between them (1 s for a single record).
    period_s_ = n > 1 ? span + span / static_cast<double>(n - 1) : 1.0;
    if (period_s_ <= 0) period_s_ = 1.0;
    total_ = static_cast<uint64_t>(n) * std::max<uint32_t>(o_.repeat, 1);
    if (o_.max_requests > 0) total_ = std::min(total_, o_.max_requests);
    // Sub-blocks per hash id: the scaled span rounded to whole blocks (exact when unscaled:
    // trace_block_tokens is a multiple of block_size).
    sub_blocks_ = static_cast<uint32_t>(
        std::max(1.0, std::round(o_.trace_block_tokens * o_.input_scale /
                                 static_cast<double>(o_.block_size))));
  }

  std::optional<SimRequest> Next() override {
    if (next_ >= total_) return std::nullopt;
    const uint64_t copy = next_ / records_.size();
    const CompactRecord& rec = records_[next_ % records_.size()];
    SimRequest r;
    r.id = next_;
    r.arrival_s = (rec.time_s + static_cast<double>(copy) * period_s_) * o_.time_scale;
    r.input_tokens = rec.input_tokens;
    r.output_tokens = rec.output_tokens;
    const uint32_t bs = o_.block_size;
    const uint32_t sub = sub_blocks_;
    const uint32_t blocks = rec.input_tokens / bs;
    const uint64_t copy_salt = SplitMix64(o_.seed ^ SplitMix64(copy + 1));
    r.hashes.resize(blocks);
    kv::BlockHash parent = 0;
    for (uint32_t k = 0; k < blocks; ++k) {
      const uint32_t id_index = k / sub;
      const kv::BlockHash local =
          id_index < rec.hash_ids.size()
              ? LocalHash(kDomainTraceId ^ copy_salt, rec.hash_ids[id_index], k % sub)
              : LocalHash(kDomainUnique ^ copy_salt, next_ % records_.size(), k);
      parent = k == 0 ? local : kv::ChainSequenceHash(parent, local, kv::kBlockHashSeed);
      r.hashes[k] = parent;
    }
    ++next_;
    return r;
  }

  std::string Describe() const override {
    std::ostringstream s;
    s << "trace " << format_ << " " << o_.path << " records=" << records_.size()
      << " repeat=" << o_.repeat << " requests=" << total_ << " time_scale=" << o_.time_scale
      << " block=" << o_.block_size;
    if (format_ == "mooncake") s << " trace_block=" << o_.trace_block_tokens;
    if (o_.input_scale != 1.0 || o_.output_scale != 1.0) {
      s << " input_scale=" << o_.input_scale << " output_scale=" << o_.output_scale;
      if (format_ == "mooncake") s << " id_blocks=" << sub_blocks_;
    }
    s << " seed=" << o_.seed;
    return s.str();
  }

 private:
  TraceOptions o_;
  std::string format_;
  std::vector<CompactRecord> records_;
  double period_s_ = 1;
  uint64_t total_ = 0;
  uint64_t next_ = 0;
  uint32_t sub_blocks_ = 1;  // blocks of block_size per trace hash id
};

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

StatusOr<std::vector<CompactRecord>> LoadMooncake(const TraceOptions& o) {
  const size_t limit = o.repeat <= 1 ? static_cast<size_t>(o.max_requests) : 0;
  KVMESH_ASSIGN_OR_RETURN(std::vector<kv::TraceRecord> raw, kv::LoadMooncakeTrace(o.path, limit));
  std::vector<CompactRecord> out;
  out.reserve(raw.size());
  const double first_ms = raw.empty() ? 0 : raw.front().timestamp_ms;
  for (kv::TraceRecord& t : raw) {
    CompactRecord c;
    c.time_s = (t.timestamp_ms - first_ms) / 1000.0;
    c.input_tokens = t.input_length;
    c.output_tokens = t.output_length;  // 0 becomes 1 after scaling (MakeTraceWorkload)
    c.hash_ids = std::move(t.hash_ids);
    c.hash_ids.shrink_to_fit();
    out.push_back(std::move(c));
  }
  return out;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// "2023-11-16 18:15:46.6805900" -> seconds since the epoch; nullopt when malformed.
std::optional<double> ParseDateTime(std::string_view s) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0;
  int consumed = 0;
  const std::string str(s);
  if (std::sscanf(str.c_str(), "%4d-%2d-%2d %2d:%2d:%n", &y, &mo, &d, &h, &mi, &consumed) != 5 ||
      consumed == 0) {
    return std::nullopt;
  }
  std::string_view rest = s.substr(static_cast<size_t>(consumed));
  if (rest.empty() || !std::isdigit(static_cast<unsigned char>(rest[0]))) return std::nullopt;
  double sec = 0;
  size_t i = 0;
  while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
    sec = sec * 10 + (rest[i] - '0');
    ++i;
  }
  if (i < rest.size() && rest[i] == '.') {
    double scale = 0.1;
    ++i;
    while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
      sec += (rest[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
  }
  if (i != rest.size() || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec >= 61) {
    return std::nullopt;
  }
  return static_cast<double>(
             DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d))) *
             86400.0 +
         h * 3600.0 + mi * 60.0 + sec;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t b = 0;
  while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  return s.substr(b);
}

std::optional<uint32_t> ParseCount(const std::string& s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char ch : s) {
    if (!std::isdigit(static_cast<unsigned char>(ch))) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (v > 0xffffffffull) return std::nullopt;
  return static_cast<uint32_t>(v);
}

StatusOr<std::vector<CompactRecord>> LoadAzure(const TraceOptions& o) {
  std::ifstream in(o.path);
  if (!in) return NotFoundError("cannot open trace '" + o.path + "'");
  auto bad = [&](size_t line, const std::string& what) {
    return InvalidArgumentError(o.path + ":" + std::to_string(line) + ": " + what);
  };
  std::string line;
  size_t line_no = 0;
  int col_time = -1, col_in = -1, col_out = -1;
  size_t columns = 0;
  std::vector<CompactRecord> out;
  double first = 0;
  const uint64_t limit = o.repeat <= 1 ? o.max_requests : 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = Trim(line);
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) fields.push_back(Trim(f));
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    if (col_time < 0) {  // header
      for (size_t i = 0; i < fields.size(); ++i) {
        if (fields[i] == "TIMESTAMP") col_time = static_cast<int>(i);
        if (fields[i] == "ContextTokens") col_in = static_cast<int>(i);
        if (fields[i] == "GeneratedTokens") col_out = static_cast<int>(i);
      }
      if (col_time < 0 || col_in < 0 || col_out < 0) {
        return bad(line_no, "header must name TIMESTAMP, ContextTokens and GeneratedTokens, got '" +
                                line + "'");
      }
      columns = fields.size();
      continue;
    }
    if (fields.size() != columns) {
      return bad(line_no, "expected " + std::to_string(columns) + " fields, got " +
                              std::to_string(fields.size()));
    }
    auto t = ParseDateTime(fields[static_cast<size_t>(col_time)]);
    if (!t) return bad(line_no, "bad TIMESTAMP '" + fields[static_cast<size_t>(col_time)] + "'");
    auto ctx = ParseCount(fields[static_cast<size_t>(col_in)]);
    if (!ctx)
      return bad(line_no, "bad ContextTokens '" + fields[static_cast<size_t>(col_in)] + "'");
    auto gen = ParseCount(fields[static_cast<size_t>(col_out)]);
    if (!gen)
      return bad(line_no, "bad GeneratedTokens '" + fields[static_cast<size_t>(col_out)] + "'");
    if (*ctx == 0) return bad(line_no, "ContextTokens must be > 0");
    if (out.empty()) first = *t;
    CompactRecord c;
    c.time_s = *t - first;
    c.input_tokens = *ctx;
    c.output_tokens = *gen;  // 0 becomes 1 after scaling (MakeTraceWorkload)
    out.push_back(std::move(c));
    if (limit > 0 && out.size() >= limit) break;
  }
  if (col_time < 0) return bad(line_no, "empty file: no header");
  return out;
}

}  // namespace

StatusOr<std::unique_ptr<Workload>> MakeSyntheticWorkload(const SyntheticOptions& o) {
  auto bad = [](const std::string& what) {
    return InvalidArgumentError("synthetic workload: " + what);
  };
  if (o.block_size == 0) return bad("block_size must be > 0");
  if (o.num_requests == 0) return bad("num_requests must be > 0");
  if (o.input_tokens == 0 || o.output_tokens == 0)
    return bad("input_tokens and output_tokens must be > 0");
  if (std::isnan(o.rate) || std::isinf(o.rate)) return bad("rate must be finite");
  if (!(o.length_jitter >= 0 && o.length_jitter < 1)) return bad("length_jitter must be in [0, 1)");
  if (!(o.shared_prefix_ratio >= 0 && o.shared_prefix_ratio <= 1)) {
    return bad("shared_prefix_ratio must be in [0, 1]");
  }
  if (!(o.multi_turn_ratio >= 0 && o.multi_turn_ratio <= 1))
    return bad("multi_turn_ratio must be in [0, 1]");
  if (!(o.regional_affinity >= 0 && o.regional_affinity <= 1)) {
    return bad("regional_affinity must be in [0, 1]");
  }
  if (o.num_prefixes == 0) return bad("num_prefixes must be > 0");
  if (o.num_regions == 0) return bad("num_regions must be > 0");
  if (!(o.zipf_s >= 0) || std::isinf(o.zipf_s)) return bad("zipf_s must be >= 0");
  if (o.max_conversations == 0) return bad("max_conversations must be > 0");
  return std::unique_ptr<Workload>(new SyntheticWorkload(o));
}

StatusOr<std::unique_ptr<Workload>> MakeTraceWorkload(const TraceOptions& o) {
  auto bad = [&](const std::string& what) {
    return InvalidArgumentError("trace '" + o.path + "': " + what);
  };
  if (o.block_size == 0) return bad("block_size must be > 0");
  if (!(o.time_scale > 0) || std::isinf(o.time_scale)) return bad("time_scale must be > 0");
  if (o.repeat == 0) return bad("repeat must be >= 1");
  if (!(o.input_scale > 0 && o.input_scale <= 16)) {
    return bad("input_scale must be in (0, 16], got " + std::to_string(o.input_scale));
  }
  if (!(o.output_scale > 0 && o.output_scale <= 16)) {
    return bad("output_scale must be in (0, 16], got " + std::to_string(o.output_scale));
  }
  std::string lower = o.path;
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::vector<CompactRecord> records;
  std::string format;
  if (EndsWith(lower, ".jsonl") || EndsWith(lower, ".json")) {
    if (o.trace_block_tokens == 0 || o.trace_block_tokens % o.block_size != 0) {
      return bad("trace_block_tokens (" + std::to_string(o.trace_block_tokens) +
                 ") must be a positive multiple of block_size (" + std::to_string(o.block_size) +
                 ")");
    }
    format = "mooncake";
    KVMESH_ASSIGN_OR_RETURN(records, LoadMooncake(o));
  } else if (EndsWith(lower, ".csv")) {
    format = "azure";
    KVMESH_ASSIGN_OR_RETURN(records, LoadAzure(o));
  } else {
    return bad("unknown trace format: want .jsonl (Mooncake) or .csv (Azure)");
  }
  if (records.empty()) return bad("no records");
  // Arrivals must not go backwards; a trace out of order is replayed in time order.
  std::stable_sort(
      records.begin(), records.end(),
      [](const CompactRecord& a, const CompactRecord& b) { return a.time_s < b.time_s; });
  const double first = records.front().time_s;
  auto scaled = [](uint32_t tokens, double scale) {
    return static_cast<uint32_t>(std::clamp(std::round(tokens * scale), 1.0, 4294967295.0));
  };
  for (CompactRecord& r : records) {
    r.time_s -= first;
    r.input_tokens = scaled(r.input_tokens, o.input_scale);
    r.output_tokens = scaled(r.output_tokens, o.output_scale);
  }
  records.shrink_to_fit();
  return std::unique_ptr<Workload>(new TraceWorkload(o, format, std::move(records)));
}

}  // namespace kvmesh::sim
