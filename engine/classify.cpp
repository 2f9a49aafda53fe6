#include "engine/classify.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace graft {

Classifier::~Classifier() {
  extractor_destroy(fe);  // waits for the device first
  event_destroy(copied);
  arena_release(arena);
  destroy_device(dev);
}

void classifier_create(Classifier& c, const std::string& device, const Model& model, int batch) {
  if (model.fc.out == 0)
    throw std::invalid_argument(model.path + ": the file holds a backbone without a classifier");
  c.dev = make_device(device);
  c.model = &model;
  extractor_create(c.fe, c.dev, model, batch);
  const HeadShape shape{model.net.feature_dim, model.hidden.out, model.fc.out};
  arena_reserve(c.arena, c.dev,
                size_t(batch) * model.net.feature_dim * 4 + 64 + head_arena_bytes(shape, batch));
  c.features_dev = arena_alloc<float>(c.arena, size_t(batch) * model.net.feature_dim);
  // head_create draws random weights that head_upload then replaces with the model's: one
  // initialisation path for training and inference is worth the few microseconds.
  head_create(c.head, c.arena, shape, batch, 0);
  head_upload(c.dev, c.head, model.hidden, model.fc);
  event_create(c.dev, c.copied);
  c.logits.resize(size_t(batch) * model.fc.out);
}

const std::vector<float>& classifier_logits(Classifier& c, const uint8_t* images, int n) {
  if (n < 1 || n > c.fe.batch)
    throw std::invalid_argument("classifier_logits: " + std::to_string(n) +
                                " images for a batch of " + std::to_string(c.fe.batch));
  extract_from_slot(c.fe, images, n, c.features_dev, c.copied);
  head_eval(c.dev, c.head, n, c.features_dev, nullptr, 0.f, nullptr, nullptr);
  const size_t count = size_t(n) * c.head.shape.classes;
  c.logits.resize(count);  // within the capacity reserved at creation: no allocation
  copy_to_host(c.dev, c.logits.data(), c.head.s.logits, count * 4);
  synchronize(c.dev);  // the compute stream waited for the copy, so the images are free too
  return c.logits;
}

const std::vector<float>& classify_logits(const Model& model, const uint8_t* images, int n,
                                          ClassifyWorkspace& ws) {
  if (model.fc.out == 0)
    throw std::invalid_argument(model.path + ": the file holds a backbone without a classifier");
  const int size = model.preprocess.size;
  if (ws.plan.n != n || ws.plan.in_h != size || ws.plan.in_w != size) {
    ws.plan = plan_net(model.net, n, size, size);
    ws.input.resize(size_t(n) * size * size * 3);
    ws.features.resize(size_t(n) * model.net.feature_dim);
    ws.logits.resize(size_t(n) * model.fc.out);
  }
  cpu::normalize_u8(int64_t(n) * size * size, 3, images, model.preprocess.mean,
                    model.preprocess.std, ws.input.data());
  forward_cpu(model.net, ws.plan, ws.input.data(), ws.features.data(), ws.cpu);
  const float* top_in = ws.features.data();
  if (model.hidden.out) {
    ws.hidden.resize(size_t(n) * model.hidden.out);
    cpu::linear(n, model.hidden.in, model.hidden.out, ws.features.data(), model.hidden.w.data(),
                model.hidden.b.data(), ws.hidden.data());
    cpu::bias_act(int64_t(n), model.hidden.out, ws.hidden.data(), nullptr, nullptr, Act::relu,
                  ws.hidden.data());
    top_in = ws.hidden.data();
  }
  cpu::linear(n, model.fc.in, model.fc.out, top_in, model.fc.w.data(), model.fc.b.data(),
              ws.logits.data());
  return ws.logits;
}

std::vector<int> top_k(const float* row, int c, int k) {
  k = std::clamp(k, 0, c);
  std::vector<int> idx(c);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  idx.resize(k);
  return idx;
}

}  // namespace graft
