// CudaIpcTransport on a real GPU (ctest label gpu; every test skips when no CUDA device is usable).
//
// cudaIpcOpenMemHandle refuses a handle exported by the same process, so the exporting side is a
// second process: this binary re-executed with KVMESH_CUDA_IPC_CHILD=1 (posix_spawn of
// /proc/self/exe, not fork: a forked child cannot use the parent's CUDA state). The child allocates
// device memory, registers a region at an offset inside the allocation, fills block b with
// ChildPattern(b), prints its RegionDescriptor as one JSON line on stdout and then serves "dump"
// (raw region bytes on stdout) until "quit" or EOF on stdin. The parent (the tests) connects to
// that descriptor, reads and writes blocks and checks the bytes.
#include "agent/transfer/cuda_ipc_transport.h"

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/transfer/transfer_handle.h"
#include "kernels/cuda_device.h"

extern char** environ;

namespace kvmesh::transfer {
namespace {

namespace kcuda = kernels::cuda;

constexpr uint64_t kBlockBytes = 64 << 10;
constexpr uint32_t kBlocks = 16;
constexpr uint64_t kRegionBytes = kBlockBytes * kBlocks;
constexpr uint64_t kChildPad = 3 * 4096;  // the child's region starts inside its allocation
constexpr char kChildEnv[] = "KVMESH_CUDA_IPC_CHILD";

uint8_t ChildPattern(uint64_t block, uint64_t j) {
  return static_cast<uint8_t>(block * 29 + j * 13 + 7);
}
uint8_t ParentPattern(uint64_t block, uint64_t j) {
  return static_cast<uint8_t>(block * 17 + j * 3 + 101);
}

std::vector<uint8_t> Filled(uint8_t (*pattern)(uint64_t, uint64_t)) {
  std::vector<uint8_t> v(kRegionBytes);
  for (uint64_t i = 0; i < kRegionBytes; ++i) v[i] = pattern(i / kBlockBytes, i % kBlockBytes);
  return v;
}

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly n bytes (or up to '\n' when `line`), waiting at most 60 s in total.
bool ReadFd(int fd, std::string* out, size_t n, bool line) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  out->clear();
  char buf[65536];
  while (line || out->size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    const size_t want = line ? 1 : std::min(sizeof(buf), n - out->size());
    const ssize_t r = read(fd, buf, want);
    if (r <= 0) return false;
    out->append(buf, static_cast<size_t>(r));
    if (line && out->back() == '\n') return true;
  }
  return true;
}

// ---- the exporting child -------------------------------------------------------------------

int RunChild() {
  auto fail = [](const std::string& why) {
    std::cerr << "cuda_ipc child: " << why << "\n";
    return 1;
  };
  if (kcuda::UsableDeviceCount() == 0) return fail("no usable CUDA device");
  auto transport = CreateCudaIpcTransport(CudaIpcTransportOptions{0});
  if (!transport.ok()) return fail(transport.status().ToString());
  auto mem = kcuda::DeviceAlloc(kChildPad + kRegionBytes);
  if (!mem.ok()) return fail(mem.status().ToString());
  uint8_t* region = static_cast<uint8_t*>(*mem) + kChildPad;
  const std::vector<uint8_t> init = Filled(ChildPattern);
  Status s = kcuda::CopyToDevice(region, init.data(), init.size());
  if (s.ok()) s = kcuda::Synchronize();  // a pageable-source copy may still be in flight
  if (!s.ok()) return fail(s.ToString());
  s = (*transport)->RegisterLocal(region, kBlockBytes, kBlocks);
  if (!s.ok()) return fail(s.ToString());
  auto desc = (*transport)->DescribeLocal();
  if (!desc.ok()) return fail(desc.status().ToString());
  const std::string line = RegionDescriptorToJson(*desc).dump() + "\n";
  if (!WriteAll(STDOUT_FILENO, line.data(), line.size())) return fail("write descriptor");
  std::string cmd;
  while (ReadFd(STDIN_FILENO, &cmd, 0, /*line=*/true)) {
    if (cmd == "dump\n") {
      std::vector<uint8_t> host(kRegionBytes);
      s = kcuda::CopyToHost(host.data(), region, host.size());
      if (!s.ok()) return fail(s.ToString());
      if (!WriteAll(STDOUT_FILENO, host.data(), host.size())) return fail("write dump");
    } else if (cmd == "quit\n") {
      break;
    }
  }
  transport->reset();  // before the memory it registered
  kcuda::DeviceFree(*mem);
  return 0;
}

// ---- the tests (importing side) --------------------------------------------------------------

class Child {
 public:
  // Spawns the child and reads its descriptor; failures are fatal test failures.
  void Start() {
    int to_child[2];
    int from_child[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(from_child), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, from_child[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, to_child[1]);
    posix_spawn_file_actions_addclose(&fa, from_child[0]);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back(std::string(kChildEnv) + "=1");
    std::vector<char*> envp;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    char arg0[] = "cuda_ipc_child";
    char* argv[] = {arg0, nullptr};
    const int rc = posix_spawn(&pid_, "/proc/self/exe", &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    close(to_child[0]);
    close(from_child[1]);
    to_ = to_child[1];
    from_ = from_child[0];
    ASSERT_EQ(rc, 0) << "posix_spawn: " << std::strerror(rc);
    std::string line;
    ASSERT_TRUE(ReadFd(from_, &line, 0, /*line=*/true)) << "no descriptor from the child";
    auto desc = RegionDescriptorFromJson(nlohmann::json::parse(line));
    ASSERT_TRUE(desc.ok()) << desc.status().ToString();
    desc_ = *desc;
  }

  std::vector<uint8_t> Dump() {
    std::string bytes;
    EXPECT_TRUE(WriteAll(to_, "dump\n", 5));
    EXPECT_TRUE(ReadFd(from_, &bytes, kRegionBytes, /*line=*/false));
    return std::vector<uint8_t>(bytes.begin(), bytes.end());
  }

  void Stop() {
    if (to_ >= 0) {
      (void)WriteAll(to_, "quit\n", 5);
      close(to_);
    }
    if (from_ >= 0) close(from_);
    to_ = from_ = -1;
    if (pid_ > 0) {
      int status = 0;
      waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    }
    pid_ = -1;
  }

  const RegionDescriptor& desc() const { return desc_; }

 private:
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  RegionDescriptor desc_;
};

Child* g_child = nullptr;

class CudaIpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (kcuda::UsableDeviceCount() == 0) return;
    g_child = new Child();
    g_child->Start();
  }
  static void TearDownTestSuite() {
    if (g_child != nullptr) g_child->Stop();
    delete g_child;
    g_child = nullptr;
  }

  void SetUp() override {
    if (kcuda::UsableDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
    ASSERT_NE(g_child, nullptr);
    ASSERT_FALSE(g_child->desc().worker_address.empty()) << "the child did not start";
    auto t = CreateCudaIpcTransport(CudaIpcTransportOptions{0});
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    transport_ = std::move(*t);
    auto mem = kcuda::DeviceAlloc(kRegionBytes);
    ASSERT_TRUE(mem.ok()) << mem.status().ToString();
    mem_ = static_cast<uint8_t*>(*mem);
    const std::vector<uint8_t> zeros(kRegionBytes, 0);
    ASSERT_TRUE(kcuda::CopyToDevice(mem_, zeros.data(), zeros.size()).ok());
    ASSERT_TRUE(kcuda::Synchronize().ok());  // the transport's stream does not wait for it
    Status s = transport_->RegisterLocal(mem_, kBlockBytes, kBlocks);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto peer = transport_->Connect(g_child->desc());
    ASSERT_TRUE(peer.ok()) << peer.status().ToString();
    peer_ = *peer;
  }
  void TearDown() override {
    transport_.reset();
    kcuda::DeviceFree(mem_);
  }

  std::vector<uint8_t> Local() {
    std::vector<uint8_t> host(kRegionBytes);
    EXPECT_TRUE(kcuda::CopyToHost(host.data(), mem_, host.size()).ok());
    return host;
  }

  // Progresses until `calls` becomes non-zero (10 s at most).
  void WaitFor(const int& calls) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (calls == 0 && std::chrono::steady_clock::now() < deadline) transport_->Progress(100);
    ASSERT_EQ(calls, 1);
  }

  static bool BlockEquals(const std::vector<uint8_t>& mem, uint64_t block,
                          uint8_t (*pattern)(uint64_t, uint64_t), uint64_t pattern_block) {
    for (uint64_t j = 0; j < kBlockBytes; ++j) {
      if (mem[block * kBlockBytes + j] != pattern(pattern_block, j)) return false;
    }
    return true;
  }
  static bool BlockIsZero(const std::vector<uint8_t>& mem, uint64_t block) {
    for (uint64_t j = 0; j < kBlockBytes; ++j) {
      if (mem[block * kBlockBytes + j] != 0) return false;
    }
    return true;
  }

  std::unique_ptr<KvTransport> transport_;
  uint8_t* mem_ = nullptr;
  PeerId peer_ = 0;
};

TEST_F(CudaIpcTest, ReadCopiesRemoteBlocksIntoLocalBlocks) {
  // 2,3 -> 0,1 is one merged run; 7 -> 5 and 15 -> 15 are runs of their own.
  const std::vector<BlockCopy> copies = {{2, 0}, {3, 1}, {7, 5}, {15, 15}};
  int calls = 0;
  Status result = InternalError("not called");
  auto id = transport_->PostRead(peer_, copies, [&](TransferId, const Status& s) {
    ++calls;
    result = s;
  });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(calls, 0);  // never inside Post*
  WaitFor(calls);
  EXPECT_TRUE(result.ok()) << result.ToString();
  const std::vector<uint8_t> local = Local();
  EXPECT_TRUE(BlockEquals(local, 0, ChildPattern, 2));
  EXPECT_TRUE(BlockEquals(local, 1, ChildPattern, 3));
  EXPECT_TRUE(BlockEquals(local, 5, ChildPattern, 7));
  EXPECT_TRUE(BlockEquals(local, 15, ChildPattern, 15));
  for (uint64_t b : {2, 3, 4, 6, 7, 8, 14}) EXPECT_TRUE(BlockIsZero(local, b)) << b;
  const TransportStats s = transport_->Stats();
  EXPECT_EQ(s.bytes_read, 4 * kBlockBytes);
  EXPECT_EQ(s.transfers_ok, 1u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(transport_->Progress(0), 0);  // exactly once
  EXPECT_EQ(calls, 1);
}

TEST_F(CudaIpcTest, WriteCopiesLocalBlocksIntoTheChild) {
  const std::vector<uint8_t> mine = Filled(ParentPattern);
  ASSERT_TRUE(kcuda::CopyToDevice(mem_, mine.data(), mine.size()).ok());
  ASSERT_TRUE(kcuda::Synchronize().ok());
  const std::vector<BlockCopy> copies = {{9, 4}, {10, 5}};  // remote <- local
  int calls = 0;
  Status result = InternalError("not called");
  auto id = transport_->PostWrite(peer_, copies, [&](TransferId, const Status& s) {
    ++calls;
    result = s;
  });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  WaitFor(calls);
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_EQ(transport_->Stats().bytes_written, 2 * kBlockBytes);
  const std::vector<uint8_t> remote = g_child->Dump();
  ASSERT_EQ(remote.size(), kRegionBytes);
  EXPECT_TRUE(BlockEquals(remote, 9, ParentPattern, 4));
  EXPECT_TRUE(BlockEquals(remote, 10, ParentPattern, 5));
  // Only those two blocks changed (other tests read blocks 0-8 and 11-15 of the child).
  for (uint64_t b = 0; b < kBlocks; ++b) {
    if (b == 9 || b == 10) continue;
    EXPECT_TRUE(BlockEquals(remote, b, ChildPattern, b)) << b;
  }
}

TEST_F(CudaIpcTest, ForgedBlockIdsAreRejectedAndNothingMoves) {
  int calls = 0;
  auto cb = [&](TransferId, const Status&) { ++calls; };
  const std::vector<BlockCopy> bad_remote = {{1, 1}, {kBlocks, 2}};
  auto r = transport_->PostRead(peer_, bad_remote, cb);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("remote_block 16"), std::string::npos)
      << r.status().ToString();
  const std::vector<BlockCopy> bad_local = {{1, kBlocks + 100}};
  r = transport_->PostWrite(peer_, bad_local, cb);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::vector<BlockCopy> huge = {{0xffffffffu, 0}};
  r = transport_->PostRead(peer_, huge, cb);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  r = transport_->PostRead(peer_ + 1000, std::vector<BlockCopy>{{1, 1}}, cb);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(transport_->Progress(10), 0);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(transport_->Stats().in_flight, 0u);
  const std::vector<uint8_t> local = Local();
  for (uint64_t b = 0; b < kBlocks; ++b) EXPECT_TRUE(BlockIsZero(local, b)) << b;  // block 1 too
}

TEST_F(CudaIpcTest, ForgedDescriptorCannotReachPastTheExportedAllocation) {
  // More blocks than were exported: the address's alloc_bytes refuses it.
  RegionDescriptor d = g_child->desc();
  d.num_blocks = kBlocks * 1000;
  auto p = transport_->Connect(d);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << p.status().ToString();

  // Also lie about alloc_bytes: the size of the mapping CUDA returns still refuses it.
  auto a = cuda_ipc::DecodeIpcAddress(d.worker_address);
  ASSERT_TRUE(a.ok());
  a->alloc_bytes = uint64_t{1} << 40;
  auto forged = cuda_ipc::EncodeIpcAddress(*a);
  ASSERT_TRUE(forged.ok());
  d.worker_address = *forged;
  p = transport_->Connect(d);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("mapped allocation"), std::string::npos)
      << p.status().ToString();

  // Same with a forged offset and the real geometry.
  d = g_child->desc();
  a = cuda_ipc::DecodeIpcAddress(d.worker_address);
  ASSERT_TRUE(a.ok());
  // Past the real allocation by more than any allocation granularity (2 MiB) could hide.
  a->offset = a->alloc_bytes + (uint64_t{4} << 20);
  a->alloc_bytes = uint64_t{1} << 40;
  d.worker_address = *cuda_ipc::EncodeIpcAddress(*a);
  p = transport_->Connect(d);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << p.status().ToString();

  // The genuine descriptor still works (the failed attempts released their mappings).
  EXPECT_TRUE(transport_->Connect(g_child->desc()).ok());
  EXPECT_EQ(transport_->Stats().peers, 2u);
}

TEST_F(CudaIpcTest, DescriptorFromAnotherNodeOrThisProcessIsRefused) {
  RegionDescriptor d = g_child->desc();
  auto a = cuda_ipc::DecodeIpcAddress(d.worker_address);
  ASSERT_TRUE(a.ok());
  a->boot_id = "00000000-0000-0000-0000-000000000000";
  d.worker_address = *cuda_ipc::EncodeIpcAddress(*a);
  auto p = transport_->Connect(d);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("another node"), std::string::npos) << p.status().ToString();

  auto own = transport_->DescribeLocal();
  ASSERT_TRUE(own.ok());
  p = transport_->Connect(*own);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("this process"), std::string::npos) << p.status().ToString();

  d = g_child->desc();
  d.transport = "ucx";
  EXPECT_EQ(transport_->Connect(d).status().code(), StatusCode::kInvalidArgument);
  d = g_child->desc();
  d.rkey = "x";
  EXPECT_EQ(transport_->Connect(d).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(CudaIpcTest, CancelRunsTheCallbackOnceBeforeReturning) {
  int calls = 0;
  Status result;
  auto id = transport_->PostRead(peer_, std::vector<BlockCopy>{{0, 0}, {1, 1}},
                                 [&](TransferId, const Status& s) {
                                   ++calls;
                                   result = s;
                                 });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  transport_->Cancel(*id);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(result.code(), StatusCode::kCancelled) << result.ToString();
  transport_->Cancel(*id);  // finished: ignored
  EXPECT_EQ(transport_->Progress(0), 0);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(transport_->Stats().transfers_failed, 1u);
  EXPECT_EQ(transport_->Stats().bytes_read, 0u);
}

TEST_F(CudaIpcTest, DisconnectCancelsAndForgetsThePeer) {
  int calls = 0;
  Status result;
  auto id =
      transport_->PostRead(peer_, std::vector<BlockCopy>{{4, 4}}, [&](TransferId, const Status& s) {
        ++calls;
        result = s;
      });
  ASSERT_TRUE(id.ok());
  transport_->Disconnect(peer_);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(result.code(), StatusCode::kCancelled);
  auto again = transport_->PostRead(peer_, std::vector<BlockCopy>{{4, 4}}, nullptr);
  EXPECT_EQ(again.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(transport_->Stats().peers, 0u);
  transport_->Disconnect(peer_);  // unknown now: ignored
}

TEST_F(CudaIpcTest, TwoPeersOnOneHandleShareTheMapping) {
  auto second = transport_->Connect(g_child->desc());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE(*second, peer_);
  transport_->Disconnect(peer_);  // the mapping stays open for `second`
  int calls = 0;
  Status result;
  auto id = transport_->PostRead(*second, std::vector<BlockCopy>{{12, 3}},
                                 [&](TransferId, const Status& s) {
                                   ++calls;
                                   result = s;
                                 });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  WaitFor(calls);
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_TRUE(BlockEquals(Local(), 3, ChildPattern, 12));
}

TEST_F(CudaIpcTest, EmptyListCompletesOkOnProgressAndDestructorCancels) {
  int empty_calls = 0;
  Status empty_result = InternalError("not called");
  auto id = transport_->PostRead(peer_, {}, [&](TransferId, const Status& s) {
    ++empty_calls;
    empty_result = s;
  });
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(empty_calls, 0);
  EXPECT_EQ(transport_->Progress(0), 1);
  EXPECT_TRUE(empty_result.ok());

  int calls = 0;
  Status result;
  ASSERT_TRUE(transport_
                  ->PostRead(peer_, std::vector<BlockCopy>{{5, 5}},
                             [&](TransferId, const Status& s) {
                               ++calls;
                               result = s;
                             })
                  .ok());
  transport_.reset();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(result.code(), StatusCode::kCancelled);
}

TEST_F(CudaIpcTest, RegisterLocalRefusesHostMemoryAndASecondRegion) {
  auto t = CreateCudaIpcTransport(CudaIpcTransportOptions{0});
  ASSERT_TRUE(t.ok());
  std::vector<uint8_t> host(kRegionBytes);
  Status s = (*t)->RegisterLocal(host.data(), kBlockBytes, kBlocks);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  // Far more blocks than the allocation holds (64 MiB of a 1 MiB allocation: more than any
  // rounding of the allocation size could cover).
  s = (*t)->RegisterLocal(mem_, kBlockBytes, kBlocks * 64);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  s = transport_->RegisterLocal(mem_, kBlockBytes, kBlocks);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
}

}  // namespace
}  // namespace kvmesh::transfer

int main(int argc, char** argv) {
  if (std::getenv(kvmesh::transfer::kChildEnv) != nullptr) return kvmesh::transfer::RunChild();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
