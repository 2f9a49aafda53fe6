#include "engine/forward.h"

namespace graft {

void forward(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
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
