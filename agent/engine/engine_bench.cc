// CPU engine benchmark: prefill and decode tokens/s of a model (default builtin:small) at several
// batch sizes, and decode at batch 1 against the machine's memory roofline measured in the same
// run (bytes of weights read per decode step / measured read bandwidth). Prints one JSON object.
//
//   kvmesh_engine_engine_bench [--model builtin:small] [--batches 1,8,32] [--prompt-len 128]
//                              [--decode-steps 32] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <immintrin.h>

#include <nlohmann/json.hpp>

#include "agent/engine/engine_core.h"
#include "agent/engine/model_preset.h"

namespace kvmesh::engine {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Sums [b, e) with eight independent AVX2 accumulators (enough loads in flight to saturate
// memory); scalar fallback without AVX2.
__attribute__((target("avx2"))) double SumAvx2(const float* p, size_t b, size_t e) {
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  size_t i = b;
  for (; i + 64 <= e; i += 64) {
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(p + i + 8 * j));
  }
  float tmp[8];
  double total = 0;
  for (__m256& a : acc) {
    _mm256_storeu_ps(tmp, a);
    for (float t : tmp) total += t;
  }
  for (; i < e; ++i) total += p[i];
  return total;
}
double SumScalar(const float* p, size_t b, size_t e) {
  double total = 0;
  for (size_t i = b; i < e; ++i) total += p[i];
  return total;
}

// Read bandwidth: `threads` threads each sum their slice of a 1 GiB buffer; best of 5.
double MeasureReadBandwidth(int threads) {
  const size_t n = (1024u << 20) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  const bool avx2 = __builtin_cpu_supports("avx2");
  double best = 0;
  std::vector<double> sinks(threads);
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const size_t lo = n / threads * t, hi = t + 1 == threads ? n : n / threads * (t + 1);
        sinks[t] = avx2 ? SumAvx2(buf.data(), lo, hi) : SumScalar(buf.data(), lo, hi);
      });
    }
    for (auto& th : ts) th.join();
    best = std::max(best, static_cast<double>(n * sizeof(float)) / Seconds(t0, Clock::now()));
  }
  if (std::accumulate(sinks.begin(), sinks.end(), 0.0) != static_cast<double>(n)) std::puts("");
  return best;
}

struct Args {
  std::string model = "builtin:small";
  std::vector<int> batches = {1, 8, 32};
  int prompt_len = 128;
  int decode_steps = 32;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
};

}  // namespace
}  // namespace kvmesh::engine

int main(int argc, char** argv) {
  using namespace kvmesh::engine;
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") a.model = v;
    else if (k == "--prompt-len") a.prompt_len = std::stoi(v);
    else if (k == "--decode-steps") a.decode_steps = std::stoi(v);
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--batches") {
      a.batches.clear();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) a.batches.push_back(std::stoi(item));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  auto dir = ResolveModelSource(a.model, DefaultModelCacheDir());
  if (!dir.ok()) {
    std::fprintf(stderr, "%s\n", dir.status().ToString().c_str());
    return 1;
  }
  auto w = ModelWeights::Load(*dir);
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<const ModelWeights> weights(std::move(*w));
  const ModelConfig& c = weights->config();

  const double bw = MeasureReadBandwidth(a.threads);
  // Bytes read per decode step at batch 1: every layer's matrices, the final norm and the lm_head
  // (one embedding row is negligible; with tied embeddings lm_head is the embedding table).
  int64_t step_bytes = 0;
  for (const LayerWeights& l : weights->layers()) {
    for (const WeightTensor* t : {&l.input_layernorm, &l.qkv_proj, &l.qkv_bias, &l.o_proj,
                                  &l.post_attention_layernorm, &l.gate_up_proj, &l.down_proj}) {
      step_bytes += t->numel() * 4;
    }
  }
  step_bytes += weights->norm().numel() * 4 + weights->lm_head().numel() * 4;

  nlohmann::json out = {{"model", a.model},
                        {"parameters", weights->num_parameters()},
                        {"hidden", c.hidden_size},
                        {"layers", c.num_hidden_layers},
                        {"threads", a.threads},
                        {"prompt_len", a.prompt_len},
                        {"decode_steps", a.decode_steps},
                        {"read_bandwidth_gbps", bw / 1e9},
                        {"weight_bytes_per_decode_step", step_bytes},
                        {"results", nlohmann::json::array()}};
  for (int batch : a.batches) {
    EngineOptions o;
    o.block_size = 16;
    o.max_num_seqs = batch;
    o.max_num_batched_tokens = batch * a.prompt_len;
    o.enable_prefix_caching = false;  // every prompt is computed
    const int per_seq = (a.prompt_len + a.decode_steps + 2 + 15) / 16;
    o.num_kv_blocks = batch * per_seq + 2;
    auto core_or = EngineCore::Create(o, weights, RefKernelOps(), nullptr);
    if (!core_or.ok()) {
      std::fprintf(stderr, "%s\n", core_or.status().ToString().c_str());
      return 1;
    }
    EngineCore& core = **core_or;
    for (int i = 0; i < batch; ++i) {
      GenerateRequest r;
      r.id = "b" + std::to_string(i);
      for (int j = 0; j < a.prompt_len; ++j) r.prompt.push_back((j * 31 + i * 7 + 11) % c.vocab_size);
      r.max_tokens = a.decode_steps + 1;
      r.ignore_eos = true;
      r.sampling.temperature = 0;
      (void)core.AddRequest(std::move(r));
    }
    // Prefill: one step computes every prompt (the budget covers all of them).
    const auto p0 = Clock::now();
    core.Step();
    const double prefill_s = Seconds(p0, Clock::now());
    const auto d0 = Clock::now();
    int steps = 0;
    while (core.HasWork() && steps < a.decode_steps) {
      core.Step();
      ++steps;
    }
    const double decode_s = Seconds(d0, Clock::now());
    nlohmann::json r = {{"batch", batch},
                        {"prefill_tokens_per_s", batch * a.prompt_len / prefill_s},
                        {"prefill_seconds", prefill_s},
                        {"decode_tokens_per_s", batch * steps / decode_s},
                        {"decode_step_ms", decode_s / steps * 1e3}};
    if (batch == 1) {
      const double roofline = bw / static_cast<double>(step_bytes);
      r["decode_roofline_tokens_per_s"] = roofline;
      r["decode_fraction_of_roofline"] = (steps / decode_s) / roofline;
    }
    out["results"].push_back(r);
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
