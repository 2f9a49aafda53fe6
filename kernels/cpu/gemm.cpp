#include "kernels/cpu/gemm.h"

#include <omp.h>

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

// Loads and stores of a tile row's vector j whose valid columns are `left` = cols - kVec*j: whole,
// the first few (masked), or none.
inline Vec load_cols(const float* p, int left) {
  if (left >= kVec) return loadv(p);
  return left > 0 ? loadv_first(p, left) : Vec{};
}
inline void store_cols(float* p, Vec v, int left) {
  if (left >= kVec)
    storev(p, v);
  else if (left > 0)
    storev_first(p, v, left);
}

// MR x (kVec*NV) register tile. MR*NV accumulators: with NV B vectors loaded per k and MR
// broadcasts there are enough independent FMAs to cover the FMA latency on two pipes. Every
// element's sum runs over k in order, whatever the tile, so all FMA paths give the same bits.
template <int MR, int NV>
void tile_kernel(const Tile& t) {
  // Every loop over the tile runs to the constant MR or NV and is unrolled, with the row count
  // tested inside: then acc is MR*NV registers. A loop bounded by t.rows indexes acc at run time,
  // which puts it on the stack, zeroed by a memset call on every tile.
  Vec acc[MR][NV];
  const bool full = t.rows == MR && t.cols == kVec * NV;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      if (t.first || i >= t.rows)
        acc[i][j] = Vec{};
      else
        acc[i][j] = full ? loadv(t.c + i * t.ldc + kVec * j)
                         : load_cols(t.c + i * t.ldc + kVec * j, t.cols - kVec * j);
    }

  const float* b = t.b;
  // One k step per iteration: the tile is sized for one step's operands, and Clang, unrolling
  // this 8 times, ran out of vector registers and spilled accumulators.
#pragma GCC unroll 1
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
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const Vec bj = loadv(t.bias + kVec * j);
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i) acc[i][j] += bj;
      }
    if (t.residual)
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) {
          const float* r = t.residual + i * t.ld_residual + kVec * j;
          if (full)
            acc[i][j] += loadv(r);
          else if (i < t.rows)
            acc[i][j] += load_cols(r, t.cols - kVec * j);
        }
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] = act_vec(acc[i][j], t.act);
  }

#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      float* ci = t.c + i * t.ldc + kVec * j;
      if (full)
        storev(ci, acc[i][j]);
      else if (i < t.rows)
        store_cols(ci, acc[i][j], t.cols - kVec * j);
    }
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

// The K blocks: near-equal, at most kMaxKc rows each.
int k_block(int k) {
  const int k_blocks = (k + kMaxKc - 1) / kMaxKc;
  return (k + k_blocks - 1) / k_blocks;
}

// Packs B's columns [j0, j0 + cols) and rows [p0, p0 + kc): kc rows of `width` floats (cols
// rounded up to whole vectors), zero-padded.
void pack_panel(const float* b, int64_t ldb, int p0, int kc, int j0, int cols, int width,
                float* dst) {
  if (cols == kPanel) {  // a whole panel: vector copies, not a libc call per row
    for (int p = 0; p < kc; ++p, dst += kPanel)
#pragma GCC unroll 4
      for (int v = 0; v < kMaxNv; ++v)
        storev(dst + kVec * v, loadv(b + (p0 + p) * ldb + j0 + kVec * v));
    return;
  }
  for (int p = 0; p < kc; ++p, dst += width) {
    std::memcpy(dst, b + (p0 + p) * ldb + j0, sizeof(float) * cols);
    std::fill(dst + cols, dst + width, 0.f);
  }
}

// One K block of C's columns [j0, j0 + cols) over every row of A (t.b: that block of the packed
// panel): bias padded to the panel, then the row tiles.
void block_panel(int m, const float* a, int64_t lda, const Epilogue& ep, int j0, int cols, Tile t,
                 const float* zeros) {
  alignas(64) float bias_pad[kPanel];
  const int nv = (cols + kVec - 1) / kVec, width = nv * kVec;
  t.cols = cols;
  t.c += j0;
  t.residual = ep.residual ? ep.residual + j0 : nullptr;
  t.bias = nullptr;
  if (ep.bias) {
    std::memcpy(bias_pad, ep.bias + j0, sizeof(float) * cols);
    std::fill(bias_pad + cols, bias_pad + width, 0.f);
    t.bias = bias_pad;
  }
  run_panel(nv, m, a, lda, t, zeros);
}

Tile block_tile(int k, int p0, int kc, float* c, int64_t ldc, bool accumulate, const Epilogue* epp,
                const Epilogue& ep) {
  Tile t{};
  t.kc = kc;
  t.first = p0 == 0 && !accumulate;
  t.last = p0 + kc == k && epp != nullptr;
  t.c = c;
  t.ldc = ldc;
  t.ld_residual = ep.ld_residual;
  t.act = ep.act;
  return t;
}

const float* zero_row() {
  thread_local std::vector<float> zeros(kMaxKc, 0.f);
  return zeros.data();
}

}  // namespace

void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc, bool accumulate, const Epilogue* epp) {
  const Epilogue ep = epp ? *epp : Epilogue{nullptr, nullptr, 0, Act::none};
  // Each (K block, kPanel-column panel) of B is copied into a contiguous, zero-padded buffer before
  // the row tiles use it. Reading B in place would stride by ldb, and for power-of-two channel
  // counts those rows collide in a few L1 sets; the copy also makes column tails whole vectors.
  thread_local std::vector<float> packed;
  if (packed.size() < size_t(kMaxKc) * kPanel) packed.resize(size_t(kMaxKc) * kPanel);
  const int kc_even = k_block(k);
  for (int p0 = 0; p0 < k; p0 += kc_even) {
    Tile t = block_tile(k, p0, std::min(kc_even, k - p0), c, ldc, accumulate, epp, ep);
    for (int j0 = 0; j0 < n; j0 += kPanel) {
      const int cols = std::min(kPanel, n - j0);
      pack_panel(b, ldb, p0, t.kc, j0, cols, (cols + kVec - 1) / kVec * kVec, packed.data());
      t.b = packed.data();
      block_panel(m, a + p0, lda, ep, j0, cols, t, zero_row());
    }
  }
}

int gemm_panel_width() {
  return kPanel;
}

size_t packed_b_size(int n, int k) {
  return size_t(n + kPanel - 1) / kPanel * kPanel * k;
}

void pack_b(int n, int k, const float* b, int64_t ldb, float* packed, int panel_lo, int panel_hi) {
  // Row by row across the panels: B is read front to back, each row once. Panel by panel, every
  // row of a narrow strip was a new cache line a row's length away from the last, and the
  // prefetchers fell behind (at batch 1 the packing took 13% of the forward on avx512, 21% on
  // avx2, whose panels are 16 floats).
  const int full_hi = std::min(panel_hi, n / kPanel);  // panels [panel_lo, full_hi) are whole
  for (int p = 0; p < k; ++p) {
    const float* src = b + p * ldb;
    for (int jp = panel_lo; jp < full_hi; ++jp) {
      float* dst = packed + (size_t(jp) * k + p) * kPanel;
#pragma GCC unroll 4
      for (int v = 0; v < kMaxNv; ++v) storev(dst + kVec * v, loadv(src + jp * kPanel + kVec * v));
    }
  }
  for (int jp = std::max(panel_lo, full_hi); jp < panel_hi; ++jp) {
    const int j0 = jp * kPanel, cols = n - j0;
    pack_panel(b, ldb, 0, k, j0, cols, (cols + kVec - 1) / kVec * kVec, packed + size_t(j0) * k);
  }
}

float* call_pack_buffer(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

void gemm_packed(int m, int n, int k, const float* a, int64_t lda, const float* packed, int j0,
                 float* c, int64_t ldc, const Epilogue* epp) {
  const Epilogue ep = epp ? *epp : Epilogue{nullptr, nullptr, 0, Act::none};
  const int kc_even = k_block(k);
  for (int p0 = 0; p0 < k; p0 += kc_even) {
    Tile t = block_tile(k, p0, std::min(kc_even, k - p0), c, ldc, false, epp, ep);
    for (int jc = 0; jc < n; jc += kPanel) {
      const int cols = std::min(kPanel, n - jc), width = (cols + kVec - 1) / kVec * kVec;
      // Panel j0 + jc holds k rows of `width` floats, so K block p0 starts p0 rows in.
      t.b = packed + size_t(j0 + jc) * k + size_t(p0) * width;
      block_panel(m, a + p0, lda, ep, jc, cols, t, zero_row());
    }
  }
}

void gemm_threads(int64_t m, int n, int k, const float* a, const float* b, float* c,
                  const Epilogue* ep, const float* b_packed) {
  // Row blocks of 96 (a multiple of every tile height) keep a 96 x 128 slice of A in L2; column
  // blocks are whole panels. With too few items to keep every core busy (7x7 and 14x14 maps at
  // small batches) the rows are split first, down to 24, then the columns, down to one panel.
  // Columns first would pack each weight once, but ran slower on 2 threads (bench/worklog-cpu.md).
  const int64_t min_items = 4 * omp_get_max_threads();
  int mc = 96, nc = std::max(256, kPanel);
  auto m_blocks = [&] { return (m + mc - 1) / mc; };
  auto n_blocks = [&] { return int64_t(n + nc - 1) / nc; };
  while (m_blocks() * n_blocks() < min_items && mc > 24) mc /= 2;
  while (m_blocks() * n_blocks() < min_items && nc > kPanel) nc /= 2;
  const int64_t mb = m_blocks(), nb = n_blocks();
  // Packing B for every item reads B once per row block; packing it once up front writes it and
  // reads it back, about three passes, but then in the panel order the tiles read. B packed
  // before the call (a frozen layer's weights) is read as it is.
  const bool prepack = !b_packed && mb >= 3;
  float* const scratch = prepack ? call_pack_buffer(packed_b_size(n, k)) : nullptr;
  const float* const packed = b_packed ? b_packed : scratch;
  const int panels = (n + kPanel - 1) / kPanel;
#pragma omp parallel
  {
    if (prepack) {
      // Each thread packs a contiguous range of panels, row by row (pack_b).
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      pack_b(n, k, b, n, scratch, int(int64_t(panels) * t / nt),
             int(int64_t(panels) * (t + 1) / nt));
#pragma omp barrier
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < mb * nb; ++item) {
      const int64_t i0 = item / nb * mc;
      const int j0 = int(item % nb) * nc;
      const int rows = int(std::min<int64_t>(mc, m - i0)), cols = std::min(nc, n - j0);
      Epilogue e{};
      if (ep)
        e = Epilogue{ep->bias ? ep->bias + j0 : nullptr,
                     ep->residual ? ep->residual + i0 * n + j0 : nullptr, n, ep->act};
      float* ci = c + i0 * n + j0;
      if (packed)
        gemm_packed(rows, cols, k, a + i0 * k, k, packed, j0, ci, n, ep ? &e : nullptr);
      else
        gemm(rows, cols, k, a + i0 * k, k, b + j0, n, ci, n, false, ep ? &e : nullptr);
    }
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
