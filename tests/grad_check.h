#pragma once
// One gradient checker for every backward op's test: the op's float gradient against central
// finite differences of a scalar loss evaluated in double precision.
//
// A test builds L = sum(y * r) for a fixed random r (so dL/dy = r is the backward ops' input),
// runs the float backward chain once, and hands the checker, per input tensor, the tensor's
// values, the float gradient, and a function that evaluates L in double with that tensor replaced.
// The double forwards below are the plain loops of kernels/cpu/reference.cpp, templated on the
// scalar type.
//
// Why the numeric side is (nearly) exact: every op checked here is linear in each single input
// element (convolution is bilinear in x and w; bias, residual and the pools are linear) or
// piecewise linear (relu, relu6, max), so away from a kink the central difference has no
// truncation error, and in double its rounding error is about 1e-16 * sum|y * r| / step, near 1e-7.
// Whatever difference remains is the float gradient's own rounding (see Options).
//
// Kinks: where a perturbation of +-step carries a pre-activation across 0 or 6, or changes which
// element of a pooling window is the maximum, the two one-sided differences disagree. Such
// elements are skipped and counted. One output that happens to sit within a step of a kink makes
// every input and weight that feeds it a kink, so a few are expected; the checker fails when more
// than two plus a tenth of the sampled elements are skipped, since then it has checked too little.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace graft::gradcheck {

// ---- double-precision (any scalar) reference forwards ---------------------------------------

template <class T>
T act(T v, Act a) {
  if (a == Act::relu) return v > T(0) ? v : T(0);
  if (a == Act::relu6) return v > T(0) ? (v < T(6) ? v : T(6)) : T(0);
  return v;
}

// y = act(conv(x, w) + bias + residual), the geometry of kernels/ops.h's ConvShape.
template <class T>
void conv2d(const ConvShape& s, const T* x, const T* w, const T* bias, const T* residual, Act a,
            T* y) {
  const int icg = s.in_c / s.groups, ocg = s.out_c / s.groups;
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int oc = 0; oc < s.out_c; ++oc) {
          const int g = oc / ocg;
          T acc = T(0);
          for (int ky = 0; ky < s.k_h; ++ky) {
            const int iy = oy * s.stride_h - s.pad_top + ky;
            if (iy < 0 || iy >= s.in_h) continue;
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int ix = ox * s.stride_w - s.pad_left + kx;
              if (ix < 0 || ix >= s.in_w) continue;
              for (int ic = 0; ic < icg; ++ic)
                acc += x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + g * icg + ic] *
                       w[((int64_t(ky) * s.k_w + kx) * icg + ic) * s.out_c + oc];
            }
          }
          const int64_t o = ((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.out_c + oc;
          if (bias) acc += bias[oc];
          if (residual) acc += residual[o];
          y[o] = act(acc, a);
        }
}

// y[r][c] = act(x[r][c] + bias[c] + residual[r][c]); bias and residual may be null.
template <class T>
void bias_act(int64_t rows, int c, const T* x, const T* bias, const T* residual, Act a, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < c; ++j) {
      T v = x[r * c + j];
      if (bias) v += bias[j];
      if (residual) v += residual[r * c + j];
      y[r * c + j] = act(v, a);
    }
}

// x [n][hw][c] -> y [n][c]
template <class T>
void global_avg_pool(int n, int hw, int c, const T* x, T* y) {
  for (int b = 0; b < n; ++b)
    for (int j = 0; j < c; ++j) {
      T sum = T(0);
      for (int p = 0; p < hw; ++p) sum += x[(int64_t(b) * hw + p) * c + j];
      y[int64_t(b) * c + j] = sum / T(hw);
    }
}

// Max over the in-bounds taps of each window.
template <class T>
void max_pool2d(const PoolShape& s, const T* x, T* y) {
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int ch = 0; ch < s.c; ++ch) {
          T m = -std::numeric_limits<T>::infinity();
          for (int ky = 0; ky < s.k_h; ++ky)
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int iy = oy * s.stride_h - s.pad_top + ky;
              const int ix = ox * s.stride_w - s.pad_left + kx;
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              const T v = x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.c + ch];
              if (v > m) m = v;
            }
          y[((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.c + ch] = m;
        }
}

// ---- the checker ------------------------------------------------------------------------------

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// The loss every test uses: L = sum_i y[i] * r[i].
inline double dot_loss(const std::vector<double>& y, const std::vector<float>& r) {
  double l = 0.0;
  for (size_t i = 0; i < y.size(); ++i) l += y[i] * double(r[i]);
  return l;
}

struct Options {
  // Perturbation. A weight or a bias moves every output it feeds, so with a step of 1e-3 one
  // in ten of them crossed some kink; at 1e-5 few do. Double rounding of L (about 1e-16 times
  // the sum of |y * r|, 1e-12 here) divided by the step stays near 1e-7, far below the tolerance.
  double step = 1e-5;
  // |analytic - numeric| <= rel_tol * |numeric| + abs_tol. The float gradients are sums of up to a
  // few thousand O(1) products; float rounding leaves them about 1e-6 off (relative to the terms,
  // not to the sum, which may cancel to near zero): hence the absolute floor. A wrong index or a
  // missing tap is off by a whole term, O(0.1) or more.
  double rel_tol = 1e-4;
  double abs_tol = 1e-4;
  // Tensors with more elements are checked at this many: the first, the last and a random sample.
  int max_samples = 64;
  uint32_t seed = 1;
};

struct Result {
  int checked = 0;  // elements compared
  int kinks = 0;    // elements skipped because the loss has a kink within +-step
  int failures = 0;
};

// Checks `analytic` = dL/dp, as the float backward ops computed it, against central differences of
// `loss`, which evaluates L in double with the tensor p replaced by its argument. Every element of
// `analytic` must be finite (outputs are poisoned with NaN before the backward ops run, so an
// element they never wrote shows here even when it is not sampled).
inline Result check(const std::string& what, const std::vector<float>& p,
                    const std::vector<float>& analytic,
                    const std::function<double(const std::vector<double>&)>& loss,
                    const Options& opt = Options()) {
  Result res;
  EXPECT_EQ(p.size(), analytic.size()) << what;
  if (p.size() != analytic.size() || p.empty()) return res;
  size_t non_finite = 0;
  for (float g : analytic) non_finite += std::isfinite(g) ? 0 : 1;
  EXPECT_EQ(non_finite, 0u) << what << ": gradient elements not written (NaN) or not finite";

  std::vector<size_t> idx(p.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  if (idx.size() > size_t(opt.max_samples)) {
    std::mt19937 rng(opt.seed);
    std::shuffle(idx.begin() + 1, idx.end() - 1, rng);
    std::swap(idx[1], idx.back());  // keep the last element
    idx.resize(size_t(std::max(opt.max_samples, 2)));
  }

  std::vector<double> v = to_double(p);
  const double h = opt.step, l0 = loss(v);
  for (size_t i : idx) {
    const double keep = v[i];
    v[i] = keep + h;
    const double lp = loss(v);
    v[i] = keep - h;
    const double lm = loss(v);
    v[i] = keep;
    const double numeric = (lp - lm) / (2 * h);
    const double tol = opt.rel_tol * std::abs(numeric) + opt.abs_tol;
    if (std::abs((lp - l0) / h - (l0 - lm) / h) > tol) {
      ++res.kinks;
      continue;
    }
    ++res.checked;
    // Written so that NaN fails.
    if (!(std::abs(double(analytic[i]) - numeric) <= tol)) {
      if (++res.failures <= 8)
        ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", numeric "
                      << numeric << ", tolerance " << tol;
    }
  }
  EXPECT_GT(res.checked, 0) << what;
  EXPECT_LE(res.kinks, 2 + int(idx.size()) / 10) << what << ": too many elements sit at a kink";
  EXPECT_EQ(res.failures, 0) << what << ": " << res.failures << " of " << res.checked
                             << " elements off";
  return res;
}

}  // namespace graft::gradcheck
