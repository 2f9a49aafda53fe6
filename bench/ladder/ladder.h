#pragma once
// The harness of a kernel ladder (bench/ladder/*.cu): one family's road from the naive kernel to
// today's, each version checked against the CPU twin and timed, in one runnable file.
//
//   ladder_NAME          every version, one row each; exit status 1 if any fails its check
//   ladder_NAME V        version V alone
//
// A row: the version, what it changed, the time (median of CUDA-event timings), GB/s or GFLOP/s
// with the share of the ceiling this card measures (a device-to-device copy of as many bytes, or
// the FMA rate in the ladders that count FLOPs), and the largest error against the CPU twin.
// In the emulated build (kernels/emu) every check is real, but times are the CPU's running the
// emulation: they are printed, marked "emulated", and say nothing about a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/probe.cuh"

namespace graft::ladder {

#if GRAFT_CUDA_EMULATION
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// Device memory, freed when it goes out of scope.
template <typename T>
struct DeviceArray {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) {
    if (n) CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  }
  ~DeviceArray() {
    if (p) cudaFree(p);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void upload(const std::vector<T>& h) const {
    CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Every byte 0xFF: NaN floats, -1 integers. A version that leaves an output unwritten fails.
  void poison() const { CUDA_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }
};

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Largest |got - want| over the largest |want|: one number per output, comparable across shapes.
// Infinite when got has a NaN (an output left unwritten).
inline double max_error(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    worst = std::max(worst, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? worst / scale : worst;
}

// Median of `reps` event-timed runs after `warm` untimed ones, in microseconds. The runs read the
// same inputs: a timed shape larger than the L2 (every memory-bound ladder's but bias_grad's) comes
// from memory each time, a smaller one is timed warm.
inline double time_us(const std::function<void()>& run, int reps, int warm) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warm; ++i) run();
  std::vector<float> ms(reps);
  for (float& t : ms) {
    CUDA_CHECK(cudaEventRecord(a, nullptr));
    run();
    CUDA_CHECK(cudaEventRecord(b, nullptr));
    CUDA_CHECK(cudaEventSynchronize(b));
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[ms.size() / 2];
}

// The card's fp32 FMA rate in GFLOP/s (kernels/cuda/probe.cuh: 8 independent FMA chains a
// thread, 8 blocks of 256 threads an SM): the ceiling of a compute-bound kernel.
inline double fma_gflops(int reps, int warm) {
  int sms = 1;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int blocks = kEmulated ? 2 : 8 * sms, threads = kEmulated ? 32 : 256;
  const int iters = kEmulated ? 16 : 4096;
  DeviceArray<float> out(size_t(blocks) * threads);
  const double us =
      time_us([&] { cuda::fma_peak_probe(blocks, threads, iters, out.p, nullptr); }, reps, warm);
  return 2.0 * 32 * double(iters) * blocks * threads / (us * 1e3);
}

// What a device-to-device copy of `bytes` (read plus written) reaches, in GB/s: the ceiling of a
// memory-bound kernel that reads and writes as many.
inline double copy_gbs(size_t bytes, int reps, int warm) {
  const size_t half = std::max<size_t>(bytes / 2, 4);
  DeviceArray<char> src(half), dst(half);
  CUDA_CHECK(cudaMemset(src.p, 0, half));
  const double us = time_us(
      [&] { CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, half, cudaMemcpyDeviceToDevice, nullptr)); },
      reps, warm);
  return 2.0 * half / (us * 1e3);
}

// A version: what this step changed (the worklog row says why), and one run of it on a problem,
// launches checked.
template <typename Problem>
struct Version {
  const char* what;
  std::function<void(const Problem&)> run;
};

// Whether a Problem counts FLOPs (a compute-bound family) rather than bytes.
template <typename P, typename = void>
struct counts_flops : std::false_type {};
template <typename P>
struct counts_flops<P, std::void_t<decltype(std::declval<const P&>().flops())>> : std::true_type {};

// Runs a family's versions. A Problem holds one shape's inputs, outputs and the CPU twin's answer,
// and has shape() (a string), bytes() (the least a run must move) or flops() (the work of a
// compute-bound family, measured against the FMA rate instead of the copy bandwidth), poison()
// (the outputs to NaN) and error() (the largest error against the twin after a run). Each version
// is checked on `timed` and on every problem of `also_checked` (awkward shapes, too small to time),
// then timed on `timed`; its error is the largest of them.
template <typename Problem>
int run(const char* name, const std::vector<Version<Problem>>& versions, double tolerance,
        const Problem& timed, const std::vector<const Problem*>& also_checked, int argc,
        char** argv) {
  const int count = int(versions.size());
  int only = 0;
  if (argc > 2 || (argc == 2 && ((only = std::atoi(argv[1])) < 1 || only > count))) {
    std::fprintf(stderr, "usage: %s [VERSION]   (versions 1 to %d)\n", argv[0], count);
    return 2;
  }
  const int reps = kEmulated ? 1 : 20, warm = kEmulated ? 0 : 3;
  constexpr bool flops = counts_flops<Problem>::value;
  const char* unit = flops ? "GFLOP/s" : "GB/s";
  const char* emulated = kEmulated ? " (emulated: times are the CPU's, not a GPU's)" : "";
  // Per run: GFLOP or GB; the ceiling in GFLOP/s or GB/s (not measured emulated: no share of
  // an emulated ceiling means anything).
  double work, ceiling = 0;
  char ceiling_text[64] = "not measured";
  if constexpr (flops) {
    work = timed.flops() / 1e9;
    if (!kEmulated) ceiling = fma_gflops(reps, warm);
    if (!kEmulated) std::snprintf(ceiling_text, sizeof ceiling_text, "%.0f GFLOP/s", ceiling);
    std::printf("%s, timed on %s: %.2f GFLOP a run; FMA ceiling %s%s\n", name,
                timed.shape().c_str(), work, ceiling_text, emulated);
  } else {
    work = timed.bytes() / 1e9;
    if (!kEmulated) ceiling = copy_gbs(size_t(timed.bytes()), reps, warm);
    if (!kEmulated) std::snprintf(ceiling_text, sizeof ceiling_text, "%.0f GB/s", ceiling);
    std::printf("%s, timed on %s: %.1f MB moved a run at least; copy ceiling %s%s\n", name,
                timed.shape().c_str(), work * 1e3, ceiling_text, emulated);
  }
  std::string checked = timed.shape();
  for (const Problem* p : also_checked) checked += ", " + p->shape();
  std::printf("checked on %s against the CPU twin, tolerance %.0e\n", checked.c_str(), tolerance);
  std::printf("%-3s %-80s %10s %8s %6s %9s\n", "v", "what changed", "time (us)", unit, "%ceil",
              "max err");
  bool failed = false;
  for (int v = 1; v <= count; ++v) {
    if (only && v != only) continue;
    const Version<Problem>& ver = versions[v - 1];
    try {
      double err = 0;
      std::vector<const Problem*> all = also_checked;
      all.push_back(&timed);
      for (const Problem* p : all) {
        p->poison();
        ver.run(*p);
        CUDA_CHECK(cudaDeviceSynchronize());
        err = std::max(err, p->error());
      }
      const bool ok = err <= tolerance;
      failed |= !ok;
      const double us = time_us([&] { ver.run(timed); }, reps, warm);
      const double rate = work / (us * 1e-6);
      char share[16] = "-";
      if (ceiling > 0) std::snprintf(share, sizeof share, "%.0f%%", 100.0 * rate / ceiling);
      std::printf("%-3d %-80s %10.1f %8.1f %6s %9.1e%s%s\n", v, ver.what, us, rate, share, err,
                  ok ? "" : "  FAILED", kEmulated ? "  emulated" : "");
    } catch (const std::exception& e) {  // a launch fault: this version fails, the rest still run
      failed = true;
      std::printf("%-3d %-80s  FAILED: %s\n", v, ver.what, e.what());
    }
    std::fflush(stdout);
  }
  if (failed) std::printf("%s: a version failed its check\n", name);
  return failed ? 1 : 0;
}

// No device: one line, nothing run, success (a build with the toolkit on a machine without a GPU).
inline bool have_device(const char* name) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) return true;
  std::printf("%s: no CUDA device; nothing run\n", name);
  return false;
}

}  // namespace graft::ladder
