#pragma once
// Small-output filter-gradient tiles, shared by the narrow pointwise dw
// (conv_backward_pointwise.cu) and the implicit-GEMM dw (conv_backward_igemm.cu).
//
// A filter gradient is a GEMM with a tiny output and a huge reduction: dw[M][N] = sum over pixels
// of A[p][m] * B[p][n], with M x N often smaller than one 64x64 tile (the stem's 27 x 32, the
// 112x112 project's 32 x 16). Block tiles here are MP x NP with MP, NP in {16, 32, 64}, sized to
// the layer, and 4x4 outputs per thread: TPG = MP*NP/16 threads cover the tile, and the block's
// 256 threads form G = 256 / TPG groups that split every 16-pixel step (group g takes pixels
// g, g + G, ...) instead of idling. At the end each group's tile goes to shared memory and every
// output element adds the G group sums in group order: a fixed order, no atomics.
//
// The caller supplies the global loads (load: global -> registers for the step at pixel pt;
// store: registers -> shared buffer); the pipeline is gemm.cuh's: the next step's loads are in
// flight during this step's FMAs, two shared buffers, one barrier per step.
#include "kernels/cuda/common.cuh"

namespace graft::cuda::bwd_tiles {

constexpr int kThreads = 256;
constexpr int kBK = 16;  // pixels per pipeline step

template <int MP, int NP>
struct Cfg {
  static constexpr int TPG = MP * NP / 16;          // threads per group
  static constexpr int G = kThreads / TPG;          // groups (1 .. 16)
  static constexpr int A_LD = kBK * MP / kThreads;  // A loads per thread per step (1, 2, 4)
  static constexpr int B_LD = kBK * NP / kThreads;  // B loads per thread per step
  static_assert(G >= 1 && kBK % G == 0 && A_LD >= 1 && B_LD >= 1, "unsupported tile");
};

// The tile side for a dimension of c: 16, 32 or 64 (64 also for c > 64: then several tiles).
inline int tile_for(int c) {
  return c <= 16 ? 16 : c <= 32 ? 32 : 64;
}

template <int MP, int NP>
struct Smem {
  float As[2][kBK][MP + 4];  // k-major: row = pixel of the step
  float Bs[2][kBK][NP + 4];
  float red[Cfg<MP, NP>::G][MP][NP];
};

// The main loop over `steps` pixel steps starting at p0; acc gets this thread's 4x4 sums over its
// group's share of the pixels, in ascending pixel order.
template <int MP, int NP, class Load, class Store>
__device__ __forceinline__ void run_steps(Smem<MP, NP>& sm, int64_t p0, int64_t steps, Load&& load,
                                          Store&& store, float (&acc)[4][4]) {
  constexpr int G = Cfg<MP, NP>::G;
  const int tid = threadIdx.x;
  const int g = tid / Cfg<MP, NP>::TPG, lt = tid % Cfg<MP, NP>::TPG;
  const int tm = lt / (NP / 4), tn = lt % (NP / 4);
  if (steps > 0) {
    load(p0);
    store(0);
    __syncthreads();
  }
  for (int64_t kt = 0; kt < steps; ++kt) {
    const int cur = static_cast<int>(kt & 1);
    const bool more = kt + 1 < steps;
    if (more) load(p0 + (kt + 1) * kBK);  // in flight while the FMAs below run
#pragma unroll  // a constant trip count (kBK / G), so the loop unrolls fully
    for (int i = 0; i < kBK / G; ++i) {
      const int kk = g + i * G;
      const float4 av = ld4(&sm.As[cur][kk][tm * 4]);
      const float4 bv = ld4(&sm.Bs[cur][kk][tn * 4]);
      const float am[4] = {av.x, av.y, av.z, av.w}, bn[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(am[i], bn[j], acc[i][j]);
    }
    if (more) store(cur ^ 1);  // that buffer was last read before the previous barrier
    __syncthreads();
  }
}

// Adds the groups' tiles in group order and writes C[m][n] (row-major, N columns) for the
// block's tile at (m0, n0), inside M x N.
template <int MP, int NP>
__device__ __forceinline__ void group_sum_store(Smem<MP, NP>& sm, const float (&acc)[4][4], int m0,
                                                int n0, int M, int N, float* C) {
  constexpr int G = Cfg<MP, NP>::G;
  const int tid = threadIdx.x;
  const int g = tid / Cfg<MP, NP>::TPG, lt = tid % Cfg<MP, NP>::TPG;
  const int tm = lt / (NP / 4), tn = lt % (NP / 4);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) sm.red[g][tm * 4 + i][tn * 4 + j] = acc[i][j];
  __syncthreads();
  for (int e = tid; e < MP * NP; e += kThreads) {
    const int mi = e / NP, ni = e % NP, m = m0 + mi, n = n0 + ni;
    if (m >= M || n >= N) continue;
    float v = sm.red[0][mi][ni];
#pragma unroll
    for (int q = 1; q < G; ++q) v += sm.red[q][mi][ni];
    C[static_cast<int64_t>(m) * N + n] = v;
  }
}

}  // namespace graft::cuda::bwd_tiles
