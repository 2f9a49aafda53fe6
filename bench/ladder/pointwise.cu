// The pointwise-conv (GEMM) ladder: y[m][oc] = act(sum_k x[m][k] * w[k][oc] + bias + residual),
// the [M = n*h*w][K = in_c] x [K][N = out_c] product under every 1x1 conv, from a thread an output
// to today's register-blocked, double-buffered kernel (kernels/cuda/gemm.cuh). Each version is
// checked against the CPU twin (cpu::conv2d) and timed against the card's FMA rate.
// bench/worklog-cuda-gemm.md has the predictions and figures.
//
//   ladder_pointwise [VERSION]
//
// Every version sums each output over k in order with fmaf from 0, so versions 1-4 give the same
// bits; the epilogue (bias, residual, activation) is the same expression everywhere.
#include <string>
#include <vector>

#include "bench/ladder/ladder.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/ops.h"

namespace graft {
namespace {

struct Gemm {
  int64_t M;
  int N, K;
  const float *x, *w, *bias, *residual;
  int act;
  float* y;
};

__device__ __forceinline__ void finish(const Gemm& g, int64_t m, int n, float acc) {
  if (g.bias) acc += g.bias[n];
  if (g.residual) acc += g.residual[m * g.N + n];
  g.y[m * g.N + n] = cuda::apply_act(acc, g.act);
}

// v2: 32x32 output tiles; the block stages a 32x32 tile of x and of w in shared memory per k
// step, so each value read from global memory feeds 32 FMAs instead of 1. Still one output a
// thread: every FMA needs two shared-memory loads.
constexpr int kTile = 32;

__global__ void pw_shared_tiles(Gemm g) {
  __shared__ float xs[kTile][kTile], ws[kTile][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t m = blockIdx.x * int64_t(kTile) + ty;
  const int n = blockIdx.y * kTile + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < g.K; k0 += kTile) {
    xs[ty][tx] = m < g.M && k0 + tx < g.K ? g.x[m * g.K + k0 + tx] : 0.f;
    ws[ty][tx] = k0 + ty < g.K && n < g.N ? g.w[int64_t(k0 + ty) * g.N + n] : 0.f;
    __syncthreads();
    const int steps = min(kTile, g.K - k0);  // zero padding would add +0 products: same bits
    for (int kk = 0; kk < steps; ++kk) acc = fmaf(xs[ty][kk], ws[kk][tx], acc);
    __syncthreads();
  }
  if (m < g.M && n < g.N) finish(g, m, n, acc);
}

// v3: 64x64 tiles, k steps of 8, each of the 512 threads computing a column of 8 outputs: a w
// value loaded from shared memory feeds 8 FMAs (register blocking in one dimension).
constexpr int kBM3 = 64, kBN3 = 64, kBK3 = 8, kTM3 = 8;

__global__ void pw_column_of_8(Gemm g) {
  __shared__ float xs[kBM3][kBK3], ws[kBK3][kBN3];
  const int t = threadIdx.x, col = t % kBN3, row0 = t / kBN3 * kTM3;
  const int64_t m0 = blockIdx.x * int64_t(kBM3);
  const int n0 = blockIdx.y * kBN3;
  float acc[kTM3] = {};
  for (int k0 = 0; k0 < g.K; k0 += kBK3) {
    {  // 512 threads, 512 values of each tile: one each
      const int r = t / kBK3, c = t % kBK3;
      xs[r][c] = m0 + r < g.M && k0 + c < g.K ? g.x[(m0 + r) * g.K + k0 + c] : 0.f;
      const int kr = t / kBN3, nc = t % kBN3;
      ws[kr][nc] = k0 + kr < g.K && n0 + nc < g.N ? g.w[int64_t(k0 + kr) * g.N + n0 + nc] : 0.f;
    }
    __syncthreads();
    const int steps = min(kBK3, g.K - k0);
    for (int kk = 0; kk < steps; ++kk) {
      const float wv = ws[kk][col];
#pragma unroll
      for (int i = 0; i < kTM3; ++i) acc[i] = fmaf(xs[row0 + i][kk], wv, acc[i]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kTM3; ++i)
    if (m0 + row0 + i < g.M && n0 + col < g.N) finish(g, m0 + row0 + i, n0 + col, acc[i]);
}

// v4: 128x128 tiles, k steps of 8, each of the 256 threads computing an 8x8 block of outputs from
// 8 x values and 8 w values held in registers: each shared load feeds 8 FMAs in both dimensions
// (an outer product per k).
constexpr int kBM4 = 128, kBN4 = 128, kBK4 = 8, kT4 = 8, kThreads4 = 256;

__global__ void pw_block_of_8x8(Gemm g) {
  __shared__ float xs[kBK4][kBM4], ws[kBK4][kBN4];  // x stored transposed: a column is a row
  const int t = threadIdx.x;
  const int row0 = t / (kBN4 / kT4) * kT4, col0 = t % (kBN4 / kT4) * kT4;
  const int64_t m0 = blockIdx.x * int64_t(kBM4);
  const int n0 = blockIdx.y * kBN4;
  float acc[kT4][kT4] = {};
  for (int k0 = 0; k0 < g.K; k0 += kBK4) {
    // 1024 values of each tile over 256 threads: 4 each.
    for (int e = t; e < kBM4 * kBK4; e += kThreads4) {
      const int r = e / kBK4, c = e % kBK4;
      xs[c][r] = m0 + r < g.M && k0 + c < g.K ? g.x[(m0 + r) * g.K + k0 + c] : 0.f;
      const int kr = e / kBN4, nc = e % kBN4;
      ws[kr][nc] = k0 + kr < g.K && n0 + nc < g.N ? g.w[int64_t(k0 + kr) * g.N + n0 + nc] : 0.f;
    }
    __syncthreads();
    const int steps = min(kBK4, g.K - k0);
    for (int kk = 0; kk < steps; ++kk) {
      float xr[kT4], wr[kT4];
#pragma unroll
      for (int i = 0; i < kT4; ++i) xr[i] = xs[kk][row0 + i];
#pragma unroll
      for (int j = 0; j < kT4; ++j) wr[j] = ws[kk][col0 + j];
#pragma unroll
      for (int i = 0; i < kT4; ++i)
#pragma unroll
        for (int j = 0; j < kT4; ++j) acc[i][j] = fmaf(xr[i], wr[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kT4; ++i)
#pragma unroll
    for (int j = 0; j < kT4; ++j)
      if (m0 + row0 + i < g.M && n0 + col0 + j < g.N)
        finish(g, m0 + row0 + i, n0 + col0 + j, acc[i][j]);
}

// One shape: random input, weights, bias and residual, the output, and the CPU twin's answer.
struct Problem {
  ConvShape s;
  bool with_residual;
  Act act;
  ladder::DeviceArray<float> x, w, bias, residual, y;
  std::vector<float> want;

  Problem(int n, int h, int wd, int in_c, int out_c, bool res, Act a, uint32_t seed)
      : s{n, h, wd, in_c, h, wd, out_c, 1, 1, 1, 1, 0, 0, 1},
        with_residual(res),
        act(a),
        x(size_t(n) * h * wd * in_c),
        w(size_t(in_c) * out_c),
        bias(out_c),
        residual(res ? size_t(n) * h * wd * out_c : 0),
        y(size_t(n) * h * wd * out_c) {
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
  Gemm gemm() const {
    return {int64_t(s.n) * s.out_h * s.out_w,     s.out_c,  s.in_c, x.p, w.p, bias.p,
            with_residual ? residual.p : nullptr, int(act), y.p};
  }
  std::string shape() const {
    return std::to_string(s.n * s.out_h * s.out_w) + "x" + std::to_string(s.in_c) + " . " +
           std::to_string(s.in_c) + "x" + std::to_string(s.out_c);
  }
  double flops() const { return 2.0 * double(s.n) * s.out_h * s.out_w * s.in_c * s.out_c; }
  void poison() const { y.poison(); }
  double error() const { return ladder::max_error(y.download(), want); }
};

dim3 grid_of(const Gemm& g, int bm, int bn) {
  return dim3(unsigned(cuda::ceil_div(g.M, bm)), unsigned(cuda::ceil_div(g.N, bn)));
}

std::vector<ladder::Version<Problem>> versions() {
  return {
      {"a thread an output, operands from global memory (cuda::conv_pointwise_v1)",
       [](const Problem& p) {
         cuda::conv_pointwise_v1(p.s, p.x.p, p.w.p, p.bias.p,
                                 p.with_residual ? p.residual.p : nullptr, p.act, p.y.p, nullptr);
       }},
      {"32x32 tiles of x and w staged in shared memory",
       [](const Problem& p) {
         const Gemm g = p.gemm();
         GRAFT_LAUNCH(grid_of(g, kTile, kTile), dim3(kTile, kTile), 0, nullptr, pw_shared_tiles)(g);
         CUDA_CHECK_LAUNCH("pw_shared_tiles", p.shape());
       }},
      {"64x64 tiles, a column of 8 outputs a thread: a w load feeds 8 FMAs",
       [](const Problem& p) {
         const Gemm g = p.gemm();
         GRAFT_LAUNCH(grid_of(g, kBM3, kBN3), dim3(kBM3 * kBN3 / kTM3), 0, nullptr, pw_column_of_8)
         (g);
         CUDA_CHECK_LAUNCH("pw_column_of_8", p.shape());
       }},
      {"128x128 tiles, 8x8 outputs a thread from registers: an outer product a k",
       [](const Problem& p) {
         const Gemm g = p.gemm();
         GRAFT_LAUNCH(grid_of(g, kBM4, kBN4), dim3(kThreads4), 0, nullptr, pw_block_of_8x8)(g);
         CUDA_CHECK_LAUNCH("pw_block_of_8x8", p.shape());
       }},
      {"float4 loads, double-buffered tiles (today's cuda::conv_pointwise_v2)",
       [](const Problem& p) {
         cuda::conv_pointwise_v2(p.s, p.x.p, p.w.p, p.bias.p,
                                 p.with_residual ? p.residual.p : nullptr, p.act, p.y.p, nullptr);
       }},
  };
}

}  // namespace
}  // namespace graft

int main(int argc, char** argv) {
  using namespace graft;
  const char* name = "ladder_pointwise";
  try {
    if (!ladder::have_device(name)) return 0;
    // Lite0's 14x14 expand (112 -> 672) at batch 32, 0.94 GFLOP; emulated, one image at 7x7.
    // Checked also: odd sizes in every dimension with a residual, one output channel, and K
    // across several k steps with a remainder.
    const Problem timed(ladder::kEmulated ? 1 : 32, ladder::kEmulated ? 7 : 14,
                        ladder::kEmulated ? 7 : 14, 112, 672, false, Act::relu6, 1);
    const Problem odd(1, 5, 7, 19, 37, true, Act::relu6, 2),
        narrow(2, 3, 3, 8, 1, false, Act::none, 3), deep(1, 13, 11, 200, 150, true, Act::relu, 4);
    return ladder::run<Problem>(name, versions(), 1e-5, timed, {&odd, &narrow, &deep}, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}
