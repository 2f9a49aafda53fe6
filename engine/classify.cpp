#include "engine/classify.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace graft {

Classifier::~Classifier() {
  synchronize(dev);  // the head's kernels may still read the arena and the event
}

void classifier_create(Classifier& c, const std::string& device, const Model& model, int batch) {
  if (model.fc.out == 0)
    throw std::invalid_argument(model.path + ": the file holds a backbone without a classifier");
  c.dev = make_device(device);
  c.model = &model;
  // The network's head starts from random weights that the model's classifier then replaces: one
  // way to make a network for training and for inference is worth the few microseconds.
  const HeadShape shape{model.net.feature_dim, model.hidden.out, model.fc.out};
  network_create(c.net, c.dev, model, shape, batch, 0, nullptr);
  head_upload(c.dev, c.net.head, model.hidden, model.fc);
  event_create(c.dev, c.copied);
  c.logits.resize(size_t(batch) * model.fc.out);
}

const std::vector<float>& classifier_logits(Classifier& c, const uint8_t* images, int n) {
  if (n < 1 || n > c.net.head.batch)
    throw std::invalid_argument("classifier_logits: " + std::to_string(n) +
                                " images for a batch of " + std::to_string(c.net.head.batch));
  NetworkInput in;
  in.n = n;
  in.images = images;
  in.copied = &c.copied;
  network_forward(c.dev, c.net, in, HeadPass{}, nullptr, nullptr);
  const size_t count = size_t(n) * c.net.head.shape.classes;
  c.logits.resize(count);  // within the capacity reserved at creation: no allocation
  copy_to_host(c.dev, c.logits.data(), c.net.head.s.logits, count * 4);
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
