// The forward pass against the original PyTorch implementations, and the pretrained model on real
// photos. Fixtures (tests/fixtures/<arch>.safetensors: an NHWC input and PyTorch's logits) are
// recorded by tools/make_fixtures.py. Weights: the real pretrained EfficientNet-Lite0 fetched by
// scripts/setup.sh, and deterministic synthetic weights for the other architectures, regenerated
// at test time by tests/py/make_synth_models.py (numpy only) through the converter.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "engine/classify.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "io/safetensors.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

const std::string kSource = GRAFT_SOURCE_DIR;
const std::string kBinary = GRAFT_BINARY_DIR;

std::string weights_for(const std::string& arch) {
  if (arch == "efficientnet_lite0") return kSource + "/models/efficientnet_lite0.safetensors";
  return kBinary + "/test-models/" + arch + ".safetensors";
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

class Fixture : public testing::TestWithParam<std::string> {};

TEST_P(Fixture, LogitsMatchPyTorch) {
  const std::string arch = GetParam();
  const std::string fixture = kSource + "/tests/fixtures/" + arch + ".safetensors";
  const std::string weights = weights_for(arch);
  ASSERT_TRUE(fs::exists(fixture)) << fixture << " is missing: run tools/make_fixtures.py";
  if (!fs::exists(weights))
    GTEST_SKIP() << weights << " is absent (scripts/setup.sh and the synth_models test make it)";

  Model model = load_model(weights);
  WeightFile fx = open_weights(fixture);
  const TensorView* in = find_tensor(fx, "input");
  const TensorView* out = find_tensor(fx, "logits");
  ASSERT_TRUE(in && out);
  ASSERT_EQ(in->shape.size(), 4u);
  const int n = int(in->shape[0]), h = int(in->shape[1]), w = int(in->shape[2]);
  ASSERT_EQ(in->shape[3], 3);
  ASSERT_EQ(out->shape, (std::vector<int64_t>{n, model.fc.out}));

  std::vector<float> x = tensor_to_f32(*in), want = tensor_to_f32(*out);
  NetPlan plan = plan_net(model.net, n, h, w);
  CpuWorkspace ws;
  std::vector<float> features(size_t(n) * model.net.feature_dim, NAN);
  forward_cpu(model.net, plan, x.data(), features.data(), ws);
  std::vector<float> logits(size_t(n) * model.fc.out, NAN);
  cpu::linear(n, model.fc.in, model.fc.out, features.data(), model.fc.w.data(), model.fc.b.data(),
              logits.data());
  const double err = relative_error(logits, want);
  // The bound the design asks for; fp32 with a different summation order lands near 1e-6.
  EXPECT_LT(err, 1e-4) << arch << " at " << h << "x" << w;
  std::printf("%s: %dx%d batch %d, relative error %.3g\n", arch.c_str(), h, w, n, err);
}

INSTANTIATE_TEST_SUITE_P(Archs, Fixture,
                         testing::Values("efficientnet_lite0", "efficientnet_lite1", "mobilenet_v2",
                                         "resnet18", "resnet50"),
                         [](const auto& info) { return info.param; });

// The pretrained EfficientNet-Lite0 names what is in real photos (scikit-image's sample photos,
// fetched by scripts/setup.sh).
TEST(RealPhotos, PretrainedLite0NamesTheSubject) {
  const std::string weights = weights_for("efficientnet_lite0");
  const std::string photos = kSource + "/.cache/photos";
  if (!fs::exists(weights) || !fs::exists(photos))
    GTEST_SKIP() << "run scripts/setup.sh to fetch the weights and photos";
  Model model = load_model(weights);
  ASSERT_EQ(model.labels.size(), 1000u);

  // Each photo and the ImageNet classes that count as right for it (top-1 must be one of them).
  const std::vector<std::pair<std::string, std::set<std::string>>> cases = {
      {"chelsea.png", {"tabby", "tiger cat", "Egyptian cat"}},
      {"coffee.png", {"espresso", "cup", "coffee mug"}},
      {"rocket.jpg", {"missile", "projectile", "space shuttle"}},
      {"motorcycle_left.png", {"moped", "motor scooter", "crash helmet", "disk brake"}},
  };
  const int size = model.preprocess.size;
  std::vector<uint8_t> batch(cases.size() * size * size * 3);
  for (size_t i = 0; i < cases.size(); ++i) {
    Image img = load_image_for(photos + "/" + cases[i].first, model.preprocess, DecodeLimits{});
    preprocess_image(img, model.preprocess, batch.data() + i * size * size * 3);
  }
  ClassifyWorkspace ws;
  const auto& logits = classify_logits(model, batch.data(), int(cases.size()), ws);
  std::vector<float> probs(logits.size());
  cpu::softmax(int(cases.size()), model.fc.out, logits.data(), probs.data());
  for (size_t i = 0; i < cases.size(); ++i) {
    const float* row = probs.data() + i * model.fc.out;
    int best = top_k(row, model.fc.out, 1)[0];
    std::printf("%s -> %s (%.3f)\n", cases[i].first.c_str(), model.labels[best].c_str(), row[best]);
    EXPECT_TRUE(cases[i].second.count(model.labels[best]))
        << cases[i].first << " was classified as " << model.labels[best];
  }
}

}  // namespace
}  // namespace graft
