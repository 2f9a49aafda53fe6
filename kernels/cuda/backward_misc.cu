// The small backward ops of fine-tuning through the backbone: bias_grad (column sums),
// act_backward, global_avg_pool_backward, max_pool2d_backward, add_inplace, and sum_partials, the
// fixed-order second pass every split reduction here ends with.
//
// Determinism without atomics (see kernels/ops.h): bias_grad v2 splits the rows into chunks whose
// number depends on (rows, c) only; each chunk's column sums are summed in ascending row order by
// `by` threads (rows ty, ty+by, ...), combined by a fixed tree over ty in shared memory, and
// written to the chunk's own partial row; sum_partials then adds the partial rows in chunk order.
// Every output element always sees the same additions in the same order. max_pool2d_backward is
// written in gather form: each input element sums, in (oy, ox) order, the gradients of the windows
// whose first maximum it is, so no two threads ever write one element.
//
// Written without a GPU at hand: compiled for sm_75 and sm_90, checked against the CPU twins by
// tests/test_cuda_backward.cpp, which has not yet run on a GPU. Unverified until it has.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"

namespace graft::cuda {

void check_workspace(const char* op, size_t need, const void* workspace, size_t workspace_bytes,
                     const std::string& detail) {
  if (need == 0) return;
  if (!workspace || workspace_bytes < need)
    invalid(op, "workspace of " + std::to_string(workspace_bytes) + " bytes" +
                    (workspace ? "" : " (null)") + ", needs " + std::to_string(need) + ": " +
                    detail);
}

namespace {

__global__ void sum_partials_kernel(int splits, int64_t count, const float* __restrict__ partials,
                                    float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = partials[i];
    for (int s = 1; s < splits; ++s) acc += partials[s * count + i];
    out[i] = acc;
  }
}

}  // namespace

void sum_partials(int splits, int64_t count, const float* partials, float* out, cudaStream_t stream,
                  const char* name, const std::string& detail) {
  if (count <= 0) return;
  GRAFT_LAUNCH(grid_for(count, 256), 256, 0, stream, sum_partials_kernel)
  (splits, count, partials, out);
  CUDA_CHECK_LAUNCH(name, detail + " splits=" + std::to_string(splits));
}

// ---- bias_grad ------------------------------------------------------------------------------

namespace {

std::string bias_detail(int64_t rows, int c) {
  return "rows=" + std::to_string(rows) + " c=" + std::to_string(c);
}

bool check_bias_grad(const char* op, int64_t rows, int c) {
  if (rows < 0 || c < 0) invalid(op, "bad shape: " + bias_detail(rows, c));
  return c > 0;  // rows == 0 still writes zeros
}

__global__ void bias_grad_v1_kernel(int64_t rows, int c, const float* __restrict__ dy,
                                    float* __restrict__ db) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float acc = 0.f;
  for (int64_t i = 0; i < rows; ++i) acc += dy[i * c + j];
  db[j] = acc;
}

// Rows per chunk: at least 256 (so a chunk amortises its tree), and at most 1024 chunks (bounding
// the workspace at 1024 * c floats). Depends on rows only.
int64_t bias_chunk_rows(int64_t rows) {
  return std::max<int64_t>(256, ceil_div(rows, 1024));
}

int pow2_at_least(int v) {
  int p = 1;
  while (p < v && p < 32) p <<= 1;
  return p;
}

// Block (bx, by): bx column groups of V floats, by = 256 / bx row lanes (a power of two).
template <int V>
__global__ void bias_grad_v2_kernel(int64_t rows, int c, int64_t chunk_rows,
                                    const float* __restrict__ dy, float* __restrict__ out) {
  GRAFT_DYNAMIC_SHARED(float, red);  // [by][bx][V]
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int col = (blockIdx.y * bx + tx) * V;
  const int64_t r0 = blockIdx.x * chunk_rows;
  const int64_t r1 = min(rows, r0 + chunk_rows);
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  if (col < c) {
    for (int64_t r = r0 + ty; r < r1; r += by) {
      if constexpr (V == 4) {
        const float4 v = ld4(dy + r * c + col);
        acc[0] += v.x, acc[1] += v.y, acc[2] += v.z, acc[3] += v.w;
      } else {
        acc[0] += dy[r * c + col];
      }
    }
  }
  float* mine = red + (ty * bx + tx) * V;
#pragma unroll
  for (int j = 0; j < V; ++j) mine[j] = acc[j];
  __syncthreads();
  for (int half = by / 2; half > 0; half /= 2) {  // fixed tree: lane ty adds lane ty + half
    if (ty < half) {
      const float* other = red + ((ty + half) * bx + tx) * V;
#pragma unroll
      for (int j = 0; j < V; ++j) mine[j] += other[j];
    }
    __syncthreads();
  }
  if (ty == 0 && col < c) {
    float* dst = out + blockIdx.x * static_cast<int64_t>(c) + col;
#pragma unroll
    for (int j = 0; j < V; ++j) dst[j] = mine[j];
  }
}

}  // namespace

void bias_grad_v1(int64_t rows, int c, const float* dy, float* db, cudaStream_t stream) {
  if (!check_bias_grad("bias_grad_v1", rows, c)) return;
  GRAFT_LAUNCH(static_cast<unsigned>(ceil_div(c, 128)), 128, 0, stream, bias_grad_v1_kernel)
  (rows, c, dy, db);
  CUDA_CHECK_LAUNCH("bias_grad_v1_kernel", bias_detail(rows, c));
}

size_t bias_grad_v2_workspace(int64_t rows, int c) {
  if (rows <= 0 || c <= 0) return 0;
  const int64_t splits = ceil_div(rows, bias_chunk_rows(rows));
  return splits > 1 ? sizeof(float) * size_t(splits) * size_t(c) : 0;
}

void bias_grad_v2(int64_t rows, int c, const float* dy, float* db, void* workspace,
                  size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = bias_detail(rows, c);
  if (!check_bias_grad("bias_grad_v2", rows, c)) return;
  if (rows == 0) {
    CUDA_CHECK(cudaMemsetAsync(db, 0, sizeof(float) * size_t(c), stream));
    return;
  }
  check_workspace("bias_grad", bias_grad_v2_workspace(rows, c), workspace, workspace_bytes, detail);
  const int64_t chunk = bias_chunk_rows(rows);
  const int64_t splits = ceil_div(rows, chunk);
  float* out = splits > 1 ? static_cast<float*>(workspace) : db;
  const bool vec = mult4(c) && aligned16(dy) && aligned16(out) && aligned16(db);
  const int cv = vec ? c / 4 : c;
  const int bx = pow2_at_least(cv), by = 256 / bx;
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(ceil_div(cv, bx)));
  if (grid.y > 65535) invalid("bias_grad", "too many columns: " + detail);
  const size_t smem = sizeof(float) * 256 * (vec ? 4 : 1);
  if (vec) {
    GRAFT_LAUNCH(grid, dim3(bx, by), smem, stream, bias_grad_v2_kernel<4>)(rows, c, chunk, dy, out);
  } else {
    GRAFT_LAUNCH(grid, dim3(bx, by), smem, stream, bias_grad_v2_kernel<1>)(rows, c, chunk, dy, out);
  }
  CUDA_CHECK_LAUNCH("bias_grad_v2_kernel", detail);
  if (splits > 1) sum_partials(int(splits), c, out, db, stream, "bias_grad_sum", detail);
}

size_t bias_grad_workspace(int64_t rows, int c) {
  return bias_grad_v2_workspace(rows, c);
}

void bias_grad(int64_t rows, int c, const float* dy, float* db, void* workspace,
               size_t workspace_bytes, cudaStream_t stream) {
  bias_grad_v2(rows, c, dy, db, workspace, workspace_bytes, stream);
}

// ---- Element-wise: act_backward, add_inplace, global_avg_pool_backward -------------------------

namespace {

// act' from the saved output: relu passes where y > 0, relu6 where 0 < y < 6 (a select, like
// relu_backward and the CPU twin, so a blocked gradient is exactly 0).
__device__ __forceinline__ float act_grad(float y, float g, int act) {
  if (act == static_cast<int>(Act::relu)) return y > 0.f ? g : 0.f;
  return (y > 0.f && y < 6.f) ? g : 0.f;
}

template <int V>
__global__ void act_backward_kernel(int64_t units, int act, const float* __restrict__ y,
                                    float* __restrict__ dy) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < units;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (V == 4) {
      const float4 yv = ld4(y + q * 4);
      float4 g = ld4(dy + q * 4);
      g.x = act_grad(yv.x, g.x, act);
      g.y = act_grad(yv.y, g.y, act);
      g.z = act_grad(yv.z, g.z, act);
      g.w = act_grad(yv.w, g.w, act);
      st4(dy + q * 4, g);
    } else {
      dy[q] = act_grad(y[q], dy[q], act);
    }
  }
}

template <int V>
__global__ void add_inplace_kernel(int64_t units, const float* __restrict__ x,
                                   float* __restrict__ y) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < units;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (V == 4) {
      const float4 a = ld4(x + q * 4);
      float4 b = ld4(y + q * 4);
      b.x += a.x, b.y += a.y, b.z += a.z, b.w += a.w;
      st4(y + q * 4, b);
    } else {
      y[q] += x[q];
    }
  }
}

// Runs KERNEL<4> over the 16-byte-aligned float4 prefix and KERNEL<1> over the count % 4 tail
// (or <1> over everything when a pointer is not aligned).
template <typename Launch>
void vec_then_tail(int64_t count, bool aligned, Launch&& launch) {
  const int64_t head = aligned ? count / 4 : 0;
  if (head > 0) launch(std::integral_constant<int, 4>{}, head, int64_t(0));
  if (head * 4 < count) launch(std::integral_constant<int, 1>{}, count - head * 4, head * 4);
}

template <int V>
__global__ void gap_backward_kernel(int64_t units, int hw, int cv, float hwf,
                                    const float* __restrict__ dy, float* __restrict__ dx) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < units;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(q % cv);
    const int64_t b = q / cv / hw;
    const float* g = dy + (b * cv + ch) * V;
    if constexpr (V == 4) {
      const float4 v = ld4(g);
      st4(dx + q * 4, make_float4(v.x / hwf, v.y / hwf, v.z / hwf, v.w / hwf));
    } else {
      dx[q] = g[0] / hwf;
    }
  }
}

}  // namespace

void act_backward(int64_t count, Act act, const float* y, float* dy, cudaStream_t stream) {
  const std::string detail = "count=" + std::to_string(count);
  if (count < 0) invalid("act_backward", "bad count: " + detail);
  if (count == 0 || act == Act::none) return;  // identity: dz = dy, nothing to write
  const int a = static_cast<int>(act);
  vec_then_tail(count, aligned16(y) && aligned16(dy), [&](auto v, int64_t units, int64_t off) {
    constexpr int V = decltype(v)::value;
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, act_backward_kernel<V>)
    (units, a, y + off, dy + off);
    CUDA_CHECK_LAUNCH("act_backward_kernel", detail);
  });
}

void add_inplace(int64_t count, const float* x, float* y, cudaStream_t stream) {
  const std::string detail = "count=" + std::to_string(count);
  if (count < 0) invalid("add_inplace", "bad count: " + detail);
  if (count == 0) return;
  vec_then_tail(count, aligned16(x) && aligned16(y), [&](auto v, int64_t units, int64_t off) {
    constexpr int V = decltype(v)::value;
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, add_inplace_kernel<V>)
    (units, x + off, y + off);
    CUDA_CHECK_LAUNCH("add_inplace_kernel", detail);
  });
}

void global_avg_pool_backward(int n, int hw, int c, const float* dy, float* dx,
                              cudaStream_t stream) {
  const std::string detail =
      "n=" + std::to_string(n) + " hw=" + std::to_string(hw) + " c=" + std::to_string(c);
  if (n < 0 || hw <= 0 || c < 0) invalid("global_avg_pool_backward", "bad shape: " + detail);
  if (n == 0 || c == 0) return;
  const bool vec = mult4(c) && aligned16(dy) && aligned16(dx);
  const int cv = vec ? c / 4 : c;
  const int64_t units = int64_t(n) * hw * cv;
  const float hwf = static_cast<float>(hw);
  if (vec) {
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, gap_backward_kernel<4>)
    (units, hw, cv, hwf, dy, dx);
  } else {
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, gap_backward_kernel<1>)
    (units, hw, cv, hwf, dy, dx);
  }
  CUDA_CHECK_LAUNCH("global_avg_pool_backward_kernel", detail);
}

// ---- max_pool2d_backward ----------------------------------------------------------------------

namespace {

struct PoolBwdArgs {
  int n, in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
};

// True when tap (ky, kx) of the window at (iy0, ix0) is the first maximum: its value equals the
// window's output yv and no earlier in-bounds tap (ky then kx order) does. Forward keeps a value
// only when strictly greater, so the first tap equal to the maximum is the one it picked.
__device__ __forceinline__ bool first_max(const PoolBwdArgs& a, const float* xb, int iy0, int ix0,
                                          int ky, int kx, float xv, float yv) {
  if (!(xv == yv)) return false;
  for (int ty = max(0, -iy0); ty <= ky; ++ty) {
    const int iy = iy0 + ty;
    if (iy >= a.in_h) break;
    const int tx_end = ty < ky ? a.k_w : kx;  // taps strictly before (ky, kx)
    for (int tx = max(0, -ix0); tx < tx_end; ++tx) {
      const int ix = ix0 + tx;
      if (ix >= a.in_w) break;
      if (xb[(static_cast<int64_t>(iy) * a.in_w + ix) * a.c] == yv) return false;
    }
  }
  return true;
}

__global__ void max_pool2d_backward_kernel(const PoolBwdArgs a, const float* __restrict__ x,
                                           const float* __restrict__ y,
                                           const float* __restrict__ dy, float* __restrict__ dx) {
  const int64_t total = static_cast<int64_t>(a.n) * a.in_h * a.in_w * a.c;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(i % a.c);
    const int64_t pix = i / a.c;
    const int ix = static_cast<int>(pix % a.in_w);
    const int64_t row = pix / a.in_w;
    const int iy = static_cast<int>(row % a.in_h);
    const int b = static_cast<int>(row / a.in_h);
    const float xv = x[i];
    const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * a.c + ch;
    const int64_t ob = static_cast<int64_t>(b) * a.out_h * a.out_w;
    // Windows containing (iy, ix): oy*stride - pad <= iy <= oy*stride - pad + k - 1.
    const int ty = iy + a.pad_top, tx = ix + a.pad_left;
    const int oy0 = max(0, (ty - a.k_h + a.stride_h) / a.stride_h);  // ceil((ty-k+1)/s), ty>=0
    const int oy1 = min(a.out_h - 1, ty / a.stride_h);
    const int ox0 = max(0, (tx - a.k_w + a.stride_w) / a.stride_w);
    const int ox1 = min(a.out_w - 1, tx / a.stride_w);
    float acc = 0.f;
    for (int oy = oy0; oy <= oy1; ++oy) {
      const int iy0 = oy * a.stride_h - a.pad_top;
      for (int ox = ox0; ox <= ox1; ++ox) {
        const int ix0 = ox * a.stride_w - a.pad_left;
        const int64_t o = (ob + static_cast<int64_t>(oy) * a.out_w + ox) * a.c + ch;
        if (first_max(a, xb, iy0, ix0, iy - iy0, ix - ix0, xv, y[o])) acc += dy[o];
      }
    }
    dx[i] = acc;
  }
}

}  // namespace

void max_pool2d_backward(const PoolShape& s, const float* x, const float* y, const float* dy,
                         float* dx, cudaStream_t stream) {
  const std::string detail = pool_shape_str(s);
  if (s.n < 0 || s.in_h < 0 || s.in_w < 0 || s.c < 0 || s.out_h < 0 || s.out_w < 0 || s.k_h <= 0 ||
      s.k_w <= 0 || s.stride_h <= 0 || s.stride_w <= 0 || s.pad_top < 0 || s.pad_left < 0)
    invalid("max_pool2d_backward", "bad shape: " + detail);
  if (s.n == 0 || s.in_h == 0 || s.in_w == 0 || s.c == 0) return;
  const PoolBwdArgs a{s.n,   s.in_h, s.in_w,     s.c,        s.out_h,   s.out_w,
                      s.k_h, s.k_w,  s.stride_h, s.stride_w, s.pad_top, s.pad_left};
  const int64_t total = int64_t(s.n) * s.in_h * s.in_w * s.c;
  GRAFT_LAUNCH(grid_for(total, 256), 256, 0, stream, max_pool2d_backward_kernel)(a, x, y, dy, dx);
  CUDA_CHECK_LAUNCH("max_pool2d_backward_kernel", detail);
}

}  // namespace graft::cuda
