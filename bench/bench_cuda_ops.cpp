// The CUDA kernels against the card's own ceilings and against cuDNN / cuBLAS (fp32, no TF32), and
// the convs also against cuDNN with TF32 allowed (what a framework user gets by default).
//
//   bench_cuda_ops [--json=PATH] [--quick]
//
// (a) ceilings measured here: device-to-device copy bandwidth (bytes read + written) and the fp32
//     FMA rate (8 independent FMA chains per thread, every SM busy);
// (b) every conv of EfficientNet-Lite0 at 224x224 (stem, per block expand / depthwise / project,
//     head), deduplicated with a count, and the head linear 1280 -> classes, at batch 32 and 256:
//     hand kernel vs cuDNN (NHWC fp32, fastest algorithm from cudnnFindConvolutionForwardAlgorithm,
//     workspace allocated before timing) or cuBLAS sgemm (pedantic math); beside it cuDNN with
//     TF32 allowed (CUDNN_DEFAULT_MATH: tensor-core algorithms join the same search, the fastest
//     wins), a different function (10-bit mantissa products), so timed and its error reported,
//     never checked; then each layer summed with its count over the whole network ("sum bN");
// (c) the backward of every one of those convs (dx and dw, the dispatcher's path with its
//     workspace) vs cuDNN's BackwardData / BackwardFilter (same settings, FMA and TF32), at batch
//     32 and 256, with the plain versions beside the fast ones at batch 32
//     (bench/worklog-cuda-backward.md), and the sums;
// (d) memory-bound kernels at chip-filling sizes, and the small backward ops at training sizes.
// Timing: CUDA events around each launch, warm-up first, median of >= 20 repetitions, inputs
// rotated among enough buffers to exceed twice the L2 so no repetition reads a warm cache.
// Self-checks: every hand conv / linear is compared with the vendor result where both compute the
// same function (relative L2 error printed; > 1e-4 marks the row and makes the exit code 1).
// The Google Benchmark runner is not used: each figure here needs its own byte/FLOP accounting
// and vendor pairing, so the loop is written out by hand with events.
// --json=PATH is rewritten after each section with the rows so far ("complete": false until the
// end), so a run stopped by a time limit keeps what it measured.
// Without a GPU it prints one line and exits 0.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#if GRAFT_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_backward_internal.cuh"
#include "kernels/cuda/conv_internal.cuh"
#include "kernels/cuda/pool_internal.cuh"
#include "kernels/cuda/probe.cuh"
#include "kernels/ops.h"

namespace {

using namespace graft;

// ---------------------------------------------------------------------------------------------
// Plumbing: device buffers, random fill, timing.

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t b) : bytes(b) {
    if (b) CUDA_CHECK(cudaMalloc(&p, b));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

void fill_random(DevBuf& b, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> h(b.bytes / sizeof(float));
  for (auto& v : h) v = d(rng);
  CUDA_CHECK(cudaMemcpy(b.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}

// Random data generated once on the host and copied into each rotating buffer (cheap enough: the
// largest input is ~1.2 GB at batch 256; a single host vector is reused).
void fill_all(std::vector<std::unique_ptr<DevBuf>>& bufs, uint32_t seed) {
  if (bufs.empty()) return;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> h(bufs[0]->bytes / sizeof(float));
  for (auto& v : h) v = d(rng);
  for (auto& b : bufs)
    CUDA_CHECK(cudaMemcpy(b->p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}

std::vector<float> download(const float* p, size_t n) {
  std::vector<float> h(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

int g_reps = 20;

// Median microseconds of `reps` timed calls of f(rep) after `warm` untimed ones.
double time_us(const std::function<void(int)>& f, int reps = -1, int warm = 3) {
  if (reps < 0) reps = g_reps;
  static Timer t;
  for (int i = 0; i < warm; ++i) f(i);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(t.a, nullptr));
    f(r);
    CUDA_CHECK(cudaEventRecord(t.b, nullptr));
    CUDA_CHECK(cudaEventSynchronize(t.b));
    CUDA_CHECK(cudaEventElapsedTime(&ms[r], t.a, t.b));
  }
  std::sort(ms.begin(), ms.end());
  return 1000.0 * ms[reps / 2];
}

// How many copies of a `bytes`-sized input make a rotation that outruns the L2 (at least 2).
int rotation(size_t bytes, size_t l2) {
  if (bytes == 0) return 1;
  size_t n = (2 * l2 + bytes - 1) / bytes;
  return int(std::clamp<size_t>(n, 2, 16));
}

// ---------------------------------------------------------------------------------------------
// Ceilings.

struct Ceilings {
  double copy_gbs = 0;    // GB/s, read + write
  double fma_gflops = 0;  // GFLOP/s, 2 per FMA
};

Ceilings measure_ceilings(int sms) {
  Ceilings c;
  const size_t bytes = size_t(1) << 30;  // 1 GiB each way
  DevBuf src(bytes), dst(bytes);
  CUDA_CHECK(cudaMemset(src.p, 1, bytes));
  const double us = time_us(
      [&](int) { CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice)); }, 20,
      2);
  c.copy_gbs = 2.0 * bytes / (us * 1e3);

  const int blocks = sms * 8, threads = 256, iters = 4096;
  DevBuf out(size_t(blocks) * threads * sizeof(float));
  const double fus =
      time_us([&](int) { cuda::fma_peak_probe(blocks, threads, iters, out.f(), nullptr); }, 20, 2);
  const double flops = 2.0 * 8 * 4 * double(iters) * blocks * threads;
  c.fma_gflops = flops / (fus * 1e3);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Result rows.

struct Row {
  std::string group, name, shape;
  int count = 1;
  double hand_us = NAN, vendor_us = NAN;
  double tf32_us = NAN;  // cuDNN with TF32 allowed; NaN where there is no such yardstick
  double flops = 0, bytes = 0;
  double check = NAN;     // relative error hand vs vendor, NaN when not compared
  double tf32_err = NAN;  // relative error of cuDNN's TF32 result against the hand kernel's
  std::string note;
};

std::vector<Row> g_rows;
bool g_check_failed = false;

// Rows are echoed to stderr as they are measured, so a run cut short still leaves its numbers.
void add_row(const Row& r) {
  std::fprintf(
      stderr, "  %-10s %-26s %-38s hand %10.1f us  vendor %10.1f us  tf32 %10.1f us  check %g\n",
      r.group.c_str(), r.name.c_str(), r.shape.c_str(), r.hand_us, r.vendor_us, r.tf32_us, r.check);
  g_rows.push_back(r);
}

// A network's layers summed, each layer times its count: one forward (or backward) pass of every
// conv. A column missing on any layer leaves the sum NaN rather than a sum of fewer layers.
struct LayerSum {
  double hand_us = 0, vendor_us = 0, tf32_us = 0, flops = 0, bytes = 0;
  int layers = 0;
  void add(const Row& r) {
    hand_us += r.count * r.hand_us;
    vendor_us += r.count * r.vendor_us;
    tf32_us += r.count * r.tf32_us;
    flops += r.count * r.flops;
    bytes += r.count * r.bytes;
    layers += r.count;
  }
  void add_row_as(int batch, const std::string& name) const {
    Row r;
    r.group = "sum b" + std::to_string(batch);
    r.name = name;
    r.shape = "n" + std::to_string(batch) + " EfficientNet-Lite0 224x224";
    r.hand_us = hand_us, r.vendor_us = vendor_us, r.tf32_us = tf32_us;
    r.flops = flops, r.bytes = bytes;
    r.note = std::to_string(layers) + " convs, each shape times its count";
    add_row(r);
  }
};

// ---------------------------------------------------------------------------------------------
// Convs.

struct ConvCfg {
  ConvShape s;
  Act act;
  bool residual;
  std::string name;
};

bool same(const ConvCfg& a, const ConvCfg& b) {
  return std::memcmp(&a.s, &b.s, sizeof(ConvShape)) == 0 && a.act == b.act &&
         a.residual == b.residual;
}

ConvShape conv_same_shape(int n, int h, int cin, int cout, int k, int stride, int groups) {
  ConvShape s{};
  s.n = n, s.in_h = h, s.in_w = h, s.in_c = cin, s.out_c = cout, s.k_h = k, s.k_w = k;
  s.stride_h = s.stride_w = stride, s.groups = groups;
  same_padding(h, k, stride, &s.out_h, &s.pad_top);
  same_padding(h, k, stride, &s.out_w, &s.pad_left);
  return s;
}

// EfficientNet-Lite0 at 224x224, from its block args (r repeats, k kernel, s stride, e expansion,
// i/o channels); stem and head fixed at 32 and 1280 channels; ReLU6; identity skip when stride 1
// and in == out.
std::vector<std::pair<ConvCfg, int>> efficientnet_lite0_convs(int n) {
  struct B {
    int r, k, s, e, i, o;
  };
  const B blocks[] = {{1, 3, 1, 1, 32, 16},  {2, 3, 2, 6, 16, 24},  {2, 5, 2, 6, 24, 40},
                      {3, 3, 2, 6, 40, 80},  {3, 5, 1, 6, 80, 112}, {4, 5, 2, 6, 112, 192},
                      {1, 3, 1, 6, 192, 320}};
  std::vector<std::pair<ConvCfg, int>> out;
  auto add = [&](const ConvCfg& c) {
    for (auto& [cfg, count] : out)
      if (same(cfg, c)) return void(++count);
    out.push_back({c, 1});
  };
  add({conv_same_shape(n, 224, 3, 32, 3, 2, 1), Act::relu6, false, "stem 3x3 s2"});
  int h = 112;
  for (const B& b : blocks) {
    for (int j = 0; j < b.r; ++j) {
      const int in = j ? b.o : b.i, stride = j ? 1 : b.s, mid = in * b.e;
      if (b.e != 1) add({conv_same_shape(n, h, in, mid, 1, 1, 1), Act::relu6, false, "expand 1x1"});
      const std::string dw =
          "dw " + std::to_string(b.k) + "x" + std::to_string(b.k) + " s" + std::to_string(stride);
      add({conv_same_shape(n, h, mid, mid, b.k, stride, mid), Act::relu6, false, dw});
      const int ho = (h + stride - 1) / stride;
      add({conv_same_shape(n, ho, mid, b.o, 1, 1, 1), Act::none, stride == 1 && in == b.o,
           "project 1x1"});
      h = ho;
    }
  }
  add({conv_same_shape(n, 7, 320, 1280, 1, 1, 1), Act::relu6, false, "head 1x1"});
  return out;
}

std::string conv_str(const ConvShape& s) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "n%d %dx%dx%d->%dx%dx%d k%d s%d g%d", s.n, s.in_h, s.in_w, s.in_c,
                s.out_h, s.out_w, s.out_c, s.k_h, s.stride_h, s.groups);
  return buf;
}

#if GRAFT_HAVE_CUDNN
#define CUDNN_OR(call, msg)                                                     \
  do {                                                                          \
    cudnnStatus_t st_ = (call);                                                 \
    if (st_ != CUDNN_STATUS_SUCCESS) {                                          \
      msg = std::string(#call).substr(0, 40) + ": " + cudnnGetErrorString(st_); \
      return;                                                                   \
    }                                                                           \
  } while (0)

// One conv as cuDNN sees it: NHWC fp32 tensors, a KRSC filter, and symmetric padding of
// max(before, after), which gives the same output size (TF SAME pads one more after than before).
// The forward and backward yardsticks share it; where the padding is not symmetric the windows
// are shifted by one pixel, so results are compared only where same_function() holds.
struct CudnnConvDesc {
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  int oh = 0, ow = 0;

  // Empty on success, else what failed. `math`: CUDNN_FMA_MATH (fp32 FMA only) or
  // CUDNN_DEFAULT_MATH (TF32 tensor cores allowed on Ampere and later).
  std::string setup(const ConvShape& s, cudnnMathType_t math) {
    std::string err;
    create(s, math, err);
    return err;
  }
  bool same_function(const ConvShape& s) const {
    const int pb = std::max(0, (s.out_h - 1) * s.stride_h + s.k_h - s.in_h - s.pad_top);
    const int pr = std::max(0, (s.out_w - 1) * s.stride_w + s.k_w - s.in_w - s.pad_left);
    return pb == s.pad_top && pr == s.pad_left && oh == s.out_h && ow == s.out_w;
  }
  ~CudnnConvDesc() {
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (yd) cudnnDestroyTensorDescriptor(yd);
    if (wd) cudnnDestroyFilterDescriptor(wd);
    if (cd) cudnnDestroyConvolutionDescriptor(cd);
  }

  CudnnConvDesc() = default;
  CudnnConvDesc(const CudnnConvDesc&) = delete;
  CudnnConvDesc& operator=(const CudnnConvDesc&) = delete;

 private:
  void create(const ConvShape& s, cudnnMathType_t math, std::string& err) {
    const int pb = std::max(0, (s.out_h - 1) * s.stride_h + s.k_h - s.in_h - s.pad_top);
    const int pr = std::max(0, (s.out_w - 1) * s.stride_w + s.k_w - s.in_w - s.pad_left);
    const int ph = std::max(s.pad_top, pb), pw = std::max(s.pad_left, pr);
    CUDNN_OR(cudnnCreateTensorDescriptor(&xd), err);
    CUDNN_OR(cudnnCreateTensorDescriptor(&yd), err);
    CUDNN_OR(cudnnCreateFilterDescriptor(&wd), err);
    CUDNN_OR(cudnnCreateConvolutionDescriptor(&cd), err);
    CUDNN_OR(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.n, s.in_c,
                                        s.in_h, s.in_w),
             err);
    CUDNN_OR(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s.out_c,
                                        s.in_c / s.groups, s.k_h, s.k_w),
             err);
    CUDNN_OR(cudnnSetConvolution2dDescriptor(cd, ph, pw, s.stride_h, s.stride_w, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             err);
    CUDNN_OR(cudnnSetConvolutionGroupCount(cd, s.groups), err);
    CUDNN_OR(cudnnSetConvolutionMathType(cd, math), err);
    int on, oc;
    CUDNN_OR(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &on, &oc, &oh, &ow), err);
    CUDNN_OR(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, on, oc, oh, ow),
             err);
  }
};

// The fastest successful algorithm of a cudnnFind* list (sorted by time), -1 when none. With
// fma_only, tensor-core algorithms are passed over (the search runs under CUDNN_FMA_MATH, so
// there should be none; this makes sure).
template <typename Perf>
int fastest(const Perf* perf, int n, bool fma_only) {
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS &&
        !(fma_only && perf[i].mathType == CUDNN_TENSOR_OP_MATH))
      return i;
  return -1;
}

const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_FMA_MATH:
      return "fma";
    case CUDNN_DEFAULT_MATH:
      return "default";
    case CUDNN_TENSOR_OP_MATH:
      return "tensor op";
    default:
      return "tensor op with conversion";
  }
}

// cuDNN's forward conv on the same problem (descriptors from CudnnConvDesc).
struct CudnnConv {
  cudnnHandle_t h = nullptr;
  CudnnConvDesc d;
  cudnnConvolutionFwdAlgo_t algo{};
  cudnnMathType_t math = CUDNN_FMA_MATH;  // the math type of the chosen algorithm
  std::unique_ptr<DevBuf> ws, w, y;
  std::string err;

  // tf32: search under CUDNN_DEFAULT_MATH and keep the fastest algorithm of any math type.
  void setup(cudnnHandle_t handle, const ConvShape& s, bool tf32) {
    h = handle;
    err = d.setup(s, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
    if (!err.empty()) return;
    y = std::make_unique<DevBuf>(size_t(s.n) * s.out_c * d.oh * d.ow * sizeof(float));
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int returned = 0;
    CUDNN_OR(cudnnFindConvolutionForwardAlgorithm(
                 h, d.xd, d.wd, d.cd, d.yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf),
             err);
    const int pick = fastest(perf, returned, !tf32);
    if (pick < 0) {
      err = tf32 ? "no algorithm" : "no fp32 FMA algorithm";
      return;
    }
    algo = perf[pick].algo;
    // cuDNN runs an algorithm under the math type its search reported (as PyTorch does); the
    // FMA yardstick stays under CUDNN_FMA_MATH whatever the search says.
    math = tf32 ? perf[pick].mathType : CUDNN_FMA_MATH;
    CUDNN_OR(cudnnSetConvolutionMathType(d.cd, math), err);
    size_t ws_bytes = 0;
    CUDNN_OR(cudnnGetConvolutionForwardWorkspaceSize(h, d.xd, d.wd, d.cd, d.yd, algo, &ws_bytes),
             err);
    ws = std::make_unique<DevBuf>(ws_bytes);
  }
  // Filter from HWIO to KRSC (cuDNN's NHWC filter order).
  void set_weights(const ConvShape& s, const float* w_hwio_dev) {
    const size_t n = size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
    std::vector<float> hw = download(w_hwio_dev, n), k(n);
    const int cig = s.in_c / s.groups;
    for (int ky = 0; ky < s.k_h; ++ky)
      for (int kx = 0; kx < s.k_w; ++kx)
        for (int ci = 0; ci < cig; ++ci)
          for (int oc = 0; oc < s.out_c; ++oc)
            k[((size_t(oc) * s.k_h + ky) * s.k_w + kx) * cig + ci] =
                hw[((size_t(ky) * s.k_w + kx) * cig + ci) * s.out_c + oc];
    w = std::make_unique<DevBuf>(n * sizeof(float));
    CUDA_CHECK(cudaMemcpy(w->p, k.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  void run(const float* x) {
    const float one = 1.f, zero = 0.f;
    const cudnnStatus_t st =
        cudnnConvolutionForward(h, &one, d.xd, x, d.wd, w->p, d.cd, algo, ws ? ws->p : nullptr,
                                ws ? ws->bytes : 0, &zero, d.yd, y->p);
    if (st != CUDNN_STATUS_SUCCESS)
      throw std::runtime_error(std::string("cudnnConvolutionForward: ") + cudnnGetErrorString(st));
  }
};
#endif

void bench_convs(int batch, size_t l2, bool with_v1, bool tile_sweep, void* cudnn_handle) {
  (void)cudnn_handle;
  uint32_t seed = 1000u + batch;
  LayerSum sum;
  for (const auto& [c, count] : efficientnet_lite0_convs(batch)) {
    const ConvShape& s = c.s;
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.in_c,
                 ys = size_t(s.n) * s.out_h * s.out_w * s.out_c;
    const size_t wsz = size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
    const int rot = rotation(xs * sizeof(float), l2);
    std::vector<std::unique_ptr<DevBuf>> xb;
    for (int i = 0; i < rot; ++i) xb.push_back(std::make_unique<DevBuf>(xs * sizeof(float)));
    fill_all(xb, seed++);
    DevBuf w(wsz * sizeof(float)), b(size_t(s.out_c) * sizeof(float)), y(ys * sizeof(float));
    std::unique_ptr<DevBuf> r;
    fill_random(w, seed++, -0.2f, 0.2f);
    fill_random(b, seed++);
    if (c.residual) {
      r = std::make_unique<DevBuf>(ys * sizeof(float));
      fill_random(*r, seed++);
    }
    Row row;
    row.group = "conv b" + std::to_string(batch);
    row.name = c.name;
    row.shape = conv_str(s);
    row.count = count;
    row.flops = 2.0 * double(ys) * s.k_h * s.k_w * (s.in_c / s.groups);
    row.bytes = 4.0 * (xs + wsz + ys + (c.residual ? ys : 0) + s.out_c);
    row.hand_us = time_us([&](int i) {
      cuda::conv2d(s, xb[i % rot]->f(), w.f(), b.f(), r ? r->f() : nullptr, c.act, y.f(), nullptr);
    });
#if GRAFT_HAVE_CUDNN
    {
      CudnnConv v;
      v.setup(static_cast<cudnnHandle_t>(cudnn_handle), s, false);
      if (v.err.empty()) {
        v.set_weights(s, w.f());
        row.vendor_us = time_us([&](int i) { v.run(xb[i % rot]->f()); });
        if (v.d.same_function(s)) {
          // Same function: compare the plain conv (no bias/act/residual) on buffer 0.
          cuda::conv2d(s, xb[0]->f(), w.f(), nullptr, nullptr, Act::none, y.f(), nullptr);
          v.run(xb[0]->f());
          row.check = rel_error(download(y.f(), ys), download(v.y->f(), ys));
        } else {
          row.note = "cuDNN pads symmetrically (TF SAME is not): timed, not compared";
        }
        row.note = (row.note.empty() ? "" : row.note + "; ") + "cuDNN algo " +
                   std::to_string(int(v.algo)) + ", conv only (hand includes bias/act)";
      } else {
        row.note = "cuDNN: " + v.err;
      }
    }
    {
      CudnnConv t;
      t.setup(static_cast<cudnnHandle_t>(cudnn_handle), s, true);
      if (t.err.empty()) {
        t.set_weights(s, w.f());
        row.tf32_us = time_us([&](int i) { t.run(xb[i % rot]->f()); });
        if (t.d.same_function(s)) {
          cuda::conv2d(s, xb[0]->f(), w.f(), nullptr, nullptr, Act::none, y.f(), nullptr);
          t.run(xb[0]->f());
          row.tf32_err = rel_error(download(y.f(), ys), download(t.y->f(), ys));
        }
        row.note +=
            "; cuDNN TF32 algo " + std::to_string(int(t.algo)) + " (" + math_name(t.math) + ")";
      } else {
        row.note += "; cuDNN TF32: " + t.err;
      }
    }
#endif
    if (row.check > 1e-4) g_check_failed = true;
    add_row(row);
    sum.add(row);
    const bool pw = s.k_h == 1 && s.k_w == 1 && s.stride_h == 1 && s.groups == 1;
    if (with_v1 && pw) {
      Row v1 = row;
      v1.name = c.name + " [v1]";
      v1.vendor_us = v1.tf32_us = v1.tf32_err = NAN;
      v1.check = NAN;
      v1.note = "conv_pointwise_v1 (one output per thread)";
      v1.hand_us = time_us(
          [&](int i) {
            cuda::conv_pointwise_v1(s, xb[i % rot]->f(), w.f(), b.f(), r ? r->f() : nullptr, c.act,
                                    y.f(), nullptr);
          },
          5, 1);
      add_row(v1);
    }
    if (tile_sweep && pw) {
      // Every block tile on this shape, to check the tile conv_pointwise_v2 picks (pick_gemm_tile
      // reasons from block counts only; these rows are what to fit it to).
      const std::string picked = cuda::conv_pointwise_v2_pick(s);
      for (const char* tile : {"128x128", "128x64", "128x32", "64x64"}) {
        Row t = row;
        t.group = "tile sweep b" + std::to_string(batch);
        t.name = c.name + " [" + tile + "]";
        t.vendor_us = t.tf32_us = t.tf32_err = NAN;
        t.check = NAN;
        t.note = picked == tile ? "the tile conv2d picks" : "";
        t.hand_us = time_us(
            [&](int i) {
              cuda::conv_pointwise_v2_tile(s, xb[i % rot]->f(), w.f(), b.f(), r ? r->f() : nullptr,
                                           c.act, y.f(), tile, nullptr);
            },
            7, 1);
        add_row(t);
      }
    }
    if (s.in_c <= 4 && s.groups == 1) {
      // The stem's previous path: the implicit GEMM (scalar, since 3 channels are not float4-able).
      Row ig = row;
      ig.name = c.name + " [igemm]";
      ig.vendor_us = ig.tf32_us = ig.tf32_err = NAN;
      ig.check = NAN;
      ig.note = "conv_implicit_gemm (the stem's path before conv_small_cin)";
      ig.hand_us = time_us([&](int i) {
        cuda::conv_implicit_gemm(s, xb[i % rot]->f(), w.f(), b.f(), r ? r->f() : nullptr, c.act,
                                 y.f(), nullptr);
      });
      add_row(ig);
    }
  }
  sum.add_row_as(batch, "conv forward, all layers");
}

// ---------------------------------------------------------------------------------------------
// Conv backward (fine-tuning through the backbone): dx and dw of every Lite0 conv against cuDNN's
// cudnnConvolutionBackwardData / BackwardFilter (NHWC fp32, FMA math, fastest algorithm from
// cudnnFind*, workspace allocated before timing).

#if GRAFT_HAVE_CUDNN
// cuDNN's two backward convs (descriptors from CudnnConvDesc). Filters are KRSC on cuDNN's side,
// HWIO on graft's.
struct CudnnConvBwd {
  cudnnHandle_t h = nullptr;
  CudnnConvDesc d;
  cudnnConvolutionBwdDataAlgo_t data_algo{};
  cudnnConvolutionBwdFilterAlgo_t filter_algo{};
  // The two algorithms' math types: one descriptor serves both, so each call sets its own.
  cudnnMathType_t data_math = CUDNN_FMA_MATH, filter_math = CUDNN_FMA_MATH;
  std::unique_ptr<DevBuf> ws;
  std::string err;

  // tf32: as CudnnConv::setup.
  void setup(cudnnHandle_t handle, const ConvShape& s, bool tf32) {
    h = handle;
    err = d.setup(s, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
    if (!err.empty()) return;
    cudnnConvolutionBwdDataAlgoPerf_t dperf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t fperf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int nd = 0, nf = 0;
    CUDNN_OR(cudnnFindConvolutionBackwardDataAlgorithm(
                 h, d.wd, d.yd, d.cd, d.xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, dperf),
             err);
    CUDNN_OR(cudnnFindConvolutionBackwardFilterAlgorithm(
                 h, d.xd, d.yd, d.cd, d.wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nf, fperf),
             err);
    const int dp = fastest(dperf, nd, !tf32), fp = fastest(fperf, nf, !tf32);
    if (dp < 0 || fp < 0) {
      err = tf32 ? "no backward algorithm" : "no fp32 FMA backward algorithm";
      return;
    }
    data_algo = dperf[dp].algo;
    filter_algo = fperf[fp].algo;
    data_math = tf32 ? dperf[dp].mathType : CUDNN_FMA_MATH;
    filter_math = tf32 ? fperf[fp].mathType : CUDNN_FMA_MATH;
    size_t a = 0, b = 0;
    CUDNN_OR(cudnnSetConvolutionMathType(d.cd, data_math), err);
    CUDNN_OR(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.wd, d.yd, d.cd, d.xd, data_algo, &a),
             err);
    CUDNN_OR(cudnnSetConvolutionMathType(d.cd, filter_math), err);
    CUDNN_OR(
        cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.xd, d.yd, d.cd, d.wd, filter_algo, &b),
        err);
    ws = std::make_unique<DevBuf>(std::max(a, b));
  }
  // Setting the math type is a host-side field write, negligible beside the launch.
  void data(const float* dy, const float* w_krsc, float* dx) {
    const float one = 1.f, zero = 0.f;
    cudnnSetConvolutionMathType(d.cd, data_math);
    const cudnnStatus_t st = cudnnConvolutionBackwardData(
        h, &one, d.wd, w_krsc, d.yd, dy, d.cd, data_algo, ws->p, ws->bytes, &zero, d.xd, dx);
    if (st != CUDNN_STATUS_SUCCESS)
      throw std::runtime_error(std::string("cudnnConvolutionBackwardData: ") +
                               cudnnGetErrorString(st));
  }
  void filter(const float* x, const float* dy, float* dw_krsc) {
    const float one = 1.f, zero = 0.f;
    cudnnSetConvolutionMathType(d.cd, filter_math);
    const cudnnStatus_t st = cudnnConvolutionBackwardFilter(
        h, &one, d.xd, x, d.yd, dy, d.cd, filter_algo, ws->p, ws->bytes, &zero, d.wd, dw_krsc);
    if (st != CUDNN_STATUS_SUCCESS)
      throw std::runtime_error(std::string("cudnnConvolutionBackwardFilter: ") +
                               cudnnGetErrorString(st));
  }
};

// HWIO [ky][kx][ci][oc] <-> KRSC [oc][ky][kx][ci], on the host.
std::vector<float> hwio_krsc(const ConvShape& s, const std::vector<float>& v, bool to_krsc) {
  const int cig = s.in_c / s.groups;
  std::vector<float> o(v.size());
  for (int ky = 0; ky < s.k_h; ++ky)
    for (int kx = 0; kx < s.k_w; ++kx)
      for (int ci = 0; ci < cig; ++ci)
        for (int oc = 0; oc < s.out_c; ++oc) {
          const size_t k = ((size_t(oc) * s.k_h + ky) * s.k_w + kx) * cig + ci;
          const size_t hw = ((size_t(ky) * s.k_w + kx) * cig + ci) * s.out_c + oc;
          if (to_krsc)
            o[k] = v[hw];
          else
            o[hw] = v[k];
        }
  return o;
}
#endif

// The plain versions beside the fast ones (batch 32 only: v1 of depthwise dw walks every pixel in
// one thread per weight and takes milliseconds).
void bench_conv_backward_versions(const ConvCfg& c, const Row& dx_row, const Row& dw_row,
                                  const std::vector<std::unique_ptr<DevBuf>>& xb,
                                  const std::vector<std::unique_ptr<DevBuf>>& yb, DevBuf& w,
                                  DevBuf& dx, DevBuf& dw) {
  const ConvShape& s = c.s;
  const int rot = int(xb.size());
  auto add_version = [&](const Row& base, const std::string& tag, const std::string& note,
                         const std::function<void(int)>& f) {
    Row r = base;
    r.name = c.name + (base.name == dx_row.name ? " dx [" : " dw [") + tag + "]";
    r.vendor_us = r.tf32_us = r.tf32_err = NAN;
    r.check = NAN;
    r.note = note;
    r.hand_us = time_us(f, 5, 1);
    add_row(r);
  };
  if (s.groups == s.in_c && s.groups == s.out_c && s.groups > 1) {
    add_version(dx_row, "v1", "conv_bwd_data_depthwise_v1 (thread per element, every tap)",
                [&](int i) {
                  cuda::conv_bwd_data_depthwise_v1(s, yb[i % rot]->f(), w.f(), dx.f(), nullptr);
                });
    add_version(dw_row, "v1", "conv_bwd_filter_depthwise_v1 (thread per weight, all pixels)",
                [&](int i) {
                  cuda::conv_bwd_filter_depthwise_v1(s, xb[i % rot]->f(), yb[i % rot]->f(), dw.f(),
                                                     nullptr);
                });
  } else if (s.k_h == 1 && s.stride_h == 1 && s.groups == 1 && (s.in_c <= 64 || s.out_c <= 64)) {
    const size_t need = cuda::conv_bwd_filter_pointwise_v1_workspace(s);
    DevBuf ws(need);
    add_version(dw_row, "v1 gemm", "conv_bwd_filter_pointwise_v1 (gemm.cuh tiles, split-K)",
                [&](int i) {
                  cuda::conv_bwd_filter_pointwise_v1(s, xb[i % rot]->f(), yb[i % rot]->f(), dw.f(),
                                                     ws.p, need, nullptr);
                });
  } else if (s.groups == 1 && !(s.k_h == 1 && s.stride_h == 1)) {
    const size_t need = cuda::conv_bwd_filter_generic_workspace(s);
    DevBuf ws(need);
    add_version(dw_row, "generic", "conv_bwd_filter_generic (thread per weight and split)",
                [&](int i) {
                  cuda::conv_bwd_filter_generic(s, xb[i % rot]->f(), yb[i % rot]->f(), dw.f(), ws.p,
                                                need, nullptr);
                });
  }
}

// x and dy rotations from one host vector of a cheap generator (xorshift32 to [-1, 1)): the
// batch-256 tensors reach 308M floats, and a mersenne twister per buffer would cost seconds per
// shape.
void fill_pair(std::vector<std::unique_ptr<DevBuf>>& xb, std::vector<std::unique_ptr<DevBuf>>& yb,
               uint32_t seed) {
  const size_t n = std::max(xb[0]->bytes, yb[0]->bytes) / sizeof(float);
  std::vector<float> h(n);
  uint32_t st = seed * 2654435761u + 1u;
  for (float& v : h) {
    st ^= st << 13, st ^= st >> 17, st ^= st << 5;
    v = float(st >> 8) * (2.f / 16777216.f) - 1.f;
  }
  for (auto* bufs : {&xb, &yb})
    for (auto& b : *bufs) CUDA_CHECK(cudaMemcpy(b->p, h.data(), b->bytes, cudaMemcpyHostToDevice));
}

void bench_conv_backward(int batch, size_t l2, bool with_v1, void* cudnn_handle) {
  (void)cudnn_handle;
  uint32_t seed = 5000u + batch;
  LayerSum dx_sum, dw_sum, both_sum;
  for (const auto& [c, count] : efficientnet_lite0_convs(batch)) {
    const ConvShape& s = c.s;
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.in_c,
                 ys = size_t(s.n) * s.out_h * s.out_w * s.out_c;
    const size_t wsz = size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
    const int rot = rotation((xs + ys) * sizeof(float), l2);
    std::vector<std::unique_ptr<DevBuf>> xb, yb;
    for (int i = 0; i < rot; ++i) {
      xb.push_back(std::make_unique<DevBuf>(xs * sizeof(float)));
      yb.push_back(std::make_unique<DevBuf>(ys * sizeof(float)));
    }
    fill_pair(xb, yb, seed++);
    DevBuf w(wsz * sizeof(float)), dx(xs * sizeof(float)), dw(wsz * sizeof(float));
    fill_random(w, seed++, -0.2f, 0.2f);
    const size_t need = cuda::conv2d_backward_filter_workspace(s);
    DevBuf ws(need);
    const double flops = 2.0 * double(ys) * s.k_h * s.k_w * (s.in_c / s.groups);
    Row dxr, dwr;
    dxr.group = dwr.group = "bwd b" + std::to_string(batch);
    dxr.name = c.name + " dx";
    dwr.name = c.name + " dw";
    dxr.shape = dwr.shape = conv_str(s);
    dxr.count = dwr.count = count;
    dxr.flops = dwr.flops = flops;
    dxr.bytes = 4.0 * (ys + wsz + xs);
    dwr.bytes = 4.0 * (xs + ys + wsz);
    dxr.note = "path " + cuda::conv_bwd_data_path(s);
    dwr.note = "path " + cuda::conv_bwd_filter_path(s) + ", workspace " +
               std::to_string(need >> 10) + " KiB";
    dxr.hand_us = time_us(
        [&](int i) { cuda::conv2d_backward_data(s, yb[i % rot]->f(), w.f(), dx.f(), nullptr); });
    dwr.hand_us = time_us([&](int i) {
      cuda::conv2d_backward_filter(s, xb[i % rot]->f(), yb[i % rot]->f(), dw.f(), ws.p, need,
                                   nullptr);
    });
#if GRAFT_HAVE_CUDNN
    const std::vector<float> wk = hwio_krsc(s, download(w.f(), wsz), true);
    DevBuf wkd(wsz * sizeof(float)), vdx(xs * sizeof(float)), vdw(wsz * sizeof(float));
    CUDA_CHECK(cudaMemcpy(wkd.p, wk.data(), wsz * sizeof(float), cudaMemcpyHostToDevice));
    for (const bool tf32 : {false, true}) {
      CudnnConvBwd v;
      v.setup(static_cast<cudnnHandle_t>(cudnn_handle), s, tf32);
      const std::string tag = tf32 ? "cuDNN TF32" : "cuDNN";
      if (!v.err.empty()) {
        dxr.note += "; " + tag + ": " + v.err;
        dwr.note += "; " + tag + ": " + v.err;
        continue;
      }
      const double data_us = time_us([&](int i) { v.data(yb[i % rot]->f(), wkd.f(), vdx.f()); });
      const double filter_us =
          time_us([&](int i) { v.filter(xb[i % rot]->f(), yb[i % rot]->f(), vdw.f()); });
      double data_err = NAN, filter_err = NAN;
      if (v.d.same_function(s)) {
        cuda::conv2d_backward_data(s, yb[0]->f(), w.f(), dx.f(), nullptr);
        v.data(yb[0]->f(), wkd.f(), vdx.f());
        data_err = rel_error(download(dx.f(), xs), download(vdx.f(), xs));
        cuda::conv2d_backward_filter(s, xb[0]->f(), yb[0]->f(), dw.f(), ws.p, need, nullptr);
        v.filter(xb[0]->f(), yb[0]->f(), vdw.f());
        filter_err = rel_error(download(dw.f(), wsz), hwio_krsc(s, download(vdw.f(), wsz), false));
      } else if (!tf32) {
        dxr.note += "; cuDNN pads symmetrically (TF SAME is not): timed, not compared";
        dwr.note += "; cuDNN pads symmetrically: timed, not compared";
      }
      if (tf32) {
        dxr.tf32_us = data_us, dwr.tf32_us = filter_us;
        dxr.tf32_err = data_err, dwr.tf32_err = filter_err;
        dxr.note += "; " + tag + " bwd data algo " + std::to_string(int(v.data_algo)) + " (" +
                    math_name(v.data_math) + ")";
        dwr.note += "; " + tag + " bwd filter algo " + std::to_string(int(v.filter_algo)) + " (" +
                    math_name(v.filter_math) + ")";
      } else {
        dxr.vendor_us = data_us, dwr.vendor_us = filter_us;
        dxr.check = data_err, dwr.check = filter_err;
        dxr.note += "; cuDNN bwd data algo " + std::to_string(int(v.data_algo));
        dwr.note += "; cuDNN bwd filter algo " + std::to_string(int(v.filter_algo));
      }
    }
#endif
    if (dxr.check > 1e-4 || dwr.check > 1e-4) g_check_failed = true;
    add_row(dxr);
    add_row(dwr);
    dx_sum.add(dxr);
    dw_sum.add(dwr);
    both_sum.add(dxr);
    both_sum.add(dwr);
    if (with_v1) bench_conv_backward_versions(c, dxr, dwr, xb, yb, w, dx, dw);
  }
  dx_sum.add_row_as(batch, "conv backward dx, all layers");
  dw_sum.add_row_as(batch, "conv backward dw, all layers");
  both_sum.add_row_as(batch, "conv backward dx + dw, all layers");
}

// The small backward ops at training sizes: bias_grad (v1 plain, v2 split) on Lite0's widest and
// longest layers, act_backward, global_avg_pool_backward, max_pool2d_backward, add_inplace.
void bench_backward_memory(bool quick) {
  const int batch = quick ? 32 : 256;
  struct BG {
    int64_t rows;
    int c;
  };
  for (const BG t : {BG{int64_t(batch) * 112 * 112, 32}, BG{int64_t(batch) * 56 * 56, 144},
                     BG{int64_t(batch) * 14 * 14, 480}, BG{int64_t(batch) * 7 * 7, 1280}}) {
    DevBuf dy(size_t(t.rows) * t.c * 4), db(size_t(t.c) * 4);
    fill_random(dy, 31);
    const size_t need = cuda::bias_grad_workspace(t.rows, t.c);
    DevBuf ws(need);
    Row r;
    r.group = "bwd memory";
    r.name = "bias_grad";
    r.shape = std::to_string(t.rows) + "x" + std::to_string(t.c);
    r.bytes = 4.0 * double(t.rows) * t.c;
    r.note = "v2: split rows, fixed tree, partials + ordered sum";
    r.hand_us =
        time_us([&](int) { cuda::bias_grad(t.rows, t.c, dy.f(), db.f(), ws.p, need, nullptr); });
    add_row(r);
    Row v1 = r;
    v1.name = "bias_grad [v1]";
    v1.note = "thread per column, all rows in order";
    v1.hand_us =
        time_us([&](int) { cuda::bias_grad_v1(t.rows, t.c, dy.f(), db.f(), nullptr); }, 5, 1);
    add_row(v1);
  }
  const int64_t count = (int64_t(64) << 20) / (quick ? 4 : 1);
  DevBuf a(size_t(count) * 4), b(size_t(count) * 4);
  fill_random(a, 32, -1.f, 7.f);
  fill_random(b, 33);
  Row r;
  r.group = "bwd memory";
  r.name = "act_backward relu6";
  r.shape = std::to_string(count >> 20) + "M";
  r.bytes = 4.0 * 3.0 * double(count);
  r.hand_us = time_us([&](int) { cuda::act_backward(count, Act::relu6, a.f(), b.f(), nullptr); });
  add_row(r);
  r.name = "add_inplace";
  r.hand_us = time_us([&](int) { cuda::add_inplace(count, a.f(), b.f(), nullptr); });
  add_row(r);
  {
    const int n = batch, hw = 49, c = 1280;
    DevBuf dy(size_t(n) * c * 4), dx(size_t(n) * hw * c * 4);
    fill_random(dy, 34);
    Row g;
    g.group = "bwd memory";
    g.name = "global_avg_pool_backward";
    g.shape = std::to_string(n) + "x7x7x1280";
    g.bytes = 4.0 * (double(n) * c + double(n) * hw * c);
    g.hand_us =
        time_us([&](int) { cuda::global_avg_pool_backward(n, hw, c, dy.f(), dx.f(), nullptr); });
    add_row(g);
  }
  {
    PoolShape s{batch, 112, 112, 64, 56, 56, 3, 3, 2, 2, 1, 1};  // ResNet's stem pool
    const size_t xs = size_t(s.n) * s.in_h * s.in_w * s.c,
                 ys = size_t(s.n) * s.out_h * s.out_w * s.c;
    DevBuf x(xs * 4), y(ys * 4), dy(ys * 4), dx(xs * 4);
    fill_random(x, 35);
    fill_random(dy, 36);
    cuda::max_pool2d(s, x.f(), y.f(), nullptr);
    Row m;
    m.group = "bwd memory";
    m.name = "max_pool2d_backward 3x3 s2";
    m.shape = std::to_string(s.n) + "x112x112x64";
    m.bytes = 4.0 * (2.0 * xs + 2.0 * ys);
    m.note = "gather: each input re-checks the <= 4 windows holding it";
    m.hand_us =
        time_us([&](int) { cuda::max_pool2d_backward(s, x.f(), y.f(), dy.f(), dx.f(), nullptr); });
    add_row(m);
  }
}

void bench_linear(int batch, int classes, size_t l2, cublasHandle_t cb) {
  const int in = 1280;
  const size_t xs = size_t(batch) * in, ws = size_t(classes) * in, ys = size_t(batch) * classes;
  const int rot = rotation(xs * 4, l2);
  std::vector<std::unique_ptr<DevBuf>> xb;
  for (int i = 0; i < rot; ++i) xb.push_back(std::make_unique<DevBuf>(xs * 4));
  fill_all(xb, 77);
  DevBuf w(ws * 4), b(size_t(classes) * 4), y(ys * 4), yv(ys * 4);
  fill_random(w, 78, -0.1f, 0.1f);
  fill_random(b, 79);
  Row row;
  row.group = "linear b" + std::to_string(batch);
  row.name = "head linear";
  row.shape = "n" + std::to_string(batch) + " 1280->" + std::to_string(classes);
  row.flops = 2.0 * batch * in * classes;
  row.bytes = 4.0 * (xs + ws + ys + classes);
  row.hand_us = time_us([&](int i) {
    cuda::linear(batch, in, classes, xb[i % rot]->f(), w.f(), b.f(), y.f(), nullptr);
  });
  const float one = 1.f, zero = 0.f;
  auto vendor = [&](int i) {
    if (cublasSgemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, classes, batch, in, &one, w.f(), in,
                    xb[i % rot]->f(), in, &zero, yv.f(), classes) != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("cublasSgemm failed");
  };
  row.vendor_us = time_us(vendor);
  cuda::linear(batch, in, classes, xb[0]->f(), w.f(), nullptr, y.f(), nullptr);
  vendor(0);
  row.check = rel_error(download(y.f(), ys), download(yv.f(), ys));
  row.note = "cuBLAS sgemm pedantic fp32, no bias (hand includes bias)";
  if (row.check > 1e-4) g_check_failed = true;
  add_row(row);

  // Backward of the same layer (dw, db, dx): hand only.
  DevBuf dy(ys * 4), dx(xs * 4), dw(ws * 4), db(size_t(classes) * 4);
  fill_random(dy, 80);
  Row bw;
  bw.group = row.group;
  bw.name = "head linear backward";
  bw.shape = row.shape;
  bw.flops = 2.0 * 2.0 * batch * in * classes;
  bw.bytes = 4.0 * (xs + ws + ys + xs + ws + classes);
  bw.hand_us = time_us([&](int i) {
    cuda::linear_backward(batch, in, classes, xb[i % rot]->f(), w.f(), dy.f(), dx.f(), dw.f(),
                          db.f(), nullptr);
  });
  bw.note = "dw + db + dx";
  add_row(bw);
}

// ---------------------------------------------------------------------------------------------
// Memory-bound kernels.

void bench_memory(bool quick, size_t l2) {
  const int scale = quick ? 4 : 1;
  {
    const int n = 65536 / scale, c = 1000;
    DevBuf x(size_t(n) * c * 4), d(size_t(n) * c * 4), loss(size_t(n) * 4), lab(size_t(n) * 4);
    fill_random(x, 1);
    std::vector<int32_t> labels(n);
    for (int i = 0; i < n; ++i) labels[i] = (i * 7919) % c;
    CUDA_CHECK(cudaMemcpy(lab.p, labels.data(), n * 4, cudaMemcpyHostToDevice));
    Row r;
    r.group = "memory";
    r.name = "softmax_xent fwd+bwd";
    r.shape = std::to_string(n) + "x" + std::to_string(c);
    r.bytes = 4.0 * (2.0 * n * c + 2.0 * n);
    r.hand_us = time_us([&](int) {
      cuda::softmax_xent(n, c, x.f(), static_cast<int32_t*>(lab.p), 0.1f, 1.f / n, loss.f(), d.f(),
                         nullptr);
    });
    add_row(r);
    Row s = r;
    s.name = "softmax";
    s.bytes = 4.0 * 2.0 * n * c;
    s.hand_us = time_us([&](int) { cuda::softmax(n, c, x.f(), d.f(), nullptr); });
    add_row(s);
  }
  {
    const int64_t total = (int64_t(64) << 20) / scale, parts = 4, each = total / parts;
    std::vector<std::unique_ptr<DevBuf>> bufs;
    std::vector<ParamRef> refs;
    for (int t = 0; t < parts; ++t) {
      ParamRef p{};
      for (int k = 0; k < 4; ++k) {
        bufs.push_back(std::make_unique<DevBuf>(size_t(each) * 4));
        fill_random(*bufs.back(), uint32_t(10 * t + k), k == 3 ? 0.f : -1.f, 1.f);  // v >= 0
      }
      p.param = bufs[bufs.size() - 4]->f();
      p.grad = bufs[bufs.size() - 3]->f();
      p.m = bufs[bufs.size() - 2]->f();
      p.v = bufs[bufs.size() - 1]->f();
      p.count = each;
      p.weight_decay = 0.01f;
      refs.push_back(p);
    }
    Row r;
    r.group = "memory";
    r.name = "sgd_momentum";
    r.shape = std::to_string(total >> 20) + "M params in 4 tensors";
    r.bytes = 4.0 * 5 * total;
    r.hand_us = time_us([&](int) { cuda::sgd_momentum(refs.data(), parts, 0.01f, 0.9f, nullptr); });
    add_row(r);
    Row a = r;
    a.name = "adamw";
    a.bytes = 4.0 * 7 * total;
    int64_t step = 1;
    a.hand_us = time_us([&](int) {
      cuda::adamw(refs.data(), parts, AdamWConfig{1e-3f, 0.9f, 0.999f, 1e-8f, step++}, nullptr);
    });
    add_row(a);
  }
  // Global average pool at the end of the backbone: batch 256 (65 MB, 82K float4 columns: under a
  // third of the threads an H100 or H200 holds), 1024 (262 MB, 328K columns: the chip is full) and
  // 32 (the training batch; 10K columns and 8 MB, latency-bound whatever the kernel).
  for (const int n : quick ? std::vector<int>{256, 32} : std::vector<int>{256, 1024, 32}) {
    const int hw = 49, c = 1280;
    const size_t xs = size_t(n) * hw * c;
    const int rot = rotation(xs * 4, l2);
    std::vector<std::unique_ptr<DevBuf>> xb;
    for (int i = 0; i < rot; ++i) xb.push_back(std::make_unique<DevBuf>(xs * 4));
    fill_all(xb, 3);
    DevBuf y(size_t(n) * c * 4);
    Row r;
    r.group = "memory";
    r.name = "global_avg_pool";
    r.shape = std::to_string(n) + "x7x7x1280";
    r.bytes = 4.0 * (xs + size_t(n) * c);
    r.note = "v2: cp.async ring 4x4 (pixels x slots)";
    r.hand_us =
        time_us([&](int i) { cuda::global_avg_pool(n, hw, c, xb[i % rot]->f(), y.f(), nullptr); });
    add_row(r);
    // The other rings at batch 256: fewer, larger batches (8x2), more, smaller ones (2x8), and
    // twice the bytes in flight per thread at half the blocks per SM (8x4, 32 KB).
    const std::pair<int, int> rings[] = {{8, 2}, {2, 8}, {8, 4}};
    if (n == 256) {
      for (const auto& [batch, stages] : rings) {
        Row v = r;
        v.name =
            "global_avg_pool [ring " + std::to_string(batch) + "x" + std::to_string(stages) + "]";
        v.note = "v2 with another ring";
        v.hand_us = time_us([&, batch = batch, stages = stages](int i) {
          cuda::global_avg_pool_v2(n, hw, c, xb[i % rot]->f(), y.f(), nullptr, batch, stages);
        });
        add_row(v);
      }
    }
    Row v1 = r;
    v1.name = "global_avg_pool [v1]";
    v1.note = "plain loads";
    v1.hand_us = time_us(
        [&](int i) { cuda::global_avg_pool_v1(n, hw, c, xb[i % rot]->f(), y.f(), nullptr); });
    add_row(v1);
    if (n != 256) continue;
    // What a device-to-device copy of as many bytes reaches, timed the same way. The copy ceiling
    // is measured on 1 GiB, where launch and ramp-up are negligible; at 65 MB they are not.
    Row cp = r;
    cp.name = "copy (same bytes)";
    cp.shape = "cudaMemcpyAsync D2D";
    cp.note = "what this size allows";
    const size_t half = size_t(r.bytes / 2) & ~size_t(15);
    cp.bytes = 2.0 * half;
    DevBuf dst(half);
    cp.hand_us = time_us([&](int i) {
      CUDA_CHECK(cudaMemcpyAsync(dst.p, xb[i % rot]->p, half, cudaMemcpyDeviceToDevice));
    });
    add_row(cp);
  }
  {
    // ResNet's stem max pool, 3x3 stride 2 pad 1 at 112x112x64 (822 MB in at batch 256), and the
    // same window as an average. Minimum bytes: input read once (the windows overlap by one row
    // and column; the overlap is served from L1/L2) and output written once.
    const int n = 256 / scale;
    PoolShape s{};
    s.n = n, s.in_h = 112, s.in_w = 112, s.c = 64, s.k_h = 3, s.k_w = 3;
    s.stride_h = s.stride_w = 2, s.pad_top = s.pad_left = 1;
    s.out_h = conv_out_size(112, 3, 2, 1, 1), s.out_w = conv_out_size(112, 3, 2, 1, 1);
    const size_t xs = size_t(n) * 112 * 112 * 64, ys = size_t(n) * s.out_h * s.out_w * 64;
    std::vector<std::unique_ptr<DevBuf>> xb;
    for (int i = 0; i < 2; ++i) xb.push_back(std::make_unique<DevBuf>(xs * 4));
    {
      // A cheap generator: 200M values through mt19937 would add seconds to the run.
      std::vector<float> h(xs);
      uint32_t st = 777u;
      for (auto& v : h) v = float(int32_t(st = st * 1664525u + 1013904223u)) * (1.f / 2147483648.f);
      for (auto& b : xb) CUDA_CHECK(cudaMemcpy(b->p, h.data(), xs * 4, cudaMemcpyHostToDevice));
    }
    DevBuf y(ys * 4);
    Row r;
    r.group = "memory";
    r.name = "max_pool2d 3x3 s2";
    r.shape = std::to_string(n) + "x112x112x64 pad 1";
    r.bytes = 4.0 * (xs + ys);
    r.hand_us = time_us([&](int i) { cuda::max_pool2d(s, xb[i % 2]->f(), y.f(), nullptr); });
    add_row(r);
    Row a = r;
    a.name = "avg_pool2d 3x3 s2";
    a.note = "count_pad";
    a.hand_us = time_us([&](int i) { cuda::avg_pool2d(s, true, xb[i % 2]->f(), y.f(), nullptr); });
    add_row(a);
  }
  {
    const int64_t pixels = int64_t(256 / scale) * 224 * 224;
    DevBuf x(size_t(pixels) * 3), y(size_t(pixels) * 3 * 4);
    {
      // Random bytes, not a constant: the kernel looks values up in a shared-memory table, and a
      // constant image would make every lookup a broadcast (no bank conflicts).
      std::vector<uint8_t> h(x.bytes);
      uint32_t st = 12345u;
      for (auto& v : h) v = uint8_t((st = st * 1664525u + 1013904223u) >> 24);
      CUDA_CHECK(cudaMemcpy(x.p, h.data(), h.size(), cudaMemcpyHostToDevice));
    }
    const float mean[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.5f, 0.5f, 0.5f};
    Row r;
    r.group = "memory";
    r.name = "normalize_u8";
    r.shape = std::to_string(256 / scale) + "x224x224x3";
    r.bytes = double(pixels) * 3 * 5;
    r.hand_us = time_us([&](int) {
      cuda::normalize_u8(pixels, 3, static_cast<uint8_t*>(x.p), mean, sd, y.f(), nullptr);
    });
    add_row(r);
  }
  {
    const int64_t count = (int64_t(64) << 20) / scale;
    DevBuf x(size_t(count) * 4), y(size_t(count) * 4);
    fill_random(x, 4);
    Row r;
    r.group = "memory";
    r.name = "dropout p=0.2";
    r.shape = std::to_string(count >> 20) + "M floats";
    r.bytes = 8.0 * count;
    uint64_t ctr = 0;
    r.hand_us = time_us([&](int) {
      cuda::dropout(count, 0.2f, 1234, ctr, x.f(), y.f(), nullptr);
      ctr += uint64_t(count);
    });
    add_row(r);
    Row b = r;
    b.name = "bias_act relu6 +residual";
    b.shape = std::to_string(count / 1280) + "x1280";
    DevBuf bias(1280 * 4), res(size_t(count) * 4);
    fill_random(bias, 5);
    fill_random(res, 6);
    b.bytes = 12.0 * count;
    b.hand_us = time_us([&](int) {
      cuda::bias_act(count / 1280, 1280, x.f(), bias.f(), res.f(), Act::relu6, y.f(), nullptr);
    });
    add_row(b);
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    o += ch;
  }
  return o;
}

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char b[64];
  std::snprintf(b, sizeof(b), "%.6g", v);
  return b;
}

// Share of the ceiling that bounds the row: time at the ceiling over the measured time, with the
// ceiling being FMA rate or copy bandwidth, whichever gives the longer time (F or B).
std::pair<double, char> pct_of_ceiling(const Row& r, const Ceilings& c) {
  const double t_f = r.flops / (c.fma_gflops * 1e3);  // us
  const double t_b = r.bytes / (c.copy_gbs * 1e3);    // us
  const double t = std::max(t_f, t_b);
  return {100.0 * t / r.hand_us, t_f >= t_b ? 'F' : 'B'};
}

void print_table(const Ceilings& c, const cudaDeviceProp& prop) {
  std::printf("\n%s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  std::printf("ceilings: copy %.0f GB/s (read + write), fp32 FMA %.0f GFLOP/s\n", c.copy_gbs,
              c.fma_gflops);
  // vendor: cuDNN / cuBLAS fp32 without TF32; tf32: cuDNN with TF32 allowed (convs only).
  std::printf("%-10s %-26s %-38s %3s %10s %10s %7s %10s %7s %9s %8s %7s %9s  %s\n", "group", "name",
              "shape", "cnt", "hand_us", "vendor_us", "v/h", "tf32_us", "t/h", "GFLOP/s", "GB/s",
              "%ceil", "check", "note");
  for (const Row& r : g_rows) {
    const auto [pct, kind] = pct_of_ceiling(r, c);
    std::printf("%-10s %-26s %-38s %3d %10.1f %10s %7s %10s %7s %9.0f %8.0f %6.1f%c %9s  %s\n",
                r.group.c_str(), r.name.c_str(), r.shape.c_str(), r.count, r.hand_us,
                std::isfinite(r.vendor_us) ? num(r.vendor_us).c_str() : "-",
                std::isfinite(r.vendor_us) ? num(r.vendor_us / r.hand_us).c_str() : "-",
                std::isfinite(r.tf32_us) ? num(r.tf32_us).c_str() : "-",
                std::isfinite(r.tf32_us) ? num(r.tf32_us / r.hand_us).c_str() : "-",
                r.flops / (r.hand_us * 1e3), r.bytes / (r.hand_us * 1e3), pct, kind,
                std::isfinite(r.check) ? num(r.check).c_str() : "-", r.note.c_str());
  }
}

// The rows so far as JSON, written to a temporary file and renamed over `path`, so a reader never
// sees half a file. main writes it after each section ("complete": false) and at the end (true):
// a run stopped by a time limit keeps the rows it measured.
void write_json(const Ceilings& c, const cudaDeviceProp& prop, const std::string& path,
                bool complete) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "bench_cuda_ops: cannot write %s\n", tmp.c_str());
    return;
  }
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"sms\": %d,\n  \"copy_gbs\": %s,\n",
               json_escape(prop.name).c_str(), prop.multiProcessorCount, num(c.copy_gbs).c_str());
  std::fprintf(f, "  \"complete\": %s,\n", complete ? "true" : "false");
  std::fprintf(f, "  \"fma_gflops\": %s,\n  \"rows\": [\n", num(c.fma_gflops).c_str());
  for (size_t i = 0; i < g_rows.size(); ++i) {
    const Row& r = g_rows[i];
    const auto [pct, kind] = pct_of_ceiling(r, c);
    std::fprintf(
        f,
        "    {\"group\": \"%s\", \"name\": \"%s\", \"shape\": \"%s\", \"count\": %d, "
        "\"hand_us\": %s, \"vendor_us\": %s, \"vendor_over_hand\": %s, \"gflops\": %s, "
        "\"gbs\": %s, \"pct_of_ceiling\": %s, \"ceiling\": \"%s\", \"rel_err_vs_vendor\": "
        "%s, \"cudnn_tf32_us\": %s, \"cudnn_tf32_over_hand\": %s, "
        "\"cudnn_tf32_rel_err\": %s, \"note\": \"%s\"}%s\n",
        json_escape(r.group).c_str(), json_escape(r.name).c_str(), json_escape(r.shape).c_str(),
        r.count, num(r.hand_us).c_str(), num(r.vendor_us).c_str(),
        num(r.vendor_us / r.hand_us).c_str(), num(r.flops / (r.hand_us * 1e3)).c_str(),
        num(r.bytes / (r.hand_us * 1e3)).c_str(), num(pct).c_str(), kind == 'F' ? "fma" : "copy",
        num(r.check).c_str(), num(r.tf32_us).c_str(), num(r.tf32_us / r.hand_us).c_str(),
        num(r.tf32_err).c_str(), json_escape(r.note).c_str(), i + 1 < g_rows.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  if (std::fclose(f) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "bench_cuda_ops: cannot write %s\n", path.c_str());
    return;
  }
  if (complete) std::printf("wrote %s\n", path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  bool tile_sweep = false;  // every block tile on every pointwise shape (rows "tile sweep bN")
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--json=", 0) == 0) {
      json_path = a.substr(7);
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--tile-sweep") {
      tile_sweep = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json=PATH] [--quick] [--tile-sweep]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("bench_cuda_ops: no CUDA device (%s); nothing to measure\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (quick) g_reps = 7;
    const size_t l2 = size_t(prop.l2CacheSize);
    const Ceilings ceil = measure_ceilings(prop.multiProcessorCount);
    std::fprintf(stderr, "ceilings: copy %.0f GB/s, FMA %.0f GFLOP/s\n", ceil.copy_gbs,
                 ceil.fma_gflops);

    cublasHandle_t cb = nullptr;
    if (cublasCreate(&cb) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
    if (cublasSetMathMode(cb, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("cublasSetMathMode failed");
    void* dnn = nullptr;
#if GRAFT_HAVE_CUDNN
    cudnnHandle_t h = nullptr;
    if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) throw std::runtime_error("cudnnCreate failed");
    dnn = h;
#endif
    auto save = [&] {
      if (!json_path.empty()) write_json(ceil, prop, json_path, false);
    };
    for (int batch : quick ? std::vector<int>{32} : std::vector<int>{32, 256}) {
      bench_convs(batch, l2, batch == 32, tile_sweep, dnn);
      for (int classes : {10, 1000}) bench_linear(batch, classes, l2, cb);
      save();
    }
    for (int batch : quick ? std::vector<int>{32} : std::vector<int>{32, 256}) {
      bench_conv_backward(batch, l2, batch == 32, dnn);
      save();
    }
    bench_memory(quick, l2);
    save();
    bench_backward_memory(quick);
#if GRAFT_HAVE_CUDNN
    cudnnDestroy(h);
#endif
    cublasDestroy(cb);
    print_table(ceil, prop);
    if (!json_path.empty()) write_json(ceil, prop, json_path, true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_ops: %s\n", e.what());
    return 1;
  }
  if (g_check_failed) {
    std::printf("FAILED: a hand kernel disagrees with the vendor result by more than 1e-4\n");
    return 1;
  }
  return 0;
}
