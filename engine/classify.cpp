#include "engine/classify.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace graft {

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
