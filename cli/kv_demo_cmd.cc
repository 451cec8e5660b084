// `kvmesh kv-demo`: replays the Mooncake conversation trace through the KV core (G1 BlockPool +
// TierManager with a G2 host tier and a G3 disk tier) and reports per-tier hits.
//
// Each trace record's hash_ids are 512-token prefix blocks; the demo synthesizes 512
// deterministic tokens per id (same id -> same tokens; kv/trace_loader.h), re-chunks them at
// --block-size and hashes them with kv/block_hash.h. A computed block's bytes are derived from its hash, so every block
// served from cache (G1, G2 or G3) is verified byte for byte; any mismatch fails the run.
// Requests run in a bounded window: when it is full, the oldest request finishes and frees its
// blocks (they stay cached in G1 until evicted). Only prompt blocks are modeled (no decode).
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "common/status.h"
#include "kv/block_copier.h"
#include "kv/block_hash.h"
#include "kv/block_pool.h"
#include "kv/kv_event.h"
#include "kv/tier_manager.h"
#include "kv/trace_loader.h"

namespace kvmesh::cli {
namespace {

namespace fs = std::filesystem;
using kv::BlockHash;
using kv::BlockId;

constexpr std::string_view kTraceName = "mooncake_conversation_trace.jsonl";
constexpr uint32_t kVocabSize = 128000;  // token ids synthesized from the trace's hash ids
constexpr std::string_view kTraceRel = "shared/data/traces/mooncake_conversation_trace.jsonl";

struct DemoFlags {
  std::string trace;
  uint32_t block_size = 64;
  uint32_t g1_blocks = 32768;
  uint32_t g2_blocks = 131072;
  uint32_t g3_blocks = 524288;
  uint32_t g3_min_hits = 2;
  size_t block_bytes = 1024;
  size_t max_requests = 0;
  size_t window = 4;
  std::string disk_dir;
  bool json = false;
};

void PrintHelp(std::FILE* out) {
  std::fprintf(out,
               "usage: kvmesh kv-demo [flags]\n"
               "Replays the Mooncake conversation trace through the KV core (G1 pool, G2 host\n"
               "tier, G3 disk tier) and prints per-tier hits. Flags:\n"
               "  --trace PATH        Mooncake JSONL trace (default: ../%.*s from the repo root)\n"
               "  --block-size N      tokens per block (default 64)\n"
               "  --g1-blocks N       G1 (engine memory) blocks (default 32768)\n"
               "  --g2-blocks N       G2 (host memory) blocks (default 131072; 0 disables G2+G3)\n"
               "  --g3-blocks N       G3 (disk) blocks (default 524288; 0 disables G3)\n"
               "  --g3-min-hits N     hits a G2 block needs to be kept on disk (default 2)\n"
               "  --block-bytes N     KV bytes per block (default 1024)\n"
               "  --max-requests N    replay at most N records (default 0 = all)\n"
               "  --window N          concurrently running requests (default 4)\n"
               "  --disk-dir DIR      G3 directory, kept at exit (default: a temp dir, removed)\n"
               "  --json              print the summary as one JSON object\n",
               static_cast<int>(kTraceRel.size()), kTraceRel.data());
}

StatusOr<uint64_t> ParseUint(std::string_view flag, const char* v) {
  if (v == nullptr) return InvalidArgumentError(std::string(flag) + " needs a value");
  char* end = nullptr;
  errno = 0;
  unsigned long long x = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-') {
    return InvalidArgumentError(std::string(flag) + ": not a number: '" + v + "'");
  }
  return static_cast<uint64_t>(x);
}

StatusOr<DemoFlags> ParseFlags(std::span<char*> args, bool* help) {
  DemoFlags f;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    const char* v = i + 1 < args.size() ? args[i + 1] : nullptr;
    auto num = [&](auto* out) -> Status {
      KVMESH_ASSIGN_OR_RETURN(uint64_t x, ParseUint(a, v));
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(x);
      if (static_cast<uint64_t>(*out) != x) return InvalidArgumentError(std::string(a) + " too large");
      ++i;
      return Status::Ok();
    };
    if (a == "-h" || a == "--help") {
      *help = true;
      return f;
    } else if (a == "--json") {
      f.json = true;
    } else if (a == "--trace" || a == "--disk-dir") {
      if (v == nullptr) return InvalidArgumentError(std::string(a) + " needs a value");
      (a == "--trace" ? f.trace : f.disk_dir) = v;
      ++i;
    } else if (a == "--block-size") {
      KVMESH_RETURN_IF_ERROR(num(&f.block_size));
    } else if (a == "--g1-blocks") {
      KVMESH_RETURN_IF_ERROR(num(&f.g1_blocks));
    } else if (a == "--g2-blocks") {
      KVMESH_RETURN_IF_ERROR(num(&f.g2_blocks));
    } else if (a == "--g3-blocks") {
      KVMESH_RETURN_IF_ERROR(num(&f.g3_blocks));
    } else if (a == "--g3-min-hits") {
      KVMESH_RETURN_IF_ERROR(num(&f.g3_min_hits));
    } else if (a == "--block-bytes") {
      KVMESH_RETURN_IF_ERROR(num(&f.block_bytes));
    } else if (a == "--max-requests") {
      KVMESH_RETURN_IF_ERROR(num(&f.max_requests));
    } else if (a == "--window") {
      KVMESH_RETURN_IF_ERROR(num(&f.window));
    } else {
      return InvalidArgumentError("unknown flag '" + std::string(a) + "'");
    }
  }
  if (f.block_size == 0) return InvalidArgumentError("--block-size must be > 0");
  if (f.g1_blocks == 0) return InvalidArgumentError("--g1-blocks must be > 0");
  if (f.block_bytes == 0 || f.block_bytes % 8 != 0) {
    return InvalidArgumentError("--block-bytes must be a positive multiple of 8, got " +
                                std::to_string(f.block_bytes));
  }
  if (f.window == 0) return InvalidArgumentError("--window must be > 0");
  return f;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The "KV" of a block: 64-bit words derived from its hash.
void FillBlock(std::span<std::byte> bytes, BlockHash h) {
  uint64_t* w = reinterpret_cast<uint64_t*>(bytes.data());
  for (size_t i = 0; i < bytes.size() / 8; ++i) w[i] = SplitMix64(h + i);
}
bool CheckBlock(std::span<const std::byte> bytes, BlockHash h) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(bytes.data());
  for (size_t i = 0; i < bytes.size() / 8; ++i) {
    if (w[i] != SplitMix64(h + i)) return false;
  }
  return true;
}

class CountingSink final : public kv::KvEventSink {
 public:
  void Emit(kv::KvEvent event) override {
    ++total;
    if (const auto* s = std::get_if<kv::BlockStored>(&event)) {
      stored[static_cast<int>(s->medium)] += s->hashes.size();
    } else if (const auto* r = std::get_if<kv::BlockRemoved>(&event)) {
      removed[static_cast<int>(r->medium)] += r->hashes.size();
    }
  }
  uint64_t total = 0;
  uint64_t stored[kv::kNumMedia] = {};
  uint64_t removed[kv::kNumMedia] = {};
};

struct Running {
  std::vector<BlockId> blocks;
};

int Run(const DemoFlags& flags) {
  std::string trace = flags.trace;
  if (trace.empty()) {
    auto found = kv::FindSharedTrace(kTraceName);
    if (!found) {
      std::fprintf(stderr, "kv-demo: trace not found (../%.*s); pass --trace PATH\n",
                   static_cast<int>(kTraceRel.size()), kTraceRel.data());
      return 1;
    }
    trace = *found;
  }
  auto records = kv::LoadMooncakeTrace(trace, flags.max_requests);
  if (!records.ok()) {
    std::fprintf(stderr, "kv-demo: %s\n", records.status().ToString().c_str());
    return 1;
  }

  // G3 directory: the user's (kept), or a fresh temp dir removed at exit.
  std::string disk_dir = flags.disk_dir;
  bool remove_disk_dir = false;
  if (disk_dir.empty() && flags.g3_blocks > 0 && flags.g2_blocks > 0) {
    std::string tmpl = (fs::temp_directory_path() / "kvmesh-kv-demo-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "kv-demo: mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
      return 1;
    }
    disk_dir = tmpl;
    remove_disk_dir = true;
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      if (!dir.empty()) {
        std::error_code ec;
        fs::remove_all(dir, ec);
      }
    }
  } cleanup{remove_disk_dir ? disk_dir : std::string()};

  CountingSink sink;
  kv::BlockPoolOptions po;
  po.num_blocks = flags.g1_blocks + 1;  // + the null block
  po.block_size = flags.block_size;
  auto pool_or = kv::BlockPool::Create(po, &sink);
  if (!pool_or.ok()) {
    std::fprintf(stderr, "kv-demo: %s\n", pool_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<kv::BlockPool> pool = std::move(pool_or).value();
  kv::HostBlockMemory memory(po.num_blocks, flags.block_bytes);
  kv::MemcpyBlockCopier copier;
  kv::TierManagerOptions to;
  to.g2_blocks = flags.g2_blocks;
  to.g3_blocks = flags.g2_blocks > 0 ? flags.g3_blocks : 0;
  to.g3_dir = disk_dir;
  to.g3_min_hits = flags.g3_min_hits;
  auto mgr_or = kv::TierManager::Create(to, pool.get(), &memory, &copier, &sink);
  if (!mgr_or.ok()) {
    std::fprintf(stderr, "kv-demo: %s\n", mgr_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<kv::TierManager> mgr = std::move(mgr_or).value();

  kv::BlockHashOptions ho;
  ho.block_size = flags.block_size;
  std::deque<Running> running;
  std::vector<uint32_t> tokens;
  uint64_t requests = 0, skipped = 0, blocks_total = 0, computed = 0, mismatches = 0;
  auto finish_oldest = [&] {
    pool->Free(running.front().blocks);
    running.pop_front();
  };

  const auto t0 = std::chrono::steady_clock::now();
  for (const kv::TraceRecord& r : *records) {
    tokens = kv::MooncakePromptTokens(r, kVocabSize);
    const size_t n_tokens = tokens.size();
    auto hashes_or = kv::ComputeSequenceHashes(tokens, ho);
    if (!hashes_or.ok()) {
      std::fprintf(stderr, "kv-demo: %s\n", hashes_or.status().ToString().c_str());
      return 1;
    }
    const std::vector<BlockHash>& hashes = *hashes_or;
    const size_t num_blocks = (n_tokens + flags.block_size - 1) / flags.block_size;
    std::optional<kv::TieredAllocation> a;
    while (true) {
      a = mgr->AllocateForSequence(hashes, tokens, num_blocks);
      if (a || running.empty()) break;
      finish_oldest();  // no room: let the oldest request finish
    }
    if (!a) {
      ++skipped;  // larger than G1 on its own
      continue;
    }
    ++requests;
    blocks_total += hashes.size();
    for (size_t j = 0; j < a->num_cached(); ++j) {
      if (!CheckBlock(memory.BlockBytes(a->blocks[j]), hashes[j])) ++mismatches;
    }
    for (size_t j = a->num_cached(); j < hashes.size(); ++j) {
      FillBlock(memory.BlockBytes(a->blocks[j]), hashes[j]);
      std::optional<BlockHash> parent;
      if (j > 0) parent = hashes[j - 1];
      Status st = mgr->CommitBlock(a->blocks[j], hashes[j], parent,
                                   std::span<const uint32_t>(tokens).subspan(
                                       j * flags.block_size, flags.block_size));
      if (!st.ok()) {
        std::fprintf(stderr, "kv-demo: %s\n", st.ToString().c_str());
        return 1;
      }
      ++computed;
    }
    running.push_back(Running{std::move(a->blocks)});
    if (running.size() > flags.window) finish_oldest();
  }
  while (!running.empty()) finish_oldest();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const kv::TierManagerStats& ts = mgr->stats();
  const kv::DiskTierStats ds = mgr->disk_tier() ? mgr->disk_tier()->stats() : kv::DiskTierStats{};
  const uint64_t onboarded = ts.g2_hit_blocks + ts.g3_hit_blocks;
  auto ratio = [&](uint64_t x) {
    return blocks_total == 0 ? 0.0 : static_cast<double>(x) / static_cast<double>(blocks_total);
  };
  nlohmann::json j;
  j["trace"] = trace;
  j["requests"] = requests;
  j["requests_skipped"] = skipped;
  j["block_size"] = flags.block_size;
  j["block_bytes"] = flags.block_bytes;
  j["capacity_blocks"] = {{"g1", flags.g1_blocks}, {"g2", to.g2_blocks}, {"g3", to.g3_blocks}};
  j["blocks"] = blocks_total;
  j["hit_blocks"] = {{"g1", ts.g1_hit_blocks}, {"g2", ts.g2_hit_blocks}, {"g3", ts.g3_hit_blocks}};
  j["hit_ratio"] = {{"g1", ratio(ts.g1_hit_blocks)},
                    {"g2", ratio(ts.g2_hit_blocks)},
                    {"g3", ratio(ts.g3_hit_blocks)},
                    {"total", ratio(ts.g1_hit_blocks + onboarded)}};
  j["recomputed_blocks"] = computed;
  j["verify_mismatches"] = mismatches;
  j["offloaded_blocks"] = ts.offloaded_blocks;
  j["offloaded_bytes"] = ts.offloaded_bytes;
  j["onboarded_blocks"] = onboarded;
  j["onboarded_bytes"] = ts.onboarded_bytes;
  j["onboard_failures"] = ts.onboard_failures;
  j["g2_to_g3_blocks"] = ts.g2_to_g3_blocks;
  j["g2_dropped_blocks"] = ts.g2_dropped_blocks;
  j["disk"] = {{"blocks_written", ds.stores},
               {"bytes_written", ds.bytes_written},
               {"write_errors", ds.write_errors},
               {"blocks_dropped_corrupt", ds.corrupt_dropped},
               {"evictions", ds.evictions}};
  nlohmann::json ev;
  for (int m = 0; m < kv::kNumMedia; ++m) {
    std::string name(kv::MediumWireName(static_cast<kv::Medium>(m)));
    ev[name] = {{"stored", sink.stored[m]}, {"removed", sink.removed[m]}};
  }
  j["events"] = {{"total", sink.total},
                 {"per_second", wall > 0 ? static_cast<double>(sink.total) / wall : 0.0},
                 {"by_medium", ev}};
  j["wall_seconds"] = wall;

  if (flags.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    auto pct = [&](uint64_t x) { return 100.0 * ratio(x); };
    std::printf("kv-demo: %s\n", trace.c_str());
    std::printf("  requests            %" PRIu64 " (skipped, larger than G1: %" PRIu64 ")\n",
                requests, skipped);
    std::printf("  tiers (blocks)      G1 %u  G2 %u  G3 %u   (%u tokens, %zu B per block)\n",
                flags.g1_blocks, to.g2_blocks, to.g3_blocks, flags.block_size, flags.block_bytes);
    std::printf("  blocks looked up    %" PRIu64 "\n", blocks_total);
    std::printf("  hits G1             %" PRIu64 " (%.1f%%)\n", ts.g1_hit_blocks,
                pct(ts.g1_hit_blocks));
    std::printf("  hits G2             %" PRIu64 " (%.1f%%)\n", ts.g2_hit_blocks,
                pct(ts.g2_hit_blocks));
    std::printf("  hits G3             %" PRIu64 " (%.1f%%)\n", ts.g3_hit_blocks,
                pct(ts.g3_hit_blocks));
    std::printf("  recomputed blocks   %" PRIu64 " (%.1f%%)\n", computed, pct(computed));
    std::printf("  verify mismatches   %" PRIu64 "\n", mismatches);
    std::printf("  offloaded G1->G2    %" PRIu64 " blocks, %.1f MiB\n", ts.offloaded_blocks,
                static_cast<double>(ts.offloaded_bytes) / (1 << 20));
    std::printf("  onboarded ->G1      %" PRIu64 " blocks, %.1f MiB (failures %" PRIu64 ")\n",
                onboarded, static_cast<double>(ts.onboarded_bytes) / (1 << 20),
                ts.onboard_failures);
    std::printf("  G2 evictions        %" PRIu64 " to G3, %" PRIu64 " dropped (< %u hits)\n",
                ts.g2_to_g3_blocks, ts.g2_dropped_blocks, flags.g3_min_hits);
    std::printf("  disk                %" PRIu64 " blocks written (%.1f MiB), %" PRIu64
                " dropped as corrupt, %" PRIu64 " write errors\n",
                ds.stores, static_cast<double>(ds.bytes_written) / (1 << 20), ds.corrupt_dropped,
                ds.write_errors);
    std::printf("  events              %" PRIu64 " (%.0f/s): GPU +%" PRIu64 "/-%" PRIu64
                "  CPU +%" PRIu64 "/-%" PRIu64 "  DISK +%" PRIu64 "/-%" PRIu64 "\n",
                sink.total, wall > 0 ? static_cast<double>(sink.total) / wall : 0.0,
                sink.stored[0], sink.removed[0], sink.stored[1], sink.removed[1], sink.stored[2],
                sink.removed[2]);
    std::printf("  wall time           %.2f s\n", wall);
  }
  mgr.reset();
  return mismatches == 0 ? 0 : 1;
}

}  // namespace

int KvDemoCommand(std::span<char*> args) {
  bool help = false;
  auto flags = ParseFlags(args, &help);
  if (help) {
    PrintHelp(stdout);
    return 0;
  }
  if (!flags.ok()) {
    std::fprintf(stderr, "kv-demo: %s\n\n", flags.status().message().c_str());
    PrintHelp(stderr);
    return 2;
  }
  return Run(*flags);
}

}  // namespace kvmesh::cli
