// conv2d: three paths behind one entry point, chosen by shape.
//   pointwise (1x1, stride 1, no padding, one group): the input already is the GEMM's A matrix;
//   depthwise (groups == in_c == out_c): vectorised over channels, no GEMM;
//   everything else: im2col of a few output rows into a thread-local buffer, then the same GEMM.
#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/simd.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {
namespace {

// im2col runs are short (a 3-channel kernel row is 9 floats), so a libc memcpy call or a scalar
// loop costs more than the data. The buffer is written front to back and every segment after a
// run is written too, so a run is copied as whole kRunPiece-float pieces and its overhang is
// overwritten by what follows (the buffer has a piece of slack at the end). Only the read side
// must not pass the end of the input. 8 floats on every path: wider stores that overlap the
// previous one stall when they split cache lines (bench/worklog-cpu.md, im2col v7).
constexpr int kRunPiece = 8;
inline void copy_run(float* dst, const float* src, int n, const float* src_end) {
  typedef float Piece __attribute__((vector_size(kRunPiece * sizeof(float))));
  int i = 0;
  if (src + (n + kRunPiece - 1) / kRunPiece * kRunPiece <= src_end) {
    for (; i < n; i += kRunPiece) {
      Piece v;
      std::memcpy(&v, src + i, sizeof v);
      std::memcpy(dst + i, &v, sizeof v);
    }
    return;
  }
#pragma GCC unroll 1
  for (; i < n; ++i) dst[i] = src[i];
}

bool is_pointwise(const ConvShape& s) {
  return s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w;
}
bool is_depthwise(const ConvShape& s) {
  return s.groups == s.in_c && s.groups == s.out_c && s.groups > 1;
}

// w_packed: the weights in conv2d_pack's layout, or null (w is then packed here).
void conv_pointwise(const ConvShape& s, const float* x, const float* w, const float* w_packed,
                    const float* bias, const float* residual, Act act, float* y) {
  const Epilogue ep{bias, residual, s.out_c, act};
  gemm_threads(int64_t(s.n) * s.out_h * s.out_w, s.out_c, s.in_c, x, w, y, &ep, w_packed);
}

// A vector of channels: whole, or when Tail the first `lanes` (< kVec) of them, masked.
template <bool Tail>
inline Vec load_lanes(const float* p, int lanes) {
  return Tail ? loadv_first(p, lanes) : loadv(p);
}

// A block's epilogue: bias, residual, activation, store (masked to `lanes` channels when Tail).
template <int P, int NV, bool Tail>
inline void dw_finish(const Vec (&acc)[P][NV], int C, int c0, const float* bias, const float* res,
                      Act act, float* yo, int lanes) {
  auto ld = [lanes](const float* p) { return load_lanes<Tail>(p, lanes); };
  // Unrolled, so the caller's acc stays in registers (a rolled loop puts it on the stack).
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      Vec v = acc[p][j];
      if (bias) v += ld(bias + c0 + kVec * j);
      if (res) v += ld(res + int64_t(p) * C + c0 + kVec * j);
      float* out = yo + int64_t(p) * C + c0 + kVec * j;
      if (Tail)
        storev_first(out, act_vec(v, act), lanes);
      else
        storev(out, act_vec(v, act));
    }
}

// Depthwise: each output channel reads one input channel, so there is no reduction to block;
// the work is a stream of (tap x channel vector) FMAs with two loads each. P neighbouring output
// pixels share each weight vector, and NV channel vectors are in flight per pixel, so P*NV
// independent accumulators cover the FMA latency and a weight load feeds P FMAs. Taps outside the
// image are skipped, not multiplied by zero: [kx0, kx1) is the in-bounds kernel column range,
// common to the P pixels (the row loop only groups pixels whose windows are all inside).
template <int P, int NV, bool Tail = false>
inline void dw_pixels(const ConvShape& s, const float* xb, const float* w, int ky0, int ky1,
                      int iy0, int ix0, int kx0, int kx1, int c0, const float* bias,
                      const float* res, Act act, float* yo, int lanes = kVec) {
  const int C = s.in_c;
  // Tail: one vector of `lanes` < kVec channels, loaded and stored masked.
  auto ld = [lanes](const float* p) { return load_lanes<Tail>(p, lanes); };
  Vec acc[P][NV] = {};
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* xr = xb + int64_t(iy0 + ky) * s.in_w * C + c0;
    const float* wr = w + int64_t(ky) * s.k_w * C + c0;
    for (int kx = kx0; kx < kx1; ++kx) {
      for (int j = 0; j < NV; ++j) {
        const Vec wv = ld(wr + int64_t(kx) * C + kVec * j);
        for (int p = 0; p < P; ++p)
          acc[p][j] += ld(xr + int64_t(ix0 + p * s.stride_w + kx) * C + kVec * j) * wv;
      }
    }
  }
  dw_finish<P, NV, Tail>(acc, C, c0, bias, res, act, yo, lanes);
}

// Stride 1, K kernel columns, P interior pixels, NV vectors of channels: each input vector is
// loaded once and feeds every pixel whose window covers it (up to K), against the kernel row's K
// weight vectors held in registers: (P + 2K - 1) / (P K) loads per multiply-add, 0.54 for a 3x3
// and P = 8, where dw_pixels needs 1 + 1/P. Each pixel still sums its taps kernel row by row,
// column by column, so the bits are dw_pixels'.
template <int K, int P, int NV>
inline void dw_slide(const ConvShape& s, const float* xb, const float* w, int ky0, int ky1, int iy0,
                     int ix0, int c0, const float* bias, const float* res, Act act, float* yo) {
  const int C = s.in_c;
  Vec acc[P][NV] = {};
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* xr = xb + (int64_t(iy0 + ky) * s.in_w + ix0) * C + c0;
    const float* wr = w + int64_t(ky) * K * C + c0;
    Vec wv[K][NV];
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) wv[kx][j] = loadv(wr + int64_t(kx) * C + kVec * j);
#pragma GCC unroll 16
    for (int c = 0; c < P + K - 1; ++c)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const Vec xv = loadv(xr + int64_t(c) * C + kVec * j);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p)
          if (c - p >= 0 && c - p < K) acc[p][j] += xv * wv[c - p][j];
      }
  }
  dw_finish<P, NV, false>(acc, C, c0, bias, res, act, yo, kVec);
}

// One output row, channels [c0, c0 + kVec*NV): groups of P interior pixels, single edge pixels.
template <int P, int NV, bool Tail = false>
void dw_row(const ConvShape& s, const float* xb, const float* w, int oy, int c0, int ox_lo,
            int ox_hi, const float* bias, const float* res_row, Act act, float* yrow,
            int lanes = kVec) {
  const int C = s.in_c;
  const int iy0 = oy * s.stride_h - s.pad_top;
  const int ky0 = std::max(0, -iy0), ky1 = std::min(s.k_h, s.in_h - iy0);
  for (int ox = 0; ox < s.out_w;) {
    const int ix0 = ox * s.stride_w - s.pad_left;
    const float* res = res_row ? res_row + int64_t(ox) * C : nullptr;
    if (ox >= ox_lo && ox + P <= ox_hi) {
      dw_pixels<P, NV, Tail>(s, xb, w, ky0, ky1, iy0, ix0, 0, s.k_w, c0, bias, res, act,
                             yrow + int64_t(ox) * C, lanes);
      ox += P;
    } else {
      const int kx0 = std::max(0, -ix0), kx1 = std::min(s.k_w, s.in_w - ix0);
      dw_pixels<1, NV, Tail>(s, xb, w, ky0, ky1, iy0, ix0, kx0, kx1, c0, bias, res, act,
                             yrow + int64_t(ox) * C, lanes);
      ox += 1;
    }
  }
}

// Stride 1, K kernel columns: the groups of kSlidePixels interior pixels of a row from ox_lo on,
// by dw_slide, over channels [0, c1) (whole vectors) in blocks of kSlideVecs vectors, then of one.
// Channels inside a group, not groups inside a channel block: a group's window (K rows of
// kSlidePixels + K - 1 pixels, every channel) stays in L1 from one block to the next, where a
// whole row's K rows (43 KiB for 112 pixels of 32 channels) do not. NV*(K + kSlidePixels + 1)
// registers: 2 vectors where there are 32 registers, else 1; sse2 (no FMA: a register for each
// product) takes 4 pixels.
constexpr int kSlidePixels = kAccRegs >= 12 ? 8 : 4;
constexpr int kSlideVecs = kAccRegs >= 24 ? 2 : 1;
template <int K>
void dw_slide_groups(const ConvShape& s, const float* xb, const float* w, int oy, int ox_lo,
                     int ox_hi, int c1, const float* bias, const float* res_row, Act act,
                     float* yrow) {
  constexpr int P = kSlidePixels;
  const int C = s.in_c;
  const int iy0 = oy * s.stride_h - s.pad_top;
  const int ky0 = std::max(0, -iy0), ky1 = std::min(s.k_h, s.in_h - iy0);
  for (int ox = ox_lo; ox + P <= ox_hi; ox += P) {
    const float* res = res_row ? res_row + int64_t(ox) * C : nullptr;
    float* yo = yrow + int64_t(ox) * C;
    int c0 = 0;
    for (; c0 + kSlideVecs * kVec <= c1; c0 += kSlideVecs * kVec)
      dw_slide<K, P, kSlideVecs>(s, xb, w, ky0, ky1, iy0, ox - s.pad_left, c0, bias, res, act, yo);
    for (; c0 < c1; c0 += kVec)
      dw_slide<K, P, 1>(s, xb, w, ky0, ky1, iy0, ox - s.pad_left, c0, bias, res, act, yo);
  }
}

// Output pixels [ox0, ox1) of a row, one at a time, channels [0, c1) (whole vectors). A pixel
// alone has no neighbour to share its weights with, and one channel vector is one chain of
// dependent FMAs (4 cycles each): 4 vectors at a time keep 4 chains in flight. Where the
// sliding groups leave most of a row (a 5x5 kernel on a 7x7 or 14x14 map), this is most of it.
void dw_single_pixels(const ConvShape& s, const float* xb, const float* w, int oy, int ox0, int ox1,
                      int c1, const float* bias, const float* res_row, Act act, float* yrow) {
  const int C = s.in_c;
  const int iy0 = oy * s.stride_h - s.pad_top;
  const int ky0 = std::max(0, -iy0), ky1 = std::min(s.k_h, s.in_h - iy0);
  for (int ox = ox0; ox < ox1; ++ox) {
    const int ix0 = ox * s.stride_w - s.pad_left;
    const int kx0 = std::max(0, -ix0), kx1 = std::min(s.k_w, s.in_w - ix0);
    const float* res = res_row ? res_row + int64_t(ox) * C : nullptr;
    float* yo = yrow + int64_t(ox) * C;
    int c0 = 0;
    for (; c0 + 4 * kVec <= c1; c0 += 4 * kVec)
      dw_pixels<1, 4>(s, xb, w, ky0, ky1, iy0, ix0, kx0, kx1, c0, bias, res, act, yo);
    for (; c0 + 2 * kVec <= c1; c0 += 2 * kVec)
      dw_pixels<1, 2>(s, xb, w, ky0, ky1, iy0, ix0, kx0, kx1, c0, bias, res, act, yo);
    for (; c0 < c1; c0 += kVec)
      dw_pixels<1, 1>(s, xb, w, ky0, ky1, iy0, ix0, kx0, kx1, c0, bias, res, act, yo);
  }
}

// Stride 1, K columns: the sliding groups along the row's interior, then the pixels left over,
// over the channels in whole vectors. Returns the end of those channels (the rest, fewer than a
// vector, are the caller's).
template <int K>
int dw_slide_blocks(const ConvShape& s, const float* xb, const float* w, int oy, int ox_lo,
                    int ox_hi, const float* bias, const float* res_row, Act act, float* yrow) {
  const int c1 = s.in_c / kVec * kVec;
  const int slid_end = ox_lo + (ox_hi - ox_lo) / kSlidePixels * kSlidePixels;
  dw_slide_groups<K>(s, xb, w, oy, ox_lo, ox_hi, c1, bias, res_row, act, yrow);
  dw_single_pixels(s, xb, w, oy, 0, ox_lo, c1, bias, res_row, act, yrow);
  dw_single_pixels(s, xb, w, oy, slid_end, s.out_w, c1, bias, res_row, act, yrow);
  return c1;
}

// Output columns [ox_lo, ox_hi) have their window fully inside the image horizontally.
void dw_columns(const ConvShape& s, int& ox_lo, int& ox_hi) {
  ox_lo = std::min(s.out_w, (s.pad_left + s.stride_w - 1) / s.stride_w);
  const int last = s.in_w - s.k_w + s.pad_left;
  ox_hi = std::max(ox_lo, last < 0 ? 0 : std::min(s.out_w, last / s.stride_w + 1));
}

// Output row oy of image xb, every channel.
void dw_output_row(const ConvShape& s, const float* xb, const float* w, int oy, int ox_lo,
                   int ox_hi, const float* bias, const float* rrow, Act act, float* yrow) {
  const int C = s.in_c;
  // Channel blocks of 4, 2 and 1 vectors (kernels/cpu/simd.h). The 4-vector block only where
  // the register file holds its 16 accumulators and 4 weight vectors.
  int c0 = 0;
  if (s.stride_w == 1 && s.k_w == 3)
    c0 = dw_slide_blocks<3>(s, xb, w, oy, ox_lo, ox_hi, bias, rrow, act, yrow);
  else if (s.stride_w == 1 && s.k_w == 5)
    c0 = dw_slide_blocks<5>(s, xb, w, oy, ox_lo, ox_hi, bias, rrow, act, yrow);
  if constexpr (kAccRegs >= 24)
    for (; c0 + 4 * kVec <= C; c0 += 4 * kVec)
      dw_row<4, 4>(s, xb, w, oy, c0, ox_lo, ox_hi, bias, rrow, act, yrow);
  for (; c0 + 2 * kVec <= C; c0 += 2 * kVec)
    dw_row<kDwPixels2, 2>(s, xb, w, oy, c0, ox_lo, ox_hi, bias, rrow, act, yrow);
  for (; c0 + kVec <= C; c0 += kVec)
    dw_row<kDwPixels1, 1>(s, xb, w, oy, c0, ox_lo, ox_hi, bias, rrow, act, yrow);
  // Channel tail (< kVec): one masked vector, so every channel sums the same way on every path.
  if (c0 < C)
    dw_row<kDwPixels1, 1, true>(s, xb, w, oy, c0, ox_lo, ox_hi, bias, rrow, act, yrow, C - c0);
}

void conv_depthwise(const ConvShape& s, const float* x, const float* w, const float* bias,
                    const float* residual, Act act, float* y) {
  const int C = s.in_c;
  int ox_lo, ox_hi;
  dw_columns(s, ox_lo, ox_hi);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(s.n) * s.out_h; ++row) {
    const int b = int(row / s.out_h), oy = int(row % s.out_h);
    dw_output_row(s, x + int64_t(b) * s.in_h * s.in_w * C, w, oy, ox_lo, ox_hi, bias,
                  residual ? residual + row * s.out_w * C : nullptr, act, y + row * s.out_w * C);
  }
}

// im2col of output pixels [ox0, ox1) of one output row and one group: A[ox - ox0][k_h*k_w*icg],
// zeros where the window hangs over the edge.
void im2col_row(const ConvShape& s, const float* xb, const float* x_end, int oy, int ox0, int ox1,
                int g, float* cols) {
  const int icg = s.in_c / s.groups, K = s.k_h * s.k_w * icg;
  for (int ox = ox0; ox < ox1; ++ox) {
    float* dst = cols + size_t(ox - ox0) * K;
    const int ix0 = ox * s.stride_w - s.pad_left;
    const int kx0 = std::max(0, -ix0), kx1 = std::max(kx0, std::min(s.k_w, s.in_w - ix0));
    for (int ky = 0; ky < s.k_h; ++ky, dst += s.k_w * icg) {
      const int iy = oy * s.stride_h - s.pad_top + ky;
      if (iy < 0 || iy >= s.in_h) {
        std::fill(dst, dst + s.k_w * icg, 0.f);
        continue;
      }
      // Left zeros, run(s), then right zeros: in this order each write may overhang into the
      // next (see copy_run).
      std::fill(dst, dst + kx0 * icg, 0.f);
      const float* src = xb + (int64_t(iy) * s.in_w + ix0) * s.in_c + g * icg;
      if (s.groups == 1) {
        // Neighbouring pixels are adjacent in NHWC: the in-bounds taps of one kernel row are a
        // single run.
        copy_run(dst + kx0 * icg, src + kx0 * icg, (kx1 - kx0) * icg, x_end);
      } else {
        for (int kx = kx0; kx < kx1; ++kx)
          copy_run(dst + kx * icg, src + int64_t(kx) * s.in_c, icg, x_end);
      }
      std::fill(dst + kx1 * icg, dst + s.k_w * icg, 0.f);
    }
  }
}

// General path: im2col a few output rows into a thread-local buffer (sized to stay in L2), then
// one GEMM with the layer's weights as B. Several rows per GEMM amortise packing B and the ragged
// last row tile when K is small (the 3-channel stem has K = 27). Gathering the taps in place
// instead (one GEMM per kernel row reading the input directly) was measured slower: it makes k_h
// passes over the output tile with shorter K blocks.
void conv_general(const ConvShape& s, const float* x, const float* w, const float* w_packed,
                  const float* bias, const float* residual, Act act, float* y) {
  const int icg = s.in_c / s.groups, ocg = s.out_c / s.groups;
  const int K = s.k_h * s.k_w * icg;
  const float* x_end = x + int64_t(s.n) * s.in_h * s.in_w * s.in_c;
  const int64_t rows = int64_t(s.n) * s.out_h;
  const int64_t per_row = int64_t(s.out_w) * K;
  // Up to 8 rows, at most 64 Ki floats of im2col, and at least 4 items per thread.
  int64_t rows_per_item = std::clamp<int64_t>(65536 / std::max<int64_t>(per_row, 1), 1, 8);
  rows_per_item = std::min(rows_per_item, std::max<int64_t>(1, rows / (4 * omp_get_max_threads())));
  const int64_t items = (rows + rows_per_item - 1) / rows_per_item;
  const size_t group_pack = packed_b_size(ocg, K);
  const int panels = (ocg + gemm_panel_width() - 1) / gemm_panel_width();
  // The weights packed once for every item (gemm_packed), unless they come packed. There are at
  // least 4 items per thread, so this beats packing them per item.
  float* const scratch = w_packed ? nullptr : call_pack_buffer(group_pack * s.groups);
  const float* const packed = w_packed ? w_packed : scratch;
#pragma omp parallel
  {
    thread_local std::vector<float> cols;
    const size_t need = size_t(rows_per_item * per_row) + kRunPiece;
    if (cols.size() < need) cols.resize(need);
    if (scratch) {
#pragma omp for schedule(static) collapse(2)
      for (int g = 0; g < s.groups; ++g)
        for (int jp = 0; jp < panels; ++jp)
          pack_b(ocg, K, w + g * ocg, s.out_c, scratch + g * group_pack, jp, jp + 1);
    }
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t r0 = item * rows_per_item, r1 = std::min(rows, r0 + rows_per_item);
      const int m = int((r1 - r0) * s.out_w);
      const int64_t y0 = r0 * s.out_w * s.out_c;  // output rows are contiguous across images
      for (int g = 0; g < s.groups; ++g) {
        for (int64_t row = r0; row < r1; ++row) {
          const int b = int(row / s.out_h), oy = int(row % s.out_h);
          im2col_row(s, x + int64_t(b) * s.in_h * s.in_w * s.in_c, x_end, oy, 0, s.out_w, g,
                     cols.data() + (row - r0) * per_row);
        }
        const Epilogue ep{bias ? bias + g * ocg : nullptr,
                          residual ? residual + y0 + g * ocg : nullptr, s.out_c, act};
        gemm_packed(m, ocg, K, cols.data(), K, packed + g * group_pack, 0, y + y0 + g * ocg,
                    s.out_c, &ep);
      }
    }
  }
}

}  // namespace

void expand_depthwise(const ConvShape& pw, const float* x, const float* w_pw,
                      const float* w_pw_packed, const float* b_pw, Act act_pw, const ConvShape& dw,
                      const float* w_dw, const float* b_dw, Act act_dw, float* y) {
  const int C = dw.in_c, W = dw.in_w, S = dw.stride_h, K = dw.k_h;
  const int64_t row_floats = int64_t(W) * C;
  // Bands of B output rows; a band's input rows are the previous band's last K - S plus B*S new.
  // About 384 KiB of expanded rows, so the band stays in L2 between the GEMM and the depthwise.
  const int B = int(std::clamp<int64_t>((98304 / row_floats - K) / S + 1, 1, dw.out_h));
  // Each image's output rows are cut into `chunks` runs so that every thread has work; a run
  // expands its first band's rows in full.
  const int threads = omp_get_max_threads();
  const int chunks = std::min(dw.out_h, std::max(1, (2 * threads + dw.n - 1) / dw.n));
  int ox_lo, ox_hi;
  dw_columns(dw, ox_lo, ox_hi);
  const Epilogue ep{b_pw, nullptr, C, act_pw};
  // Every band's GEMM reads the expand's weights packed: packed here once unless they come so.
  const float* packed = w_pw_packed;
  if (!packed) {
    float* scratch = call_pack_buffer(packed_b_size(C, pw.in_c));
    pack_b(C, pw.in_c, w_pw, C, scratch, 0, (C + gemm_panel_width() - 1) / gemm_panel_width());
    packed = scratch;
  }
#pragma omp parallel
  {
    thread_local std::vector<float> band_buf;
    const size_t need = size_t((B - 1) * S + K) * row_floats;
    if (band_buf.size() < need) band_buf.resize(need);
    float* const band = band_buf.data();
#pragma omp for schedule(static)
    for (int64_t item = 0; item < int64_t(dw.n) * chunks; ++item) {
      const int b = int(item / chunks), ch = int(item % chunks);
      const int oy_begin = int(int64_t(dw.out_h) * ch / chunks);
      const int oy_end = int(int64_t(dw.out_h) * (ch + 1) / chunks);
      const float* xb = x + int64_t(b) * pw.in_h * pw.in_w * pw.in_c;
      float* yb = y + int64_t(b) * dw.out_h * dw.out_w * C;
      int have_lo = 0, have_hi = 0;  // expanded input rows [have_lo, have_hi) sit in `band`
      for (int oy0 = oy_begin; oy0 < oy_end; oy0 += B) {
        const int oy1 = std::min(oy_end, oy0 + B);
        const int r0 = std::max(0, oy0 * S - dw.pad_top);
        const int r1 = std::min(dw.in_h, (oy1 - 1) * S - dw.pad_top + K);
        // The rows this band shares with the last one move to its start; the rest are expanded.
        int fresh = r0;
        if (r0 >= have_lo && r0 < have_hi) {
          fresh = std::min(r1, have_hi);
          std::memmove(band, band + (r0 - have_lo) * row_floats,
                       sizeof(float) * (fresh - r0) * row_floats);
        }
        if (fresh < r1)
          gemm_packed(int(int64_t(r1 - fresh) * W), C, pw.in_c, xb + int64_t(fresh) * W * pw.in_c,
                      pw.in_c, packed, 0, band + (fresh - r0) * row_floats, C, &ep);
        have_lo = r0;
        have_hi = r1;
        // The band as an image of r1 - r0 rows whose output rows are oy0..oy1.
        ConvShape sb = dw;
        sb.n = 1;
        sb.in_h = r1 - r0;
        sb.out_h = oy1 - oy0;
        sb.pad_top = dw.pad_top + r0 - oy0 * S;
        for (int oy = oy0; oy < oy1; ++oy)
          dw_output_row(sb, band, w_dw, oy - oy0, ox_lo, ox_hi, b_dw, nullptr, act_dw,
                        yb + int64_t(oy) * dw.out_w * C);
      }
    }
  }
}

void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y) {
  if (is_pointwise(s))
    conv_pointwise(s, x, w, nullptr, bias, residual, act, y);
  else if (is_depthwise(s))
    conv_depthwise(s, x, w, bias, residual, act, y);
  else
    conv_general(s, x, w, nullptr, bias, residual, act, y);
}

size_t conv2d_packed_size(const ConvShape& s) {
  if (is_depthwise(s)) return 0;
  return packed_b_size(s.out_c / s.groups, s.k_h * s.k_w * (s.in_c / s.groups)) * s.groups;
}

void conv2d_pack(const ConvShape& s, const float* w, float* packed) {
  if (is_depthwise(s)) throw std::invalid_argument("conv2d_pack: a depthwise conv packs nothing");
  const int ocg = s.out_c / s.groups, K = s.k_h * s.k_w * (s.in_c / s.groups);
  const size_t group_pack = packed_b_size(ocg, K);
  const int panels = (ocg + gemm_panel_width() - 1) / gemm_panel_width();
  for (int g = 0; g < s.groups; ++g)
    pack_b(ocg, K, w + g * ocg, s.out_c, packed + g * group_pack, 0, panels);
}

void conv2d_packed(const ConvShape& s, const float* x, const float* w_packed, const float* bias,
                   const float* residual, Act act, float* y) {
  if (is_depthwise(s)) throw std::invalid_argument("conv2d_packed: a depthwise conv packs nothing");
  if (is_pointwise(s))
    conv_pointwise(s, x, nullptr, w_packed, bias, residual, act, y);
  else
    conv_general(s, x, nullptr, w_packed, bias, residual, act, y);
}

}  // namespace graft::cpu::GRAFT_CPU_NS
