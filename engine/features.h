#pragma once
// Frozen-backbone feature extraction on a Device: decoded batches in (from io/loader.h), pooled
// feature vectors out.
#include <map>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/stages.h"

namespace graft {

// Owns its device memory and event; destroying it waits for the device's work on them first.
struct FeatureExtractor {
  FeatureExtractor() = default;
  FeatureExtractor(const FeatureExtractor&) = delete;
  FeatureExtractor& operator=(const FeatureExtractor&) = delete;
  ~FeatureExtractor();
  Device dev;
  const Model* model = nullptr;
  int batch = 0;
  Arena arena;                    // params, activations, input on the device
  float* params = nullptr;        // folded backbone parameters on the device (trained ones move)
  int keep_from = -1;             // ops from here on are trained: their values are kept
  std::vector<float*> buffers;    // activation buffers for the largest batch
  uint8_t* images_dev = nullptr;  // [batch][size][size][3]
  float* input_dev = nullptr;     // normalised input
  Event images_consumed;          // compute stream: images_dev has been read (normalised)
  std::map<int, NetPlan> plans;   // by batch size (the last batch may be partial)
  PackedWeights packed;           // CPU: the frozen convs' weights, packed once
};

// keep_from: the first trained op, whose values (and those of every op after it) the plan keeps
// for backward (engine/backprop.h); -1 when the whole backbone is frozen.
void extractor_create(FeatureExtractor& fe, const Device& dev, const Model& model, int batch,
                      int keep_from = -1);

// Runs the backbone on a batch slot of the streaming loader (n preprocessed uint8 images
// [n][size][size][3]; pinned memory on cuda). The copy runs on the copy stream and overlaps the
// previous batch's backbone; `copied` is recorded after it, so the caller must
// event_synchronize(copied) before reusing the slot. features_dev: [n][feature_dim].
// clock (may be null) gets the copy and backbone stages.
void extract_from_slot(FeatureExtractor& fe, const uint8_t* images, int n, float* features_dev,
                       Event& copied, StageClock* clock = nullptr);

// Where value v of the op list lives for a batch (the normalised input for v = 0): the feature
// cache stores and restores the activation that enters the first trained op here.
float* extractor_value(FeatureExtractor& fe, int value);
// Runs the ops from from_op on, their input (extractor_value) already in place: [n] rows.
void extract_from_op(FeatureExtractor& fe, int n, int from_op, float* features_dev,
                     StageClock* clock = nullptr);

}  // namespace graft
