// The global average pool ladder: y[b][ch] = mean over the hw pixels of x[b][p][ch] (NHWC), the op
// that turns the backbone's last activation into the feature vector. From a thread a channel to
// today's kernel (kernels/cuda/pool.cu), each version checked against the CPU twin
// (cpu::global_avg_pool) and timed. bench/worklog-cuda-memory.md has the predictions and figures.
//
//   ladder_global_avg_pool [VERSION]
//
// Every version adds a channel's pixels in order from +0 and multiplies by 1/hw, as the twin
// does, so the check is exact (tolerance 0). Memory-bound: the least a run moves is x read once.
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/pool_internal.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

// v1: a thread per (image, channel), 4-byte loads. A warp reads 32 neighbouring channels of a
// pixel, 128 contiguous bytes, then the next pixel c floats further on; each thread has one load
// in flight at a time behind its add.
__global__ void gap_thread_per_channel(int n, int hw, int c, float inv, const float* x, float* y) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(n) * c) return;
  const int b = int(i / c), ch = int(i % c);
  const float* xc = x + int64_t(b) * hw * c + ch;
  float acc = 0.f;
  for (int p = 0; p < hw; ++p) acc += xc[int64_t(p) * c];
  y[i] = acc * inv;
}

// One shape: random activations, the output, and the CPU twin's answer.
struct Problem {
  int n, hw, c;
  ladder::DeviceArray<float> x, y;
  std::vector<float> want;

  Problem(int images, int pixels, int channels, uint32_t seed)
      : n(images), hw(pixels), c(channels), x(size_t(n) * hw * c), y(size_t(n) * c) {
    // ReLU6 outputs, as the backbone hands them over: non-negative, up to 6.
    const std::vector<float> h = ladder::random_floats(x.n, seed, 0.f, 6.f);
    x.upload(h);
    want.assign(y.n, 0.f);
    cpu::global_avg_pool(n, hw, c, h.data(), want.data());
  }
  std::string shape() const {
    return std::to_string(n) + "x" + std::to_string(hw) + "x" + std::to_string(c);
  }
  double bytes() const { return 4.0 * (double(n) * hw * c + double(n) * c); }
  void poison() const { y.poison(); }
  double error() const { return ladder::max_error(y.download(), want); }
};

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a thread a (image, channel), 4-byte loads",
       [](const Problem& p) {
         const int64_t threads = int64_t(p.n) * p.c;
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(threads, 128)), dim3(128), 0, nullptr,
                      gap_thread_per_channel)
         (p.n, p.hw, p.c, 1.f / float(p.hw), p.x.p, p.y.p);
         CUDA_CHECK_LAUNCH("gap_thread_per_channel", p.shape());
       }},
      {"a thread a float4 of channels: 16-byte loads, a quarter of the threads",
       [](const Problem& p) { cuda::global_avg_pool_v1(p.n, p.hw, p.c, p.x.p, p.y.p, nullptr); }},
      {"cp.async ring of 4x4 pixels in shared memory (today's cuda::global_avg_pool)",
       [](const Problem& p) { cuda::global_avg_pool(p.n, p.hw, p.c, p.x.p, p.y.p, nullptr); }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_global_avg_pool";
  try {
    if (!ladder::have_device(name)) return 0;
    // Lite0's last activation at batch 256 (7x7x1280); emulated, 4 images of it. Checked also:
    // pixel counts across the ring's boundaries, and channels not a multiple of 4 (the scalar
    // path of versions 2 and 3).
    const Problem timed(ladder::kEmulated ? 4 : 256, 49, 1280, 1);
    const Problem ring(3, 13, 36, 2), odd(2, 7, 37, 3), one(1, 1, 8, 4);
    return ladder::run<Problem>(name, versions(), 0.0, timed, {&ring, &odd, &one}, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
