// The depthwise-conv ladder: each output channel convolves its own input channel (groups == in_c
// == out_c), k_h*k_w FMAs an output, so the op is memory-bound. From a thread an output to today's
// kernel (kernels/cuda/conv_depthwise.cu), each version checked against the CPU twin
// (cpu::conv2d) and timed against a copy's bandwidth. bench/worklog-cuda-conv.md has the
// predictions and figures.
//
//   ladder_depthwise [VERSION]
//
// Every version sums an output's taps kernel row by row, column by column, with fmaf from 0, then
// bias, residual, activation: the order of the twin.
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

struct Dw {
  ConvShape s;
  const float *x, *w, *bias, *residual;
  int act;
  float* y;
};

// v1: a thread an output element, channels fastest so a warp's loads are 32 neighbouring
// channels of one pixel (128 contiguous bytes); each input is read k_h*k_w times, from L1 or L2.
__global__ void dw_thread_per_output(Dw d) {
  const ConvShape& s = d.s;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(s.n) * s.out_h * s.out_w * s.out_c) return;
  const int ch = int(i % s.out_c);
  const int64_t pix = i / s.out_c;
  const int ox = int(pix % s.out_w), oy = int(pix / s.out_w % s.out_h),
            b = int(pix / s.out_w / s.out_h);
  float acc = 0.f;
  for (int ky = 0; ky < s.k_h; ++ky) {
    const int iy = oy * s.stride_h - s.pad_top + ky;
    if (iy < 0 || iy >= s.in_h) continue;
    for (int kx = 0; kx < s.k_w; ++kx) {
      const int ix = ox * s.stride_w - s.pad_left + kx;
      if (ix < 0 || ix >= s.in_w) continue;
      acc = fmaf(d.x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + ch],
                 d.w[(ky * s.k_w + kx) * s.out_c + ch], acc);
    }
  }
  if (d.bias) acc += d.bias[ch];
  if (d.residual) acc += d.residual[i];
  d.y[i] = cuda::apply_act(acc, d.act);
}

// v2: a thread a float4 of channels of one output pixel: 16-byte loads and stores, a quarter of
// the threads and of the load instructions (c % 4 == 0 and aligned tensors; the shapes that are
// not take version 1's kernel).
__global__ void dw_float4_per_output(Dw d) {
  const ConvShape& s = d.s;
  const int c4 = s.out_c / 4;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(s.n) * s.out_h * s.out_w * c4) return;
  const int ch = int(i % c4) * 4;
  const int64_t pix = i / c4;
  const int ox = int(pix % s.out_w), oy = int(pix / s.out_w % s.out_h),
            b = int(pix / s.out_w / s.out_h);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int ky = 0; ky < s.k_h; ++ky) {
    const int iy = oy * s.stride_h - s.pad_top + ky;
    if (iy < 0 || iy >= s.in_h) continue;
    for (int kx = 0; kx < s.k_w; ++kx) {
      const int ix = ox * s.stride_w - s.pad_left + kx;
      if (ix < 0 || ix >= s.in_w) continue;
      const float4 xv = *reinterpret_cast<const float4*>(
          d.x + ((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + ch);
      const float4 wv = *reinterpret_cast<const float4*>(d.w + (ky * s.k_w + kx) * s.out_c + ch);
      acc.x = fmaf(xv.x, wv.x, acc.x);
      acc.y = fmaf(xv.y, wv.y, acc.y);
      acc.z = fmaf(xv.z, wv.z, acc.z);
      acc.w = fmaf(xv.w, wv.w, acc.w);
    }
  }
  float v[4] = {acc.x, acc.y, acc.z, acc.w};
  for (int j = 0; j < 4; ++j) {
    if (d.bias) v[j] += d.bias[ch + j];
    if (d.residual) v[j] += d.residual[pix * s.out_c + ch + j];
    v[j] = cuda::apply_act(v[j], d.act);
  }
  *reinterpret_cast<float4*>(d.y + pix * s.out_c + ch) = make_float4(v[0], v[1], v[2], v[3]);
}

// One shape: random input, weights, bias and residual, the output, and the CPU twin's answer.
struct Problem {
  ConvShape s;
  bool with_residual;
  Act act;
  ladder::DeviceArray<float> x, w, bias, residual, y;
  std::vector<float> want;

  // TensorFlow's SAME padding (Lite0's): out = ceil(in / stride), the extra row and column after.
  static ConvShape same(int n, int h, int c, int k, int stride) {
    const int out = (h + stride - 1) / stride;
    const int pad = std::max(0, (out - 1) * stride + k - h);
    return ConvShape{n, h, h, c, out, out, c, k, k, stride, stride, pad / 2, pad / 2, c};
  }

  Problem(const ConvShape& shape, bool res, Act a, uint32_t seed)
      : s(shape),
        with_residual(res),
        act(a),
        x(size_t(s.n) * s.in_h * s.in_w * s.in_c),
        w(size_t(s.k_h) * s.k_w * s.out_c),
        bias(s.out_c),
        residual(res ? size_t(s.n) * s.out_h * s.out_w * s.out_c : 0),
        y(size_t(s.n) * s.out_h * s.out_w * s.out_c) {
    const std::vector<float> hx = ladder::random_floats(x.n, seed);
    const std::vector<float> hw = ladder::random_floats(w.n, seed + 1);
    const std::vector<float> hb = ladder::random_floats(bias.n, seed + 2);
    const std::vector<float> hr = ladder::random_floats(residual.n, seed + 3);
    x.upload(hx);
    w.upload(hw);
    bias.upload(hb);
    if (res) residual.upload(hr);
    want.assign(y.n, 0.f);
    cpu::conv2d(s, hx.data(), hw.data(), hb.data(), res ? hr.data() : nullptr, act, want.data());
  }
  Dw args() const {
    return {s, x.p, w.p, bias.p, with_residual ? residual.p : nullptr, int(act), y.p};
  }
  std::string shape() const {
    return std::to_string(s.n) + "x" + std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + "x" +
           std::to_string(s.in_c) + " k" + std::to_string(s.k_h) + " s" +
           std::to_string(s.stride_h);
  }
  double bytes() const { return 4.0 * double(x.n + w.n + y.n + residual.n); }
  void poison() const { y.poison(); }
  double error() const { return ladder::max_error(y.download(), want); }
};

void launch_per_output(const Problem& p) {
  const Dw d = p.args();
  GRAFT_LAUNCH(unsigned(cuda::ceil_div(int64_t(p.y.n), 256)), dim3(256), 0, nullptr,
               dw_thread_per_output)
  (d);
  CUDA_CHECK_LAUNCH("dw_thread_per_output", p.shape());
}

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a thread an output element, channels fastest", launch_per_output},
      {"a thread a float4 of channels of an output pixel: 16-byte accesses",
       [](const Problem& p) {
         if (p.s.out_c % 4) return launch_per_output(p);  // every pointer here is 256-aligned
         const Dw d = p.args();
         GRAFT_LAUNCH(unsigned(cuda::ceil_div(int64_t(p.y.n / 4), 256)), dim3(256), 0, nullptr,
                      dw_float4_per_output)
         (d);
         CUDA_CHECK_LAUNCH("dw_float4_per_output", p.shape());
       }},
      {"4 pixels a thread share inputs in registers, weights in shared memory (today's)",
       [](const Problem& p) {
         cuda::conv_depthwise(p.s, p.x.p, p.w.p, p.bias.p, p.with_residual ? p.residual.p : nullptr,
                              p.act, p.y.p, nullptr);
       }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_depthwise";
  try {
    if (!ladder::have_device(name)) return 0;
    // Lite0's 56x56 3x3 depthwise (144 channels) at batch 32, 116 MB moved; emulated, one image
    // at 14x14. Checked also: Lite0's 5x5 stride 2 (SAME padding, one extra row and column after),
    // 37 channels (the kernels' paths for c % 4 != 0) with a residual, and a 7x7 kernel.
    const Problem timed(
        Problem::same(ladder::kEmulated ? 1 : 32, ladder::kEmulated ? 14 : 56, 144, 3, 1), false,
        Act::relu6, 1);
    const Problem strided(Problem::same(2, 15, 40, 5, 2), false, Act::relu6, 2),
        odd(Problem::same(1, 9, 37, 3, 1), true, Act::relu, 3),
        wide(Problem::same(1, 11, 16, 7, 1), false, Act::none, 4);
    return ladder::run<Problem>(name, versions(), 1e-5, timed, {&strided, &odd, &wide}, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
