// Backward through the backbone (engine/backprop.h) and the fine-tuning network (engine/network.h)
// on the CPU: blocks are counted as --fine-tune counts them, the plan keeps what backward reads,
// and the gradients of the trained backbone tensors agree with finite differences of the loss on
// three real architectures at small odd input sizes (depthwise and 3x3 convs, stride 2, TF-SAME
// asymmetric padding, residuals, max pooling, ReLU and ReLU6).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine/model.h"
#include "engine/net.h"
#include "engine/network.h"
#include "io/safetensors.h"
#include "tests/grad_check.h"
#include "tests/random_backbone.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

std::string scratch_dir() {
  static const std::string dir = [] {
    std::string d = testing::TempDir() + "/graft-backprop-" + std::to_string(getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// An architecture with random weights and batch norm statistics, through the real loader (which
// folds batch norm), at a small input size.
Model make_model(const std::string& arch, int size, const std::string& padding) {
  const std::string path = scratch_dir() + "/" + arch + "_" + std::to_string(size) + ".safetensors";
  test::write_random_backbone(path, {arch, size, padding, 0.2f, /*unit_gamma=*/true});
  return load_model(path);
}

TEST(FineTuneBlocks, CountedAsTheOptionCountsThem) {
  const Net lite = build_arch("efficientnet_lite0");
  EXPECT_EQ(count_blocks(lite), 18);  // the stem, 16 inverted residual blocks, the head conv
  EXPECT_EQ(first_trainable_op(lite, 0), int(lite.ops.size()));
  const int head = first_trainable_op(lite, 1);
  ASSERT_LT(head, int(lite.ops.size()));
  EXPECT_EQ(lite.ops[head].conv.name, "head");
  const int two = first_trainable_op(lite, 2);
  EXPECT_EQ(lite.ops[two].conv.name, "blocks.15.expand");
  EXPECT_EQ(first_trainable_op(lite, 18), 0);
  EXPECT_EQ(first_trainable_op(lite, 1000), 0);
  const Net resnet = build_arch("resnet18");  // no head conv: the last block is blocks.7
  EXPECT_EQ(count_blocks(resnet), 9);
  const int last = first_trainable_op(resnet, 1);
  EXPECT_EQ(resnet.ops[last].conv.name.rfind("blocks.7.", 0), 0u) << resnet.ops[last].conv.name;
  EXPECT_EQ(resnet.ops[last - 1].conv.name.rfind("blocks.6.", 0), 0u);
  // The max pool goes with the stem: training 8 blocks leaves stem and pool frozen.
  const int eight = first_trainable_op(resnet, 8);
  EXPECT_EQ(resnet.ops[eight].conv.name.rfind("blocks.0.", 0), 0u);
  EXPECT_EQ(resnet.ops[eight - 1].kind, OpKind::max_pool);
}

TEST(FineTunePlan, KeepsEveryValueATrainedOpTouches) {
  const Net net = build_arch("mobilenet_v2");
  const NetPlan frozen = plan_net(net, 2, 40, 40);
  const int first = first_trainable_op(net, 3);
  const NetPlan kept = plan_net(net, 2, 40, 40, first);
  std::set<int> values;
  for (size_t i = first; i < net.ops.size(); ++i)
    for (int v : {net.ops[i].input, net.ops[i].output, net.ops[i].residual})
      if (v > 0 && v != net.ops.back().output) values.insert(v);
  std::set<int> buffers;
  for (int v : values) {
    ASSERT_GE(kept.buffer_of[v], 0);
    EXPECT_TRUE(buffers.insert(kept.buffer_of[v]).second) << "value " << v << " shares a buffer";
    EXPECT_GE(kept.buffer_numel[kept.buffer_of[v]], kept.values[v].numel());
  }
  // The frozen part still shares: far fewer buffers than values.
  EXPECT_LT(frozen.buffer_numel.size(), 6u);
  EXPECT_GE(kept.buffer_numel.size(), values.size());
}

struct Trial {
  Model model;
  Network net;
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;
  Event copied;
  int n = 0;
};

void make_trial(Trial& t, const std::string& arch, int size, const std::string& padding,
                int fine_tune, int n) {
  t.model = make_model(arch, size, padding);
  t.n = n;
  OptimConfig opt;
  const HeadShape head{t.model.net.feature_dim, 0, 3};
  network_create(t.net, Device{}, t.model, head, n, 9, &opt, FineTune{fine_tune, 1.f});
  // Noise around a brightness that depends on the class, so there is something to learn.
  std::mt19937 rng(11);
  t.images.resize(size_t(n) * size * size * 3);
  t.labels.resize(n);
  const size_t pixels = size_t(size) * size * 3;
  for (int i = 0; i < n; ++i) {
    t.labels[i] = i % 3;
    for (size_t k = 0; k < pixels; ++k)
      t.images[i * pixels + k] = uint8_t(40 + 80 * t.labels[i] + int(rng() % 64));
  }
}

// Mean loss of one training forward (dropout off, so the loss is a plain function of the weights).
double forward_loss(Trial& t) {
  NetworkInput in;
  in.n = t.n;
  in.images = t.images.data();
  in.copied = &t.copied;
  in.labels = t.labels.data();
  std::vector<float> loss(t.n);
  const HeadPass train{true, 0.f, 1, 0, 0.1f};
  network_forward(Device{}, t.net, in, train, loss.data(), nullptr);
  double sum = 0;
  for (float l : loss) sum += l;
  return sum / t.n;
}

void backward(Trial& t) {
  forward_loss(t);
  network_backward(Device{}, t.net, t.n, HeadPass{true, 0.f, 1, 0, 0.1f});
}

// The backbone on its own, Caffe's way: L = <features, r> for a fixed random r, so that
// d L / d features = r. The float walk gives the analytic gradients; the numeric ones come from a
// double-precision forward of the same op list (tests/grad_check.h's reference loops), where
// central differences are exact away from the ReLU kinks, which the checker skips and counts.
struct Probe {
  std::vector<float> r;
  std::vector<double> x;  // the backbone's normalised input, as the float forward saw it

  void backward(Trial& t) {
    forward_loss(t);
    const size_t count = size_t(t.n) * t.model.net.feature_dim;
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    r.resize(count);
    for (float& v : r) v = u(rng);
    const NetPlan& plan = t.net.backbone.plans.at(t.n);
    x.assign(t.net.backbone.input_dev, t.net.backbone.input_dev + plan.values[0].numel());
    std::vector<float> poison(t.model.net.params.size() - t.net.bp.param_begin, NAN);
    std::copy(poison.begin(), poison.end(), t.net.bb.dparams);
    backbone_backward(Device{}, t.model.net, plan, t.net.bp, t.net.bb, r.data());
  }

  // L in double with the parameters `params` (all of them, laid out as net.params).
  double loss(const Trial& t, const std::vector<double>& params) const {
    const Net& net = t.model.net;
    const NetPlan& plan = t.net.backbone.plans.at(t.n);
    std::vector<std::vector<double>> v(net.num_values);
    v[0] = x;
    for (size_t i = 0; i < net.ops.size(); ++i) {
      const NetOp& op = net.ops[i];
      std::vector<double>& y = v[op.output];
      y.assign(plan.values[op.output].numel(), 0.0);
      if (op.kind == OpKind::conv)
        gradcheck::conv2d(plan.convs[i], v[op.input].data(), params.data() + net.w_off[i],
                          params.data() + net.b_off[i],
                          op.residual >= 0 ? v[op.residual].data() : nullptr, op.conv.act,
                          y.data());
      else if (op.kind == OpKind::max_pool)
        gradcheck::max_pool2d(plan.pools[i], v[op.input].data(), y.data());
      else
        gradcheck::global_avg_pool(plan.values[op.input].n,
                                   plan.values[op.input].h * plan.values[op.input].w,
                                   plan.values[op.input].c, v[op.input].data(), y.data());
    }
    return gradcheck::dot_loss(v[net.ops.back().output], r);
  }
};

// The trained convs whose weight and bias are checked (all of them when `every` is set, else the
// first, the last and every fourth: each costs two double forwards per sampled element).
void check_gradients(Trial& t, bool every) {
  Probe probe;
  probe.backward(t);
  const Net& net = t.model.net;
  const size_t begin = t.net.bp.param_begin;
  std::vector<double> all(net.params.begin(), net.params.end());
  gradcheck::Options opt;
  opt.max_samples = 4;
  opt.rel_tol = 1e-3;  // float sums over whole feature maps, against exact double differences
  opt.abs_tol = 1e-3;
  std::vector<size_t> convs;
  for (size_t i = t.net.bp.first_op; i < net.ops.size(); ++i)
    if (net.ops[i].kind == OpKind::conv) convs.push_back(i);
  ASSERT_FALSE(convs.empty());
  for (size_t c = 0; c < convs.size(); ++c) {
    if (!every && c != 0 && c + 1 != convs.size() && c % 4 != 0) continue;
    const size_t i = convs[c];
    const size_t w = net.w_off[i], b = net.b_off[i], e = b + net.ops[i].conv.out_c;
    for (auto [lo, hi, part] : {std::tuple{w, b, "weight"}, std::tuple{b, e, "bias"}}) {
      const std::vector<float> p(net.params.begin() + lo, net.params.begin() + hi);
      const std::vector<float> g(t.net.bb.dparams + (lo - begin), t.net.bb.dparams + (hi - begin));
      opt.seed = uint32_t(i);
      gradcheck::check(
          net.ops[i].conv.name + " " + part, p, g,
          [&, lo = lo](const std::vector<double>& q) {
            std::copy(q.begin(), q.end(), all.begin() + lo);
            const double l = probe.loss(t, all);
            std::copy(net.params.begin() + lo, net.params.begin() + lo + q.size(),
                      all.begin() + lo);
            return l;
          },
          opt);
    }
  }
}

TEST(FineTuneGradients, MobileNetV2LastFourBlocks) {
  Trial t;  // two residual blocks (one whose input also trains), the 320 block, the final 1x1 conv
  make_trial(t, "mobilenet_v2", 35, "symmetric", 4, 2);
  check_gradients(t, true);
}

TEST(FineTuneGradients, EfficientNetLite0TfSameWholeNetwork) {
  Trial t;  // every block, the stem included, with TF-SAME asymmetric padding at an odd size
  make_trial(t, "efficientnet_lite0", 29, "tf_same", 1000, 1);
  check_gradients(t, false);
}

TEST(FineTuneGradients, ResNet18WholeNetwork) {
  Trial t;  // 7x7 stride-2 stem, max pool, 3x3 convs, strided shortcuts, ReLU
  make_trial(t, "resnet18", 27, "symmetric", 1000, 1);
  check_gradients(t, false);
}

// Training more blocks does not change the gradients of the ones that trained before: the last
// two blocks' gradients are the same bits whether two blocks or all of them train.
TEST(FineTuneGradients, MoreBlocksLeaveTheLastOnesUnchanged) {
  Trial two, all;
  make_trial(two, "mobilenet_v2", 35, "symmetric", 2, 2);
  make_trial(all, "mobilenet_v2", 35, "symmetric", 1000, 2);
  backward(two);
  backward(all);
  const size_t begin = two.net.bp.param_begin, end = two.model.net.params.size();
  ASSERT_GT(begin, all.net.bp.param_begin);
  for (size_t k = begin; k < end; ++k)
    ASSERT_EQ(two.net.bb.dparams[k - begin], all.net.bb.dparams[k - all.net.bp.param_begin])
        << "parameter " << k;
}

// A few steps of SGD through the whole backbone lower the loss on a fixed batch and move every
// trained weight; with no block trained, the backbone stays exactly as loaded.
TEST(FineTuneTraining, StepsLowerTheLossAndMoveOnlyTrainedWeights) {
  for (int blocks : {1000, 0}) {
    Trial t;
    make_trial(t, "mobilenet_v2", 35, "symmetric", blocks, 6);
    const std::vector<float> before(t.net.backbone.params,
                                    t.net.backbone.params + t.model.net.params.size());
    const double first = forward_loss(t);
    OptimConfig opt;
    for (int s = 0; s < 15; ++s) {
      backward(t);
      network_update(Device{}, t.net, opt, 1e-3f);
    }
    const double last = forward_loss(t);
    EXPECT_LT(last, 0.9 * first) << blocks << " blocks: loss " << first << " -> " << last;
    size_t moved = 0;
    for (size_t k = 0; k < before.size(); ++k) moved += before[k] != t.net.backbone.params[k];
    if (blocks)
      EXPECT_GT(moved, before.size() * 9 / 10);
    else
      EXPECT_EQ(moved, 0u);
  }
}

}  // namespace
}  // namespace graft
