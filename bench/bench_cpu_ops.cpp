// CPU twins on the layers that dominate EfficientNet-Lite0 at 224x224, plus the head ops.
// Every conv reports GFLOP/s with flops = 2 * n * oh * ow * oc * kh * kw * ic / groups; the
// Peak benchmark measures what the cores sustain on independent FMAs, the yardstick for "% of
// peak" in bench/worklog-cpu.md. Run with --benchmark_filter to pick layers; the reference (naive)
// convs run at batch 1 only, they are slow. ConvBwdData and ConvBwdFilter are the backward convs
// (dx and dw) on the same layers, counted with the forward's flops.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <random>
#include <vector>

#include "kernels/cpu/cpu_path.h"
#include "kernels/cpu/reference.h"
#include "kernels/ops.h"

namespace graft {
namespace {

std::vector<float> random_vec(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(count);
  for (float& f : v) f = dist(rng);
  return v;
}

// Independent FMA chains on the CPU path's vectors (kernels/cpu/peak.cpp), on every thread: the
// machine's practical fp32 peak for that path, the yardstick for "% of peak".
void Peak(benchmark::State& state) {
  const int64_t iters = 1 << 20;
  const int threads = omp_get_max_threads();
  double flops = 0;
  for (auto _ : state) {
    float sink = 0.f;
    double done = 0;
#pragma omp parallel reduction(+ : sink, done)
    {
      float s = float(omp_get_thread_num());
      done += cpu::fma_peak(iters, &s);
      sink += s;
    }
    flops = done;
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
  state.SetLabel(cpu::cpu_path_name(cpu::cpu_path()));
}
BENCHMARK(Peak)->UseRealTime()->Unit(benchmark::kMillisecond);

struct Layer {
  const char* name;
  int h, in_c, out_c, k, stride, groups;
};

// EfficientNet-Lite0 layers (TensorFlow SAME padding), square inputs.
const Layer kLayers[] = {
    {"stem_3x3s2_224_3to32", 224, 3, 32, 3, 2, 1},
    {"dw_3x3s1_112_c32", 112, 32, 32, 3, 1, 32},
    {"dw_5x5s2_56_c144", 56, 144, 144, 5, 2, 144},
    {"pw_56_144to24", 56, 144, 24, 1, 1, 1},
    {"pw_28_40to240", 28, 40, 240, 1, 1, 1},
    {"pw_14_480to80", 14, 480, 80, 1, 1, 1},
    {"pw_7_320to1280", 7, 320, 1280, 1, 1, 1},
    // ResNet-50 stem and a 3x3 body conv: the general path on wide channels.
    {"resnet_7x7s2_224_3to64", 224, 3, 64, 7, 2, 1},
    {"resnet_3x3s1_56_64to64", 56, 64, 64, 3, 1, 1},
};

ConvShape shape_for(const Layer& l, int n) {
  ConvShape s{};
  s.n = n;
  s.in_h = s.in_w = l.h;
  s.in_c = l.in_c;
  s.out_c = l.out_c;
  s.k_h = s.k_w = l.k;
  s.stride_h = s.stride_w = l.stride;
  s.groups = l.groups;
  same_padding(l.h, l.k, l.stride, &s.out_h, &s.pad_top);
  same_padding(l.h, l.k, l.stride, &s.out_w, &s.pad_left);
  return s;
}

template <bool kReference>
void Conv(benchmark::State& state, Layer l) {
  const ConvShape s = shape_for(l, int(state.range(0)));
  const auto x = random_vec(size_t(s.n) * s.in_h * s.in_w * s.in_c, 1);
  const auto w = random_vec(size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c, 2);
  const auto bias = random_vec(s.out_c, 3);
  std::vector<float> y(size_t(s.n) * s.out_h * s.out_w * s.out_c);
  for (auto _ : state) {
    if (kReference)
      cpu::ref::conv2d(s, x.data(), w.data(), bias.data(), nullptr, Act::relu6, y.data());
    else
      cpu::conv2d(s, x.data(), w.data(), bias.data(), nullptr, Act::relu6, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * s.n * s.out_h * s.out_w * s.out_c * s.k_h * s.k_w * s.in_c / s.groups;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// Backward convs on the same layers: dx (kData) or dw (!kData), the same flop count as the
// forward (each is one multiply-add per forward multiply-add).
template <bool kData>
void ConvBackward(benchmark::State& state, Layer l) {
  const ConvShape s = shape_for(l, int(state.range(0)));
  const auto x = random_vec(size_t(s.n) * s.in_h * s.in_w * s.in_c, 1);
  const auto w = random_vec(size_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c, 2);
  const auto dy = random_vec(size_t(s.n) * s.out_h * s.out_w * s.out_c, 3);
  std::vector<float> dx(x.size()), dw(w.size());
  for (auto _ : state) {
    if (kData)
      cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data());
    else
      cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw.data());
    benchmark::DoNotOptimize(dx.data());
    benchmark::DoNotOptimize(dw.data());
  }
  const double flops = 2.0 * s.n * s.out_h * s.out_w * s.out_c * s.k_h * s.k_w * s.in_c / s.groups;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void Linear(benchmark::State& state) {
  const int n = int(state.range(0)), in = 1280, out = int(state.range(1));
  const auto x = random_vec(size_t(n) * in, 1), w = random_vec(size_t(out) * in, 2);
  const auto b = random_vec(out, 3);
  std::vector<float> y(size_t(n) * out);
  for (auto _ : state) {
    cpu::linear(n, in, out, x.data(), w.data(), b.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * in * out / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(Linear)->Args({32, 10})->Args({32, 1000})->Args({1, 1000})->UseRealTime();

void LinearBackward(benchmark::State& state) {
  const int n = int(state.range(0)), in = 1280, out = int(state.range(1));
  const auto x = random_vec(size_t(n) * in, 1), w = random_vec(size_t(out) * in, 2);
  const auto dy = random_vec(size_t(n) * out, 3);
  std::vector<float> dx(size_t(n) * in), dw(size_t(out) * in), db(out);
  for (auto _ : state) {
    cpu::linear_backward(n, in, out, x.data(), w.data(), dy.data(), dx.data(), dw.data(),
                         db.data());
    benchmark::DoNotOptimize(dw.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(4.0 * n * in * out / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(LinearBackward)->Args({32, 10})->Args({32, 1000})->UseRealTime();

void SoftmaxXent(benchmark::State& state) {
  const int n = int(state.range(0)), c = int(state.range(1));
  const auto z = random_vec(size_t(n) * c, 1);
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % c;
  std::vector<float> loss(n), dz(size_t(n) * c);
  for (auto _ : state) {
    cpu::softmax_xent(n, c, z.data(), labels.data(), 0.1f, 1.f / n, loss.data(), dz.data());
    benchmark::DoNotOptimize(dz.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(SoftmaxXent)->Args({32, 10})->Args({32, 1000})->UseRealTime();

int register_convs() {
  for (const Layer& l : kLayers) {
    benchmark::RegisterBenchmark((std::string("ConvRef/") + l.name).c_str(), Conv<true>, l)
        ->Arg(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("Conv/") + l.name).c_str(), Conv<false>, l)
        ->Arg(1)
        ->Arg(8)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("ConvBwdData/") + l.name).c_str(), ConvBackward<true>,
                                 l)
        ->Arg(1)
        ->Arg(8)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("ConvBwdFilter/") + l.name).c_str(),
                                 ConvBackward<false>, l)
        ->Arg(1)
        ->Arg(8)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return 0;
}
const int kRegistered = register_convs();

}  // namespace
}  // namespace graft

BENCHMARK_MAIN();
