// Direct convolution for 1-4 input channels and one group: the 3-channel stems (EfficientNet's
// 3x3 stride 2 -> 32, ResNet's 7x7 stride 2 -> 64).
//
// Why not the implicit GEMM: with in_c = 3 no operand is float4-able, so the GEMM takes its scalar
// path, and its K (k_h * k_w * 3 = 27 or 147) is padded up to 16-wide tiles of a 128-row im2col
// panel that it rebuilds in shared memory for every block. The direct form needs none of that:
// the weights are tiny (27 x 32 floats for EfficientNet's stem), so every block keeps all of them
// in shared memory, and a thread reads its window's taps straight from global memory (neighbouring
// threads share taps, so they come from L1) and does k_h * k_w * in_c * 8 FMAs.
//
// Thread layout: a thread owns one output pixel and 8 output channels, as two float4 groups half
// the channels apart: with TPP = out_c / 8 threads per pixel, thread j of a pixel computes channels
// [4j, 4j + 4) and [out_c/2 + 4j, out_c/2 + 4j + 4). Its two 16-byte stores then go, across the
// TPP threads of a pixel, to the first and to the second half of the pixel's channels: every store
// instruction of a warp writes whole 32-byte sectors. The weight reads of a warp touch TPP distinct
// float4s per instruction (a broadcast, no bank conflicts).
//
// Sums run over the taps in (ky, kx, ci) order from +0, then + bias, + residual, act, like the
// other conv paths. Taps in the padding are skipped where the CPU twin's im2col multiplies them by
// zero, so the two agree to rounding (the tests' 1e-5), not bit for bit.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_internal.cuh"

namespace graft::cuda {
namespace {

constexpr int kScThreads = 256;
// Resident blocks per SM the register budget is set for (48 registers a thread; without the bound
// ptxas picked 48 for the 4-channel kernel anyway, and spilled). Turing (sm_75) holds at most 1024
// threads per SM, so four blocks there (64 registers a thread).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 750
constexpr int kScBlocksPerSm = 4;
#else
constexpr int kScBlocksPerSm = 5;
#endif
constexpr int64_t kScMaxSmem = 48 * 1024;  // the default dynamic shared memory limit

__device__ __forceinline__ void fma4(float4& acc, float a, float4 w) {
  acc.x = fmaf(a, w.x, acc.x);
  acc.y = fmaf(a, w.y, acc.y);
  acc.z = fmaf(a, w.z, acc.z);
  acc.w = fmaf(a, w.w, acc.w);
}

__device__ __forceinline__ float4 epilogue(float4 v, const float* bias, const float* residual,
                                           int64_t off, int co, int act) {
  if (bias) {
    const float4 b = ld4(bias + co);
    v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
  }
  if (residual) {
    const float4 r = ld4(residual + off + co);
    v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
  }
  return make_float4(apply_act(v.x, act), apply_act(v.y, act), apply_act(v.z, act),
                     apply_act(v.w, act));
}

template <int CIN>
__global__ void __launch_bounds__(kScThreads, kScBlocksPerSm)
    conv_small_cin_kernel(const ConvShape a, int act, const float* __restrict__ x,
                          const float* __restrict__ w, const float* __restrict__ bias,
                          const float* __restrict__ residual, float* __restrict__ y) {
  GRAFT_DYNAMIC_SHARED(float4, ws4);  // all weights, HWIO: [k_h][k_w][CIN][out_c / 4]
  const int c4 = a.out_c / 4;
  const int wcount4 = a.k_h * a.k_w * CIN * c4;
  for (int i = threadIdx.x; i < wcount4; i += kScThreads) ws4[i] = ld4(w + 4 * i);
  __syncthreads();

  const int tpp = a.out_c / 8;  // threads per output pixel
  const int half4 = c4 / 2;     // float4 offset of the second channel group
  const int64_t total = static_cast<int64_t>(a.n) * a.out_h * a.out_w * tpp;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kScThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kScThreads) {
    const int j = static_cast<int>(i % tpp);
    const int64_t pix = i / tpp;
    const int ox = static_cast<int>(pix % a.out_w);
    const int64_t row = pix / a.out_w;
    const int oy = static_cast<int>(row % a.out_h);
    const int b = static_cast<int>(row / a.out_h);
    const float* xb = x + static_cast<int64_t>(b) * a.in_h * a.in_w * CIN;
    const int iy0 = oy * a.stride_h - a.pad_top, ix0 = ox * a.stride_w - a.pad_left;
    float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
    for (int ky = 0; ky < a.k_h; ++ky) {
      const int iy = iy0 + ky;
      if (iy < 0 || iy >= a.in_h) continue;
      for (int kx = 0; kx < a.k_w; ++kx) {
        const int ix = ix0 + kx;
        if (ix < 0 || ix >= a.in_w) continue;
        const float* xp = xb + (iy * a.in_w + ix) * CIN;
        const float4* wt = ws4 + (ky * a.k_w + kx) * CIN * c4 + j;
#pragma unroll
        for (int ci = 0; ci < CIN; ++ci) {
          const float v = __ldg(xp + ci);
          fma4(lo, v, wt[ci * c4]);
          fma4(hi, v, wt[ci * c4 + half4]);
        }
      }
    }
    const int64_t off = pix * a.out_c;
    st4(y + off + 4 * j, epilogue(lo, bias, residual, off, 4 * j, act));
    st4(y + off + 4 * (half4 + j), epilogue(hi, bias, residual, off, 4 * (half4 + j), act));
  }
}

int64_t weight_bytes(const ConvShape& s) {
  return int64_t(s.k_h) * s.k_w * s.in_c * s.out_c * 4;
}

}  // namespace

bool conv_small_cin_fits(const ConvShape& s, const float* x, const float* w, const float* bias,
                         const float* residual, const float* y) {
  (void)x;  // read as scalars: any alignment
  return s.groups == 1 && s.in_c >= 1 && s.in_c <= 4 && s.out_c % 8 == 0 &&
         weight_bytes(s) <= kScMaxSmem && aligned16(w) && aligned16(y) &&
         (!bias || aligned16(bias)) && (!residual || aligned16(residual));
}

void conv_small_cin(const ConvShape& s, const float* x, const float* w, const float* bias,
                    const float* residual, Act act, float* y, cudaStream_t stream) {
  if (!check_conv_shape(s, "conv_small_cin")) return;
  const std::string detail = conv_shape_str(s);
  if (!conv_small_cin_fits(s, x, w, bias, residual, y))
    invalid("conv_small_cin",
            "needs groups 1, 1-4 input channels, out_c % 8 == 0, weights <= 48 KB and 16-byte "
            "aligned w, y, bias, residual: " +
                detail);
  const size_t smem = static_cast<size_t>(weight_bytes(s));
  // Every block copies all the weights into shared memory once, then walks the items grid-stride:
  // a few resident blocks per SM, not one block per 256 items (ResNet's 37 KB of weights times
  // 100K blocks would be 3.7 GB of reads).
  const int64_t items = int64_t(s.n) * s.out_h * s.out_w * (s.out_c / 8);
  const int64_t per_sm =
      std::max<int64_t>(1, std::min<int64_t>(kScBlocksPerSm, (200 * 1024) / int64_t(smem)));
  const int64_t blocks =
      std::max<int64_t>(1, std::min(ceil_div(items, kScThreads), per_sm * sm_count()));
  const unsigned grid = static_cast<unsigned>(blocks);
  // in_c is 1-4 (checked above): one instantiation per channel count.
  using Kernel = decltype(&conv_small_cin_kernel<1>);
  const Kernel kernels[] = {conv_small_cin_kernel<1>, conv_small_cin_kernel<2>,
                            conv_small_cin_kernel<3>, conv_small_cin_kernel<4>};
  GRAFT_LAUNCH(grid, kScThreads, smem, stream, kernels[s.in_c - 1])
  (s, static_cast<int>(act), x, w, bias, residual, y);
  CUDA_CHECK_LAUNCH("conv_small_cin_kernel", detail);
}

}  // namespace graft::cuda
