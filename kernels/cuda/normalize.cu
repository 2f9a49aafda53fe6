// uint8 pixels -> float: y = (x / 255 - mean[ch]) / std[ch], bit-identical to the CPU twin.
//
// Like the CPU twin, each block first builds a table of the 256 possible results per channel with
// the contract's exact float expression (IEEE division, no contraction possible), so the
// per-element work is one shared-memory lookup instead of two IEEE divisions (the previous
// version computed them per element and was issue-bound at 31% of copy bandwidth).
//
// Memory-bound: 1 byte in, 4 bytes out per element. The flat [pixels * c] array is cut into
// groups of 4 elements: one 4-byte load and one float4 store per group, so both a warp's loads
// (128 contiguous bytes) and its stores (512 contiguous bytes) are fully coalesced. Each thread
// handles kUnroll groups per trip of the grid-stride loop, a block's width apart, with all loads
// issued before the first store so several are in flight per thread. The channel of element e is
// e % c; c is a template parameter so that modulo is by a constant. For c = 1, 2, 4 a group always
// starts on channel 0 (4g % c == 0); for c = 3 it starts on channel g % 3 (4 == 1 mod 3).
// Misaligned pointers (x not 4-byte, y not 16-byte aligned) take a scalar element-per-thread
// loop over the same table; the last total % 4 elements take it too.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

struct NormParams {
  float mean[4];
  float std[4];
};

inline bool aligned4(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 3u) == 0;
}

template <int C, bool VEC>
__global__ void __launch_bounds__(kThreads)
    normalize_u8_kernel(int64_t total, const NormParams np, const uint8_t* __restrict__ x,
                        float* __restrict__ y) {
  __shared__ float s_tab[C * 256];
  // The channel index is a compile-time constant in this unrolled loop, so np stays in the
  // parameter space (no local-memory copy of the struct).
#pragma unroll
  for (int ch = 0; ch < C; ++ch)
    for (int v = threadIdx.x; v < 256; v += blockDim.x)
      s_tab[ch * 256 + v] = (static_cast<float>(v) / 255.0f - np.mean[ch]) / np.std[ch];
  __syncthreads();

  int64_t done = 0;  // elements covered by the vector loop
  if constexpr (VEC) {
    // Launched with kThreads threads per block; the strides below use the constant.
    const int64_t groups = total / 4;
    const uint32_t* __restrict__ xw = reinterpret_cast<const uint32_t*>(x);
    float4* __restrict__ y4 = reinterpret_cast<float4*>(y);
    const int64_t step = static_cast<int64_t>(gridDim.x) * (kThreads * kUnroll);
    for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x;
         g0 < groups; g0 += step) {
      uint32_t w[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t g = g0 + k * kThreads;
        w[k] = g < groups ? xw[g] : 0u;
      }
      // Group g0 + k*kThreads starts on channel (g0 + k*kThreads) % 3 = (g0 % 3 + k) % 3 for c = 3,
      // since kThreads % 3 == 1: one 64-bit modulo per trip instead of one per group.
      static_assert(kThreads % 3 == 1, "channel stepping below assumes kThreads % 3 == 1");
      int ch0 = C == 3 ? static_cast<int>(static_cast<uint64_t>(g0) % 3u) : 0;
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t g = g0 + k * kThreads;
        if (g < groups) {
          int ch = ch0;
          float o[4];
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            o[b] = s_tab[ch * 256 + ((w[k] >> (8 * b)) & 0xffu)];
            ch = ch + 1 == C ? 0 : ch + 1;
          }
          y4[g] = make_float4(o[0], o[1], o[2], o[3]);
        }
        if constexpr (C == 3) ch0 = ch0 == 2 ? 0 : ch0 + 1;
      }
    }
    done = groups * 4;
  }
  const int64_t rest = total - done;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rest;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = done + i;
    const int ch = static_cast<int>(e % C);
    y[e] = s_tab[ch * 256 + x[e]];
  }
}

template <int C>
void launch(int64_t total, const NormParams& np, const uint8_t* x, float* y, cudaStream_t stream) {
  // One thread covers kUnroll groups of 4 elements per trip; grid_for caps the grid at a few
  // waves and the loop strides over the rest.
  const unsigned grid = grid_for(ceil_div(total, 4 * kUnroll), kThreads);
  if (aligned4(x) && aligned16(y))
    GRAFT_LAUNCH(grid, kThreads, 0, stream, normalize_u8_kernel<C, true>)(total, np, x, y);
  else
    GRAFT_LAUNCH(grid, kThreads, 0, stream, normalize_u8_kernel<C, false>)(total, np, x, y);
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
  switch (c) {
    case 1:
      launch<1>(total, np, x, y, stream);
      break;
    case 2:
      launch<2>(total, np, x, y, stream);
      break;
    case 3:
      launch<3>(total, np, x, y, stream);
      break;
    default:
      launch<4>(total, np, x, y, stream);
      break;
  }
  CUDA_CHECK_LAUNCH("normalize_u8_kernel", detail);
}

}  // namespace graft::cuda
