// Classifier (what graft predict runs: the backbone and head through the device-dispatched ops of
// train and eval) against classify_logits, its plain CPU twin, on real photos: the same
// probabilities on the CPU within 1e-5, and on the GPU within 1e-4 (skipped without a GPU, unless
// GRAFT_REQUIRE_GPU=1 makes that a failure). The photos and weights come from scripts/setup.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/classify.h"
#include "engine/model.h"
#include "io/image.h"
#include "tests/test_util.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

const std::string kSource = GRAFT_SOURCE_DIR;
const std::string kWeights = kSource + "/models/efficientnet_lite0.safetensors";
const std::string kPhotos = kSource + "/.cache/photos";

// The sample photos, sorted, preprocessed into one batch.
struct Photos {
  std::vector<std::string> names;
  std::vector<uint8_t> pixels;
};

Photos load_photos(const Model& model) {
  Photos p;
  for (const auto& e : fs::directory_iterator(kPhotos))
    if (e.is_regular_file()) p.names.push_back(e.path().string());
  std::sort(p.names.begin(), p.names.end());
  const size_t bytes = size_t(model.preprocess.size) * model.preprocess.size * 3;
  p.pixels.resize(p.names.size() * bytes);
  for (size_t i = 0; i < p.names.size(); ++i) {
    Image img = load_image_for(p.names[i], model.preprocess, DecodeLimits{});
    preprocess_image(img, model.preprocess, p.pixels.data() + i * bytes);
  }
  return p;
}

std::vector<float> softmax_rows(const std::vector<float>& logits, int n, int c) {
  std::vector<float> probs(size_t(n) * c);
  cpu::softmax(n, c, logits.data(), probs.data());
  return probs;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class RealPhotos : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kWeights) || !fs::is_directory(kPhotos))
      GTEST_SKIP() << kWeights << " or " << kPhotos << " is absent: run scripts/setup.sh";
    model = load_model(kWeights);
    photos = load_photos(model);
    ASSERT_GE(photos.names.size(), 3u);
    n = int(photos.names.size());
    ClassifyWorkspace ws;
    twin = softmax_rows(classify_logits(model, photos.pixels.data(), n, ws), n, model.fc.out);
  }

  // Probabilities from Classifier on `device`, batch by batch (the last one partial when `batch`
  // does not divide the photo count).
  std::vector<float> classifier_probs(const std::string& device, int batch) {
    Classifier c;
    classifier_create(c, device, model, batch);
    std::vector<float> out;
    const size_t bytes = size_t(model.preprocess.size) * model.preprocess.size * 3;
    for (int start = 0; start < n; start += batch) {
      const int m = std::min(batch, n - start);
      const auto& logits = classifier_logits(c, photos.pixels.data() + start * bytes, m);
      EXPECT_EQ(logits.size(), size_t(m) * model.fc.out);
      const std::vector<float> p = softmax_rows(logits, m, model.fc.out);
      out.insert(out.end(), p.begin(), p.begin() + size_t(m) * model.fc.out);
    }
    return out;
  }

  Model model;
  Photos photos;
  int n = 0;
  std::vector<float> twin;  // [n][classes] from the CPU twin
};

TEST_F(RealPhotos, ClassifierOnTheCpuMatchesTheTwin) {
  for (int batch : {n, 2}) {
    const std::vector<float> got = classifier_probs("cpu", batch);
    ASSERT_EQ(got.size(), twin.size());
    EXPECT_LE(max_abs_diff(got, twin), 1e-5f) << "batch " << batch;
  }
}

TEST_F(RealPhotos, ClassifierOnTheGpuMatchesTheTwin) {
  std::string why;
  if (!cuda_available(&why)) {
    const char* req = std::getenv("GRAFT_REQUIRE_GPU");
    if (req && std::string(req) == "1") FAIL() << "GRAFT_REQUIRE_GPU=1 but " << why;
    GTEST_SKIP() << why;
  }
  // A small run (GRAFT_TEST_SHAPES=small: the sanitized emulation, where one photo through the
  // network takes seconds) keeps three photos in batches of two, a partial batch included.
  if (test::small_run()) {
    n = 3;
    twin.resize(size_t(n) * model.fc.out);
  }
  for (int batch : test::small_run() ? std::vector<int>{2} : std::vector<int>{n, 2}) {
    const std::vector<float> got = classifier_probs("cuda", batch);
    ASSERT_EQ(got.size(), twin.size());
    EXPECT_LE(max_abs_diff(got, twin), 1e-4f) << "batch " << batch;
    // The top class is the same photo by photo.
    for (int i = 0; i < n; ++i) {
      const int c = model.fc.out;
      EXPECT_EQ(top_k(got.data() + size_t(i) * c, c, 1), top_k(twin.data() + size_t(i) * c, c, 1))
          << photos.names[i];
    }
  }
}

TEST_F(RealPhotos, ClassifierRefusesMoreImagesThanItsBatch) {
  Classifier c;
  classifier_create(c, "cpu", model, 2);
  EXPECT_THROW(classifier_logits(c, photos.pixels.data(), 3), std::invalid_argument);
  EXPECT_THROW(classifier_logits(c, photos.pixels.data(), 0), std::invalid_argument);
}

}  // namespace
}  // namespace graft
