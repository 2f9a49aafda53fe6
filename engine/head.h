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

// One training step on n rows of features [n][in] with labels (both on the device). Writes the
// per-row loss to loss_out [n] and accumulates the (dropout-on) predictions into confusion.
// dropout_counter makes the masks depend on (seed, global step) only.
// clock (may be null) gets the head (forward and backward) and optimiser stages.
void head_train_step(const Device& dev, Head& head, const OptimConfig& opt, int n,
                     const float* features, const int32_t* labels, float dropout, float smoothing,
                     float lr, uint64_t seed, uint64_t dropout_counter, float* loss_out,
                     int64_t* confusion, StageClock* clock = nullptr);

// Inference: logits [n][classes] into head.s.logits; with labels, also the per-row loss and,
// when confusion is not null, the confusion counts.
void head_eval(const Device& dev, const Head& head, int n, const float* features,
               const int32_t* labels, float smoothing, float* loss_out, int64_t* confusion);

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
