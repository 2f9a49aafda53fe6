#pragma once
// Timing for the benchmark programs with a main of their own (bench_trunk, bench_step): a
// measurement is `iters` calls issued back to back, timed between two CUDA events on the device's
// compute stream with one synchronisation at the end (steady_clock on the CPU), so the host's
// launch overhead costs time only when the host is slower than the GPU at issuing the work.
// host_ms says how long the host took to issue one call.
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "engine/device.h"

#ifdef GRAFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/check.h"
#endif

namespace graft::bench {

// Per measurement: milliseconds per call on the device, and the host's time to issue one.
struct Sample {
  double ms = 0, host_ms = 0;
};

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

inline Sample time_cpu(int iters, const std::function<void()>& call) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) call();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      iters;
  return {ms, ms};
}

#ifdef GRAFT_HAVE_CUDA
inline Sample time_cuda(cudaStream_t stream, int iters, const std::function<void()>& call) {
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  const auto t0 = std::chrono::steady_clock::now();
  CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < iters; ++i) call();
  CUDA_CHECK(cudaEventRecord(stop, stream));
  const auto t1 = std::chrono::steady_clock::now();
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return {double(ms) / iters, std::chrono::duration<double, std::milli>(t1 - t0).count() / iters};
}
#endif

// One measurement on `dev`: CUDA events on its compute stream, or the host clock on the CPU.
inline Sample time_on(const Device& dev, int iters, const std::function<void()>& call) {
#ifdef GRAFT_HAVE_CUDA
  if (dev.is_cuda()) return time_cuda(static_cast<cudaStream_t>(dev.stream), iters, call);
#endif
  (void)dev;
  return time_cpu(iters, call);
}

}  // namespace graft::bench
