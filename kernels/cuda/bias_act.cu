// The conv epilogue on its own: y[r][j] = act(x[r][j] + bias[j] + residual[r][j]). Memory-bound:
// a grid-stride loop over float4s (when c % 4 == 0 and every pointer is 16-byte aligned, so a
// float4 never straddles two rows) or over scalars otherwise. y may alias x: each element is read,
// then written, by the same thread.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

__global__ void bias_act_vec_kernel(int64_t quads, int c, const float* x, const float* bias,
                                    const float* residual, int act, float* y) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < quads;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = q * 4;
    float4 v = ld4(x + i);
    if (bias) {
      float4 b = ld4(bias + static_cast<int>(i % c));
      v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
    }
    if (residual) {
      float4 r = ld4(residual + i);
      v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
    }
    v.x = apply_act(v.x, act);
    v.y = apply_act(v.y, act);
    v.z = apply_act(v.z, act);
    v.w = apply_act(v.w, act);
    st4(y + i, v);
  }
}

__global__ void bias_act_scalar_kernel(int64_t total, int c, const float* x, const float* bias,
                                       const float* residual, int act, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = x[i];
    if (bias) v += bias[i % c];
    if (residual) v += residual[i];
    y[i] = apply_act(v, act);
  }
}

}  // namespace

void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y, cudaStream_t stream) {
  if (rows < 0 || c < 0)
    invalid("bias_act", "bad shape rows=" + std::to_string(rows) + " c=" + std::to_string(c));
  if (rows == 0 || c == 0) return;
  const int64_t total = rows * c;
  const std::string detail = "rows=" + std::to_string(rows) + " c=" + std::to_string(c);
  const bool vec = mult4(c) && aligned16(x) && aligned16(y) && (!bias || aligned16(bias)) &&
                   (!residual || aligned16(residual));
  if (vec) {
    GRAFT_LAUNCH(grid_for(total / 4, 256), 256, 0, stream, bias_act_vec_kernel)
    (total / 4, c, x, bias, residual, static_cast<int>(act), y);
    CUDA_CHECK_LAUNCH("bias_act_vec_kernel", detail);
  } else {
    GRAFT_LAUNCH(grid_for(total, 256), 256, 0, stream, bias_act_scalar_kernel)
    (total, c, x, bias, residual, static_cast<int>(act), y);
    CUDA_CHECK_LAUNCH("bias_act_scalar_kernel", detail);
  }
}

}  // namespace graft::cuda
