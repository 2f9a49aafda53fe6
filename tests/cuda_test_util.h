#pragma once
// Helpers for the CUDA-vs-CPU-twin tests: the device probe that skips (or, with
// GRAFT_REQUIRE_GPU=1, fails) when there is no GPU, an owning device buffer that can be poisoned
// with NaN, seeded random data, and the relative-error measure.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"

namespace graft::test {

struct DeviceProbe {
  bool ok = false;
  std::string reason;
};

// Probed once per process. cudaGetDeviceCount fails (rather than returning 0) on a machine with
// no driver; both count as "no device".
inline const DeviceProbe& device_probe() {
  static const DeviceProbe probe = [] {
    DeviceProbe p;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
      p.reason = std::string("no CUDA device: ") + cudaGetErrorString(err);
    } else if (count == 0) {
      p.reason = "no CUDA device: cudaGetDeviceCount returned 0";
    } else {
      p.ok = true;
    }
    return p;
  }();
  return probe;
}

inline bool gpu_required() {
  const char* v = std::getenv("GRAFT_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

// Base fixture: every CUDA test skips cleanly without a device, unless GRAFT_REQUIRE_GPU=1, in
// which case it fails (a fatal failure in SetUp stops the test body from running).
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const DeviceProbe& p = device_probe();
    if (!p.ok) {
      if (gpu_required()) FAIL() << p.reason << " (GRAFT_REQUIRE_GPU=1)";
      GTEST_SKIP() << p.reason;
    }
  }
};

// A CudaTest with a stream of its own, created only once the probe has found a device and
// synchronised before it is destroyed, so a failing test cannot leave work running into the next
// one.
class CudaStreamTest : public CudaTest {
 protected:
  void SetUp() override {
    test::CudaTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }
  cudaStream_t stream_ = nullptr;
};

// Owning device allocation. `offset` elements of slack at the front let a test hand a kernel a
// pointer that is deliberately not 16-byte aligned.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count, size_t offset = 0) : count_(count), offset_(offset) {
    const size_t bytes = (count + offset) * sizeof(T);
    if (bytes) CUDA_CHECK(cudaMalloc(&base_, bytes));
  }
  explicit DeviceBuffer(const std::vector<T>& host, size_t offset = 0)
      : DeviceBuffer(host.size(), offset) {
    upload(host);
  }
  ~DeviceBuffer() {
    if (base_) cudaFree(base_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), count_(o.count_), offset_(o.offset_) {}

  T* get() const { return base_ ? base_ + offset_ : nullptr; }
  size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    if (host.size() != count_) throw std::runtime_error("DeviceBuffer::upload: size mismatch");
    if (count_)
      CUDA_CHECK(cudaMemcpy(get(), host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_) {
      CUDA_CHECK(cudaDeviceSynchronize());  // surface asynchronous kernel faults here
      CUDA_CHECK(cudaMemcpy(host.data(), get(), count_ * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return host;
  }
  // All bytes 0xFF: NaN for float, -1 for integers. Unwritten outputs then show.
  void poison() {
    if (count_) CUDA_CHECK(cudaMemset(get(), 0xFF, count_ * sizeof(T)));
  }

 private:
  T* base_ = nullptr;
  size_t count_ = 0;
  size_t offset_ = 0;
};

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -1.f,
                                        float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// ||got - want|| / ||want|| in double; infinity if `got` has a NaN/inf where `want` is finite
// (an unwritten, poisoned element), or if the sizes differ.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) return INFINITY;
    if (!std::isfinite(want[i])) {
      // Both non-finite: only identical classes match (-inf pools, NaN labels).
      if (std::isnan(want[i]) != std::isnan(got[i]) || (!std::isnan(want[i]) && got[i] != want[i]))
        return INFINITY;
      continue;
    }
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// Index of the first element that is not finite in `got` while finite in `want`, or -1.
inline int64_t first_unwritten(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) return int64_t(i);
  return -1;
}

}  // namespace graft::test

// EXPECT that two float vectors agree to a relative L2 error, with a message that names the case
// and, when it fails on poison, the first unwritten element.
#define GRAFT_EXPECT_CLOSE(got, want, tol, what)                                   \
  do {                                                                             \
    const double graft_rel_ = ::graft::test::rel_error((got), (want));             \
    EXPECT_LE(graft_rel_, (tol)) << (what) << ": rel error " << graft_rel_         \
                                 << " first unwritten element "                    \
                                 << ::graft::test::first_unwritten((got), (want)); \
  } while (0)
