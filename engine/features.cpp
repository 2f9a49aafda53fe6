#include "engine/features.h"

#include <algorithm>
#include <cstring>

#include "engine/forward.h"

namespace graft {

void extractor_create(FeatureExtractor& fe, const Device& dev, const Model& model, int batch,
                      int keep_from) {
  fe.dev = dev;
  fe.model = &model;
  fe.batch = batch;
  fe.keep_from = keep_from;
  const int size = model.preprocess.size;
  const NetPlan& plan = fe.plans[batch] =
      plan_net(model.net, batch, size, size, keep_from, !dev.is_cuda());
  const size_t pixels = size_t(batch) * size * size * 3;
  size_t bytes = model.net.params.size() * 4 + pixels + pixels * 4 + 64 * 4;
  for (size_t n : plan.buffer_numel) bytes += n * 4 + 64;
  arena_reserve(fe.arena, dev, bytes);
  float* params = arena_alloc<float>(fe.arena, model.net.params.size());
  copy_to_device(dev, params, model.net.params.data(), model.net.params.size() * 4);
  fe.params = params;
  for (size_t n : plan.buffer_numel) fe.buffers.push_back(arena_alloc<float>(fe.arena, n));
  // Ops before keep_from never change: on the CPU their weights are packed once, here.
  if (!dev.is_cuda())
    fe.packed = pack_weights(model.net, plan, params,
                             keep_from >= 0 ? keep_from : int(model.net.ops.size()));
  fe.images_dev = arena_alloc<uint8_t>(fe.arena, pixels);
  fe.input_dev = arena_alloc<float>(fe.arena, pixels);
  event_create(dev, fe.images_consumed);
  synchronize(dev);
}

FeatureExtractor::~FeatureExtractor() {
  // The arena and event go with their members; kernels still reading them must finish first.
  if (arena.base) synchronize(dev);
}

namespace {

const NetPlan& plan_for(FeatureExtractor& fe, int n) {
  auto it = fe.plans.find(n);
  if (it == fe.plans.end()) {
    const int size = fe.model->preprocess.size;
    it =
        fe.plans.emplace(n, plan_net(fe.model->net, n, size, size, fe.keep_from, !fe.dev.is_cuda()))
            .first;
  }
  return it->second;
}

// Normalise and run the backbone on images already in fe.images_dev.
void run_backbone(FeatureExtractor& fe, int n, float* features_dev) {
  const Model& m = *fe.model;
  const int size = m.preprocess.size;
  const NetPlan& plan = plan_for(fe, n);
  const int64_t pixels = int64_t(n) * size * size;
  op_normalize_u8(fe.dev, pixels, 3, fe.images_dev, m.preprocess.mean, m.preprocess.std,
                  fe.input_dev);
  event_record(fe.dev, fe.images_consumed, Lane::compute);
  forward(fe.dev, m.net, plan, fe.params, fe.buffers.data(), fe.input_dev, features_dev, 0,
          fe.dev.is_cuda() ? nullptr : &fe.packed);
}

}  // namespace

float* extractor_value(FeatureExtractor& fe, int value) {
  if (value == 0) return fe.input_dev;
  return fe.buffers[fe.plans.at(fe.batch).buffer_of[value]];
}

void extract_from_op(FeatureExtractor& fe, int n, int from_op, float* features_dev,
                     StageClock* clock) {
  if (clock) stage_mark(*clock, Stage::backbone, true, Lane::compute);
  forward(fe.dev, fe.model->net, plan_for(fe, n), fe.params, fe.buffers.data(), fe.input_dev,
          features_dev, from_op, fe.dev.is_cuda() ? nullptr : &fe.packed);
  if (clock) stage_mark(*clock, Stage::backbone, false, Lane::compute);
}

void extract_from_slot(FeatureExtractor& fe, const uint8_t* images, int n, float* features_dev,
                       Event& copied, StageClock* clock) {
  const int size = fe.model->preprocess.size;
  // The copy may start as soon as the previous batch has been normalised: it overlaps that
  // batch's backbone, the expensive part.
  stream_wait(fe.dev, fe.images_consumed, Lane::copy);
  if (clock) stage_mark(*clock, Stage::copy, true, Lane::copy);
  copy_to_device_async(fe.dev, Lane::copy, fe.images_dev, images, size_t(n) * size * size * 3);
  if (clock) stage_mark(*clock, Stage::copy, false, Lane::copy);
  event_record(fe.dev, copied, Lane::copy);
  stream_wait(fe.dev, copied, Lane::compute);
  if (clock) stage_mark(*clock, Stage::backbone, true, Lane::compute);
  run_backbone(fe, n, features_dev);
  if (clock) stage_mark(*clock, Stage::backbone, false, Lane::compute);
}

}  // namespace graft
