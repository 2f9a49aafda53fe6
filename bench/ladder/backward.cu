// The backward ladders: the gradients training needs beyond the forward's kernels, each family
// from its plain version to today's (kernels/cuda/conv_backward_*.cu, backward_misc.cu):
//   depthwise dx    a thread a dx element gathering from its outputs -> float4 channels x 4
//                   input pixels a thread, weights in shared memory
//   depthwise dw    a thread a weight walking every pixel -> per-chunk partials of float4
//                   accumulators with a fixed tree, then the chunks added in order
//   pointwise dw    gemm.cuh's big tiles, split over pixels -> tiles sized to narrow layers
//   bias_grad       a thread a column walking every row -> fixed chunks, then added in order
// Each version is checked against the CPU twin (cpu::conv2d_backward_data / _filter, bias_grad)
// and timed. No atomics anywhere: every version repeats bit for bit. bench/worklog-cuda-backward.md
// has the predictions and figures.
//
//   ladder_backward [VERSION]     (the four ladders in turn; VERSION picks that version of each)
#include <algorithm>
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

enum class Grad { depthwise_dx, depthwise_dw, pointwise_dw, bias };

const char* grad_name(Grad g) {
  switch (g) {
    case Grad::depthwise_dx:
      return "ladder_backward (depthwise dx)";
    case Grad::depthwise_dw:
      return "ladder_backward (depthwise dw)";
    case Grad::pointwise_dw:
      return "ladder_backward (pointwise dw)";
    default:
      return "ladder_backward (bias_grad)";
  }
}

// TensorFlow's SAME padding: out = ceil(in / stride), the extra row and column after.
ConvShape same(int n, int h, int in_c, int out_c, int k, int stride, int groups) {
  const int out = (h + stride - 1) / stride;
  const int pad = std::max(0, (out - 1) * stride + k - h);
  return ConvShape{n, h, h, in_c, out, out, out_c, k, k, stride, stride, pad / 2, pad / 2, groups};
}
ConvShape depthwise(int n, int h, int c, int k, int stride) {
  return same(n, h, c, c, k, stride, c);
}
ConvShape pointwise(int n, int h, int in_c, int out_c) {
  return same(n, h, in_c, out_c, 1, 1, 1);
}

// One shape of one gradient: random x, dy and w, the gradient's buffer, a workspace as large as
// any version needs, and the CPU twin's answer. For bias_grad the rows are the output pixels and
// the columns its channels.
struct Problem {
  Grad g;
  ConvShape s;
  ladder::DeviceArray<float> x, dy, w, out;
  ladder::DeviceArray<char> workspace;
  std::vector<float> want;

  static size_t out_count(Grad g, const ConvShape& s) {
    if (g == Grad::depthwise_dx) return size_t(s.n) * s.in_h * s.in_w * s.in_c;
    if (g == Grad::bias) return size_t(s.out_c);
    return size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
  }
  static size_t workspace_bytes(Grad g, const ConvShape& s) {
    const int64_t rows = int64_t(s.n) * s.out_h * s.out_w;
    switch (g) {
      case Grad::depthwise_dw:
        return cuda::conv_bwd_filter_depthwise_v2_workspace(s);
      case Grad::pointwise_dw:
        return std::max(cuda::conv_bwd_filter_pointwise_v1_workspace(s),
                        cuda::conv_bwd_filter_pointwise_workspace(s));
      case Grad::bias:
        return cuda::bias_grad_v2_workspace(rows, s.out_c);
      default:
        return 0;
    }
  }

  Problem(Grad grad, const ConvShape& shape, uint32_t seed)
      : g(grad),
        s(shape),
        x(size_t(s.n) * s.in_h * s.in_w * s.in_c),
        dy(size_t(s.n) * s.out_h * s.out_w * s.out_c),
        w(size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c),
        out(out_count(grad, shape)),
        workspace(workspace_bytes(grad, shape)) {
    const std::vector<float> hx = ladder::random_floats(x.n, seed);
    const std::vector<float> hdy = ladder::random_floats(dy.n, seed + 1);
    const std::vector<float> hw = ladder::random_floats(w.n, seed + 2);
    x.upload(hx);
    dy.upload(hdy);
    w.upload(hw);
    want.assign(out.n, 0.f);
    if (g == Grad::depthwise_dx)
      cpu::conv2d_backward_data(s, hdy.data(), hw.data(), want.data());
    else if (g == Grad::bias)
      cpu::bias_grad(rows(), s.out_c, hdy.data(), want.data());
    else
      cpu::conv2d_backward_filter(s, hx.data(), hdy.data(), want.data());
  }
  int64_t rows() const { return int64_t(s.n) * s.out_h * s.out_w; }
  std::string shape() const {
    return std::to_string(s.n) + "x" + std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + "x" +
           std::to_string(s.in_c) + " -> " + std::to_string(s.out_c) + " k" +
           std::to_string(s.k_h) + " s" + std::to_string(s.stride_h);
  }
  double bytes() const {  // what the gradient must read and write at least
    switch (g) {
      case Grad::depthwise_dx:
        return 4.0 * double(dy.n + w.n + out.n);
      case Grad::bias:
        return 4.0 * double(dy.n + out.n);
      default:
        return 4.0 * double(x.n + dy.n + out.n);
    }
  }
  void poison() const { out.poison(); }
  double error() const { return ladder::max_error(out.download(), want); }
};

std::vector<ladder::Version<Problem>> versions(Grad g) {
  using P = const Problem&;
  switch (g) {
    case Grad::depthwise_dx:
      return {
          {"a thread a dx element, gathering from the outputs that read it",
           [](P p) { cuda::conv_bwd_data_depthwise_v1(p.s, p.dy.p, p.w.p, p.out.p, nullptr); }},
          {"float4 channels x 4 input pixels a thread, weights in shared memory (today's)",
           [](P p) { cuda::conv2d_backward_data(p.s, p.dy.p, p.w.p, p.out.p, nullptr); }},
      };
    case Grad::depthwise_dw:
      return {
          {"a thread a weight, walking every output pixel in order",
           [](P p) { cuda::conv_bwd_filter_depthwise_v1(p.s, p.x.p, p.dy.p, p.out.p, nullptr); }},
          {"chunks of rows x channel quads, taps in registers, partials added in order (today's)",
           [](P p) {
             cuda::conv2d_backward_filter(p.s, p.x.p, p.dy.p, p.out.p, p.workspace.p, p.workspace.n,
                                          nullptr);
           }},
      };
    case Grad::pointwise_dw:
      return {
          {"gemm.cuh's 128-wide tiles over (in_c, out_c), the pixels split into chunks",
           [](P p) {
             cuda::conv_bwd_filter_pointwise_v1(p.s, p.x.p, p.dy.p, p.out.p, p.workspace.p,
                                                p.workspace.n, nullptr);
           }},
          {"tiles sized to narrow layers, thread groups over pixels (today's)",
           [](P p) {
             cuda::conv2d_backward_filter(p.s, p.x.p, p.dy.p, p.out.p, p.workspace.p, p.workspace.n,
                                          nullptr);
           }},
      };
    default:
      return {
          {"a thread a column, walking every row",
           [](P p) { cuda::bias_grad_v1(p.rows(), p.s.out_c, p.dy.p, p.out.p, nullptr); }},
          {"fixed chunks of rows, a tree in each block, chunks added in order (today's)",
           [](P p) {
             cuda::bias_grad(p.rows(), p.s.out_c, p.dy.p, p.out.p, p.workspace.p, p.workspace.n,
                             nullptr);
           }},
      };
  }
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_backward";
  try {
    if (!ladder::have_device(name)) return 0;
    // Timed on Lite0's 56x56 layers at batch 32 (3x3 depthwise on 144 channels; the 144 -> 24
    // projection and its bias); emulated, one image at 14x14. Checked also:
    // 5x5 stride 2 with SAME padding, channels not a multiple of 4 (today's kernels' fallbacks),
    // odd pointwise widths, and a few rows of many columns.
    const int n = ladder::kEmulated ? 1 : 32, h = ladder::kEmulated ? 14 : 56;
    int failed = 0;
    for (Grad g : {Grad::depthwise_dx, Grad::depthwise_dw, Grad::pointwise_dw, Grad::bias}) {
      const bool dw = g == Grad::depthwise_dx || g == Grad::depthwise_dw;
      const Problem timed(g, dw ? depthwise(n, h, 144, 3, 1) : pointwise(n, h, 144, 24), 1);
      const Problem a(g, dw ? depthwise(2, 15, 40, 5, 2) : pointwise(2, 7, 19, 37), 2);
      const Problem b(g, dw ? depthwise(1, 9, 37, 3, 1) : pointwise(1, 3, 8, 200), 3);
      failed |= ladder::run<Problem>(grad_name(g), versions(g), 1e-5, timed, {&a, &b}, argc, argv);
    }
    return failed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
