// Row-wise softmax and the fused softmax cross-entropy (forward loss and dlogits in one kernel).
// One warp per row, 8 rows per 256-thread block. Memory-bound: the ideal is one read of the logits
// and one write of the output.
//
// Rows of up to 32*V floats (V = 1..32, so up to 1024 classes) are held in registers: lane l owns
// elements l, l+32, l+64, ... (each warp load is 128 contiguous bytes), so the logits are read from
// memory exactly once and the max / sum / write passes run from registers. Longer rows stream from
// memory three times (max, sums, write; the later passes mostly hit L2).
// Stable: everything is computed from z - max. The loss uses the same centred form as the CPU twin:
//   loss = log(sum_j exp(z_j - m)) - (off * sum_j (z_j - m) + (on - off) * (z_label - m))
// with on = 1 - smoothing + smoothing/c and off = smoothing/c.
// Warp sums use a fixed butterfly, so results are deterministic run to run.
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

constexpr int kRowsPerBlock = 8;

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct XentArgs {
  const int32_t* labels;
  float off, on, grad_scale;
  float* loss;
  float* dlogits;
};

// XENT = false: y = softmax(x) (y may alias x). XENT = true: loss and optional dlogits.
// V > 0: the row lives in V registers per lane (c <= 32*V). V == 0: streaming, any c.
template <int V, bool XENT>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    softmax_rows_kernel(int n, int c, const float* x, float* y, const XentArgs xa) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= n) return;  // whole warps exit together: the shuffles below stay full-warp
  const float* xr = x + static_cast<int64_t>(row) * c;

  float m, sum, zsum = 0.f;
  float z[V > 0 ? V : 1];
  if constexpr (V > 0) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int j = lane + 32 * i;
      z[i] = j < c ? xr[j] : -INFINITY;
    }
    m = -INFINITY;
#pragma unroll
    for (int i = 0; i < V; ++i) m = fmaxf(m, z[i]);
    m = warp_max(m);
    sum = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (lane + 32 * i < c) {
        sum += expf(z[i] - m);
        if constexpr (XENT) zsum += z[i] - m;
      }
    }
  } else {
    m = -INFINITY;
    for (int j = lane; j < c; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max(m);
    sum = 0.f;
    for (int j = lane; j < c; j += 32) {
      const float t = xr[j] - m;
      sum += expf(t);
      if constexpr (XENT) zsum += t;
    }
  }
  sum = warp_sum(sum);
  const float inv = 1.f / sum;

  if constexpr (!XENT) {
    float* yr = y + static_cast<int64_t>(row) * c;
    if constexpr (V > 0) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int j = lane + 32 * i;
        if (j < c) yr[j] = expf(z[i] - m) * inv;
      }
    } else {
      for (int j = lane; j < c; j += 32) yr[j] = expf(xr[j] - m) * inv;
    }
  } else {
    zsum = warp_sum(zsum);
    const int label = xa.labels[row];
    if (lane == 0) {
      const float zl = (label >= 0 && label < c) ? xr[label] - m : NAN;  // NaN flags a bad label
      xa.loss[row] = logf(sum) - (xa.off * zsum + (xa.on - xa.off) * zl);
    }
    if (xa.dlogits) {
      float* d = xa.dlogits + static_cast<int64_t>(row) * c;
      if constexpr (V > 0) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int j = lane + 32 * i;
          if (j < c) {
            const float q = j == label ? xa.on : xa.off;
            d[j] = xa.grad_scale * (expf(z[i] - m) * inv - q);
          }
        }
      } else {
        for (int j = lane; j < c; j += 32) {
          const float q = j == label ? xa.on : xa.off;
          d[j] = xa.grad_scale * (expf(xr[j] - m) * inv - q);
        }
      }
    }
  }
}

template <bool XENT>
void launch_rows(int n, int c, const float* x, float* y, const XentArgs& xa, cudaStream_t stream,
                 const char* name, const std::string& detail) {
  const unsigned grid = static_cast<unsigned>(ceil_div(n, kRowsPerBlock));
  const dim3 block(32 * kRowsPerBlock);
  const int per_lane = static_cast<int>(ceil_div(c, 32));
  if (per_lane <= 1)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<1, XENT>)(n, c, x, y, xa);
  else if (per_lane <= 2)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<2, XENT>)(n, c, x, y, xa);
  else if (per_lane <= 4)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<4, XENT>)(n, c, x, y, xa);
  else if (per_lane <= 8)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<8, XENT>)(n, c, x, y, xa);
  else if (per_lane <= 16)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<16, XENT>)(n, c, x, y, xa);
  else if (per_lane <= 32)
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<32, XENT>)(n, c, x, y, xa);
  else
    GRAFT_LAUNCH(grid, block, 0, stream, softmax_rows_kernel<0, XENT>)(n, c, x, y, xa);
  CUDA_CHECK_LAUNCH(name, detail);
}

}  // namespace

void softmax(int n, int c, const float* x, float* y, cudaStream_t stream) {
  const std::string detail = "n=" + std::to_string(n) + " c=" + std::to_string(c);
  if (n < 0 || c <= 0) invalid("softmax", "bad shape: " + detail);
  if (n == 0) return;
  launch_rows<false>(n, c, x, y, XentArgs{}, stream, "softmax_rows_kernel", detail);
}

void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits, cudaStream_t stream) {
  const std::string detail = "n=" + std::to_string(n) + " c=" + std::to_string(c);
  if (n < 0 || c <= 0) invalid("softmax_xent", "bad shape: " + detail);
  if (n == 0) return;
  if (!loss || !labels) invalid("softmax_xent", "loss and labels are required: " + detail);
  const float off = smoothing / static_cast<float>(c), on = 1.f - smoothing + off;
  const XentArgs xa{labels, off, on, grad_scale, loss, dlogits};
  launch_rows<true>(n, c, logits, nullptr, xa, stream, "softmax_xent_rows_kernel", detail);
}

}  // namespace graft::cuda
