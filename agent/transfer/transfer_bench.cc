// Read bandwidth of UcxTransport between two processes: a forked target registers a region and
// progresses; the initiator (this process) connects and reads whole batches of contiguous blocks
// (one merged run per batch), --window transfers in flight (default 1). Prints one JSON object per
// (transport, size) line on stdout.
//
//   kvmesh_transfer_transfer_bench --tls=tcp --sizes_mib=1,16,64 --block_kib=256
//       [--net_devices=lo] [--iters=N] [--target_poll_ms=0] [--window=1]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/transfer/transfer_handle.h"
#include "agent/transfer/ucx_transport.h"

namespace kvmesh::transfer {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string tls = "tcp";
  std::string net_devices;
  std::vector<uint64_t> sizes_mib = {1, 16, 64};
  uint64_t block_kib = 256;
  int iters = 0;  // 0 = per size: enough for ~1 GiB, at least 5
  int target_poll_ms = 0;
  int window = 1;  // transfers in flight at once
  bool alloc_transport = true;  // regions from KvTransport::AllocateLocal (as the agent does)
};

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* name) -> std::optional<std::string> {
      std::string p = std::string("--") + name + "=";
      if (a.rfind(p, 0) == 0) return a.substr(p.size());
      return std::nullopt;
    };
    if (auto v = val("tls")) {
      f.tls = *v;
    } else if (auto v2 = val("net_devices")) {
      f.net_devices = *v2;
    } else if (auto v3 = val("sizes_mib")) {
      f.sizes_mib.clear();
      std::stringstream ss(*v3);
      for (std::string item; std::getline(ss, item, ',');) f.sizes_mib.push_back(std::stoull(item));
    } else if (auto v4 = val("block_kib")) {
      f.block_kib = std::stoull(*v4);
    } else if (auto v5 = val("iters")) {
      f.iters = std::stoi(*v5);
    } else if (auto v6 = val("target_poll_ms")) {
      f.target_poll_ms = std::stoi(*v6);
    } else if (auto v8 = val("alloc")) {
      if (*v8 != "transport" && *v8 != "user") return std::nullopt;
      f.alloc_transport = *v8 == "transport";
    } else if (auto v7 = val("window")) {
      f.window = std::max(1, std::stoi(*v7));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return std::nullopt;
    }
  }
  if (f.sizes_mib.empty() || f.block_kib == 0) return std::nullopt;
  return f;
}

[[noreturn]] void RunTarget(const Flags& f, uint64_t region_bytes, int out_fd) {
  auto t = CreateUcxTransport({f.tls, f.net_devices});
  if (!t.ok()) {
    std::fprintf(stderr, "target: %s\n", t.status().ToString().c_str());
    _exit(2);
  }
  const uint64_t block_bytes = f.block_kib << 10;
  std::vector<uint8_t> user;
  uint8_t* mem = nullptr;
  const auto num_blocks = static_cast<uint32_t>(region_bytes / block_bytes);
  if (f.alloc_transport) {
    auto m = (*t)->AllocateLocal(block_bytes, num_blocks);
    if (!m.ok()) _exit(3);
    mem = static_cast<uint8_t*>(*m);
  } else {
    user.resize(region_bytes);
    mem = user.data();
    if (!(*t)->RegisterLocal(mem, block_bytes, num_blocks).ok()) _exit(3);
  }
  for (size_t i = 0; i < region_bytes; ++i) mem[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  std::string line = RegionDescriptorToJson(*(*t)->DescribeLocal()).dump() + "\n";
  if (write(out_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(4);
  close(out_fd);
  for (;;) (*t)->Progress(f.target_poll_ms);  // the tcp emulation needs the target progressed
}

int Main(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv);
  if (!flags) {
    std::fprintf(stderr,
                 "usage: %s --tls=tcp --sizes_mib=1,16,64 --block_kib=256 [--net_devices=lo] "
                 "[--iters=N] [--target_poll_ms=0]\n",
                 argv[0]);
    return 2;
  }
  const Flags& f = *flags;
  const uint64_t block_bytes = f.block_kib << 10;
  uint64_t max_mib = 0;
  for (uint64_t m : f.sizes_mib) max_mib = std::max(max_mib, m);
  const uint64_t region_bytes = std::max<uint64_t>(max_mib << 20, block_bytes);

  int fds[2];
  if (pipe(fds) != 0) return 1;
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(fds[0]);
    RunTarget(f, region_bytes, fds[1]);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(fds[0]);
  int rc = 0;
  [&] {
    auto desc = RegionDescriptorFromJson(nlohmann::json::parse(text, nullptr, false));
    if (!desc.ok()) {
      std::fprintf(stderr, "descriptor: %s\n", desc.status().ToString().c_str());
      rc = 1;
      return;
    }
    auto t = CreateUcxTransport({f.tls, f.net_devices});
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      rc = 1;
      return;
    }
    std::vector<uint8_t> user;
    uint8_t* mem_ptr = nullptr;
    const uint32_t num_blocks = static_cast<uint32_t>(region_bytes / block_bytes);
    if (f.alloc_transport) {
      auto m = (*t)->AllocateLocal(block_bytes, num_blocks);
      if (!m.ok()) {
        std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
        rc = 1;
        return;
      }
      mem_ptr = static_cast<uint8_t*>(*m);
    } else {
      user.assign(region_bytes, 0);
      mem_ptr = user.data();
      if (!(*t)->RegisterLocal(mem_ptr, block_bytes, num_blocks).ok()) {
        rc = 1;
        return;
      }
    }
    std::span<uint8_t> mem(mem_ptr, region_bytes);
    auto peer = (*t)->Connect(*desc);
    if (!peer.ok()) {
      std::fprintf(stderr, "%s\n", peer.status().ToString().c_str());
      rc = 1;
      return;
    }
    for (uint64_t mib : f.sizes_mib) {
      const uint64_t bytes = std::max<uint64_t>(mib << 20, block_bytes);
      std::vector<BlockCopy> copies;
      for (uint32_t b = 0; b < bytes / block_bytes; ++b) copies.push_back({b, b});
      int iters = f.iters > 0 ? f.iters : static_cast<int>(std::max<uint64_t>(5, (1ull << 30) / bytes));
      // Runs `n` reads with up to f.window in flight; the first error wins.
      auto read_n = [&](int n) -> Status {
        int posted = 0, done = 0, in_flight = 0;
        Status first;
        auto on_done = [&](TransferId, const Status& s) {
          ++done;
          --in_flight;
          if (!s.ok() && first.ok()) first = s;
        };
        while (done < n) {
          while (posted < n && in_flight < f.window && first.ok()) {
            auto id = (*t)->PostRead(*peer, copies, on_done);
            if (!id.ok()) return id.status();
            ++posted;
            ++in_flight;
          }
          if (!first.ok() && in_flight == 0) break;
          (*t)->Progress(0);
        }
        return first;
      };
      // The first read of a batch pays for connection set-up and, over shared memory, for
      // mapping the peer's pages; reported separately as cold_read_us.
      auto cold_start = Clock::now();
      Status warm = read_n(1);
      const double cold_us = std::chrono::duration<double, std::micro>(Clock::now() - cold_start).count();
      if (warm.ok()) warm = read_n(1);
      if (!warm.ok()) {
        std::fprintf(stderr, "warmup: %s\n", warm.ToString().c_str());
        rc = 1;
        return;
      }
      std::memset(mem.data(), 0, bytes);
      auto start = Clock::now();
      Status s = read_n(iters);
      if (!s.ok()) {
        std::fprintf(stderr, "read: %s\n", s.ToString().c_str());
        rc = 1;
        return;
      }
      double secs = std::chrono::duration<double>(Clock::now() - start).count();
      bool verified = true;
      for (size_t i = 0; i < bytes; i += 4093) {
        verified &= mem[i] == static_cast<uint8_t>(i * 131 + (i >> 12));
      }
      nlohmann::json r = {{"tool", "kvmesh"},
                          {"tls", f.tls},
                          {"size_bytes", bytes},
                          {"block_bytes", block_bytes},
                          {"iters", iters},
                          {"window", f.window},
                          {"cold_read_us", cold_us},
                          {"bandwidth_mib_s", static_cast<double>(bytes) * iters / secs / (1 << 20)},
                          {"avg_latency_us", secs / iters * 1e6},
                          {"verified", verified}};
      if (!verified) rc = 1;
      std::printf("%s\n", r.dump().c_str());
      std::fflush(stdout);
    }
  }();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return rc;
}

}  // namespace
}  // namespace kvmesh::transfer

int main(int argc, char** argv) { return kvmesh::transfer::Main(argc, argv); }
