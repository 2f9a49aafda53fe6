// CUDA kernels (graft::cuda) against their CPU twins (graft::cpu) on fresh random inputs of awkward
// sizes, outputs poisoned with NaN before every launch so an unwritten element fails the check.
// Where cuDNN / cuBLAS are linked, the hand conv and GEMMs are also checked against them (fp32, no
// TF32). Without a GPU every test here skips with the reason; GRAFT_REQUIRE_GPU=1 turns the skip
// into a failure. The argument-validation tests need no GPU and always run.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if GRAFT_HAVE_CUBLAS
#include <cublas_v2.h>
#endif
#if GRAFT_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "kernels/cuda/conv_internal.cuh"
#include "kernels/cuda/pool_internal.cuh"
#include "kernels/ops.h"
#include "tests/conv_shapes.h"
#include "tests/cuda_test_util.h"

namespace graft {
namespace {

using test::conv_pad;
using test::conv_same;
using test::depthwise;
using test::DeviceBuffer;
using test::pointwise;
using test::pool_pad;
using test::random_floats;
using test::w_size;
using test::x_size;
using test::y_size;

constexpr double kTol = 1e-5;

// Each test gets its own stream (test::CudaStreamTest), created after the device probe.
using CudaOps = test::CudaStreamTest;

using ConvFn = void (*)(const ConvShape&, const float*, const float*, const float*, const float*,
                        Act, float*, cudaStream_t);

struct ConvCase {
  ConvShape s;
  bool bias, residual;
  Act act;
};

const char* act_name(Act a) {
  return a == Act::relu ? "relu" : a == Act::relu6 ? "relu6" : "none";
}

// Fresh inputs, CPU twin, poisoned device output, compare. `misalign` shifts every device pointer
// by one float so the float4 paths must fall back.
void check_conv(ConvFn fn, const char* fn_name, const ConvCase& c, cudaStream_t stream,
                uint32_t seed, bool misalign = false) {
  std::mt19937 rng(seed);
  const ConvShape& s = c.s;
  const auto x = random_floats(x_size(s), rng);
  const auto w = random_floats(w_size(s), rng);
  const auto b = random_floats(size_t(s.out_c), rng);
  // Residuals scaled up so the relu6 clamp is exercised at both ends.
  const auto r = random_floats(y_size(s), rng, -4.f, 8.f);
  std::vector<float> want(y_size(s));
  cpu::conv2d(s, x.data(), w.data(), c.bias ? b.data() : nullptr, c.residual ? r.data() : nullptr,
              c.act, want.data());

  const size_t off = misalign ? 1 : 0;
  DeviceBuffer<float> dx(x, off), dw(w, off), db(b, off), dr(r, off), dy(y_size(s), off);
  dy.poison();
  fn(s, dx.get(), dw.get(), c.bias ? db.get() : nullptr, c.residual ? dr.get() : nullptr, c.act,
     dy.get(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::string what = std::string(fn_name) + " " + conv_shape_str(s) +
                           (c.bias ? " +bias" : "") + (c.residual ? " +residual" : "") +
                           " act=" + act_name(c.act) + (misalign ? " misaligned" : "");
  GRAFT_EXPECT_CLOSE(dy.download(), want, kTol, what);
}

// Cycles the epilogue options over a list of shapes so each shape sees a different combination.
std::vector<ConvCase> with_epilogues(const std::vector<ConvShape>& shapes) {
  std::vector<ConvCase> cases;
  const Act acts[] = {Act::none, Act::relu, Act::relu6};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const ConvShape& s = shapes[i];
    if (test::skip_in_small_run(x_size(s) + y_size(s) + w_size(s))) continue;
    cases.push_back({s, i % 2 == 0, i % 3 != 1, acts[i % 3]});
  }
  return cases;
}

// EfficientNet-Lite0 at batch 1 (the shapes the engine runs), plus ragged GEMM sizes.
std::vector<ConvShape> pointwise_shapes() {
  return {
      pointwise(1, 40, 25, 53, 77),    // M=1000 N=77 K=53: nothing a multiple of 4 or a tile
      pointwise(1, 40, 25, 52, 76),    // float4 path with ragged tiles
      pointwise(3, 7, 11, 3, 5),       // tiny channels, batch 3
      pointwise(3, 13, 9, 37, 144),    // odd K, N a multiple of 16
      pointwise(1, 13, 9, 1, 1),       // K = N = 1
      pointwise(1, 112, 112, 32, 16),  // block 1 project
      pointwise(1, 112, 112, 16, 96),  // block 2 expand
      pointwise(1, 56, 56, 96, 24),    // block 2 project
      pointwise(1, 56, 56, 24, 144),   // block 3 expand
      pointwise(2, 28, 28, 40, 240),   // block 4 expand, batch 2
      pointwise(2, 14, 14, 80, 480),  pointwise(2, 14, 14, 672, 112),
      pointwise(2, 7, 7, 1152, 192),  pointwise(3, 7, 7, 320, 1280),  // head
  };
}

TEST_F(CudaOps, ConvPointwiseV1MatchesCpu) {
  uint32_t seed = 100;
  for (const ConvCase& c : with_epilogues(pointwise_shapes()))
    check_conv(cuda::conv_pointwise_v1, "conv_pointwise_v1", c, stream_, seed++);
}

TEST_F(CudaOps, ConvPointwiseV2MatchesCpu) {
  uint32_t seed = 200;
  for (const ConvCase& c : with_epilogues(pointwise_shapes()))
    check_conv(cuda::conv_pointwise_v2, "conv_pointwise_v2", c, stream_, seed++);
  // Scalar fallback forced by misaligned pointers on a shape that would take the float4 path.
  check_conv(cuda::conv_pointwise_v2, "conv_pointwise_v2",
             {pointwise(1, 40, 25, 52, 76), true, true, Act::relu6}, stream_, seed++, true);
}

TEST_F(CudaOps, ConvDispatchMatchesCpu) {
  uint32_t seed = 300;
  std::vector<ConvShape> shapes = pointwise_shapes();
  const std::vector<ConvShape> more = {
      conv_same(1, 224, 224, 3, 32, 3, 2),  // EfficientNet stem, SAME (0 before, 1 after)
      conv_same(3, 13, 9, 3, 16, 3, 2),     // stem-like, odd spatial, batch 3
      conv_pad(1, 29, 31, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3),     // ResNet stem
      conv_pad(2, 14, 14, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1),    // ResNet 3x3
      conv_pad(3, 7, 11, 37, 19, 3, 3, 1, 1, 0, 2, 1, 1),     // asymmetric padding, odd channels
      conv_pad(1, 13, 9, 24, 40, 1, 1, 2, 2, 0, 0, 0, 0),     // strided 1x1 (general path)
      conv_pad(1, 13, 9, 8, 12, 3, 3, 1, 1, 1, 1, 1, 1, 2),   // grouped, scalar
      conv_pad(2, 9, 13, 16, 32, 3, 3, 2, 1, 1, 1, 1, 1, 4),  // grouped, float4
      conv_pad(2, 9, 9, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1, 6),    // depthwise x2 multiplier
      conv_same(1, 11, 7, 20, 24, 5, 2),                      // 5x5 SAME stride 2
      conv_same(3, 7, 11, 37, 37, 3, 1, 37),                  // depthwise (dispatch)
      conv_same(1, 56, 56, 144, 144, 5, 2, 144),              // depthwise EfficientNet
  };
  shapes.insert(shapes.end(), more.begin(), more.end());
  for (const ConvCase& c : with_epilogues(shapes))
    check_conv(cuda::conv2d, "conv2d", c, stream_, seed++);
}

TEST_F(CudaOps, ConvImplicitGemmMatchesCpu) {
  uint32_t seed = 400;
  const std::vector<ConvShape> shapes = {
      conv_same(1, 224, 224, 3, 32, 3, 2),
      conv_same(3, 13, 9, 3, 16, 3, 2),
      conv_pad(1, 29, 31, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3),
      conv_pad(2, 14, 14, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1),
      conv_pad(2, 9, 7, 64, 72, 3, 3, 2, 2, 2, 0, 0, 2),  // padding only before/only after
      conv_pad(3, 7, 11, 37, 19, 3, 3, 1, 1, 0, 2, 1, 1),
      conv_pad(1, 13, 9, 24, 40, 1, 1, 2, 2, 0, 0, 0, 0),
      conv_pad(1, 13, 9, 8, 12, 3, 3, 1, 1, 1, 1, 1, 1, 2),
      conv_pad(2, 9, 13, 16, 32, 3, 3, 2, 1, 1, 1, 1, 1, 4),
      conv_pad(2, 9, 9, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1, 6),
      conv_same(1, 11, 7, 20, 24, 5, 2),
      pointwise(1, 40, 25, 53, 77),  // pointwise through the general path
      pointwise(1, 40, 25, 52, 76),
      conv_same(3, 7, 11, 16, 16, 3, 1, 16),            // depthwise through the general path
      conv_pad(1, 6, 5, 4, 8, 9, 9, 1, 1, 4, 4, 4, 4),  // kernel larger than the image
  };
  for (const ConvCase& c : with_epilogues(shapes))
    check_conv(cuda::conv_implicit_gemm, "conv_implicit_gemm", c, stream_, seed++);
  check_conv(cuda::conv_implicit_gemm, "conv_implicit_gemm",
             {conv_pad(2, 14, 14, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1), true, true, Act::relu}, stream_,
             seed++, true);
}

TEST_F(CudaOps, ConvSmallCinMatchesCpu) {
  uint32_t seed = 450;
  const std::vector<ConvShape> shapes = {
      conv_same(1, 224, 224, 3, 32, 3, 2),                 // EfficientNet stem
      conv_same(3, 13, 9, 3, 16, 3, 2),                    // 2 threads per pixel, odd image
      conv_pad(1, 29, 31, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3),  // ResNet stem (37 KB of weights)
      conv_pad(2, 9, 7, 1, 8, 3, 3, 1, 1, 2, 0, 0, 2),     // 1 channel, one thread per pixel
      conv_pad(2, 11, 6, 2, 40, 5, 3, 2, 1, 1, 2, 0, 1),   // 2 channels, 5 per pixel, asymmetric
      conv_pad(1, 10, 13, 4, 24, 3, 3, 1, 2, 1, 1, 1, 1),  // 4 channels, mixed strides
      conv_pad(1, 6, 5, 3, 8, 9, 9, 1, 1, 4, 4, 4, 4),     // kernel larger than the image
      conv_same(1, 5, 4, 3, 16, 1, 1),                     // 1x1 with 3 channels
  };
  for (const ConvCase& c : with_epilogues(shapes)) {
    ASSERT_TRUE(cuda::conv_small_cin_fits(c.s, nullptr, nullptr, nullptr, nullptr, nullptr))
        << conv_shape_str(c.s);
    check_conv(cuda::conv_small_cin, "conv_small_cin", c, stream_, seed++);
  }
  // Shapes and pointers it does not take: conv2d falls back to the implicit GEMM, the direct call
  // says why.
  const ConvShape odd_out = conv_same(1, 9, 9, 3, 12, 3, 2);  // out_c % 8 != 0
  const ConvShape wide_in = conv_same(1, 9, 9, 5, 16, 3, 2);  // 5 input channels
  for (const ConvShape& s : {odd_out, wide_in}) {
    EXPECT_FALSE(cuda::conv_small_cin_fits(s, nullptr, nullptr, nullptr, nullptr, nullptr));
    EXPECT_THROW(
        cuda::conv_small_cin(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, stream_),
        std::invalid_argument);
    check_conv(cuda::conv2d, "conv2d", {s, true, true, Act::relu6}, stream_, seed++);
  }
  check_conv(cuda::conv2d, "conv2d", {conv_same(2, 17, 15, 3, 32, 3, 2), true, true, Act::relu6},
             stream_, seed++, true);  // misaligned: the implicit GEMM's scalar path
}

TEST_F(CudaOps, ConvDepthwiseMatchesCpu) {
  uint32_t seed = 500;
  const std::vector<ConvShape> shapes = {
      conv_same(3, 7, 11, 37, 37, 3, 1, 37),  // c=37: generic path
      conv_same(1, 13, 9, 37, 37, 5, 2, 37),
      conv_same(2, 56, 56, 144, 144, 3, 1, 144),  // float4 path, EfficientNet shapes
      conv_same(2, 56, 56, 144, 144, 5, 2, 144),
      conv_same(1, 112, 112, 32, 32, 3, 1, 32),
      conv_same(1, 112, 112, 96, 96, 3, 2, 96),
      conv_same(2, 14, 14, 672, 672, 5, 2, 672),
      conv_same(2, 7, 7, 1152, 1152, 5, 1, 1152),
      conv_same(2, 7, 7, 1152, 1152, 3, 1, 1152),
      conv_pad(1, 13, 9, 144, 144, 7, 7, 1, 1, 3, 2, 1, 4, 144),  // k7, asymmetric padding
      conv_same(3, 7, 11, 32, 32, 7, 2, 32),
      conv_same(1, 9, 10, 8, 8, 3, 2, 8),                       // 2 float4 lanes per pixel
      conv_pad(1, 9, 10, 4, 4, 3, 3, 1, 1, 0, 0, 0, 0, 4),      // valid padding
      conv_pad(1, 12, 12, 16, 16, 9, 9, 1, 1, 4, 4, 4, 4, 16),  // k9: generic path
      conv_pad(1, 10, 12, 16, 16, 3, 5, 2, 1, 1, 1, 2, 2, 16),  // kh != kw, sh != sw
      // Block widths: 144 -> 18 lanes (above), 240 -> 30, 672 -> 28, 148 (37 quads, prime) -> 32
      // with a ragged last block column.
      conv_same(1, 14, 14, 240, 240, 5, 1, 240),
      conv_same(1, 9, 7, 148, 148, 3, 2, 148),
  };
  for (const ConvCase& c : with_epilogues(shapes))
    check_conv(cuda::conv_depthwise, "conv_depthwise", c, stream_, seed++);
  check_conv(cuda::conv_depthwise, "conv_depthwise",
             {conv_same(2, 14, 14, 144, 144, 5, 1, 144), true, true, Act::relu6}, stream_, seed++,
             true);
}

// ---------------------------------------------------------------------------------------------
// Vendor yardsticks.

#if GRAFT_HAVE_CUDNN
#define CUDNN_TRY(call)                                                                           \
  do {                                                                                            \
    cudnnStatus_t st_ = (call);                                                                   \
    if (st_ != CUDNN_STATUS_SUCCESS) return std::string(#call) + ": " + cudnnGetErrorString(st_); \
  } while (0)

// Runs cuDNN's NHWC fp32 forward conv (no bias/act) for `s`; the asymmetric padding is applied
// explicitly on the host (cuDNN pads symmetrically). Returns an error message, or "" on success.
std::string cudnn_conv(const ConvShape& s, const std::vector<float>& x,
                       const std::vector<float>& w_hwio, std::vector<float>* y_out,
                       std::string* algo_used) {
  // Explicitly padded input: enough rows/cols after to cover the last output's window.
  const int pb = std::max(0, (s.out_h - 1) * s.stride_h + s.k_h - s.in_h - s.pad_top);
  const int pr = std::max(0, (s.out_w - 1) * s.stride_w + s.k_w - s.in_w - s.pad_left);
  const int hp = s.in_h + s.pad_top + pb, wp = s.in_w + s.pad_left + pr;
  std::vector<float> xp(size_t(s.n) * hp * wp * s.in_c, 0.f);
  for (int b = 0; b < s.n; ++b)
    for (int yy = 0; yy < s.in_h; ++yy)
      for (int xx = 0; xx < s.in_w; ++xx)
        std::memcpy(&xp[((size_t(b) * hp + yy + s.pad_top) * wp + xx + s.pad_left) * s.in_c],
                    &x[((size_t(b) * s.in_h + yy) * s.in_w + xx) * s.in_c], sizeof(float) * s.in_c);
  // HWIO [kh][kw][ci][oc] -> KRSC [oc][kh][kw][ci].
  const int cig = s.in_c / s.groups;
  std::vector<float> wk(w_hwio.size());
  for (int ky = 0; ky < s.k_h; ++ky)
    for (int kx = 0; kx < s.k_w; ++kx)
      for (int ci = 0; ci < cig; ++ci)
        for (int oc = 0; oc < s.out_c; ++oc)
          wk[((size_t(oc) * s.k_h + ky) * s.k_w + kx) * cig + ci] =
              w_hwio[((size_t(ky) * s.k_w + kx) * cig + ci) * s.out_c + oc];

  cudnnHandle_t h = nullptr;
  CUDNN_TRY(cudnnCreate(&h));
  struct Guard {
    cudnnHandle_t h;
    cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
    cudnnFilterDescriptor_t wd = nullptr;
    cudnnConvolutionDescriptor_t cd = nullptr;
    ~Guard() {
      if (xd) cudnnDestroyTensorDescriptor(xd);
      if (yd) cudnnDestroyTensorDescriptor(yd);
      if (wd) cudnnDestroyFilterDescriptor(wd);
      if (cd) cudnnDestroyConvolutionDescriptor(cd);
      cudnnDestroy(h);
    }
  } g{h};
  CUDNN_TRY(cudnnCreateTensorDescriptor(&g.xd));
  CUDNN_TRY(cudnnCreateTensorDescriptor(&g.yd));
  CUDNN_TRY(cudnnCreateFilterDescriptor(&g.wd));
  CUDNN_TRY(cudnnCreateConvolutionDescriptor(&g.cd));
  CUDNN_TRY(
      cudnnSetTensor4dDescriptor(g.xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.n, s.in_c, hp, wp));
  CUDNN_TRY(cudnnSetFilter4dDescriptor(g.wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s.out_c, cig,
                                       s.k_h, s.k_w));
  CUDNN_TRY(cudnnSetConvolution2dDescriptor(g.cd, 0, 0, s.stride_h, s.stride_w, 1, 1,
                                            CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_TRY(cudnnSetConvolutionGroupCount(g.cd, s.groups));
  CUDNN_TRY(cudnnSetConvolutionMathType(g.cd, CUDNN_FMA_MATH));  // no TF32
  int on = 0, oc = 0, oh = 0, ow = 0;
  CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(g.cd, g.xd, g.wd, &on, &oc, &oh, &ow));
  if (oh < s.out_h || ow < s.out_w) return "cuDNN output smaller than expected";
  CUDNN_TRY(cudnnSetTensor4dDescriptor(g.yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, on, oc, oh, ow));

  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(
      h, g.xd, g.wd, g.cd, g.yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  // Prefer the plain GEMM-style algorithms (their fp32 error is comparable to ours).
  int pick = -1;
  for (int i = 0; i < returned && pick < 0; ++i) {
    const auto a = perf[i].algo;
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType != CUDNN_TENSOR_OP_MATH &&
        (a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT))
      pick = i;
  }
  if (pick < 0) return "no GEMM-family cuDNN algorithm for this shape";
  const cudnnConvolutionFwdAlgo_t algo = perf[pick].algo;
  *algo_used = std::to_string(int(algo));
  size_t ws_bytes = 0;
  CUDNN_TRY(cudnnGetConvolutionForwardWorkspaceSize(h, g.xd, g.wd, g.cd, g.yd, algo, &ws_bytes));
  DeviceBuffer<float> dx(xp), dw(wk), dy(size_t(on) * oh * ow * oc);
  DeviceBuffer<uint8_t> ws(ws_bytes);
  dy.poison();
  const float one = 1.f, zero = 0.f;
  CUDNN_TRY(cudnnConvolutionForward(h, &one, g.xd, dx.get(), g.wd, dw.get(), g.cd, algo, ws.get(),
                                    ws_bytes, &zero, g.yd, dy.get()));
  const auto full = dy.download();
  // Crop to our output size (cuDNN may produce an extra row/column when the padded input allows).
  y_out->assign(y_size(s), 0.f);
  for (int b = 0; b < s.n; ++b)
    for (int yy = 0; yy < s.out_h; ++yy)
      for (int xx = 0; xx < s.out_w; ++xx)
        std::memcpy(&(*y_out)[((size_t(b) * s.out_h + yy) * s.out_w + xx) * s.out_c],
                    &full[((size_t(b) * oh + yy) * ow + xx) * oc], sizeof(float) * s.out_c);
  return "";
}

TEST_F(CudaOps, ConvMatchesCudnn) {
  const std::vector<ConvShape> shapes = {
      pointwise(1, 40, 25, 53, 77),
      pointwise(1, 56, 56, 24, 144),
      pointwise(2, 7, 7, 320, 1280),
      conv_same(1, 224, 224, 3, 32, 3, 2),
      conv_pad(1, 29, 31, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3),
      conv_pad(3, 7, 11, 37, 19, 3, 3, 1, 1, 0, 2, 1, 1),
      conv_pad(2, 9, 13, 16, 32, 3, 3, 2, 1, 1, 1, 1, 1, 4),
      conv_same(2, 56, 56, 144, 144, 5, 2, 144),
      conv_same(3, 7, 11, 37, 37, 3, 1, 37),
  };
  uint32_t seed = 600;
  int compared = 0;
  for (const ConvShape& s : shapes) {
    std::mt19937 rng(seed++);
    const auto x = random_floats(x_size(s), rng);
    const auto w = random_floats(w_size(s), rng);
    std::vector<float> want;
    std::string algo;
    const std::string err = cudnn_conv(s, x, w, &want, &algo);
    if (!err.empty()) {
      // A shape cuDNN will not run in NHWC fp32 is reported, not failed: the CPU twin already
      // checked our result. Anything else is a failure.
      std::printf("[ cuDNN    ] skipped %s: %s\n", conv_shape_str(s).c_str(), err.c_str());
      continue;
    }
    DeviceBuffer<float> dx(x), dw(w), dy(y_size(s));
    dy.poison();
    cuda::conv2d(s, dx.get(), dw.get(), nullptr, nullptr, Act::none, dy.get(), stream_);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRAFT_EXPECT_CLOSE(dy.download(), want, kTol,
                       "conv2d vs cuDNN algo " + algo + " " + conv_shape_str(s));
    ++compared;
  }
  EXPECT_GT(compared, 0) << "cuDNN ran none of the shapes";
}
#endif  // GRAFT_HAVE_CUDNN

#if GRAFT_HAVE_CUBLAS  // the real CUDA build; the emulated one has no cuBLAS
// Row-major C[M][N] = A[M][K] . op(B) through cuBLAS with pedantic fp32 math (no TF32).
// b_nk: B stored [N][K] (linear weights) instead of [K][N].
std::vector<float> cublas_gemm(int M, int N, int K, const std::vector<float>& a,
                               const std::vector<float>& b, bool b_nk) {
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
  struct G {
    cublasHandle_t h;
    ~G() { cublasDestroy(h); }
  } g{h};
  if (cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error("cublasSetMathMode failed");
  DeviceBuffer<float> da(a), db(b), dc(size_t(M) * N);
  dc.poison();
  const float one = 1.f, zero = 0.f;
  // Column-major view: C^T[N][M] = op(B)^T[N][K] . A^T[K][M].
  const cublasStatus_t st = b_nk ? cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, db.get(),
                                               K, da.get(), K, &zero, dc.get(), N)
                                 : cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one, db.get(),
                                               N, da.get(), K, &zero, dc.get(), N);
  if (st != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasSgemm failed");
  return dc.download();
}

TEST_F(CudaOps, PointwiseAndLinearMatchCublas) {
  uint32_t seed = 700;
  for (const ConvShape& s : {pointwise(1, 40, 25, 53, 77), pointwise(1, 56, 56, 24, 144),
                             pointwise(2, 7, 7, 320, 1280)}) {
    std::mt19937 rng(seed++);
    const auto x = random_floats(x_size(s), rng);
    const auto w = random_floats(w_size(s), rng);
    const int M = s.n * s.in_h * s.in_w;
    const auto want = cublas_gemm(M, s.out_c, s.in_c, x, w, false);
    DeviceBuffer<float> dx(x), dw(w), dy(y_size(s));
    dy.poison();
    cuda::conv_pointwise_v2(s, dx.get(), dw.get(), nullptr, nullptr, Act::none, dy.get(), stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, kTol,
                       "conv_pointwise_v2 vs cuBLAS " + conv_shape_str(s));
  }
  struct L {
    int n, in, out;
  };
  for (const L l : {L{32, 1280, 10}, L{3, 53, 77}, L{256, 1280, 1000}, L{300, 53, 301}}) {
    std::mt19937 rng(seed++);
    const auto x = random_floats(size_t(l.n) * l.in, rng);
    const auto w = random_floats(size_t(l.out) * l.in, rng);
    const auto want = cublas_gemm(l.n, l.out, l.in, x, w, true);
    DeviceBuffer<float> dx(x), dw(w), dy(size_t(l.n) * l.out);
    dy.poison();
    cuda::linear(l.n, l.in, l.out, dx.get(), dw.get(), nullptr, dy.get(), stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, kTol,
                       "linear vs cuBLAS n=" + std::to_string(l.n) + " in=" + std::to_string(l.in) +
                           " out=" + std::to_string(l.out));
  }
}
#endif  // GRAFT_HAVE_CUBLAS

// ---------------------------------------------------------------------------------------------
// Epilogue, pooling.

TEST_F(CudaOps, BiasActMatchesCpu) {
  std::mt19937 rng(800);
  struct C {
    int64_t rows;
    int c;
    bool bias, res;
    Act act;
    bool alias, misalign;
  };
  for (const C t : {C{1, 1, true, false, Act::none, false, false},
                    C{97, 37, true, true, Act::relu6, false, false},
                    C{3 * 7 * 11, 144, true, true, Act::relu, false, false},
                    C{1000, 144, false, true, Act::relu6, true, false},
                    C{1000, 144, true, false, Act::none, false, true},
                    C{5, 1280, true, true, Act::relu, true, false}}) {
    const size_t total = size_t(t.rows) * t.c;
    const auto x = random_floats(total, rng, -4.f, 8.f);
    const auto b = random_floats(size_t(t.c), rng);
    const auto r = random_floats(total, rng);
    std::vector<float> want(total);
    cpu::bias_act(t.rows, t.c, x.data(), t.bias ? b.data() : nullptr, t.res ? r.data() : nullptr,
                  t.act, want.data());
    const size_t off = t.misalign ? 1 : 0;
    DeviceBuffer<float> dx(x, off), db(b, off), dr(r, off), dy(total, off);
    float* out = t.alias ? dx.get() : dy.get();
    if (!t.alias) dy.poison();
    cuda::bias_act(t.rows, t.c, dx.get(), t.bias ? db.get() : nullptr, t.res ? dr.get() : nullptr,
                   t.act, out, stream_);
    GRAFT_EXPECT_CLOSE(t.alias ? dx.download() : dy.download(), want, kTol,
                       "bias_act rows=" + std::to_string(t.rows) + " c=" + std::to_string(t.c));
  }
}

TEST_F(CudaOps, PoolingMatchesCpu) {
  std::mt19937 rng(900);
  struct C {
    PoolShape s;
    bool misalign;  // x and y one float off 16-byte alignment: the scalar path even when c % 4 == 0
  };
  const std::vector<C> cases = {
      {pool_pad(3, 7, 11, 37, 3, 2, 1, 1, 1, 1), false},     // c=37 scalar path
      {pool_pad(1, 13, 9, 64, 3, 2, 0, 1, 1, 0), false},     // asymmetric padding, float4 path
      {pool_pad(2, 112, 112, 64, 3, 2, 1, 1, 1, 1), false},  // ResNet max pool
      {pool_pad(1, 14, 14, 3, 5, 1, 2, 2, 2, 2), false},
      {pool_pad(1, 7, 7, 1280, 7, 1, 0, 0, 0, 0), false},  // global as a window
      {pool_pad(1, 5, 6, 8, 3, 1, 2, 2, 2, 2),
       false},  // windows entirely in the padding at corners
      // 3x3 kernel: stride 1 with borders on every side, odd c, misaligned float4-able c, and
      // more items than one grid covers (grid-stride loop), 2x2 and 3x2 windows on the run-time
      // loop kernel.
      {pool_pad(2, 9, 10, 12, 3, 1, 1, 1, 1, 1), false},
      {pool_pad(1, 17, 15, 5, 3, 2, 1, 1, 1, 1), false},
      {pool_pad(2, 23, 19, 64, 3, 2, 1, 1, 1, 1), true},
      {pool_pad(12, 112, 112, 64, 3, 2, 1, 1, 1, 1), false},
      {pool_pad(2, 12, 13, 16, 2, 2, 0, 0, 0, 1), false},
  };
  std::vector<C> all = cases;
  {
    PoolShape r = pool_pad(2, 11, 12, 8, 3, 2, 1, 1, 1, 1);  // k 3x2: not the 3x3 kernel
    r.k_w = 2;
    r.out_w = conv_out_size(r.in_w, 2, 2, 1, 0);
    all.push_back({r, false});
  }
  for (const C& t : all) {
    const PoolShape& s = t.s;
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.c;
    const size_t ys = size_t(s.n) * s.out_h * s.out_w * s.c;
    const auto x = random_floats(xs, rng);
    DeviceBuffer<float> dx(x, t.misalign ? 1 : 0), dy(ys, t.misalign ? 1 : 0);
    const std::string shape =
        "n=" + std::to_string(s.n) + " " + std::to_string(s.in_h) + "x" + std::to_string(s.in_w) +
        "x" + std::to_string(s.c) + " k=" + std::to_string(s.k_h) + "x" + std::to_string(s.k_w) +
        " s=" + std::to_string(s.stride_h) + (t.misalign ? " misaligned" : "");
    std::vector<float> want(ys);
    cpu::max_pool2d(s, x.data(), want.data());
    dy.poison();
    cuda::max_pool2d(s, dx.get(), dy.get(), stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, 0.0, "max_pool2d " + shape);
    // The kernels add the in-bounds taps in the CPU twin's order: the same float result.
    for (bool count_pad : {false, true}) {
      cpu::avg_pool2d(s, count_pad, x.data(), want.data());
      dy.poison();
      cuda::avg_pool2d(s, count_pad, dx.get(), dy.get(), stream_);
      GRAFT_EXPECT_CLOSE(dy.download(), want, 0.0,
                         "avg_pool2d count_pad=" + std::to_string(count_pad) + " " + shape);
    }
  }
}

TEST_F(CudaOps, GlobalAvgPoolMatchesCpu) {
  std::mt19937 rng(1000);
  struct C {
    int n, hw, c;
    bool misalign;
  };
  // hw walks v2's default ring, 4 slots of 4 pixels (1-3: a partial first batch; 12, 13, 16, 17:
  // around a full ring), and the other rings' boundaries (2, 8, 15, 16, 17, 32 + 1 = 33 for 8x4);
  // n=1024 c=1280 has more (image, float4) items than one grid covers, so threads run several items
  // each. c = 37 or 3 and the misaligned case take the one-channel path. Every version and ring
  // adds in the CPU twin's order: exact.
  for (const C t :
       {C{3, 49, 1280, false}, C{1, 49, 37, false}, C{2, 143, 3, false}, C{5, 1, 8, false},
        C{1, 3136, 144, false}, C{2, 8, 64, false}, C{2, 12, 64, false}, C{3, 15, 20, false},
        C{2, 4, 8, false}, C{2, 3, 12, false}, C{2, 2, 4, false}, C{3, 13, 68, false},
        C{2, 16, 64, false}, C{2, 17, 64, true}, C{2, 17, 64, false}, C{2, 33, 64, false},
        C{1024, 2, 1280, false}, C{260, 49, 1280, false}}) {
    if (test::skip_in_small_run(size_t(t.n) * t.hw * t.c)) continue;
    const auto x = random_floats(size_t(t.n) * t.hw * t.c, rng);
    std::vector<float> want(size_t(t.n) * t.c);
    cpu::global_avg_pool(t.n, t.hw, t.c, x.data(), want.data());
    DeviceBuffer<float> dx(x, t.misalign ? 1 : 0), dy(want.size(), t.misalign ? 1 : 0);
    const std::string shape = "n=" + std::to_string(t.n) + " hw=" + std::to_string(t.hw) +
                              " c=" + std::to_string(t.c) + (t.misalign ? " misaligned" : "");
    dy.poison();
    cuda::global_avg_pool(t.n, t.hw, t.c, dx.get(), dy.get(), stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, 0.0, "global_avg_pool " + shape);
    dy.poison();
    cuda::global_avg_pool_v1(t.n, t.hw, t.c, dx.get(), dy.get(), stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, 0.0, "global_avg_pool_v1 " + shape);
    if (t.c % 4 != 0 || t.misalign) {
      EXPECT_THROW(cuda::global_avg_pool_v2(t.n, t.hw, t.c, dx.get(), dy.get(), stream_, 4, 4),
                   std::invalid_argument);
      continue;
    }
    const std::pair<int, int> rings[] = {{8, 2}, {2, 8}, {8, 4}};  // the 4x4 one is above
    for (const auto& [batch, stages] : rings) {
      dy.poison();
      cuda::global_avg_pool_v2(t.n, t.hw, t.c, dx.get(), dy.get(), stream_, batch, stages);
      GRAFT_EXPECT_CLOSE(dy.download(), want, 0.0,
                         "global_avg_pool_v2 ring " + std::to_string(batch) + "x" +
                             std::to_string(stages) + " " + shape);
    }
  }
  EXPECT_THROW(cuda::global_avg_pool_v2(1, 4, 8, nullptr, nullptr, stream_, 3, 3),
               std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Head: linear, softmax, cross-entropy, dropout.

TEST_F(CudaOps, LinearForwardMatchesCpu) {
  std::mt19937 rng(1100);
  struct C {
    int n, in, out;
    bool bias;
  };
  for (const C t : {C{1, 1280, 5, true}, C{3, 53, 77, true}, C{33, 1280, 1000, false},
                    C{32, 1280, 10, true}, C{256, 1280, 1000, true}, C{7, 1, 1, true},
                    C{300, 53, 301, true}, C{260, 1280, 252, false}}) {  // last two: GEMM path
    if (test::skip_in_small_run(size_t(t.in) * (t.n + t.out))) continue;
    const auto x = random_floats(size_t(t.n) * t.in, rng);
    const auto w = random_floats(size_t(t.out) * t.in, rng);
    const auto b = random_floats(size_t(t.out), rng);
    std::vector<float> want(size_t(t.n) * t.out);
    cpu::linear(t.n, t.in, t.out, x.data(), w.data(), t.bias ? b.data() : nullptr, want.data());
    DeviceBuffer<float> dx(x), dw(w), db(b), dy(want.size());
    dy.poison();
    cuda::linear(t.n, t.in, t.out, dx.get(), dw.get(), t.bias ? db.get() : nullptr, dy.get(),
                 stream_);
    GRAFT_EXPECT_CLOSE(dy.download(), want, kTol,
                       "linear n=" + std::to_string(t.n) + " in=" + std::to_string(t.in) +
                           " out=" + std::to_string(t.out));
  }
}

TEST_F(CudaOps, LinearBackwardMatchesCpu) {
  std::mt19937 rng(1200);
  struct C {
    int n, in, out;
    bool want_dx, want_db;
  };
  for (const C t :
       {C{1, 1280, 5, true, true}, C{3, 53, 77, true, true}, C{33, 1280, 1000, false, true},
        C{32, 1280, 10, true, false}, C{256, 1280, 12, true, true}, C{5, 7, 3, true, true}}) {
    if (test::skip_in_small_run(size_t(t.in) * (t.n + t.out))) continue;
    const auto x = random_floats(size_t(t.n) * t.in, rng);
    const auto w = random_floats(size_t(t.out) * t.in, rng);
    const auto dy = random_floats(size_t(t.n) * t.out, rng);
    std::vector<float> dx(size_t(t.n) * t.in), dw(size_t(t.out) * t.in), db(size_t(t.out));
    cpu::linear_backward(t.n, t.in, t.out, x.data(), w.data(), dy.data(),
                         t.want_dx ? dx.data() : nullptr, dw.data(),
                         t.want_db ? db.data() : nullptr);
    DeviceBuffer<float> gx(x), gw(w), gdy(dy), gdx(dx.size()), gdw(dw.size()), gdb(db.size());
    gdx.poison(), gdw.poison(), gdb.poison();  // overwrite semantics: poison must all be replaced
    cuda::linear_backward(t.n, t.in, t.out, gx.get(), gw.get(), gdy.get(),
                          t.want_dx ? gdx.get() : nullptr, gdw.get(),
                          t.want_db ? gdb.get() : nullptr, stream_);
    const std::string shape = "n=" + std::to_string(t.n) + " in=" + std::to_string(t.in) +
                              " out=" + std::to_string(t.out);
    GRAFT_EXPECT_CLOSE(gdw.download(), dw, kTol, "linear_backward dw " + shape);
    if (t.want_dx) GRAFT_EXPECT_CLOSE(gdx.download(), dx, kTol, "linear_backward dx " + shape);
    if (t.want_db) GRAFT_EXPECT_CLOSE(gdb.download(), db, kTol, "linear_backward db " + shape);
    // Determinism: a second run gives the same bits.
    const auto first = gdw.download();
    cuda::linear_backward(t.n, t.in, t.out, gx.get(), gw.get(), gdy.get(), nullptr, gdw.get(),
                          nullptr, stream_);
    EXPECT_EQ(gdw.download(), first) << "linear_backward dw not deterministic " << shape;
  }
}

TEST_F(CudaOps, SoftmaxMatchesCpu) {
  std::mt19937 rng(1300);
  struct C {
    int n, c;
    float scale;
    bool alias;
  };
  for (const C t : {C{3, 1, 1.f, false}, C{65, 7, 1.f, false}, C{3, 1000, 1.f, false},
                    C{9, 1001, 1.f, true}, C{2, 32, 1.f, false}, C{4, 4000, 1.f, false},
                    C{5, 100, 500.f, false}}) {  // logits up to +-500: needs max subtraction
    const auto x = random_floats(size_t(t.n) * t.c, rng, -t.scale, t.scale);
    std::vector<float> want(x.size());
    cpu::softmax(t.n, t.c, x.data(), want.data());
    DeviceBuffer<float> dx(x), dy(x.size());
    dy.poison();
    float* out = t.alias ? dx.get() : dy.get();
    cuda::softmax(t.n, t.c, dx.get(), out, stream_);
    GRAFT_EXPECT_CLOSE(t.alias ? dx.download() : dy.download(), want, kTol,
                       "softmax n=" + std::to_string(t.n) + " c=" + std::to_string(t.c));
  }
}

TEST_F(CudaOps, SoftmaxXentMatchesCpu) {
  std::mt19937 rng(1400);
  struct C {
    int n, c;
    float smoothing, scale;
    bool with_grad;
  };
  for (const C t :
       {C{1, 2, 0.f, 1.f, true}, C{7, 5, 0.1f, 1.f, true}, C{33, 1000, 0.1f, 1.f, true},
        C{3, 1001, 0.f, 1.f, false}, C{4, 3000, 0.2f, 1.f, true}, C{6, 10, 0.1f, 300.f, true}}) {
    const auto x = random_floats(size_t(t.n) * t.c, rng, -t.scale, t.scale);
    std::vector<int32_t> labels(t.n);
    std::uniform_int_distribution<int> ld(0, t.c - 1);
    for (auto& l : labels) l = ld(rng);
    labels[0] = t.c - 1;  // the last class, on the ragged end of a row
    const float gs = 1.f / float(t.n);
    std::vector<float> loss(t.n), dl(x.size());
    cpu::softmax_xent(t.n, t.c, x.data(), labels.data(), t.smoothing, gs, loss.data(),
                      t.with_grad ? dl.data() : nullptr);
    DeviceBuffer<float> dx(x), dloss(loss.size()), ddl(dl.size());
    DeviceBuffer<int32_t> dlab(labels);
    dloss.poison(), ddl.poison();
    cuda::softmax_xent(t.n, t.c, dx.get(), dlab.get(), t.smoothing, gs, dloss.get(),
                       t.with_grad ? ddl.get() : nullptr, stream_);
    const std::string shape = "n=" + std::to_string(t.n) + " c=" + std::to_string(t.c) +
                              " smoothing=" + std::to_string(t.smoothing);
    GRAFT_EXPECT_CLOSE(dloss.download(), loss, kTol, "softmax_xent loss " + shape);
    if (t.with_grad) GRAFT_EXPECT_CLOSE(ddl.download(), dl, kTol, "softmax_xent dlogits " + shape);
  }
}

TEST_F(CudaOps, DropoutBitIdenticalToCpu) {
  std::mt19937 rng(1500);
  struct C {
    int64_t count;
    float p;
    uint64_t seed, base;
    bool alias, misalign;
  };
  for (const C t : {C{1, 0.5f, 1, 0, false, false}, C{1001, 0.1f, 42, 0, false, false},
                    C{4097, 0.5f, 7, 3, false, false},
                    C{100003, 0.2f, 0x1234567890abcdefull, (1ull << 33) + 5, false, false},
                    C{65536, 0.f, 9, 8, true, false}, C{12345, 0.9f, 11, 4, false, true},
                    C{3, 0.5f, 5, 2, false, false}}) {
    auto x = random_floats(size_t(t.count), rng);
    std::vector<float> want(x.size());
    cpu::dropout(t.count, t.p, t.seed, t.base, x.data(), want.data());
    const size_t off = t.misalign ? 1 : 0;
    DeviceBuffer<float> dx(x, off), dy(x.size(), off);
    dy.poison();
    float* out = t.alias ? dx.get() : dy.get();
    cuda::dropout(t.count, t.p, t.seed, t.base, dx.get(), out, stream_);
    const auto got = t.alias ? dx.download() : dy.download();
    int64_t mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) ++mismatches;
    EXPECT_EQ(mismatches, 0) << "dropout count=" << t.count << " p=" << t.p << " base=" << t.base;
  }
}

// ---------------------------------------------------------------------------------------------
// Input, optimisers, metrics.

TEST_F(CudaOps, NormalizeU8BitIdenticalToCpu) {
  std::mt19937 rng(1600);
  std::uniform_int_distribution<int> byte(0, 255);
  struct C {
    int64_t pixels;
    int c;
    bool misalign;     // x one byte off: the scalar path
    size_t x_off = 0;  // x offset in bytes (4: the vector path, which needs 4-byte alignment)
    size_t y_off = 0;  // y offset in floats (1: not 16-byte aligned, the scalar path)
  };
  const float mean[4] = {0.485f, 0.456f, 0.406f, 0.5f}, sd[4] = {0.229f, 0.224f, 0.225f, 0.25f};
  // Vector path: groups of 4 elements plus a scalar tail of total % 4; channel of a group for
  // c = 3 stepped per group. The 4M-pixel case needs more than one trip of the grid-stride loop.
  for (const C t : {C{224 * 224 * 3, 3, false}, C{1, 3, false}, C{13 * 9, 1, false},
                    C{1001, 4, false}, C{7 * 11, 3, true}, C{5, 2, false}, C{333, 3, false},
                    C{7 * 11, 3, false, 4}, C{1001, 3, false, 0, 1}, C{3, 1, false},
                    C{4'000'007, 3, false}, C{20'011, 2, false, 4}, C{9'999, 1, false}}) {
    if (test::skip_in_small_run(size_t(t.pixels) * t.c)) continue;
    std::vector<uint8_t> x(size_t(t.pixels) * t.c);
    for (auto& v : x) v = uint8_t(byte(rng));
    std::vector<float> want(x.size());
    cpu::normalize_u8(t.pixels, t.c, x.data(), mean, sd, want.data());
    DeviceBuffer<uint8_t> dx(x, t.misalign ? 1 : t.x_off);
    DeviceBuffer<float> dy(x.size(), t.y_off);
    dy.poison();
    cuda::normalize_u8(t.pixels, t.c, dx.get(), mean, sd, dy.get(), stream_);
    const auto got = dy.download();
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
        << "normalize_u8 pixels=" << t.pixels << " c=" << t.c << " x_off=" << t.x_off
        << " y_off=" << t.y_off << (t.misalign ? " misaligned" : "");
  }
}

// Host and device copies of a set of parameter tensors with optimiser state.
struct ParamSet {
  std::vector<std::vector<float>> p, g, m, v;
  std::vector<DeviceBuffer<float>> dp, dg, dm, dv;
  std::vector<float> wd;
  std::vector<ParamRef> host_refs() {
    std::vector<ParamRef> r;
    for (size_t t = 0; t < p.size(); ++t)
      r.push_back(
          {p[t].data(), g[t].data(), m[t].data(), v[t].data(), int64_t(p[t].size()), wd[t]});
    return r;
  }
  std::vector<ParamRef> device_refs() {
    std::vector<ParamRef> r;
    for (size_t t = 0; t < p.size(); ++t)
      r.push_back(
          {dp[t].get(), dg[t].get(), dm[t].get(), dv[t].get(), int64_t(p[t].size()), wd[t]});
    return r;
  }
};

// misalign_every > 0: tensors 0, k, 2k, ... also sit one float off 16-byte alignment.
ParamSet make_params(const std::vector<int64_t>& counts, std::mt19937& rng, bool misalign_last,
                     size_t misalign_every = 0) {
  ParamSet s;
  for (size_t t = 0; t < counts.size(); ++t) {
    const size_t n = size_t(counts[t]);
    const bool shift =
        (misalign_last && t + 1 == counts.size()) || (misalign_every && t % misalign_every == 0);
    const size_t off = shift ? 1 : 0;
    s.p.push_back(random_floats(n, rng));
    s.g.push_back(random_floats(n, rng));
    s.m.push_back(random_floats(n, rng, -0.1f, 0.1f));
    s.v.push_back(random_floats(n, rng, 0.f, 0.01f));
    s.wd.push_back(t % 2 ? 0.f : 0.01f * float(t + 1));
    s.dp.emplace_back(s.p.back(), off);
    s.dg.emplace_back(s.g.back(), off);
    s.dm.emplace_back(s.m.back(), off);
    s.dv.emplace_back(s.v.back(), off);
  }
  return s;
}

void expect_params_close(ParamSet& s, bool check_v, const std::string& what) {
  for (size_t t = 0; t < s.p.size(); ++t) {
    const std::string tn = what + " tensor " + std::to_string(t);
    GRAFT_EXPECT_CLOSE(s.dp[t].download(), s.p[t], 1e-6, tn + " param");
    GRAFT_EXPECT_CLOSE(s.dm[t].download(), s.m[t], 1e-6, tn + " m");
    if (check_v) GRAFT_EXPECT_CLOSE(s.dv[t].download(), s.v[t], 1e-6, tn + " v");
  }
}

// Sizes: a linear head (1280 x 37 weights, 37 biases), odd counts, a 1-element tensor, and one
// past the float4 boundary; the last tensor misaligned so it takes the scalar path.
const std::vector<int64_t> kParamCounts = {1280 * 37, 37, 1, 4099, 8, 1000003, 13};

TEST_F(CudaOps, SgdMomentumMatchesCpu) {
  std::mt19937 rng(1700);
  ParamSet s = make_params(kParamCounts, rng, true);
  for (int step = 0; step < 3; ++step) {
    auto h = s.host_refs();
    cpu::sgd_momentum(h.data(), int(h.size()), 0.05f, 0.9f);
    auto d = s.device_refs();
    cuda::sgd_momentum(d.data(), int(d.size()), 0.05f, 0.9f, stream_);
  }
  expect_params_close(s, false, "sgd_momentum");
}

TEST_F(CudaOps, AdamWMatchesCpu) {
  std::mt19937 rng(1800);
  ParamSet s = make_params(kParamCounts, rng, true);
  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWConfig cfg{1e-3f, 0.9f, 0.999f, 1e-8f, step};
    auto h = s.host_refs();
    cpu::adamw(h.data(), int(h.size()), cfg);
    auto d = s.device_refs();
    cuda::adamw(d.data(), int(d.size()), cfg, stream_);
  }
  expect_params_close(s, true, "adamw");
}

// Fine-tuning through the backbone updates every tensor of the network in one launch (~130 for
// EfficientNet-Lite0): 300 tensors of awkward sizes (empty, 1, 3, odd, float4 multiples, a few
// large), every seventh misaligned so the scalar path mixes with the float4 one, every third at a
// tenth of the learning rate (lr_scale, the backbone's).
TEST_F(CudaOps, OptimisersUpdate300TensorsLikeCpu) {
  std::mt19937 rng(1850);
  std::uniform_int_distribution<int> small(0, 700);
  std::vector<int64_t> counts;
  for (int t = 0; t < 300; ++t)
    counts.push_back(t % 50 == 7 ? 100003 + t : t % 11 == 0 ? t % 5 : small(rng));
  for (const bool adam : {false, true}) {
    ParamSet s = make_params(counts, rng, false, 7);
    for (int64_t step = 1; step <= 2; ++step) {
      auto h = s.host_refs();
      auto d = s.device_refs();
      for (size_t t = 0; t < h.size(); t += 3) h[t].lr_scale = d[t].lr_scale = 0.1f;
      if (adam) {
        const AdamWConfig cfg{1e-3f, 0.9f, 0.999f, 1e-8f, step};
        cpu::adamw(h.data(), int(h.size()), cfg);
        cuda::adamw(d.data(), int(d.size()), cfg, stream_);
      } else {
        cpu::sgd_momentum(h.data(), int(h.size()), 0.05f, 0.9f);
        cuda::sgd_momentum(d.data(), int(d.size()), 0.05f, 0.9f, stream_);
      }
    }
    expect_params_close(s, adam, adam ? "adamw x300" : "sgd_momentum x300");
  }
}

TEST_F(CudaOps, OptimisersRejectMoreThan1000Tensors) {
  std::vector<ParamRef> refs(1001, ParamRef{nullptr, nullptr, nullptr, nullptr, 0, 0.f});
  EXPECT_THROW(cuda::sgd_momentum(refs.data(), 1001, 0.1f, 0.9f, stream_), std::invalid_argument);
  EXPECT_THROW(cuda::adamw(refs.data(), 1001, AdamWConfig{1e-3f, 0.9f, 0.999f, 1e-8f, 1}, stream_),
               std::invalid_argument);
  // Exactly 1000 is fine (empty tensors: nothing to do).
  EXPECT_NO_THROW(cuda::sgd_momentum(refs.data(), 1000, 0.1f, 0.9f, stream_));
}

TEST_F(CudaOps, ConfusionUpdateExact) {
  std::mt19937 rng(1900);
  struct C {
    int n, c;
  };
  for (const C t : {C{100, 7}, C{33, 1000}, C{1, 1}, C{257, 3}}) {
    auto logits = random_floats(size_t(t.n) * t.c, rng);
    // Ties (first max must win) and a NaN (never wins) in some rows.
    for (int i = 0; i < t.n; i += 3)
      if (t.c > 2) logits[size_t(i) * t.c + t.c - 1] = logits[size_t(i) * t.c + 1] = 2.f;
    if (t.c > 2 && t.n > 1) logits[size_t(1) * t.c] = NAN;
    std::vector<int32_t> labels(t.n);
    std::uniform_int_distribution<int> ld(0, t.c - 1);
    for (auto& l : labels) l = ld(rng);
    std::vector<int64_t> want(size_t(t.c) * t.c, 0);
    for (size_t i = 0; i < want.size() && i < 50; ++i)
      want[i] = int64_t(i);  // accumulates, not clears
    DeviceBuffer<float> dl(logits);
    DeviceBuffer<int32_t> dlab(labels);
    DeviceBuffer<int64_t> dc(want);
    for (int rep = 0; rep < 2; ++rep) {
      cpu::confusion_update(t.n, t.c, logits.data(), labels.data(), want.data());
      cuda::confusion_update(t.n, t.c, dl.get(), dlab.get(), dc.get(), stream_);
    }
    EXPECT_EQ(dc.download(), want) << "confusion_update n=" << t.n << " c=" << t.c;
  }
}

TEST_F(CudaOps, GatherRowsAndReluBackwardMatchCpu) {
  std::mt19937 rng(2000);
  struct G {
    int n, cols, src_rows;
  };
  for (const G t : {G{32, 1280, 1000}, G{3, 37, 5}, G{1, 1, 1}, G{17, 12, 40}}) {
    const auto src = random_floats(size_t(t.src_rows) * t.cols, rng);
    std::vector<int32_t> rows(t.n);
    std::uniform_int_distribution<int> rd(0, t.src_rows - 1);
    for (auto& r : rows) r = rd(rng);
    std::vector<float> want(size_t(t.n) * t.cols);
    cpu::gather_rows(t.n, t.cols, src.data(), rows.data(), want.data());
    DeviceBuffer<float> ds(src), dd(want.size());
    DeviceBuffer<int32_t> dr(rows);
    dd.poison();
    cuda::gather_rows(t.n, t.cols, ds.get(), dr.get(), dd.get(), stream_);
    EXPECT_EQ(dd.download(), want) << "gather_rows n=" << t.n << " cols=" << t.cols;
  }
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(4096), int64_t(100003)}) {
    for (const size_t off : {size_t(0), size_t(1)}) {
      const auto y = random_floats(size_t(count), rng);
      auto dy = random_floats(size_t(count), rng);
      DeviceBuffer<float> gy(y, off), gdy(dy, off);
      cpu::relu_backward(count, y.data(), dy.data());
      cuda::relu_backward(count, gy.get(), gdy.get(), stream_);
      EXPECT_EQ(gdy.download(), dy) << "relu_backward count=" << count << " offset=" << off;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Argument validation happens before any CUDA call, so these run without a GPU too.

TEST(CudaOpsValidation, RejectsBadShapes) {
  ConvShape s = conv_same(1, 8, 8, 6, 9, 3, 1, 2);  // 9 outputs not divisible by 2 groups
  EXPECT_THROW(cuda::conv2d(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  s = conv_same(1, 8, 8, 6, 8, 3, 1);
  s.stride_h = 0;
  EXPECT_THROW(cuda::conv2d(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  s = conv_same(1, 8, 8, 6, 8, 3, 1);
  s.n = -1;
  EXPECT_THROW(cuda::conv2d(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  // Not pointwise / not depthwise when a specific path is asked for.
  EXPECT_THROW(cuda::conv_pointwise_v2(conv_same(1, 8, 8, 6, 8, 3, 1), nullptr, nullptr, nullptr,
                                       nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::conv_depthwise(conv_same(1, 8, 8, 6, 8, 3, 1), nullptr, nullptr, nullptr,
                                    nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  try {
    s = conv_same(1, 8, 8, 6, 8, 3, 1);
    s.k_h = 0;
    cuda::conv2d(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr);
    ADD_FAILURE() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("conv2d"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("k=0x3"), std::string::npos) << e.what();
  }
  PoolShape p{1, 8, 8, 4, 4, 4, 2, 2, 0, 2, 0, 0};  // stride_h 0
  EXPECT_THROW(cuda::max_pool2d(p, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::global_avg_pool(1, 0, 4, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::bias_act(-1, 4, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::linear(-1, 4, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::softmax(2, 0, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::softmax_xent(2, 0, nullptr, nullptr, 0.f, 1.f, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::dropout(10, 1.f, 1, 0, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::dropout(-1, 0.5f, 1, 0, nullptr, nullptr, nullptr), std::invalid_argument);
  const float m[5] = {}, sd[5] = {1, 1, 1, 1, 1};
  EXPECT_THROW(cuda::normalize_u8(4, 5, nullptr, m, sd, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::confusion_update(3, 0, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::gather_rows(-1, 4, nullptr, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::relu_backward(-1, nullptr, nullptr, nullptr), std::invalid_argument);
  std::vector<ParamRef> refs(1025, ParamRef{nullptr, nullptr, nullptr, nullptr, 0, 0.f});
  EXPECT_THROW(cuda::sgd_momentum(refs.data(), 1025, 0.1f, 0.9f, nullptr), std::invalid_argument);
  refs[3].count = -1;
  EXPECT_THROW(cuda::sgd_momentum(refs.data(), 4, 0.1f, 0.9f, nullptr), std::invalid_argument);
}

// Empty outputs are a no-op and touch no pointer.
TEST(CudaOpsValidation, EmptyIsNoOp) {
  ConvShape s = conv_same(0, 8, 8, 6, 8, 3, 1);
  EXPECT_NO_THROW(cuda::conv2d(s, nullptr, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::bias_act(0, 4, nullptr, nullptr, nullptr, Act::none, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::dropout(0, 0.5f, 1, 0, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::softmax(0, 10, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::linear(0, 10, 10, nullptr, nullptr, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::normalize_u8(0, 3, nullptr, nullptr, nullptr, nullptr, nullptr));
}

}  // namespace
}  // namespace graft
