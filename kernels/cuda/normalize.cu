// uint8 pixels -> float: y = (x / 255 - mean[ch]) / std[ch], the contract's exact formula (IEEE
// division, as the CPU twin's table), so results are bit-identical. mean/std travel by value in
// the kernel arguments. Memory-bound: 1 byte in, 4 bytes out per element. Each thread handles 16
// consecutive bytes (one 16-byte load, four float4 stores) of the flat [pixels * c] array; the
// channel of element e is e % c.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

struct NormParams {
  float mean[4];
  float std[4];
};

// mean/std are staged in shared memory: indexing the by-value parameter struct with a run-time
// channel would copy it to local memory (ptxas reported a 32-byte stack frame).
__device__ __forceinline__ float norm1(uint32_t v, int ch, const float* mean, const float* sd) {
  return (static_cast<float>(v) / 255.0f - mean[ch]) / sd[ch];
}

__global__ void normalize_u8_kernel(int64_t total, int c, const NormParams np, bool vec,
                                    const uint8_t* __restrict__ x, float* __restrict__ y) {
  __shared__ float s_mean[4], s_std[4];
  if (threadIdx.x == 0) {
#pragma unroll
    for (int ch = 0; ch < 4; ++ch) s_mean[ch] = np.mean[ch], s_std[ch] = np.std[ch];
  }
  __syncthreads();
  const int64_t chunks = (total + 15) / 16;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < chunks;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e0 = q * 16;
    int ch = static_cast<int>(e0 % c);
    if (vec && e0 + 16 <= total) {
      const uint4 raw = *reinterpret_cast<const uint4*>(x + e0);
      const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int wd = 0; wd < 4; ++wd) {
        float o[4];
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          o[b] = norm1((words[wd] >> (8 * b)) & 0xffu, ch, s_mean, s_std);
          ch = ch + 1 == c ? 0 : ch + 1;
        }
        st4(y + e0 + wd * 4, make_float4(o[0], o[1], o[2], o[3]));
      }
    } else {
      for (int64_t e = e0; e < e0 + 16 && e < total; ++e) {
        y[e] = norm1(x[e], ch, s_mean, s_std);
        ch = ch + 1 == c ? 0 : ch + 1;
      }
    }
  }
}

}  // namespace

void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y, cudaStream_t stream) {
  const std::string detail = "pixels=" + std::to_string(pixels) + " c=" + std::to_string(c);
  if (pixels < 0 || c <= 0 || c > 4)
    invalid("normalize_u8", "bad shape (c must be 1..4): " + detail);
  if (pixels == 0) return;
  if (!mean || !std) invalid("normalize_u8", "mean and std (host arrays) are required: " + detail);
  NormParams np{};
  for (int ch = 0; ch < 4; ++ch) {
    np.mean[ch] = ch < c ? mean[ch] : 0.f;
    np.std[ch] = ch < c ? std[ch] : 1.f;
  }
  const int64_t total = pixels * c;
  const bool vec = aligned16(x) && aligned16(y);
  normalize_u8_kernel<<<grid_for(ceil_div(total, 16), 256), 256, 0, stream>>>(total, c, np, vec, x,
                                                                              y);
  CUDA_CHECK_LAUNCH("normalize_u8_kernel", detail);
}

}  // namespace graft::cuda
