// The CUDA backward ops (graft::cuda) against their CPU twins (graft::cpu) on fresh random inputs
// of awkward sizes: batch 1, odd sizes, 3 channels, stride 2, asymmetric (TF SAME) padding, 144 and
// 240 channels, depthwise. Every output is poisoned with NaN first, so an unwritten element fails
// the check, and every op runs twice into separately poisoned buffers, which must agree bit for bit
// (the ops promise fixed-order reductions, no atomics).
//
// Tolerances: the conv gradients and bias_grad sum in a different order from the CPU twin (split
// reductions, FMA chains), so they are compared at a relative L2 error of 1e-5 (fp32 reordering
// over sums of up to ~10^5 terms stays well below it); act_backward, global_avg_pool_backward,
// max_pool2d_backward and add_inplace do the twin's arithmetic in the twin's order and must match
// exactly.
//
// Without a GPU every test here skips with the reason (GRAFT_REQUIRE_GPU=1 makes that a failure);
// the argument-validation tests need no GPU and always run.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/ops.h"
#include "tests/conv_shapes.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace graft {
namespace {

using test::bitwise_equal;
using test::conv_pad;
using test::conv_same;
using test::depthwise;
using test::DeviceBuffer;
using test::pointwise;
using test::pool_pad;
using test::random_floats;
using test::w_size;
using test::x_size;
using test::y_size;

constexpr double kTol = 1e-5;

// Each test gets its own stream (test::CudaStreamTest), created after the device probe.
using CudaBackward = test::CudaStreamTest;

std::vector<ConvShape> pointwise_shapes() {
  return test::for_this_run({
      pointwise(1, 40, 25, 53, 77),    // nothing a multiple of 4 or of a tile
      pointwise(1, 40, 25, 52, 76),    // float4 path, ragged tiles
      pointwise(3, 7, 11, 3, 5),       // 3 channels, batch 3
      pointwise(1, 13, 9, 1, 1),       // K = N = 1
      pointwise(1, 7, 3, 8, 4),        // fewer pixels than one k-step (P = 21)
      pointwise(2, 56, 56, 24, 144),   // expand, 6272 pixels: split-K with a ragged chunk
      pointwise(2, 28, 28, 240, 40),   // project from 240
      pointwise(1, 112, 112, 32, 16),  // the largest K of Lite0 at batch 1
      pointwise(3, 7, 7, 320, 1280),   // head
      pointwise(2, 9, 9, 70, 65),      // just past the narrow rule: v1's gemm tiles
      pointwise(2, 9, 9, 130, 17),     // narrow by out_c only: v2 tiles over in_c
  });
}

std::vector<ConvShape> depthwise_shapes() {
  return test::for_this_run({
      depthwise(1, 17, 13, 144, 3, 1),  // 144 channels, odd sizes
      depthwise(2, 15, 15, 240, 3, 2),  // stride 2 on odd input: asymmetric SAME padding
      depthwise(1, 28, 28, 144, 5, 2),  // 5x5 s2, even input: pad 1 before, 2 after
      depthwise(2, 14, 14, 40, 5, 1),   // 5x5 s1
      depthwise(1, 9, 11, 37, 3, 2),    // c % 4 != 0: the scalar versions
      depthwise(1, 10, 10, 16, 7, 1),   // 7x7: dw v2 falls back to v1
      conv_pad(1, 8, 9, 12, 12, 3, 3, 2, 2, 0, 1, 1, 0, 12),  // explicit asymmetric padding
  });
}

// Groups-1 KxK convs and the shapes only the generic kernels take.
std::vector<ConvShape> general_shapes() {
  return test::for_this_run({
      conv_same(2, 33, 31, 3, 32, 3, 2),                   // the stem: 3 channels, s2, odd input
      conv_same(1, 12, 12, 16, 24, 3, 1),                  // ResNet-like 3x3 s1
      conv_pad(1, 11, 10, 8, 12, 5, 5, 2, 2, 1, 2, 2, 1),  // 5x5 s2 explicit asymmetric padding
      conv_pad(2, 9, 9, 6, 10, 1, 1, 2, 2, 0, 0, 0, 0),    // strided 1x1 (ResNet's downsample)
      conv_pad(1, 10, 11, 5, 7, 2, 2, 3, 3, 0, 0, 0, 0),   // stride 3 > kernel 2: unread pixels
      conv_same(1, 10, 10, 12, 18, 3, 1, 3),               // grouped (3 groups)
      conv_same(1, 9, 9, 8, 16, 3, 2, 8),                  // depthwise with a multiplier of 2
      conv_same(1, 70, 70, 3, 8, 3, 1),                    // many pixels per filter element
  });
}

// ---------------------------------------------------------------------------------------------
// Conv gradients against the CPU twin, plus bitwise repeatability.

using DataFn = void (*)(const ConvShape&, const float*, const float*, float*, cudaStream_t);
using FilterFn = void (*)(const ConvShape&, const float*, const float*, float*, void*, size_t,
                          cudaStream_t);
using FilterWsFn = size_t (*)(const ConvShape&);

void check_data(DataFn fn, const char* name, const ConvShape& s, cudaStream_t stream,
                uint32_t seed) {
  std::mt19937 rng(seed);
  const auto dy = random_floats(y_size(s), rng);
  const auto w = random_floats(w_size(s), rng);
  std::vector<float> want(x_size(s));
  cpu::conv2d_backward_data(s, dy.data(), w.data(), want.data());
  DeviceBuffer<float> ddy(dy), dw(w), dx1(x_size(s)), dx2(x_size(s));
  dx1.poison();
  dx2.poison();
  fn(s, ddy.get(), dw.get(), dx1.get(), stream);
  fn(s, ddy.get(), dw.get(), dx2.get(), stream);
  const auto got = dx1.download();
  const std::string what = std::string(name) + " " + conv_shape_str(s);
  GRAFT_EXPECT_CLOSE(got, want, kTol, what);
  EXPECT_TRUE(bitwise_equal(got, dx2.download())) << what << ": two runs differ";
}

// ws_fn null: the path needs no workspace.
void check_filter(FilterFn fn, FilterWsFn ws_fn, const char* name, const ConvShape& s,
                  cudaStream_t stream, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto x = random_floats(x_size(s), rng);
  const auto dy = random_floats(y_size(s), rng);
  std::vector<float> want(w_size(s));
  cpu::conv2d_backward_filter(s, x.data(), dy.data(), want.data());
  const size_t ws_bytes = ws_fn ? ws_fn(s) : 0;
  DeviceBuffer<float> dx(x), ddy(dy), dw1(w_size(s)), dw2(w_size(s));
  DeviceBuffer<float> ws(ws_bytes / sizeof(float));
  dw1.poison();
  dw2.poison();
  ws.poison();  // partials must all be written before they are read
  fn(s, dx.get(), ddy.get(), dw1.get(), ws.get(), ws_bytes, stream);
  fn(s, dx.get(), ddy.get(), dw2.get(), ws.get(), ws_bytes, stream);
  const auto got = dw1.download();
  const std::string what = std::string(name) + " " + conv_shape_str(s) + " workspace " +
                           std::to_string(ws_bytes) + " bytes";
  GRAFT_EXPECT_CLOSE(got, want, kTol, what);
  EXPECT_TRUE(bitwise_equal(got, dw2.download())) << what << ": two runs differ";
}

// Adapters for the paths that take no workspace.
void dw_filter_v1(const ConvShape& s, const float* x, const float* dy, float* dw, void*, size_t,
                  cudaStream_t stream) {
  cuda::conv_bwd_filter_depthwise_v1(s, x, dy, dw, stream);
}

TEST_F(CudaBackward, PointwiseMatchesCpu) {
  uint32_t seed = 100;
  for (const ConvShape& s : pointwise_shapes()) {
    check_data(cuda::conv_bwd_data_pointwise, "conv_bwd_data_pointwise", s, stream_, seed++);
    check_filter(cuda::conv_bwd_filter_pointwise, cuda::conv_bwd_filter_pointwise_workspace,
                 "conv_bwd_filter_pointwise", s, stream_, seed++);
    // Both versions on every shape (the dispatcher picks one by width).
    check_filter(cuda::conv_bwd_filter_pointwise_v1, cuda::conv_bwd_filter_pointwise_v1_workspace,
                 "conv_bwd_filter_pointwise_v1", s, stream_, seed++);
    check_filter(cuda::conv_bwd_filter_pointwise_v2, cuda::conv_bwd_filter_pointwise_v2_workspace,
                 "conv_bwd_filter_pointwise_v2", s, stream_, seed++);
  }
}

TEST_F(CudaBackward, DepthwiseMatchesCpu) {
  uint32_t seed = 200;
  for (const ConvShape& s : depthwise_shapes()) {
    check_data(cuda::conv_bwd_data_depthwise_v1, "conv_bwd_data_depthwise_v1", s, stream_, seed++);
    check_data(cuda::conv_bwd_data_depthwise_v2, "conv_bwd_data_depthwise_v2", s, stream_, seed++);
    check_filter(dw_filter_v1, nullptr, "conv_bwd_filter_depthwise_v1", s, stream_, seed++);
    check_filter(cuda::conv_bwd_filter_depthwise_v2, cuda::conv_bwd_filter_depthwise_v2_workspace,
                 "conv_bwd_filter_depthwise_v2", s, stream_, seed++);
  }
}

TEST_F(CudaBackward, ImplicitGemmFilterMatchesCpu) {
  uint32_t seed = 300;
  for (const ConvShape& s : general_shapes()) {
    if (s.groups != 1) continue;
    check_filter(cuda::conv_bwd_filter_igemm, cuda::conv_bwd_filter_igemm_workspace,
                 "conv_bwd_filter_igemm", s, stream_, seed++);
  }
}

// The plain kernels take every shape: check them on all of them.
TEST_F(CudaBackward, GenericMatchesCpu) {
  uint32_t seed = 400;
  std::vector<ConvShape> all = general_shapes();
  for (const auto& s : pointwise_shapes()) all.push_back(s);
  for (const auto& s : depthwise_shapes()) all.push_back(s);
  for (const ConvShape& s : all) {
    if (x_size(s) * w_size(s) > (size_t(1) << 31)) continue;  // the 1x1 head: too slow here
    check_data(cuda::conv_bwd_data_generic, "conv_bwd_data_generic", s, stream_, seed++);
    check_filter(cuda::conv_bwd_filter_generic, cuda::conv_bwd_filter_generic_workspace,
                 "conv_bwd_filter_generic", s, stream_, seed++);
  }
}

// What the engine calls: the dispatch over every shape, with the dispatcher's workspace size.
TEST_F(CudaBackward, DispatchMatchesCpu) {
  uint32_t seed = 500;
  std::vector<ConvShape> all = general_shapes();
  for (const auto& s : pointwise_shapes()) all.push_back(s);
  for (const auto& s : depthwise_shapes()) all.push_back(s);
  for (const ConvShape& s : all) {
    check_data(cuda::conv2d_backward_data, "conv2d_backward_data", s, stream_, seed++);
    check_filter(cuda::conv2d_backward_filter, cuda::conv2d_backward_filter_workspace,
                 "conv2d_backward_filter", s, stream_, seed++);
  }
}

// Misaligned pointers (one float off 16 bytes) take the scalar fallbacks.
TEST_F(CudaBackward, MisalignedMatchesCpu) {
  for (const ConvShape& s : {pointwise(2, 9, 7, 16, 24), depthwise(1, 12, 12, 144, 3, 2)}) {
    std::mt19937 rng(600);
    const auto x = random_floats(x_size(s), rng);
    const auto dy = random_floats(y_size(s), rng);
    const auto w = random_floats(w_size(s), rng);
    std::vector<float> want_dx(x_size(s)), want_dw(w_size(s));
    cpu::conv2d_backward_data(s, dy.data(), w.data(), want_dx.data());
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), want_dw.data());
    const size_t ws_bytes = cuda::conv2d_backward_filter_workspace(s);
    DeviceBuffer<float> dx(x, 1), ddy(dy, 1), dw(w, 1), gx(x_size(s), 1), gw(w_size(s), 1),
        ws(ws_bytes / sizeof(float) + 1, 1);
    gx.poison();
    gw.poison();
    cuda::conv2d_backward_data(s, ddy.get(), dw.get(), gx.get(), stream_);
    cuda::conv2d_backward_filter(s, dx.get(), ddy.get(), gw.get(), ws.get(), ws_bytes, stream_);
    GRAFT_EXPECT_CLOSE(gx.download(), want_dx, kTol, "misaligned dx " + conv_shape_str(s));
    GRAFT_EXPECT_CLOSE(gw.download(), want_dw, kTol, "misaligned dw " + conv_shape_str(s));
  }
}

// ---------------------------------------------------------------------------------------------
// The small ops.

TEST_F(CudaBackward, BiasGradMatchesCpu) {
  std::mt19937 rng(700);
  struct C {
    int64_t rows;
    int c;
  };
  for (const C t : {C{1, 1}, C{7, 3}, C{1000, 37}, C{6272, 144}, C{100352, 32}, C{12544, 1280},
                    C{0, 5}, C{300, 240}}) {
    if (test::skip_in_small_run(size_t(t.rows) * t.c)) continue;
    const auto dy = random_floats(size_t(t.rows) * t.c, rng);
    std::vector<float> want(size_t(t.c));
    cpu::bias_grad(t.rows, t.c, dy.data(), want.data());
    const size_t ws_bytes = cuda::bias_grad_workspace(t.rows, t.c);
    DeviceBuffer<float> ddy(dy), db1(want.size()), db2(want.size()), db3(want.size()),
        ws(ws_bytes / sizeof(float));
    db1.poison();
    db2.poison();
    db3.poison();
    ws.poison();
    cuda::bias_grad(t.rows, t.c, ddy.get(), db1.get(), ws.get(), ws_bytes, stream_);
    cuda::bias_grad(t.rows, t.c, ddy.get(), db2.get(), ws.get(), ws_bytes, stream_);
    cuda::bias_grad_v1(t.rows, t.c, ddy.get(), db3.get(), stream_);
    const std::string what =
        "bias_grad rows=" + std::to_string(t.rows) + " c=" + std::to_string(t.c);
    const auto got = db1.download();
    GRAFT_EXPECT_CLOSE(got, want, kTol, what);
    GRAFT_EXPECT_CLOSE(db3.download(), want, kTol, what + " v1");
    EXPECT_TRUE(bitwise_equal(got, db2.download())) << what << ": two runs differ";
  }
}

TEST_F(CudaBackward, ActBackwardExact) {
  std::mt19937 rng(800);
  for (const Act act : {Act::none, Act::relu, Act::relu6}) {
    for (const int64_t count : {int64_t(1), int64_t(7), int64_t(4096), int64_t(100003)}) {
      for (const size_t off : {size_t(0), size_t(1)}) {
        auto y = random_floats(size_t(count), rng, -2.f, 8.f);
        for (size_t i = 0; i < y.size(); i += 5) y[i] = (i / 5) % 2 ? 6.f : 0.f;  // the edges
        auto dy = random_floats(size_t(count), rng);
        DeviceBuffer<float> gy(y, off), gdy(dy, off);
        cpu::act_backward(count, act, y.data(), dy.data());
        cuda::act_backward(count, act, gy.get(), gdy.get(), stream_);
        EXPECT_TRUE(bitwise_equal(gdy.download(), dy))
            << "act_backward act=" << int(act) << " count=" << count << " offset=" << off;
      }
    }
  }
}

TEST_F(CudaBackward, AddInplaceExact) {
  std::mt19937 rng(900);
  for (const int64_t count : {int64_t(1), int64_t(5), int64_t(65536), int64_t(100003)}) {
    for (const size_t off : {size_t(0), size_t(1)}) {
      const auto x = random_floats(size_t(count), rng);
      auto y = random_floats(size_t(count), rng);
      DeviceBuffer<float> gx(x, off), gy(y, off);
      cpu::add_inplace(count, x.data(), y.data());
      cuda::add_inplace(count, gx.get(), gy.get(), stream_);
      EXPECT_TRUE(bitwise_equal(gy.download(), y))
          << "add_inplace count=" << count << " offset=" << off;
    }
  }
}

TEST_F(CudaBackward, GlobalAvgPoolBackwardExact) {
  std::mt19937 rng(1000);
  struct G {
    int n, hw, c;
  };
  for (const G t : {G{1, 49, 1280}, G{3, 49, 37}, G{2, 1, 4}, G{5, 13, 3}}) {
    const auto dy = random_floats(size_t(t.n) * t.c, rng);
    std::vector<float> want(size_t(t.n) * t.hw * t.c);
    cpu::global_avg_pool_backward(t.n, t.hw, t.c, dy.data(), want.data());
    DeviceBuffer<float> gdy(dy), gdx(want.size());
    gdx.poison();
    cuda::global_avg_pool_backward(t.n, t.hw, t.c, gdy.get(), gdx.get(), stream_);
    EXPECT_TRUE(bitwise_equal(gdx.download(), want))
        << "global_avg_pool_backward n=" << t.n << " hw=" << t.hw << " c=" << t.c;
  }
}

TEST_F(CudaBackward, MaxPoolBackwardExact) {
  std::mt19937 rng(1100);
  for (const PoolShape& s :
       {pool_pad(2, 15, 15, 64, 3, 2, 1, 1, 1, 1), pool_pad(1, 8, 8, 3, 2, 2, 0, 0, 0, 0),
        pool_pad(1, 9, 7, 5, 3, 1, 1, 1, 1, 1), pool_pad(3, 11, 10, 37, 3, 2, 0, 1, 0, 1)}) {
    // Coarse values so windows hold ties: the first maximum (ky, then kx) must get the gradient.
    auto x = random_floats(size_t(s.n) * s.in_h * s.in_w * s.c, rng);
    for (float& v : x) v = std::round(v * 3.f);
    const size_t ys = size_t(s.n) * s.out_h * s.out_w * s.c;
    std::vector<float> y(ys), want(x.size());
    cpu::max_pool2d(s, x.data(), y.data());
    const auto dy = random_floats(ys, rng);
    cpu::max_pool2d_backward(s, x.data(), y.data(), dy.data(), want.data());
    DeviceBuffer<float> gx(x), gy(y), gdy(dy), gdx(x.size());
    gdx.poison();
    cuda::max_pool2d_backward(s, gx.get(), gy.get(), gdy.get(), gdx.get(), stream_);
    EXPECT_TRUE(bitwise_equal(gdx.download(), want))
        << "max_pool2d_backward n=" << s.n << " in=" << s.in_h << "x" << s.in_w << "x" << s.c
        << " k=" << s.k_h << " s=" << s.stride_h;
  }
}

// ---------------------------------------------------------------------------------------------
// Argument validation happens before any CUDA call, so these run without a GPU too.

TEST(CudaBackwardValidation, RejectsBadShapesAndSmallWorkspaces) {
  ConvShape s = conv_same(1, 8, 8, 6, 9, 3, 1, 2);  // 9 outputs not divisible by 2 groups
  EXPECT_THROW(cuda::conv2d_backward_data(s, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::conv2d_backward_filter(s, nullptr, nullptr, nullptr, nullptr, 0, nullptr),
               std::invalid_argument);
  // Not the path's shape.
  EXPECT_THROW(cuda::conv_bwd_data_pointwise(conv_same(1, 8, 8, 6, 8, 3, 1), nullptr, nullptr,
                                             nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::conv_bwd_data_depthwise_v2(conv_same(1, 8, 8, 6, 8, 3, 1), nullptr, nullptr,
                                                nullptr, nullptr),
               std::invalid_argument);
  // A reduction long enough to be split needs its workspace; one byte short is refused.
  for (const ConvShape& t :
       {pointwise(2, 56, 56, 24, 144), depthwise(2, 56, 56, 144, 3, 1),
        conv_same(2, 64, 64, 3, 32, 3, 2), conv_same(1, 40, 40, 8, 8, 3, 1, 2)}) {
    const size_t need = cuda::conv2d_backward_filter_workspace(t);
    EXPECT_GT(need, 0u) << conv_shape_str(t);
    EXPECT_THROW(cuda::conv2d_backward_filter(t, nullptr, nullptr, nullptr, nullptr, 0, nullptr),
                 std::invalid_argument)
        << conv_shape_str(t);
    try {
      cuda::conv2d_backward_filter(t, nullptr, nullptr, nullptr, reinterpret_cast<void*>(256),
                                   need - 1, nullptr);
      ADD_FAILURE() << "no throw: " << conv_shape_str(t);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(need)), std::string::npos) << e.what();
    }
  }
  const size_t need = cuda::bias_grad_workspace(100000, 32);
  EXPECT_GT(need, 0u);
  EXPECT_THROW(cuda::bias_grad(100000, 32, nullptr, nullptr, nullptr, 0, nullptr),
               std::invalid_argument);
  EXPECT_EQ(cuda::bias_grad_workspace(10, 32), 0u);  // one chunk: written straight to db
  EXPECT_THROW(cuda::bias_grad(-1, 4, nullptr, nullptr, nullptr, 0, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::act_backward(-1, Act::relu, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::add_inplace(-1, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::global_avg_pool_backward(1, 0, 4, nullptr, nullptr, nullptr),
               std::invalid_argument);
  PoolShape p = pool_pad(1, 8, 8, 4, 2, 2, 0, 0, 0, 0);
  p.stride_h = 0;
  EXPECT_THROW(cuda::max_pool2d_backward(p, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
}

// Workspace sizes depend on the shape only and cover what the dispatcher's path needs.
TEST(CudaBackwardValidation, WorkspaceSizesAreShapeOnly) {
  const ConvShape s = pointwise(32, 112, 112, 32, 16);
  EXPECT_EQ(cuda::conv2d_backward_filter_workspace(s),
            cuda::conv_bwd_filter_pointwise_workspace(s));
  const ConvShape d = depthwise(32, 112, 112, 96, 3, 2);
  EXPECT_EQ(cuda::conv2d_backward_filter_workspace(d),
            cuda::conv_bwd_filter_depthwise_v2_workspace(d));
  const ConvShape stem = conv_same(32, 224, 224, 3, 32, 3, 2);
  EXPECT_EQ(cuda::conv2d_backward_filter_workspace(stem),
            cuda::conv_bwd_filter_igemm_workspace(stem));
  EXPECT_EQ(cuda::conv_bwd_filter_path(stem), "igemm");
  EXPECT_EQ(cuda::conv_bwd_data_path(s), "pointwise");
  EXPECT_EQ(cuda::conv_bwd_filter_path(d), "depthwise");
  // Empty outputs need none.
  ConvShape e = s;
  e.n = 0;
  EXPECT_EQ(cuda::conv2d_backward_filter_workspace(e), 0u);
}

// Empty outputs: no pointer is touched when there is nothing to write.
TEST(CudaBackwardValidation, EmptyIsNoOp) {
  EXPECT_NO_THROW(cuda::act_backward(0, Act::relu, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::act_backward(100, Act::none, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::add_inplace(0, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::global_avg_pool_backward(0, 4, 4, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::bias_grad(5, 0, nullptr, nullptr, nullptr, 0, nullptr));
}

}  // namespace
}  // namespace graft
