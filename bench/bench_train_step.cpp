// Training throughput on the CPU twins: one training step (network_forward, network_backward,
// network_update) of EfficientNet-Lite0 at 224x224 from decoded images, with the head alone, the
// last two blocks and every block trained. images/s per batch size. Needs the pretrained file
// (scripts/setup.sh); the speed does not depend on the weights, but the loader needs a real file.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "engine/model.h"
#include "engine/network.h"

namespace {

void train_step(benchmark::State& state) {
  const std::string path = std::string(GRAFT_SOURCE_DIR) + "/models/efficientnet_lite0.safetensors";
  if (!std::filesystem::exists(path)) {
    state.SkipWithError("models/efficientnet_lite0.safetensors is absent: run scripts/setup.sh");
    return;
  }
  static const graft::Model model = graft::load_model(path);
  const int blocks = int(state.range(0)), n = int(state.range(1));
  const int size = model.preprocess.size, classes = 5;
  graft::Network net;
  graft::OptimConfig opt;
  graft::network_create(net, graft::Device{}, model,
                        graft::HeadShape{model.net.feature_dim, 0, classes}, n, 1, &opt,
                        graft::FineTune{blocks, 0.1f});
  std::vector<uint8_t> images(size_t(n) * size * size * 3);
  std::vector<int32_t> labels(n);
  std::mt19937 rng(2);
  for (auto& p : images) p = uint8_t(rng() & 255);
  for (int i = 0; i < n; ++i) labels[i] = i % classes;
  std::vector<float> loss(n);
  graft::Event copied;
  graft::NetworkInput in;
  in.n = n;
  in.images = images.data();
  in.copied = &copied;
  in.labels = labels.data();
  const graft::HeadPass pass{true, 0.2f, 1, 0, 0.1f};
  for (auto _ : state) {
    graft::network_forward(graft::Device{}, net, in, pass, loss.data(), nullptr);
    graft::network_backward(graft::Device{}, net, n, pass);
    graft::network_update(graft::Device{}, net, opt, 0.005f);
    benchmark::DoNotOptimize(loss.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(double(state.iterations()) * n, benchmark::Counter::kIsRate);
}

}  // namespace

// Blocks trained: 0 (the head alone; the backbone still runs forward), 2, and all 18.
BENCHMARK(train_step)
    ->ArgNames({"blocks", "batch"})
    ->Args({0, 32})
    ->Args({2, 32})
    ->Args({18, 32})
    ->Args({0, 8})
    ->Args({18, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
