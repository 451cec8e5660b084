// Tokenizer throughput. Run: build/tokenizer/kvmesh_tokenizer_tokenizer_bench
// Text: ~10 KB of English (the embedded training corpus, then a shuffled-sentence copy so that the
// second half is not a verbatim repeat). Counters: tokens/s and bytes/s.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <sstream>

#include "tokenizer/byte_level_bpe_builder.h"
#include "tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::tokenizer {
namespace {

std::string BenchText() {
  std::string text(EmbeddedEnglishCorpus());
  std::vector<std::string> sentences;
  std::stringstream ss(text);
  std::string s;
  while (std::getline(ss, s, '.')) sentences.push_back(s + ".");
  std::mt19937 rng(1);
  std::shuffle(sentences.begin(), sentences.end(), rng);
  for (const auto& x : sentences) {
    if (text.size() >= 10 * 1024) break;
    text += x;
  }
  return text.substr(0, 10 * 1024);
}

std::unique_ptr<Tokenizer> LoadBuiltin() {
  return std::move(Tokenizer::FromJson(BuildByteLevelBpeTokenizerJson({}), "builtin")).value();
}
std::unique_ptr<Tokenizer> LoadTestFile(const char* file) {
  return std::move(Tokenizer::FromJson(testing::ReadTestFile(file), file)).value();
}

void Report(benchmark::State& state, size_t tokens, size_t bytes) {
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
}

void BM_EncodeWarm(benchmark::State& state, std::unique_ptr<Tokenizer> (*load)(), const char*) {
  auto tok = load();
  const std::string text = BenchText();
  size_t n = tok->Encode(text, true).size();
  for (auto _ : state) benchmark::DoNotOptimize(n = tok->Encode(text, true).size());
  Report(state, n, text.size());
}

// Fresh tokenizer (empty BPE word cache) for every encode; loading is not timed.
void BM_EncodeCold(benchmark::State& state) {
  const std::string text = BenchText();
  size_t n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto tok = LoadTestFile("llama3_bpe.json");
    state.ResumeTiming();
    benchmark::DoNotOptimize(n = tok->Encode(text, true).size());
  }
  Report(state, n, text.size());
}

void BM_Decode(benchmark::State& state) {
  auto tok = LoadBuiltin();
  const std::string text = BenchText();
  const auto ids = tok->Encode(text, false);
  for (auto _ : state) benchmark::DoNotOptimize(tok->Decode(ids, true));
  Report(state, ids.size(), text.size());
}

void BM_StreamingDecode(benchmark::State& state) {
  auto tok = LoadBuiltin();
  const std::string text = BenchText();
  const auto ids = tok->Encode(text, false);
  for (auto _ : state) {
    StreamingDecoder dec(*tok);
    size_t bytes = 0;
    for (int32_t id : ids) bytes += dec.Push(id).size();
    benchmark::DoNotOptimize(bytes += dec.Flush().size());
  }
  Report(state, ids.size(), text.size());
}

BENCHMARK_CAPTURE(BM_EncodeWarm, builtin_1024, LoadBuiltin, "")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EncodeWarm, llama3_test, [] { return LoadTestFile("llama3_bpe.json"); }, "")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EncodeWarm, llama2_spm_test, [] { return LoadTestFile("llama2_spm.json"); }, "")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeCold)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Decode)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StreamingDecode)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvmesh::tokenizer

BENCHMARK_MAIN();
