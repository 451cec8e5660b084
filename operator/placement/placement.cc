// Placement policies and the expected-TTFT model they share (see placement.h, docs/placement.md).
#include "operator/placement/placement.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace kvmesh::placement {
namespace {

using json = nlohmann::json;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kChunksPerFlow = 4;     // a flow is routed in this many equal parts
constexpr double kLocalPrefillShare = 0.25;  // decode workers prefill short/overflow prompts too
constexpr double kSaturation = 0.95;

std::string Fmt(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

// Demand of one (region, prefix root) pair. root -1 = the region's traffic with no hot prefix.
struct Flow {
  std::string region;
  int root = -1;
  double rate = 0;
  double isl = 0;
  double osl = 0;
};

// Clusters, links and the static parts of the TTFT model.
class Model {
 public:
  explicit Model(const PlacementInput& in) : in_(in) {
    for (size_t i = 0; i < in.clusters.size(); ++i) index_[in.clusters[i].name] = static_cast<int>(i);
    copies_.assign(in.heat.size(), std::vector<bool>(in.clusters.size(), false));
    BuildFlows();
  }

  int NumClusters() const { return static_cast<int>(in_.clusters.size()); }
  const std::vector<Flow>& flows() const { return flows_; }
  const PlacementModel& m() const { return in_.model; }
  // No prefill pool: every replica is an aggregated worker that prefills its own requests.
  bool aggregated() const { return in_.pools.prefill_replicas == 0; }

  // The link a -> b, else b -> a (links serve both ways unless both are listed); null if none.
  const Link* FindLink(int a, int b) const {
    const Link* reverse = nullptr;
    for (const Link& l : in_.links) {
      if (l.from == in_.clusters[a].name && l.to == in_.clusters[b].name) return &l;
      if (l.from == in_.clusters[b].name && l.to == in_.clusters[a].name && reverse == nullptr) reverse = &l;
    }
    return reverse;
  }

  // Round trip between users in `region` and cluster c.
  double RttS(const std::string& region, int c) const {
    if (in_.clusters[c].region == region) return m().intra_region_rtt_ms / 1000;
    double best = kInf;
    for (int h = 0; h < NumClusters(); ++h) {
      if (h == c || in_.clusters[h].region != region) continue;
      if (const Link* l = FindLink(h, c)) best = std::min(best, 2 * l->latency_ms / 1000);
    }
    return std::isfinite(best) ? best : m().default_rtt_ms / 1000;
  }

  // Seconds to move `bytes` of KV from cluster a to b; infinity without a usable link.
  double TransferS(int a, int b, double bytes) const {
    if (a == b) return 0;
    const Link* l = FindLink(a, b);
    if (l == nullptr || l->bandwidth_gbps <= 0) return kInf;
    return bytes * 8 / (l->bandwidth_gbps * 1e9) + l->latency_ms / 1000;
  }

  // Fraction of root p's KV held in cluster c (a replicated copy counts as all of it).
  double CachedFraction(int p, int c) const {
    if (!in_.clusters[c].healthy) return 0;
    if (copies_[p][c]) return 1;
    const PrefixHeat& h = in_.heat[p];
    auto it = h.cached_bytes.find(in_.clusters[c].name);
    if (it == h.cached_bytes.end() || h.bytes <= 0) return 0;
    return std::clamp(it->second / h.bytes, 0.0, 1.0);
  }

  void SetCopy(int p, int c, bool on) { copies_[p][c] = on; }

  // How a request of flow f is prefilled in cluster c: seconds of prefill compute (tokens / tp)
  // and KV pulled from another cluster when that beats recomputing it.
  struct Prefill {
    double tokens = 0;     // computed in c
    double pull_s = 0;     // transfer before compute
    double pull_bytes = 0;
  };
  Prefill PrefillAt(const Flow& f, int c) const {
    const double tp = m().prefill_tokens_per_s;
    if (f.root < 0) return {f.isl, 0, 0};
    const PrefixHeat& h = in_.heat[f.root];
    const double here = CachedFraction(f.root, c);
    Prefill best{f.isl - here * h.tokens, 0, 0};
    for (int s = 0; s < NumClusters(); ++s) {
      const double there = CachedFraction(f.root, s);
      if (s == c || there <= here) continue;
      const double bytes = (there - here) * h.bytes;
      const double pull = TransferS(s, c, bytes);
      const double tokens = f.isl - there * h.tokens;
      if (pull + tokens / tp < best.pull_s + best.tokens / tp) best = {tokens, pull, bytes};
    }
    return best;
  }

  // TTFT of flow f in c ignoring queueing (used to price prefix copies).
  double StaticTtftS(const Flow& f, int c) const {
    Prefill p = PrefillAt(f, c);
    return RttS(f.region, c) + p.pull_s + p.tokens / m().prefill_tokens_per_s;
  }

 private:
  void BuildFlows() {
    std::vector<int> roots(in_.heat.size());
    for (size_t i = 0; i < roots.size(); ++i) roots[i] = static_cast<int>(i);
    std::sort(roots.begin(), roots.end(), [&](int a, int b) { return in_.heat[a].root < in_.heat[b].root; });
    std::set<std::string> regions;
    double osl_sum = 0, rate_sum = 0;
    for (const RegionDemand& d : in_.demand) {
      regions.insert(d.region);
      osl_sum += d.request_rate * d.mean_osl;
      rate_sum += d.request_rate;
    }
    const double mean_osl = rate_sum > 0 ? osl_sum / rate_sum : 0;
    for (const RegionDemand& d : in_.demand) {
      double with_root = 0;
      for (int p : roots) {
        auto it = in_.heat[p].rate_by_region.find(d.region);
        if (it == in_.heat[p].rate_by_region.end() || it->second <= 0) continue;
        flows_.push_back({d.region, p, it->second, std::max(d.mean_isl, in_.heat[p].tokens), d.mean_osl});
        with_root += it->second;
      }
      if (d.request_rate > with_root) {
        flows_.push_back({d.region, -1, d.request_rate - with_root, d.mean_isl, d.mean_osl});
      }
    }
    // Roots asked for from regions with no demand entry: prompt = the prefix, mean OSL.
    for (int p : roots) {
      for (const auto& [region, rate] : in_.heat[p].rate_by_region) {
        if (rate > 0 && !regions.count(region)) flows_.push_back({region, p, rate, in_.heat[p].tokens, mean_osl});
      }
    }
    std::stable_sort(flows_.begin(), flows_.end(), [](const Flow& a, const Flow& b) { return a.rate > b.rate; });
  }

  const PlacementInput& in_;
  std::map<std::string, int> index_;
  std::vector<std::vector<bool>> copies_;  // [root][cluster]: a replicated copy is there
  std::vector<Flow> flows_;
};

// Routes every flow over the clusters that have decode replicas and scores the outcome.
PlacementScore Score(const Model& model, const std::vector<int32_t>& prefill,
                     const std::vector<int32_t>& decode) {
  const PlacementModel& m = model.m();
  const int n = model.NumClusters();
  struct Load {
    double prefill_tokens = 0;  // tokens/s to compute
    double arrivals = 0;        // requests/s
    double decode_tokens = 0;   // tokens/s to generate
  };
  std::vector<Load> load(n);
  const bool aggregated = model.aggregated();
  // Prefill capacity of cluster c when its decode pool runs at utilization rho_d. With a prefill
  // pool, decode workers prefill only short or overflow prompts (kLocalPrefillShare of a replica
  // each). Without one, every replica is an aggregated worker: it prefills at the full rate in the
  // time its decode work leaves (1 - rho_d, at least 1 - kSaturation).
  auto prefill_capacity = [&](int c, double rho_d) {
    if (aggregated) return decode[c] * (1 - std::min(rho_d, kSaturation)) * m.prefill_tokens_per_s;
    return (prefill[c] + kLocalPrefillShare * decode[c]) * m.prefill_tokens_per_s;
  };
  auto queue_s = [&](const Load& l, int c) {
    const double rho_d = l.decode_tokens / (decode[c] * m.decode_tokens_per_s);
    const double cap = prefill_capacity(c, rho_d);
    if (l.arrivals <= 0 || cap <= 0) return 0.0;
    const double rho = l.prefill_tokens / cap;
    const double service = l.prefill_tokens / l.arrivals / m.prefill_tokens_per_s;
    double wait = rho < kSaturation ? service * rho / (1 - rho)
                                    : service * kSaturation / (1 - kSaturation) + (rho - kSaturation) * m.overload_penalty_s;
    if (rho_d > kSaturation) wait += (rho_d - kSaturation) * m.overload_penalty_s;
    return wait;
  };

  struct Placed {
    const Flow* flow;
    int cluster;
    double share;
    Model::Prefill prefill;
  };
  std::vector<Placed> placed;
  PlacementScore score;
  double total_rate = 0;
  for (int k = 0; k < kChunksPerFlow; ++k) {
    for (const Flow& f : model.flows()) {
      const double q = f.rate / kChunksPerFlow;
      if (k == 0) total_rate += f.rate;
      int best = -1;
      double best_ttft = kInf;
      Model::Prefill best_p;
      for (int c = 0; c < n; ++c) {
        if (decode[c] <= 0) continue;
        Model::Prefill p = model.PrefillAt(f, c);
        Load l = load[c];
        l.prefill_tokens += q * p.tokens;
        l.arrivals += q;
        l.decode_tokens += q * f.osl;
        const double ttft = model.RttS(f.region, c) + queue_s(l, c) + p.pull_s + p.tokens / m.prefill_tokens_per_s;
        if (ttft < best_ttft) best = c, best_ttft = ttft, best_p = p;
      }
      if (best < 0) {
        score.unserved_rate += q;
        continue;
      }
      load[best].prefill_tokens += q * best_p.tokens;
      load[best].arrivals += q;
      load[best].decode_tokens += q * f.osl;
      placed.push_back({&f, best, q, best_p});
    }
  }
  // Final TTFTs with the final loads: a chunk routed early also waits behind later ones.
  double ttft_sum = score.unserved_rate * m.unserved_penalty_s;
  double remote = 0;
  for (const Placed& p : placed) {
    const double ttft = model.RttS(p.flow->region, p.cluster) + queue_s(load[p.cluster], p.cluster) +
                        p.prefill.pull_s + p.prefill.tokens / m.prefill_tokens_per_s;
    ttft_sum += p.share * ttft;
    score.cross_cluster_bytes_per_s += p.share * p.prefill.pull_bytes;
    if (model.RttS(p.flow->region, p.cluster) > m.intra_region_rtt_ms / 1000) {
      remote += p.share;
      score.cross_cluster_bytes_per_s += p.share * p.flow->isl * m.prompt_bytes_per_token;
    }
  }
  if (total_rate > 0) {
    score.mean_ttft_s = ttft_sum / total_rate;
    score.remote_request_ratio = remote / total_rate;
  }
  return score;
}

Status ValidateInput(const PlacementInput& in) {
  static const std::set<std::string> kPolicies = {"single", "spread", "pack", "cache-locality"};
  if (!kPolicies.count(in.policy)) {
    return InvalidArgumentError("placement: unknown policy '" + in.policy +
                                "' (single | spread | pack | cache-locality)");
  }
  if (in.clusters.empty()) return InvalidArgumentError("placement: no clusters");
  std::set<std::string> names;
  for (const Cluster& c : in.clusters) {
    if (c.name.empty()) return InvalidArgumentError("placement: a cluster has an empty name");
    if (!names.insert(c.name).second) return InvalidArgumentError("placement: duplicate cluster '" + c.name + "'");
    if (c.gpu_capacity < 0) {
      return InvalidArgumentError("placement: cluster '" + c.name + "' gpu_capacity must be >= 0, got " +
                                  std::to_string(c.gpu_capacity));
    }
  }
  for (const Link& l : in.links) {
    if (!names.count(l.from) || !names.count(l.to)) {
      return InvalidArgumentError("placement: link " + l.from + " -> " + l.to + " names an unknown cluster");
    }
    if (!(l.bandwidth_gbps >= 0) || !(l.latency_ms >= 0)) {
      return InvalidArgumentError("placement: link " + l.from + " -> " + l.to + " has a negative bandwidth or latency");
    }
  }
  const PoolRequest& p = in.pools;
  if (p.prefill_replicas < 0 || p.decode_replicas < 0 || p.prefill_gpus_per_replica < 0 ||
      p.decode_gpus_per_replica < 0) {
    return InvalidArgumentError("placement: replicas and GPUs per replica must be >= 0");
  }
  for (const RegionDemand& d : in.demand) {
    if (!(d.request_rate >= 0) || !(d.mean_isl >= 0) || !(d.mean_osl >= 0)) {
      return InvalidArgumentError("placement: demand of region '" + d.region + "' has a negative value");
    }
  }
  for (const PrefixHeat& h : in.heat) {
    if (!(h.tokens >= 0) || !(h.bytes >= 0)) {
      return InvalidArgumentError("placement: prefix root '" + h.root + "' has negative tokens or bytes");
    }
    for (const auto& [region, rate] : h.rate_by_region) {
      if (!(rate >= 0)) return InvalidArgumentError("placement: prefix root '" + h.root + "' has a negative rate");
    }
  }
  const PlacementModel& m = in.model;
  if (!(m.prefill_tokens_per_s > 0) || !(m.decode_tokens_per_s > 0) || !(m.replication_window_s > 0)) {
    return InvalidArgumentError("placement: model throughputs and replication window must be > 0");
  }
  return Status::Ok();
}

// The interleaved order replicas are placed in: decode first, then prefill whenever the placed
// prefill count falls behind the requested P:D ratio, so every prefill has a decode pool to feed.
std::vector<bool> ReplicaOrder(const PoolRequest& p) {  // true = decode
  std::vector<bool> order;
  int64_t d = 0, f = 0;
  while (d < p.decode_replicas || f < p.prefill_replicas) {
    const bool decode = d < p.decode_replicas &&
                        (f >= p.prefill_replicas || d * p.prefill_replicas <= f * p.decode_replicas);
    order.push_back(decode);
    (decode ? d : f)++;
  }
  return order;
}

class Allocation {
 public:
  explicit Allocation(const PlacementInput& in)
      : in_(in), prefill_(in.clusters.size(), 0), decode_(in.clusters.size(), 0), gpus_(in.clusters.size(), 0) {}

  bool Fits(int c, bool decode) const {
    const Cluster& cl = in_.clusters[c];
    if (!cl.healthy) return false;
    if (!decode && decode_[c] == 0) return false;  // prefill only beside a decode pool
    const int32_t g = Gpus(decode);
    return g == 0 || gpus_[c] + g <= cl.gpu_capacity;
  }
  void Add(int c, bool decode) {
    (decode ? decode_ : prefill_)[c]++;
    gpus_[c] += Gpus(decode);
  }
  void Remove(int c, bool decode) {
    (decode ? decode_ : prefill_)[c]--;
    gpus_[c] -= Gpus(decode);
  }
  int32_t Gpus(bool decode) const {
    return decode ? in_.pools.decode_gpus_per_replica : in_.pools.prefill_gpus_per_replica;
  }
  const std::vector<int32_t>& prefill() const { return prefill_; }
  const std::vector<int32_t>& decode() const { return decode_; }
  int32_t count(int c, bool decode) const { return decode ? decode_[c] : prefill_[c]; }

  void Unplaced(bool decode) { (decode ? unplaced_decode_ : unplaced_prefill_)++; }

  void Finish(PlacementResult& r) const {
    for (size_t i = 0; i < in_.clusters.size(); ++i) {
      r.clusters.push_back({in_.clusters[i].name, prefill_[i], decode_[i], gpus_[i], in_.clusters[i].gpu_capacity});
    }
    r.unplaced_prefill = unplaced_prefill_;
    r.unplaced_decode = unplaced_decode_;
    auto usage = [&] {
      std::string s;
      for (size_t i = 0; i < in_.clusters.size(); ++i) {
        s += (i ? ", " : "") + in_.clusters[i].name + " " + std::to_string(gpus_[i]) + "/" +
             std::to_string(in_.clusters[i].gpu_capacity) + (in_.clusters[i].healthy ? "" : " (unhealthy)");
      }
      return s;
    };
    if (unplaced_decode_ > 0) {
      r.notes.push_back(std::to_string(unplaced_decode_) + " decode replica(s) of " +
                        std::to_string(Gpus(true)) + " GPU(s) fit in no cluster (GPUs used: " + usage() + ")");
    }
    if (unplaced_prefill_ > 0) {
      r.notes.push_back(std::to_string(unplaced_prefill_) + " prefill replica(s) of " +
                        std::to_string(Gpus(false)) +
                        " GPU(s) fit in no cluster that has a decode replica (GPUs used: " + usage() + ")");
    }
  }

 private:
  const PlacementInput& in_;
  std::vector<int32_t> prefill_, decode_, gpus_;
  int32_t unplaced_prefill_ = 0, unplaced_decode_ = 0;
};

// Places replicas in ReplicaOrder with `choose` (cluster index or -1). A prefill replica that finds
// no cluster with a decode pool and room is retried once every decode replica is placed (a later
// decode replica may open a new cluster for it), then counted as unplaced.
template <class Choose>
void PlaceInOrder(const PlacementInput& in, Allocation& a, Choose choose) {
  int deferred_prefill = 0;
  for (bool decode : ReplicaOrder(in.pools)) {
    const int c = choose(decode);
    if (c >= 0) a.Add(c, decode);
    else if (decode) a.Unplaced(true);
    else deferred_prefill++;
  }
  for (; deferred_prefill > 0; --deferred_prefill) {
    const int c = choose(false);
    if (c >= 0) a.Add(c, false); else a.Unplaced(false);
  }
}

void PlaceSingle(const PlacementInput& in, Allocation& a, PlacementResult& r) {
  PlaceInOrder(in, a, [&](bool decode) { return a.Fits(0, decode) ? 0 : -1; });
  if (in.clusters.size() > 1) r.notes.push_back("policy single uses only the first cluster, " + in.clusters[0].name);
}

void PlacePack(const PlacementInput& in, Allocation& a) {
  PlaceInOrder(in, a, [&](bool decode) {
    for (int c = 0; c < static_cast<int>(in.clusters.size()); ++c) {
      if (a.Fits(c, decode)) return c;
    }
    return -1;
  });
}

// D'Hondt by GPU capacity: the next replica of a kind goes to the cluster with the lowest
// (replicas of that kind + 1) / capacity; all capacities 0 = equal weights.
void PlaceSpread(const PlacementInput& in, Allocation& a) {
  const int n = static_cast<int>(in.clusters.size());
  bool any_capacity = false;
  for (const Cluster& c : in.clusters) any_capacity |= c.healthy && c.gpu_capacity > 0;
  std::vector<int64_t> weight(n);
  for (int c = 0; c < n; ++c) {
    weight[c] = !in.clusters[c].healthy ? 0 : any_capacity ? in.clusters[c].gpu_capacity : 1;
  }
  PlaceInOrder(in, a, [&](bool decode) {
    int chosen = -1;
    for (int c = 0; c < n; ++c) {
      if (weight[c] == 0 || !a.Fits(c, decode)) continue;
      // (count_c + 1) / w_c < (count_b + 1) / w_b, cross-multiplied; ties keep spec order.
      if (chosen < 0 || (a.count(c, decode) + 1) * weight[chosen] < (a.count(chosen, decode) + 1) * weight[c]) {
        chosen = c;
      }
    }
    return chosen;
  });
}

// Decides, per hot root, whether to copy its KV into other clusters (model's copies updated).
std::vector<PrefixDecision> DecidePrefixes(const PlacementInput& in, Model& model, const std::vector<bool>& eligible) {
  const PlacementModel& m = in.model;
  const int n = static_cast<int>(in.clusters.size());
  std::vector<int> roots(in.heat.size());
  std::vector<double> rate(in.heat.size(), 0);
  for (size_t p = 0; p < in.heat.size(); ++p) {
    roots[p] = static_cast<int>(p);
    for (const auto& [region, r] : in.heat[p].rate_by_region) rate[p] += r;
  }
  std::sort(roots.begin(), roots.end(), [&](int a, int b) {
    return rate[a] != rate[b] ? rate[a] > rate[b] : in.heat[a].root < in.heat[b].root;
  });

  std::vector<PrefixDecision> out;
  for (int p : roots) {
    if (rate[p] < m.hot_min_rate) continue;
    const PrefixHeat& h = in.heat[p];
    std::vector<const Flow*> flows;
    for (const Flow& f : model.flows()) if (f.root == p) flows.push_back(&f);
    auto best_ttft = [&](const Flow& f) {
      double best = kInf;
      for (int c = 0; c < n; ++c) if (eligible[c]) best = std::min(best, model.StaticTtftS(f, c));
      return best;
    };
    auto holder = [&] {
      int s = -1;
      for (int c = 0; c < n; ++c) {
        if (model.CachedFraction(p, c) > 0 && (s < 0 || model.CachedFraction(p, c) > model.CachedFraction(p, s))) s = c;
      }
      return s;
    };
    const int home = holder();
    if (home < 0) {
      out.push_back({h.root, PrefixAction::kLeave, "", "", 0, 0, 0,
                     "hot (" + Fmt(rate[p]) + " req/s) but cached in no healthy cluster: it is computed where its requests land"});
      continue;
    }
    bool replicated = false;
    PrefixDecision best_rejected{h.root, PrefixAction::kServeInPlace, in.clusters[home].name, "", 0, 0, 0, ""};
    double best_rejected_net = -kInf;
    for (;;) {
      int chosen = -1, chosen_src = -1;
      double chosen_net = 0, chosen_gain = 0, chosen_transfer = 0;
      for (int t = 0; t < n; ++t) {
        if (!eligible[t] || model.CachedFraction(p, t) >= 1) continue;
        // Source: the holder that can send the missing part fastest.
        int src = -1;
        double transfer = kInf;
        for (int s = 0; s < n; ++s) {
          if (s == t || model.CachedFraction(p, s) <= model.CachedFraction(p, t)) continue;
          const double x = model.TransferS(s, t, (1 - model.CachedFraction(p, t)) * h.bytes);
          if (x < transfer) transfer = x, src = s;
        }
        // Whether t would serve some of the root's requests: a copy there lowers their TTFT.
        double before = 0;
        for (const Flow* f : flows) before += f->rate * best_ttft(*f);
        model.SetCopy(p, t, true);
        double after = 0;
        for (const Flow* f : flows) after += f->rate * best_ttft(*f);
        model.SetCopy(p, t, false);
        // What the copy saves is not that TTFT difference for every request: a cluster that
        // serves the root caches it after computing it once, and serves it from its own cache
        // from then on. The copy saves that one computation of the missing part (the first
        // request's prefill there), once per window, at the price of one transfer per window.
        const double gain = after < before
                                ? (1 - model.CachedFraction(p, t)) * h.tokens / m.prefill_tokens_per_s /
                                      m.replication_window_s
                                : 0;  // prefill seconds saved per second
        const double cost = transfer / m.replication_window_s;
        const double net = gain - cost;
        if (src >= 0 && std::isfinite(transfer) && gain > cost) {
          if (chosen < 0 || net > chosen_net) chosen = t, chosen_src = src, chosen_net = net, chosen_gain = gain, chosen_transfer = transfer;
        } else if (gain > 0 && net > best_rejected_net) {
          best_rejected_net = net;
          best_rejected.target = in.clusters[t].name;
          best_rejected.gain_s_per_s = gain;
          best_rejected.transfer_s = transfer;
          best_rejected.cost_s_per_s = cost;
          const Link* l = src >= 0 ? model.FindLink(src, t) : nullptr;
          best_rejected.reason =
              !std::isfinite(transfer)
                  ? "no link with bandwidth to " + in.clusters[t].name + " (would save " + Fmt(gain) + " s/s)"
                  : "a copy to " + in.clusters[t].name + " over " + in.clusters[src].name + "->" + in.clusters[t].name +
                        " (" + Fmt(l ? l->bandwidth_gbps : 0) + " Gbps, " + Fmt(l ? l->latency_ms : 0) + " ms) takes " +
                        Fmt(transfer) + " s, more than the " + Fmt(gain * m.replication_window_s) +
                        " s of prefill it saves there (" + Fmt(cost) + " > " + Fmt(gain) + " s/s over the " +
                        Fmt(m.replication_window_s) + " s window)";
        }
      }
      if (chosen < 0) break;
      model.SetCopy(p, chosen, true);
      replicated = true;
      out.push_back({h.root, PrefixAction::kReplicate, in.clusters[chosen_src].name, in.clusters[chosen].name,
                     chosen_gain, chosen_transfer, chosen_transfer / m.replication_window_s,
                     "copy to " + in.clusters[chosen].name + ": the transfer (" + Fmt(chosen_transfer) +
                         " s) is shorter than computing it there once (" +
                         Fmt(chosen_gain * m.replication_window_s) + " s of prefill; " + Fmt(rate[p]) + " req/s)"});
    }
    if (!replicated) {
      if (best_rejected.reason.empty()) {
        best_rejected.reason = "served where it lives (" + in.clusters[home].name + "): no copy would lower TTFT";
      } else {
        best_rejected.reason = "served where it lives (" + in.clusters[home].name + "); " + best_rejected.reason;
      }
      out.push_back(best_rejected);
    }
  }
  return out;
}

void PlaceCacheLocality(const PlacementInput& in, Allocation& a, PlacementResult& r) {
  double total = 0;
  for (const RegionDemand& d : in.demand) total += d.request_rate;
  for (const PrefixHeat& h : in.heat) for (const auto& [region, rate] : h.rate_by_region) total += rate;
  if (total <= 0) {
    r.notes.push_back("cache-locality: no demand or prefix heat yet; placed as spread");
    PlaceSpread(in, a);
    return;
  }
  Model model(in);
  const int n = model.NumClusters();
  std::vector<bool> eligible(n);
  for (int c = 0; c < n; ++c) eligible[c] = a.Fits(c, true);
  r.prefixes = DecidePrefixes(in, model, eligible);

  PlaceInOrder(in, a, [&](bool decode) {
    int chosen = -1;
    double best = kInf;
    for (int c = 0; c < n; ++c) {
      if (!a.Fits(c, decode)) continue;
      a.Add(c, decode);
      const PlacementScore s = Score(model, a.prefill(), a.decode());
      a.Remove(c, decode);
      // Relative tolerance: a tie within rounding keeps spec order (determinism across builds).
      if (chosen < 0 || s.mean_ttft_s < best - 1e-9 * std::max(1.0, std::abs(best))) chosen = c, best = s.mean_ttft_s;
    }
    return chosen;
  });
  // A copy into a cluster that got no decode replica serves no one.
  for (PrefixDecision& d : r.prefixes) {
    if (d.action != PrefixAction::kReplicate) continue;
    for (int c = 0; c < n; ++c) {
      if (in.clusters[c].name == d.target && a.decode()[c] == 0) {
        d.action = PrefixAction::kLeave;
        d.reason = "not copied to " + d.target + ": it got no decode replica (" + d.reason + ")";
      }
    }
  }
}

}  // namespace

const char* PrefixActionName(PrefixAction a) {
  switch (a) {
    case PrefixAction::kServeInPlace: return "serve-in-place";
    case PrefixAction::kReplicate: return "replicate";
    case PrefixAction::kLeave: return "leave";
  }
  return "leave";
}

const ClusterShare* PlacementResult::Find(const std::string& cluster) const {
  for (const ClusterShare& c : clusters) if (c.cluster == cluster) return &c;
  return nullptr;
}

StatusOr<PlacementResult> Place(const PlacementInput& input) {
  KVMESH_RETURN_IF_ERROR(ValidateInput(input));
  PlacementResult r;
  r.policy = input.policy;
  Allocation a(input);
  if (input.policy == "single") {
    PlaceSingle(input, a, r);
  } else if (input.policy == "pack") {
    PlacePack(input, a);
  } else if (input.policy == "spread") {
    PlaceSpread(input, a);
  } else {
    PlaceCacheLocality(input, a, r);
  }
  for (const Cluster& c : input.clusters) {
    if (!c.healthy) r.notes.push_back("cluster " + c.name + " is unhealthy: its share moved to the others");
  }
  a.Finish(r);
  return r;
}

PlacementInput InputFromGraph(const graph::InferenceGraph& g) {
  PlacementInput in;
  const graph::PlacementSpec& pl = g.spec.placement;
  in.policy = pl.policy;
  for (const graph::ClusterSpec& c : pl.clusters) in.clusters.push_back({c.name, c.region, c.gpu_capacity, true});
  for (const graph::LinkSpec& l : pl.links) in.links.push_back({l.from, l.to, l.bandwidth_gbps, l.latency_ms});
  const bool prefill = g.spec.disaggregation.mode != "off";
  in.pools.prefill_replicas = prefill ? g.spec.prefill.replicas : 0;
  in.pools.decode_replicas = g.spec.decode.replicas;
  in.pools.prefill_gpus_per_replica = g.spec.prefill.gpus_per_worker;
  in.pools.decode_gpus_per_replica = g.spec.decode.gpus_per_worker;
  const graph::PlacementModelSpec& m = pl.model;
  if (m.prefill_tokens_per_s > 0) in.model.prefill_tokens_per_s = m.prefill_tokens_per_s;
  if (m.decode_tokens_per_s > 0) in.model.decode_tokens_per_s = m.decode_tokens_per_s;
  if (m.replication_window_s > 0) in.model.replication_window_s = m.replication_window_s;
  return in;
}

PlacementScore Evaluate(const PlacementInput& input, const PlacementResult& result) {
  Model model(input);
  const int n = model.NumClusters();
  std::vector<int32_t> prefill(n, 0), decode(n, 0);
  for (int c = 0; c < n; ++c) {
    if (const ClusterShare* s = result.Find(input.clusters[c].name)) prefill[c] = s->prefill_replicas, decode[c] = s->decode_replicas;
  }
  double copy_bytes = 0;
  for (const PrefixDecision& d : result.prefixes) {
    if (d.action != PrefixAction::kReplicate) continue;
    for (size_t p = 0; p < input.heat.size(); ++p) {
      if (input.heat[p].root != d.root) continue;
      for (int c = 0; c < n; ++c) {
        if (input.clusters[c].name != d.target) continue;
        copy_bytes += (1 - model.CachedFraction(static_cast<int>(p), c)) * input.heat[p].bytes;
        model.SetCopy(static_cast<int>(p), c, true);
      }
    }
  }
  PlacementScore s = Score(model, prefill, decode);
  s.cross_cluster_bytes_per_s += copy_bytes / input.model.replication_window_s;
  return s;
}

std::string PlacementResultToJson(const PlacementResult& r) {
  json j = {{"policy", r.policy}, {"unplacedPrefill", r.unplaced_prefill}, {"unplacedDecode", r.unplaced_decode}};
  j["clusters"] = json::array();
  for (const ClusterShare& c : r.clusters) {
    j["clusters"].push_back({{"name", c.cluster},
                             {"prefillReplicas", c.prefill_replicas},
                             {"decodeReplicas", c.decode_replicas},
                             {"gpusUsed", c.gpus_used},
                             {"gpuCapacity", c.gpu_capacity}});
  }
  j["prefixes"] = json::array();
  for (const PrefixDecision& d : r.prefixes) {
    j["prefixes"].push_back({{"root", d.root},
                             {"action", PrefixActionName(d.action)},
                             {"source", d.source},
                             {"target", d.target},
                             {"gainSecondsPerSecond", d.gain_s_per_s},
                             {"transferSeconds", std::isfinite(d.transfer_s) ? json(d.transfer_s) : json(nullptr)},
                             {"costSecondsPerSecond", std::isfinite(d.cost_s_per_s) ? json(d.cost_s_per_s) : json(nullptr)},
                             {"reason", d.reason}});
  }
  j["notes"] = r.notes;
  return j.dump(2);
}

}  // namespace kvmesh::placement
