// Antialiased bilinear resize, a re-implementation of PIL's ImagingResample (Resample.c) for
// 8-bit RGB with the BILINEAR filter, so that graft's preprocessing equals torchvision's on PIL
// images bit for bit (for a full-size decode).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/image.h"

namespace graft {
namespace {

// PIL's 8-bit path: weights in fixed point with 22 fractional bits, so that 255 * weight sums
// fit an int32 with headroom.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Per-output-position taps: source start, tap count, and ksize weights (zero-padded).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
  std::vector<double> scratch;
};

// Reused per thread so a resize in the loader's hot loop allocates nothing after warm-up.
struct ResizeScratch {
  Taps horizontal, vertical;
  std::vector<uint8_t> rows;  // horizontal-pass output, uint8 like PIL's intermediate image
  std::vector<int32_t> sums;  // one output row of the vertical pass
};

inline double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// PIL's precompute_coeffs + normalize_coeffs_8bpc. When down-sampling by `scale`, the triangle
// is stretched to radius `scale`, so every source pixel contributes (antialiasing).
void compute_taps(int in_size, double in0, double in1, int out_size, Taps& t) {
  const double scale = (in1 - in0) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // bilinear support is 1
  const double ss = 1.0 / filterscale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(size_t(out_size) * t.ksize, 0);
  t.scratch.resize(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);  // truncation, as in PIL
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    const int n = std::clamp(xmax - xmin, 0, t.ksize);
    double total = 0.0;
    for (int x = 0; x < n; ++x) {
      const double w = triangle((x + xmin - center + 0.5) * ss);
      t.scratch[x] = w;
      total += w;
    }
    int32_t* k = &t.weights[size_t(xx) * t.ksize];
    for (int x = 0; x < n; ++x) {
      const double w = total != 0.0 ? t.scratch[x] / total : t.scratch[x];
      k[x] = int32_t(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = n;
  }
}

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

}  // namespace

void resize_bilinear_aa(const Image& src, double crop_x, double crop_y, double crop_w,
                        double crop_h, int out_w, int out_h, uint8_t* dst) {
  if (src.width <= 0 || src.height <= 0 || src.rgb.size() != size_t(src.width) * src.height * 3)
    throw std::invalid_argument("resize_bilinear_aa: source image is empty or inconsistent");
  if (out_w <= 0 || out_h <= 0) throw std::invalid_argument("resize_bilinear_aa: empty output");
  // A little slack for boxes computed in floating point that should end exactly on the edge.
  const double slack = 1e-6;
  if (!(crop_w > 0 && crop_h > 0 && crop_x >= -slack && crop_y >= -slack &&
        crop_x + crop_w <= src.width + slack && crop_y + crop_h <= src.height + slack))
    throw std::invalid_argument(
        "resize_bilinear_aa: crop box " + std::to_string(crop_x) + "," + std::to_string(crop_y) +
        " " + std::to_string(crop_w) + "x" + std::to_string(crop_h) + " is not inside the " +
        std::to_string(src.width) + "x" + std::to_string(src.height) + " image");

  thread_local ResizeScratch s;
  compute_taps(src.width, crop_x, crop_x + crop_w, out_w, s.horizontal);
  compute_taps(src.height, crop_y, crop_y + crop_h, out_h, s.vertical);

  // Only the source rows some output row reads go through the horizontal pass.
  const Taps& tv = s.vertical;
  const int row_first = tv.first[0];
  const int row_last = tv.first[out_h - 1] + tv.count[out_h - 1];
  const int rows = std::max(row_last - row_first, 0);
  const size_t out_row = size_t(out_w) * 3;
  s.rows.resize(size_t(rows) * out_row);

  // Horizontal pass: source rows -> out_w columns.
  const Taps& th = s.horizontal;
  const int32_t half = 1 << (kPrecisionBits - 1);
  const size_t src_row = size_t(src.width) * 3;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.rgb.data() + size_t(row_first + y) * src_row;
    uint8_t* out = s.rows.data() + size_t(y) * out_row;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &th.weights[size_t(xx) * th.ksize];
      const uint8_t* p = in + size_t(th.first[xx]) * 3;
      int32_t r = half, g = half, b = half;
      for (int i = 0, n = th.count[xx]; i < n; ++i) {
        r += p[3 * i + 0] * k[i];
        g += p[3 * i + 1] * k[i];
        b += p[3 * i + 2] * k[i];
      }
      out[3 * xx + 0] = clip8(r);
      out[3 * xx + 1] = clip8(g);
      out[3 * xx + 2] = clip8(b);
    }
  }

  // Vertical pass: whole rows at a time, so the inner loop is a contiguous multiply-add.
  s.sums.resize(out_row);
  int32_t* sums = s.sums.data();
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(sums, sums + out_row, half);
    const int32_t* k = &tv.weights[size_t(yy) * tv.ksize];
    const int first = tv.first[yy] - row_first;
    for (int i = 0, n = tv.count[yy]; i < n; ++i) {
      const uint8_t* in = s.rows.data() + size_t(first + i) * out_row;
      const int32_t w = k[i];
      for (size_t j = 0; j < out_row; ++j) sums[j] += in[j] * w;
    }
    uint8_t* out = dst + size_t(yy) * out_row;
    for (size_t j = 0; j < out_row; ++j) out[j] = clip8(sums[j]);
  }
}

}  // namespace graft
