// Backbone forward throughput on the CPU twins: images/s at the model's input size, per batch
// size. Uses the pretrained file when scripts/setup.sh has fetched it, else random weights (the
// speed does not depend on the values).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "engine/forward.h"
#include "engine/model.h"

namespace {

graft::Net load_or_make(const std::string& arch) {
  const std::string path = std::string(GRAFT_SOURCE_DIR) + "/models/" + arch + ".safetensors";
  if (std::filesystem::exists(path)) return graft::load_model(path).net;
  graft::Net net = graft::build_arch(arch);
  net.w_off.assign(net.ops.size(), 0);
  net.b_off.assign(net.ops.size(), 0);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  for (size_t i = 0; i < net.ops.size(); ++i) {
    if (net.ops[i].kind != graft::OpKind::conv) continue;
    const auto& c = net.ops[i].conv;
    net.w_off[i] = net.params.size();
    net.params.resize(net.params.size() + size_t(c.k) * c.k * (c.in_c / c.groups) * c.out_c);
    net.b_off[i] = net.params.size();
    net.params.resize(net.params.size() + c.out_c);
  }
  for (float& v : net.params) v = u(rng);
  return net;
}

void forward(benchmark::State& state, const std::string& arch) {
  static graft::Net net = load_or_make(arch);
  const int n = int(state.range(0)), size = 224;
  graft::NetPlan plan = graft::plan_net(net, n, size, size);
  std::vector<float> x(size_t(n) * size * size * 3), features(size_t(n) * net.feature_dim);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : x) v = u(rng);
  graft::CpuWorkspace ws;
  graft::forward_cpu(net, plan, x.data(), features.data(), ws);  // warm-up: sizes the buffers
  for (auto _ : state) {
    graft::forward_cpu(net, plan, x.data(), features.data(), ws);
    benchmark::DoNotOptimize(features.data());
  }
  state.counters["img/s"] =
      benchmark::Counter(double(n) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(graft::net_flops_per_image(net, plan) * n * state.iterations() / 1e9,
                         benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(forward, efficientnet_lite0, std::string("efficientnet_lite0"))
    ->Arg(1)
    ->Arg(8)
    ->Arg(32)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
