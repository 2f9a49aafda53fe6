// Depthwise convolution (groups == in_c == out_c): each output channel reads one input channel, so
// there is no reduction across channels and the op is memory-bound (k_h*k_w FMAs per output float,
// against one input read (cached across neighbours) and one output write).
//
// Fast path (c % 4 == 0, (k_w, stride_w) in {3,5,7} x {1,2}): a thread owns one float4 of channels
// and OXT = 4 neighbouring output pixels of one row. For each kernel row it loads the
// (OXT-1)*stride_w + k_w input pixels those outputs share into registers once (float4, coalesced
// across the warp since threadIdx.x runs along channels), then does OXT*k_w float4 FMAs from them:
// each input float4 is read from L1/L2 about k_h times instead of k_h*k_w times. The block's
// weights ([k_h][k_w][block channels]) sit in shared memory. k_h and stride_h stay run-time values.
//
// Generic path (anything else: c = 37, k = 9, ...): one thread per output element, c fastest so
// the warp's loads coalesce, weights through the read-only cache.
//
// Both end in the fused epilogue: + bias, + residual, act.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"

namespace graft::cuda {
namespace {

constexpr int kDwOxt = 4;  // output pixels per thread along x on the fast path

struct DwArgs {
  int n, in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  int act;
};

__device__ __forceinline__ void fma4(float4& acc, float4 a, float4 b) {
  acc.x = fmaf(a.x, b.x, acc.x);
  acc.y = fmaf(a.y, b.y, acc.y);
  acc.z = fmaf(a.z, b.z, acc.z);
  acc.w = fmaf(a.w, b.w, acc.w);
}

template <int KW, int SW>
__global__ void conv_depthwise_vec_kernel(const DwArgs a, const float* __restrict__ x,
                                          const float* __restrict__ w,
                                          const float* __restrict__ bias,
                                          const float* __restrict__ residual,
                                          float* __restrict__ y) {
  GRAFT_DYNAMIC_SHARED(float4, ws);  // [k_h * KW][blockDim.x]
  constexpr int NIN = (kDwOxt - 1) * SW + KW;
  const int c4 = a.c / 4;
  const int cq = blockIdx.y * blockDim.x + threadIdx.x;
  const int taps = a.k_h * KW;

  // Stage this block's weights: taps x blockDim.x float4s, all threads helping.
  const int nthreads = blockDim.x * blockDim.y;
  for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < taps * static_cast<int>(blockDim.x);
       i += nthreads) {
    const int tap = i / blockDim.x, lane = i - tap * blockDim.x;
    const int q = blockIdx.y * blockDim.x + lane;
    ws[i] =
        q < c4 ? ld4(w + static_cast<int64_t>(tap) * a.c + q * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  __syncthreads();
  if (cq >= c4) return;

  const int tiles_x = (a.out_w + kDwOxt - 1) / kDwOxt;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (tile >= static_cast<int64_t>(a.n) * a.out_h * tiles_x) return;
  const int tx = static_cast<int>(tile % tiles_x);
  const int64_t row = tile / tiles_x;  // b * out_h + oy
  const int oy = static_cast<int>(row % a.out_h);
  const int b = static_cast<int>(row / a.out_h);
  const int ox0 = tx * kDwOxt;
  const int ix0 = ox0 * SW - a.pad_left;

  float4 acc[kDwOxt];
#pragma unroll
  for (int o = 0; o < kDwOxt; ++o) acc[o] = make_float4(0.f, 0.f, 0.f, 0.f);

  const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + cq * 4;
  for (int ky = 0; ky < a.k_h; ++ky) {
    const int iy = oy * a.stride_h - a.pad_top + ky;
    if (iy < 0 || iy >= a.in_h) continue;
    const float* xr = xb + static_cast<int64_t>(iy) * a.in_w * a.c;
    float4 in[NIN];
#pragma unroll
    for (int j = 0; j < NIN; ++j) {
      const int ix = ix0 + j;
      in[j] = (ix >= 0 && ix < a.in_w) ? ld4(xr + static_cast<int64_t>(ix) * a.c)
                                       : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int kx = 0; kx < KW; ++kx) {
      const float4 wv = ws[(ky * KW + kx) * blockDim.x + threadIdx.x];
#pragma unroll
      for (int o = 0; o < kDwOxt; ++o) fma4(acc[o], in[o * SW + kx], wv);
    }
  }

  float4 bv = bias ? ld4(bias + cq * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int o = 0; o < kDwOxt; ++o) {
    const int ox = ox0 + o;
    if (ox >= a.out_w) break;
    const int64_t off = ((row * a.out_w) + ox) * a.c + cq * 4;
    float4 v = acc[o];
    if (bias) v.x += bv.x, v.y += bv.y, v.z += bv.z, v.w += bv.w;
    if (residual) {
      float4 r = ld4(residual + off);
      v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
    }
    v.x = apply_act(v.x, a.act);
    v.y = apply_act(v.y, a.act);
    v.z = apply_act(v.z, a.act);
    v.w = apply_act(v.w, a.act);
    st4(y + off, v);
  }
}

__global__ void conv_depthwise_generic_kernel(const DwArgs a, const float* __restrict__ x,
                                              const float* __restrict__ w,
                                              const float* __restrict__ bias,
                                              const float* __restrict__ residual,
                                              float* __restrict__ y) {
  const int64_t total = static_cast<int64_t>(a.n) * a.out_h * a.out_w * a.c;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(i % a.c);
    const int64_t pix = i / a.c;
    const int ox = static_cast<int>(pix % a.out_w);
    const int64_t row = pix / a.out_w;
    const int oy = static_cast<int>(row % a.out_h);
    const int b = static_cast<int>(row / a.out_h);
    const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + ch;
    float acc = 0.f;
    for (int ky = 0; ky < a.k_h; ++ky) {
      const int iy = oy * a.stride_h - a.pad_top + ky;
      if (iy < 0 || iy >= a.in_h) continue;
      for (int kx = 0; kx < a.k_w; ++kx) {
        const int ix = ox * a.stride_w - a.pad_left + kx;
        if (ix < 0 || ix >= a.in_w) continue;
        acc = fmaf(xb[(static_cast<int64_t>(iy) * a.in_w + ix) * a.c],
                   __ldg(w + (ky * a.k_w + kx) * a.c + ch), acc);
      }
    }
    if (bias) acc += bias[ch];
    if (residual) acc += residual[i];
    y[i] = apply_act(acc, a.act);
  }
}

// Channel quads per block row: all of them up to 32, else the largest divisor of c/4 in [16, 32],
// so the last block column is not mostly idle. With a flat 32, c = 144 (36 quads) ran blocks of 32
// and of 4 active lanes, and that layer reached 40% of copy bandwidth against 66-81% for the others
// (bench/worklog-cuda-conv.md); 18 lanes split it evenly. Lite0's other widths: 24 (c = 96), 30
// (240, 480), 28 (672), 32 (1152).
int dw_lanes(int c4) {
  if (c4 <= 32) return c4;
  for (int d = 32; d >= 16; --d)
    if (c4 % d == 0) return d;
  return 32;
}

template <int KW, int SW>
void launch_vec(const DwArgs& a, const float* x, const float* w, const float* bias,
                const float* residual, float* y, cudaStream_t stream, const std::string& detail) {
  const int c4 = a.c / 4;
  const int bx = dw_lanes(c4);
  const int by = 256 / bx;
  const int64_t tiles = static_cast<int64_t>(a.n) * a.out_h * ceil_div(a.out_w, kDwOxt);
  const int64_t gx = ceil_div(tiles, by), gy = ceil_div(c4, bx);
  if (gx > 0x7fffffff || gy > 65535) invalid("conv_depthwise", "too large: " + detail);
  const size_t smem = sizeof(float4) * a.k_h * KW * bx;
  GRAFT_LAUNCH(dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(bx, by), smem,
               stream, conv_depthwise_vec_kernel<KW, SW>)
  (a, x, w, bias, residual, y);
  CUDA_CHECK_LAUNCH("conv_depthwise_vec_kernel", detail);
}

}  // namespace

void conv_depthwise(const ConvShape& s, const float* x, const float* w, const float* bias,
                    const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_depthwise")) return;
  if (!(s.groups == s.in_c && s.groups == s.out_c))
    invalid("conv_depthwise", "not a depthwise shape: " + conv_shape_str(s));
  const DwArgs a{s.n,
                 s.in_h,
                 s.in_w,
                 s.in_c,
                 s.out_h,
                 s.out_w,
                 s.k_h,
                 s.k_w,
                 s.stride_h,
                 s.stride_w,
                 s.pad_top,
                 s.pad_left,
                 static_cast<int>(act)};
  const std::string detail = conv_shape_str(s);
  // Shared weights must fit the default 48 KB: k_h * k_w * 32 lanes * 16 bytes.
  const bool vec = mult4(s.in_c) && aligned16(x) && aligned16(w) && aligned16(y) &&
                   (!bias || aligned16(bias)) && (!residual || aligned16(residual)) &&
                   int64_t(s.k_h) * s.k_w * 32 * 16 <= 48 * 1024;
  if (vec) {
    const int kw = s.k_w, sw = s.stride_w;
    if (kw == 3 && sw == 1) return launch_vec<3, 1>(a, x, w, bias, residual, y, stream, detail);
    if (kw == 3 && sw == 2) return launch_vec<3, 2>(a, x, w, bias, residual, y, stream, detail);
    if (kw == 5 && sw == 1) return launch_vec<5, 1>(a, x, w, bias, residual, y, stream, detail);
    if (kw == 5 && sw == 2) return launch_vec<5, 2>(a, x, w, bias, residual, y, stream, detail);
    if (kw == 7 && sw == 1) return launch_vec<7, 1>(a, x, w, bias, residual, y, stream, detail);
    if (kw == 7 && sw == 2) return launch_vec<7, 2>(a, x, w, bias, residual, y, stream, detail);
  }
  const int64_t total = int64_t(s.n) * s.out_h * s.out_w * s.out_c;
  GRAFT_LAUNCH(grid_for(total, 256), 256, 0, stream, conv_depthwise_generic_kernel)
  (a, x, w, bias, residual, y);
  CUDA_CHECK_LAUNCH("conv_depthwise_generic_kernel", detail);
}

}  // namespace graft::cuda
