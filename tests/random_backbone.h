#pragma once
// A backbone weight file with random weights and batch-norm statistics, written in graft's format
// so tests load it through the real loader (which folds batch norm), for any architecture and a
// small input size. One uniform draw per element, in the file's tensor order, so a seed gives the
// same file every time.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/net.h"
#include "io/safetensors.h"

namespace graft::test {

struct RandomBackbone {
  std::string arch;
  int input_size = 48;
  std::string padding = "symmetric";
  float var_spread = 0.5f;  // running_var in [1, 1 + var_spread)
  // Batch-norm scale near 1 (1 + 0.2u) instead of 0.1u: with He-scaled conv weights, activations
  // stay of order one through every block, so gradients neither vanish nor sit in ReLU6's flat
  // ends (what a gradient check needs).
  bool unit_gamma = false;
  uint32_t seed = 3;
};

inline void write_random_backbone(const std::string& path, const RandomBackbone& r) {
  const Net net = build_arch(r.arch);
  std::mt19937 rng(r.seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> tensors;
  const auto names = expected_backbone_tensors(net);
  for (const auto& [name, shape] : names) {
    int64_t n = 1, fan_in = 1;
    for (int64_t d : shape) n *= d;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    std::vector<float> v(n);
    const bool var = name.find("running_var") != std::string::npos;
    const bool gamma = r.unit_gamma && name.find("bn.weight") != std::string::npos;
    const bool weight = name.find("conv.weight") != std::string::npos;
    for (float& x : v)
      x = var      ? 1.f + r.var_spread * std::abs(u(rng))
          : gamma  ? 1.f + 0.2f * u(rng)
          : weight ? u(rng) * std::sqrt(6.f / float(fan_in))
                   : 0.1f * u(rng);
    data.push_back(std::move(v));
    tensors.push_back({name, DType::f32, shape, data.back().data(), data.back().size() * 4});
  }
  write_weights(path, tensors,
                {{"arch", r.arch},
                 {"padding", r.padding},
                 {"bn_eps", "1e-05"},
                 {"input_size", std::to_string(r.input_size)},
                 {"resize_mode", "squash"}});
}

}  // namespace graft::test
