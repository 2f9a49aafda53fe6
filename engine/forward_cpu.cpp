#include "engine/forward_cpu.h"

namespace graft {

void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws) {
  ws.buffers.resize(plan.buffer_numel.size());
  for (size_t b = 0; b < plan.buffer_numel.size(); ++b)
    if (ws.buffers[b].size() < plan.buffer_numel[b]) ws.buffers[b].resize(plan.buffer_numel[b]);

  const int final_value = net.ops.back().output;
  auto value_ptr = [&](int v) -> float* {
    if (v == final_value) return features;
    return ws.buffers[plan.buffer_of[v]].data();
  };
  auto input_ptr = [&](int v) -> const float* { return v == 0 ? x : value_ptr(v); };

  for (size_t i = 0; i < net.ops.size(); ++i) {
    const NetOp& op = net.ops[i];
    const float* in = input_ptr(op.input);
    float* out = value_ptr(op.output);
    switch (op.kind) {
      case OpKind::conv:
        cpu::conv2d(plan.convs[i], in, net.params.data() + net.w_off[i],
                    net.params.data() + net.b_off[i],
                    op.residual >= 0 ? input_ptr(op.residual) : nullptr, op.conv.act, out);
        break;
      case OpKind::max_pool:
        cpu::max_pool2d(plan.pools[i], in, out);
        break;
      case OpKind::global_avg_pool: {
        const ValueShape& s = plan.values[op.input];
        cpu::global_avg_pool(s.n, s.h * s.w, s.c, in, out);
        break;
      }
    }
  }
}

}  // namespace graft
