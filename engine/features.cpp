#include "engine/features.h"

#include <algorithm>
#include <cstring>

#include "engine/augment.h"
#include "engine/forward.h"

namespace graft {

void extractor_create(FeatureExtractor& fe, const Device& dev, const Model& model, int batch) {
  fe.dev = dev;
  fe.model = &model;
  fe.batch = batch;
  const int size = model.preprocess.size;
  const NetPlan& plan = fe.plans[batch] = plan_net(model.net, batch, size, size);
  const size_t pixels = size_t(batch) * size * size * 3;
  size_t bytes = model.net.params.size() * 4 + pixels + pixels * 4 + 64 * 4;
  for (size_t n : plan.buffer_numel) bytes += n * 4 + 64;
  arena_reserve(fe.arena, dev, bytes);
  float* params = arena_alloc<float>(fe.arena, model.net.params.size());
  copy_to_device(dev, params, model.net.params.data(), model.net.params.size() * 4);
  fe.params = params;
  for (size_t n : plan.buffer_numel) fe.buffers.push_back(arena_alloc<float>(fe.arena, n));
  fe.images_dev = arena_alloc<uint8_t>(fe.arena, pixels);
  fe.input_dev = arena_alloc<float>(fe.arena, pixels);
  fe.staging.resize(pixels);
  synchronize(dev);
}

void extractor_destroy(FeatureExtractor& fe) {
  arena_release(fe.arena);
  fe.buffers.clear();
  fe.plans.clear();
}

void extract_from_pixels(FeatureExtractor& fe, const uint8_t* images, int n, float* features_dev) {
  const Model& m = *fe.model;
  const int size = m.preprocess.size;
  auto it = fe.plans.find(n);
  if (it == fe.plans.end()) it = fe.plans.emplace(n, plan_net(m.net, n, size, size)).first;
  const int64_t pixels = int64_t(n) * size * size;
  copy_to_device(fe.dev, fe.images_dev, images, size_t(pixels) * 3);
  op_normalize_u8(fe.dev, pixels, 3, fe.images_dev, m.preprocess.mean, m.preprocess.std,
                  fe.input_dev);
  forward(fe.dev, m.net, it->second, fe.params, fe.buffers.data(), fe.input_dev, features_dev);
}

int extract_features(FeatureExtractor& fe, const std::vector<const std::string*>& paths,
                     float* features_dev, std::vector<char>& ok, std::vector<std::string>& errors,
                     const uint64_t* aug_keys) {
  const int n = int(paths.size());
  const Preprocess& p = fe.model->preprocess;
  const size_t image_bytes = size_t(p.size) * p.size * 3;
  ok.assign(n, 0);
  std::vector<std::string> messages(n);
  // The staging buffer is pageable memory: the previous batch's copy_to_device read it before
  // returning, so it can be rewritten now.
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < n; ++i) {
    try {
      Image img = load_image_for(*paths[i], p, fe.limits);
      uint8_t* dst = fe.staging.data() + size_t(i) * image_bytes;
      if (aug_keys)
        augment_image(img, p, aug_keys[i], dst);
      else
        preprocess_image(img, p, dst);
      ok[i] = 1;
    } catch (const std::exception& e) {
      messages[i] = e.what();
    }
  }
  // Compact the decoded images to the front, in order, so the batch is deterministic.
  int valid = 0;
  for (int i = 0; i < n; ++i) {
    if (!ok[i]) {
      errors.push_back(messages[i]);
      continue;
    }
    if (valid != i)
      std::memmove(fe.staging.data() + size_t(valid) * image_bytes,
                   fe.staging.data() + size_t(i) * image_bytes, image_bytes);
    ++valid;
  }
  if (valid > 0) extract_from_pixels(fe, fe.staging.data(), valid, features_dev);
  return valid;
}

}  // namespace graft
