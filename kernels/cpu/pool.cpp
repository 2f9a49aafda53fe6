// Pooling over NHWC: the window loops are outermost and the channel loop innermost, so every
// inner loop is a contiguous, vectorisable run over c.
#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {
namespace {

struct Window {
  int ky0, ky1, kx0, kx1, iy0, ix0;
};

inline Window clip(const PoolShape& s, int oy, int ox) {
  Window w;
  w.iy0 = oy * s.stride_h - s.pad_top;
  w.ix0 = ox * s.stride_w - s.pad_left;
  w.ky0 = std::max(0, -w.iy0);
  w.ky1 = std::min(s.k_h, s.in_h - w.iy0);
  w.kx0 = std::max(0, -w.ix0);
  w.kx1 = std::min(s.k_w, s.in_w - w.ix0);
  return w;
}

}  // namespace

void max_pool2d(const PoolShape& s, const float* x, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(s.n) * s.out_h; ++row) {
    const int b = int(row / s.out_h), oy = int(row % s.out_h);
    const float* xb = x + int64_t(b) * s.in_h * s.in_w * s.c;
    for (int ox = 0; ox < s.out_w; ++ox) {
      float* yo = y + (row * s.out_w + ox) * s.c;
      std::fill(yo, yo + s.c, -std::numeric_limits<float>::infinity());
      const Window w = clip(s, oy, ox);
      for (int ky = w.ky0; ky < w.ky1; ++ky)
        for (int kx = w.kx0; kx < w.kx1; ++kx) {
          const float* xp = xb + (int64_t(w.iy0 + ky) * s.in_w + w.ix0 + kx) * s.c;
          for (int ch = 0; ch < s.c; ++ch) yo[ch] = xp[ch] > yo[ch] ? xp[ch] : yo[ch];
        }
    }
  }
}

void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(s.n) * s.out_h; ++row) {
    const int b = int(row / s.out_h), oy = int(row % s.out_h);
    const float* xb = x + int64_t(b) * s.in_h * s.in_w * s.c;
    for (int ox = 0; ox < s.out_w; ++ox) {
      float* yo = y + (row * s.out_w + ox) * s.c;
      std::fill(yo, yo + s.c, 0.f);
      const Window w = clip(s, oy, ox);
      for (int ky = w.ky0; ky < w.ky1; ++ky)
        for (int kx = w.kx0; kx < w.kx1; ++kx) {
          const float* xp = xb + (int64_t(w.iy0 + ky) * s.in_w + w.ix0 + kx) * s.c;
          for (int ch = 0; ch < s.c; ++ch) yo[ch] += xp[ch];
        }
      const int taps =
          count_pad ? s.k_h * s.k_w : std::max(0, w.ky1 - w.ky0) * std::max(0, w.kx1 - w.kx0);
      const float inv = taps > 0 ? 1.f / float(taps) : 0.f;
      for (int ch = 0; ch < s.c; ++ch) yo[ch] *= inv;
    }
  }
}

void global_avg_pool(int n, int hw, int c, const float* x, float* y) {
  // Parallel over (image, channel block) so batch 1 still splits; the pixel loop stays outside
  // the channel loop to read x contiguously.
  constexpr int kCb = 256;
  const int cblocks = (c + kCb - 1) / kCb;
  const float inv = 1.f / float(hw);
#pragma omp parallel for schedule(static) if (int64_t(n) * hw * c > 65536)
  for (int64_t item = 0; item < int64_t(n) * cblocks; ++item) {
    const int b = int(item / cblocks), c0 = int(item % cblocks) * kCb;
    const int cn = std::min(kCb, c - c0);
    float acc[kCb];
    std::fill(acc, acc + cn, 0.f);
    const float* xb = x + int64_t(b) * hw * c + c0;
    for (int p = 0; p < hw; ++p)
      for (int ch = 0; ch < cn; ++ch) acc[ch] += xb[int64_t(p) * c + ch];
    for (int ch = 0; ch < cn; ++ch) y[int64_t(b) * c + c0 + ch] = acc[ch] * inv;
  }
}

}  // namespace graft::cpu::GRAFT_CPU_NS
