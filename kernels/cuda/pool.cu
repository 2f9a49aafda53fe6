// Pooling over NHWC. One thread per output element (or per float4 of channels when c % 4 == 0),
// channels fastest so a warp's loads coalesce; 3x3 windows have their own kernel with the taps
// unrolled, other windows loop over their taps at run time. Same arithmetic as the CPU twin: max
// starts at -inf and keeps the old value unless the new one is strictly greater (padded taps are
// skipped, never compared); avg sums the in-bounds taps and multiplies by 1/taps (k_h*k_w with
// count_pad, else the in-bounds count; 0 when no tap is in bounds).
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/pool_internal.cuh"

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
    if (vec) {
      GRAFT_LAUNCH(grid, 256, 0, stream, pool3x3_kernel<4, MAX>)(a, count_pad, x, y);
    } else {
      GRAFT_LAUNCH(grid, 256, 0, stream, pool3x3_kernel<1, MAX>)(a, count_pad, x, y);
    }
  } else {
    if (vec) {
      GRAFT_LAUNCH(grid, 256, 0, stream, pool2d_kernel<4, MAX>)(a, count_pad, x, y);
    } else {
      GRAFT_LAUNCH(grid, 256, 0, stream, pool2d_kernel<1, MAX>)(a, count_pad, x, y);
    }
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

// Global average pooling, x [n][hw][c] -> y [n][c]. Both versions give each thread one (image,
// float4 of channels) column, so consecutive threads read consecutive channels of the same pixel
// (coalesced), and add its hw pixels in order from +0 then multiply by 1/hw: the CPU twin's order,
// so the result is bit-identical. They differ in how many of a thread's loads are in flight.

// One column with plain loads: V = 4 channels (16-byte loads) or V = 1.
template <int V>
__device__ __forceinline__ void gap_column(const float* xp, int hw, int c, float inv, float* yp) {
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
#pragma unroll 4
  for (int p = 0; p < hw; ++p) {
    if constexpr (V == 4) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(xp + static_cast<int64_t>(p) * c));
      acc[0] += t.x, acc[1] += t.y, acc[2] += t.z, acc[3] += t.w;
    } else {
      acc[0] += __ldg(xp + static_cast<int64_t>(p) * c);
    }
  }
  if constexpr (V == 4)
    st4(yp, make_float4(acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv));
  else
    yp[0] = acc[0] * inv;
}

// v1: the plain loop. Also the path for c % 4 != 0 or unaligned tensors (V = 1, one channel per
// thread). At n = 256, hw = 49, c = 1280 there are only 82K threads (under a third of what an H100
// or H200 holds) and ptxas keeps about 3 of a thread's loads in flight whatever the unroll (it
// interleaves loads and adds to save registers): ~4-5 MB in flight chip-wide, latency-bound at
// 62-66% of copy bandwidth on the H200. An L2 prefetch of the next 8 pixels did not help (24.99 us,
// bench/worklog-cuda-memory.md).
template <int V>
__global__ void global_avg_pool_v1_kernel(int n, int hw, int c, float inv,
                                          const float* __restrict__ x, float* __restrict__ y) {
  const int cv = c / V;
  const int64_t total = static_cast<int64_t>(n) * cv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int b = static_cast<int>(i / cv);
    const int ch = static_cast<int>(i % cv) * V;
    gap_column<V>(x + static_cast<int64_t>(b) * hw * c + ch, hw, c, inv,
                  y + static_cast<int64_t>(b) * c + ch);
  }
}

// v2: the loads go to shared memory with cp.async (sm_80+), which holds no register until the data
// is read back, so a thread can keep many pixels in flight. Each thread runs its own ring of
// STAGES slots of BATCH pixels: it fills every slot, then for each batch k waits for it
// (cp.async.wait_group), adds it from shared memory, and refills the slot with batch k + STAGES.
// While it adds, (STAGES - 1) * BATCH pixels of the thread are in flight, 12 (192 B) in the
// default 4 x 4 ring against ~3 loads in v1: ~15 MB chip-wide at n = 256, several times what DRAM
// needs to run at full speed. A thread reads only the slots it wrote, so there is no __syncthreads:
// cp.async.wait_group makes a thread's own copies visible to it, and a slot is refilled only after
// the same thread's shared loads of it were issued (and the refill lands a DRAM latency later).
// Slot layout [stage][pixel][thread] puts a warp's 16-byte writes and reads on consecutive
// addresses (no bank conflicts). 4 x 4 ring: 64 threads x 16 pixels x 16 B = 16 KB per block, 13
// blocks fit an SM, so at n = 256 the 1280 blocks are one wave on 132 SMs. The benchmark also
// times other rings (global_avg_pool_v2's batch and stages arguments) to show the trade between
// pixels in flight per thread and blocks per SM.
constexpr int kGapThreads = 64;

// cp.async is sm_80+; older cards take v1's loop and compile none of this. The emulated build
// (kernels/emu) has no PTX: it runs v1's loop too, so this path is only compiled, never emulated.
#if !GRAFT_CUDA_EMULATION && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)
__device__ __forceinline__ void cp_async16(float4* smem, const float* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  // .cg: cache in L2 only; every byte is read once.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}

// Closes the group of copies issued since the last commit (an empty group when there were none, so
// every thread commits once per batch and the group count stays uniform).
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#endif

template <int BATCH, int STAGES>
__global__ void __launch_bounds__(kGapThreads)
    global_avg_pool_v2_kernel(int n, int hw, int c, float inv, const float* __restrict__ x,
                              float* __restrict__ y) {
  const int t = threadIdx.x;
  const int cv = c / 4;
  const int64_t total = static_cast<int64_t>(n) * cv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kGapThreads) + t; i < total;
       i += static_cast<int64_t>(gridDim.x) * kGapThreads) {
    const int b = static_cast<int>(i / cv);
    const int ch = static_cast<int>(i % cv) * 4;
    const float* xp = x + static_cast<int64_t>(b) * hw * c + ch;
    float* yp = y + static_cast<int64_t>(b) * c + ch;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    __shared__ float4 ring[STAGES][BATCH][kGapThreads];
    const int batches = (hw + BATCH - 1) / BATCH;
    // Copies batch k (if there is one) into slot k % STAGES and commits it as one group.
    auto issue = [&](int k) {
      if (k < batches) {
        const int p0 = k * BATCH;
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
          if (p0 + u < hw)
            cp_async16(&ring[k % STAGES][u][t], xp + static_cast<int64_t>(p0 + u) * c);
      }
      cp_async_commit();
    };
#pragma unroll
    for (int k = 0; k < STAGES; ++k) issue(k);
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    for (int k = 0; k < batches; ++k) {
      cp_async_wait<STAGES - 1>();  // groups 0..k are complete: batch k has landed
      const int p0 = k * BATCH;
#pragma unroll
      for (int u = 0; u < BATCH; ++u) {
        if (p0 + u < hw) {
          const float4 v = ring[k % STAGES][u][t];
          a0 += v.x, a1 += v.y, a2 += v.z, a3 += v.w;
        }
      }
      issue(k + STAGES);
    }
    st4(yp, make_float4(a0 * inv, a1 * inv, a2 * inv, a3 * inv));
#else
    gap_column<4>(xp, hw, c, inv, yp);  // no cp.async before sm_80: v1's loop, same order
#endif
  }
}

}  // namespace

void max_pool2d(const PoolShape& s, const float* x, float* y, cudaStream_t stream) {
  pool2d("max_pool2d", true, s, false, x, y, stream);
}

void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y, cudaStream_t stream) {
  pool2d("avg_pool2d", false, s, count_pad, x, y, stream);
}

namespace {

// Validates the shape; returns false when there is nothing to do.
bool check_global_avg_pool(int n, int hw, int c, const std::string& detail) {
  if (n < 0 || hw <= 0 || c < 0) invalid("global_avg_pool", "bad shape: " + detail);
  return n > 0 && c > 0;
}

std::string gap_detail(int n, int hw, int c) {
  return "n=" + std::to_string(n) + " hw=" + std::to_string(hw) + " c=" + std::to_string(c);
}

}  // namespace

void global_avg_pool_v1(int n, int hw, int c, const float* x, float* y, cudaStream_t stream) {
  const std::string detail = gap_detail(n, hw, c);
  if (!check_global_avg_pool(n, hw, c, detail)) return;
  const float inv = 1.f / static_cast<float>(hw);
  const bool vec = mult4(c) && aligned16(x) && aligned16(y);
  const int64_t total = int64_t(n) * (vec ? c / 4 : c);
  // Small blocks: n*c/4 threads is only a few hundred at batch 1, so spread them over more SMs.
  if (vec) {
    GRAFT_LAUNCH(grid_for(total, 128), 128, 0, stream, global_avg_pool_v1_kernel<4>)
    (n, hw, c, inv, x, y);
  } else {
    GRAFT_LAUNCH(grid_for(total, 128), 128, 0, stream, global_avg_pool_v1_kernel<1>)
    (n, hw, c, inv, x, y);
  }
  CUDA_CHECK_LAUNCH("global_avg_pool_v1_kernel", detail);
}

void global_avg_pool_v2(int n, int hw, int c, const float* x, float* y, cudaStream_t stream,
                        int batch, int stages) {
  const std::string detail =
      gap_detail(n, hw, c) + " ring " + std::to_string(batch) + "x" + std::to_string(stages);
  if (!check_global_avg_pool(n, hw, c, detail)) return;
  if (!mult4(c) || !aligned16(x) || !aligned16(y))
    invalid("global_avg_pool_v2", "needs c % 4 == 0 and 16-byte aligned tensors: " + detail);
  const float inv = 1.f / static_cast<float>(hw);
  const unsigned grid = grid_for(int64_t(n) * (c / 4), kGapThreads);
  // The rings the benchmark compares: 16 KB (4x4, the default; 8x2; 2x8) and 32 KB (8x4) blocks.
  if (batch == 4 && stages == 4) {
    GRAFT_LAUNCH(grid, kGapThreads, 0, stream, global_avg_pool_v2_kernel<4, 4>)
    (n, hw, c, inv, x, y);
  } else if (batch == 8 && stages == 2) {
    GRAFT_LAUNCH(grid, kGapThreads, 0, stream, global_avg_pool_v2_kernel<8, 2>)
    (n, hw, c, inv, x, y);
  } else if (batch == 2 && stages == 8) {
    GRAFT_LAUNCH(grid, kGapThreads, 0, stream, global_avg_pool_v2_kernel<2, 8>)
    (n, hw, c, inv, x, y);
  } else if (batch == 8 && stages == 4) {
    GRAFT_LAUNCH(grid, kGapThreads, 0, stream, global_avg_pool_v2_kernel<8, 4>)
    (n, hw, c, inv, x, y);
  } else
    invalid("global_avg_pool_v2", "no such ring (4x4, 8x2, 2x8 or 8x4): " + detail);
  CUDA_CHECK_LAUNCH("global_avg_pool_v2_kernel", detail);
}

void global_avg_pool(int n, int hw, int c, const float* x, float* y, cudaStream_t stream) {
  if (mult4(c) && aligned16(x) && aligned16(y))
    global_avg_pool_v2(n, hw, c, x, y, stream, 4, 4);
  else
    global_avg_pool_v1(n, hw, c, x, y, stream);  // one channel per thread
}

}  // namespace graft::cuda
