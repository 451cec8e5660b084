// Fuzz target for the safetensors header parser: any byte string must yield either an error or a
// header whose every tensor range lies inside the data section with exactly numel x dtype bytes,
// in order and without overlap. Seeds are valid files from SafetensorsWriter.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "agent/engine/safetensors.h"

using kvmesh::engine::ParseSafetensorsHeader;
using kvmesh::engine::SafetensorsDtype;
using kvmesh::engine::SafetensorsDtypeSize;
using kvmesh::engine::SafetensorsWriter;

std::vector<std::string> KvmeshFuzzSeeds() {
  std::vector<std::string> seeds;
  std::vector<float> v = {1.0f, -2.0f, 0.5f, 3.0f, 4.0f, 5.0f};
  {
    SafetensorsWriter w;
    (void)w.AddF32("model.embed_tokens.weight", {2, 3}, v);
    (void)w.AddBf16("model.norm.weight", {3}, std::span<const float>(v).first(3));
    w.SetMetadata("format", "pt");
    seeds.push_back(w.Serialize());
  }
  {
    SafetensorsWriter w;
    const std::vector<uint8_t> raw = {0x00, 0x3c, 0x01, 0x00};
    (void)w.AddRaw("h", SafetensorsDtype::kF16, {2}, raw);
    (void)w.AddF32("empty", {0, 4}, {});
    seeds.push_back(w.Serialize());
  }
  seeds.push_back(SafetensorsWriter().Serialize());
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> file(data, size);
  auto h = ParseSafetensorsHeader(file, "fuzz");
  if (!h.ok()) return 0;
  if (h->data_offset > size) std::abort();
  uint64_t prev_end = 0;
  for (const auto& t : h->tensors) {
    if (t.begin != prev_end || t.end < t.begin || h->data_offset + t.end > size) std::abort();
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * SafetensorsDtypeSize(t.dtype) != t.end - t.begin) std::abort();
    prev_end = t.end;
  }
  if (h->data_offset + prev_end != size) std::abort();
  return 0;
}
