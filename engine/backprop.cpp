#include "engine/backprop.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace graft {

BackpropPlan plan_backprop(const Device& dev, const Net& net, const NetPlan& plan, int first_op) {
  if (net.ops.empty() || net.ops.back().kind != OpKind::global_avg_pool)
    throw std::logic_error("plan_backprop: the backbone must end in a global average pool");
  if (first_op < 0 || first_op > int(net.ops.size()))
    throw std::invalid_argument("plan_backprop: first trained op " + std::to_string(first_op) +
                                " is outside the net's " + std::to_string(net.ops.size()));
  BackpropPlan bp;
  bp.first_op = first_op;
  bp.grad_of.assign(net.num_values, -1);
  bp.param_begin = net.params.size();
  const int final_value = net.ops.back().output;
  for (size_t i = first_op; i < net.ops.size(); ++i) {
    const NetOp& op = net.ops[i];
    if (op.output != final_value) {  // the features' gradient comes from the head
      bp.grad_of[op.output] = int(bp.grad_numel.size());
      bp.grad_numel.push_back(plan.values[op.output].numel());
      bp.scratch_numel = std::max(bp.scratch_numel, plan.values[op.output].numel());
    }
    if (op.kind != OpKind::conv) continue;
    bp.param_begin = std::min(bp.param_begin, net.w_off[i]);
    bp.workspace_bytes =
        std::max(bp.workspace_bytes, op_backward_workspace_bytes(dev, plan.convs[i]));
  }
  return bp;
}

namespace {

// Where the walk stands: which values' gradients hold a first contribution already.
struct Walk {
  const Device& dev;
  const Net& net;
  const NetPlan& plan;
  const BackpropPlan& bp;
  const BackpropBuffers& b;
  std::vector<char> written;

  const float* value(int v) const {
    if (v == 0) return b.x;
    return b.acts[plan.buffer_of[v]];
  }
  bool needs_grad(int v) const { return bp.grad_of[v] >= 0; }
  float* grad(int v) const { return b.grads[bp.grad_of[v]]; }
  // Where the next contribution to v's gradient goes: its buffer the first time, else scratch.
  float* target(int v) const { return written[v] ? b.scratch : grad(v); }
  // Called after an op wrote its contribution to target(v).
  void contributed(int v) {
    if (written[v]) op_add_inplace(dev, int64_t(plan.values[v].numel()), b.scratch, grad(v));
    written[v] = 1;
  }
};

void conv_backward(Walk& w, size_t i) {
  const NetOp& op = w.net.ops[i];
  const ConvShape& s = w.plan.convs[i];
  const int64_t rows = int64_t(s.n) * s.out_h * s.out_w;
  float* dz = w.grad(op.output);
  if (op.conv.act != Act::none)
    op_act_backward(w.dev, rows * s.out_c, op.conv.act, w.value(op.output), dz);
  op_bias_grad(w.dev, rows, s.out_c, dz, w.b.dparams + (w.net.b_off[i] - w.bp.param_begin),
               w.b.workspace, w.bp.workspace_bytes);
  op_conv2d_backward_filter(w.dev, s, w.value(op.input), dz,
                            w.b.dparams + (w.net.w_off[i] - w.bp.param_begin), w.b.workspace,
                            w.bp.workspace_bytes);
  if (op.residual >= 0 && w.needs_grad(op.residual)) {  // y = act(conv + bias + residual)
    copy_on_device(w.dev, w.target(op.residual), dz, size_t(rows) * s.out_c * 4);
    w.contributed(op.residual);
  }
  if (w.needs_grad(op.input)) {
    op_conv2d_backward_data(w.dev, s, dz, w.b.params + w.net.w_off[i], w.target(op.input));
    w.contributed(op.input);
  }
}

}  // namespace

void backbone_backward(const Device& dev, const Net& net, const NetPlan& plan,
                       const BackpropPlan& bp, const BackpropBuffers& b, const float* dfeatures) {
  Walk w{dev, net, plan, bp, b, std::vector<char>(net.num_values, 0)};
  const int final_value = net.ops.back().output;
  for (size_t i = net.ops.size(); i-- > size_t(bp.first_op);) {
    const NetOp& op = net.ops[i];
    switch (op.kind) {
      case OpKind::conv:
        if (op.output == final_value)
          throw std::logic_error("backbone_backward: a conv cannot be the last op");
        conv_backward(w, i);
        break;
      case OpKind::max_pool:
        if (!w.needs_grad(op.input)) break;
        op_max_pool2d_backward(dev, plan.pools[i], w.value(op.input), w.value(op.output),
                               w.grad(op.output), w.target(op.input));
        w.contributed(op.input);
        break;
      case OpKind::global_avg_pool: {
        if (!w.needs_grad(op.input)) break;
        const ValueShape& s = plan.values[op.input];
        op_global_avg_pool_backward(dev, s.n, s.h * s.w, s.c, dfeatures, w.target(op.input));
        w.contributed(op.input);
        break;
      }
    }
  }
}

}  // namespace graft
