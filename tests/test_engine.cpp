// Architectures, planning and the model loader's validation.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <stdexcept>

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/net.h"
#include "io/safetensors.h"
#include "tests/random_backbone.h"

namespace graft {
namespace {

// Trainable parameters as PyTorch counts them (conv weights, BN weight and bias, the classifier),
// for comparison with the reference implementations' published totals.
int64_t torch_parameter_count(const Net& net, int classes) {
  int64_t count = 0;
  for (const auto& [name, shape] : expected_backbone_tensors(net)) {
    if (name.find("running_") != std::string::npos) continue;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    count += n;
  }
  return count + int64_t(net.feature_dim) * classes + classes;
}

TEST(Arch, ParameterCountsMatchReferenceModels) {
  // torchvision's documented totals; EfficientNet-Lite0's is the PyTorch port's
  // (sum(p.numel() for p in model.parameters())).
  EXPECT_EQ(torch_parameter_count(build_arch("mobilenet_v2"), 1000), 3504872);
  EXPECT_EQ(torch_parameter_count(build_arch("resnet18"), 1000), 11689512);
  EXPECT_EQ(torch_parameter_count(build_arch("resnet50"), 1000), 25557032);
  EXPECT_EQ(torch_parameter_count(build_arch("efficientnet_lite0"), 1000), 4652008);
}

TEST(Arch, UnknownArchIsRejectedWithTheKnownNames) {
  try {
    build_arch("efficientnet_lite9");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("efficientnet_lite0"), std::string::npos) << e.what();
  }
}

TEST(Plan, OutputSizesAndTensorFlowSamePadding) {
  Net lite = build_arch("efficientnet_lite0");
  NetPlan plan = plan_net(lite, 2, 224, 224);
  // Stem 3x3 stride 2 on 224: SAME gives 112 with 0 padding before and 1 after.
  EXPECT_EQ(plan.convs[0].out_h, 112);
  EXPECT_EQ(plan.convs[0].pad_top, 0);
  const ValueShape& f = plan.values[lite.ops.back().output];
  EXPECT_EQ(f.n, 2);
  EXPECT_EQ(f.h, 1);
  EXPECT_EQ(f.c, 1280);
  // The head conv runs at 7x7.
  EXPECT_EQ(plan.convs[lite.ops.size() - 2].out_h, 7);

  // An odd size: SAME keeps ceil(in / stride) at every stride-2 layer.
  NetPlan odd = plan_net(lite, 1, 97, 131);
  EXPECT_EQ(odd.convs[0].out_h, 49);
  EXPECT_EQ(odd.convs[0].out_w, 66);
  EXPECT_EQ(odd.convs[0].pad_top, 1);   // total (49-1)*2+3-97 = 2: 1 before, 1 after
  EXPECT_EQ(odd.convs[0].pad_left, 1);  // total (66-1)*2+3-131 = 2
  NetPlan even = plan_net(lite, 1, 96, 96);
  EXPECT_EQ(even.convs[0].pad_top, 0);  // total 1: 0 before, 1 after (TensorFlow's asymmetry)

  Net r50 = build_arch("resnet50");
  NetPlan rp = plan_net(r50, 1, 224, 224);
  EXPECT_EQ(rp.convs[0].out_h, 112);
  EXPECT_EQ(rp.convs[0].pad_top, 3);
  EXPECT_EQ(rp.pools[1].out_h, 56);
  EXPECT_EQ(rp.values[r50.ops.back().output].c, 2048);
}

// EfficientNet-Lite0 with random weights (through the real loader) and random input images, for
// the tests of how the CPU runs the forward: each checks that a way of running it gives the
// features' bits of the plain way.
Model random_lite0(int size) {
  const std::string path = testing::TempDir() + "/graft-random-lite0.safetensors";
  test::write_random_backbone(path, {"efficientnet_lite0", size});
  Model model = load_model(path);
  std::filesystem::remove(path);
  return model;
}
std::vector<float> random_images(int n, int size, uint32_t seed) {
  std::vector<float> x(size_t(n) * size * size * 3);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : x) v = u(rng);
  return x;
}
// Features of random weights are not zeros (a test comparing zeros with zeros proves nothing).
void expect_not_all_zero(const std::vector<float>& features) {
  float largest = 0.f;
  for (float v : features) largest = std::max(largest, std::fabs(v));
  EXPECT_GT(largest, 0.f);
}

// A batch larger than a piece runs piece by piece on the CPU (engine/forward.cpp), the late ops on
// the whole batch from the pieces' handoff, the pieces side by side on two threads (lanes) or one
// after another. Every image must get the bits it gets when it runs alone, the last piece shorter
// included, with and without the handoff.
TEST(Plan, PiecesGiveEachImageItsOwnBits) {
  const int size = 40;
  const Model model = random_lite0(size);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);  // plans with two lanes, whatever this machine has
  const NetPlan probe = plan_net(model.net, 64, size, size);
  ASSERT_FALSE(probe.pieces.empty());
  const int n = 2 * probe.pieces[0].n + 1;  // two whole pieces and one image
  const NetPlan handed = plan_net(model.net, n, size, size);
  omp_set_num_threads(threads);
  ASSERT_EQ(handed.pieces.size(), 2u);
  EXPECT_EQ(handed.pieces[1].n, 1);
  EXPECT_EQ(handed.piece_lanes, 2);
  const int ops = int(model.net.ops.size());
  ASSERT_LT(handed.pieces_until, ops);  // at 40x40 the late layers' weights outweigh a piece
  NetPlan all_pieces = handed;
  all_pieces.pieces_until = ops;
  NetPlan one_lane = handed;
  one_lane.piece_lanes = 1;
  EXPECT_TRUE(plan_net(model.net, n, size, size, /*keep_from=*/0).pieces.empty());
  EXPECT_TRUE(plan_net(model.net, 1, size, size).pieces.empty());

  const int64_t image = int64_t(size) * size * 3, dim = model.net.feature_dim;
  const std::vector<float> x = random_images(n, size, 17);
  const NetPlan one = plan_net(model.net, 1, size, size);
  std::vector<float> alone(size_t(n) * dim, NAN);
  CpuWorkspace ws_one;
  for (int i = 0; i < n; ++i)
    forward_cpu(model.net, one, x.data() + i * image, alone.data() + i * dim, ws_one);
  expect_not_all_zero(alone);

  for (const NetPlan* plan :
       std::initializer_list<const NetPlan*>{&handed, &all_pieces, &one_lane}) {
    std::vector<float> features(size_t(n) * dim, NAN);
    CpuWorkspace ws;
    forward_cpu(model.net, *plan, x.data(), features.data(), ws);
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(std::memcmp(alone.data() + i * dim, features.data() + i * dim, sizeof(float) * dim),
                0)
          << "image " << i << " of " << n << ", pieces until op " << plan->pieces_until << ", "
          << plan->piece_lanes << " lanes";
  }
}

// On the CPU, an expand whose output outgrows the caches runs fused with the depthwise conv after
// it (cpu::expand_depthwise, checked bit for bit in tests/test_cpu_ops.cpp): the plan marks such
// pairs only where backward keeps nothing and the device is the CPU, and the features are the
// unfused ones.
TEST(Plan, ExpandDepthwisePairsGiveTheSameFeatures) {
  const int size = 224;
  const Model model = random_lite0(size);
  const NetPlan plan = plan_net(model.net, 1, size, size);
  int pairs = 0;
  for (char f : plan.expand_with_next) pairs += f;
  EXPECT_GE(pairs, 2);  // at least the 112x112 and 56x56 blocks' expansions
  const NetPlan kept = plan_net(model.net, 1, size, size, /*keep_from=*/0);
  for (char f : kept.expand_with_next) EXPECT_EQ(f, 0);
  EXPECT_TRUE(plan_net(model.net, 1, size, size, -1, /*for_cpu=*/false).expand_with_next.empty());
  // The pair reads the expand's input while writing the depthwise output: never one buffer.
  for (const std::string& arch : known_archs())
    for (int n : {1, 3, 64}) {
      const Net net = build_arch(arch);
      const NetPlan p = plan_net(net, n, 192, 160);
      for (size_t i = 0; i + 1 < net.ops.size(); ++i) {
        const int in = net.ops[i].input;
        if (p.expand_with_next[i] && in != 0) {
          EXPECT_NE(p.buffer_of[in], p.buffer_of[net.ops[i + 1].output]) << arch << " op " << i;
        }
      }
    }

  NetPlan unfused = plan;
  unfused.expand_with_next.assign(unfused.expand_with_next.size(), 0);
  const int dim = model.net.feature_dim;
  const std::vector<float> x = random_images(1, size, 29);
  std::vector<float> fused(dim, NAN), apart(dim, NAN);
  CpuWorkspace ws;
  forward_cpu(model.net, plan, x.data(), fused.data(), ws);
  forward_cpu(model.net, unfused, x.data(), apart.data(), ws);
  EXPECT_EQ(std::memcmp(fused.data(), apart.data(), sizeof(float) * dim), 0);
  expect_not_all_zero(apart);
}

// On the CPU the frozen convs' weights are packed once (PackedWeights), and features computed from
// them are those of weights packed on each call: with pieces and fused pairs, and with only the
// first ops packed (the frozen part when the later blocks are trained). Weights packed for other
// parameters are refused.
TEST(Plan, PackedWeightsGiveTheSameFeatures) {
  const int size = 96, n = 9;
  const Model model = random_lite0(size);
  const NetPlan plan = plan_net(model.net, n, size, size);
  ASSERT_FALSE(plan.pieces.empty());
  const int dim = model.net.feature_dim, ops = int(model.net.ops.size());
  const std::vector<float> x = random_images(n, size, 41);
  std::vector<std::vector<float>> storage;
  std::vector<float*> buffers;
  for (size_t numel : plan.buffer_numel) buffers.push_back(storage.emplace_back(numel).data());
  const float* params = model.net.params.data();
  std::vector<float> loose(size_t(n) * dim, NAN);
  forward(Device{}, model.net, plan, params, buffers.data(), x.data(), loose.data());
  expect_not_all_zero(loose);
  for (int until : {ops, ops / 2, 0}) {
    const PackedWeights packed = pack_weights(model.net, plan, params, until);
    EXPECT_EQ(packed.of(0) != nullptr, until > 0) << "op 0, the stem";
    EXPECT_EQ(packed.of(1), nullptr) << "op 1, a depthwise conv";
    std::vector<float> features(size_t(n) * dim, NAN);
    forward(Device{}, model.net, plan, params, buffers.data(), x.data(), features.data(), 0,
            &packed);
    EXPECT_EQ(std::memcmp(loose.data(), features.data(), sizeof(float) * n * dim), 0)
        << "ops [0, " << until << ") packed";
  }
  const std::vector<float> other = model.net.params;
  const PackedWeights elsewhere = pack_weights(model.net, plan, other.data(), ops);
  EXPECT_THROW(forward(Device{}, model.net, plan, params, buffers.data(), x.data(), loose.data(), 0,
                       &elsewhere),
               std::logic_error);
}

// No op may overwrite a buffer whose value is still to be read, nor write where it reads.
TEST(Plan, BufferSharingNeverClobbersLiveValues) {
  for (const std::string& arch : known_archs()) {
    Net net = build_arch(arch);
    NetPlan plan = plan_net(net, 3, 131, 97);
    std::vector<int> last_use(net.num_values, -1), produced(net.num_values, -1);
    for (size_t i = 0; i < net.ops.size(); ++i) {
      last_use[net.ops[i].input] = int(i);
      if (net.ops[i].residual >= 0) last_use[net.ops[i].residual] = int(i);
      produced[net.ops[i].output] = int(i);
    }
    for (size_t i = 0; i < net.ops.size(); ++i) {
      int b = plan.buffer_of[net.ops[i].output];
      if (b < 0) continue;
      EXPECT_GE(plan.buffer_numel[b], plan.values[net.ops[i].output].numel());
      for (int v = 1; v < net.num_values; ++v) {
        if (v == net.ops[i].output || plan.buffer_of[v] != b) continue;
        bool live = produced[v] < int(i) && last_use[v] >= int(i);
        EXPECT_FALSE(live) << arch << ": op " << i << " overwrites value " << v;
      }
    }
  }
}

// ---- Loader
// --------------------------------------------------------------------------------------

struct FileTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::vector<FileTensor> synthetic_tensors(const Net& net, int classes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<FileTensor> out;
  for (const auto& [name, shape] : expected_backbone_tensors(net)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    FileTensor t{name, shape, std::vector<float>(n)};
    const bool var = name.find("running_var") != std::string::npos;
    for (float& x : t.data) x = var ? 0.5f + 0.5f * std::abs(u(rng)) : 0.1f * u(rng);
    out.push_back(std::move(t));
  }
  if (classes > 0) {
    FileTensor w{"fc.weight",
                 {classes, net.feature_dim},
                 std::vector<float>(size_t(classes) * net.feature_dim)};
    for (float& x : w.data) x = 0.05f * u(rng);
    FileTensor b{"fc.bias", {classes}, std::vector<float>(classes, 0.01f)};
    out.push_back(std::move(w));
    out.push_back(std::move(b));
  }
  return out;
}

std::map<std::string, std::string> base_metadata(const std::string& arch) {
  return {{"format", "graft"},
          {"format_version", "1"},
          {"arch", arch},
          {"padding", "symmetric"},
          {"bn_eps", "1e-05"},
          {"input_size", "224"},
          {"labels", "[\"a\", \"b\", \"c\"]"}};
}

std::string write_model(const std::string& file, const std::vector<FileTensor>& tensors,
                        const std::map<std::string, std::string>& meta) {
  std::string path = testing::TempDir() + "/" + file;
  std::vector<TensorToWrite> w;
  for (const auto& t : tensors)
    w.push_back({t.name, DType::f32, t.shape, t.data.data(), t.data.size() * sizeof(float)});
  write_weights(path, w, meta);
  return path;
}

void expect_model_error(const std::string& path, const std::string& fragment) {
  try {
    load_model(path);
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

class Loader : public testing::Test {
 protected:
  Net net = build_arch("mobilenet_v2");
  std::vector<FileTensor> tensors = synthetic_tensors(net, 3, 7);
  std::map<std::string, std::string> meta = base_metadata("mobilenet_v2");
};

TEST_F(Loader, ValidFileLoadsAndFoldsBatchNorm) {
  std::string path = write_model("valid.safetensors", tensors, meta);
  Model m = load_model(path);
  EXPECT_EQ(m.net.arch, "mobilenet_v2");
  EXPECT_EQ(m.fc.out, 3);
  EXPECT_EQ(m.labels.size(), 3u);
  EXPECT_EQ(m.file_tensor_count, tensors.size());

  // Stem: folded HWIO weight (ky, kx, ci, o) = w[o][ci][ky][kx] * gamma / sqrt(var + eps).
  auto get = [&](const std::string& n) -> const FileTensor& {
    for (const auto& t : tensors)
      if (t.name == n) return t;
    throw std::runtime_error(n);
  };
  const auto& w = get("stem.conv.weight");
  const auto& g = get("stem.bn.weight");
  const auto& b = get("stem.bn.bias");
  const auto& mu = get("stem.bn.running_mean");
  const auto& var = get("stem.bn.running_var");
  const float* hwio = m.net.params.data() + m.net.w_off[0];
  const float* bias = m.net.params.data() + m.net.b_off[0];
  for (int o : {0, 5, 31})
    for (int ci : {0, 2})
      for (int ky : {0, 1, 2})
        for (int kx : {0, 2}) {
          double s = g.data[o] / std::sqrt(double(var.data[o]) + 1e-5);
          double expect = w.data[((o * 3 + ci) * 3 + ky) * 3 + kx] * s;
          EXPECT_NEAR(hwio[((ky * 3 + kx) * 3 + ci) * 32 + o], expect, 1e-6);
        }
  for (int o : {0, 17}) {
    double s = g.data[o] / std::sqrt(double(var.data[o]) + 1e-5);
    EXPECT_NEAR(bias[o], b.data[o] - mu.data[o] * s, 1e-6);
  }
}

TEST_F(Loader, MissingTensor) {
  tensors.erase(tensors.begin() + 10);
  std::string name = expected_backbone_tensors(net).begin()->first;
  std::string path = write_model("missing.safetensors", tensors, meta);
  expect_model_error(path, "is missing");
}

TEST_F(Loader, UnexpectedTensor) {
  tensors.push_back({"blocks.99.dw.conv.weight", {4}, {1, 2, 3, 4}});
  expect_model_error(write_model("extra.safetensors", tensors, meta),
                     "'blocks.99.dw.conv.weight' is unexpected for arch mobilenet_v2");
}

TEST_F(Loader, ShapeMismatch) {
  for (auto& t : tensors)
    if (t.name == "blocks.3.dw.bn.weight") {
      t.shape = {t.shape[0] - 1};
      t.data.pop_back();
    }
  expect_model_error(write_model("shape.safetensors", tensors, meta),
                     "tensor 'blocks.3.dw.bn.weight' has shape");
}

TEST_F(Loader, UnknownAndMissingArch) {
  meta["arch"] = "vgg16";
  expect_model_error(write_model("arch.safetensors", tensors, meta), "unknown arch 'vgg16'");
  meta.erase("arch");
  expect_model_error(write_model("noarch.safetensors", tensors, meta), "metadata has no 'arch'");
}

TEST_F(Loader, BadMetadataValues) {
  auto m2 = meta;
  m2["padding"] = "valid";
  expect_model_error(write_model("pad.safetensors", tensors, m2), "'padding'");
  m2 = meta;
  m2["mean"] = "0.5,0.5";
  expect_model_error(write_model("mean.safetensors", tensors, m2), "'mean'");
  m2 = meta;
  m2["std"] = "0.2,0,0.2";
  expect_model_error(write_model("std.safetensors", tensors, m2), "'std'");
  m2 = meta;
  m2["labels"] = "[\"a\", \"b\"]";
  expect_model_error(write_model("labels.safetensors", tensors, m2), "2 labels");
  m2 = meta;
  m2["labels"] = "not json";
  expect_model_error(write_model("labels2.safetensors", tensors, m2), "'labels'");
  m2 = meta;
  m2["input_size"] = "2.5e9";
  expect_model_error(write_model("size.safetensors", tensors, m2), "'input_size'");
}

TEST_F(Loader, NonFiniteAndNegativeVariance) {
  auto t2 = tensors;
  for (auto& t : t2)
    if (t.name == "blocks.2.project.conv.weight") t.data[5] = NAN;
  expect_model_error(write_model("nan.safetensors", t2, meta), "NaN");
  t2 = tensors;
  for (auto& t : t2)
    if (t.name == "head.bn.running_var") t.data[0] = -1.f;
  expect_model_error(write_model("var.safetensors", t2, meta), "negative variance");
}

TEST(LoaderFile, NotAWeightFile) {
  std::string path = testing::TempDir() + "/notes.safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("this is not a weight file at all", f);
  std::fclose(f);
  expect_model_error(path, path);
  expect_model_error(testing::TempDir() + "/does-not-exist.safetensors", "does-not-exist");
}

}  // namespace
}  // namespace graft
