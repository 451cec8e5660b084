// The paged forward pass against a naive dense implementation written independently here (double
// accumulation, unfused tensors read straight from the safetensors file, its own rope), plus the
// paged-vs-contiguous, prefix-vs-cold and chunked-vs-whole equivalences at the model level.
#include "agent/engine/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "agent/engine/engine_test_util.h"
#include "agent/engine/safetensors.h"

namespace kvmesh::engine {
namespace {

using test_util::TempDir;
using test_util::TestModelSpec;
using test_util::WriteTestModel;

// ---- the naive reference ------------------------------------------------------------------
struct Naive {
  TestModelSpec s;
  std::unique_ptr<SafetensorsFile> file;

  std::vector<double> T(const std::string& name) const {
    const TensorView* v = file->Find(name);
    EXPECT_NE(v, nullptr) << name;
    std::vector<float> f(static_cast<size_t>(v->numel()));
    ToFloat32(*v, f.data());
    return std::vector<double>(f.begin(), f.end());
  }
  // y[o] = sum_i W[o][i] x[i]
  static std::vector<double> MatVec(const std::vector<double>& w, const std::vector<double>& x,
                                    size_t out) {
    std::vector<double> y(out, 0.0);
    const size_t in = x.size();
    for (size_t o = 0; o < out; ++o) {
      for (size_t i = 0; i < in; ++i) y[o] += w[o * in + i] * x[i];
    }
    return y;
  }
  static std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
  }
  double InvFreq(int i) const {
    double f = 1.0 / std::pow(static_cast<double>(s.theta), 2.0 * i / s.head_dim);
    if (!s.llama3_scaling) return f;
    const double factor = 8, low = 1, high = 4, orig = 64;
    const double wavelen = 2 * M_PI / f;
    if (wavelen < orig / high) return f;
    if (wavelen > orig / low) return f / factor;
    const double smooth = (orig / wavelen - low) / (high - low);
    return (1 - smooth) * f / factor + smooth * f;
  }
  void Rope(std::vector<double>& v, int heads, int pos) const {
    const int half = s.head_dim / 2;
    for (int h = 0; h < heads; ++h) {
      double* x = v.data() + h * s.head_dim;
      for (int i = 0; i < half; ++i) {
        const double a = pos * InvFreq(i);
        const double x0 = x[i], x1 = x[i + half];
        x[i] = x0 * std::cos(a) - x1 * std::sin(a);
        x[i + half] = x1 * std::cos(a) + x0 * std::sin(a);
      }
    }
  }
  // Logits of every position of `tokens`.
  std::vector<std::vector<double>> Forward(const std::vector<int32_t>& tokens) const {
    const size_t n = tokens.size();
    const size_t H = s.hidden, D = s.head_dim, q_dim = s.heads * D, kv_dim = s.kv_heads * D;
    const std::vector<double> emb = T("model.embed_tokens.weight");
    std::vector<std::vector<double>> x(n);
    for (size_t t = 0; t < n; ++t) x[t].assign(emb.begin() + tokens[t] * H, emb.begin() + (tokens[t] + 1) * H);
    const bool bias = s.bias || s.model_type == "qwen2";
    for (int l = 0; l < s.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const auto ln1 = T(p + "input_layernorm.weight"), ln2 = T(p + "post_attention_layernorm.weight");
      const auto wq = T(p + "self_attn.q_proj.weight"), wk = T(p + "self_attn.k_proj.weight"),
                 wv = T(p + "self_attn.v_proj.weight"), wo = T(p + "self_attn.o_proj.weight");
      const auto wg = T(p + "mlp.gate_proj.weight"), wu = T(p + "mlp.up_proj.weight"),
                 wd = T(p + "mlp.down_proj.weight");
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (size_t t = 0; t < n; ++t) {
        const auto h = RmsNorm(x[t], ln1);
        q[t] = MatVec(wq, h, q_dim);
        k[t] = MatVec(wk, h, kv_dim);
        v[t] = MatVec(wv, h, kv_dim);
        if (bias) {
          const auto bq = T(p + "self_attn.q_proj.bias"), bk = T(p + "self_attn.k_proj.bias"),
                     bv = T(p + "self_attn.v_proj.bias");
          for (size_t i = 0; i < q_dim; ++i) q[t][i] += bq[i];
          for (size_t i = 0; i < kv_dim; ++i) { k[t][i] += bk[i]; v[t][i] += bv[i]; }
        }
        Rope(q[t], s.heads, static_cast<int>(t));
        Rope(k[t], s.kv_heads, static_cast<int>(t));
      }
      for (size_t t = 0; t < n; ++t) {
        std::vector<double> attn(q_dim, 0.0);
        for (int h = 0; h < s.heads; ++h) {
          const int kvh = h / (s.heads / s.kv_heads);
          std::vector<double> sc(t + 1);
          double mx = -1e300;
          for (size_t j = 0; j <= t; ++j) {
            double d = 0;
            for (size_t i = 0; i < D; ++i) d += q[t][h * D + i] * k[j][kvh * D + i];
            sc[j] = d / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, sc[j]);
          }
          double sum = 0;
          for (double& e : sc) { e = std::exp(e - mx); sum += e; }
          for (size_t j = 0; j <= t; ++j) {
            for (size_t i = 0; i < D; ++i) attn[h * D + i] += sc[j] / sum * v[j][kvh * D + i];
          }
        }
        const auto o = MatVec(wo, attn, H);
        for (size_t i = 0; i < H; ++i) x[t][i] += o[i];
        const auto h2 = RmsNorm(x[t], ln2);
        const auto g = MatVec(wg, h2, s.inter), u = MatVec(wu, h2, s.inter);
        std::vector<double> a(s.inter);
        for (int i = 0; i < s.inter; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
        const auto d = MatVec(wd, a, H);
        for (size_t i = 0; i < H; ++i) x[t][i] += d[i];
      }
    }
    const auto norm = T("model.norm.weight");
    const auto head = s.tied ? emb : T("lm_head.weight");
    std::vector<std::vector<double>> logits(n);
    for (size_t t = 0; t < n; ++t) logits[t] = MatVec(head, RmsNorm(x[t], norm), s.vocab);
    return logits;
  }
};

// ---- helpers driving the engine's Model ---------------------------------------------------
struct Harness {
  std::shared_ptr<const ModelWeights> weights;
  std::unique_ptr<Model> model;
  kernels::KvCacheLayout layout;
  std::vector<float> cache;

  Harness(const std::string& dir, int num_blocks, int block_size) {
    auto w = ModelWeights::Load(dir);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    weights = std::shared_ptr<const ModelWeights>(std::move(*w));
    model = std::make_unique<Model>(weights, RefKernelOps());
    layout = model->CacheLayout(num_blocks, block_size);
    cache.assign(static_cast<size_t>(layout.total_elems()), 0.0f);
  }
  // Runs tokens[start, end) of one sequence whose blocks are `blocks`; logits for every row.
  std::vector<float> Run(const std::vector<int32_t>& tokens, int start, int end,
                         const std::vector<int32_t>& blocks) {
    ForwardBatch b;
    for (int p = start; p < end; ++p) {
      b.tokens.push_back(tokens[p]);
      b.positions.push_back(p);
      b.slot_mapping.push_back(int64_t{blocks[p / layout.block_size]} * layout.block_size +
                               p % layout.block_size);
      b.logits_rows.push_back(p - start);
    }
    b.cu_q_lens = {0, end - start};
    b.context_lens = {end};
    b.block_tables = blocks;
    b.max_blocks_per_seq = static_cast<int>(blocks.size());
    auto r = model->Forward(b, cache.data(), layout);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::vector<float>(r->begin(), r->end());
  }
};

std::vector<int32_t> RandomTokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

struct Case {
  const char* name;
  TestModelSpec spec;
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  c.push_back({"llama3_gqa2_tied_scaled", TestModelSpec{}});
  c.back().spec.llama3_scaling = true;
  TestModelSpec qwen;
  qwen.architecture = "Qwen2ForCausalLM";
  qwen.model_type = "qwen2";
  qwen.kv_heads = 1;
  qwen.tied = false;
  qwen.theta = 1e6f;
  c.push_back({"qwen2_bias_gqa4_untied", qwen});
  TestModelSpec mistral;
  mistral.architecture = "MistralForCausalLM";
  mistral.model_type = "mistral";
  mistral.kv_heads = 4;
  mistral.tied = false;
  mistral.bf16 = true;
  c.push_back({"mistral_mha_bf16", mistral});
  return c;
}

// Tolerance: fp32 engine vs double reference, logits of magnitude ~10: 2e-3 absolute.
constexpr double kLogitTol = 2e-3;

TEST(ModelTest, ForwardMatchesNaiveDenseImplementation) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    WriteTestModel(c.spec, dir.path());
    Naive naive{c.spec, nullptr};
    auto f = SafetensorsFile::Open(dir.path() + "/model.safetensors");
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    naive.file = std::move(*f);
    const std::vector<int32_t> tokens = RandomTokens(37, c.spec.vocab, 11);
    const auto want = naive.Forward(tokens);

    Harness h(dir.path(), 16, 4);
    // Blocks deliberately out of order.
    const std::vector<int32_t> blocks = {7, 3, 12, 1, 9, 4, 15, 2, 10, 5};
    const std::vector<float> got = h.Run(tokens, 0, 37, blocks);
    ASSERT_EQ(got.size(), tokens.size() * c.spec.vocab);
    double max_err = 0, max_abs = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
      for (int v = 0; v < c.spec.vocab; ++v) {
        max_err = std::max(max_err, std::abs(got[t * c.spec.vocab + v] - want[t][v]));
        max_abs = std::max(max_abs, std::abs(want[t][v]));
      }
    }
    EXPECT_LT(max_err, kLogitTol) << "max |logit| " << max_abs;
    EXPECT_GT(max_abs, 1.0);  // the logits are not degenerate
  }
}

TEST(ModelTest, PagedBlocksGiveTheSameLogitsAsContiguousBlocks) {
  TempDir dir;
  WriteTestModel(TestModelSpec{}, dir.path());
  const std::vector<int32_t> tokens = RandomTokens(30, 97, 3);
  Harness a(dir.path(), 16, 4), b(dir.path(), 16, 4);
  const auto contiguous = a.Run(tokens, 0, 30, {1, 2, 3, 4, 5, 6, 7, 8});
  const auto scattered = b.Run(tokens, 0, 30, {14, 2, 9, 5, 11, 1, 7, 13});
  EXPECT_EQ(contiguous, scattered);  // same math in the same order: bit-identical
}

TEST(ModelTest, CachedPrefixAndChunksMatchOneShotPrefill) {
  TempDir dir;
  WriteTestModel(TestModelSpec{}, dir.path());
  const std::vector<int32_t> tokens = RandomTokens(29, 97, 5);
  const std::vector<int32_t> blocks = {3, 8, 1, 6, 2, 7, 4, 5};
  Harness one(dir.path(), 16, 4), chunked(dir.path(), 16, 4);
  const auto whole = one.Run(tokens, 0, 29, blocks);
  // Prefix of 12 tokens (3 full blocks), then chunks of 7, 1 and 9 tokens over the cached prefix.
  std::vector<float> parts = chunked.Run(tokens, 0, 12, blocks);
  for (auto [s, e] : {std::pair{12, 19}, std::pair{19, 20}, std::pair{20, 29}}) {
    const auto p = chunked.Run(tokens, s, e, blocks);
    parts.insert(parts.end(), p.begin(), p.end());
  }
  ASSERT_EQ(parts.size(), whole.size());
  double max_err = 0;
  for (size_t i = 0; i < whole.size(); ++i) max_err = std::max<double>(max_err, std::abs(whole[i] - parts[i]));
  EXPECT_LT(max_err, 1e-4);  // GEMM blocking differs with the row count; attention is the same
}

TEST(ModelTest, RejectsBadBatches) {
  TempDir dir;
  WriteTestModel(TestModelSpec{}, dir.path());
  Harness h(dir.path(), 8, 4);
  ForwardBatch b;
  b.tokens = {97};  // outside the vocabulary
  b.positions = {0};
  b.slot_mapping = {4};
  b.cu_q_lens = {0, 1};
  b.context_lens = {1};
  b.block_tables = {1};
  b.max_blocks_per_seq = 1;
  EXPECT_EQ(h.model->Forward(b, h.cache.data(), h.layout).status().code(), StatusCode::kInvalidArgument);
  b.tokens = {5};
  b.block_tables = {8};  // outside the cache
  EXPECT_EQ(h.model->Forward(b, h.cache.data(), h.layout).status().code(), StatusCode::kInvalidArgument);
  b.block_tables = {1};
  b.positions = {512};  // past max_position_embeddings
  EXPECT_EQ(h.model->Forward(b, h.cache.data(), h.layout).status().code(), StatusCode::kInvalidArgument);
  b.positions = {0};
  EXPECT_TRUE(h.model->Forward(b, h.cache.data(), h.layout).ok());
}

}  // namespace
}  // namespace kvmesh::engine
