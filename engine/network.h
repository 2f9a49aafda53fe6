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
// There is no zero-grad call: every backward op overwrites its gradient (kernels/ops.h).
// Fine-tuning trains the last blocks of the backbone too (engine/backprop.h): the forward keeps the
// activations of every trained op and backward continues from the head into them. The frozen
// blocks before them keep nothing, and batch norm stays frozen everywhere (folded into the convs).
#include <cstdint>
#include <vector>

#include "engine/backprop.h"
#include "engine/device.h"
#include "engine/features.h"
#include "engine/head.h"
#include "engine/model.h"
#include "engine/stages.h"

namespace graft {

// Which blocks of the backbone train with the head, and at what fraction of its learning rate.
struct FineTune {
  int blocks = 0;  // the backbone's last blocks (first_trainable_op of engine/net.h); 0: none
  float lr_scale = 0.1f;  // the backbone's learning rate over the head's
};

struct Network {
  FeatureExtractor backbone;        // runs the Model's op list
  Arena arena;                      // the head (weights, gradients, optimiser state), features
  Head head;                        // trainable
  float* features = nullptr;        // [batch][feature_dim]: the backbone's output, the head's input
  std::vector<ParamRef> trainable;  // every trainable tensor (empty when made for inference)

  // The trained part of the backbone: ops [bp.first_op, end), none when first_op is the op count.
  // Its gradients, moments and backward buffers live in train_arena.
  BackpropPlan bp;
  Arena train_arena;
  std::vector<float*> value_grads;                   // per bp.grad_numel entry
  BackpropBuffers bb;                                // what backbone_backward reads and writes
  float* dfeatures = nullptr;                        // [batch][feature_dim]: d loss / d features
  float *moments_m = nullptr, *moments_v = nullptr;  // the trained slice's optimiser state
  bool ran_backbone = false;                         // the last forward started from images
  // Off while the backbone waits for its turn (--freeze-epochs): backward stops at the head and
  // the update steps the head's tensors only (the first head_tensors of trainable).
  bool train_backbone = true;
  size_t head_tensors = 0;
  // The value the frozen ops hand to the trained ones, when there is exactly one (-1 otherwise):
  // the feature cache stores it.
  int boundary_value = -1;
};
bool backbone_trained(const Network& net);

// One batch's input: n decoded images [n][size][size][3] in a loader slot (pinned on cuda; their
// copy overlaps the previous batch's compute and `copied` is recorded once it has landed), or n
// rows from the feature cache, already in network_cache_slot: what the frozen part of the network
// computes, so that it is skipped (the features when the whole backbone is frozen, else the
// activation entering the first trained block).
struct NetworkInput {
  int n = 0;
  const uint8_t* images = nullptr;
  Event* copied = nullptr;
  bool cached = false;
  const int32_t* labels = nullptr;  // [n] on the device, or null (prediction)
};

// Sizes the network for batches of up to `batch` images and uploads the model's parameters.
// head: the shape of the head; its weights are Glorot-initialised from `seed` (for inference the
// caller then uploads the model's own with head_upload). opt: the optimiser whose tensors
// network_update will step, or null for a network that only runs forward. fine_tune: the
// backbone's blocks that train with the head. Out of memory names --batch-size and --fine-tune.
void network_create(Network& net, const Device& dev, const Model& model, const HeadShape& head,
                    int batch, uint64_t seed, const OptimConfig* opt,
                    const FineTune& fine_tune = FineTune{});
// Whether the trained blocks train now (see Network::train_backbone).
void network_train_backbone(Network& net, bool on);

// The feature cache's row: floats per image of what the frozen part computes (the features, or
// the boundary activation when blocks train), 0 when it cannot be cached (more than one value
// crosses into the trained blocks). The cached rows of a batch go to network_cache_slot [n][row]
// (after a forward from images it holds that batch's rows, to store).
size_t network_cache_row(const Network& net);
float* network_cache_slot(Network& net);

// Forward through every layer (the backbone only for images). Leaves the logits in
// net.head.s.logits [n][classes]; with labels, the per-row loss in loss [n] (and, training, the
// loss gradient for backward) and, with confusion, the predictions counted. clock (may be null)
// gets the copy, backbone and head stages.
void network_forward(const Device& dev, Network& net, const NetworkInput& in, const HeadPass& pass,
                     float* loss, int64_t* confusion, StageClock* clock = nullptr);
// Gradients of every trainable tensor, from the last training forward (same n, same pass; with a
// trained backbone that forward must have run it, from images rather than cached features).
void network_backward(const Device& dev, Network& net, int n, const HeadPass& pass,
                      StageClock* clock = nullptr);
// One optimiser step of every trainable tensor.
void network_update(const Device& dev, Network& net, const OptimConfig& opt, float lr,
                    StageClock* clock = nullptr);

}  // namespace graft
