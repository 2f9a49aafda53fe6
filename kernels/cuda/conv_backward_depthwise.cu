// Backward of the depthwise convolution (groups == in_c == out_c = c): channel ch of dx and dw
// depends on channel ch of x, w and dy only, so both ops are per-channel stencils, memory-bound
// (k_h*k_w FMAs per element moved).
//
// dx[b][iy][ix][ch] = sum of dy[b][oy][ox][ch] * w[ky][kx][ch] over the taps whose output reads
//                     (iy, ix): oy = (iy + pad_top - ky) / stride_h exact and in range, same in x.
//   v1  one thread per dx element, every tap tested (the plain statement of the gather).
//   v2  one thread per (input pixel, float4 of channels): only the taps of the right stride phase
//       are visited (ky = (iy + pad_top) mod stride_h, then every stride_h-th), dy read as float4
//       (coalesced across the warp, which runs along channels), the block's weights in shared
//       memory. The k*k/s^2 reads of each dy float4 by neighbouring pixels come from L1/L2.
//
// dw[ky][kx][ch]    = sum over (b, oy, ox) of dy[b][oy][ox][ch] *
//                     x[b][oy*s - pt + ky][ox*s - pl + kx][ch]
//   v1  one thread per weight summing all n*out_h*out_w pixels in order: only k*k*c threads (1296
//       for 3x3 x 144), each a long dependent walk through memory. The plain baseline.
//   v2  the pixels cut into a shape-fixed number of chunks; a block per (chunk, channel-quad
//       slice), its threads striding over the chunk's pixels with all k*k float4 accumulators in
//       registers (one dy float4 and k*k x float4 loads per pixel), then a fixed-order sum over
//       the block's pixel lanes in shared memory, one partial per chunk, and sum_partials over the
//       chunks in order. No atomics: bitwise repeatable.
//
// Written without a GPU at hand: compiled for sm_75 and sm_90, not yet run. Unverified.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/cuda/conv_internal.cuh"

namespace graft::cuda {
namespace {

struct DwBwdArgs {
  int n, in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
};

DwBwdArgs dw_args(const ConvShape& s) {
  return DwBwdArgs{s.n,   s.in_h, s.in_w,     s.in_c,     s.out_h,   s.out_w,
                   s.k_h, s.k_w,  s.stride_h, s.stride_w, s.pad_top, s.pad_left};
}

void check_depthwise(const ConvShape& s, const char* op) {
  if (!(s.groups == s.in_c && s.groups == s.out_c))
    invalid(op, "not a depthwise shape: " + conv_shape_str(s));
}

__device__ __forceinline__ void fma4(float4& acc, float4 a, float4 b) {
  acc.x = fmaf(a.x, b.x, acc.x);
  acc.y = fmaf(a.y, b.y, acc.y);
  acc.z = fmaf(a.z, b.z, acc.z);
  acc.w = fmaf(a.w, b.w, acc.w);
}

// Channel quads per block row, as the forward's dw_lanes: all of them up to 32, else the largest
// divisor of c/4 in [16, 32] so the last block column is not mostly idle.
int dw_lanes(int c4) {
  if (c4 <= 32) return c4;
  for (int d = 32; d >= 16; --d)
    if (c4 % d == 0) return d;
  return 32;
}

// ---- dx -----------------------------------------------------------------------------------------

__global__ void dw_bwd_data_v1_kernel(const DwBwdArgs a, const float* __restrict__ dy,
                                      const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t total = static_cast<int64_t>(a.n) * a.in_h * a.in_w * a.c;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(i % a.c);
    const int64_t pix = i / a.c;
    const int ix = static_cast<int>(pix % a.in_w);
    const int64_t row = pix / a.in_w;
    const int iy = static_cast<int>(row % a.in_h);
    const int b = static_cast<int>(row / a.in_h);
    float acc = 0.f;
    for (int ky = 0; ky < a.k_h; ++ky) {
      const int ty = iy + a.pad_top - ky;
      if (ty < 0 || ty % a.stride_h != 0 || ty / a.stride_h >= a.out_h) continue;
      for (int kx = 0; kx < a.k_w; ++kx) {
        const int tx = ix + a.pad_left - kx;
        if (tx < 0 || tx % a.stride_w != 0 || tx / a.stride_w >= a.out_w) continue;
        const int64_t o =
            ((static_cast<int64_t>(b) * a.out_h + ty / a.stride_h) * a.out_w + tx / a.stride_w) *
                a.c +
            ch;
        acc = fmaf(dy[o], __ldg(w + (ky * a.k_w + kx) * a.c + ch), acc);
      }
    }
    dx[i] = acc;
  }
}

// Block (bx channel quads, by pixels); weights [k_h*k_w][bx] float4 in shared memory.
__global__ void dw_bwd_data_v2_kernel(const DwBwdArgs a, const float* __restrict__ dy,
                                      const float* __restrict__ w, float* __restrict__ dx) {
  GRAFT_DYNAMIC_SHARED(float4, ws);
  const int c4 = a.c / 4, bx = blockDim.x, tx = threadIdx.x;
  const int cq = blockIdx.y * bx + tx;
  const int taps = a.k_h * a.k_w;
  for (int i = threadIdx.y * bx + tx; i < taps * bx; i += bx * blockDim.y) {
    const int tap = i / bx, q = blockIdx.y * bx + (i - tap * bx);
    ws[i] =
        q < c4 ? ld4(w + static_cast<int64_t>(tap) * a.c + q * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  __syncthreads();
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (cq >= c4 || pix >= static_cast<int64_t>(a.n) * a.in_h * a.in_w) return;
  const int ix = static_cast<int>(pix % a.in_w);
  const int64_t row = pix / a.in_w;
  const int iy = static_cast<int>(row % a.in_h);
  const int b = static_cast<int>(row / a.in_h);
  const int ty = iy + a.pad_top, tx0 = ix + a.pad_left;
  const float* dyb = dy + static_cast<int64_t>(b) * a.out_h * a.out_w * a.c + cq * 4;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  // Taps of this pixel's stride phase only, from the first (ky = ty mod s) every s-th.
  for (int ky = ty % a.stride_h; ky < a.k_h; ky += a.stride_h) {
    const int oy = (ty - ky) / a.stride_h;
    if (oy < 0) break;  // larger ky only lowers oy further
    if (oy >= a.out_h) continue;
    const float* dyr = dyb + static_cast<int64_t>(oy) * a.out_w * a.c;
    for (int kx = tx0 % a.stride_w; kx < a.k_w; kx += a.stride_w) {
      const int ox = (tx0 - kx) / a.stride_w;
      if (ox < 0) break;
      if (ox >= a.out_w) continue;
      fma4(acc, ld4(dyr + static_cast<int64_t>(ox) * a.c), ws[(ky * a.k_w + kx) * bx + tx]);
    }
  }
  st4(dx + pix * a.c + cq * 4, acc);
}

// ---- dw -----------------------------------------------------------------------------------------

__global__ void dw_bwd_filter_v1_kernel(const DwBwdArgs a, const float* __restrict__ x,
                                        const float* __restrict__ dy, float* __restrict__ dw) {
  const int wi = blockIdx.x * blockDim.x + threadIdx.x;
  if (wi >= a.k_h * a.k_w * a.c) return;
  const int ch = wi % a.c, tap = wi / a.c;
  const int ky = tap / a.k_w, kx = tap - ky * a.k_w;
  float acc = 0.f;
  for (int b = 0; b < a.n; ++b) {
    const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + ch;
    for (int oy = 0; oy < a.out_h; ++oy) {
      const int iy = oy * a.stride_h - a.pad_top + ky;
      if (iy < 0 || iy >= a.in_h) continue;
      const float* dyr = dy + (static_cast<int64_t>(b) * a.out_h + oy) * a.out_w * a.c + ch;
      for (int ox = 0; ox < a.out_w; ++ox) {
        const int ix = ox * a.stride_w - a.pad_left + kx;
        if (ix < 0 || ix >= a.in_w) continue;
        acc = fmaf(xb[(static_cast<int64_t>(iy) * a.in_w + ix) * a.c], dyr[ox * a.c], acc);
      }
    }
  }
  dw[wi] = acc;
}

constexpr int kDwThreads = 256;

// Block (bx channel quads, by pixel lanes), grid (chunks, channel slices). Each thread strides over
// its chunk's pixels (lane ty takes p0 + ty, p0 + ty + by, ...) keeping KH*KW float4 sums, then the
// block adds its by lanes tap by tap in lane order and writes the chunk's partial [taps][c].
template <int KH, int KW>
__global__ void __launch_bounds__(kDwThreads)
    dw_bwd_filter_v2_kernel(const DwBwdArgs a, int64_t chunk, const float* __restrict__ x,
                            const float* __restrict__ dy, float* __restrict__ out) {
  __shared__ float4 red[kDwThreads];
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int c4 = a.c / 4;
  const int cq = blockIdx.y * bx + tx;
  const int64_t pixels = static_cast<int64_t>(a.n) * a.out_h * a.out_w;
  const int64_t p0 = blockIdx.x * chunk, p1 = min(pixels, p0 + chunk);
  float4 acc[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; ++t) acc[t] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (cq < c4 && p0 + ty < p1) {
    const int64_t p = p0 + ty;
    int ox = static_cast<int>(p % a.out_w);
    int oy = static_cast<int>((p / a.out_w) % a.out_h);
    int b = static_cast<int>(p / (static_cast<int64_t>(a.out_w) * a.out_h));
    for (int64_t q = p; q < p1; q += by) {
      const float4 g = ld4(dy + q * a.c + cq * 4);
      const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + cq * 4;
      const int iy0 = oy * a.stride_h - a.pad_top, ix0 = ox * a.stride_w - a.pad_left;
#pragma unroll
      for (int ky = 0; ky < KH; ++ky) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= a.in_h) continue;
#pragma unroll
        for (int kx = 0; kx < KW; ++kx) {
          const int ix = ix0 + kx;
          if (ix < 0 || ix >= a.in_w) continue;
          fma4(acc[ky * KW + kx], g, ld4(xb + (static_cast<int64_t>(iy) * a.in_w + ix) * a.c));
        }
      }
      ox += by;  // step to this lane's next pixel (by may exceed a row)
      while (ox >= a.out_w) {
        ox -= a.out_w;
        if (++oy == a.out_h) oy = 0, ++b;
      }
    }
  }
  float* dst = out + blockIdx.x * static_cast<int64_t>(KH * KW) * a.c + cq * 4;
#pragma unroll  // acc[t] must be a compile-time index, or acc[] goes to local memory
  for (int t = 0; t < KH * KW; ++t) {
    red[ty * bx + tx] = acc[t];
    __syncthreads();
    if (ty == 0 && cq < c4) {
      float4 s = red[tx];
#pragma unroll 1  // runs once per block: keep the code small (unrolled it was 3/4 of the kernel)
      for (int j = 1; j < by; ++j) {
        const float4 v = red[j * bx + tx];
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
      }
      st4(dst + static_cast<int64_t>(t) * a.c, s);
    }
    __syncthreads();
  }
}

// The split of dw's pixel sum: about 1024 blocks in all, at least 64 pixels per chunk, at most
// 1024 chunks. Shape only.
int64_t dw_filter_chunks(const ConvShape& s, int64_t* chunk) {
  const int64_t pixels = int64_t(s.n) * s.out_h * s.out_w;
  const int c4 = s.in_c / 4;
  const int64_t slices = ceil_div(c4, dw_lanes(c4));
  int64_t want = std::clamp<int64_t>(ceil_div(1024, slices), 1, 1024);
  want = std::min(want, std::max<int64_t>(1, pixels / 64));
  *chunk = ceil_div(pixels, want);
  return ceil_div(pixels, *chunk);
}

bool dw_filter_v2_fits(const ConvShape& s) {
  return mult4(s.in_c) && ((s.k_h == 3 && s.k_w == 3) || (s.k_h == 5 && s.k_w == 5));
}

}  // namespace

void conv_bwd_data_depthwise_v1(const ConvShape& s, const float* dy, const float* w, float* dx,
                                cudaStream_t stream) {
  if (!conv_bwd_data_begin(s, "conv_bwd_data_depthwise", dx, stream)) return;
  check_depthwise(s, "conv_bwd_data_depthwise");
  const int64_t total = int64_t(s.n) * s.in_h * s.in_w * s.in_c;
  GRAFT_LAUNCH(grid_for(total, 256), 256, 0, stream, dw_bwd_data_v1_kernel)(dw_args(s), dy, w, dx);
  CUDA_CHECK_LAUNCH("dw_bwd_data_v1_kernel", conv_shape_str(s));
}

void conv_bwd_data_depthwise_v2(const ConvShape& s, const float* dy, const float* w, float* dx,
                                cudaStream_t stream) {
  if (!conv_bwd_data_begin(s, "conv_bwd_data_depthwise", dx, stream)) return;
  check_depthwise(s, "conv_bwd_data_depthwise");
  const int c4 = s.in_c / 4, bx = dw_lanes(c4), by = 256 / bx;
  const size_t smem = sizeof(float4) * size_t(s.k_h) * s.k_w * bx;
  if (!mult4(s.in_c) || !aligned16(dy) || !aligned16(w) || !aligned16(dx) || smem > 48 * 1024)
    return conv_bwd_data_depthwise_v1(s, dy, w, dx, stream);
  const int64_t pixels = int64_t(s.n) * s.in_h * s.in_w;
  const int64_t gx = ceil_div(pixels, by), gy = ceil_div(c4, bx);
  if (gx > 0x7fffffff || gy > 65535) invalid("conv_bwd_data_depthwise", conv_shape_str(s));
  GRAFT_LAUNCH(dim3(unsigned(gx), unsigned(gy)), dim3(bx, by), smem, stream, dw_bwd_data_v2_kernel)
  (dw_args(s), dy, w, dx);
  CUDA_CHECK_LAUNCH("dw_bwd_data_v2_kernel", conv_shape_str(s));
}

void conv_bwd_filter_depthwise_v1(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  cudaStream_t stream) {
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_depthwise", dw, stream)) return;
  check_depthwise(s, "conv_bwd_filter_depthwise");
  const int64_t wcount = int64_t(s.k_h) * s.k_w * s.in_c;
  GRAFT_LAUNCH(unsigned(ceil_div(wcount, 128)), 128, 0, stream, dw_bwd_filter_v1_kernel)
  (dw_args(s), x, dy, dw);
  CUDA_CHECK_LAUNCH("dw_bwd_filter_v1_kernel", conv_shape_str(s));
}

size_t conv_bwd_filter_depthwise_v2_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0 || s.in_c <= 0 || !dw_filter_v2_fits(s)) return 0;
  int64_t chunk = 0;
  const int64_t chunks = dw_filter_chunks(s, &chunk);
  return chunks > 1 ? sizeof(float) * size_t(chunks) * s.k_h * s.k_w * s.in_c : 0;
}

void conv_bwd_filter_depthwise_v2(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = conv_shape_str(s);
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_depthwise", dw, stream)) return;
  check_depthwise(s, "conv_bwd_filter_depthwise");
  check_workspace("conv2d_backward_filter", conv_bwd_filter_depthwise_v2_workspace(s), workspace,
                  workspace_bytes, detail);
  int64_t chunk = 0;
  const int64_t chunks = dw_filter_chunks(s, &chunk);
  float* out = chunks > 1 ? static_cast<float*>(workspace) : dw;
  if (!dw_filter_v2_fits(s) || !aligned16(x) || !aligned16(dy) || !aligned16(out))
    return conv_bwd_filter_depthwise_v1(s, x, dy, dw, stream);
  const int c4 = s.in_c / 4, bx = dw_lanes(c4), by = kDwThreads / bx;
  const dim3 grid(unsigned(chunks), unsigned(ceil_div(c4, bx)));
  if (s.k_h == 3) {
    GRAFT_LAUNCH(grid, dim3(bx, by), 0, stream, dw_bwd_filter_v2_kernel<3, 3>)
    (dw_args(s), chunk, x, dy, out);
  } else {
    GRAFT_LAUNCH(grid, dim3(bx, by), 0, stream, dw_bwd_filter_v2_kernel<5, 5>)
    (dw_args(s), chunk, x, dy, out);
  }
  CUDA_CHECK_LAUNCH("dw_bwd_filter_v2_kernel", detail);
  const int64_t wcount = int64_t(s.k_h) * s.k_w * s.in_c;
  if (chunks > 1) sum_partials(int(chunks), wcount, out, dw, stream, "conv_bwd_filter_sum", detail);
}

}  // namespace graft::cuda
