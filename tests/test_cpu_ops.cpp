// CPU twins against the plain reference versions (kernels/cpu/reference.h), hand-computed cases,
// finite-difference gradient checks and statistical checks for dropout.
//
// Tolerances (relative error ||fast - ref|| / ||ref|| in double unless stated):
//   conv2d, linear, linear_backward, pools, softmax, softmax_xent, adamw   < 1e-5
//     (float accumulation against the reference's double accumulation, sums of up to ~1000 terms)
//   bias_act, dropout, normalize_u8, confusion_update, max_pool2d,
//   gather_rows, relu_backward                                              exact
//   finite differences (computed in double): |analytic - numeric| < 1e-4 absolute per element
//   CPU paths against each other (CpuPaths): the paths with FMA (avx512, avx2, neon) give the same
//     bits for convolutions, forward and backward, and for linear (every element's sum runs in the
//     same order whatever the tile); sse2 (no FMA) < 1e-6 from them
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_path.h"
#include "kernels/cpu/reference.h"
#include "kernels/ops.h"
#include "kernels/philox.h"
#include "tests/conv_shapes.h"
#include "tests/test_util.h"

namespace graft {
namespace {

using namespace test;  // shapes, random data, error measures

// ---------------------------------------------------------------------------------------------
// conv2d

struct ConvCase {
  const char* name;
  ConvShape s;
};

void check_conv(const ConvShape& s, uint32_t seed) {
  const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.in_c;
  const size_t ws = size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
  const size_t ys = size_t(s.n) * s.out_h * s.out_w * s.out_c;
  const auto x = random_vec(xs, seed), w = random_vec(ws, seed + 1);
  const auto bias = random_vec(s.out_c, seed + 2), res = random_vec(ys, seed + 3);
  // The weights packed once (a frozen layer's, cpu::conv2d_pack) give conv2d's bits. A depthwise
  // conv has no packed form.
  const bool depthwise = s.groups == s.in_c && s.groups == s.out_c && s.groups > 1;
  std::vector<float> packed = poisoned(cpu::conv2d_packed_size(s));
  EXPECT_EQ(packed.empty(), depthwise);
  if (!depthwise) cpu::conv2d_pack(s, w.data(), packed.data());
  for (int use_bias = 0; use_bias < 2; ++use_bias)
    for (int use_res = 0; use_res < 2; ++use_res)
      for (Act act : {Act::none, Act::relu, Act::relu6}) {
        SCOPED_TRACE("bias=" + std::to_string(use_bias) + " residual=" + std::to_string(use_res) +
                     " act=" + std::to_string(int(act)));
        const float* b = use_bias ? bias.data() : nullptr;
        const float* r = use_res ? res.data() : nullptr;
        auto want = poisoned(ys), got = poisoned(ys);
        cpu::ref::conv2d(s, x.data(), w.data(), b, r, act, want.data());
        cpu::conv2d(s, x.data(), w.data(), b, r, act, got.data());
        EXPECT_LT(rel_err(got, want), 1e-5);
        if (depthwise) continue;
        auto from_packed = poisoned(ys);
        cpu::conv2d_packed(s, x.data(), packed.data(), b, r, act, from_packed.data());
        EXPECT_EQ(std::memcmp(from_packed.data(), got.data(), sizeof(float) * ys), 0);
      }
}

TEST(Conv2d, MatchesReference) {
  const ConvCase cases[] = {
      // pointwise path (GEMM straight on the input)
      {"pw 19->37 7x11 b3", conv_pad(3, 7, 11, 19, 37, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 3->70", conv_pad(1, 5, 9, 3, 70, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 21->24", conv_pad(1, 13, 13, 21, 24, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 40->240", conv_pad(1, 9, 7, 40, 240, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 200->150 K blocks", conv_pad(2, 17, 19, 200, 150, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 330->130 7x7", conv_pad(1, 7, 7, 330, 130, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 8->1", conv_pad(3, 3, 5, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      // depthwise path
      {"dw3 s1 37ch SAME", conv_same(3, 7, 11, 37, 37, 3, 1, 37)},
      {"dw3 s2 80ch SAME", conv_same(1, 11, 9, 80, 80, 3, 2, 80)},
      {"dw5 s2 144ch SAME", conv_same(1, 13, 10, 144, 144, 5, 2, 144)},
      {"dw5 s1 16ch pad2", conv_pad(2, 6, 7, 16, 16, 5, 5, 1, 1, 2, 2, 2, 2, 16)},
      // wide enough rows for the stride-1 sliding blocks (8 interior pixels), plus a channel tail
      {"dw5 s1 40ch 21 wide", conv_same(2, 9, 21, 40, 40, 5, 1, 40)},
      {"dw3 s1 33ch 19 wide", conv_same(1, 5, 19, 33, 33, 3, 1, 33)},
      {"dw3 asym pad 0/1 13ch", conv_pad(1, 8, 9, 13, 13, 3, 3, 2, 2, 0, 1, 0, 1, 13)},
      {"dw5 on 3x3 input", conv_pad(1, 3, 3, 64, 64, 5, 5, 1, 1, 2, 2, 2, 2, 64)},
      // general path (im2col + GEMM)
      {"stem 3x3 s2 3->32 SAME", conv_same(3, 15, 17, 3, 32, 3, 2, 1)},
      {"stem 7x7 s2 pad3 3->20", conv_pad(3, 11, 13, 3, 20, 7, 7, 2, 2, 3, 3, 3, 3, 1)},
      {"3x3 s1 40->70 K=360", conv_pad(1, 9, 8, 40, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
      {"5x5 s1 asym pad", conv_pad(1, 7, 11, 6, 17, 5, 5, 1, 1, 1, 3, 2, 0, 1)},
      {"3x5 kernel s(2,1)", conv_pad(2, 9, 7, 5, 9, 3, 5, 2, 1, 1, 1, 2, 2, 1)},
      {"1x1 s2 downsample", conv_pad(2, 7, 11, 24, 40, 1, 1, 2, 2, 0, 0, 0, 0, 1)},
      {"grouped 2 3x3", conv_pad(3, 7, 11, 12, 18, 3, 3, 1, 1, 1, 1, 1, 1, 2)},
      {"grouped 2 1x1", conv_pad(1, 5, 6, 34, 66, 1, 1, 1, 1, 0, 0, 0, 0, 2)},
      {"dw multiplier 2", conv_pad(1, 7, 7, 5, 10, 3, 3, 1, 1, 1, 1, 1, 1, 5)},
      {"single channel dw-like", conv_pad(1, 6, 6, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
  };
  uint32_t seed = 100;
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    check_conv(c.s, seed += 10);
  }
}

// 3x3 input 1..9, one channel, 3x3 kernel of ones, pad 1: each output is the sum of the
// in-bounds neighbourhood. Then + bias 0.5 - residual 20 and relu.
TEST(Conv2d, HandComputedBoxFilter) {
  const ConvShape s = conv_pad(1, 3, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w(9, 1.f), y = poisoned(9);
  cpu::conv2d(s, x.data(), w.data(), nullptr, nullptr, Act::none, y.data());
  const std::vector<float> sums = {12, 21, 16, 27, 45, 33, 24, 39, 28};
  EXPECT_EQ(y, sums);
  const float bias = 0.5f;
  std::vector<float> res(9, -20.f);
  y = poisoned(9);
  cpu::conv2d(s, x.data(), w.data(), &bias, res.data(), Act::relu, y.data());
  const std::vector<float> want = {0, 1.5f, 0, 7.5f, 25.5f, 13.5f, 4.5f, 19.5f, 8.5f};
  EXPECT_EQ(y, want);
  y = poisoned(9);
  cpu::conv2d(s, x.data(), w.data(), &bias, res.data(), Act::relu6, y.data());
  const std::vector<float> want6 = {0, 1.5f, 0, 6, 6, 6, 4.5f, 6, 6};
  EXPECT_EQ(y, want6);
}

// 1x1 conv, 2 -> 3 channels, HWIO weights [ic][oc]: y = [1*1 + 2*2, 1*0 + 2*1, 1*-1 + 2*0].
TEST(Conv2d, HandComputedPointwise) {
  const ConvShape s = conv_pad(1, 1, 2, 2, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1);
  const std::vector<float> x = {1, 2, -1, 0.5f}, w = {1, 0, -1, 2, 1, 0}, bias = {0, 0.25f, 0};
  std::vector<float> y = poisoned(6);
  cpu::conv2d(s, x.data(), w.data(), bias.data(), nullptr, Act::relu, y.data());
  const std::vector<float> want = {5, 2.25f, 0, 0, 0.75f, 1};
  EXPECT_EQ(y, want);
}

// Stride 2 with SAME padding on an even input: TensorFlow pads 0 before and 1 after, so the
// first output's window starts at the first input pixel and the last one hangs over the edge.
TEST(Conv2d, HandComputedSameStride2) {
  ConvShape s = conv_same(1, 4, 4, 1, 1, 3, 2, 1);
  ASSERT_EQ(s.pad_top, 0);
  ASSERT_EQ(s.out_h, 2);
  std::vector<float> x(16), w(9, 1.f), y = poisoned(4);
  for (int i = 0; i < 16; ++i) x[i] = float(i + 1);
  cpu::conv2d(s, x.data(), w.data(), nullptr, nullptr, Act::none, y.data());
  // windows rows/cols {0,1,2} and {2,3}
  const std::vector<float> want = {1 + 2 + 3 + 5 + 6 + 7 + 9 + 10 + 11, 3 + 4 + 7 + 8 + 11 + 12,
                                   9 + 10 + 11 + 13 + 14 + 15, 11 + 12 + 15 + 16};
  EXPECT_EQ(y, want);
}

// The fused expand + depthwise gives conv2d's bits, twice over, on shapes with several bands and
// chunks of rows (rows wide enough that a band holds a few of them), a channel tail, both
// strides, 3x3 and 5x5, TensorFlow's and symmetric padding, and one image or several.
TEST(ExpandDepthwise, SameBitsAsTwoConvs) {
  struct Case {
    int n, h, w, cin, cexp, k, stride;
    bool tf_same;
  };
  const Case cases[] = {{1, 57, 45, 7, 200, 3, 1, true},
                        {3, 30, 61, 16, 168, 5, 1, true},
                        {2, 41, 39, 24, 144, 3, 2, true},
                        {1, 33, 70, 5, 129, 5, 2, false},
                        {5, 9, 11, 8, 40, 3, 1, false}};
  uint64_t seed = 300;
  for (const Case& c : cases) {
    const ConvShape pw = test::pointwise(c.n, c.h, c.w, c.cin, c.cexp);
    const int p = c.k / 2;
    const ConvShape dw = c.tf_same ? test::depthwise(c.n, c.h, c.w, c.cexp, c.k, c.stride)
                                   : test::conv_pad(c.n, c.h, c.w, c.cexp, c.cexp, c.k, c.k,
                                                    c.stride, c.stride, p, p, p, p, c.cexp);
    const auto x = random_vec(size_t(c.n) * c.h * c.w * c.cin, seed++);
    const auto w_pw = random_vec(size_t(c.cin) * c.cexp, seed++);
    const auto b_pw = random_vec(c.cexp, seed++);
    const auto w_dw = random_vec(size_t(c.k) * c.k * c.cexp, seed++);
    const auto b_dw = random_vec(c.cexp, seed++);
    const size_t mid_n = size_t(c.n) * c.h * c.w * c.cexp;
    const size_t y_n = size_t(c.n) * dw.out_h * dw.out_w * c.cexp;
    auto mid = poisoned(mid_n), want = poisoned(y_n), got = poisoned(y_n);
    cpu::conv2d(pw, x.data(), w_pw.data(), b_pw.data(), nullptr, Act::relu6, mid.data());
    cpu::conv2d(dw, mid.data(), w_dw.data(), b_dw.data(), nullptr, Act::relu6, want.data());
    // With the expand's weights packed here, and packed beforehand (a frozen layer's).
    std::vector<float> packed = poisoned(cpu::conv2d_packed_size(pw));
    cpu::conv2d_pack(pw, w_pw.data(), packed.data());
    const float* const ways[] = {nullptr, packed.data()};
    for (const float* w_packed : ways) {
      std::fill(got.begin(), got.end(), std::numeric_limits<float>::quiet_NaN());
      cpu::expand_depthwise(pw, x.data(), w_pw.data(), w_packed, b_pw.data(), Act::relu6, dw,
                            w_dw.data(), b_dw.data(), Act::relu6, got.data());
      EXPECT_EQ(std::memcmp(want.data(), got.data(), sizeof(float) * y_n), 0)
          << conv_shape_str(dw) << (w_packed ? ", packed" : "") << ", first difference at "
          << std::mismatch(want.begin(), want.end(), got.begin()).first - want.begin();
    }
    float largest = 0.f;
    for (float v : want) largest = std::max(largest, std::fabs(v));
    EXPECT_GT(largest, 0.f);
  }
}

// ---------------------------------------------------------------------------------------------
// epilogue and pooling

TEST(BiasAct, MatchesReferenceAndAliases) {
  const int64_t rows = 37;
  const int c = 29;
  const auto x = random_vec(rows * c, 1), bias = random_vec(c, 2), res = random_vec(rows * c, 3);
  for (Act act : {Act::none, Act::relu, Act::relu6})
    for (int variant = 0; variant < 4; ++variant) {
      const float* b = variant & 1 ? bias.data() : nullptr;
      const float* r = variant & 2 ? res.data() : nullptr;
      auto want = poisoned(rows * c), got = poisoned(rows * c);
      cpu::ref::bias_act(rows, c, x.data(), b, r, act, want.data());
      cpu::bias_act(rows, c, x.data(), b, r, act, got.data());
      EXPECT_EQ(got, want);
      std::vector<float> inplace = x;
      cpu::bias_act(rows, c, inplace.data(), b, r, act, inplace.data());
      EXPECT_EQ(inplace, want);
    }
  // Large enough to take the threaded branch.
  const int64_t big_rows = 3000;
  const auto bx = random_vec(big_rows * c, 4);
  auto want = poisoned(big_rows * c), got = poisoned(big_rows * c);
  cpu::ref::bias_act(big_rows, c, bx.data(), bias.data(), nullptr, Act::relu6, want.data());
  cpu::bias_act(big_rows, c, bx.data(), bias.data(), nullptr, Act::relu6, got.data());
  EXPECT_EQ(got, want);
}

TEST(Pool, MatchesReference) {
  const PoolShape shapes[] = {
      pool_pad(3, 7, 11, 19, 3, 2, 1, 1, 1, 1),  // ResNet max pool geometry
      pool_pad(1, 12, 9, 64, 3, 2, 0, 1, 0, 1),  // SAME, padding after only
      pool_pad(2, 6, 6, 5, 2, 2, 0, 0, 0, 0),    // no padding
      pool_pad(1, 5, 7, 33, 5, 1, 2, 2, 1, 3),   // asymmetric
  };
  uint32_t seed = 7;
  for (const PoolShape& s : shapes) {
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.c,
                 ys = size_t(s.n) * s.out_h * s.out_w * s.c;
    const auto x = random_vec(xs, seed++);
    auto want = poisoned(ys), got = poisoned(ys);
    cpu::ref::max_pool2d(s, x.data(), want.data());
    cpu::max_pool2d(s, x.data(), got.data());
    EXPECT_EQ(got, want);
    for (bool count_pad : {false, true}) {
      want = poisoned(ys);
      got = poisoned(ys);
      cpu::ref::avg_pool2d(s, count_pad, x.data(), want.data());
      cpu::avg_pool2d(s, count_pad, x.data(), got.data());
      EXPECT_LT(rel_err(got, want), 1e-5);
    }
  }
}

TEST(Pool, HandComputed) {
  // 3x3 single channel, window 2 stride 1 padding 1 before: the corner windows see one pixel.
  const PoolShape s = pool_pad(1, 3, 3, 1, 2, 2, 1, 0, 1, 0);
  ASSERT_EQ(s.out_h, 2);
  const std::vector<float> x = {1, -2, 3, -4, 5, -6, 7, -8, 9};
  std::vector<float> y = poisoned(4);
  cpu::max_pool2d(s, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{1, 3, 7, 9}));
  cpu::avg_pool2d(s, false, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{1, 0.5f, 1.5f, 0}));  // divided by in-bounds taps: 1, 2, 2, 4
  cpu::avg_pool2d(s, true, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{0.25f, 0.25f, 0.75f, 0}));
}

TEST(GlobalAvgPool, MatchesReferenceAndHand) {
  for (auto [n, hw, c] : {std::tuple{1, 49, 1280}, {3, 13, 37}, {2, 1, 5}}) {
    const auto x = random_vec(size_t(n) * hw * c, 11);
    auto want = poisoned(size_t(n) * c), got = poisoned(size_t(n) * c);
    cpu::ref::global_avg_pool(n, hw, c, x.data(), want.data());
    cpu::global_avg_pool(n, hw, c, x.data(), got.data());
    EXPECT_LT(rel_err(got, want), 1e-5);
  }
  const std::vector<float> x = {1, 10, 2, 20, 6, -60};  // 3 pixels x 2 channels
  std::vector<float> y = poisoned(2);
  cpu::global_avg_pool(1, 3, 2, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{3, -10}));
}

// ---------------------------------------------------------------------------------------------
// linear

TEST(Linear, MatchesReference) {
  for (auto [n, in, out] :
       {std::tuple{3, 37, 11}, {32, 1280, 10}, {5, 17, 1000}, {1, 1280, 3}, {8, 64, 64}}) {
    SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(in) + "->" + std::to_string(out));
    const auto x = random_vec(size_t(n) * in, 21), w = random_vec(size_t(out) * in, 22);
    const auto b = random_vec(out, 23);
    for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
      auto want = poisoned(size_t(n) * out), got = poisoned(size_t(n) * out);
      cpu::ref::linear(n, in, out, x.data(), w.data(), bias, want.data());
      cpu::linear(n, in, out, x.data(), w.data(), bias, got.data());
      EXPECT_LT(rel_err(got, want), 1e-5);
    }
    const auto dy = random_vec(size_t(n) * out, 24);
    auto dx_w = poisoned(size_t(n) * in), dx_g = poisoned(size_t(n) * in);
    auto dw_w = poisoned(size_t(out) * in), dw_g = poisoned(size_t(out) * in);
    auto db_w = poisoned(out), db_g = poisoned(out);
    cpu::ref::linear_backward(n, in, out, x.data(), w.data(), dy.data(), dx_w.data(), dw_w.data(),
                              db_w.data());
    cpu::linear_backward(n, in, out, x.data(), w.data(), dy.data(), dx_g.data(), dw_g.data(),
                         db_g.data());
    EXPECT_LT(rel_err(dx_g, dx_w), 1e-5);
    EXPECT_LT(rel_err(dw_g, dw_w), 1e-5);
    EXPECT_LT(rel_err(db_g, db_w), 1e-5);
    // dx and db are optional.
    auto dw_only = poisoned(size_t(out) * in);
    cpu::linear_backward(n, in, out, x.data(), w.data(), dy.data(), nullptr, dw_only.data(),
                         nullptr);
    EXPECT_LT(rel_err(dw_only, dw_w), 1e-5);
  }
}

// L = sum_ij r_ij * y_ij with y = linear(x, w, b) evaluated in double, so dL/dy = r; central
// differences of L against linear_backward's dx, dw, db.
TEST(Linear, BackwardFiniteDifferences) {
  const int n = 3, in = 7, out = 5;
  const auto xf = random_vec(n * in, 31), wf = random_vec(out * in, 32), bf = random_vec(out, 33);
  const auto r = random_vec(n * out, 34);
  std::vector<double> x(xf.begin(), xf.end()), w(wf.begin(), wf.end()), b(bf.begin(), bf.end());
  auto loss = [&]() {
    double l = 0;
    for (int i = 0; i < n; ++i)
      for (int o = 0; o < out; ++o) {
        double y = b[o];
        for (int k = 0; k < in; ++k) y += x[i * in + k] * w[o * in + k];
        l += r[i * out + o] * y;
      }
    return l;
  };
  auto dx = poisoned(n * in), dw = poisoned(out * in), db = poisoned(out);
  cpu::linear_backward(n, in, out, xf.data(), wf.data(), r.data(), dx.data(), dw.data(), db.data());
  const double h = 1e-3;
  auto check = [&](std::vector<double>& p, const std::vector<float>& grad, const char* what) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double lp = loss();
      p[i] = keep - h;
      const double lm = loss();
      p[i] = keep;
      EXPECT_NEAR(grad[i], (lp - lm) / (2 * h), 1e-4) << what << "[" << i << "]";
    }
  };
  check(x, dx, "dx");
  check(w, dw, "dw");
  check(b, db, "db");
}

// ---------------------------------------------------------------------------------------------
// softmax and the fused loss

TEST(Softmax, RowsSumToOneAndMatchReference) {
  const int n = 7, c = 1001;
  const auto x = random_vec(size_t(n) * c, 41);
  auto want = poisoned(size_t(n) * c), got = poisoned(size_t(n) * c);
  cpu::ref::softmax(n, c, x.data(), want.data());
  cpu::softmax(n, c, x.data(), got.data());
  EXPECT_LT(rel_err(got, want), 1e-5);
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int j = 0; j < c; ++j) sum += got[size_t(i) * c + j];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  std::vector<float> inplace = x;
  cpu::softmax(n, c, inplace.data(), inplace.data());
  EXPECT_EQ(inplace, got);
}

TEST(Softmax, StableForHugeLogits) {
  const std::vector<float> x = {1000.f, -1000.f, 999.f, -1000.f, -1000.f, -999.f};
  std::vector<float> y = poisoned(6);
  cpu::softmax(2, 3, x.data(), y.data());
  const double e = std::exp(-1.0);
  EXPECT_NEAR(y[0], 1 / (1 + e), 1e-6);
  EXPECT_EQ(y[1], 0.f);
  EXPECT_NEAR(y[2], e / (1 + e), 1e-6);
  EXPECT_NEAR(y[3], e / (1 + 2 * e), 1e-6);
  EXPECT_NEAR(y[5], 1 / (1 + 2 * e), 1e-6);
}

// Loss as the contract defines it, in double.
double xent_loss(const std::vector<double>& z, int c, int label, double smoothing) {
  double m = z[0];
  for (int j = 1; j < c; ++j) m = std::max(m, z[j]);
  double sum = 0;
  for (int j = 0; j < c; ++j) sum += std::exp(z[j] - m);
  double l = 0;
  for (int j = 0; j < c; ++j) {
    const double q = (j == label ? 1 - smoothing : 0) + smoothing / c;
    l -= q * (z[j] - m - std::log(sum));
  }
  return l;
}

TEST(SoftmaxXent, MatchesReference) {
  for (auto [n, c] : {std::pair{5, 3}, {32, 10}, {3, 1000}}) {
    const auto z = random_vec(size_t(n) * c, 51);
    std::vector<int32_t> labels(n);
    for (int i = 0; i < n; ++i) labels[i] = (i * 7 + 3) % c;
    for (float smoothing : {0.f, 0.1f}) {
      auto lw = poisoned(n), lg = poisoned(n);
      auto dw = poisoned(size_t(n) * c), dg = poisoned(size_t(n) * c);
      cpu::ref::softmax_xent(n, c, z.data(), labels.data(), smoothing, 1.f / n, lw.data(),
                             dw.data());
      cpu::softmax_xent(n, c, z.data(), labels.data(), smoothing, 1.f / n, lg.data(), dg.data());
      EXPECT_LT(rel_err(lg, lw), 1e-5);
      EXPECT_LT(rel_err(dg, dw), 1e-5);
      auto l_eval = poisoned(n);
      cpu::softmax_xent(n, c, z.data(), labels.data(), smoothing, 1.f / n, l_eval.data(), nullptr);
      EXPECT_EQ(l_eval, lg);
    }
  }
}

// dlogits against central differences of the mean loss, in double.
TEST(SoftmaxXent, GradientFiniteDifferences) {
  const int n = 3, c = 6;
  const float smoothing = 0.1f;
  const auto zf = random_vec(n * c, 61);
  const std::vector<int32_t> labels = {0, 5, 2};
  auto loss = poisoned(n), dz = poisoned(n * c);
  cpu::softmax_xent(n, c, zf.data(), labels.data(), smoothing, 1.f / n, loss.data(), dz.data());
  const double h = 1e-4;
  for (int i = 0; i < n; ++i) {
    std::vector<double> z(zf.begin() + i * c, zf.begin() + (i + 1) * c);
    EXPECT_NEAR(loss[i], xent_loss(z, c, labels[i], smoothing), 1e-5);
    for (int j = 0; j < c; ++j) {
      const double keep = z[j];
      z[j] = keep + h;
      const double lp = xent_loss(z, c, labels[i], smoothing) / n;
      z[j] = keep - h;
      const double lm = xent_loss(z, c, labels[i], smoothing) / n;
      z[j] = keep;
      EXPECT_NEAR(dz[i * c + j], (lp - lm) / (2 * h), 1e-4) << i << "," << j;
    }
  }
}

TEST(SoftmaxXent, StableForHugeLogits) {
  const std::vector<float> z = {1000.f, -1000.f, 0.f};
  const int32_t label = 1;
  float loss = kNaN;
  std::vector<float> dz = poisoned(3);
  cpu::softmax_xent(1, 3, z.data(), &label, 0.f, 1.f, &loss, dz.data());
  EXPECT_NEAR(loss, 2000.0, 1e-2);  // confidently wrong: large but finite
  EXPECT_NEAR(dz[0], 1.0, 1e-6);
  EXPECT_NEAR(dz[1], -1.0, 1e-6);
  EXPECT_NEAR(dz[2], 0.0, 1e-6);
}

// ---------------------------------------------------------------------------------------------
// dropout

TEST(Dropout, MatchesReferenceAndKeepsFraction) {
  const int64_t count = 100003;
  const float p = 0.3f;
  const auto x = random_vec(count, 71);
  auto want = poisoned(count), got = poisoned(count);
  cpu::ref::dropout(count, p, 1234, 5, x.data(), want.data());
  cpu::dropout(count, p, 1234, 5, x.data(), got.data());
  EXPECT_EQ(got, want);
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i)
    if (got[i] != 0.f) {
      ++kept;
      EXPECT_EQ(got[i], x[i] * (1.f / (1.f - p)));
    }
  // Binomial: 5 standard deviations.
  const double frac = double(kept) / count, sigma = std::sqrt(p * (1 - p) / count);
  EXPECT_NEAR(frac, 1 - p, 5 * sigma);
}

TEST(Dropout, DeterministicAndSameMaskOnGradient) {
  const int64_t count = 20011;
  const float p = 0.5f;
  const auto x = random_vec(count, 81), dy = random_vec(count, 82);
  auto y1 = poisoned(count), y2 = poisoned(count), y3 = poisoned(count), dx = poisoned(count);
  cpu::dropout(count, p, 99, 1000, x.data(), y1.data());
  cpu::dropout(count, p, 99, 1000, x.data(), y2.data());
  EXPECT_EQ(y1, y2);
  cpu::dropout(count, p, 100, 1000, x.data(), y3.data());
  EXPECT_NE(y1, y3);
  cpu::dropout(count, p, 99, 1000, dy.data(), dx.data());
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(y1[i] == 0.f, dx[i] == 0.f) << i;
  // A slice starting mid-block with the matching counter reproduces the same elements.
  const int64_t off = 4097;
  auto part = poisoned(count - off);
  cpu::dropout(count - off, p, 99, 1000 + off, x.data() + off, part.data());
  EXPECT_EQ(part, std::vector<float>(y1.begin() + off, y1.end()));
  // In place.
  std::vector<float> inplace = x;
  cpu::dropout(count, p, 99, 1000, inplace.data(), inplace.data());
  EXPECT_EQ(inplace, y1);
  // Element i depends only on philox_uniform(seed, counter_base + i).
  for (int64_t i : {0, 1, 2, 3, 4, 5, 4095, 20010})
    EXPECT_EQ(y1[i] != 0.f, philox_uniform(99, 1000 + i) >= p) << i;
}

// ---------------------------------------------------------------------------------------------
// normalisation, optimisers, metrics

TEST(NormalizeU8, MatchesReference) {
  const int64_t pixels = 70001;
  const int c = 3;
  std::vector<uint8_t> x(pixels * c);
  std::mt19937 rng(91);
  for (auto& v : x) v = uint8_t(rng() & 255);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  auto want = poisoned(pixels * c), got = poisoned(pixels * c);
  cpu::ref::normalize_u8(pixels, c, x.data(), mean, std, want.data());
  cpu::normalize_u8(pixels, c, x.data(), mean, std, got.data());
  EXPECT_EQ(got, want);
  const uint8_t px[3] = {0, 255, 128};
  float y[3];
  cpu::normalize_u8(1, 3, px, mean, std, y);
  EXPECT_NEAR(y[0], -0.485 / 0.229, 1e-5);
  EXPECT_NEAR(y[1], (1 - 0.456) / 0.224, 1e-5);
  EXPECT_NEAR(y[2], (128 / 255.0 - 0.406) / 0.225, 1e-5);
}

struct OptimState {
  std::vector<float> p, g, m, v;
};

OptimState make_state(size_t count, uint32_t seed) {
  OptimState s{random_vec(count, seed), random_vec(count, seed + 1), random_vec(count, seed + 2),
               random_vec(count, seed + 3)};
  for (float& v : s.v) v = std::fabs(v);  // second moments are non-negative
  return s;
}

// The second tensor trains at a tenth of the rate (lr_scale), as the backbone does when
// fine-tuning.
TEST(Optim, SgdMomentumMatchesPyTorchFormula) {
  const float lr = 0.05f, momentum = 0.9f;
  const size_t sizes[2] = {37, 70001};
  const float wds[2] = {0.f, 1e-2f}, scales[2] = {1.f, 0.1f};
  OptimState st[2] = {make_state(sizes[0], 101), make_state(sizes[1], 111)};
  std::vector<std::vector<double>> p(2), m(2);
  for (int t = 0; t < 2; ++t) {
    p[t].assign(st[t].p.begin(), st[t].p.end());
    m[t].assign(st[t].m.begin(), st[t].m.end());
  }
  for (int step = 0; step < 3; ++step) {
    ParamRef refs[2];
    for (int t = 0; t < 2; ++t) {
      refs[t] = ParamRef{st[t].p.data(),    st[t].g.data(), st[t].m.data(), nullptr,
                         int64_t(sizes[t]), wds[t],         scales[t]};
      for (size_t i = 0; i < sizes[t]; ++i) {
        const double g = st[t].g[i] + double(wds[t]) * p[t][i];
        m[t][i] = momentum * m[t][i] + g;
        p[t][i] -= double(lr * scales[t]) * m[t][i];
      }
    }
    cpu::sgd_momentum(refs, 2, lr, momentum);
  }
  for (int t = 0; t < 2; ++t) {
    EXPECT_LT(rel_err(st[t].p, std::vector<float>(p[t].begin(), p[t].end())), 1e-6);
    EXPECT_LT(rel_err(st[t].m, std::vector<float>(m[t].begin(), m[t].end())), 1e-6);
  }
}

TEST(Optim, AdamWMatchesPyTorchFormula) {
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  const size_t sizes[2] = {70001, 13};
  const float wds[2] = {1e-2f, 0.f}, scales[2] = {0.1f, 1.f};
  OptimState st[2] = {make_state(sizes[0], 121), make_state(sizes[1], 131)};
  std::vector<std::vector<double>> p(2), m(2), v(2);
  for (int t = 0; t < 2; ++t) {
    p[t].assign(st[t].p.begin(), st[t].p.end());
    m[t].assign(st[t].m.begin(), st[t].m.end());
    v[t].assign(st[t].v.begin(), st[t].v.end());
  }
  for (int64_t step = 1; step <= 3; ++step) {
    ParamRef refs[2];
    for (int t = 0; t < 2; ++t) {
      refs[t] = ParamRef{st[t].p.data(),    st[t].g.data(), st[t].m.data(), st[t].v.data(),
                         int64_t(sizes[t]), wds[t],         scales[t]};
      const double lr_t = double(lr * scales[t]);
      for (size_t i = 0; i < sizes[t]; ++i) {
        const double g = st[t].g[i];
        p[t][i] *= 1 - lr_t * wds[t];
        m[t][i] = b1 * m[t][i] + (1 - double(b1)) * g;
        v[t][i] = b2 * v[t][i] + (1 - double(b2)) * g * g;
        const double mhat = m[t][i] / (1 - std::pow(double(b1), double(step)));
        const double vhat = v[t][i] / (1 - std::pow(double(b2), double(step)));
        p[t][i] -= lr_t * mhat / (std::sqrt(vhat) + eps);
      }
    }
    cpu::adamw(refs, 2, AdamWConfig{lr, b1, b2, eps, step});
  }
  for (int t = 0; t < 2; ++t) {
    EXPECT_LT(rel_err(st[t].p, std::vector<float>(p[t].begin(), p[t].end())), 1e-5);
    EXPECT_LT(rel_err(st[t].m, std::vector<float>(m[t].begin(), m[t].end())), 1e-5);
    EXPECT_LT(rel_err(st[t].v, std::vector<float>(v[t].begin(), v[t].end())), 1e-5);
  }
}

TEST(Metrics, ConfusionUpdateHandCaseWithTies) {
  const int n = 5, c = 3;
  const std::vector<float> logits = {
      1,    3,    3,     // tie between 1 and 2: first max wins -> 1
      2,    2,    2,     // all equal -> 0
      -1,   -5,   0,     // -> 2
      0.5f, 0.4f, 0.5f,  // tie between 0 and 2 -> 0
      -3,   7,    -1,    // -> 1
  };
  const std::vector<int32_t> labels = {1, 2, 2, 0, 0};
  std::vector<int64_t> conf = {5, 0, 0, 0, 0, 0, 0, 0, 1};  // accumulated, not cleared
  cpu::confusion_update(n, c, logits.data(), labels.data(), conf.data());
  const std::vector<int64_t> want = {6, 1, 0, 0, 1, 0, 1, 0, 2};
  EXPECT_EQ(conf, want);
  std::vector<int64_t> conf_ref = {5, 0, 0, 0, 0, 0, 0, 0, 1};
  cpu::ref::confusion_update(n, c, logits.data(), labels.data(), conf_ref.data());
  EXPECT_EQ(conf_ref, want);
}

TEST(HeadMisc, GatherRowsAndReluBackward) {
  // Rows picked out of order, one twice; large enough to take the threaded branch.
  const int rows = 7, cols = 10007;
  const auto src = random_vec(size_t(rows) * cols, 141);
  const std::vector<int32_t> pick = {6, 0, 3, 3, 5};
  auto dst = poisoned(pick.size() * cols);
  cpu::gather_rows(int(pick.size()), cols, src.data(), pick.data(), dst.data());
  for (size_t i = 0; i < pick.size(); ++i)
    EXPECT_TRUE(std::equal(dst.begin() + i * cols, dst.begin() + (i + 1) * cols,
                           src.begin() + size_t(pick[i]) * cols))
        << i;
  // The gradient passes where the forward output was positive (y = relu(x) > 0), else 0.
  const std::vector<float> y = {0.5f, 0.f, 2.f, 0.f, 1e-7f};
  std::vector<float> dy = {-1.f, 3.f, 0.25f, -2.f, 4.f};
  cpu::relu_backward(5, y.data(), dy.data());
  EXPECT_EQ(dy, (std::vector<float>{-1.f, 0.f, 0.25f, 0.f, 4.f}));
}

// ---------------------------------------------------------------------------------------------
// CPU paths (kernels/cpu/cpu_path.h): every path this CPU can run, on the same inputs.

struct PathOutputs {
  cpu::CpuPath path;
  std::vector<float> y, dx, dw;
};

// Restores the path the test binary was started with, whatever a test switched to.
struct PathGuard {
  cpu::CpuPath saved = cpu::cpu_path();
  ~PathGuard() { cpu::set_cpu_path(saved); }
};

PathOutputs run_conv_on_path(cpu::CpuPath path, const ConvShape& s, uint32_t seed) {
  EXPECT_TRUE(cpu::set_cpu_path(path));
  const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.in_c;
  const size_t ws = size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
  const size_t ys = size_t(s.n) * s.out_h * s.out_w * s.out_c;
  const auto x = random_vec(xs, seed), w = random_vec(ws, seed + 1);
  const auto bias = random_vec(s.out_c, seed + 2), res = random_vec(ys, seed + 3);
  const auto dy = random_vec(ys, seed + 4);
  PathOutputs out{path, poisoned(ys), poisoned(xs), poisoned(ws)};
  cpu::conv2d(s, x.data(), w.data(), bias.data(), res.data(), Act::relu6, out.y.data());
  cpu::conv2d_backward_data(s, dy.data(), w.data(), out.dx.data());
  cpu::conv2d_backward_filter(s, x.data(), dy.data(), out.dw.data());
  return out;
}

bool has_fma(cpu::CpuPath p) {
  return p != cpu::CpuPath::sse2 && p != cpu::CpuPath::generic;
}

TEST(CpuPaths, ConvolutionsAgreeAcrossPaths) {
  PathGuard guard;
  const std::vector<cpu::CpuPath> paths = cpu::cpu_paths_supported();
  std::string names;
  for (cpu::CpuPath p : paths) names += std::string(" ") + cpu::cpu_path_name(p);
  std::printf("CPU paths this machine runs:%s\n", names.c_str());
  const ConvCase cases[] = {
      {"pw 40->70", conv_pad(2, 9, 7, 40, 70, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 200->150 K blocks", conv_pad(1, 11, 9, 200, 150, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"dw3 s1 76ch", conv_same(2, 9, 11, 76, 76, 3, 1, 76)},
      {"dw5 s2 144ch", conv_same(1, 13, 10, 144, 144, 5, 2, 144)},
      {"dw5 s1 40ch 21 wide", conv_same(2, 9, 21, 40, 40, 5, 1, 40)},
      {"stem 3x3 s2 3->32", conv_same(2, 15, 17, 3, 32, 3, 2, 1)},
      {"3x3 s1 40->70", conv_pad(1, 9, 8, 40, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
      {"pw 16->96", conv_pad(2, 16, 16, 16, 96, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 96->16", conv_pad(2, 16, 16, 96, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 32->16", conv_pad(2, 16, 16, 32, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 16->8", conv_pad(2, 16, 16, 16, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"dw3 s1 32ch", conv_same(2, 16, 16, 32, 32, 3, 1, 32)},
      {"dw3 s2 96ch", conv_same(2, 16, 16, 96, 96, 3, 2, 96)},
      {"stem 3x3 s2 3->32 32px", conv_same(2, 32, 32, 3, 32, 3, 2, 1)},
  };
  uint32_t seed = 900;
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    seed += 10;
    std::vector<PathOutputs> outs;
    for (cpu::CpuPath p : paths) outs.push_back(run_conv_on_path(p, c.s, seed));
    const PathOutputs* fma = nullptr;
    for (const PathOutputs& o : outs)
      if (has_fma(o.path) && !fma) fma = &o;
    for (const PathOutputs& o : outs) {
      SCOPED_TRACE(cpu::cpu_path_name(o.path));
      if (!fma || &o == fma) continue;
      if (has_fma(o.path)) {
        EXPECT_TRUE(bitwise_equal(o.y, fma->y));
        EXPECT_TRUE(bitwise_equal(o.dx, fma->dx));
        EXPECT_TRUE(bitwise_equal(o.dw, fma->dw));
      } else {
        EXPECT_LT(rel_err(o.y, fma->y), 1e-6);
        EXPECT_LT(rel_err(o.dx, fma->dx), 1e-6);
        EXPECT_LT(rel_err(o.dw, fma->dw), 1e-6);
      }
    }
  }
}

// The head's linear layer too: its 16 lanes of partial sums are the same on every path, so that a
// training run gives the same bits on avx512 and avx2 (an earlier version summed kVec lanes, and a
// 3-step fine-tuning run drifted from PyTorch by 19 times the tolerance on avx2 where avx512 was
// within it: a ReLU6 that flipped).
TEST(CpuPaths, LinearAgreesAcrossPaths) {
  PathGuard guard;
  const std::vector<cpu::CpuPath> paths = cpu::cpu_paths_supported();
  const int shapes[][3] = {{2, 1280, 3}, {32, 1280, 10}, {7, 37, 5}, {5, 15, 9}, {33, 200, 101}};
  uint32_t seed = 1300;
  for (const auto& sh : shapes) {
    const int n = sh[0], in = sh[1], out = sh[2];
    SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(in) + "->" + std::to_string(out));
    const auto x = random_vec(size_t(n) * in, seed += 3),
               w = random_vec(size_t(out) * in, seed + 1);
    const auto b = random_vec(out, seed + 2);
    std::vector<std::vector<float>> ys;
    for (cpu::CpuPath p : paths) {
      ASSERT_TRUE(cpu::set_cpu_path(p));
      ys.push_back(poisoned(size_t(n) * out));
      cpu::linear(n, in, out, x.data(), w.data(), b.data(), ys.back().data());
    }
    const std::vector<float>* fma = nullptr;
    for (size_t i = 0; i < paths.size(); ++i) {
      SCOPED_TRACE(cpu::cpu_path_name(paths[i]));
      if (!has_fma(paths[i])) continue;
      if (!fma) {
        fma = &ys[i];
      } else {
        EXPECT_TRUE(bitwise_equal(ys[i], *fma));
      }
    }
    for (size_t i = 0; i < paths.size(); ++i) {
      if (fma && !has_fma(paths[i])) {
        EXPECT_LT(rel_err(ys[i], *fma), 1e-6);
      }
    }
  }
}

TEST(CpuPaths, SelectionAndItsErrors) {
  PathGuard guard;
  const std::vector<cpu::CpuPath> built = cpu::cpu_paths_built();
  const std::vector<cpu::CpuPath> supported = cpu::cpu_paths_supported();
  ASSERT_FALSE(supported.empty());
  for (cpu::CpuPath p : {cpu::CpuPath::avx512, cpu::CpuPath::avx2, cpu::CpuPath::sse2,
                         cpu::CpuPath::neon, cpu::CpuPath::generic}) {
    SCOPED_TRACE(cpu::cpu_path_name(p));
    const bool ok = std::find(supported.begin(), supported.end(), p) != supported.end();
    EXPECT_EQ(cpu::set_cpu_path(p), ok);
    if (ok) {
      EXPECT_EQ(cpu::cpu_path(), p);
    }
  }
  // x86-64 binaries carry sse2, aarch64 ones neon: each has a path no other machine has.
  EXPECT_LT(supported.size(), size_t(5));
  EXPECT_LE(supported.size(), built.size());

  const char* old = std::getenv("GRAFT_CPU");
  const std::string saved = old ? old : "";
  ::setenv("GRAFT_CPU", "no-such-path", 1);
  EXPECT_NE(cpu::select_cpu_path_from_env().find("GRAFT_CPU=no-such-path: no such CPU path"),
            std::string::npos);
  ::setenv("GRAFT_CPU", "", 1);
  EXPECT_EQ(cpu::select_cpu_path_from_env(), "");
  EXPECT_EQ(cpu::cpu_path(), supported.front());  // unset or empty: the best path
  for (cpu::CpuPath p : built) {
    ::setenv("GRAFT_CPU", cpu::cpu_path_name(p), 1);
    const std::string error = cpu::select_cpu_path_from_env();
    if (cpu::cpu_path_supported(p)) {
      EXPECT_EQ(error, "");
      EXPECT_EQ(cpu::cpu_path(), p);
    } else {
      EXPECT_NE(error.find("which this CPU lacks"), std::string::npos) << error;
    }
  }
  if (old)
    ::setenv("GRAFT_CPU", saved.c_str(), 1);
  else
    ::unsetenv("GRAFT_CPU");
}

}  // namespace
}  // namespace graft
