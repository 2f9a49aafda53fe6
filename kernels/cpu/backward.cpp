// The small backward ops around the convolutions: bias gradient, activation gradient, the pools'
// gradients and the accumulate where two gradient paths meet. Like the forward ops they run over
// NHWC with the channel loop innermost. Sums run in an order fixed by the shape alone (partial sums
// per fixed row split, added in split order), so results never depend on the thread count.
#include <algorithm>
#include <vector>

#include "kernels/cpu/kernel_table.h"
#include "kernels/ops.h"

namespace graft::cpu::GRAFT_CPU_NS {

void bias_grad(int64_t rows, int c, const float* dy, float* db) {
  // Items are (row split, block of 256 channels); a split's sums go to its own partial row, and
  // the partial rows are added in split order. Splits come from the size: about one per 1024 rows,
  // at most 8.
  constexpr int kCb = 256;
  const int splits = int(std::clamp<int64_t>(rows / 1024, 1, 8));
  const int cblocks = (c + kCb - 1) / kCb;
  static thread_local std::vector<float> part_buf;
  if (part_buf.size() < size_t(splits) * c) part_buf.resize(size_t(splits) * c);
  float* const partials = part_buf.data();
#pragma omp parallel for schedule(static) if (rows * c > 65536)
  for (int item = 0; item < splits * cblocks; ++item) {
    const int sp = item / cblocks, c0 = item % cblocks * kCb, cn = std::min(kCb, c - c0);
    const int64_t r0 = rows * sp / splits, r1 = rows * (sp + 1) / splits;
    float acc[kCb];
    std::fill(acc, acc + cn, 0.f);
    for (int64_t r = r0; r < r1; ++r) {
      const float* d = dy + r * c + c0;
      for (int j = 0; j < cn; ++j) acc[j] += d[j];
    }
    std::copy(acc, acc + cn, partials + int64_t(sp) * c + c0);
  }
  for (int j = 0; j < c; ++j) {
    float v = partials[j];
    for (int sp = 1; sp < splits; ++sp) v += partials[int64_t(sp) * c + j];
    db[j] = v;
  }
}

void act_backward(int64_t count, Act act, const float* y, float* dy) {
  if (act == Act::none) return;
  // relu passes where its output is positive; relu6 also stops at the clamp (y == 6).
  const float hi = act == Act::relu6 ? 6.f : __builtin_inff();
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) dy[i] = (y[i] > 0.f && y[i] < hi) ? dy[i] : 0.f;
}

void global_avg_pool_backward(int n, int hw, int c, const float* dy, float* dx) {
  const float fhw = float(hw);
#pragma omp parallel for schedule(static) if (int64_t(n) * hw * c > 65536)
  for (int64_t p = 0; p < int64_t(n) * hw; ++p) {
    const float* d = dy + p / hw * c;
    float* o = dx + p * c;
    for (int j = 0; j < c; ++j) o[j] = d[j] / fhw;
  }
}

// One image's channels [c0, c1): each output pixel scans its window in forward order (ky, then kx)
// and hands its gradient to the first input equal to the saved maximum. Windows overlap when the
// stride is below the kernel, so the scatter runs in output order within this item; channels and
// images are separate items, so no two items touch the same dx element.
static void max_pool_backward_block(const PoolShape& s, const float* xb, const float* yb,
                                    const float* dyb, int c0, int c1, float* dxb,
                                    unsigned char* found) {
  for (int64_t p = 0; p < int64_t(s.in_h) * s.in_w; ++p)
    std::fill(dxb + p * s.c + c0, dxb + p * s.c + c1, 0.f);
  for (int oy = 0; oy < s.out_h; ++oy)
    for (int ox = 0; ox < s.out_w; ++ox) {
      const int64_t o = (int64_t(oy) * s.out_w + ox) * s.c;
      std::fill(found + c0, found + c1, 0);
      const int iy0 = oy * s.stride_h - s.pad_top, ix0 = ox * s.stride_w - s.pad_left;
      for (int ky = std::max(0, -iy0); ky < std::min(s.k_h, s.in_h - iy0); ++ky)
        for (int kx = std::max(0, -ix0); kx < std::min(s.k_w, s.in_w - ix0); ++kx) {
          const int64_t i = (int64_t(iy0 + ky) * s.in_w + ix0 + kx) * s.c;
          for (int ch = c0; ch < c1; ++ch) {
            const bool hit = !found[ch] && xb[i + ch] == yb[o + ch];
            dxb[i + ch] += hit ? dyb[o + ch] : 0.f;
            found[ch] |= hit;
          }
        }
    }
}

void max_pool2d_backward(const PoolShape& s, const float* x, const float* y, const float* dy,
                         float* dx) {
  // Blocks of 16 channels: a ResNet's 64-channel pool at batch 1 still makes 4 items.
  constexpr int kCb = 16;
  const int cblocks = (s.c + kCb - 1) / kCb;
  const int64_t in_img = int64_t(s.in_h) * s.in_w * s.c, out_img = int64_t(s.out_h) * s.out_w * s.c;
#pragma omp parallel
  {
    thread_local std::vector<unsigned char> found_buf;  // per channel: has the maximum been seen
    if (found_buf.size() < size_t(s.c)) found_buf.resize(size_t(s.c));
    unsigned char* const found = found_buf.data();
#pragma omp for schedule(static)
    for (int64_t item = 0; item < int64_t(s.n) * cblocks; ++item) {
      const int64_t b = item / cblocks;
      const int c0 = int(item % cblocks) * kCb, c1 = std::min(s.c, c0 + kCb);
      max_pool_backward_block(s, x + b * in_img, y + b * out_img, dy + b * out_img, c0, c1,
                              dx + b * in_img, found);
    }
  }
}

void add_inplace(int64_t count, const float* x, float* y) {
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

}  // namespace graft::cpu::GRAFT_CPU_NS
