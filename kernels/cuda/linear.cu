// The classifier head's linear layer, forward and backward, on gemm.cuh's tiled GEMM.
//   forward  y[n][out]  = x[n][in] . w[out][in]^T + bias     A = x  (kA_MK), B = w  (kB_NK)
//   dw[out][in]         = dy^T . x                           A = dy (kA_KM), B = x  (kB_KN)
//   dx[n][in]           = dy . w                             A = dy (kA_MK), B = w  (kB_KN)
//   db[out]             = sum_i dy[i][out]                   one thread per column, rows in order
// Small forward problems (n * out <= kRowdotMax, e.g. batch 32 x 10 classes) do not fill the GPU
// with GEMM tiles: a 64x64 tile walking K = 1280 in 80 dependent steps was latency-bound (84 us
// for 32 x 1280 -> 10 on an H200, vs 19 us for cuBLAS). They use linear_rowdot_kernel instead:
// one warp per (row, 4 outputs), lanes striding K with float4 loads, a fixed butterfly reduction.
// Every output is overwritten. No split-K and no atomics: each output element is summed by one
// thread in a fixed order, so results are bitwise reproducible run to run.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.cuh"

namespace graft::cuda {
namespace {

std::string lin_str(int n, int in, int out) {
  return "n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
}

void check_linear(const char* op, int n, int in, int out) {
  if (n < 0 || in < 0 || out < 0) invalid(op, "bad shape: " + lin_str(n, in, out));
  if (int64_t(n) * in >= (int64_t(1) << 31) || int64_t(n) * out >= (int64_t(1) << 31) ||
      int64_t(in) * out >= (int64_t(1) << 31))
    invalid(op, "tensor too large (>= 2^31 elements): " + lin_str(n, in, out));
}

__global__ void column_sum_kernel(int rows, int cols, const float* __restrict__ dy,
                                  float* __restrict__ db) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  float acc = 0.f;
  for (int i = 0; i < rows; ++i) acc += dy[static_cast<int64_t>(i) * cols + j];
  db[j] = acc;
}

constexpr int kDotOuts = 4;
constexpr int64_t kRowdotMax = 64 * 1024;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <bool VEC>
__global__ void linear_rowdot_kernel(int n, int in, int out, const float* __restrict__ x,
                                     const float* __restrict__ w, const float* __restrict__ bias,
                                     float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int groups = (out + kDotOuts - 1) / kDotOuts;
  if (warp >= static_cast<int64_t>(n) * groups) return;  // warp-uniform
  const int row = static_cast<int>(warp / groups);
  const int o0 = static_cast<int>(warp % groups) * kDotOuts;
  const float* xr = x + static_cast<int64_t>(row) * in;
  const float* wr[kDotOuts];
#pragma unroll
  for (int j = 0; j < kDotOuts; ++j)
    wr[j] = w + static_cast<int64_t>(o0 + j < out ? o0 + j : o0) * in;  // clamp: never read OOB
  float acc[kDotOuts] = {};
  if constexpr (VEC) {
    for (int k = lane * 4; k < in; k += 128) {
      const float4 xv = ld4(xr + k);
#pragma unroll
      for (int j = 0; j < kDotOuts; ++j) {
        const float4 wv = ld4(wr[j] + k);
        acc[j] = fmaf(xv.x, wv.x, acc[j]);
        acc[j] = fmaf(xv.y, wv.y, acc[j]);
        acc[j] = fmaf(xv.z, wv.z, acc[j]);
        acc[j] = fmaf(xv.w, wv.w, acc[j]);
      }
    }
  } else {
    for (int k = lane; k < in; k += 32) {
      const float xv = xr[k];
#pragma unroll
      for (int j = 0; j < kDotOuts; ++j) acc[j] = fmaf(xv, wr[j][k], acc[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < kDotOuts; ++j) acc[j] = warp_sum(acc[j]);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kDotOuts; ++j)
      if (o0 + j < out)
        y[static_cast<int64_t>(row) * out + o0 + j] = acc[j] + (bias ? bias[o0 + j] : 0.f);
  }
}

}  // namespace

void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y,
            cudaStream_t stream) {
  check_linear("linear", n, in, out);
  if (n == 0 || out == 0) return;
  if (int64_t(n) * out <= kRowdotMax) {
    const int64_t warps = int64_t(n) * ceil_div(out, kDotOuts);
    const unsigned grid = static_cast<unsigned>(ceil_div(warps * 32, 256));
    if (mult4(in) && aligned16(x) && aligned16(w))
      GRAFT_LAUNCH(grid, 256, 0, stream, linear_rowdot_kernel<true>)(n, in, out, x, w, bias, y);
    else
      GRAFT_LAUNCH(grid, 256, 0, stream, linear_rowdot_kernel<false>)(n, in, out, x, w, bias, y);
    CUDA_CHECK_LAUNCH("linear_rowdot_kernel", lin_str(n, in, out));
    return;
  }
  GemmArgs p{};
  p.M = n;
  p.N = out;
  p.K = in;
  p.A = x;
  p.lda = in;
  p.B = w;
  p.ldb = in;
  p.C = y;
  p.ldc = out;
  p.bias = bias;
  p.act = static_cast<int>(Act::none);
  const bool vec = mult4(in) && mult4(out) && aligned16(x) && aligned16(w) && aligned16(y) &&
                   (!bias || aligned16(bias));
  launch_gemm<kA_MK, kB_NK>(p, 1, vec, pick_gemm_tile(n, out, 1), stream, "linear",
                            lin_str(n, in, out));
}

void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, cudaStream_t stream) {
  check_linear("linear_backward", n, in, out);
  if (!dw && !dx && !db) return;
  const std::string detail = lin_str(n, in, out);
  if (dw && out > 0 && in > 0) {
    // K = n may be 0: the GEMM then writes zeros (the sum over an empty batch).
    GemmArgs p{};
    p.M = out;
    p.N = in;
    p.K = n;
    p.A = dy;
    p.lda = out;
    p.B = x;
    p.ldb = in;
    p.C = dw;
    p.ldc = in;
    p.act = static_cast<int>(Act::none);
    const bool vec = mult4(out) && mult4(in) && aligned16(dy) && aligned16(x) && aligned16(dw);
    launch_gemm<kA_KM, kB_KN>(p, 1, vec, pick_gemm_tile(out, in, 1), stream, "linear_backward_dw",
                              detail);
  }
  if (dx && n > 0 && in > 0) {
    GemmArgs p{};
    p.M = n;
    p.N = in;
    p.K = out;
    p.A = dy;
    p.lda = out;
    p.B = w;
    p.ldb = in;
    p.C = dx;
    p.ldc = in;
    p.act = static_cast<int>(Act::none);
    const bool vec = mult4(out) && mult4(in) && aligned16(dy) && aligned16(w) && aligned16(dx);
    gemm_mk_kn(p, vec, stream, "linear_backward_dx", detail);
  }
  if (db && out > 0) {
    GRAFT_LAUNCH(static_cast<unsigned>(ceil_div(out, 128)), 128, 0, stream, column_sum_kernel)
    (n, out, dy, db);
    CUDA_CHECK_LAUNCH("linear_backward_db", detail);
  }
}

}  // namespace graft::cuda
