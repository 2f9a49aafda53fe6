// One training step, timed: EfficientNet-Lite0 (or any graft model file) with the head alone or
// the last N blocks trained, network_forward + network_backward + network_update on one batch of
// uint8 images, issued back to back. What bench/step_vs_torch.py sets beside PyTorch's eager
// training step on the same card (the fine-tuning goal: at least as fast as PyTorch eager fp32).
//
//   bench_step --model M.safetensors [--fine-tune 0|N|all] [--batch 32] [--device cpu|cuda]
//              [--classes 5] [--iters 20] [--repeats 5] [--warmup 3]
//
// The images are random bytes in pinned host memory (the loader's slots are pinned too), so each
// step's host-to-device copy runs on the copy stream beside the previous step's compute, as in
// training; the labels are on the device. Model Maker's recipe: SGD with momentum 0.9 at 0.005,
// the backbone at a tenth of it, dropout 0.2, label smoothing 0.1. Prints one JSON line
// (ms_per_step median and min, images_per_s, the loss before and after the timed steps: the same
// batch every step, so it must fall). Exit codes: 0 done, 1 the run failed, 2 bad arguments.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "engine/device.h"
#include "engine/fine_tune.h"
#include "engine/model.h"
#include "engine/network.h"

namespace {

using graft::bench::BadInput;

struct Args {
  std::string model, fine_tune = "0", device = "cpu";
  int batch = 32, classes = 5, iters = 20, repeats = 5, warmup = 3;
};

// Returns false when --help was printed.
bool parse_args(int argc, char** argv, Args* a) {
  CLI::App app{"One training step of a graft model (forward, backward, update), timed."};
  app.add_option("--model", a->model, "graft model or backbone file")->required();
  app.add_option("--fine-tune", a->fine_tune, "blocks trained with the head: 0, N or all")
      ->capture_default_str();
  app.add_option("--batch", a->batch, "images per step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--device", a->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--classes", a->classes, "classes of the new head")
      ->check(CLI::Range(2, 100000))
      ->capture_default_str();
  app.add_option("--iters", a->iters, "steps per measurement")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--repeats", a->repeats, "measurements (the median is reported)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--warmup", a->warmup, "untimed steps first")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    throw BadInput(e.what());
  }
  return true;
}

// The network, its optimiser and one batch, ready to step.
struct Bench {
  graft::Device dev;
  graft::Network net;
  graft::OptimConfig opt;
  graft::HeadPass pass{true, 0.2f, 1, 0, 0.1f};
  uint8_t* images = nullptr;  // pinned on cuda
  std::vector<uint8_t> host_images;
  graft::Arena arena;
  int32_t* labels = nullptr;  // on the device
  float* loss_dev = nullptr;  // per-row loss, on the device
  graft::Event copied;
  graft::NetworkInput in;
  ~Bench() {
    if (images && dev.is_cuda()) graft::pinned_free(images);
  }
};

void setup(Bench& b, const Args& a, const graft::Model& model, int blocks) {
  const int size = model.preprocess.size, n = a.batch;
  graft::network_create(b.net, b.dev, model, graft::HeadShape{model.net.feature_dim, 0, a.classes},
                        n, 1, &b.opt, graft::FineTune{blocks, 0.1f});
  graft::network_train_backbone(b.net, blocks > 0);
  const size_t bytes = size_t(n) * size * size * 3;
  if (b.dev.is_cuda()) {
    b.images = static_cast<uint8_t*>(graft::pinned_alloc(bytes));
  } else {
    b.host_images.resize(bytes);
    b.images = b.host_images.data();
  }
  std::mt19937 rng(2);
  for (size_t i = 0; i < bytes; ++i) b.images[i] = uint8_t(rng() & 255);
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % a.classes;
  graft::arena_reserve(b.arena, b.dev, size_t(n) * 8 + 2 * 64);
  b.labels = graft::arena_alloc<int32_t>(b.arena, n);
  b.loss_dev = graft::arena_alloc<float>(b.arena, n);
  graft::copy_to_device(b.dev, b.labels, labels.data(), labels.size() * 4);
  graft::event_create(b.dev, b.copied);
  b.in.n = n;
  b.in.images = b.images;
  b.in.copied = &b.copied;
  b.in.labels = b.labels;
}

void step(Bench& b) {
  graft::network_forward(b.dev, b.net, b.in, b.pass, b.loss_dev, nullptr);
  graft::network_backward(b.dev, b.net, b.in.n, b.pass);
  graft::network_update(b.dev, b.net, b.opt, 0.005f);
}

// The batch's mean loss after the last step issued (waits for the device).
double mean_loss(Bench& b) {
  std::vector<float> loss(size_t(b.in.n));
  graft::copy_to_host(b.dev, loss.data(), b.loss_dev, loss.size() * 4);
  graft::synchronize(b.dev);
  double sum = 0;
  for (float v : loss) sum += v;
  return sum / double(loss.size());
}

int run(const Args& a) {
  graft::Model model;
  int blocks = 0;
  try {
    model = graft::load_model(a.model);
    blocks = graft::fine_tune_blocks(a.fine_tune, model.net);
  } catch (const std::exception& e) {
    throw BadInput(e.what());  // the loader and the setting check name the file or the option
  }
  Bench b;
  b.dev = graft::make_device(a.device);
  setup(b, a, model, blocks);
  step(b);
  const double loss_before = mean_loss(b);
  for (int i = 0; i < a.warmup; ++i) step(b);
  graft::synchronize(b.dev);
  const graft::bench::Timing t = graft::bench::measure(b.dev, a.repeats, a.iters, [&] { step(b); });
  const double loss_after = mean_loss(b);
  if (!std::isfinite(loss_after)) throw std::runtime_error("the loss is not finite after training");
  const nlohmann::json j = {{"device", a.device},
                            {"device_name", graft::device_name(b.dev)},
                            {"model", a.model},
                            {"fine_tune", a.fine_tune},
                            {"fine_tune_blocks", blocks},
                            {"batch", a.batch},
                            {"classes", a.classes},
                            {"iters", a.iters},
                            {"repeats", a.repeats},
                            {"warmup", a.warmup},
                            {"ms_per_step", {{"median", t.median_ms}, {"min", t.min_ms}}},
                            {"ms_per_step_all", t.all_ms},
                            {"host_ms_per_step", t.host_ms},
                            {"images_per_s", a.batch / (t.median_ms / 1000.0)},
                            {"loss_first_step", loss_before},
                            {"loss_last_step", loss_after}};
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return graft::bench::bench_main("bench_step", [&] {
    Args a;
    return parse_args(argc, argv, &a) ? run(a) : 0;
  });
}
