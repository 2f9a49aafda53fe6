// Filter gradient of a groups-1 convolution of any kernel, stride and padding (the 3x3 s2 stem,
// ResNet's 3x3s) as an implicit GEMM over the output pixels:
//   dw[r][co] = sum over pixels p of im2col(x)[p][r] * dy[p][co],   r = (ky, kx, ci)  (HWIO order)
// M = k_h*k_w*in_c rows, N = out_c columns, K = P = n*out_h*out_w pixels. The im2col matrix is
// never stored: each A element is read straight from x (zero outside the image).
//
// Tiling (conv_backward_tiles.cuh): MP x NP block tiles sized to the filter (16, 32 or 64 per
// side: the stem's 27 x 32 gets 32x32, 84% of it useful, where a 64x64 tile used 21%), 4x4 per
// thread, the block's spare thread groups splitting each 16-pixel step, k-major shared tiles,
// double-buffered, the next step's loads in flight during this step's FMAs. A thread's A loads are
// always the same row r (one (ky, kx, ci) decomposition per thread) at a few pixels whose
// (b, oy, ox) it steps by 16 per step instead of dividing. Scalar global loads: consecutive
// threads read consecutive ci of one pixel (and consecutive co of dy), coalesced when in_c >= 32;
// the stem's 3 channels make 27 rows that read 9 scattered runs of 3 floats (cached: each x float
// is read by 9 taps).
//
// K is long and M x N small (the stem: 27 x 32 outputs over 401K pixels at batch 32), so the pixel
// axis is cut into a shape-fixed number of chunks (blockIdx.z), each chunk's sums written to its
// own partial matrix, and sum_partials adds them in chunk order. Within a chunk each output element
// is one thread's FMA chain over the pixels in order. No atomics: bitwise repeatable.
//
// Written without a GPU at hand: compiled for sm_75 and sm_90, not yet run. Unverified.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/cuda/conv_backward_tiles.cuh"
#include "kernels/cuda/conv_internal.cuh"

namespace graft::cuda {
namespace {

using bwd_tiles::kBK;
using bwd_tiles::kThreads;

struct IgemmArgs {
  int n, in_h, in_w, in_c, out_h, out_w, out_c, k_w, stride_h, stride_w, pad_top, pad_left;
  int rows;       // k_h * k_w * in_c
  int64_t chunk;  // pixels per chunk (blockIdx.z)
};

// (b, oy, ox) of one pixel, stepped forward without division.
struct PixelPos {
  int b, oy, ox;
};

__device__ __forceinline__ PixelPos pixel_pos(const IgemmArgs& a, int64_t p) {
  PixelPos q;
  q.ox = static_cast<int>(p % a.out_w);
  const int64_t row = p / a.out_w;
  q.oy = static_cast<int>(row % a.out_h);
  q.b = static_cast<int>(row / a.out_h);
  return q;
}

__device__ __forceinline__ void step_pos(const IgemmArgs& a, PixelPos& q, int by) {
  q.ox += by;
  while (q.ox >= a.out_w) {
    q.ox -= a.out_w;
    if (++q.oy == a.out_h) q.oy = 0, ++q.b;
  }
}

// Tiles and group split from conv_backward_tiles.cuh. A thread's A loads are all the same row
// r = (ky, kx, ci) (tid % MP: one decomposition per thread) at pixels tid / MP + it * (256 / MP)
// of each step, whose (b, oy, ox) it steps by 16 per step; B loads read dy rows directly.
// (256, 2): with no minimum, ptxas aimed at four blocks per SM (64 registers) and spilled.
template <int MP, int NP>
__global__ void __launch_bounds__(kThreads, 2)
    conv_bwd_filter_igemm_kernel(const IgemmArgs a, const float* __restrict__ x,
                                 const float* __restrict__ dy, float* __restrict__ out) {
  using Cfg = bwd_tiles::Cfg<MP, NP>;
  __shared__ __align__(16) bwd_tiles::Smem<MP, NP> sm;
  const int tid = threadIdx.x;
  const int m0 = blockIdx.x * MP, n0 = blockIdx.y * NP;
  const int64_t pixels = static_cast<int64_t>(a.n) * a.out_h * a.out_w;
  const int64_t p0 = blockIdx.z * a.chunk, p1 = min(pixels, p0 + a.chunk);

  const int r = m0 + tid % MP;
  const bool r_ok = r < a.rows;
  const int tap = r_ok ? r / a.in_c : 0, ci = r_ok ? r - tap * a.in_c : 0;
  const int ky = tap / a.k_w, kx = tap - ky * a.k_w;
  constexpr int kAStep = kThreads / MP;  // pixel distance between a thread's A loads
  PixelPos pos[Cfg::A_LD];
#pragma unroll
  for (int it = 0; it < Cfg::A_LD; ++it) pos[it] = pixel_pos(a, p0 + tid / MP + it * kAStep);

  float ra[Cfg::A_LD], rb[Cfg::B_LD];
  auto load = [&](int64_t pt) {
#pragma unroll
    for (int it = 0; it < Cfg::A_LD; ++it) {
      const int64_t p = pt + tid / MP + it * kAStep;
      const PixelPos& q = pos[it];
      const int iy = q.oy * a.stride_h - a.pad_top + ky, ix = q.ox * a.stride_w - a.pad_left + kx;
      ra[it] = (p < p1 && r_ok && iy >= 0 && iy < a.in_h && ix >= 0 && ix < a.in_w)
                   ? x[((static_cast<int64_t>(q.b) * a.in_h + iy) * a.in_w + ix) * a.in_c + ci]
                   : 0.f;
      step_pos(a, pos[it], kBK);
    }
#pragma unroll
    for (int it = 0; it < Cfg::B_LD; ++it) {
      const int e = tid + it * kThreads, n = n0 + e % NP;
      const int64_t p = pt + e / NP;
      rb[it] = (p < p1 && n < a.out_c) ? dy[p * a.out_c + n] : 0.f;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int it = 0; it < Cfg::A_LD; ++it) {
      const int e = tid + it * kThreads;
      sm.As[buf][e / MP][e % MP] = ra[it];
    }
#pragma unroll
    for (int it = 0; it < Cfg::B_LD; ++it) {
      const int e = tid + it * kThreads;
      sm.Bs[buf][e / NP][e % NP] = rb[it];
    }
  };
  float acc[4][4] = {};
  bwd_tiles::run_steps<MP, NP>(sm, p0, (p1 - p0 + kBK - 1) / kBK, load, store, acc);
  bwd_tiles::group_sum_store<MP, NP>(sm, acc, m0, n0, a.rows, a.out_c,
                                     out + static_cast<int64_t>(blockIdx.z) * a.rows * a.out_c);
}

// The split of the pixel sum: about 512 blocks in all, at least 256 pixels per chunk, at most 1024
// chunks. Shape only.
int64_t igemm_chunks(const ConvShape& s, int64_t* chunk) {
  const int64_t pixels = int64_t(s.n) * s.out_h * s.out_w;
  const int rows = s.k_h * s.k_w * s.in_c;
  const int mp = bwd_tiles::tile_for(rows), np = bwd_tiles::tile_for(s.out_c);
  const int64_t tiles = ceil_div(rows, mp) * ceil_div(s.out_c, np);
  int64_t want = std::clamp<int64_t>(ceil_div(512, tiles), 1, 1024);
  want = std::min(want, std::max<int64_t>(1, pixels / 256));
  *chunk = ceil_div(pixels, want);
  return ceil_div(pixels, *chunk);
}

template <int MP, int NP>
void launch_igemm(const IgemmArgs& a, int64_t chunks, const float* x, const float* dy, float* out,
                  cudaStream_t stream, const std::string& detail) {
  const int64_t gy = ceil_div(a.out_c, NP);
  if (gy > 65535) invalid("conv_bwd_filter_igemm", "too many output channels: " + detail);
  const dim3 grid(unsigned(ceil_div(a.rows, MP)), unsigned(gy), unsigned(chunks));
  GRAFT_LAUNCH(grid, kThreads, 0, stream, conv_bwd_filter_igemm_kernel<MP, NP>)(a, x, dy, out);
  CUDA_CHECK_LAUNCH("conv_bwd_filter_igemm_kernel",
                    detail + " tile=" + std::to_string(MP) + "x" + std::to_string(NP));
}

}  // namespace

size_t conv_bwd_filter_igemm_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0 || s.groups != 1) return 0;
  int64_t chunk = 0;
  const int64_t chunks = igemm_chunks(s, &chunk);
  return chunks > 1 ? sizeof(float) * size_t(chunks) * s.k_h * s.k_w * s.in_c * s.out_c : 0;
}

void conv_bwd_filter_igemm(const ConvShape& s, const float* x, const float* dy, float* dw,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = conv_shape_str(s);
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_igemm", dw, stream)) return;
  if (s.groups != 1) invalid("conv_bwd_filter_igemm", "needs groups == 1: " + detail);
  check_workspace("conv2d_backward_filter", conv_bwd_filter_igemm_workspace(s), workspace,
                  workspace_bytes, detail);
  int64_t chunk = 0;
  const int64_t chunks = igemm_chunks(s, &chunk);
  const int64_t rows = int64_t(s.k_h) * s.k_w * s.in_c;
  float* out = chunks > 1 ? static_cast<float*>(workspace) : dw;
  const IgemmArgs a{s.n,   s.in_h,     s.in_w,     s.in_c,    s.out_h,    s.out_w,   s.out_c,
                    s.k_w, s.stride_h, s.stride_w, s.pad_top, s.pad_left, int(rows), chunk};
  const int mp = bwd_tiles::tile_for(int(rows)), np = bwd_tiles::tile_for(s.out_c);
  // The nine tile shapes, spelled out: MP and NP are template parameters (register tiles).
  if (mp == 16 && np == 16) launch_igemm<16, 16>(a, chunks, x, dy, out, stream, detail);
  if (mp == 16 && np == 32) launch_igemm<16, 32>(a, chunks, x, dy, out, stream, detail);
  if (mp == 16 && np == 64) launch_igemm<16, 64>(a, chunks, x, dy, out, stream, detail);
  if (mp == 32 && np == 16) launch_igemm<32, 16>(a, chunks, x, dy, out, stream, detail);
  if (mp == 32 && np == 32) launch_igemm<32, 32>(a, chunks, x, dy, out, stream, detail);
  if (mp == 32 && np == 64) launch_igemm<32, 64>(a, chunks, x, dy, out, stream, detail);
  if (mp == 64 && np == 16) launch_igemm<64, 16>(a, chunks, x, dy, out, stream, detail);
  if (mp == 64 && np == 32) launch_igemm<64, 32>(a, chunks, x, dy, out, stream, detail);
  if (mp == 64 && np == 64) launch_igemm<64, 64>(a, chunks, x, dy, out, stream, detail);
  if (chunks > 1)
    sum_partials(int(chunks), rows * s.out_c, out, dw, stream, "conv_bwd_filter_sum", detail);
}

}  // namespace graft::cuda
