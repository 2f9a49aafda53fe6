#include "engine/network.h"

#include <stdexcept>
#include <string>

namespace graft {

void network_create(Network& net, const Device& dev, const Model& model, const HeadShape& head,
                    int batch, uint64_t seed, const OptimConfig* opt) {
  extractor_create(net.backbone, dev, model, batch);
  const size_t feature_floats = size_t(batch) * model.net.feature_dim;
  arena_reserve(net.arena, dev, feature_floats * 4 + 64 + head_arena_bytes(head, batch));
  net.features = arena_alloc<float>(net.arena, feature_floats);
  head_create(net.head, net.arena, head, batch, seed);
  net.trainable = opt ? head_params(net.head, *opt) : std::vector<ParamRef>{};
}

void network_forward(const Device& dev, Network& net, const NetworkInput& in, const HeadPass& pass,
                     float* loss, int64_t* confusion, StageClock* clock) {
  if (in.n < 1 || in.n > net.head.batch)
    throw std::invalid_argument("network_forward: " + std::to_string(in.n) +
                                " rows for a network sized for " + std::to_string(net.head.batch));
  const float* features = in.features;
  if (in.images) {
    extract_from_slot(net.backbone, in.images, in.n, net.features, *in.copied, clock);
    features = net.features;
  }
  if (clock) stage_mark(*clock, Stage::head, true, Lane::compute);
  head_forward(dev, net.head, pass, in.n, features, in.labels, loss, confusion);
  if (clock) stage_mark(*clock, Stage::head, false, Lane::compute);
}

void network_backward(const Device& dev, Network& net, int n, const HeadPass& pass,
                      StageClock* clock) {
  if (net.trainable.empty())
    throw std::logic_error("network_backward: the network was made for inference only");
  if (clock) stage_mark(*clock, Stage::head, true, Lane::compute);
  // The backbone is frozen: nothing needs the gradient of the features.
  head_backward(dev, net.head, pass, n, nullptr);
  if (clock) stage_mark(*clock, Stage::head, false, Lane::compute);
}

void network_update(const Device& dev, Network& net, const OptimConfig& opt, float lr,
                    StageClock* clock) {
  if (clock) stage_mark(*clock, Stage::optimiser, true, Lane::compute);
  ++net.head.step;
  optimizer_update(dev, opt, net.trainable, lr, net.head.step);
  if (clock) stage_mark(*clock, Stage::optimiser, false, Lane::compute);
}

}  // namespace graft
