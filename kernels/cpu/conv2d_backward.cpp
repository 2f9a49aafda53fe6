// conv2d_backward_data and conv2d_backward_filter: the forward's three shape classes
// (kernels/cpu/conv2d.cpp), each with its own path, and the plain loops of reference.cpp for the
// rest (grouped convs that are not depthwise).
//   pointwise: dx = dy . w^T and dw = x^T . dy, both through the GEMM;
//   depthwise: dx with stride 1 is the forward's depthwise kernel run on dy with the kernel
//     flipped; other strides and dw are direct loops vectorised over channels;
//   groups 1, any kernel and stride: dx as one accumulating GEMM per tap (dy row times that tap's
//     transposed weights, scattered with the stride), or for inputs of few channels one GEMM to
//     column gradients and a gather; dw as dy^T times an im2col of x.
//
// Determinism: every output element is written by exactly one work item, and the work items and
// the order of every sum are fixed by the shape alone, never by the thread count. Where a sum over
// pixels is split for parallelism (the dw paths), the number of splits comes from the shape and
// the partial sums are added in split order.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/reference.h"
#include "kernels/cpu/simd.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {
namespace {

// Partial dw sums are capped at this many floats in all, which bounds the split count for big
// filters (a 3x3 256->256 filter is 590 Ki floats).
constexpr int64_t kMaxPartialFloats = int64_t(4) << 20;

// dst[c][r] = src[r][c] for r < rows, c < cols, in 16 x 16 blocks so both sides stay in cache.
void transpose(int64_t rows, int cols, const float* src, int64_t ld_src, float* dst,
               int64_t ld_dst) {
  constexpr int kB = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kB)
    for (int c0 = 0; c0 < cols; c0 += kB) {
      const int64_t r1 = std::min<int64_t>(rows, r0 + kB);
      const int c1 = std::min(cols, c0 + kB);
      for (int c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

// transpose() split over row blocks of src on all threads, for the weights (up to 1280 x 320),
// which the calling thread would otherwise copy alone while the other core waits.
void transpose_parallel(int rows, int cols, const float* src, float* dst) {
  constexpr int kRows = 64;
  const int blocks = (rows + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (int64_t(rows) * cols > 16384)
  for (int blk = 0; blk < blocks; ++blk) {
    const int r0 = blk * kRows;
    transpose(std::min(kRows, rows - r0), cols, src + int64_t(r0) * cols, cols, dst + r0, rows);
  }
}

// Splits of a sum over `units` pixels (or rows): about one per `per_split`, at most 8 and at most
// what kMaxPartialFloats allows for partial results of `partial` floats each.
int split_count(int64_t units, int64_t per_split, int64_t partial) {
  int64_t splits = std::clamp<int64_t>(units / std::max<int64_t>(per_split, 1), 1, 8);
  splits =
      std::min(splits, std::max<int64_t>(1, kMaxPartialFloats / std::max<int64_t>(partial, 1)));
  return int(splits);
}

// dw = partial[0] + partial[1] + ... in that order; partial[0] is dw itself.
void reduce_splits(int splits, int64_t count, const float* partials, float* dw) {
  if (splits <= 1) return;
#pragma omp parallel for schedule(static) if (count * splits > 65536)
  for (int64_t i = 0; i < count; ++i) {
    float v = dw[i];
    for (int sp = 1; sp < splits; ++sp) v += partials[(sp - 1) * count + i];
    dw[i] = v;
  }
}

// ---- pointwise -------------------------------------------------------------------------------

bool is_pointwise(const ConvShape& s) {
  return s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.groups == 1 && s.in_h == s.out_h && s.in_w == s.out_w;
}

// dx[m][in_c] = dy[m][out_c] . w^T: w is [in_c][out_c], so the GEMM's B is a transposed copy.
void pw_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int n = s.in_c, k = s.out_c;
  static thread_local std::vector<float> wt_buf;
  if (wt_buf.size() < size_t(n) * k) wt_buf.resize(size_t(n) * k);
  float* const wt = wt_buf.data();  // the pointer, not the thread_local, enters the region
  transpose_parallel(n, k, w, wt);
  gemm_threads(int64_t(s.n) * s.out_h * s.out_w, n, k, dy, wt, dx, nullptr);
}

// dw[in_c][out_c] = x^T . dy, a sum over pixels. The GEMM wants the pixel dimension as K with a
// row-major A, so one of x and dy is transposed chunk by chunk: the one with fewer channels (the
// transpose costs a pass over it; B is only packed). With dy as A the GEMM yields dw^T.
// Items are (split of the pixel chunks, block of A's rows, block of B's columns: with few pixels
// there is one split, and the blocks keep both cores busy); a split accumulates its chunks into its
// own partial result with the GEMM's accumulate flag, and the partials are added in split order
// while dw is written (transposing when the GEMM made dw^T).
void pw_filter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  constexpr int64_t kChunk = 320;  // two even K blocks of the GEMM
  constexpr int kRowBlock = 96, kMaxColBlock = 256;
  const int64_t m = int64_t(s.n) * s.out_h * s.out_w;
  if (m == 0) {  // no pixels: the sum is empty, and dw is still written
    std::fill(dw, dw + int64_t(s.in_c) * s.out_c, 0.f);
    return;
  }
  const bool x_is_a = s.in_c <= s.out_c;
  const float* a_src = x_is_a ? x : dy;
  const float* b_src = x_is_a ? dy : x;
  const int ca = x_is_a ? s.in_c : s.out_c, cb = x_is_a ? s.out_c : s.in_c;
  const int64_t count = int64_t(ca) * cb;
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  const int splits = split_count(chunks, 4, count);
  // One split that already yields dw's layout writes dw itself: no copy of a big filter.
  const bool direct = splits == 1 && x_is_a;
  static thread_local std::vector<float> part_buf;
  if (!direct && part_buf.size() < size_t(splits) * count) part_buf.resize(size_t(splits) * count);
  float* const partials = direct ? dw : part_buf.data();
  const int row_blocks = (ca + kRowBlock - 1) / kRowBlock;
  // Narrower column blocks while there are fewer than 4 items (the shape decides, not the threads).
  int col_block = kMaxColBlock;
  while (col_block > 64 && splits * row_blocks * ((cb + col_block - 1) / col_block) < 4)
    col_block /= 2;
  const int col_blocks = (cb + col_block - 1) / col_block;
  const int blocks = row_blocks * col_blocks;
#pragma omp parallel
  {
    thread_local std::vector<float> at;
    if (at.size() < size_t(kRowBlock) * kChunk) at.resize(size_t(kRowBlock) * kChunk);
#pragma omp for schedule(dynamic, 1)
    for (int item = 0; item < splits * blocks; ++item) {
      const int sp = item / blocks, r0 = item % blocks / col_blocks * kRowBlock;
      const int j0 = item % col_blocks * col_block;
      const int rows = std::min(kRowBlock, ca - r0), cols = std::min(col_block, cb - j0);
      float* out = partials + sp * count + int64_t(r0) * cb + j0;
      // splits <= chunks, so every split has at least one chunk and writes all of its rows.
      const int64_t c0 = chunks * sp / splits, c1 = chunks * (sp + 1) / splits;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t p0 = c * kChunk, len = std::min(kChunk, m - p0);
        transpose(len, rows, a_src + p0 * ca + r0, ca, at.data(), len);
        gemm(rows, cols, int(len), at.data(), len, b_src + p0 * cb + j0, cb, out, cb, c != c0,
             nullptr);
      }
    }
  }
  if (direct) return;
#pragma omp parallel for schedule(static) if (count * splits > 65536)
  for (int i = 0; i < s.in_c; ++i)
    for (int o = 0; o < s.out_c; ++o) {
      const int64_t k = x_is_a ? int64_t(i) * cb + o : int64_t(o) * cb + i;
      float v = partials[k];
      for (int sp = 1; sp < splits; ++sp) v += partials[sp * count + k];
      dw[int64_t(i) * s.out_c + o] = v;
    }
}

// Output columns [lo, hi) whose tap kx reads an input column: 0 <= ox*stride - pad + kx < in.
void tap_columns(int kx, int stride, int pad, int in, int out, int* lo, int* hi) {
  const int num_lo = pad - kx, num_hi = in - 1 + pad - kx;
  *lo = num_lo <= 0 ? 0 : (num_lo + stride - 1) / stride;
  *hi = num_hi < 0 ? 0 : std::min(out, num_hi / stride + 1);
  if (*hi < *lo) *hi = *lo;
}

// ---- depthwise -------------------------------------------------------------------------------

// Taps of one input coordinate: (kernel index, output index) pairs whose output reads it.
int taps_for(int i, int k, int stride, int pad, int out, int* ks, int* os) {
  int count = 0;
  for (int kk = 0; kk < k; ++kk) {
    const int num = i + pad - kk;
    if (num < 0 || num % stride != 0 || num / stride >= out) continue;
    ks[count] = kk;
    os[count] = num / stride;
    ++count;
  }
  return count;
}

// Input pixels of one phase (ix mod stride) are read through the same kernel columns
// (kx = kx0, kx0 + stride, ...), and neighbouring pixels of a phase, ix and ix + stride, read
// neighbouring output pixels through each of them. So P pixels of a phase share each weight load,
// as in the forward. ky_n valid kernel rows: dy row pointers dyr[], kernel row indices kys[].
// `check`: some of these pixels' taps fall outside dy (edge pixels, P == 1); skip those taps.
template <int P, int NV>
inline void dw_data_phase(const ConvShape& s, int ky_n, const float* const* dyr, const int* kys,
                          const float* w, int ix, int kx0, int c0, bool check, float* dxp) {
  const int C = s.in_c, S = s.stride_w;
  Vec acc[P][NV] = {};
  for (int a = 0; a < ky_n; ++a) {
    const float* wr = w + int64_t(kys[a]) * s.k_w * C + c0;
    for (int kx = kx0; kx < s.k_w; kx += S) {
      const int ox0 = (ix + s.pad_left - kx) / S;
      if (check && (ix + s.pad_left - kx < 0 || ox0 >= s.out_w)) continue;
      const float* d = dyr[a] + int64_t(ox0) * C + c0;
      for (int j = 0; j < NV; ++j) {
        const Vec wv = loadv(wr + int64_t(kx) * C + kVec * j);
        for (int p = 0; p < P; ++p) acc[p][j] += loadv(d + int64_t(p) * C + kVec * j) * wv;
      }
    }
  }
  // Unrolled, so acc stays in registers (a rolled loop puts it on the stack).
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) storev(dxp + int64_t(p) * S * C + c0 + kVec * j, acc[p][j]);
}

// Channels [c0, c0 + kVec*NV) of one dx row, phase by phase: groups of P interior pixels (all taps
// of the phase inside dy), single edge pixels with checks.
template <int P, int NV>
void dw_data_row(const ConvShape& s, int ky_n, const float* const* dyr, const int* kys,
                 const float* w, int c0, float* dxr) {
  const int S = s.stride_w, C = s.in_c;
  for (int ph = 0; ph < std::min(S, s.in_w); ++ph) {
    const int kx0 = (ph + s.pad_left) % S;
    // Last kernel column of the phase; interior pixels have ix + pad - kx_last >= 0 and
    // (ix + pad - kx0) / S < out_w.
    const int kx_last = kx0 + (s.k_w - 1 - kx0) / S * S;
    for (int ix = ph; ix < s.in_w;) {
      const bool inside = kx0 < s.k_w && ix + s.pad_left - kx_last >= 0 &&
                          (ix + (P - 1) * S + s.pad_left - kx0) / S < s.out_w &&
                          ix + (P - 1) * S < s.in_w;
      if (inside) {
        dw_data_phase<P, NV>(s, ky_n, dyr, kys, w, ix, kx0, c0, false, dxr + int64_t(ix) * C);
        ix += P * S;
      } else {
        dw_data_phase<1, NV>(s, ky_n, dyr, kys, w, ix, kx0, c0, true, dxr + int64_t(ix) * C);
        ix += S;
      }
    }
  }
}

// Depthwise dx for any stride, gathered: each input pixel sums over the (output pixel, tap) pairs
// that read it, kernel rows then columns in ascending order, so rows of dx are independent work
// items and nothing is accumulated across items. Channel tail (C % kVec): one channel at a time.
void dw_data_strided(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int C = s.in_c;
#pragma omp parallel
  {
    thread_local std::vector<int> kbuf;
    thread_local std::vector<const float*> rbuf;
    if (kbuf.size() < size_t(2 * s.k_h)) kbuf.resize(size_t(2 * s.k_h));
    if (rbuf.size() < size_t(s.k_h)) rbuf.resize(size_t(s.k_h));
#pragma omp for schedule(static)
    for (int64_t row = 0; row < int64_t(s.n) * s.in_h; ++row) {
      const int b = int(row / s.in_h), iy = int(row % s.in_h);
      int* kys = kbuf.data();
      int* oys = kys + s.k_h;
      const int ky_n = taps_for(iy, s.k_h, s.stride_h, s.pad_top, s.out_h, kys, oys);
      for (int a = 0; a < ky_n; ++a) rbuf[a] = dy + (int64_t(b) * s.out_h + oys[a]) * s.out_w * C;
      const float* const* dyr = rbuf.data();
      float* dxr = dx + row * s.in_w * C;
      // Channel blocks as in the forward (kernels/cpu/conv2d.cpp's conv_depthwise).
      int c0 = 0;
      if constexpr (kAccRegs >= 24)
        for (; c0 + 4 * kVec <= C; c0 += 4 * kVec) dw_data_row<4, 4>(s, ky_n, dyr, kys, w, c0, dxr);
      for (; c0 + 2 * kVec <= C; c0 += 2 * kVec)
        dw_data_row<kDwPixels2, 2>(s, ky_n, dyr, kys, w, c0, dxr);
      for (; c0 + kVec <= C; c0 += kVec) dw_data_row<kDwPixels1, 1>(s, ky_n, dyr, kys, w, c0, dxr);
      for (; c0 < C; ++c0)
        for (int ix = 0; ix < s.in_w; ++ix) {
          float acc = 0.f;
          for (int a = 0; a < ky_n; ++a)
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int num = ix + s.pad_left - kx;
              if (num < 0 || num % s.stride_w != 0 || num / s.stride_w >= s.out_w) continue;
              acc += dyr[a][int64_t(num / s.stride_w) * C + c0] *
                     w[(int64_t(kys[a]) * s.k_w + kx) * C + c0];
            }
          dxr[int64_t(ix) * C + c0] = acc;
        }
    }
  }
}

// With stride 1, dx is a forward depthwise convolution of dy with the kernel flipped in both
// directions: dx[iy] = sum_ky dy[iy + pad - ky] w[ky] = sum_j dy[iy - (k-1-pad) + j] w[k-1-j].
// So the forward's kernel (neighbouring pixels share each weight load) runs it, with padding
// k-1-pad before; what it reads past dy's end is zero, as it must be. Other strides, or padding
// beyond the kernel, go row by row.
void dw_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int pt = s.k_h - 1 - s.pad_top, pl = s.k_w - 1 - s.pad_left;
  if (s.stride_h != 1 || s.stride_w != 1 || pt < 0 || pl < 0) {
    dw_data_strided(s, dy, w, dx);
    return;
  }
  const int C = s.in_c, taps = s.k_h * s.k_w;
  static thread_local std::vector<float> flip_buf;
  if (flip_buf.size() < size_t(taps) * C) flip_buf.resize(size_t(taps) * C);
  for (int t = 0; t < taps; ++t)
    std::memcpy(flip_buf.data() + int64_t(taps - 1 - t) * C, w + int64_t(t) * C, sizeof(float) * C);
  ConvShape f = s;
  f.in_h = s.out_h;
  f.in_w = s.out_w;
  f.out_h = s.in_h;
  f.out_w = s.in_w;
  f.pad_top = pt;
  f.pad_left = pl;
  conv2d(f, dy, flip_buf.data(), nullptr, nullptr, Act::none, dx);
}

// Adds x * dy for one tap over output rows [r0, r1) and channels [c0, c0 + kVec*NV) (or one
// channel when NV == 0), in row then column order, to out[c0...].
template <int NV>
void dw_filter_tap(const ConvShape& s, const float* x, const float* dy, int ky, int kx, int64_t r0,
                   int64_t r1, int c0, float* out) {
  const int C = s.in_c;
  constexpr int L = NV == 0 ? 1 : NV;
  int ox_lo, ox_hi;
  tap_columns(kx, s.stride_w, s.pad_left, s.in_w, s.out_w, &ox_lo, &ox_hi);
  Vec acc[L];
  float acc1 = out[c0];
  if constexpr (NV > 0)
    for (int j = 0; j < NV; ++j) acc[j] = loadv(out + c0 + kVec * j);
  for (int64_t r = r0; r < r1; ++r) {
    const int b = int(r / s.out_h), oy = int(r % s.out_h);
    const int iy = oy * s.stride_h - s.pad_top + ky;
    if (iy < 0 || iy >= s.in_h) continue;
    const float* xr = x + (int64_t(b) * s.in_h + iy) * s.in_w * C + c0;
    const float* dr = dy + r * s.out_w * C + c0;
    for (int ox = ox_lo; ox < ox_hi; ++ox) {
      const float* xp = xr + (int64_t(ox) * s.stride_w - s.pad_left + kx) * C;
      const float* dp = dr + int64_t(ox) * C;
      if constexpr (NV == 0) {
        acc1 += xp[0] * dp[0];
      } else {
        for (int j = 0; j < NV; ++j) acc[j] += loadv(xp + kVec * j) * loadv(dp + kVec * j);
      }
    }
  }
  if constexpr (NV == 0) {
    out[c0] = acc1;
  } else {
    for (int j = 0; j < NV; ++j) storev(out + c0 + kVec * j, acc[j]);
  }
}

// All KW taps of kernel row ky at once, channels [c0, c0 + kVec*NV), output rows [r0, r1): each dy
// vector is loaded once for KW FMAs (dw_filter_tap loads x and dy for every FMA). Each tap's sum
// runs in row then column order, added to out[kx * C + c0...].
template <int KW, int NV>
void dw_filter_row(const ConvShape& s, const float* x, const float* dy, int ky, int64_t r0,
                   int64_t r1, int c0, float* out) {
  const int C = s.in_c;
  // Output columns whose KW taps all lie inside the image.
  int lo_first, hi_first, lo_last, hi_last;
  tap_columns(0, s.stride_w, s.pad_left, s.in_w, s.out_w, &lo_first, &hi_first);
  tap_columns(KW - 1, s.stride_w, s.pad_left, s.in_w, s.out_w, &lo_last, &hi_last);
  const int in_lo = std::max(lo_first, lo_last), in_hi = std::min(hi_first, hi_last);
  Vec acc[KW][NV];
  for (int kx = 0; kx < KW; ++kx)
    for (int j = 0; j < NV; ++j) acc[kx][j] = loadv(out + int64_t(kx) * C + c0 + kVec * j);
  for (int64_t r = r0; r < r1; ++r) {
    const int b = int(r / s.out_h), oy = int(r % s.out_h);
    const int iy = oy * s.stride_h - s.pad_top + ky;
    if (iy < 0 || iy >= s.in_h) continue;
    const float* xr = x + (int64_t(b) * s.in_h + iy) * s.in_w * C + c0;
    const float* dr = dy + r * s.out_w * C + c0;
    for (int ox = 0; ox < s.out_w; ++ox) {
      Vec d[NV];
      for (int j = 0; j < NV; ++j) d[j] = loadv(dr + int64_t(ox) * C + kVec * j);
      const int ix0 = ox * s.stride_w - s.pad_left;
      const bool inside = ox >= in_lo && ox < in_hi;
#pragma GCC unroll 5
      for (int kx = 0; kx < KW; ++kx) {
        if (!inside && (ix0 + kx < 0 || ix0 + kx >= s.in_w)) continue;
        const float* xp = xr + int64_t(ix0 + kx) * C;
        for (int j = 0; j < NV; ++j) acc[kx][j] += loadv(xp + kVec * j) * d[j];
      }
    }
  }
  for (int kx = 0; kx < KW; ++kx)
    for (int j = 0; j < NV; ++j) storev(out + int64_t(kx) * C + c0 + kVec * j, acc[kx][j]);
}

// Channels [c0, c_end) of kernel row ky: whole-row kernels for 3- and 5-wide kernels, else tap by
// tap; the channel tail (< kVec) tap by tap, one channel at a time. KW*NV accumulators and NV dy
// vectors: 4-vector blocks only where the register file holds 20 + 4 of them.
void dw_filter_block(const ConvShape& s, const float* x, const float* dy, int ky, int64_t r0,
                     int64_t r1, int c0, int c_end, float* out) {
  float* o = out + int64_t(ky) * s.k_w * s.in_c;
  if (s.k_w == 3 || s.k_w == 5) {
    const bool five = s.k_w == 5;
    if constexpr (kAccRegs >= 24)
      for (; c0 + 4 * kVec <= c_end; c0 += 4 * kVec)
        five ? dw_filter_row<5, 4>(s, x, dy, ky, r0, r1, c0, o)
             : dw_filter_row<3, 4>(s, x, dy, ky, r0, r1, c0, o);
    for (; c0 + 2 * kVec <= c_end; c0 += 2 * kVec)
      five ? dw_filter_row<5, 2>(s, x, dy, ky, r0, r1, c0, o)
           : dw_filter_row<3, 2>(s, x, dy, ky, r0, r1, c0, o);
    for (; c0 + kVec <= c_end; c0 += kVec)
      five ? dw_filter_row<5, 1>(s, x, dy, ky, r0, r1, c0, o)
           : dw_filter_row<3, 1>(s, x, dy, ky, r0, r1, c0, o);
  }
  for (int kx = 0; kx < s.k_w; ++kx) {
    float* ot = o + int64_t(kx) * s.in_c;
    int c = c0;
    for (; c + kVec <= c_end; c += kVec) dw_filter_tap<1>(s, x, dy, ky, kx, r0, r1, c, ot);
    for (; c < c_end; ++c) dw_filter_tap<0>(s, x, dy, ky, kx, r0, r1, c, ot);
  }
}

// Depthwise dw[ky][kx][c]: items are (split of output rows, block of 64 channels); each sums its
// rows into its own partial filter (zeroed first), and the partials are added in split order.
void dw_filter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  const int C = s.in_c;
  const int64_t rows = int64_t(s.n) * s.out_h;
  const int64_t count = int64_t(s.k_h) * s.k_w * C;
  const int splits = split_count(rows * s.out_w, 2048, count);
  const int cblocks = (C + 63) / 64;
  static thread_local std::vector<float> part_buf;
  if (part_buf.size() < size_t(splits - 1) * count) part_buf.resize(size_t(splits - 1) * count);
  float* const partials = part_buf.data();
#pragma omp parallel for schedule(dynamic, 1)
  for (int item = 0; item < splits * cblocks; ++item) {
    const int sp = item / cblocks, cb = item % cblocks;
    const int64_t r0 = rows * sp / splits, r1 = rows * (sp + 1) / splits;
    float* out = sp == 0 ? dw : partials + (sp - 1) * count;
    const int c0 = cb * 64, c1 = std::min(C, c0 + 64);
    for (int t = 0; t < s.k_h * s.k_w; ++t) std::fill(out + t * C + c0, out + t * C + c1, 0.f);
    // Blocks of 4 output rows, every kernel row over one block before the next: the rows of x
    // and dy a block reads stay in cache for the k_h passes. The sums run over rows in the same
    // order as without blocks (the accumulators go through `out` between blocks).
    for (int64_t rb = r0; rb < r1; rb += 4)
      for (int ky = 0; ky < s.k_h; ++ky)
        dw_filter_block(s, x, dy, ky, rb, std::min(r1, rb + 4), c0, c1, out);
  }
  reduce_splits(splits, count, partials, dw);
}

// ---- one group, any kernel -------------------------------------------------------------------

// dx row by row: for each tap (ky, kx) whose output row exists, the output pixels that read this
// input row through it form a contiguous run of dy, and the input pixels they read are every
// stride-th pixel of dx's row. So each tap is one GEMM: dx[ix..] += dy[ox..] . w[ky][kx]^T, with
// dx's leading dimension stride * in_c. Taps run in (ky, kx) order.
void general_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int ic = s.in_c, oc = s.out_c, taps = s.k_h * s.k_w;
  static thread_local std::vector<float> wt_buf;
  if (wt_buf.size() < size_t(taps) * ic * oc) wt_buf.resize(size_t(taps) * ic * oc);
  float* const wt = wt_buf.data();
  for (int t = 0; t < taps; ++t)
    transpose_parallel(ic, oc, w + int64_t(t) * ic * oc, wt + int64_t(t) * ic * oc);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(s.n) * s.in_h; ++row) {
    const int b = int(row / s.in_h), iy = int(row % s.in_h);
    float* dxr = dx + row * s.in_w * ic;
    std::fill(dxr, dxr + int64_t(s.in_w) * ic, 0.f);
    for (int ky = 0; ky < s.k_h; ++ky) {
      const int num = iy + s.pad_top - ky;
      if (num < 0 || num % s.stride_h != 0 || num / s.stride_h >= s.out_h) continue;
      const float* dyr = dy + ((int64_t(b) * s.out_h + num / s.stride_h) * s.out_w) * oc;
      for (int kx = 0; kx < s.k_w; ++kx) {
        int lo, hi;
        tap_columns(kx, s.stride_w, s.pad_left, s.in_w, s.out_w, &lo, &hi);
        if (hi == lo) continue;
        const int ix0 = lo * s.stride_w - s.pad_left + kx;
        gemm(hi - lo, ic, oc, dyr + int64_t(lo) * oc, oc, wt + int64_t(ky * s.k_w + kx) * ic * oc,
             ic, dxr + int64_t(ix0) * ic, int64_t(s.stride_w) * ic, true, nullptr);
      }
    }
  }
}

// dx for inputs of few channels (an image: 3), where general_data's per-tap GEMMs would be only
// in_c columns wide. Instead one GEMM per band of dx rows makes the column gradients of the
// output rows the band reads, dcols[pixel][tap * in_c + c] = dy . w^T (K = out_c, in_c * taps
// columns wide), and dx gathers them: each input pixel adds its (output pixel, tap) entries in
// (ky, kx) order. A band's first output row may also belong to the band before; it is computed
// again, to the same bits (a GEMM element does not depend on which rows it is computed with).
void general_data_narrow(const ConvShape& s, const float* dy, const float* w, float* dx) {
  constexpr int kBand = 8;  // dx rows per work item
  const int ic = s.in_c, oc = s.out_c, K = s.k_h * s.k_w * ic;
  static thread_local std::vector<float> wt_buf;
  if (wt_buf.size() < size_t(K) * oc) wt_buf.resize(size_t(K) * oc);
  float* const wt = wt_buf.data();
  transpose_parallel(K, oc, w, wt);  // w is [K][out_c] with one group
  const int bands = (s.in_h + kBand - 1) / kBand;
  // Output rows a band [iy0, iy1) reads: oy*stride - pad + ky in the band for some ky.
  auto oy_range = [&](int iy0, int iy1, int* lo, int* hi) {
    const int num_lo = iy0 + s.pad_top - (s.k_h - 1);
    *lo = num_lo <= 0 ? 0 : (num_lo + s.stride_h - 1) / s.stride_h;
    const int num_hi = iy1 - 1 + s.pad_top;
    *hi = num_hi < 0 ? 0 : std::min(s.out_h, num_hi / s.stride_h + 1);
    if (*hi < *lo) *hi = *lo;
  };
  int max_rows = 0;
  for (int bd = 0; bd < bands; ++bd) {
    int lo, hi;
    oy_range(bd * kBand, std::min(s.in_h, bd * kBand + kBand), &lo, &hi);
    max_rows = std::max(max_rows, hi - lo);
  }
  // Per input column: its (kx, ox) taps, computed once (cx_n[ix] of them at cx[ix * k_w...]).
  static thread_local std::vector<int> col_buf;
  if (col_buf.size() < size_t(s.in_w) * (2 * s.k_w + 1))
    col_buf.resize(size_t(s.in_w) * (2 * s.k_w + 1));
  int* const cx_n = col_buf.data();
  int* const cx_k = cx_n + s.in_w;
  int* const cx_o = cx_k + int64_t(s.in_w) * s.k_w;
  for (int ix = 0; ix < s.in_w; ++ix)
    cx_n[ix] =
        taps_for(ix, s.k_w, s.stride_w, s.pad_left, s.out_w, cx_k + ix * s.k_w, cx_o + ix * s.k_w);
#pragma omp parallel
  {
    thread_local std::vector<float> dcols;
    thread_local std::vector<int> kbuf;
    if (dcols.size() < size_t(max_rows) * s.out_w * K) dcols.resize(size_t(max_rows) * s.out_w * K);
    if (kbuf.size() < size_t(2 * s.k_h)) kbuf.resize(size_t(2 * s.k_h));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < int64_t(s.n) * bands; ++item) {
      const int b = int(item / bands), iy0 = int(item % bands) * kBand;
      const int iy1 = std::min(s.in_h, iy0 + kBand);
      int lo, hi;
      oy_range(iy0, iy1, &lo, &hi);
      if (hi > lo)
        gemm((hi - lo) * s.out_w, K, oc, dy + (int64_t(b) * s.out_h + lo) * s.out_w * oc, oc, wt, K,
             dcols.data(), K, false, nullptr);
      int* kys = kbuf.data();
      int* oys = kys + s.k_h;
      for (int iy = iy0; iy < iy1; ++iy) {
        const int ny = taps_for(iy, s.k_h, s.stride_h, s.pad_top, s.out_h, kys, oys);
        float* d = dx + (int64_t(b) * s.in_h + iy) * s.in_w * ic;
        std::fill(d, d + int64_t(s.in_w) * ic, 0.f);
        for (int a = 0; a < ny; ++a) {
          const float* row =
              dcols.data() + int64_t(oys[a] - lo) * s.out_w * K + kys[a] * s.k_w * ic;
          for (int ix = 0; ix < s.in_w; ++ix)
            for (int t = 0; t < cx_n[ix]; ++t) {
              const float* src =
                  row + int64_t(cx_o[ix * s.k_w + t]) * K + cx_k[ix * s.k_w + t] * ic;
              for (int ch = 0; ch < ic; ++ch) d[int64_t(ix) * ic + ch] += src[ch];
            }
        }
      }
    }
  }
}

// im2col of output row (b, oy): cols[ox][(ky*k_w + kx)*in_c + c], zeros outside the image.
void im2col(const ConvShape& s, const float* x, int b, int oy, float* cols) {
  const int ic = s.in_c, K = s.k_h * s.k_w * ic;
  for (int ox = 0; ox < s.out_w; ++ox) {
    float* dst = cols + int64_t(ox) * K;
    const int ix0 = ox * s.stride_w - s.pad_left;
    const int kx0 = std::max(0, -ix0), kx1 = std::max(kx0, std::min(s.k_w, s.in_w - ix0));
    for (int ky = 0; ky < s.k_h; ++ky, dst += s.k_w * ic) {
      const int iy = oy * s.stride_h - s.pad_top + ky;
      if (iy < 0 || iy >= s.in_h) {
        std::fill(dst, dst + s.k_w * ic, 0.f);
        continue;
      }
      std::fill(dst, dst + kx0 * ic, 0.f);
      std::memcpy(dst + kx0 * ic, x + ((int64_t(b) * s.in_h + iy) * s.in_w + ix0 + kx0) * ic,
                  sizeof(float) * (kx1 - kx0) * ic);
      std::fill(dst + kx1 * ic, dst + s.k_w * ic, 0.f);
    }
  }
}

// dw^T[out_c][K] = dy^T . cols, summed over chunks of a few output rows (im2col'd into a
// thread-local buffer, dy transposed beside it); items are splits of the chunks, each into its own
// partial dw^T; the partials are added in split order while transposing into dw[K][out_c].
void general_filter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  const int oc = s.out_c, K = s.k_h * s.k_w * s.in_c;
  const int64_t rows = int64_t(s.n) * s.out_h, per_row = int64_t(s.out_w) * K;
  const int64_t rows_per_chunk = std::clamp<int64_t>(65536 / std::max<int64_t>(per_row, 1), 1, 8);
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  const int64_t count = int64_t(oc) * K;
  const int splits = split_count(chunks, 2, count);
  static thread_local std::vector<float> part_buf;
  if (part_buf.size() < size_t(splits) * count) part_buf.resize(size_t(splits) * count);
  float* const partials = part_buf.data();
#pragma omp parallel
  {
    thread_local std::vector<float> cols, dyt;
    const int64_t mc = rows_per_chunk * s.out_w;
    if (cols.size() < size_t(mc * K)) cols.resize(size_t(mc * K));
    if (dyt.size() < size_t(mc * oc)) dyt.resize(size_t(mc * oc));
#pragma omp for schedule(dynamic, 1)
    for (int sp = 0; sp < splits; ++sp) {
      float* out = partials + sp * count;
      const int64_t c0 = chunks * sp / splits, c1 = chunks * (sp + 1) / splits;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = c * rows_per_chunk, r1 = std::min(rows, r0 + rows_per_chunk);
        for (int64_t r = r0; r < r1; ++r)
          im2col(s, x, int(r / s.out_h), int(r % s.out_h), cols.data() + (r - r0) * per_row);
        const int64_t m = (r1 - r0) * s.out_w;
        transpose(m, oc, dy + r0 * s.out_w * oc, oc, dyt.data(), m);
        gemm(oc, K, int(m), dyt.data(), m, cols.data(), K, out, K, c != c0, nullptr);
      }
      if (c0 == c1) std::fill(out, out + count, 0.f);
    }
  }
#pragma omp parallel for schedule(static) if (count * splits > 65536)
  for (int k = 0; k < K; ++k)
    for (int o = 0; o < oc; ++o) {
      float v = partials[int64_t(o) * K + k];
      for (int sp = 1; sp < splits; ++sp) v += partials[sp * count + int64_t(o) * K + k];
      dw[int64_t(k) * oc + o] = v;
    }
}

bool is_depthwise(const ConvShape& s) {
  return s.groups == s.in_c && s.groups == s.out_c && s.groups > 1;
}

}  // namespace

void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  if (is_pointwise(s))
    pw_data(s, dy, w, dx);
  else if (is_depthwise(s))
    dw_data(s, dy, w, dx);
  else if (s.groups == 1 && s.in_c < 16)
    general_data_narrow(s, dy, w, dx);
  else if (s.groups == 1)
    general_data(s, dy, w, dx);
  else
    ref::conv2d_backward_data(s, dy, w, dx);
}

void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  if (is_pointwise(s))
    pw_filter(s, x, dy, dw);
  else if (is_depthwise(s))
    dw_filter(s, x, dy, dw);
  else if (s.groups == 1)
    general_filter(s, x, dy, dw);
  else
    ref::conv2d_backward_filter(s, x, dy, dw);
}

}  // namespace graft::cpu::GRAFT_CPU_NS
