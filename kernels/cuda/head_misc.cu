// Small head-side helpers: gathering feature-cache rows into a batch, and ReLU's backward.
// Both memory-bound, grid-stride, float4 when the row length is a multiple of 4 and the pointers
// are 16-byte aligned.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

// Thread per float4 (or float) of the output; the source row comes from rows[i] (device memory).
template <int V>
__global__ void gather_rows_kernel(int n, int cols, const float* __restrict__ src,
                                   const int32_t* __restrict__ rows, float* __restrict__ dst) {
  const int cv = cols / V;
  const int64_t total = static_cast<int64_t>(n) * cv;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < total;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(q / cv);
    const int j = static_cast<int>(q - static_cast<int64_t>(i) * cv) * V;
    const float* s = src + static_cast<int64_t>(rows[i]) * cols + j;
    float* d = dst + static_cast<int64_t>(i) * cols + j;
    if constexpr (V == 4)
      st4(d, ld4(s));
    else
      d[0] = s[0];
  }
}

template <int V>
__global__ void relu_backward_kernel(int64_t units, const float* __restrict__ y, float* dy) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < units;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (V == 4) {
      const float4 yv = ld4(y + q * 4);
      float4 g = ld4(dy + q * 4);
      g.x = yv.x > 0.f ? g.x : 0.f;
      g.y = yv.y > 0.f ? g.y : 0.f;
      g.z = yv.z > 0.f ? g.z : 0.f;
      g.w = yv.w > 0.f ? g.w : 0.f;
      st4(dy + q * 4, g);
    } else {
      dy[q] = y[q] > 0.f ? dy[q] : 0.f;
    }
  }
}

}  // namespace

void gather_rows(int n, int cols, const float* src, const int32_t* rows, float* dst,
                 cudaStream_t stream) {
  const std::string detail = "n=" + std::to_string(n) + " cols=" + std::to_string(cols);
  if (n < 0 || cols < 0) invalid("gather_rows", "bad shape: " + detail);
  if (n == 0 || cols == 0) return;
  const bool vec = mult4(cols) && aligned16(src) && aligned16(dst);
  const int64_t units = int64_t(n) * (vec ? cols / 4 : cols);
  if (vec) {
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, gather_rows_kernel<4>)
    (n, cols, src, rows, dst);
  } else {
    GRAFT_LAUNCH(grid_for(units, 256), 256, 0, stream, gather_rows_kernel<1>)
    (n, cols, src, rows, dst);
  }
  CUDA_CHECK_LAUNCH("gather_rows_kernel", detail);
}

void relu_backward(int64_t count, const float* y, float* dy, cudaStream_t stream) {
  const std::string detail = "count=" + std::to_string(count);
  if (count < 0) invalid("relu_backward", "bad count: " + detail);
  if (count == 0) return;
  // float4 over the aligned prefix; the (count % 4) tail is a second, scalar launch.
  const bool vec = aligned16(y) && aligned16(dy);
  const int64_t head = vec ? count / 4 : 0;
  if (head > 0) {
    GRAFT_LAUNCH(grid_for(head, 256), 256, 0, stream, relu_backward_kernel<4>)(head, y, dy);
    CUDA_CHECK_LAUNCH("relu_backward_kernel", detail);
  }
  const int64_t done = head * 4;
  if (done < count) {
    GRAFT_LAUNCH(grid_for(count - done, 256), 256, 0, stream, relu_backward_kernel<1>)
    (count - done, y + done, dy + done);
    CUDA_CHECK_LAUNCH("relu_backward_kernel", detail);
  }
}

}  // namespace graft::cuda
