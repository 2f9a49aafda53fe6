#include "engine/network.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>

namespace graft {

namespace {

// Rethrows an allocation failure with both settings that size the memory of a fine-tuning run.
template <class F>
void reserve_or_explain(F&& reserve) {
  try {
    reserve();
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) + ", or train fewer blocks with --fine-tune");
  }
}

// Gradients, moments and backward buffers for ops [first, end) of the backbone, and their
// ParamRefs appended to net.trainable.
void create_backbone_training(Network& net, const Device& dev, int batch, int first,
                              const OptimConfig& opt, float lr_scale) {
  const Net& bn = net.backbone.model->net;
  net.bp = plan_backprop(dev, bn, net.backbone.plans.at(batch), first);
  const BackpropPlan& bp = net.bp;
  const size_t slice = bn.params.size() - bp.param_begin;
  const size_t grads = std::accumulate(bp.grad_numel.begin(), bp.grad_numel.end(), size_t(0));
  const size_t dim = size_t(bn.feature_dim);
  const size_t bytes = (grads + bp.scratch_numel + 3 * slice + size_t(batch) * dim) * 4 +
                       bp.workspace_bytes + (bp.grad_numel.size() + 6) * 64;
  reserve_or_explain([&] { arena_reserve(net.train_arena, dev, bytes); });
  for (size_t n : bp.grad_numel) net.value_grads.push_back(arena_alloc<float>(net.train_arena, n));
  float* dparams = arena_alloc<float>(net.train_arena, slice);
  float* m = arena_alloc<float>(net.train_arena, slice);
  float* v = arena_alloc<float>(net.train_arena, slice);
  fill_zero(dev, m, slice * 4);
  fill_zero(dev, v, slice * 4);
  net.moments_m = m;
  net.moments_v = v;
  net.dfeatures = arena_alloc<float>(net.train_arena, size_t(batch) * dim);
  BackpropBuffers& bb = net.bb;
  bb.params = net.backbone.params;
  bb.x = net.backbone.input_dev;
  bb.acts = net.backbone.buffers.data();
  bb.grads = net.value_grads.data();
  bb.scratch = arena_alloc<float>(net.train_arena, std::max<size_t>(bp.scratch_numel, 1));
  bb.workspace = bp.workspace_bytes ? arena_take(net.train_arena, bp.workspace_bytes) : nullptr;
  bb.dparams = dparams;
  // The one value the frozen ops hand over, if one: a block's input is also its residual.
  std::set<int> crossing;
  for (size_t i = first; i < bn.ops.size(); ++i)
    for (int v : {bn.ops[i].input, bn.ops[i].residual})
      if (v >= 0 && std::none_of(bn.ops.begin() + first, bn.ops.end(),
                                 [&](const NetOp& op) { return op.output == v; }))
        crossing.insert(v);
  net.boundary_value = crossing.size() == 1 ? *crossing.begin() : -1;
  // Kernels decay like the head's (Keras L2 with SGD, decoupled with AdamW); biases do not.
  const float kernel_decay = opt.optimizer == "sgd" ? 2.f * opt.l2 : opt.weight_decay;
  for (size_t i = first; i < bn.ops.size(); ++i) {
    if (bn.ops[i].kind != OpKind::conv) continue;
    const size_t w = bn.w_off[i] - bp.param_begin, b = bn.b_off[i] - bp.param_begin;
    const int64_t w_count = int64_t(bn.b_off[i] - bn.w_off[i]), b_count = bn.ops[i].conv.out_c;
    float* p = net.backbone.params + bp.param_begin;
    net.trainable.push_back({p + w, dparams + w, m + w, v + w, w_count, kernel_decay, lr_scale});
    net.trainable.push_back({p + b, dparams + b, m + b, v + b, b_count, 0.f, lr_scale});
  }
}

}  // namespace

bool backbone_trained(const Network& net) {
  return net.backbone.model && net.bp.first_op < int(net.backbone.model->net.ops.size());
}

void network_create(Network& net, const Device& dev, const Model& model, const HeadShape& head,
                    int batch, uint64_t seed, const OptimConfig* opt, const FineTune& fine_tune) {
  const int first = first_trainable_op(model.net, opt ? fine_tune.blocks : 0);
  const bool trains_backbone = first < int(model.net.ops.size());
  if (trains_backbone)  // its kept activations are what fine-tuning adds to the memory
    reserve_or_explain([&] { extractor_create(net.backbone, dev, model, batch, first); });
  else
    extractor_create(net.backbone, dev, model, batch, -1);
  const size_t feature_floats = size_t(batch) * model.net.feature_dim;
  arena_reserve(net.arena, dev, feature_floats * 4 + 64 + head_arena_bytes(head, batch));
  net.features = arena_alloc<float>(net.arena, feature_floats);
  head_create(net.head, net.arena, head, batch, seed);
  net.trainable = opt ? head_params(net.head, *opt) : std::vector<ParamRef>{};
  net.head_tensors = net.trainable.size();
  net.bp = BackpropPlan{};
  net.bp.first_op = int(model.net.ops.size());
  if (trains_backbone) create_backbone_training(net, dev, batch, first, *opt, fine_tune.lr_scale);
}

void network_train_backbone(Network& net, bool on) {
  net.train_backbone = on;
}

size_t network_cache_row(const Network& net) {
  const Net& bn = net.backbone.model->net;
  if (!backbone_trained(net)) return size_t(bn.feature_dim);
  if (net.boundary_value < 0) return 0;
  const NetPlan& plan = net.backbone.plans.at(net.backbone.batch);
  return plan.values[net.boundary_value].numel() / size_t(plan.n);
}

float* network_cache_slot(Network& net) {
  return backbone_trained(net) ? extractor_value(net.backbone, net.boundary_value) : net.features;
}

void network_forward(const Device& dev, Network& net, const NetworkInput& in, const HeadPass& pass,
                     float* loss, int64_t* confusion, StageClock* clock) {
  if (in.n < 1 || in.n > net.head.batch)
    throw std::invalid_argument("network_forward: " + std::to_string(in.n) +
                                " rows for a network sized for " + std::to_string(net.head.batch));
  net.ran_backbone = in.images != nullptr;
  if (in.images) {
    extract_from_slot(net.backbone, in.images, in.n, net.features, *in.copied, clock);
  } else if (!in.cached) {
    throw std::invalid_argument("network_forward: neither images nor cached rows");
  } else if (backbone_trained(net)) {  // the boundary activation is in place: run the rest
    extract_from_op(net.backbone, in.n, net.bp.first_op, net.features, clock);
    net.ran_backbone = true;
  }
  const float* features = net.features;
  if (clock) stage_mark(*clock, Stage::head, true, Lane::compute);
  head_forward(dev, net.head, pass, in.n, features, in.labels, loss, confusion);
  if (clock) stage_mark(*clock, Stage::head, false, Lane::compute);
}

void network_backward(const Device& dev, Network& net, int n, const HeadPass& pass,
                      StageClock* clock) {
  if (net.trainable.empty())
    throw std::logic_error("network_backward: the network was made for inference only");
  const bool backbone = backbone_trained(net) && net.train_backbone;
  if (backbone && !net.ran_backbone)
    throw std::logic_error("network_backward: the backbone trains, but the forward skipped it");
  if (clock) stage_mark(*clock, Stage::head, true, Lane::compute);
  head_backward(dev, net.head, pass, n, backbone ? net.dfeatures : nullptr);
  if (clock) stage_mark(*clock, Stage::head, false, Lane::compute);
  if (!backbone) return;
  if (clock) stage_mark(*clock, Stage::backbone, true, Lane::compute);
  backbone_backward(dev, net.backbone.model->net, net.backbone.plans.at(n), net.bp, net.bb,
                    net.dfeatures);
  if (clock) stage_mark(*clock, Stage::backbone, false, Lane::compute);
}

void network_update(const Device& dev, Network& net, const OptimConfig& opt, float lr,
                    StageClock* clock) {
  if (clock) stage_mark(*clock, Stage::optimiser, true, Lane::compute);
  ++net.head.step;
  // A frozen stage steps the head alone: the backbone's moments stay as they were.
  const size_t count = net.train_backbone ? net.trainable.size() : net.head_tensors;
  optimizer_update(dev, opt, net.trainable.data(), count, lr, net.head.step);
  if (clock) stage_mark(*clock, Stage::optimiser, false, Lane::compute);
}

}  // namespace graft
