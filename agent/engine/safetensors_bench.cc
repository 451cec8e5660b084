// Conversion throughput of ToFloat32 (the inner loop of ModelWeights::Load) per on-disk dtype, and
// the header parser on a preset-sized header.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "agent/engine/safetensors.h"

namespace kvmesh::engine {
namespace {

constexpr int64_t kElems = 4 << 20;  // 4M values: one small-preset MLP matrix is 1.5M

void BM_ToFloat32(benchmark::State& state) {
  const auto dtype = static_cast<SafetensorsDtype>(state.range(0));
  std::vector<uint8_t> bytes(kElems * SafetensorsDtypeSize(dtype));
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>((i * 131) & 0x3f);
  TensorView v{"t", dtype, {kElems}, bytes};
  std::vector<float> out(kElems);
  for (auto _ : state) {
    ToFloat32(v, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(SafetensorsDtypeName(dtype)));
  state.SetItemsProcessed(state.iterations() * kElems);
}
BENCHMARK(BM_ToFloat32)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// Baseline: the first version of the BF16 loop (bytewise little-endian assembly per element).
void BM_Bf16BytewiseBaseline(benchmark::State& state) {
  std::vector<uint8_t> bytes(kElems * 2);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>((i * 131) & 0x3f);
  std::vector<float> out(kElems);
  for (auto _ : state) {
    const uint8_t* p = bytes.data();
    for (int64_t i = 0; i < kElems; ++i) {
      out[i] = Bf16ToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kElems);
}
BENCHMARK(BM_Bf16BytewiseBaseline)->Unit(benchmark::kMillisecond);

void BM_ParseHeader(benchmark::State& state) {
  SafetensorsWriter w;  // 16 layers x 9 tensors + 3, like the small preset, with tiny payloads
  std::vector<float> one = {1.0f};
  for (int i = 0; i < 16 * 9 + 3; ++i) {
    (void)w.AddF32("model.layers." + std::to_string(i) + ".mlp.down_proj.weight", {1, 1}, one);
  }
  const std::string file = w.Serialize();
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(file.data()), file.size());
  for (auto _ : state) benchmark::DoNotOptimize(ParseSafetensorsHeader(bytes, "bench").ok());
}
BENCHMARK(BM_ParseHeader)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvmesh::engine

BENCHMARK_MAIN();
