#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/simd.h"

namespace graft::cpu::GRAFT_CPU_NS {
namespace {

// The register tile is MR rows x NV vectors of B's columns, MR*NV <= kAccRegs accumulators
// (kernels/cpu/simd.h): 6x4, 8x3, 12x2 and 12x1 vectors with AVX-512's or NEON's 24, 6x2 and 12x1
// with AVX2's 12, 4x2 and 8x1 with SSE2's 8. A panel is the widest tile's columns: 64 floats on
// AVX-512, 16 on AVX2 and NEON, 8 on SSE2.
constexpr int kMaxNv = kAccRegs >= 24 ? 4 : 2;
constexpr int kPanel = kMaxNv * kVec;
constexpr int kMaxMr = 12;
// K is cut into near-equal blocks of at most kMaxKc so that one packed B panel (kc x kPanel
// floats, <= 40 KiB) stays in L1 while every row tile of the M block streams past it. Narrower
// panels take longer K blocks (fewer passes over C) in the same space.
constexpr int kMaxKc = kPanel >= 64 ? 160 : 10240 / kPanel;

struct Tile {
  const float* a[kMaxMr];  // MR row pointers into A (rows past the edge point at zeros)
  const float* b;          // packed panel: kc rows of kVec*NV floats, zero-padded past `cols`
  float* c;
  int64_t ldc;
  int kc, rows, cols;     // valid rows/columns of this tile
  bool first, last;       // first / last K block
  const float* bias;      // padded to kVec*NV, or null
  const float* residual;  // at this tile's first element, or null
  int64_t ld_residual;
  Act act;
};

// MR x (kVec*NV) register tile. MR*NV accumulators: with NV B vectors loaded per k and MR
// broadcasts there are enough independent FMAs to cover the FMA latency on two pipes. Every
// element's sum runs over k in order, whatever the tile, so all FMA paths give the same bits.
template <int MR, int NV>
void tile_kernel(const Tile& t) {
  Vec acc[MR][NV];
  const bool full = t.rows == MR && t.cols == kVec * NV;
  alignas(64) float tmp[MR][kVec * NV];
  if (t.first) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) acc[i][j] = Vec{};
  } else if (full) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) acc[i][j] = loadv(t.c + i * t.ldc + kVec * j);
  } else {
    for (int i = 0; i < t.rows; ++i) std::memcpy(tmp[i], t.c + i * t.ldc, sizeof(float) * t.cols);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) acc[i][j] = loadv(tmp[i] + kVec * j);
  }

  const float* b = t.b;
  for (int p = 0; p < t.kc; ++p, b += kVec * NV) {
    Vec bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = loadv(b + kVec * j);
    for (int i = 0; i < MR; ++i) {
      const Vec av = splat(t.a[i][p]);
      for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }

  if (t.last) {
    if (t.bias)
      for (int j = 0; j < NV; ++j) {
        const Vec bj = loadv(t.bias + kVec * j);
        for (int i = 0; i < MR; ++i) acc[i][j] += bj;
      }
    if (t.residual) {
      if (full) {
        for (int i = 0; i < MR; ++i)
          for (int j = 0; j < NV; ++j)
            acc[i][j] += loadv(t.residual + i * t.ld_residual + kVec * j);
      } else {
        for (int i = 0; i < t.rows; ++i)
          std::memcpy(tmp[i], t.residual + i * t.ld_residual, sizeof(float) * t.cols);
        for (int i = 0; i < t.rows; ++i)
          for (int j = 0; j < NV; ++j) acc[i][j] += loadv(tmp[i] + kVec * j);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) acc[i][j] = act_vec(acc[i][j], t.act);
  }

  if (full) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) storev(t.c + i * t.ldc + kVec * j, acc[i][j]);
    return;
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) storev(tmp[i] + kVec * j, acc[i][j]);
  for (int i = 0; i < t.rows; ++i) std::memcpy(t.c + i * t.ldc, tmp[i], sizeof(float) * t.cols);
}

// Row-tile height for a panel of NV vectors: narrower panels get taller tiles so the FMA count per
// k step (MR*NV) stays high.
constexpr int mr_for(int nv) {
  return kAccRegs / nv < kMaxMr ? kAccRegs / nv : kMaxMr;
}

template <int NV>
void panel(int m, const float* a, int64_t lda, Tile t, const float* zeros) {
  constexpr int MR = mr_for(NV);
  const float* residual = t.residual;
  float* c = t.c;
  for (int i0 = 0; i0 < m; i0 += MR) {
    t.rows = std::min(MR, m - i0);
    for (int i = 0; i < MR; ++i) t.a[i] = i < t.rows ? a + (i0 + i) * lda : zeros;
    t.c = c + i0 * t.ldc;
    t.residual = residual ? residual + i0 * t.ld_residual : nullptr;
    tile_kernel<MR, NV>(t);
  }
}

void run_panel(int nv, int m, const float* a, int64_t lda, const Tile& t, const float* zeros) {
  if constexpr (kMaxNv == 4) {
    if (nv == 4) return panel<4>(m, a, lda, t, zeros);
    if (nv == 3) return panel<3>(m, a, lda, t, zeros);
  }
  if (nv == 2) return panel<2>(m, a, lda, t, zeros);
  panel<1>(m, a, lda, t, zeros);
}

}  // namespace

void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc, bool accumulate, const Epilogue* epp) {
  const Epilogue ep = epp ? *epp : Epilogue{nullptr, nullptr, 0, Act::none};
  // Each (K block, kPanel-column panel) of B is copied into a contiguous, zero-padded buffer before
  // the row tiles use it. Reading B in place would stride by ldb, and for power-of-two channel
  // counts those rows collide in a few L1 sets; the copy also makes column tails whole vectors.
  thread_local std::vector<float> packed, zeros;
  if (packed.size() < size_t(kMaxKc) * kPanel) packed.resize(size_t(kMaxKc) * kPanel);
  if (zeros.size() < size_t(kMaxKc)) zeros.assign(kMaxKc, 0.f);
  alignas(64) float bias_pad[kPanel];

  const int k_blocks = (k + kMaxKc - 1) / kMaxKc;
  const int kc_even = (k + k_blocks - 1) / k_blocks;
  for (int p0 = 0; p0 < k; p0 += kc_even) {
    Tile t{};
    t.kc = std::min(kc_even, k - p0);
    t.first = p0 == 0 && !accumulate;
    t.last = p0 + t.kc == k && epp != nullptr;
    t.ldc = ldc;
    t.ld_residual = ep.ld_residual;
    t.act = ep.act;
    for (int j0 = 0; j0 < n; j0 += kPanel) {
      const int cols = std::min(kPanel, n - j0);
      const int nv = (cols + kVec - 1) / kVec, width = nv * kVec;
      for (int p = 0; p < t.kc; ++p) {
        float* dst = packed.data() + size_t(p) * width;
        std::memcpy(dst, b + (p0 + p) * ldb + j0, sizeof(float) * cols);
        std::fill(dst + cols, dst + width, 0.f);
      }
      t.b = packed.data();
      t.cols = cols;
      t.c = c + j0;
      t.residual = ep.residual ? ep.residual + j0 : nullptr;
      t.bias = nullptr;
      if (ep.bias) {
        std::memcpy(bias_pad, ep.bias + j0, sizeof(float) * cols);
        std::fill(bias_pad + cols, bias_pad + width, 0.f);
        t.bias = bias_pad;
      }
      run_panel(nv, m, a + p0, lda, t, zeros.data());
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
