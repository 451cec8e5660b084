// cuda_device.h: probe, memory helpers and error reporting. The probe test also runs (and must
// not crash or report a device) on machines without a GPU.
#include "kernels/cuda_device.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/attention.h"
#include "kernels/cuda_test_util.h"

namespace kvmesh::kernels {
namespace {

using cuda_test::CudaTest;

TEST(CudaDeviceProbe, CountIsStableAndNonNegative) {
  const int n = cuda::UsableDeviceCount();
  EXPECT_GE(n, 0);
  EXPECT_EQ(cuda::UsableDeviceCount(), n);
}

class CudaDeviceTest : public CudaTest {};

TEST_F(CudaDeviceTest, CopyRoundTrip) {
  std::vector<int32_t> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<int32_t>(i * 7 - 3);
  cuda_test::DeviceVec<int32_t> dev(host);
  EXPECT_EQ(dev.ToHost(), host);
  EXPECT_TRUE(cuda::LastError("round trip").ok());
}

TEST_F(CudaDeviceTest, HugeAllocIsResourceExhausted) {
  auto p = cuda::DeviceAlloc(size_t{1} << 50);  // 1 PiB
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted) << p.status().ToString();
  EXPECT_TRUE(cuda::LastError("after failed alloc").ok());  // the failure is not sticky
}

TEST_F(CudaDeviceTest, FailedCopyNamesCallFileAndLine) {
  std::vector<float> host(4);
  // A host stack address is not device memory: cudaMemcpy DeviceToHost fails.
  int not_device = 0;
  const Status s = cuda::CopyToHost(host.data(), &not_device, sizeof(float) * 4);
  if (s.ok()) GTEST_SKIP() << "driver accepted a host pointer (unified addressing with HMM)";
  EXPECT_NE(s.message().find("cudaMemcpy"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("cuda_device.cu:"), std::string::npos) << s.ToString();
}

TEST_F(CudaDeviceTest, LauncherArgumentErrorReachesLastError) {
  // head_dim 512 is beyond the CUDA attention's limit: the launcher records an error instead of
  // launching, and LastError returns it once.
  cuda::PagedAttentionDecode(nullptr, nullptr, 0, nullptr, nullptr, 0, nullptr, 1, nullptr, 1, 1,
                             1, 512, 16, 1.0f, nullptr);
  const Status s = cuda::LastError("decode");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("head_dim 512"), std::string::npos) << s.ToString();
  EXPECT_TRUE(cuda::LastError("again").ok());
}

}  // namespace
}  // namespace kvmesh::kernels
