#pragma once
// The network graft trains and runs, as one description: the backbone's planned op list
// (engine/net.h, walked by engine/forward.h) followed by the head's layers (engine/head.h), ending
// in the loss. Training, evaluation and prediction all run it through network_forward, on either
// device; a training step is three visible calls:
//
//   network_forward(dev, net, in, pass)   input to loss; the trainable layers keep their inputs
//   network_backward(dev, net, pass)      the loss gradient back through every trainable layer
//   network_update(dev, net, opt, lr)     every trainable tensor, in one optimiser launch
//
// There is no zero-grad call: every backward op overwrites its gradient (kernels/ops.h). The
// backbone is frozen (inference mode, batch norm folded into the convs), so its forward keeps no
// activations and backward stops at the head.
#include <cstdint>
#include <vector>

#include "engine/device.h"
#include "engine/features.h"
#include "engine/head.h"
#include "engine/model.h"
#include "engine/stages.h"

namespace graft {

struct Network {
  FeatureExtractor backbone;        // frozen: runs the Model's op list, keeps nothing
  Arena arena;                      // the head (weights, gradients, optimiser state), features
  Head head;                        // trainable
  float* features = nullptr;        // [batch][feature_dim]: the backbone's output, the head's input
  std::vector<ParamRef> trainable;  // every trainable tensor (empty when made for inference)
};

// One batch's input: n decoded images [n][size][size][3] in a loader slot (pinned on cuda; their
// copy overlaps the previous batch's compute and `copied` is recorded once it has landed), or n
// rows of the backbone's output from the feature cache (the backbone is skipped).
struct NetworkInput {
  int n = 0;
  const uint8_t* images = nullptr;
  Event* copied = nullptr;
  const float* features = nullptr;
  const int32_t* labels = nullptr;  // [n] on the device, or null (prediction)
};

// Sizes the network for batches of up to `batch` images and uploads the model's parameters.
// head: the shape of the head; its weights are Glorot-initialised from `seed` (training) or, with
// the model's own classifier, replaced by network_load_head. opt: the optimiser whose tensors
// network_update will step, or null for a network that only runs forward.
void network_create(Network& net, const Device& dev, const Model& model, const HeadShape& head,
                    int batch, uint64_t seed, const OptimConfig* opt);

// Forward through every layer (the backbone only for images). Leaves the logits in
// net.head.s.logits [n][classes]; with labels, the per-row loss in loss [n] (and, training, the
// loss gradient for backward) and, with confusion, the predictions counted. clock (may be null)
// gets the copy, backbone and head stages.
void network_forward(const Device& dev, Network& net, const NetworkInput& in, const HeadPass& pass,
                     float* loss, int64_t* confusion, StageClock* clock = nullptr);
// Gradients of every trainable tensor, from the last training forward (same n, same pass).
void network_backward(const Device& dev, Network& net, int n, const HeadPass& pass,
                      StageClock* clock = nullptr);
// One optimiser step of every trainable tensor.
void network_update(const Device& dev, Network& net, const OptimConfig& opt, float lr,
                    StageClock* clock = nullptr);

}  // namespace graft
