// Fuzz target for the KV event wire codec: arbitrary bytes decoded as a msgpack batch and as a
// multipart message (frames split at each occurrence of the input's first byte). Oracle: a successful decode
// re-encodes to bytes that decode to an equal batch, and encoding is a fixed point after one
// round (decode(encode(x)) == x, encode(decode(encode(x))) == encode(x)).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kv/kv_event_codec.h"

namespace {

using kvmesh::kv::DecodeLimits;
using kvmesh::kv::KvEventBatch;

// Small limits so the fuzzer hits them; still large enough for the seeds.
DecodeLimits FuzzLimits() {
  DecodeLimits l;
  l.max_payload_bytes = 1 << 16;
  l.max_events_per_batch = 64;
  l.max_hashes_per_event = 256;
  l.max_tokens_per_event = 1024;
  l.max_string_bytes = 64;
  l.max_depth = 8;
  return l;
}

void CheckRoundTrip(const KvEventBatch& batch) {
  const std::string once = kvmesh::kv::EncodeKvEventBatch(batch);
  DecodeLimits roomy;  // our own encoding of a decoded batch always fits default limits
  auto again = kvmesh::kv::DecodeKvEventBatch(once, roomy);
  if (!again.ok() || !(*again == batch)) std::abort();
  if (kvmesh::kv::EncodeKvEventBatch(*again) != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const DecodeLimits limits = FuzzLimits();
  auto batch = kvmesh::kv::DecodeKvEventBatch(in, limits);
  if (batch.ok()) CheckRoundTrip(*batch);

  // Frames: the first byte picks a separator; the rest is split at it.
  if (!in.empty()) {
    const char sep = in[0];
    std::vector<std::string> frames(1);
    for (char c : in.substr(1)) {
      if (c == sep && frames.size() < 5) {
        frames.emplace_back();
      } else {
        frames.back().push_back(c);
      }
    }
    auto decoded = kvmesh::kv::DecodeKvEventFrames(frames, limits);
    if (decoded.ok()) {
      CheckRoundTrip(decoded->batch);
      auto re = kvmesh::kv::EncodeKvEventFrames(decoded->topic, decoded->seq, decoded->batch);
      if (re[0] != frames[0] || re[1] != frames[1]) std::abort();
    }
  }
  return 0;
}

// Valid batches in the tagged-array form we emit and in vLLM's map form, plus frames.
std::vector<std::string> KvmeshFuzzSeeds() {
  using namespace kvmesh::kv;
  std::vector<std::string> seeds;
  KvEventBatch a;
  a.ts = 1700000000.5;
  a.dp_rank = 1;
  BlockStored s;
  s.parent_hash = 0x8000000000000000ull;
  s.hashes = {1, 2, 0xffffffffffffffffull};
  s.token_ids = {1, 2, 3, 4, 5, 6};
  s.block_size = 2;
  s.lora_id = 3;
  s.lora_name = "adapter";
  s.medium = Medium::kG2;
  a.events = {s, BlockRemoved{{7, 8}, Medium::kG3}, AllBlocksCleared{}, BlockStored{}};
  seeds.push_back(EncodeKvEventBatch(a));
  seeds.push_back(EncodeKvEventBatch(KvEventBatch{}));
  // Frames joined by a separator byte that occurs in none of them (the target splits at the
  // input's first byte).
  auto frames = EncodeKvEventFrames("kv", 42, a);
  const std::string all = frames[0] + frames[1] + frames[2];
  char sep = 0;
  while (all.find(sep) != std::string::npos) ++sep;
  seeds.push_back(std::string(1, sep) + frames[0] + sep + frames[1] + sep + frames[2]);
  // vLLM map form: {"ts": 1.5, "events": [{"type": "BlockStored", ...}, {"type":
  // "BlockRemoved", ...}], "data_parallel_rank": 0}, with a bin hash and an unknown key.
  static constexpr char kMapForm[] =
      "\x83\xa2ts\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"
      "\xa6" "events\x92"
      "\x88\xa4type\xab" "BlockStored"
      "\xac" "block_hashes\x92\x05\xc4\x02\xab\xcd"
      "\xb1parent_block_hash\xc0"
      "\xa9token_ids\x92\x01\x02"
      "\xaa" "block_size\x01"
      "\xa7lora_id\xc0"
      "\xa6medium\xa3GPU"
      "\xa9group_idx\x00"
      "\x83\xa4type\xac" "BlockRemoved"
      "\xac" "block_hashes\x91\xd3\xff\xff\xff\xff\xff\xff\xff\xfe"
      "\xa6medium\xa4" "DISK"
      "\xb2" "data_parallel_rank\x00";
  seeds.emplace_back(kMapForm, sizeof(kMapForm) - 1);  // embedded NULs
  return seeds;
}
