// The backward ops of kernels/ops.h on the CPU:
//   * finite-difference checks (tests/grad_check.h, the loss evaluated in double) of every op's
//     gradient on awkward shapes, with the conv gradients taken through the chain the trainer runs
//     (act_backward on the saved output, bias_grad, the residual takes dz, conv backward data and
//     filter);
//   * the fast conv backward paths against the plain loops of kernels/cpu/reference.cpp on larger
//     shapes, relative error ||fast - plain|| / ||plain|| < 1e-5 (float sums against the plain
//     loops' double sums, up to a few thousand terms);
//   * bitwise-identical results for 1 and 2 OpenMP threads, and from run to run;
//   * hand-computed cases where the rule is the point (ties in max pooling, the activation masks).
// Outputs are filled with NaN before every call so that an element an op does not write shows.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/reference.h"
#include "kernels/ops.h"
#include "tests/conv_shapes.h"
#include "tests/grad_check.h"
#include "tests/test_util.h"

namespace graft {
namespace {

using namespace test;  // shapes, sizes, random data, error measures

struct ConvCase {
  const char* name;
  ConvShape s;
};

// ---------------------------------------------------------------------------------------------
// conv2d: finite differences through the whole epilogue

// y = act(conv(x, w) + bias + residual), L = sum(y * r). The float chain: dz = r masked by
// act_backward on the float forward's output; db = bias_grad(dz); dresidual = dz; dx and dw from
// the conv backward ops. Each is checked against the double forward's central differences. The
// plain loops (reference.cpp) must agree with the fast paths on the same data.
void check_conv_grads(const ConvShape& s, bool use_bias, bool use_res, Act act, uint32_t seed) {
  const int64_t rows = int64_t(s.n) * s.out_h * s.out_w;
  const auto x = random_vec(x_size(s), seed), w = random_vec(w_size(s), seed + 1);
  const auto bias = random_vec(s.out_c, seed + 2);
  // A wide residual carries a good share of the sums past relu6's clamp and below zero.
  const auto res = random_vec(y_size(s), seed + 3, act == Act::relu6 ? 8.f : 1.f);
  const auto r = random_vec(y_size(s), seed + 4);
  const float* bp = use_bias ? bias.data() : nullptr;
  const float* rp = use_res ? res.data() : nullptr;

  auto y = poisoned(y_size(s));
  cpu::conv2d(s, x.data(), w.data(), bp, rp, act, y.data());
  auto dz = r;
  cpu::act_backward(int64_t(dz.size()), act, y.data(), dz.data());
  auto db = poisoned(s.out_c), dx = poisoned(x_size(s)), dw = poisoned(w_size(s));
  cpu::bias_grad(rows, s.out_c, dz.data(), db.data());
  cpu::conv2d_backward_data(s, dz.data(), w.data(), dx.data());
  cpu::conv2d_backward_filter(s, x.data(), dz.data(), dw.data());

  const auto xd = gradcheck::to_double(x), wd = gradcheck::to_double(w);
  const auto bd = gradcheck::to_double(bias), rd = gradcheck::to_double(res);
  auto loss = [&](const double* xv, const double* wv, const double* bv, const double* rv) {
    std::vector<double> yd(y_size(s));
    gradcheck::conv2d<double>(s, xv, wv, use_bias ? bv : nullptr, use_res ? rv : nullptr, act,
                              yd.data());
    return gradcheck::dot_loss(yd, r);
  };
  gradcheck::Options opt;
  opt.seed = seed;
  gradcheck::check(
      "dx", x, dx,
      [&](const std::vector<double>& v) { return loss(v.data(), wd.data(), bd.data(), rd.data()); },
      opt);
  gradcheck::check(
      "dw", w, dw,
      [&](const std::vector<double>& v) { return loss(xd.data(), v.data(), bd.data(), rd.data()); },
      opt);
  if (use_bias)
    gradcheck::check(
        "db", bias, db,
        [&](const std::vector<double>& v) {
          return loss(xd.data(), wd.data(), v.data(), rd.data());
        },
        opt);
  if (use_res)
    gradcheck::check(
        "dresidual", res, dz,
        [&](const std::vector<double>& v) {
          return loss(xd.data(), wd.data(), bd.data(), v.data());
        },
        opt);

  auto dx_plain = poisoned(x_size(s)), dw_plain = poisoned(w_size(s));
  cpu::ref::conv2d_backward_data(s, dz.data(), w.data(), dx_plain.data());
  cpu::ref::conv2d_backward_filter(s, x.data(), dz.data(), dw_plain.data());
  EXPECT_LT(rel_err(dx, dx_plain), 1e-5) << "dx against the plain loops";
  EXPECT_LT(rel_err(dw, dw_plain), 1e-5) << "dw against the plain loops";
}

TEST(ConvBackward, FiniteDifferences) {
  const ConvCase cases[] = {
      // pointwise path
      {"pw 1x1 b3 7x5 8->12", conv_pad(3, 7, 5, 8, 12, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 1x1 b1 9x9 3->5", conv_pad(1, 9, 9, 3, 5, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      {"pw 1x1 3x3 100->20 (two row blocks)",
       conv_pad(1, 3, 3, 100, 20, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
      // one group, general path
      {"1x1 s2 7x5 (unread pixels)", conv_pad(1, 7, 5, 6, 4, 1, 1, 2, 2, 0, 0, 0, 0, 1)},
      {"3x3 s1 pad1 b1 9x9 3->4", conv_pad(1, 9, 9, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
      {"3x3 s2 SAME b3 7x5 3->8", conv_same(3, 7, 5, 3, 8, 3, 2, 1)},
      {"5x5 s1 SAME b1 9x9 4->3", conv_same(1, 9, 9, 4, 3, 5, 1, 1)},
      {"5x5 s2 SAME b1 9x9 6->5", conv_same(1, 9, 9, 6, 5, 5, 2, 1)},
      {"3x3 s2 valid 8x8 (bottom/right unread)",
       conv_pad(1, 8, 8, 3, 4, 3, 3, 2, 2, 0, 0, 0, 0, 1)},
      {"3x5 s(2,1) asym pad b3", conv_pad(3, 7, 5, 3, 4, 3, 5, 2, 1, 1, 0, 2, 1, 1)},
      {"3x3 s2 SAME b1 7x5 16->5 (wide input)", conv_same(1, 7, 5, 16, 5, 3, 2, 1)},
      {"1x1 s2 b3 5x7 17->6 (wide input)", conv_pad(3, 5, 7, 17, 6, 1, 1, 2, 2, 0, 0, 0, 0, 1)},
      {"one channel 3x3 pad1", conv_pad(1, 7, 5, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
      // depthwise path
      {"dw 3x3 s1 SAME b3 7x5 c5", conv_same(3, 7, 5, 5, 5, 3, 1, 5)},
      {"dw 5x5 s2 SAME b1 9x9 c5", conv_same(1, 9, 9, 5, 5, 5, 2, 5)},
      {"dw 3x3 s2 SAME b1 7x9 c37", conv_same(1, 7, 9, 37, 37, 3, 2, 37)},
      {"dw 5x5 s1 pad2 b1 6x7 c20", conv_pad(1, 6, 7, 20, 20, 5, 5, 1, 1, 2, 2, 2, 2, 20)},
      {"dw 3x3 s1 pad1 b1 5x5 c80", conv_pad(1, 5, 5, 80, 80, 3, 3, 1, 1, 1, 1, 1, 1, 80)},
      {"dw 3x3 s2 SAME b1 5x5 c56 (48-channel tail)", conv_same(1, 5, 5, 56, 56, 3, 2, 56)},
      {"dw 7x7 s1 pad3 b1 9x8 c20 (generic width)",
       conv_pad(1, 9, 8, 20, 20, 7, 7, 1, 1, 3, 3, 3, 3, 20)},
      {"dw 5x3 s(1,2) pad(2,1) b3 7x9 c18", conv_pad(3, 7, 9, 18, 18, 5, 3, 1, 2, 2, 2, 1, 1, 18)},
      {"dw 3x3 s1 pad3 b1 5x4 c20 (pad past the kernel)",
       conv_pad(1, 5, 4, 20, 20, 3, 3, 1, 1, 3, 3, 3, 3, 20)},
      {"dw 3x3 s1 valid b1 7x6 c20", conv_pad(1, 7, 6, 20, 20, 3, 3, 1, 1, 0, 0, 0, 0, 20)},
      {"dw 5x5 s1 pad(1,3) b2 6x7 c17", conv_pad(2, 6, 7, 17, 17, 5, 5, 1, 1, 1, 2, 3, 1, 17)},
      {"dw 5x5 on 3x3 input c3", conv_pad(1, 3, 3, 3, 3, 5, 5, 1, 1, 2, 2, 2, 2, 3)},
      // grouped, not depthwise: the plain loops
      {"grouped 2 3x3 b1 7x5 4->6", conv_pad(1, 7, 5, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2)},
      {"dw multiplier 2 (5 groups, 5->10)", conv_pad(1, 5, 7, 5, 10, 3, 3, 2, 2, 1, 1, 1, 1, 5)},
  };
  struct Epi {
    bool bias, res;
    Act act;
  };
  const Epi epis[] = {
      {false, false, Act::none}, {true, true, Act::relu6}, {true, false, Act::relu}};
  uint32_t seed = 1000;
  for (const ConvCase& c : cases)
    for (const Epi& e : epis) {
      SCOPED_TRACE(std::string(c.name) + " bias=" + std::to_string(e.bias) +
                   " residual=" + std::to_string(e.res) + " act=" + std::to_string(int(e.act)));
      check_conv_grads(c.s, e.bias, e.res, e.act, seed += 10);
    }
}

// The relu6 epilogue above only tests the clamp if the forward reaches it: check that the data
// really puts outputs at 0, at 6 and in between.
TEST(ConvBackward, Relu6CaseCoversBothClamps) {
  const ConvShape s = conv_same(3, 7, 5, 3, 8, 3, 2, 1);
  const auto x = random_vec(x_size(s), 7), w = random_vec(w_size(s), 8);
  const auto res = random_vec(y_size(s), 9, 8.f);
  std::vector<float> y(y_size(s));
  cpu::conv2d(s, x.data(), w.data(), nullptr, res.data(), Act::relu6, y.data());
  int zeros = 0, sixes = 0, inside = 0;
  for (float v : y) (v == 0.f ? zeros : v == 6.f ? sixes : inside) += 1;
  EXPECT_GT(zeros, 10);
  EXPECT_GT(sixes, 10);
  EXPECT_GT(inside, 10);
}

// ---------------------------------------------------------------------------------------------
// conv2d: fast paths against the plain loops on larger shapes

const ConvCase kLargeCases[] = {
    {"pw b2 28x28 40->240", conv_pad(2, 28, 28, 40, 240, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
    {"pw b1 14x14 480->80", conv_pad(1, 14, 14, 480, 80, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
    {"pw b1 7x7 320->1280", conv_pad(1, 7, 7, 320, 1280, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
    {"pw b1 112x112 16->24 (8 splits)", conv_pad(1, 112, 112, 16, 24, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
    {"pw b3 13x11 37->19", conv_pad(3, 13, 11, 37, 19, 1, 1, 1, 1, 0, 0, 0, 0, 1)},
    {"dw 3x3 s1 SAME b2 56x56 c32", conv_same(2, 56, 56, 32, 32, 3, 1, 32)},
    {"dw 5x5 s2 SAME b1 28x28 c144", conv_same(1, 28, 28, 144, 144, 5, 2, 144)},
    {"dw 3x3 s2 SAME b3 31x29 c37", conv_same(3, 31, 29, 37, 37, 3, 2, 37)},
    {"dw 5x5 s1 SAME b1 15x15 c80", conv_same(1, 15, 15, 80, 80, 5, 1, 80)},
    {"dw 5x5 s2 SAME b2 14x14 c240", conv_same(2, 14, 14, 240, 240, 5, 2, 240)},
    {"dw 7x7 s2 SAME b1 19x17 c80", conv_same(1, 19, 17, 80, 80, 7, 2, 80)},
    {"dw 3x3 s1 valid b2 19x17 c48", conv_pad(2, 19, 17, 48, 48, 3, 3, 1, 1, 0, 0, 0, 0, 48)},
    {"dw 3x3 s1 SAME b2 20x20 c96", conv_same(2, 20, 20, 96, 96, 3, 1, 96)},
    {"stem 3x3 s2 SAME b2 57x55 3->32", conv_same(2, 57, 55, 3, 32, 3, 2, 1)},
    {"3x3 s1 pad1 b1 17x15 40->70", conv_pad(1, 17, 15, 40, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
    {"7x7 s2 pad3 b3 33x31 3->20", conv_pad(3, 33, 31, 3, 20, 7, 7, 2, 2, 3, 3, 3, 3, 1)},
    {"5x5 s1 asym pad b2 13x17 6->17", conv_pad(2, 13, 17, 6, 17, 5, 5, 1, 1, 1, 3, 2, 0, 1)},
    {"3x3 s2 SAME b2 15x13 24->40", conv_same(2, 15, 13, 24, 40, 3, 2, 1)},
    {"5x5 s2 SAME b1 11x11 20->8", conv_same(1, 11, 11, 20, 8, 5, 2, 1)},
    {"3x3 s2 SAME b1 9x9 15->16 (narrow, odd)", conv_same(1, 9, 9, 15, 16, 3, 2, 1)},
    {"1x1 s2 b2 15x13 24->40", conv_pad(2, 15, 13, 24, 40, 1, 1, 2, 2, 0, 0, 0, 0, 1)},
    {"3x3 s1 pad1 b2 8x8 128->128", conv_pad(2, 8, 8, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
};

TEST(ConvBackward, FastMatchesPlain) {
  uint32_t seed = 5000;
  for (const ConvCase& c : kLargeCases) {
    SCOPED_TRACE(c.name);
    const ConvShape& s = c.s;
    const auto x = random_vec(x_size(s), seed += 10), w = random_vec(w_size(s), seed + 1);
    const auto dy = random_vec(y_size(s), seed + 2);
    auto dx = poisoned(x_size(s)), dx_plain = poisoned(x_size(s));
    auto dw = poisoned(w_size(s)), dw_plain = poisoned(w_size(s));
    cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data());
    cpu::ref::conv2d_backward_data(s, dy.data(), w.data(), dx_plain.data());
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw.data());
    cpu::ref::conv2d_backward_filter(s, x.data(), dy.data(), dw_plain.data());
    EXPECT_LT(rel_err(dx, dx_plain), 1e-5) << "dx";
    EXPECT_LT(rel_err(dw, dw_plain), 1e-5) << "dw";
  }
}

// Runs f with 1, then 2 OpenMP threads (then 1 again: run to run) and expects identical bits.
template <class F>
void expect_same_bits_for_thread_counts(const F& f) {
  const int keep = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = f();
  omp_set_num_threads(2);
  const std::vector<float> two = f();
  omp_set_num_threads(3);
  const std::vector<float> three = f();
  omp_set_num_threads(keep);
  const std::vector<float> again = f();
  EXPECT_TRUE(bitwise_equal(one, two)) << "1 vs 2 threads";
  EXPECT_TRUE(bitwise_equal(one, three)) << "1 vs 3 threads";
  EXPECT_TRUE(bitwise_equal(one, again)) << "run to run";
}

TEST(ConvBackward, BitwiseIdenticalAcrossThreadCounts) {
  uint32_t seed = 9000;
  for (const ConvCase& c : kLargeCases) {
    SCOPED_TRACE(c.name);
    const ConvShape& s = c.s;
    const auto x = random_vec(x_size(s), seed += 10), w = random_vec(w_size(s), seed + 1);
    const auto dy = random_vec(y_size(s), seed + 2);
    expect_same_bits_for_thread_counts([&] {
      auto dx = poisoned(x_size(s));
      cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data());
      return dx;
    });
    expect_same_bits_for_thread_counts([&] {
      auto dw = poisoned(w_size(s));
      cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw.data());
      return dw;
    });
  }
}

// ---------------------------------------------------------------------------------------------
// bias_act's gradient: the same chain without the convolution

TEST(BiasActBackward, FiniteDifferences) {
  const int64_t rows = 3 * 7 * 5;
  const int c = 13;
  uint32_t seed = 300;
  for (Act act : {Act::none, Act::relu, Act::relu6}) {
    SCOPED_TRACE("act=" + std::to_string(int(act)));
    const auto x = random_vec(rows * c, seed += 10, 8.f), bias = random_vec(c, seed + 1);
    const auto res = random_vec(rows * c, seed + 2), r = random_vec(rows * c, seed + 3);
    auto y = poisoned(rows * c);
    cpu::bias_act(rows, c, x.data(), bias.data(), res.data(), act, y.data());
    auto dz = r;
    cpu::act_backward(rows * c, act, y.data(), dz.data());
    auto db = poisoned(c);
    cpu::bias_grad(rows, c, dz.data(), db.data());
    const auto xd = gradcheck::to_double(x), bd = gradcheck::to_double(bias);
    const auto rd = gradcheck::to_double(res);
    auto loss = [&](const double* xv, const double* bv, const double* rv) {
      std::vector<double> yd(rows * c);
      gradcheck::bias_act<double>(rows, c, xv, bv, rv, act, yd.data());
      return gradcheck::dot_loss(yd, r);
    };
    gradcheck::check("dx", x, dz, [&](const std::vector<double>& v) {
      return loss(v.data(), bd.data(), rd.data());
    });
    gradcheck::check("db", bias, db, [&](const std::vector<double>& v) {
      return loss(xd.data(), v.data(), rd.data());
    });
    gradcheck::check("dresidual", res, dz, [&](const std::vector<double>& v) {
      return loss(xd.data(), bd.data(), v.data());
    });
  }
}

// ---------------------------------------------------------------------------------------------
// bias_grad, act_backward, add_inplace

TEST(BiasGrad, MatchesDoubleSumAndIsDeterministic) {
  struct Case {
    int64_t rows;
    int c;
  };
  // One row; a few rows; several row splits and channel blocks with tails.
  for (const Case& k : {Case{1, 5}, Case{3, 7}, Case{5000, 300}, Case{12544, 32}}) {
    SCOPED_TRACE(std::to_string(k.rows) + " x " + std::to_string(k.c));
    const auto dy = random_vec(k.rows * k.c, uint32_t(k.rows + k.c));
    std::vector<float> want(k.c);
    for (int j = 0; j < k.c; ++j) {
      double sum = 0;
      for (int64_t r = 0; r < k.rows; ++r) sum += dy[r * k.c + j];
      want[j] = float(sum);
    }
    auto db = poisoned(k.c);
    cpu::bias_grad(k.rows, k.c, dy.data(), db.data());
    // Absolute: a sum of n terms of [-1, 1] cancels towards 0, so relative error per element is
    // meaningless; float rounding is about sqrt(n) * 6e-8 * sqrt(n) at worst.
    for (int j = 0; j < k.c; ++j)
      EXPECT_NEAR(db[j], want[j], 1e-7 * double(k.rows) + 1e-6) << "channel " << j;
    expect_same_bits_for_thread_counts([&] {
      auto out = poisoned(k.c);
      cpu::bias_grad(k.rows, k.c, dy.data(), out.data());
      return out;
    });
  }
}

TEST(ActBackward, MasksFromTheSavedOutput) {
  const std::vector<float> y = {0.f, 0.25f, 5.75f, 6.f, 3.f, 0.f, 1e-30f, 6.f};
  const std::vector<float> dy = {1.f, -2.f, 3.f, -4.f, 5.f, -6.f, 7.f, 8.f};
  auto run = [&](Act act) {
    auto g = dy;
    cpu::act_backward(int64_t(g.size()), act, y.data(), g.data());
    return g;
  };
  EXPECT_EQ(run(Act::none), dy);
  // relu passes where the output is positive (6 included: relu does not clamp).
  EXPECT_EQ(run(Act::relu), (std::vector<float>{0.f, -2.f, 3.f, -4.f, 5.f, 0.f, 7.f, 8.f}));
  // relu6 passes strictly between 0 and 6: at the clamp the output no longer moves.
  EXPECT_EQ(run(Act::relu6), (std::vector<float>{0.f, -2.f, 3.f, 0.f, 5.f, 0.f, 7.f, 0.f}));
}

TEST(ActBackward, LargeArrayMatchesElementwiseRule) {
  const int64_t count = 200003;  // above the parallel threshold, odd
  auto y = random_vec(count, 41, 8.f);
  for (float& v : y) v = std::min(6.f, std::max(0.f, v));  // relu6 outputs: many exact 0 and 6
  const auto dy = random_vec(count, 42);
  auto g = dy;
  cpu::act_backward(count, Act::relu6, y.data(), g.data());
  int64_t passed = 0, bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float want = (y[i] > 0.f && y[i] < 6.f) ? dy[i] : 0.f;
    bad += g[i] != want;
    passed += want != 0.f;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_GT(passed, count / 4);
  EXPECT_LT(passed, count * 3 / 4);
}

TEST(AddInplace, AddsElementwise) {
  for (int64_t count : {int64_t(1), int64_t(37), int64_t(100001)}) {
    const auto x = random_vec(count, 51), y0 = random_vec(count, 52);
    auto y = y0;
    cpu::add_inplace(count, x.data(), y.data());
    int64_t bad = 0;
    for (int64_t i = 0; i < count; ++i) bad += y[i] != y0[i] + x[i];
    EXPECT_EQ(bad, 0) << count;
  }
}

// ---------------------------------------------------------------------------------------------
// pools

TEST(GlobalAvgPoolBackward, FiniteDifferencesAndExact) {
  struct Case {
    int n, hw, c;
  };
  for (const Case& k : {Case{1, 35, 3}, Case{3, 49, 37}, Case{2, 81, 300}}) {
    SCOPED_TRACE(std::to_string(k.n) + " x " + std::to_string(k.hw) + " x " + std::to_string(k.c));
    const auto x = random_vec(size_t(k.n) * k.hw * k.c, 61), r = random_vec(size_t(k.n) * k.c, 62);
    auto dx = poisoned(x.size());
    cpu::global_avg_pool_backward(k.n, k.hw, k.c, r.data(), dx.data());
    gradcheck::check("dx", x, dx, [&](const std::vector<double>& v) {
      std::vector<double> y(size_t(k.n) * k.c);
      gradcheck::global_avg_pool<double>(k.n, k.hw, k.c, v.data(), y.data());
      return gradcheck::dot_loss(y, r);
    });
    int64_t bad = 0;
    for (int b = 0; b < k.n; ++b)
      for (int p = 0; p < k.hw; ++p)
        for (int j = 0; j < k.c; ++j)
          bad += dx[(int64_t(b) * k.hw + p) * k.c + j] != r[int64_t(b) * k.c + j] / float(k.hw);
    EXPECT_EQ(bad, 0);
  }
}

struct PoolCase {
  const char* name;
  PoolShape s;
};

// Random inputs have no ties, so the loss is differentiable away from the rare near-ties the
// checker counts as kinks. Padded windows: taps outside the image must neither win nor receive.
TEST(MaxPoolBackward, FiniteDifferences) {
  const PoolCase cases[] = {
      {"3x3 s2 SAME b1 9x9 c3 (asymmetric pad)", pool_same(1, 9, 9, 3, 3, 2)},
      {"3x3 s2 SAME b3 8x6 c5 (pad after only)", pool_same(3, 8, 6, 5, 3, 2)},
      {"3x3 s1 pad1 b1 7x5 c4 (overlapping)", pool_pad(1, 7, 5, 4, 3, 1, 1, 1, 1, 1)},
      {"3x3 s2 pad1 b3 7x5 c70 (ResNet-like)", pool_pad(3, 7, 5, 70, 3, 2, 1, 1, 1, 1)},
      {"2x2 s2 b1 6x4 c2", pool_pad(1, 6, 4, 2, 2, 2, 0, 0, 0, 0)},
      {"3x3 s3 valid b1 7x7 c2 (unread edge)", pool_pad(1, 7, 7, 2, 3, 3, 0, 0, 0, 0)},
  };
  uint32_t seed = 700;
  for (const PoolCase& c : cases) {
    SCOPED_TRACE(c.name);
    const PoolShape& s = c.s;
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.c,
                 ys = size_t(s.n) * s.out_h * s.out_w * s.c;
    const auto x = random_vec(xs, seed += 10, 4.f), r = random_vec(ys, seed + 1);
    auto y = poisoned(ys), dx = poisoned(xs);
    cpu::max_pool2d(s, x.data(), y.data());
    cpu::max_pool2d_backward(s, x.data(), y.data(), r.data(), dx.data());
    gradcheck::check("dx", x, dx, [&](const std::vector<double>& v) {
      std::vector<double> yd(ys);
      gradcheck::max_pool2d<double>(s, v.data(), yd.data());
      return gradcheck::dot_loss(yd, r);
    });
    expect_same_bits_for_thread_counts([&] {
      auto out = poisoned(xs);
      cpu::max_pool2d_backward(s, x.data(), y.data(), r.data(), out.data());
      return out;
    });
  }
}

// Ties: the first maximum in (ky, kx) order gets the whole gradient, per channel.
TEST(MaxPoolBackward, TiesGoToTheFirstMaximum) {
  // 3x3 image, 2 channels, 2x2 windows, stride 1. Channel 0:
  //   5 5 1      window (0,0) {5,5,5,2} -> (0,0)    window (0,1) {5,1,2,5} -> (0,1)
  //   5 2 5      window (1,0) {5,2,0,5} -> (1,0)    window (1,1) {2,5,5,5} -> (1,2)
  //   0 5 5
  // Channel 1 is constant: every window's first tap, (oy, ox) itself, gets its gradient.
  const PoolShape s = pool_pad(1, 3, 3, 2, 2, 1, 0, 0, 0, 0);
  const float ch0[9] = {5, 5, 1, 5, 2, 5, 0, 5, 5};
  std::vector<float> x(18);
  for (int p = 0; p < 9; ++p) {
    x[p * 2] = ch0[p];
    x[p * 2 + 1] = 3.f;
  }
  const std::vector<float> dy = {1, 10, 2, 20, 3, 30, 4, 40};  // [2][2][2]
  auto y = poisoned(8), dx = poisoned(18);
  cpu::max_pool2d(s, x.data(), y.data());
  cpu::max_pool2d_backward(s, x.data(), y.data(), dy.data(), dx.data());
  const std::vector<float> want = {1, 10, 2, 20, 0, 0,  //
                                   3, 30, 0, 40, 4, 0,  //
                                   0, 0,  0, 0,  0, 0};
  EXPECT_EQ(dx, want);
}

// Padded windows with all inputs equal and negative: padding does not count as a value, and each
// window's first in-bounds tap gets the gradient. 3x3 windows, stride 2, pad 1 on a 5x5 image:
// output row/column o starts at input 2*o - 1, so its first in-bounds tap is input 0, 1 or 3.
TEST(MaxPoolBackward, PaddedWindowsOfEqualValues) {
  const PoolShape s = pool_pad(1, 5, 5, 1, 3, 2, 1, 1, 1, 1);
  ASSERT_EQ(s.out_h, 3);
  ASSERT_EQ(s.out_w, 3);
  const std::vector<float> x(25, -3.f);
  std::vector<float> dy(9);
  for (int i = 0; i < 9; ++i) dy[i] = float(i + 1);
  auto y = poisoned(9), dx = poisoned(25);
  cpu::max_pool2d(s, x.data(), y.data());
  cpu::max_pool2d_backward(s, x.data(), y.data(), dy.data(), dx.data());
  std::vector<float> want(25, 0.f);
  const int first[3] = {0, 1, 3};
  for (int oy = 0; oy < 3; ++oy)
    for (int ox = 0; ox < 3; ++ox) want[first[oy] * 5 + first[ox]] = dy[oy * 3 + ox];
  EXPECT_EQ(dx, want);
}

}  // namespace
}  // namespace graft
