#pragma once
// What the benchmark programs with a main of their own (bench_trunk, bench_step) share: their
// timing and their exit codes. A measurement is `iters` calls issued back to back, timed between
// two CUDA events on the device's compute stream with one synchronisation at the end (steady_clock
// on the CPU), so the host's launch overhead costs time only when the host is slower than the GPU
// at issuing the work. host_ms says how long the host took to issue one call.
#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <iostream>
#include <stdexcept>
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

// `repeats` measurements of `iters` calls each: the median and the fastest milliseconds per call,
// every measurement, and the host's median time to issue one call.
struct Timing {
  double median_ms = 0, min_ms = 0, host_ms = 0;
  std::vector<double> all_ms;
};

inline Timing measure(const Device& dev, int repeats, int iters,
                      const std::function<void()>& call) {
  Timing t;
  std::vector<double> host;
  for (int r = 0; r < repeats; ++r) {
    const Sample s = time_on(dev, iters, call);
    t.all_ms.push_back(s.ms);
    host.push_back(s.host_ms);
  }
  t.median_ms = median(t.all_ms);
  t.min_ms = *std::min_element(t.all_ms.begin(), t.all_ms.end());
  t.host_ms = median(host);
  return t;
}

// Bad arguments or input: bench_main prints what() as one line and exits 2.
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs a program's body: 0 done (or its own code), 2 bad input, 1 any other failure, each failure
// one line on stderr starting with the program's name.
inline int bench_main(const char* name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const BadInput& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace graft::bench
