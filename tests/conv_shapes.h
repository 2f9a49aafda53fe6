#pragma once
// Conv geometries for the op tests (CPU and CUDA): from sizes and explicit padding or TensorFlow's
// SAME rule, pooling windows, the element counts of x, w and y, and the small-run filter (failure
// messages describe a shape with conv_shape_str of kernels/ops.h).
#include <cstddef>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/test_util.h"

namespace graft::test {

// Padding before and after each axis (top, bottom, left, right); the output size follows.
inline ConvShape conv_pad(int n, int h, int w, int cin, int cout, int kh, int kw, int sh, int sw,
                          int pt, int pb, int pl, int pr, int groups = 1) {
  ConvShape s{};
  s.n = n, s.in_h = h, s.in_w = w, s.in_c = cin, s.out_c = cout;
  s.k_h = kh, s.k_w = kw, s.stride_h = sh, s.stride_w = sw, s.groups = groups;
  s.pad_top = pt, s.pad_left = pl;
  s.out_h = conv_out_size(h, kh, sh, pt, pb);
  s.out_w = conv_out_size(w, kw, sw, pl, pr);
  return s;
}

// TensorFlow SAME geometry: the extra padding of an odd total goes after (bottom/right).
inline ConvShape conv_same(int n, int h, int w, int cin, int cout, int k, int stride,
                           int groups = 1) {
  ConvShape s = conv_pad(n, h, w, cin, cout, k, k, stride, stride, 0, 0, 0, 0, groups);
  same_padding(h, k, stride, &s.out_h, &s.pad_top);
  same_padding(w, k, stride, &s.out_w, &s.pad_left);
  return s;
}

inline ConvShape pointwise(int n, int h, int w, int cin, int cout) {
  return conv_pad(n, h, w, cin, cout, 1, 1, 1, 1, 0, 0, 0, 0);
}

inline ConvShape depthwise(int n, int h, int w, int c, int k, int stride) {
  return conv_same(n, h, w, c, c, k, stride, c);
}

// Pooling windows, the same two ways: padding before and after each axis, or TensorFlow SAME.
inline PoolShape pool_pad(int n, int h, int w, int c, int k, int stride, int pt, int pb, int pl,
                          int pr) {
  PoolShape s{};
  s.n = n, s.in_h = h, s.in_w = w, s.c = c, s.k_h = k, s.k_w = k;
  s.stride_h = stride, s.stride_w = stride, s.pad_top = pt, s.pad_left = pl;
  s.out_h = conv_out_size(h, k, stride, pt, pb);
  s.out_w = conv_out_size(w, k, stride, pl, pr);
  return s;
}

inline PoolShape pool_same(int n, int h, int w, int c, int k, int stride) {
  PoolShape s = pool_pad(n, h, w, c, k, stride, 0, 0, 0, 0);
  same_padding(h, k, stride, &s.out_h, &s.pad_top);
  same_padding(w, k, stride, &s.out_w, &s.pad_left);
  return s;
}

inline size_t x_size(const ConvShape& s) {
  return size_t(s.n) * s.in_h * s.in_w * s.in_c;
}
inline size_t y_size(const ConvShape& s) {
  return size_t(s.n) * s.out_h * s.out_w * s.out_c;
}
inline size_t w_size(const ConvShape& s) {
  return size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
}

// The shapes a GRAFT_TEST_SHAPES=small run keeps (all of them in a normal run).
inline std::vector<ConvShape> for_this_run(const std::vector<ConvShape>& shapes) {
  std::vector<ConvShape> kept;
  for (const ConvShape& s : shapes)
    if (!skip_in_small_run(x_size(s) + y_size(s) + w_size(s))) kept.push_back(s);
  return kept;
}

}  // namespace graft::test
