#pragma once
// Frozen-backbone feature extraction on a Device: photos in, pooled feature vectors out.
// Decoding runs on the CPU threads (OpenMP, one image per thread, each into its own slot, so the
// batch content never depends on thread timing); the network runs on the device.
#include <map>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/model.h"

namespace graft {

struct FeatureExtractor {
  Device dev;
  const Model* model = nullptr;
  int batch = 0;
  Arena arena;                    // params, activations, input on the device
  const float* params = nullptr;  // folded backbone parameters on the device
  std::vector<float*> buffers;    // activation buffers for the largest batch
  uint8_t* images_dev = nullptr;  // [batch][size][size][3]
  float* input_dev = nullptr;     // normalised input
  std::vector<uint8_t> staging;   // host side of the images
  std::map<int, NetPlan> plans;   // by batch size (the last batch may be partial)
  DecodeLimits limits;
};

void extractor_create(FeatureExtractor& fe, const Device& dev, const Model& model, int batch);
void extractor_destroy(FeatureExtractor& fe);

// Decodes paths[0..n) (n <= batch) and writes the features of the ones that decode into
// features_dev rows [0, valid). ok[i] tells which decoded; a failure's message goes to errors.
// Returns the number of valid rows. With aug_keys (one per path), each image gets a random crop
// and flip drawn from its key (engine/augment.h) instead of the plain preprocessing.
int extract_features(FeatureExtractor& fe, const std::vector<const std::string*>& paths,
                     float* features_dev, std::vector<char>& ok, std::vector<std::string>& errors,
                     const uint64_t* aug_keys = nullptr);

// Runs the backbone on already-preprocessed uint8 images [n][size][size][3] on the host.
void extract_from_pixels(FeatureExtractor& fe, const uint8_t* images, int n, float* features_dev);

}  // namespace graft
