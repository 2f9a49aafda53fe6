#include "engine/forward.h"

namespace graft {

namespace {

// The op list in order, from op `from_op`.
void run_ops(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             float* const* buffers, const float* x, float* features, int from_op) {
  const int final_value = net.ops.back().output;
  auto value_ptr = [&](int v) -> float* {
    return v == final_value ? features : buffers[plan.buffer_of[v]];
  };
  auto input_ptr = [&](int v) -> const float* { return v == 0 ? x : value_ptr(v); };

  for (size_t i = size_t(from_op); i < net.ops.size(); ++i) {
    const NetOp& op = net.ops[i];
    const float* in = input_ptr(op.input);
    float* out = value_ptr(op.output);
    switch (op.kind) {
      case OpKind::conv:
        op_conv2d(dev, plan.convs[i], in, params + net.w_off[i], params + net.b_off[i],
                  op.residual >= 0 ? input_ptr(op.residual) : nullptr, op.conv.act, out);
        break;
      case OpKind::max_pool:
        op_max_pool2d(dev, plan.pools[i], in, out);
        break;
      case OpKind::global_avg_pool: {
        const ValueShape& s = plan.values[op.input];
        op_global_avg_pool(dev, s.n, s.h * s.w, s.c, in, out);
        break;
      }
    }
  }
}

}  // namespace

void forward(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             float* const* buffers, const float* x, float* features, int from_op) {
  if (dev.is_cuda() || from_op != 0 || plan.pieces.empty()) {
    run_ops(dev, net, plan, params, buffers, x, features, from_op);
    return;
  }
  // On the CPU a large batch runs as pieces of a few images (NetPlan::pieces), each through every
  // op, in the start of the same buffers: one layer's output is still in the caches when the next
  // reads it. No op mixes images, so every image gets the same bits as in one pass.
  const int64_t image = int64_t(plan.in_h) * plan.in_w * 3;
  const int64_t feature = plan.values[net.ops.back().output].numel() / plan.n;
  for (int i0 = 0; i0 < plan.n;) {
    const NetPlan& piece = plan.n - i0 >= plan.pieces[0].n ? plan.pieces[0] : plan.pieces.back();
    run_ops(dev, net, piece, params, buffers, x + i0 * image, features + i0 * feature, 0);
    i0 += piece.n;
  }
}

void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws) {
  ws.buffers.resize(plan.buffer_numel.size());
  ws.ptrs.resize(plan.buffer_numel.size());
  for (size_t b = 0; b < plan.buffer_numel.size(); ++b) {
    if (ws.buffers[b].size() < plan.buffer_numel[b]) ws.buffers[b].resize(plan.buffer_numel[b]);
    ws.ptrs[b] = ws.buffers[b].data();
  }
  forward(Device{}, net, plan, net.params.data(), ws.ptrs.data(), x, features);
}

}  // namespace graft
