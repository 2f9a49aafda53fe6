#pragma once
// The register-blocked shared-memory SGEMM that pointwise convs, general (implicit-GEMM) convs and
// the linear layers share:  C[M][N] = act(A[M][K] . B[K][N] + bias[N] + residual[M][N]).
//
// One template, several operand layouts:
//   A: kA_MK   row-major [M][K] (lda)          pointwise conv input, linear input, dy for dx
//      kA_KM   row-major [K][M] (lda)          dy read transposed, for dw = dy^T x
//      kA_CONV implicit im2col of an NHWC image: row m = output pixel, column k = (ky, kx, ci),
//              matching the HWIO weight order; taps outside the image read zero
//   B: kB_KN   row-major [K][N] (ldb)          HWIO conv weights, x for dw
//      kB_NK   row-major [N][K] (ldb)          linear weights [out][in]
// Groups (grouped conv) run as blockIdx.z; each operand gets a per-group element offset.
//
// Tiling (per block BM x BN of C, BK deep): each thread owns a (4*RM) x (4*RN) register tile made
// of RM x RN float4-wide 4x4 pieces spaced BM/RM rows and BN/RN columns apart, so that a warp's
// float4 reads of the shared tiles are contiguous (no bank conflicts) and its float4 stores of C
// coalesce. The A tile is stored k-major (As[k][m]) so the inner loop reads 4 rows of A as one
// float4. Global loads for tile t+1 go to registers before the FMAs of tile t and are stored to the
// other shared buffer afterwards: one __syncthreads per BK step, and the loads' latency hides under
// the math. Plain fp32 FFMA, no tensor cores.
//
// VEC=true: every global access is a 16-byte float4. The caller checks the conditions (see the
// vec_ok_* helpers): the contiguous extent of each operand a multiple of 4, leading dimensions and
// group offsets multiples of 4, and 16-byte-aligned base pointers. VEC=false reads and writes
// scalars with full bounds checks; it is the path for shapes like the 3-channel stem.
#include "kernels/cuda/common.cuh"

namespace graft::cuda {

enum : int { kA_MK = 0, kA_KM = 1, kA_CONV = 2 };
enum : int { kB_KN = 0, kB_NK = 1 };

// Geometry for kA_CONV. Offsets are int: the wrapper checks the image has < 2^31 elements.
struct ConvGeom {
  int in_h, in_w, in_c;
  int out_h, out_w;
  int k_w;
  int stride_h, stride_w, pad_top, pad_left;
  int cin_g;  // input channels per group: the innermost run of K
};

struct GemmArgs {
  int M, N, K;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  const float* bias;               // [N] (after the group offset) or null
  const float* residual;           // same layout as C or null
  int act;                         // Act as int
  int64_t a_goff, b_goff, c_goff;  // per-group element offsets; c_goff also offsets bias/residual
  ConvGeom conv;
};

// W consecutive floats from src into v (one 16-byte load when W = 4), or zeros when !ok; src is
// only dereferenced when ok. Every operand tile load goes through here.
template <int W>
__device__ __forceinline__ void load_or_zero(bool ok, const float* src, float (&v)[W]) {
  static_assert(W == 1 || W == 4, "scalar or float4 accesses only");
#pragma unroll
  for (int j = 0; j < W; ++j) v[j] = 0.f;
  if (ok) {
    if constexpr (W == 4) {
      float4 t = ld4(src);
      v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else {
      v[0] = src[0];
    }
  }
}

// The pieces of gemm_tile_kernel, each a step of the GEMM ladder (bench/ladder/pointwise.cu):
// a tile's constants (GemmTileCfg), the implicit-GEMM prologue (conv_tile_origins), global to
// registers (tile_load), registers to shared memory (tile_store), the register-blocked outer
// products of one BK step (tile_multiply) and the fused epilogue (tile_epilogue). All inline: ptxas
// gives the kernel they make the registers, shared memory and (no) spills of the one-function
// kernel it replaced, or fewer registers (bench/worklog-cuda-gemm.md).
template <int BM_, int BN_, int BK_, int RM_, int RN_, int AMODE_, int BMODE_, bool VEC_>
struct GemmTileCfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, RM = RM_, RN = RN_;
  static constexpr int AMODE = AMODE_, BMODE = BMODE_;
  static constexpr bool VEC = VEC_;
  static constexpr int TM = 4 * RM, TN = 4 * RN;  // a thread's register tile
  static constexpr int THR_N = BN / TN;
  static constexpr int NT = (BM / TM) * THR_N;     // threads a block
  static constexpr int W = VEC ? 4 : 1;            // floats per global access
  static constexpr int AS = BM + 4, BS = BN + 4;   // padded shared row strides (16-byte rows)
  static constexpr int A_LD = BM * BK / (NT * W);  // global accesses per thread per tile
  static constexpr int B_LD = BK * BN / (NT * W);
  static_assert(A_LD >= 1 && B_LD >= 1, "tile too small for the thread count");
  static_assert(BM * BK % (NT * W) == 0 && BK * BN % (NT * W) == 0, "uneven tile split");
  // Items per row of each operand's load pattern; each thread's in-row position is then constant.
  static constexpr int A_ROW_ITEMS = (AMODE == kA_KM) ? BM / W : BK / W;
  static constexpr int B_ROW_ITEMS = (BMODE == kB_KN) ? BN / W : BK / W;
  static_assert(NT % A_ROW_ITEMS == 0 && NT % B_ROW_ITEMS == 0, "load split must be regular");
  static constexpr int CONV_ROWS = AMODE == kA_CONV ? BM : 1;
};

// kA_CONV: per output pixel (row) of the tile, the image's offset and its window's top-left tap
// (img -1 past the last row).
template <typename T>
__device__ __forceinline__ void conv_tile_origins(const GemmArgs& p, int m0, int tid,
                                                  int (&img)[T::CONV_ROWS], int (&iy)[T::CONV_ROWS],
                                                  int (&ix)[T::CONV_ROWS]) {
  const int hw = p.conv.out_h * p.conv.out_w;
  for (int r = tid; r < T::BM; r += T::NT) {
    int m = m0 + r;
    if (m < p.M) {
      int b = m / hw, rem = m - b * hw;
      int oy = rem / p.conv.out_w, ox = rem - oy * p.conv.out_w;
      img[r] = b * p.conv.in_h * p.conv.in_w * p.conv.in_c;
      iy[r] = oy * p.conv.stride_h - p.conv.pad_top;
      ix[r] = ox * p.conv.stride_w - p.conv.pad_left;
    } else {
      img[r] = -1;
      iy[r] = 0;
      ix[r] = 0;
    }
  }
}

// Global -> registers for the tiles starting at k0. Out-of-range elements load as zero.
template <typename T>
__device__ __forceinline__ void tile_load(
    const GemmArgs& p, const float* __restrict__ A, const float* __restrict__ B, int m0, int n0,
    int k0, int tid, const int (&img)[T::CONV_ROWS], const int (&iy)[T::CONV_ROWS],
    const int (&ix)[T::CONV_ROWS], float (&ra)[T::A_LD * T::W], float (&rb)[T::B_LD * T::W]) {
  constexpr int W = T::W, NT = T::NT, A_ROW_ITEMS = T::A_ROW_ITEMS, B_ROW_ITEMS = T::B_ROW_ITEMS;
  const int M = p.M, N = p.N, K = p.K;
  if constexpr (T::AMODE == kA_MK || T::AMODE == kA_CONV) {
    const int kl = (tid % A_ROW_ITEMS) * W;
    const int k = k0 + kl;
    int tap_off = 0, ky = 0, kx = 0;
    if constexpr (T::AMODE == kA_CONV) {
      // One k decomposition per tile: all of this thread's loads share the same k.
      int tap = k / p.conv.cin_g;
      int ci = k - tap * p.conv.cin_g;
      ky = tap / p.conv.k_w;
      kx = tap - ky * p.conv.k_w;
      tap_off = ci;
    }
#pragma unroll
    for (int it = 0; it < T::A_LD; ++it) {
      const int ml = tid / A_ROW_ITEMS + it * (NT / A_ROW_ITEMS);
      const int m = m0 + ml;
      float v[W];
      if constexpr (T::AMODE == kA_MK) {
        load_or_zero(m < M && k < K, A + static_cast<int64_t>(m) * p.lda + k, v);
      } else {
        const int i = img[ml];
        const int y = iy[ml] + ky, x = ix[ml] + kx;
        load_or_zero(i >= 0 && k < K && y >= 0 && y < p.conv.in_h && x >= 0 && x < p.conv.in_w,
                     A + static_cast<int64_t>(i) + (y * p.conv.in_w + x) * p.conv.in_c + tap_off,
                     v);
      }
#pragma unroll
      for (int j = 0; j < W; ++j) ra[it * W + j] = v[j];
    }
  } else {  // kA_KM: rows of the stored matrix are k, contiguous along m
    const int ml = (tid % A_ROW_ITEMS) * W;
    const int m = m0 + ml;
#pragma unroll
    for (int it = 0; it < T::A_LD; ++it) {
      const int k = k0 + tid / A_ROW_ITEMS + it * (NT / A_ROW_ITEMS);
      float v[W];
      load_or_zero(k < K && m < M, A + static_cast<int64_t>(k) * p.lda + m, v);
#pragma unroll
      for (int j = 0; j < W; ++j) ra[it * W + j] = v[j];
    }
  }

  if constexpr (T::BMODE == kB_KN) {
    const int nl = (tid % B_ROW_ITEMS) * W;
    const int n = n0 + nl;
#pragma unroll
    for (int it = 0; it < T::B_LD; ++it) {
      const int k = k0 + tid / B_ROW_ITEMS + it * (NT / B_ROW_ITEMS);
      float v[W];
      load_or_zero(k < K && n < N, B + static_cast<int64_t>(k) * p.ldb + n, v);
#pragma unroll
      for (int j = 0; j < W; ++j) rb[it * W + j] = v[j];
    }
  } else {  // kB_NK
    const int kl = (tid % B_ROW_ITEMS) * W;
    const int k = k0 + kl;
#pragma unroll
    for (int it = 0; it < T::B_LD; ++it) {
      const int n = n0 + tid / B_ROW_ITEMS + it * (NT / B_ROW_ITEMS);
      float v[W];
      load_or_zero(k < K && n < N, B + static_cast<int64_t>(n) * p.ldb + k, v);
#pragma unroll
      for (int j = 0; j < W; ++j) rb[it * W + j] = v[j];
    }
  }
}

// Registers -> shared buffer `buf`, transposing where the stored layout is not k-major.
template <typename T>
__device__ __forceinline__ void tile_store(int buf, int tid, const float (&ra)[T::A_LD * T::W],
                                           const float (&rb)[T::B_LD * T::W],
                                           float (&As)[2][T::BK][T::AS],
                                           float (&Bs)[2][T::BK][T::BS]) {
  constexpr int W = T::W, NT = T::NT, A_ROW_ITEMS = T::A_ROW_ITEMS, B_ROW_ITEMS = T::B_ROW_ITEMS;
  if constexpr (T::AMODE == kA_MK || T::AMODE == kA_CONV) {
    const int kl = (tid % A_ROW_ITEMS) * W;
#pragma unroll
    for (int it = 0; it < T::A_LD; ++it) {
      const int ml = tid / A_ROW_ITEMS + it * (NT / A_ROW_ITEMS);
#pragma unroll
      for (int j = 0; j < W; ++j) As[buf][kl + j][ml] = ra[it * W + j];
    }
  } else {
    const int ml = (tid % A_ROW_ITEMS) * W;
#pragma unroll
    for (int it = 0; it < T::A_LD; ++it) {
      const int kl = tid / A_ROW_ITEMS + it * (NT / A_ROW_ITEMS);
      if constexpr (T::VEC) {
        st4(&As[buf][kl][ml],
            make_float4(ra[it * 4], ra[it * 4 + 1], ra[it * 4 + 2], ra[it * 4 + 3]));
      } else {
        As[buf][kl][ml] = ra[it];
      }
    }
  }
  if constexpr (T::BMODE == kB_KN) {
    const int nl = (tid % B_ROW_ITEMS) * W;
#pragma unroll
    for (int it = 0; it < T::B_LD; ++it) {
      const int kl = tid / B_ROW_ITEMS + it * (NT / B_ROW_ITEMS);
      if constexpr (T::VEC) {
        st4(&Bs[buf][kl][nl],
            make_float4(rb[it * 4], rb[it * 4 + 1], rb[it * 4 + 2], rb[it * 4 + 3]));
      } else {
        Bs[buf][kl][nl] = rb[it];
      }
    }
  } else {
    const int kl = (tid % B_ROW_ITEMS) * W;
#pragma unroll
    for (int it = 0; it < T::B_LD; ++it) {
      const int nl = tid / B_ROW_ITEMS + it * (NT / B_ROW_ITEMS);
#pragma unroll
      for (int j = 0; j < W; ++j) Bs[buf][kl + j][nl] = rb[it * W + j];
    }
  }
}

// One BK step from shared buffer `cur`: per k, the thread's TM values of A and TN of B as float4
// pieces (RM and RN of them, BM/RM and BN/RN apart), then their outer product into acc.
template <typename T>
__device__ __forceinline__ void tile_multiply(const float (&As)[2][T::BK][T::AS],
                                              const float (&Bs)[2][T::BK][T::BS], int cur, int tm,
                                              int tn, float (&acc)[T::TM][T::TN]) {
#pragma unroll
  for (int kk = 0; kk < T::BK; ++kk) {
    float a[T::TM], b[T::TN];
#pragma unroll
    for (int r = 0; r < T::RM; ++r) {
      float4 t = ld4(&As[cur][kk][r * (T::BM / T::RM) + tm * 4]);
      a[r * 4 + 0] = t.x, a[r * 4 + 1] = t.y, a[r * 4 + 2] = t.z, a[r * 4 + 3] = t.w;
    }
#pragma unroll
    for (int r = 0; r < T::RN; ++r) {
      float4 t = ld4(&Bs[cur][kk][r * (T::BN / T::RN) + tn * 4]);
      b[r * 4 + 0] = t.x, b[r * 4 + 1] = t.y, b[r * 4 + 2] = t.z, b[r * 4 + 3] = t.w;
    }
#pragma unroll
    for (int i = 0; i < T::TM; ++i)
#pragma unroll
      for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// Fused epilogue: + bias[n], + residual[m][n], then the activation, in that order; float4 stores
// when VEC.
template <typename T>
__device__ __forceinline__ void tile_epilogue(const GemmArgs& p, int g, int m0, int n0, int tm,
                                              int tn, const float (&acc)[T::TM][T::TN]) {
  constexpr int RM = T::RM, RN = T::RN, BM = T::BM, BN = T::BN;
  const int M = p.M, N = p.N;
  float* __restrict__ C = p.C + g * p.c_goff;
  const float* __restrict__ R = p.residual ? p.residual + g * p.c_goff : nullptr;
  const float* __restrict__ bias = p.bias ? p.bias + g * p.c_goff : nullptr;
#pragma unroll
  for (int rm = 0; rm < RM; ++rm) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + rm * (BM / RM) + tm * 4 + i;
      if (m >= M) continue;
      const int64_t row = static_cast<int64_t>(m) * p.ldc;
#pragma unroll
      for (int rn = 0; rn < RN; ++rn) {
        const int n = n0 + rn * (BN / RN) + tn * 4;
        if (n >= N) continue;
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = acc[rm * 4 + i][rn * 4 + j];
        if constexpr (T::VEC) {  // N % 4 == 0, so n < N means all four columns are in range
          if (bias) {
            float4 t = ld4(bias + n);
            v[0] += t.x, v[1] += t.y, v[2] += t.z, v[3] += t.w;
          }
          if (R) {
            float4 t = ld4(R + row + n);
            v[0] += t.x, v[1] += t.y, v[2] += t.z, v[3] += t.w;
          }
          st4(C + row + n, make_float4(apply_act(v[0], p.act), apply_act(v[1], p.act),
                                       apply_act(v[2], p.act), apply_act(v[3], p.act)));
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (n + j < N) {
              float t = v[j];
              if (bias) t += bias[n + j];
              if (R) t += R[row + n + j];
              C[row + n + j] = apply_act(t, p.act);
            }
          }
        }
      }
    }
  }
}

// Two blocks per SM at least (the register cap that implies, 128 per thread at 256 threads, is what
// the 8x8 tile needs without spilling; see bench/worklog-cuda-gemm.md), so one block's epilogue and
// prologue overlap the other's main loop. The main loop double-buffers the shared tiles: tile
// t + 1 is loaded to registers before tile t's FMAs and stored to the other buffer after them, one
// barrier a BK step.
template <int BM, int BN, int BK, int RM, int RN, int AMODE, int BMODE, bool VEC>
__global__ void __launch_bounds__((BM / (4 * RM)) * (BN / (4 * RN)), 2)
    gemm_tile_kernel(const GemmArgs p) {
  using T = GemmTileCfg<BM, BN, BK, RM, RN, AMODE, BMODE, VEC>;
  __shared__ __align__(16) float As[2][BK][T::AS];
  __shared__ __align__(16) float Bs[2][BK][T::BS];
  __shared__ int s_img[T::CONV_ROWS];
  __shared__ int s_iy[T::CONV_ROWS];
  __shared__ int s_ix[T::CONV_ROWS];

  const int tid = threadIdx.x;
  const int g = blockIdx.z;
  const int m0 = blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  const float* __restrict__ A = p.A + g * p.a_goff;
  const float* __restrict__ B = p.B + g * p.b_goff;
  if constexpr (AMODE == kA_CONV) {
    conv_tile_origins<T>(p, m0, tid, s_img, s_iy, s_ix);
    __syncthreads();
  }

  float ra[T::A_LD * T::W];
  float rb[T::B_LD * T::W];
  const int tn = tid % T::THR_N;
  const int tm = tid / T::THR_N;
  float acc[T::TM][T::TN];
#pragma unroll
  for (int i = 0; i < T::TM; ++i)
#pragma unroll
    for (int j = 0; j < T::TN; ++j) acc[i][j] = 0.f;

  const int num_k_tiles = static_cast<int>((p.K + BK - 1) / BK);
  if (num_k_tiles > 0) {
    tile_load<T>(p, A, B, m0, n0, 0, tid, s_img, s_iy, s_ix, ra, rb);
    tile_store<T>(0, tid, ra, rb, As, Bs);
    __syncthreads();
  }
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < num_k_tiles;
    if (more)  // in flight while the FMAs below run
      tile_load<T>(p, A, B, m0, n0, (kt + 1) * BK, tid, s_img, s_iy, s_ix, ra, rb);
    tile_multiply<T>(As, Bs, cur, tm, tn, acc);
    if (more) tile_store<T>(cur ^ 1, tid, ra, rb, As, Bs);  // last read before the previous barrier
    __syncthreads();
  }
  tile_epilogue<T>(p, g, m0, n0, tm, tn, acc);
}

// Block tiles the launcher can pick. 128x128 (8x8 per thread) has the most reuse per shared load;
// 128x64 and 128x32 (8x4) waste less on the narrow channel counts of mobile nets (16..80 outputs);
// 64x64 (4x4) gives more blocks when M is small (the 7x7 stages, the head at small batch).
enum class GemmTile { t128x128, t128x64, t128x32, t64x64 };

inline const char* gemm_tile_name(GemmTile t) {
  switch (t) {
    case GemmTile::t128x128:
      return "128x128";
    case GemmTile::t128x64:
      return "128x64";
    case GemmTile::t128x32:
      return "128x32";
    default:
      return "64x64";
  }
}

inline int64_t gemm_blocks(GemmTile t, int64_t M, int64_t N, int64_t groups) {
  int bm = 128, bn = 128;
  if (t == GemmTile::t128x64) bn = 64;
  if (t == GemmTile::t128x32) bn = 32;
  if (t == GemmTile::t64x64) bm = 64, bn = 64;
  return ceil_div(M, bm) * ceil_div(N, bn) * groups;
}

// Widest tile that fits N; drop to 64x64 when the wide tile would leave SMs idle (fewer than two
// blocks per SM) and the smaller tile gives more blocks.
inline GemmTile pick_gemm_tile(int64_t M, int64_t N, int64_t groups) {
  GemmTile t = N <= 32 ? GemmTile::t128x32 : N <= 64 ? GemmTile::t128x64 : GemmTile::t128x128;
  const int64_t want = 2LL * sm_count();
  if (gemm_blocks(t, M, N, groups) < want &&
      gemm_blocks(GemmTile::t64x64, M, N, groups) > gemm_blocks(t, M, N, groups))
    t = GemmTile::t64x64;
  return t;
}

template <int BM, int BN, int RM, int RN, int AMODE, int BMODE>
void launch_gemm_cfg(const GemmArgs& p, int groups, bool vec, cudaStream_t stream, const char* name,
                     const std::string& detail) {
  constexpr int BK = 16;
  constexpr int NT = (BM / (4 * RM)) * (BN / (4 * RN));
  const int64_t gx = ceil_div(p.M, BM), gy = ceil_div(p.N, BN);
  if (gx > 0x7fffffff || gy > 65535 || groups > 65535)
    invalid(name, "problem too large for one launch: " + detail);
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(groups));
  if (vec)
    GRAFT_LAUNCH(grid, NT, 0, stream, gemm_tile_kernel<BM, BN, BK, RM, RN, AMODE, BMODE, true>)(p);
  else
    GRAFT_LAUNCH(grid, NT, 0, stream, gemm_tile_kernel<BM, BN, BK, RM, RN, AMODE, BMODE, false>)(p);
  CUDA_CHECK_LAUNCH(name, detail + " tile=" + std::to_string(BM) + "x" + std::to_string(BN) +
                              (vec ? " vec4" : " scalar"));
}

template <int AMODE, int BMODE>
void launch_gemm(const GemmArgs& p, int groups, bool vec, GemmTile tile, cudaStream_t stream,
                 const char* name, const std::string& detail) {
  if (p.M <= 0 || p.N <= 0 || groups <= 0) return;  // empty output: nothing to write
  switch (tile) {
    case GemmTile::t128x128:
      launch_gemm_cfg<128, 128, 2, 2, AMODE, BMODE>(p, groups, vec, stream, name, detail);
      break;
    case GemmTile::t128x64:
      launch_gemm_cfg<128, 64, 2, 1, AMODE, BMODE>(p, groups, vec, stream, name, detail);
      break;
    case GemmTile::t128x32:
      launch_gemm_cfg<128, 32, 2, 1, AMODE, BMODE>(p, groups, vec, stream, name, detail);
      break;
    case GemmTile::t64x64:
      launch_gemm_cfg<64, 64, 1, 1, AMODE, BMODE>(p, groups, vec, stream, name, detail);
      break;
  }
}

// C = A[M][K] . B[K][N] with both row-major (kA_MK, kB_KN), tile picked by pick_gemm_tile; one
// instantiation shared by conv_pointwise.cu and linear.cu (defined in conv_pointwise.cu).
void gemm_mk_kn(const GemmArgs& p, bool vec, cudaStream_t stream, const char* name,
                const std::string& detail);

}  // namespace graft::cuda
