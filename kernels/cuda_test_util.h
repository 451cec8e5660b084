// Test helpers for the *_cuda_test.cc files (CUDA backend vs reference): a fixture that skips when
// no CUDA device is usable, an RAII device buffer built on cuda_device.h, random inputs and an
// element-wise closeness check. Test-only; nothing in a library includes it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda_device.h"

namespace kvmesh::kernels::cuda_test {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::UsableDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  }
};

template <typename P>
class CudaParamTest : public ::testing::TestWithParam<P> {
 protected:
  void SetUp() override {
    if (cuda::UsableDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  }
};

// Device copy of a host vector; freed on destruction. Failures are test failures.
template <typename T>
class DeviceVec {
 public:
  explicit DeviceVec(const std::vector<T>& host) : n_(host.size()) {
    Alloc();
    const Status s = cuda::CopyToDevice(p_, host.data(), bytes());
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  explicit DeviceVec(size_t n) : n_(n) {
    Alloc();
    // Fill with a NaN pattern so that an element a kernel forgot to write is caught.
    std::vector<T> junk(n_);
    std::memset(static_cast<void*>(junk.data()), 0xff, bytes());
    const Status s = cuda::CopyToDevice(p_, junk.data(), bytes());
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  ~DeviceVec() { cuda::DeviceFree(p_); }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;

  T* get() { return static_cast<T*>(p_); }
  size_t bytes() const { return n_ * sizeof(T); }
  std::vector<T> ToHost() const {
    std::vector<T> out(n_);
    const Status sync = cuda::Synchronize();
    EXPECT_TRUE(sync.ok()) << sync.ToString();
    const Status s = cuda::CopyToHost(out.data(), p_, bytes());
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

 private:
  void Alloc() {
    auto p = cuda::DeviceAlloc(bytes() > 0 ? bytes() : 1);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    p_ = p.ok() ? *p : nullptr;
  }
  size_t n_;
  void* p_ = nullptr;
};

inline std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// |got - want| <= atol + rtol * |want| for every element; reports the first few mismatches.
inline void ExpectAllClose(const std::vector<float>& want, const std::vector<float>& got,
                           double atol, double rtol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= atol + rtol * std::fabs(want[i]))) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << ": element " << i << " want " << want[i] << " got " << got[i];
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size() << " elements differ";
}

inline void ExpectLaunchOk(const char* what) {
  const Status s = cuda::LastError(what);
  EXPECT_TRUE(s.ok()) << s.ToString();
  const Status sync = cuda::Synchronize();
  EXPECT_TRUE(sync.ok()) << sync.ToString();
}

}  // namespace kvmesh::kernels::cuda_test
