// Pooling over NHWC. One thread per output element (or per float4 of channels when c % 4 == 0),
// channels fastest so a warp's loads coalesce; 3x3 windows have their own kernel with the taps
// unrolled, other windows loop over their taps at run time. Same arithmetic as the CPU twin: max
// starts at -inf and keeps the old value unless the new one is strictly greater (padded taps are
// skipped, never compared); avg sums the in-bounds taps and multiplies by 1/taps (k_h*k_w with
// count_pad, else the in-bounds count; 0 when no tap is in bounds).
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

// One output of the 3x3 window: the taps (ky, kx) with ky in [ky0, ky1) and kx in [kx0, kx1) are
// loaded first, then reduced in the CPU twin's order (ky, then kx). FULL (all nine in bounds, the
// interior of the image) drops the guards: ptxas then issues five loads up front and the rest as
// registers free up, where guarded loads went two at a time between the compares.
template <int V, bool MAX, bool FULL>
__device__ __forceinline__ void pool3x3_window(const float* x, int64_t base, int64_t row_stride,
                                               int c, int ky0, int ky1, int kx0, int kx1,
                                               float* acc) {
  float v[9][V];
#pragma unroll
  for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
    for (int kx = 0; kx < 3; ++kx) {
      float* t = v[ky * 3 + kx];
#pragma unroll
      for (int j = 0; j < V; ++j) t[j] = 0.f;
      if (FULL || (ky >= ky0 && ky < ky1 && kx >= kx0 && kx < kx1)) {
        const float* xp = x + (base + ky * row_stride + static_cast<int64_t>(kx) * c);
        if constexpr (V == 4) {
          const float4 q = ld4(xp);
          t[0] = q.x, t[1] = q.y, t[2] = q.z, t[3] = q.w;
        } else {
          t[0] = xp[0];
        }
      }
    }
  }
#pragma unroll
  for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
    for (int kx = 0; kx < 3; ++kx) {
      if (FULL || (ky >= ky0 && ky < ky1 && kx >= kx0 && kx < kx1)) {
        const float* t = v[ky * 3 + kx];
#pragma unroll
        for (int j = 0; j < V; ++j) {
          if constexpr (MAX)
            acc[j] = t[j] > acc[j] ? t[j] : acc[j];
          else
            acc[j] += t[j];
        }
      }
    }
  }
}

// The 3x3 window (ResNet's stem max pool, most pooling layers) with its taps unrolled, so several
// of a thread's loads are in flight together instead of one per trip of a run-time loop (in-order
// issue waits on each load before the next trip). Taps outside the input are skipped, as in the
// CPU twin, so max and sum are bit-identical to it. Item indexing is 32-bit, three 32-bit divisions
// per item instead of 64-bit ones (the caller checks that the item count fits); input offsets stay
// 64-bit.
template <int V, bool MAX>
__global__ void pool3x3_kernel(const PoolArgs a, bool count_pad, const float* __restrict__ x,
                               float* __restrict__ y) {
  const uint32_t cv = static_cast<uint32_t>(a.c / V);
  const uint32_t total = static_cast<uint32_t>(a.n) * a.out_h * a.out_w * cv;
  const int64_t row_stride = static_cast<int64_t>(a.in_w) * a.c;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t pix = i / cv;
    const int ch = static_cast<int>(i - pix * cv) * V;
    const uint32_t row = pix / static_cast<uint32_t>(a.out_w);
    const int ox = static_cast<int>(pix - row * static_cast<uint32_t>(a.out_w));
    const uint32_t b = row / static_cast<uint32_t>(a.out_h);
    const int oy = static_cast<int>(row - b * static_cast<uint32_t>(a.out_h));
    const int iy0 = oy * a.stride_h - a.pad_top, ix0 = ox * a.stride_w - a.pad_left;
    const int ky0 = max(0, -iy0), ky1 = min(3, a.in_h - iy0);
    const int kx0 = max(0, -ix0), kx1 = min(3, a.in_w - ix0);
    // Offset of tap (0, 0); may lie outside x, but only in-bounds taps are read.
    const int64_t base = ((static_cast<int64_t>(b) * a.in_h + iy0) * a.in_w + ix0) * a.c + ch;
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = MAX ? -INFINITY : 0.f;
    if (ky0 == 0 && ky1 == 3 && kx0 == 0 && kx1 == 3)
      pool3x3_window<V, MAX, true>(x, base, row_stride, a.c, 0, 3, 0, 3, acc);
    else
      pool3x3_window<V, MAX, false>(x, base, row_stride, a.c, ky0, ky1, kx0, kx1, acc);
    if constexpr (!MAX) {
      const int taps = count_pad ? 9 : max(0, ky1 - ky0) * max(0, kx1 - kx0);
      const float inv = taps > 0 ? 1.f / static_cast<float>(taps) : 0.f;
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] *= inv;
    }
    float* yp = y + static_cast<int64_t>(pix) * a.c + ch;
    if constexpr (V == 4)
      st4(yp, make_float4(acc[0], acc[1], acc[2], acc[3]));
    else
      yp[0] = acc[0];
  }
}

template <bool MAX>
void launch_pool(const PoolArgs& a, bool vec, bool k3, bool count_pad, unsigned grid,
                 const float* x, float* y, cudaStream_t stream) {
  if (k3) {
    if (vec)
      pool3x3_kernel<4, MAX><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    else
      pool3x3_kernel<1, MAX><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
  } else {
    if (vec)
      pool2d_kernel<4, MAX><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
    else
      pool2d_kernel<1, MAX><<<grid, 256, 0, stream>>>(a, count_pad, x, y);
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
  // 32-bit item indices in the 3x3 kernel: total plus one grid stride must stay below 2^32.
  const bool k3 = s.k_h == 3 && s.k_w == 3 && total < (int64_t(1) << 31);
  const std::string detail = pool_shape_str(s);
  if (is_max) {
    launch_pool<true>(a, vec, k3, count_pad, grid, x, y, stream);
    CUDA_CHECK_LAUNCH("max_pool2d_kernel", detail);
  } else {
    launch_pool<false>(a, vec, k3, count_pad, grid, x, y, stream);
    CUDA_CHECK_LAUNCH("avg_pool2d_kernel", detail);
  }
}

// U consecutive pixels of one thread's float4 (V = 4) or channel (V = 1) column, added to acc in
// pixel order. The loads are unconditional (a guard per pixel made ptxas issue each load just
// before its add); ptxas still interleaves them with the adds, about 3 in flight per thread.
template <int V, int U>
__device__ __forceinline__ void gap_batch(const float* xp, int64_t c, float* acc) {
  float v[U][V];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if constexpr (V == 4) {
      // __ldg: the asm prefetch in the caller hides the read-only path from the compiler.
      const float4 t = __ldg(reinterpret_cast<const float4*>(xp + u * c));
      v[u][0] = t.x, v[u][1] = t.y, v[u][2] = t.z, v[u][3] = t.w;
    } else {
      v[u][0] = __ldg(xp + u * c);
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += v[u][j];
  }
}

// Asks the L2 to fetch the sector holding p; a hint with no destination register, so ptxas issues
// it at once (the same form as CUTLASS's prefetch).
__device__ __forceinline__ void prefetch_l2(const float* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// x [n][hw][c] -> y [n][c]. Thread per (image, float4 of channels): consecutive threads read
// consecutive channels of the same pixel (coalesced), each walks the hw pixels with 16-byte loads.
// Same summation order as the CPU twin (pixel by pixel, from +0), times 1/hw, so the result is
// bit-identical. At n=256, hw=49, c=1280 there are only 82K threads (under a third of the chip's
// resident capacity) and ptxas keeps about 3 of a thread's loads in flight whatever the unroll
// (it interleaves loads and adds to save registers), so the kernel was latency-bound at 64% of
// copy bandwidth. Each batch of 8 pixels therefore first asks the L2 for the next batch
// (prefetch.global.L2, no register held), so DRAM sees up to 8 outstanding requests per thread and
// the loads mostly hit L2. The look-ahead is one batch: at most 82K x 8 x 16 B = 10.5 MB
// prefetched and not yet read, well inside the L2. Splitting hw across threads would give more
// parallelism but change the summation order.
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
#pragma unroll
    for (int u = 0; u < 8; ++u)
      if (u < hw) prefetch_l2(xp + static_cast<int64_t>(u) * c);
    int p = 0;
    for (; p + 8 <= hw; p += 8) {
#pragma unroll
      for (int u = 0; u < 8; ++u)
        if (p + 8 + u < hw) prefetch_l2(xp + static_cast<int64_t>(p + 8 + u) * c);
      gap_batch<V, 8>(xp + static_cast<int64_t>(p) * c, c, acc);
    }
    if (p + 4 <= hw) {
      gap_batch<V, 4>(xp + static_cast<int64_t>(p) * c, c, acc);
      p += 4;
    }
    for (; p < hw; ++p) gap_batch<V, 1>(xp + static_cast<int64_t>(p) * c, c, acc);
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
