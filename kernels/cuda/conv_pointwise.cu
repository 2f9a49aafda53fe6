// Pointwise (1x1, stride 1, unpadded, one group) convolution as a GEMM:
//   y[m][oc] = act(sum_ci x[m][ci] * w[ci][oc] + bias[oc] + residual[m][oc]),  m = (b, y, x) pixel.
// NHWC makes x exactly the row-major [M = n*h*w][K = in_c] matrix and HWIO makes w the row-major
// [K][N = out_c] one, so no data is rearranged.
//
// Versions (llm.c style: each kept, each checked by tests/test_cuda_ops.cpp):
//   v1  one output per thread, a dot product straight from global memory. threadIdx.x runs along
//       oc, so the w reads and y writes coalesce and the x reads are warp broadcasts. Every FMA
//       costs two loads from L1/L2: expected to be load-bound at a few percent of the FMA rate.
//   v2  gemm.cuh's block tile (128x128/128x64/128x32/64x64, BK=16) with 8x8 or 8x4 (4x4 on the
//       small tile) outputs per thread from registers, float4 global loads, double-buffered shared
//       tiles, fused epilogue. Each shared float loaded feeds 4 to 8 FMAs instead of 1, so it
//       should move from load-bound to FMA-bound. Measured on an H200 (bench/worklog-cuda-gemm.md):
//       v1 3-7 TFLOP/s, v2 10-36 TFLOP/s (up to 57% of the measured FMA rate) on EfficientNet
//       shapes.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/cuda/gemm.cuh"

namespace graft::cuda {
namespace {

void check_pointwise(const ConvShape& s, const char* op) {
  if (!(s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
        s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w))
    invalid(op, "not a pointwise shape: " + conv_shape_str(s));
}

__global__ void conv_pointwise_v1_kernel(int64_t M, int N, int K, const float* __restrict__ x,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         const float* __restrict__ residual, int act,
                                         float* __restrict__ y) {
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  const int64_t m = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (m >= M || n >= N) return;
  const float* xr = x + m * K;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) acc = fmaf(xr[k], w[static_cast<int64_t>(k) * N + n], acc);
  if (bias) acc += bias[n];
  if (residual) acc += residual[m * N + n];
  y[m * N + n] = apply_act(acc, act);
}

}  // namespace

void conv_pointwise_v1(const ConvShape& s, const float* x, const float* w, const float* bias,
                       const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_pointwise_v1")) return;
  check_pointwise(s, "conv_pointwise_v1");
  const int64_t M = static_cast<int64_t>(s.n) * s.out_h * s.out_w;
  dim3 block(32, 8);
  const int64_t gx = ceil_div(M, block.y), gy = ceil_div(s.out_c, block.x);
  if (gx > 0x7fffffff || gy > 65535)
    invalid("conv_pointwise_v1", "too large: " + conv_shape_str(s));
  GRAFT_LAUNCH(dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), block, 0, stream,
               conv_pointwise_v1_kernel)
  (M, s.out_c, s.in_c, x, w, bias, residual, static_cast<int>(act), y);
  CUDA_CHECK_LAUNCH("conv_pointwise_v1_kernel", conv_shape_str(s));
}

namespace {

// The GEMM of a pointwise conv: [n*h*w][in_c] x [in_c][out_c]; sets *vec when every operand
// qualifies for 16-byte accesses.
GemmArgs pointwise_gemm(const ConvShape& s, const float* x, const float* w, const float* bias,
                        const float* residual, Act act, float* y, bool* vec) {
  GemmArgs p{};
  p.M = s.n * s.out_h * s.out_w;
  p.N = s.out_c;
  p.K = s.in_c;
  p.A = x;
  p.lda = s.in_c;
  p.B = w;
  p.ldb = s.out_c;
  p.C = y;
  p.ldc = s.out_c;
  p.bias = bias;
  p.residual = residual;
  p.act = static_cast<int>(act);
  *vec = mult4(s.in_c) && mult4(s.out_c) && aligned16(x) && aligned16(w) && aligned16(y) &&
         (!bias || aligned16(bias)) && (!residual || aligned16(residual));
  return p;
}

}  // namespace

void conv_pointwise_v2(const ConvShape& s, const float* x, const float* w, const float* bias,
                       const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_pointwise_v2")) return;
  check_pointwise(s, "conv_pointwise_v2");
  bool vec = false;
  const GemmArgs p = pointwise_gemm(s, x, w, bias, residual, act, y, &vec);
  gemm_mk_kn(p, vec, stream, "conv_pointwise_v2", conv_shape_str(s));
}

std::string conv_pointwise_v2_pick(const ConvShape& s) {
  return gemm_tile_name(pick_gemm_tile(int64_t(s.n) * s.out_h * s.out_w, s.out_c, 1));
}

void conv_pointwise_v2_tile(const ConvShape& s, const float* x, const float* w, const float* bias,
                            const float* residual, Act act, float* y, const std::string& tile,
                            cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_pointwise_v2")) return;
  check_pointwise(s, "conv_pointwise_v2");
  bool vec = false;
  const GemmArgs p = pointwise_gemm(s, x, w, bias, residual, act, y, &vec);
  for (const GemmTile t :
       {GemmTile::t128x128, GemmTile::t128x64, GemmTile::t128x32, GemmTile::t64x64}) {
    if (tile == gemm_tile_name(t))
      return launch_gemm<kA_MK, kB_KN>(p, 1, vec, t, stream, "conv_pointwise_v2",
                                       conv_shape_str(s));
  }
  invalid("conv_pointwise_v2", "no tile " + tile + " (128x128, 128x64, 128x32 or 64x64)");
}

void gemm_mk_kn(const GemmArgs& p, bool vec, cudaStream_t stream, const char* name,
                const std::string& detail) {
  launch_gemm<kA_MK, kB_KN>(p, 1, vec, pick_gemm_tile(p.M, p.N, 1), stream, name, detail);
}

}  // namespace graft::cuda
