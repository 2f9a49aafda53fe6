// Backward of the pointwise (1x1, stride 1, unpadded, one group) convolution, as two GEMMs on
// gemm.cuh's register-blocked tile kernel (the forward's conv_pointwise_v2). With P = n*h*w pixels,
// NHWC makes x the row-major [P][in_c] matrix and dy the row-major [P][out_c] one; HWIO makes w
// the row-major [in_c][out_c] one. So, with no data rearranged:
//   dx[P][in_c]     = dy . w^T   A = dy (kA_MK, lda out_c), B = w read as [N][K] (kB_NK)
//   dw[in_c][out_c] = x^T . dy   A = x read as [K][M] (kA_KM), B = dy (kB_KN)
// dx has P rows: plenty of tiles. dw is small (in_c x out_c, e.g. 32 x 16) with a long reduction
// (K = P, 401K pixels at batch 32 on the 112x112 layers), so one tile per output would leave the
// chip idle. Split-K without atomics: the pixel axis is cut into `splits` chunks of equal length,
// chunk z computed by blockIdx.z (gemm.cuh's group axis, its per-group offsets stepping A and B by
// one chunk and C by one partial matrix), a ragged last chunk by a second launch, and sum_partials
// adds the partial matrices in chunk order. Within a chunk each output element is one thread's
// sequential FMA chain over k (the tile only decides which thread), so the result does not depend
// on the tile the launcher picks for the device: only on the split, which depends on the shape.
//
// dw v2 (narrow layers, in_c or out_c <= 64: Lite0's 112x112, 56x56 and 28x28 stages, where most
// of the backward's bytes are): gemm.cuh's smallest tile is 64x64, so the 112x112 project's 32 x 16
// dw would use 1/8 of its FMAs (1/8 of a 128x32 tile), and these layers need 35-70% of the FMA
// peak even without waste to keep up with memory. v2 sizes the tile to the layer (16, 32 or 64 per
// side) and spends the spare threads on the reduction instead: the 256 threads form G groups, each
// covering the tile with 4x4 per thread and taking every G-th pixel of each 16-pixel step; the
// groups' sums are added in group order at the end. Same chunking and sum_partials as v1.
//
// Written without a GPU at hand: compiled for sm_75 and sm_90, not yet run. Unverified.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/cuda/conv_backward_tiles.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/cuda/gemm.cuh"

namespace graft::cuda {
namespace {

void check_pointwise(const ConvShape& s, const char* op) {
  if (!(s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
        s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w))
    invalid(op, "not a pointwise shape: " + conv_shape_str(s));
}

// The split of dw's K = P: about 512 blocks of 64x64 output tiles in all, at least 512 pixels per
// chunk, at most 1024 chunks. Shape only (never the device), so the summation order is fixed.
struct PwSplit {
  int64_t chunk;  // pixels per full chunk (a multiple of 16, gemm.cuh's BK)
  int64_t full;   // number of full chunks
  int64_t tail;   // pixels in the ragged last chunk (0: none)
  int64_t parts() const { return full + (tail > 0 ? 1 : 0); }
};

PwSplit pointwise_split(const ConvShape& s) {
  const int64_t P = int64_t(s.n) * s.out_h * s.out_w;
  const int64_t tiles = ceil_div(s.in_c, 64) * ceil_div(s.out_c, 64);
  int64_t want = std::clamp<int64_t>(ceil_div(512, tiles), 1, 1024);
  want = std::min(want, std::max<int64_t>(1, P / 512));
  PwSplit sp{};
  sp.chunk = ceil_div(ceil_div(P, want), 16) * 16;
  sp.full = P / sp.chunk;
  sp.tail = P - sp.full * sp.chunk;
  return sp;
}

}  // namespace

void conv_bwd_data_pointwise(const ConvShape& s, const float* dy, const float* w, float* dx,
                             cudaStream_t stream) {
  if (!conv_bwd_data_begin(s, "conv_bwd_data_pointwise", dx, stream)) return;
  check_pointwise(s, "conv_bwd_data_pointwise");
  GemmArgs p{};
  p.M = s.n * s.out_h * s.out_w;
  p.N = s.in_c;
  p.K = s.out_c;
  p.A = dy;
  p.lda = s.out_c;
  p.B = w;  // w[in_c][out_c] is B^T: row n = input channel, contiguous along k = output channel
  p.ldb = s.out_c;
  p.C = dx;
  p.ldc = s.in_c;
  p.act = static_cast<int>(Act::none);
  const bool vec =
      mult4(s.in_c) && mult4(s.out_c) && aligned16(dy) && aligned16(w) && aligned16(dx);
  launch_gemm<kA_MK, kB_NK>(p, 1, vec, pick_gemm_tile(p.M, p.N, 1), stream,
                            "conv_bwd_data_pointwise", conv_shape_str(s));
}

size_t conv_bwd_filter_pointwise_v1_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0) return 0;
  const PwSplit sp = pointwise_split(s);
  return sp.parts() > 1 ? sizeof(float) * size_t(sp.parts()) * s.in_c * s.out_c : 0;
}

void conv_bwd_filter_pointwise_v1(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = conv_shape_str(s);
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_pointwise", dw, stream)) return;
  check_pointwise(s, "conv_bwd_filter_pointwise");
  check_workspace("conv2d_backward_filter", conv_bwd_filter_pointwise_v1_workspace(s), workspace,
                  workspace_bytes, detail);
  const PwSplit sp = pointwise_split(s);
  const int64_t wcount = int64_t(s.in_c) * s.out_c;
  float* out = sp.parts() > 1 ? static_cast<float*>(workspace) : dw;
  GemmArgs p{};
  p.M = s.in_c;
  p.N = s.out_c;
  p.A = x;  // x[P][in_c] is A^T: row k = pixel, contiguous along m = input channel
  p.lda = s.in_c;
  p.B = dy;
  p.ldb = s.out_c;
  p.C = out;
  p.ldc = s.out_c;
  p.act = static_cast<int>(Act::none);
  p.a_goff = sp.chunk * s.in_c;  // chunk z starts sp.chunk pixels further on
  p.b_goff = sp.chunk * s.out_c;
  p.c_goff = wcount;  // and writes partial matrix z
  const bool vec =
      mult4(s.in_c) && mult4(s.out_c) && aligned16(x) && aligned16(dy) && aligned16(out);
  if (sp.full > 65535) invalid("conv_bwd_filter_pointwise", "too many chunks: " + detail);
  if (sp.full > 0) {
    p.K = static_cast<int>(sp.chunk);
    launch_gemm<kA_KM, kB_KN>(p, static_cast<int>(sp.full), vec, pick_gemm_tile(p.M, p.N, sp.full),
                              stream, "conv_bwd_filter_pointwise", detail);
  }
  if (sp.tail > 0) {
    p.K = static_cast<int>(sp.tail);
    p.A = x + sp.full * p.a_goff;
    p.B = dy + sp.full * p.b_goff;
    p.C = out + sp.full * wcount;
    launch_gemm<kA_KM, kB_KN>(p, 1, vec, pick_gemm_tile(p.M, p.N, 1), stream,
                              "conv_bwd_filter_pointwise_tail", detail);
  }
  if (sp.parts() > 1)
    sum_partials(static_cast<int>(sp.parts()), wcount, out, dw, stream, "conv_bwd_filter_sum",
                 detail);
}

// ---- v2: narrow layers ------------------------------------------------------------------------

namespace {

using bwd_tiles::kBK;
using bwd_tiles::kThreads;

// Tiles and group split from conv_backward_tiles.cuh; the loads: A = x[p][m] (row p contiguous
// along the input channels m), B = dy[p][n]. Scalar loads: consecutive threads read consecutive
// channels of one pixel.
template <int MP, int NP>
__global__ void __launch_bounds__(kThreads, 2)
    pw_filter_narrow_kernel(int64_t pixels, int64_t chunk, int M, int N,
                            const float* __restrict__ x, const float* __restrict__ dy,
                            float* __restrict__ out) {
  using Cfg = bwd_tiles::Cfg<MP, NP>;
  __shared__ __align__(16) bwd_tiles::Smem<MP, NP> sm;
  const int tid = threadIdx.x;
  const int m0 = blockIdx.x * MP, n0 = blockIdx.y * NP;
  const int64_t p0 = blockIdx.z * chunk, p1 = min(pixels, p0 + chunk);
  float ra[Cfg::A_LD], rb[Cfg::B_LD];
  auto load = [&](int64_t pt) {
#pragma unroll
    for (int it = 0; it < Cfg::A_LD; ++it) {
      const int e = tid + it * kThreads, m = m0 + e % MP;
      const int64_t p = pt + e / MP;
      ra[it] = (p < p1 && m < M) ? x[p * M + m] : 0.f;
    }
#pragma unroll
    for (int it = 0; it < Cfg::B_LD; ++it) {
      const int e = tid + it * kThreads, n = n0 + e % NP;
      const int64_t p = pt + e / NP;
      rb[it] = (p < p1 && n < N) ? dy[p * N + n] : 0.f;
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
  bwd_tiles::group_sum_store<MP, NP>(sm, acc, m0, n0, M, N,
                                     out + static_cast<int64_t>(blockIdx.z) * M * N);
}

// Chunks of the pixel sum: about 512 blocks in all, at least 512 pixels each, at most 1024.
int64_t narrow_chunks(const ConvShape& s, int64_t* chunk) {
  const int64_t P = int64_t(s.n) * s.out_h * s.out_w;
  const int mp = bwd_tiles::tile_for(s.in_c), np = bwd_tiles::tile_for(s.out_c);
  const int64_t tiles = ceil_div(s.in_c, mp) * ceil_div(s.out_c, np);
  int64_t want = std::clamp<int64_t>(ceil_div(512, tiles), 1, 1024);
  want = std::min(want, std::max<int64_t>(1, P / 512));
  *chunk = ceil_div(P, want);
  return ceil_div(P, *chunk);
}

template <int MP, int NP>
void launch_narrow(const ConvShape& s, int64_t chunks, int64_t chunk, const float* x,
                   const float* dy, float* out, cudaStream_t stream, const std::string& detail) {
  const int64_t P = int64_t(s.n) * s.out_h * s.out_w;
  const dim3 grid(unsigned(ceil_div(s.in_c, MP)), unsigned(ceil_div(s.out_c, NP)),
                  unsigned(chunks));
  GRAFT_LAUNCH(grid, kThreads, 0, stream, pw_filter_narrow_kernel<MP, NP>)
  (P, chunk, s.in_c, s.out_c, x, dy, out);
  CUDA_CHECK_LAUNCH("pw_filter_narrow_kernel",
                    detail + " tile=" + std::to_string(MP) + "x" + std::to_string(NP));
}

}  // namespace

size_t conv_bwd_filter_pointwise_v2_workspace(const ConvShape& s) {
  if (s.n <= 0 || s.out_h <= 0 || s.out_w <= 0) return 0;
  int64_t chunk = 0;
  const int64_t chunks = narrow_chunks(s, &chunk);
  return chunks > 1 ? sizeof(float) * size_t(chunks) * s.in_c * s.out_c : 0;
}

void conv_bwd_filter_pointwise_v2(const ConvShape& s, const float* x, const float* dy, float* dw,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string detail = conv_shape_str(s);
  if (!conv_bwd_filter_begin(s, "conv_bwd_filter_pointwise", dw, stream)) return;
  check_pointwise(s, "conv_bwd_filter_pointwise");
  check_workspace("conv2d_backward_filter", conv_bwd_filter_pointwise_v2_workspace(s), workspace,
                  workspace_bytes, detail);
  int64_t chunk = 0;
  const int64_t chunks = narrow_chunks(s, &chunk);
  float* out = chunks > 1 ? static_cast<float*>(workspace) : dw;
  const int mp = bwd_tiles::tile_for(s.in_c), np = bwd_tiles::tile_for(s.out_c);
  if (ceil_div(s.out_c, np) > 65535) invalid("conv_bwd_filter_pointwise", "too wide: " + detail);
  // The nine tile shapes, spelled out: MP and NP are template parameters (register tiles).
  if (mp == 16 && np == 16) launch_narrow<16, 16>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 16 && np == 32) launch_narrow<16, 32>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 16 && np == 64) launch_narrow<16, 64>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 32 && np == 16) launch_narrow<32, 16>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 32 && np == 32) launch_narrow<32, 32>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 32 && np == 64) launch_narrow<32, 64>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 64 && np == 16) launch_narrow<64, 16>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 64 && np == 32) launch_narrow<64, 32>(s, chunks, chunk, x, dy, out, stream, detail);
  if (mp == 64 && np == 64) launch_narrow<64, 64>(s, chunks, chunk, x, dy, out, stream, detail);
  if (chunks > 1)
    sum_partials(int(chunks), int64_t(s.in_c) * s.out_c, out, dw, stream, "conv_bwd_filter_sum",
                 detail);
}

namespace {
bool narrow(const ConvShape& s) {
  return s.in_c <= 64 || s.out_c <= 64;
}
}  // namespace

size_t conv_bwd_filter_pointwise_workspace(const ConvShape& s) {
  return narrow(s) ? conv_bwd_filter_pointwise_v2_workspace(s)
                   : conv_bwd_filter_pointwise_v1_workspace(s);
}

void conv_bwd_filter_pointwise(const ConvShape& s, const float* x, const float* dy, float* dw,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (narrow(s))
    conv_bwd_filter_pointwise_v2(s, x, dy, dw, workspace, workspace_bytes, stream);
  else
    conv_bwd_filter_pointwise_v1(s, x, dy, dw, workspace, workspace_bytes, stream);
}

}  // namespace graft::cuda
