#pragma once
// Conv geometries for the op tests, from sizes and explicit padding or TensorFlow's SAME rule.
#include "kernels/ops.h"

namespace graft::test {

// Padding before (pt, pl) and after (pb, pr) each axis; the output size follows from them.
inline ConvShape make_conv(int n, int h, int w, int ic, int oc, int kh, int kw, int sh, int sw,
                           int pt, int pl, int pb, int pr, int groups) {
  ConvShape s{};
  s.n = n;
  s.in_h = h;
  s.in_w = w;
  s.in_c = ic;
  s.out_c = oc;
  s.k_h = kh;
  s.k_w = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_top = pt;
  s.pad_left = pl;
  s.groups = groups;
  s.out_h = conv_out_size(h, kh, sh, pt, pb);
  s.out_w = conv_out_size(w, kw, sw, pl, pr);
  return s;
}

// TensorFlow SAME geometry: the extra padding goes after (bottom/right).
inline ConvShape make_same(int n, int h, int w, int ic, int oc, int k, int stride, int groups) {
  ConvShape s = make_conv(n, h, w, ic, oc, k, k, stride, stride, 0, 0, 0, 0, groups);
  same_padding(h, k, stride, &s.out_h, &s.pad_top);
  same_padding(w, k, stride, &s.out_w, &s.pad_left);
  return s;
}

}  // namespace graft::test
