// The stem ladder: the first conv of every backbone, a KxK kernel over the 3-channel image
// (EfficientNet's 3x3 stride 2 -> 32, ResNet's 7x7 stride 2 -> 64). From a thread an output to the
// implicit GEMM that serves any KxK conv, then today's direct kernel for 1-4 input channels
// (kernels/cuda/conv_small_cin.cu), each checked against the CPU twin (cpu::conv2d) and timed.
// bench/worklog-cuda-conv.md has the predictions and figures.
//
//   ladder_stem [VERSION]
//
// Sums run over the taps in (ky, kx, ci) order from +0, then bias, residual, activation. Taps in
// the padding are skipped where the twin's im2col multiplies zeros, so the check is to rounding
// (1e-5), not bit for bit. Memory-bound at 3 input channels (27 multiply-adds an output float):
// the least a run moves is the image read once and the output written once.
#include <algorithm>
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

struct Conv {
  ConvShape s;
  const float *x, *w, *bias;
  int act;
  float* y;
};

// v1: a thread an output element, output channels fastest: a warp's weight loads are 32
// neighbouring output channels of one tap (coalesced), its image loads one tap's value broadcast.
__global__ void stem_thread_per_output(Conv c) {
  const ConvShape& s = c.s;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(s.n) * s.out_h * s.out_w * s.out_c) return;
  const int oc = int(i % s.out_c);
  const int64_t pix = i / s.out_c;
  const int ox = int(pix % s.out_w), oy = int(pix / s.out_w % s.out_h);
  const int b = int(pix / s.out_w / s.out_h);
  float acc = 0.f;
  for (int ky = 0; ky < s.k_h; ++ky) {
    const int iy = oy * s.stride_h - s.pad_top + ky;
    if (iy < 0 || iy >= s.in_h) continue;
    for (int kx = 0; kx < s.k_w; ++kx) {
      const int ix = ox * s.stride_w - s.pad_left + kx;
      if (ix < 0 || ix >= s.in_w) continue;
      const float* xp = c.x + ((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c;
      const float* wp = c.w + int64_t((ky * s.k_w + kx) * s.in_c) * s.out_c + oc;
      for (int ci = 0; ci < s.in_c; ++ci) acc = fmaf(xp[ci], wp[int64_t(ci) * s.out_c], acc);
    }
  }
  if (c.bias) acc += c.bias[oc];
  c.y[i] = cuda::apply_act(acc, c.act);
}

// One shape: a random image, weights and bias, the output, and the CPU twin's answer.
struct Problem {
  ConvShape s;
  ladder::DeviceArray<float> x, w, bias, y;
  std::vector<float> want;

  // TensorFlow's SAME padding: out = ceil(in / stride), the extra row and column after.
  static ConvShape same(int n, int h, int in_c, int out_c, int k, int stride) {
    const int out = (h + stride - 1) / stride;
    const int pad = std::max(0, (out - 1) * stride + k - h);
    return ConvShape{n, h, h, in_c, out, out, out_c, k, k, stride, stride, pad / 2, pad / 2, 1};
  }
  // PyTorch's symmetric padding (ResNet's stem: 7x7, stride 2, pad 3).
  static ConvShape symmetric(int n, int h, int in_c, int out_c, int k, int stride, int pad) {
    const int out = (h + 2 * pad - k) / stride + 1;
    return ConvShape{n, h, h, in_c, out, out, out_c, k, k, stride, stride, pad, pad, 1};
  }

  Problem(const ConvShape& shape, uint32_t seed)
      : s(shape),
        x(size_t(s.n) * s.in_h * s.in_w * s.in_c),
        w(size_t(s.k_h) * s.k_w * s.in_c * s.out_c),
        bias(s.out_c),
        y(size_t(s.n) * s.out_h * s.out_w * s.out_c) {
    const std::vector<float> hx = ladder::random_floats(x.n, seed);
    const std::vector<float> hw = ladder::random_floats(w.n, seed + 1);
    const std::vector<float> hb = ladder::random_floats(bias.n, seed + 2);
    x.upload(hx);
    w.upload(hw);
    bias.upload(hb);
    want.assign(y.n, 0.f);
    cpu::conv2d(s, hx.data(), hw.data(), hb.data(), nullptr, Act::relu6, want.data());
  }
  Conv args() const { return {s, x.p, w.p, bias.p, int(Act::relu6), y.p}; }
  std::string shape() const {
    return std::to_string(s.n) + "x" + std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + "x" +
           std::to_string(s.in_c) + " -> " + std::to_string(s.out_c) + " k" +
           std::to_string(s.k_h) + " s" + std::to_string(s.stride_h);
  }
  double bytes() const { return 4.0 * double(x.n + w.n + y.n); }
  void poison() const { y.poison(); }
  double error() const { return ladder::max_error(y.download(), want); }
};

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a thread an output element, output channels fastest",
       [](const Problem& p) {
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(int64_t(p.y.n), 256)), dim3(256), 0, nullptr,
                      stem_thread_per_output)
         (p.args());
         CUDA_CHECK_LAUNCH("stem_thread_per_output", p.shape());
       }},
      {"implicit GEMM: im2col tiles gathered into shared memory (any KxK conv)",
       [](const Problem& p) {
         cuda::conv_implicit_gemm(p.s, p.x.p, p.w.p, p.bias.p, nullptr, Act::relu6, p.y.p, nullptr);
       }},
      {"a thread a pixel and 8 channels, weights in shared memory (today's cuda::conv2d)",
       [](const Problem& p) {
         cuda::conv2d(p.s, p.x.p, p.w.p, p.bias.p, nullptr, Act::relu6, p.y.p, nullptr);
       }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_stem";
  try {
    if (!ladder::have_device(name)) return 0;
    // EfficientNet-Lite0's stem at batch 32 (224x224x3 -> 112x112x32, 71 MB moved); emulated, one
    // 32x32 image. Checked also: an odd image size, ResNet's 7x7 stem, one input channel, and 20
    // output channels (not a multiple of 8: today's dispatcher takes the implicit GEMM there).
    const Problem timed(
        Problem::same(ladder::kEmulated ? 1 : 32, ladder::kEmulated ? 32 : 224, 3, 32, 3, 2), 1);
    const Problem odd(Problem::same(2, 37, 3, 32, 3, 2), 2),
        resnet(Problem::symmetric(1, 29, 3, 64, 7, 2, 3), 3),
        gray(Problem::same(1, 19, 1, 16, 5, 1), 4), twenty(Problem::same(1, 17, 3, 20, 3, 2), 5);
    return ladder::run<Problem>(name, versions(), 1e-5, timed, {&odd, &resnet, &gray, &twenty},
                                argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
