#pragma once
// The new classifier grafted onto the frozen backbone: Dropout -> [Dense + ReLU -> Dropout] ->
// Dense(classes), as in Model Maker / Keras transfer-learning tutorials (the bracket is the
// optional hidden layer). Parameters, gradients and optimiser state live in one Arena on the
// training device; the step itself is written once against Device.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/model.h"
#include "engine/stages.h"

namespace graft {

struct HeadShape {
  int in = 0;      // feature size of the backbone
  int hidden = 0;  // 0: no hidden layer
  int classes = 0;
};

struct OptimConfig {
  std::string optimizer = "sgd";  // sgd | adamw
  float momentum = 0.9f;
  // SGD: Keras-style L2 on the dense kernels (loss += l2 * sum(w^2), so the gradient gains
  // 2 * l2 * w; biases are not regularised). AdamW: decoupled weight decay on the kernels.
  float l2 = 1e-4f;
  float weight_decay = 0.01f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-7f;
};

struct HeadTensors {
  // Each on the device: w [out][in], b [out], and per-tensor gradient and optimiser state.
  float *w1 = nullptr, *b1 = nullptr, *w2 = nullptr, *b2 = nullptr;
  float *gw1 = nullptr, *gb1 = nullptr, *gw2 = nullptr, *gb2 = nullptr;
  float *mw1 = nullptr, *mb1 = nullptr, *mw2 = nullptr, *mb2 = nullptr;
  float *vw1 = nullptr, *vb1 = nullptr, *vw2 = nullptr, *vb2 = nullptr;
};

// Scratch for one step of up to `batch` rows.
struct HeadScratch {
  float *x_drop = nullptr, *h = nullptr, *h_drop = nullptr, *logits = nullptr;
  float *dlogits = nullptr, *dh = nullptr;
};

struct Head {
  HeadShape shape;
  HeadTensors t;
  HeadScratch s;
  int batch = 0;
  int64_t step = 0;  // optimiser steps taken (AdamW's bias correction)
};

// Bytes of arena a head needs for the given batch.
size_t head_arena_bytes(const HeadShape& shape, int batch);
// Carves the head out of the arena and initialises it: Glorot-uniform kernels from a Philox
// stream keyed by `seed` (identical on both devices), zero biases and optimiser state.
void head_create(Head& head, Arena& arena, const HeadShape& shape, int batch, uint64_t seed);

// How a forward pass runs: training draws dropout masks and keeps what backward needs; eval does
// neither (dropout is the identity).
struct HeadPass {
  bool training = false;
  float dropout = 0.f;             // training only
  uint64_t seed = 0, counter = 0;  // dropout masks depend on (seed, counter) only
  float smoothing = 0.f;           // label smoothing of the loss
};

// Forward on n rows of features [n][in] (on the device): logits [n][classes] into head.s.logits;
// with labels, the per-row loss into loss_out [n] and, training, the loss gradient into
// head.s.dlogits (scaled by 1/n, the mean); with confusion, the predictions are counted.
void head_forward(const Device& dev, Head& head, const HeadPass& pass, int n, const float* features,
                  const int32_t* labels, float* loss_out, int64_t* confusion);
// Gradients of the head's tensors from head.s.dlogits, through the layers the last training
// forward ran (the same features, same dropout masks). dfeatures [n][in], the gradient flowing into
// the backbone, may be null. Gradients are overwritten, never accumulated: no zero-grad step.
void head_backward(const Device& dev, Head& head, const HeadPass& pass, int n, float* dfeatures);
// The head's trainable tensors for the optimiser: weight, gradient, moments and decay (the
// kernels get opt's L2 or weight decay, the biases none).
std::vector<ParamRef> head_params(const Head& head, const OptimConfig& opt);

// One optimiser update of every tensor in params, in one launch; step counts updates (AdamW's
// bias correction), 1-based.
void optimizer_update(const Device& dev, const OptimConfig& opt, const ParamRef* params,
                      size_t count, float lr, int64_t step);

// Every tensor of the head's training state (weights and optimiser moments) by name, on the
// host: what a checkpoint must hold to continue a run exactly. Names: "w1", "b1" (hidden layer,
// when present), "w2", "b2", each also with an "m." and "v." prefix.
std::vector<std::pair<std::string, std::vector<float>>> head_state(const Device& dev,
                                                                   const Head& head);
// Restores what head_state returned (the names and sizes must match the head's shape).
void head_restore(const Device& dev, Head& head,
                  const std::vector<std::pair<std::string, std::vector<float>>>& state,
                  int64_t step);

// Host copies of the head's weights, as Dense layers (for checkpoints and export).
void head_download(const Device& dev, const Head& head, Dense* hidden, Dense* out);
void head_upload(const Device& dev, Head& head, const Dense& hidden, const Dense& out);

}  // namespace graft
