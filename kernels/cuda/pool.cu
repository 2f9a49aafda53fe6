// Pooling over NHWC. One thread per output element (or per float4 of channels when c % 4 == 0),
// channels fastest so a warp's loads coalesce. Same arithmetic as the CPU twin: max starts at -inf
// and keeps the old value unless the new one is strictly greater (padded taps are skipped, never
// compared); avg sums the in-bounds taps and multiplies by 1/taps (k_h*k_w with count_pad, else the
// in-bounds count; 0 when no tap is in bounds).
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

struct PoolArgs {
  int n, in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
};

// V = 4: each thread a float4 of channels; V = 1: one channel.
template <int V, bool MAX>
__global__ void pool2d_kernel(const PoolArgs a, bool count_pad, const float* __restrict__ x,
                              float* __restrict__ y) {
  const int cv = a.c / V;
  const int64_t total = static_cast<int64_t>(a.n) * a.out_h * a.out_w * cv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(i % cv) * V;
    const int64_t pix = i / cv;
    const int ox = static_cast<int>(pix % a.out_w);
    const int64_t row = pix / a.out_w;
    const int oy = static_cast<int>(row % a.out_h);
    const int b = static_cast<int>(row / a.out_h);
    const int iy0 = oy * a.stride_h - a.pad_top, ix0 = ox * a.stride_w - a.pad_left;
    const int ky0 = max(0, -iy0), ky1 = min(a.k_h, a.in_h - iy0);
    const int kx0 = max(0, -ix0), kx1 = min(a.k_w, a.in_w - ix0);
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = MAX ? -INFINITY : 0.f;
    const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + ch;
    for (int ky = ky0; ky < ky1; ++ky) {
      for (int kx = kx0; kx < kx1; ++kx) {
        const float* xp = xb + (static_cast<int64_t>(iy0 + ky) * a.in_w + ix0 + kx) * a.c;
        float v[V];
        if constexpr (V == 4) {
          float4 t = ld4(xp);
          v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
        } else {
          v[0] = xp[0];
        }
#pragma unroll
        for (int j = 0; j < V; ++j) {
          if constexpr (MAX)
            acc[j] = v[j] > acc[j] ? v[j] : acc[j];
          else
            acc[j] += v[j];
        }
      }
    }
    if constexpr (!MAX) {
      const int taps = count_pad ? a.k_h * a.k_w : max(0, ky1 - ky0) * max(0, kx1 - kx0);
      const float inv = taps > 0 ? 1.f / static_cast<float>(taps) : 0.f;
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] *= inv;
    }
    float* yp = y + pix * a.c + ch;
    if constexpr (V == 4)
      st4(yp, make_float4(acc[0], acc[1], acc[2], acc[3]));
    else
      yp[0] = acc[0];
  }
}

void pool2d(const char* op, bool is_max, const PoolShape& s, bool count_pad, const float* x,
            float* y, cudaStream_t stream) {
  if (s.n < 0 || s.in_h < 0 || s.in_w < 0 || s.c < 0 || s.out_h < 0 || s.out_w < 0 || s.k_h <= 0 ||
      s.k_w <= 0 || s.stride_h <= 0 || s.stride_w <= 0 || s.pad_top < 0 || s.pad_left < 0)
    invalid(op, "bad shape: " + pool_shape_str(s));
  if (s.n == 0 || s.out_h == 0 || s.out_w == 0 || s.c == 0) return;
  if (s.in_h == 0 || s.in_w == 0) invalid(op, "empty input: " + pool_shape_str(s));
  const PoolArgs a{s.n,   s.in_h, s.in_w,     s.c,        s.out_h,   s.out_w,
                   s.k_h, s.k_w,  s.stride_h, s.stride_w, s.pad_top, s.pad_left};
  const bool vec = mult4(s.c) && aligned16(x) && aligned16(y);
  const int64_t total = int64_t(s.n) * s.out_h * s.out_w * (vec ? s.c / 4 : s.c);
  const unsigned grid = grid_for(total, 256);
  const std::string detail = pool_shape_str(s);
  if (is_max) {
    if (vec)
      pool2d_kernel<4, true><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    else
      pool2d_kernel<1, true><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    CUDA_CHECK_LAUNCH("max_pool2d_kernel", detail);
  } else {
    if (vec)
      pool2d_kernel<4, false><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    else
      pool2d_kernel<1, false><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    CUDA_CHECK_LAUNCH("avg_pool2d_kernel", detail);
  }
}

// x [n][hw][c] -> y [n][c]. Thread per (image, float4 of channels): consecutive threads read
// consecutive channels of the same pixel (coalesced), each walks the hw pixels with 16-byte loads.
// Same summation order as the CPU twin (pixel by pixel), times 1/hw.
template <int V>
__global__ void global_avg_pool_kernel(int n, int hw, int c, float inv, const float* __restrict__ x,
                                       float* __restrict__ y) {
  const int cv = c / V;
  const int64_t total = static_cast<int64_t>(n) * cv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int b = static_cast<int>(i / cv);
    const int ch = static_cast<int>(i % cv) * V;
    const float* xp = x + static_cast<int64_t>(b) * hw * c + ch;
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = 0.f;
#pragma unroll 4
    for (int p = 0; p < hw; ++p) {
      if constexpr (V == 4) {
        float4 t = ld4(xp + static_cast<int64_t>(p) * c);
        acc[0] += t.x, acc[1] += t.y, acc[2] += t.z, acc[3] += t.w;
      } else {
        acc[0] += xp[static_cast<int64_t>(p) * c];
      }
    }
    float* yp = y + static_cast<int64_t>(b) * c + ch;
    if constexpr (V == 4)
      st4(yp, make_float4(acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv));
    else
      yp[0] = acc[0] * inv;
  }
}

}  // namespace

void max_pool2d(const PoolShape& s, const float* x, float* y, cudaStream_t stream) {
  pool2d("max_pool2d", true, s, false, x, y, stream);
}

void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y, cudaStream_t stream) {
  pool2d("avg_pool2d", false, s, count_pad, x, y, stream);
}

void global_avg_pool(int n, int hw, int c, const float* x, float* y, cudaStream_t stream) {
  const std::string detail =
      "n=" + std::to_string(n) + " hw=" + std::to_string(hw) + " c=" + std::to_string(c);
  if (n < 0 || hw <= 0 || c < 0) invalid("global_avg_pool", "bad shape: " + detail);
  if (n == 0 || c == 0) return;
  const float inv = 1.f / static_cast<float>(hw);
  const bool vec = mult4(c) && aligned16(x) && aligned16(y);
  const int64_t total = int64_t(n) * (vec ? c / 4 : c);
  // Small blocks: n*c/4 threads is only a few hundred at batch 1, so spread them over more SMs.
  if (vec)
    global_avg_pool_kernel<4><<<grid_for(total, 128), 128, 0, stream>>>(n, hw, c, inv, x, y);
  else
    global_avg_pool_kernel<1><<<grid_for(total, 128), 128, 0, stream>>>(n, hw, c, inv, x, y);
  CUDA_CHECK_LAUNCH("global_avg_pool_kernel", detail);
}

}  // namespace graft::cuda
