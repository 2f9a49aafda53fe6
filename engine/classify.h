#pragma once
// Inference with a loaded model: preprocessed uint8 images in, class logits out. Classifier runs on
// a Device through the same network_forward as train and eval (engine/network.h); classify_logits
// is its plain CPU twin, kept as the reference the tests compare with.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/network.h"

namespace graft {

// Owns the device, the backbone's and the head's memory on it; the destructor releases them
// (after waiting for the device), also when classifier_create throws half-way.
struct Classifier {
  Classifier() = default;
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;
  Device dev;
  const Model* model = nullptr;  // the caller keeps it alive
  Network net;                   // inference only
  Event copied;                  // the images have reached the device
  std::vector<float> logits;     // host copy, [batch][classes]
};

// device: "auto", "cpu" or "cuda", as make_device takes it. batch: the most images per call.
// Throws for a model without a classifier, an unusable device or too little memory.
void classifier_create(Classifier& c, const std::string& device, const Model& model, int batch);

// images: n <= batch host images [n][size][size][3] as preprocess_image() makes them (pageable
// memory is fine: the call waits for the device before it returns). Returns the logits
// [n][classes] on the host.
const std::vector<float>& classifier_logits(Classifier& c, const uint8_t* images, int n);

// The CPU twin: plain loops, no Device. Reusable buffers for one batch size, so repeated calls
// allocate nothing.
struct ClassifyWorkspace {
  NetPlan plan;
  CpuWorkspace cpu;
  std::vector<float> input, features, hidden, logits;
};

// images: [n][size][size][3] uint8 as preprocess_image() makes them. Returns the model's
// classifier logits [n][fc.out] (features [n][feature_dim] stay in ws.features).
const std::vector<float>& classify_logits(const Model& model, const uint8_t* images, int n,
                                          ClassifyWorkspace& ws);

// Indices of the k largest values of row `row` of probs [rows][c], in descending order; ties keep
// the lower index first.
std::vector<int> top_k(const float* row, int c, int k);

}  // namespace graft
