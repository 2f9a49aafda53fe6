// The input-normalisation ladder: uint8 pixels to floats, y = (x / 255 - mean[ch]) / std[ch], the
// first op of every step. From a thread an element computing the formula to today's table-driven
// kernel (kernels/cuda/normalize.cu), each version checked against the CPU twin
// (cpu::normalize_u8) and timed. bench/worklog-cuda-memory.md has the predictions and figures.
//
//   ladder_normalize [VERSION]
//
// The result must be bit for bit the twin's (the contract's exact float expression, IEEE division,
// nothing to contract), so the check's tolerance is 0. Memory-bound: 1 byte in, 4 bytes out.
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

struct Norm {
  float mean[4], std[4];
};

// v1: a thread an element, two IEEE divisions each (a division is a short loop of instructions
// on the GPU, so the kernel runs out of issue slots before it runs out of bandwidth).
__global__ void norm_formula(int64_t total, int c, Norm np, const uint8_t* x, float* y) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= total) return;
  const int ch = int(e % c);
  y[e] = (float(x[e]) / 255.0f - np.mean[ch]) / np.std[ch];
}

// v2: the same thread an element, but a block first builds the 256 results of each channel in
// shared memory with that formula, and an element is one lookup.
__global__ void norm_table(int64_t total, int c, Norm np, const uint8_t* x, float* y) {
  __shared__ float table[4 * 256];
  for (int i = threadIdx.x; i < c * 256; i += blockDim.x)
    table[i] = (float(i % 256) / 255.0f - np.mean[i / 256]) / np.std[i / 256];
  __syncthreads();
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e < total) y[e] = table[int(e % c) * 256 + x[e]];
}

// One shape: random pixels at an offset from their allocation (offset 0 is aligned; 1 byte and 1
// float is not, which today's kernel serves element by element), the output, the twin's answer.
struct Problem {
  int64_t pixels;
  int c, offset;
  Norm np{};
  ladder::DeviceArray<uint8_t> x;
  ladder::DeviceArray<float> y;
  std::vector<float> want;

  Problem(int64_t px, int channels, int off, uint32_t seed)
      : pixels(px), c(channels), offset(off), x(size_t(px * channels + off)), y(x.n) {
    const float mean[4] = {0.485f, 0.456f, 0.406f, 0.5f}, std[4] = {0.229f, 0.224f, 0.225f, 0.25f};
    for (int ch = 0; ch < 4; ++ch) {
      np.mean[ch] = mean[ch];
      np.std[ch] = std[ch];
    }
    std::vector<uint8_t> h(x.n);
    std::mt19937 rng(seed);
    for (uint8_t& v : h) v = uint8_t(rng() & 0xffu);
    x.upload(h);
    want.assign(size_t(pixels * c), 0.f);
    cpu::normalize_u8(pixels, c, h.data() + offset, mean, std, want.data());
  }
  int64_t total() const { return pixels * c; }
  const uint8_t* in() const { return x.p + offset; }
  float* out() const { return y.p + offset; }
  std::string shape() const {
    return std::to_string(pixels) + "x" + std::to_string(c) + (offset ? " (unaligned)" : "");
  }
  double bytes() const { return 5.0 * double(total()); }
  void poison() const { y.poison(); }
  double error() const {
    std::vector<float> got = y.download();
    got.erase(got.begin(), got.begin() + offset);
    return ladder::max_error(got, want);
  }
};

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a thread an element: the formula, two IEEE divisions each",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(p.total(), 256)), dim3(256), 0, nullptr, norm_formula)
         (p.total(), p.c, p.np, p.in(), p.out());
         CUDA_CHECK_LAUNCH("norm_formula", p.shape());
       }},
      {"a thread an element: a lookup in a per-block table of the 256 results",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(p.total(), 256)), dim3(256), 0, nullptr, norm_table)
         (p.total(), p.c, p.np, p.in(), p.out());
         CUDA_CHECK_LAUNCH("norm_table", p.shape());
       }},
      {"4 bytes in, a float4 out, 4 groups a thread in flight (today's cuda::normalize_u8)",
       [](const Problem& p) {
         cuda::normalize_u8(p.pixels, p.c, p.in(), p.np.mean, p.np.std, p.out(), nullptr);
       }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_normalize";
  try {
    if (!ladder::have_device(name)) return 0;
    // A batch of 256 images at 224x224, 3 channels (193 MB moved); emulated, 2 images at 32x32.
    // Checked also: 1 and 4 channels, a pixel count whose elements are not a multiple of 4, and
    // pointers off their alignment.
    const Problem timed(
        int64_t(ladder::kEmulated ? 2 : 256) * (ladder::kEmulated ? 32 * 32 : 224 * 224), 3, 0, 1);
    const Problem gray(1001, 1, 0, 2), rgba(777, 4, 0, 3), ragged(4097, 3, 0, 4),
        unaligned(999, 3, 1, 5);
    return ladder::run<Problem>(name, versions(), 0.0, timed, {&gray, &rgba, &ragged, &unaligned},
                                argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
