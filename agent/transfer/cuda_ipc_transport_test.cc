// CudaIpcTransport parts that run on every machine built with KVMESH_CUDA (label unit): creation
// without a GPU is a clean Unavailable (with a GPU it succeeds), option checks, and the
// descriptor's address record (codec, other-node and out-of-allocation refusals). The two-process
// GPU test is cuda_ipc_transport_cuda_test.cc.
#include "agent/transfer/cuda_ipc_transport.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "kernels/cuda_device.h"

namespace kvmesh::transfer {
namespace {

using cuda_ipc::IpcAddress;

IpcAddress SampleAddress() {
  IpcAddress a;
  a.handle.resize(cuda_ipc::kHandleBytes);
  for (size_t i = 0; i < a.handle.size(); ++i) a.handle[i] = static_cast<char>(i * 37 + 1);
  a.handle[5] = '\0';  // handles are binary: NULs inside must survive
  a.offset = 4096;
  a.alloc_bytes = (uint64_t{1} << 33) + 4096;  // > 4 GiB: all 8 bytes of the integers matter
  a.pci_bus_id = "00000000:3B:00.0";
  a.boot_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
  return a;
}

TEST(CudaIpcCreate, WithoutGpuIsUnavailableWithGpuSucceeds) {
  auto t = CreateCudaIpcTransport(CudaIpcTransportOptions{0});
  if (kernels::cuda::UsableDeviceCount() == 0) {
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kUnavailable) << t.status().ToString();
    EXPECT_NE(t.status().message().find("no usable CUDA device"), std::string::npos)
        << t.status().ToString();
    // Asking again gives the same answer (the probe is not left in a broken state).
    auto again = CreateCudaIpcTransport(CudaIpcTransportOptions{0});
    EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  } else {
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ((*t)->name(), "cuda_ipc");
    auto d = (*t)->DescribeLocal();
    EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ((*t)->Progress(0), 0);
    const TransportStats s = (*t)->Stats();
    EXPECT_EQ(s.peers, 0u);
    EXPECT_EQ(s.in_flight, 0u);
  }
}

TEST(CudaIpcCreate, NegativeDeviceIsInvalidArgumentOnEveryMachine) {
  auto t = CreateCudaIpcTransport(CudaIpcTransportOptions{-1});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << t.status().ToString();
}

TEST(CudaIpcCreate, DeviceOutOfRange) {
  const int n = kernels::cuda::UsableDeviceCount();
  auto t = CreateCudaIpcTransport(CudaIpcTransportOptions{n + 3});
  ASSERT_FALSE(t.ok());
  // No GPU: Unavailable wins (there is no range to be out of).
  EXPECT_EQ(t.status().code(), n == 0 ? StatusCode::kUnavailable : StatusCode::kInvalidArgument)
      << t.status().ToString();
}

TEST(CudaIpcAddress, RoundTrip) {
  const IpcAddress a = SampleAddress();
  auto bytes = cuda_ipc::EncodeIpcAddress(a);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(bytes->size(), cuda_ipc::kAddressBytes);
  auto back = cuda_ipc::DecodeIpcAddress(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, a);
}

TEST(CudaIpcAddress, EncodeRejectsFieldsThatDoNotFit) {
  IpcAddress a = SampleAddress();
  a.handle.pop_back();
  EXPECT_EQ(cuda_ipc::EncodeIpcAddress(a).status().code(), StatusCode::kInvalidArgument);
  a = SampleAddress();
  a.pci_bus_id = std::string(cuda_ipc::kPciBusIdBytes, 'x');
  EXPECT_EQ(cuda_ipc::EncodeIpcAddress(a).status().code(), StatusCode::kInvalidArgument);
  a = SampleAddress();
  a.boot_id.clear();
  EXPECT_EQ(cuda_ipc::EncodeIpcAddress(a).status().code(), StatusCode::kInvalidArgument);
  a = SampleAddress();
  a.offset = a.alloc_bytes + 1;
  EXPECT_EQ(cuda_ipc::EncodeIpcAddress(a).status().code(), StatusCode::kInvalidArgument);
}

TEST(CudaIpcAddress, DecodeRejectsMalformedBytes) {
  auto good = cuda_ipc::EncodeIpcAddress(SampleAddress());
  ASSERT_TRUE(good.ok());
  const std::string& g = *good;

  // Every truncation and one extra byte.
  for (size_t n = 0; n < g.size(); n += 7) {
    auto r = cuda_ipc::DecodeIpcAddress(std::string_view(g).substr(0, n));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << n;
  }
  EXPECT_EQ(cuda_ipc::DecodeIpcAddress(g + "x").status().code(), StatusCode::kInvalidArgument);

  std::string bad_magic = g;
  bad_magic[0] = 'X';
  auto r = cuda_ipc::DecodeIpcAddress(bad_magic);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("magic"), std::string::npos) << r.status().ToString();

  // A UCX worker address of the right length is still not ours.
  EXPECT_FALSE(cuda_ipc::DecodeIpcAddress(std::string(cuda_ipc::kAddressBytes, '\x01')).ok());

  // Unterminated boot_id (the last byte of the record is its padding).
  std::string unterminated = g;
  for (size_t i = g.size() - cuda_ipc::kBootIdBytes; i < g.size(); ++i) unterminated[i] = 'a';
  r = cuda_ipc::DecodeIpcAddress(unterminated);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("boot_id"), std::string::npos) << r.status().ToString();

  // Empty pci_bus_id.
  std::string empty_bus = g;
  empty_bus[8 + cuda_ipc::kHandleBytes + 16] = '\0';
  r = cuda_ipc::DecodeIpcAddress(empty_bus);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("pci_bus_id"), std::string::npos) << r.status().ToString();

  // offset > alloc_bytes (forged integers).
  std::string forged = g;
  const size_t off_pos = 8 + cuda_ipc::kHandleBytes;
  for (size_t i = 0; i < 8; ++i) forged[off_pos + i] = '\xff';
  EXPECT_EQ(cuda_ipc::DecodeIpcAddress(forged).status().code(), StatusCode::kInvalidArgument);
}

TEST(CudaIpcAddress, CheckRefusesOtherNode) {
  const IpcAddress a = SampleAddress();
  Status s = cuda_ipc::CheckIpcAddress(a, "another-boot-id", 4096, 16);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("another node"), std::string::npos) << s.ToString();
  EXPECT_TRUE(cuda_ipc::CheckIpcAddress(a, a.boot_id, 4096, 16).ok());
}

TEST(CudaIpcAddress, CheckRefusesRegionPastTheAllocation) {
  IpcAddress a = SampleAddress();
  a.offset = 1024;
  a.alloc_bytes = 1024 + 16 * 4096;
  EXPECT_TRUE(cuda_ipc::CheckIpcAddress(a, a.boot_id, 4096, 16).ok());  // exactly fits
  EXPECT_EQ(cuda_ipc::CheckIpcAddress(a, a.boot_id, 4096, 17).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda_ipc::CheckIpcAddress(a, a.boot_id, 4097, 16).code(), StatusCode::kInvalidArgument);
  // block_bytes * num_blocks overflows 64 bits: must not wrap into "fits".
  a.alloc_bytes = UINT64_MAX;
  EXPECT_EQ(cuda_ipc::CheckIpcAddress(a, a.boot_id, uint64_t{1} << 40, 1u << 25).code(),
            StatusCode::kInvalidArgument);
}

TEST(CudaIpcBootId, ReadsAndTrimsTheNodeIdentity) {
  const std::string path = ::testing::TempDir() + "kvmesh_boot_id_" + std::to_string(getpid());
  {
    std::ofstream out(path);
    out << "  abc-123\t\n";
  }
  auto id = cuda_ipc::ReadBootId(path);
  std::remove(path.c_str());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, "abc-123");

  auto missing = cuda_ipc::ReadBootId(path + ".missing");
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);

  // The real one (Linux): stable within a boot and non-empty.
  auto real = cuda_ipc::ReadBootId();
  ASSERT_TRUE(real.ok()) << real.status().ToString();
  EXPECT_FALSE(real->empty());
  EXPECT_EQ(*cuda_ipc::ReadBootId(), *real);
}

}  // namespace
}  // namespace kvmesh::transfer
