#pragma once
// Inference with a loaded model on the CPU: preprocessed uint8 images in, class probabilities out.
#include <cstdint>
#include <vector>

#include "engine/forward.h"
#include "engine/model.h"

namespace graft {

// Reusable buffers for one batch size, so repeated calls allocate nothing.
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
