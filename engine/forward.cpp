#include "engine/forward.h"

#include <omp.h>

#include <exception>
#include <stdexcept>
#include <vector>

namespace graft {

namespace {

// Values held outside the plan's buffers: the input image (value 0), the features (the final
// value), and the value pieces hand over to the whole batch.
struct Source {
  int value;
  const float* ptr;
};
struct Sink {
  int value;
  float* ptr;
};

// Ops [from_op, to_op) in order. `in` is the value the first of them reads (besides the buffers'),
// `out` the value the last of them writes.
void run_ops(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             const PackedWeights* packed, float* const* buffers, Source in, Sink out, int from_op,
             int to_op) {
  auto write_ptr = [&](int v) { return v == out.value ? out.ptr : buffers[plan.buffer_of[v]]; };
  auto read_ptr = [&](int v) -> const float* { return v == in.value ? in.ptr : write_ptr(v); };
  for (int i = from_op; i < to_op; ++i) {
    const NetOp& op = net.ops[i];
    const float* x = read_ptr(op.input);
    const float* w_packed = packed ? packed->of(i) : nullptr;
    if (!dev.is_cuda() && i + 1 < to_op && !plan.expand_with_next.empty() &&
        plan.expand_with_next[i]) {
      const NetOp& next = net.ops[i + 1];
      cpu::expand_depthwise(plan.convs[i], x, params + net.w_off[i], w_packed,
                            params + net.b_off[i], op.conv.act, plan.convs[i + 1],
                            params + net.w_off[i + 1], params + net.b_off[i + 1], next.conv.act,
                            write_ptr(next.output));
      ++i;
      continue;
    }
    float* y = write_ptr(op.output);
    switch (op.kind) {
      case OpKind::conv: {
        const float* residual = op.residual >= 0 ? read_ptr(op.residual) : nullptr;
        if (w_packed)
          cpu::conv2d_packed(plan.convs[i], x, w_packed, params + net.b_off[i], residual,
                             op.conv.act, y);
        else
          op_conv2d(dev, plan.convs[i], x, params + net.w_off[i], params + net.b_off[i], residual,
                    op.conv.act, y);
        break;
      }
      case OpKind::max_pool:
        op_max_pool2d(dev, plan.pools[i], x, y);
        break;
      case OpKind::global_avg_pool: {
        const ValueShape& s = plan.values[op.input];
        op_global_avg_pool(dev, s.n, s.h * s.w, s.c, x, y);
        break;
      }
    }
  }
}

}  // namespace

PackedWeights pack_weights(const Net& net, const NetPlan& plan, const float* params, int until) {
  PackedWeights p;
  p.path = cpu::cpu_path();
  p.params = params;
  p.at.assign(net.ops.size(), -1);
  size_t total = 0;
  for (int i = 0; i < until; ++i) {
    if (net.ops[i].kind != OpKind::conv) continue;
    const size_t size = cpu::conv2d_packed_size(plan.convs[i]);
    if (size == 0) continue;
    p.at[i] = int64_t(total);
    total += size;
  }
  p.data.resize(total);
  for (int i = 0; i < until; ++i)
    if (p.at[i] >= 0)
      cpu::conv2d_pack(plan.convs[i], params + net.w_off[i], p.data.data() + p.at[i]);
  return p;
}

void forward(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             float* const* buffers, const float* x, float* features, int from_op,
             const PackedWeights* packed) {
  const int ops = int(net.ops.size()), final_value = net.ops.back().output;
  // A CPU plan shares buffers differently (fused pairs keep inputs live longer, pieces add a
  // handoff buffer): GPU buffers sized for a GPU plan do not fit it.
  if (dev.is_cuda() && !plan.expand_with_next.empty())
    throw std::logic_error("forward: a plan made for the CPU (plan_net's for_cpu) on the GPU");
  if (packed && (dev.is_cuda() || packed->path != cpu::cpu_path() || packed->params != params))
    throw std::logic_error("forward: weights packed for another CPU path or other parameters");
  if (dev.is_cuda() || from_op != 0 || plan.pieces.empty()) {
    run_ops(dev, net, plan, params, packed, buffers, {0, x}, {final_value, features}, from_op, ops);
    return;
  }
  // On the CPU a large batch runs as pieces of a few images (NetPlan::pieces), each through the
  // ops up to plan.pieces_until, in the start of the same buffers (or of its lane's part of them):
  // one layer's output is still in the caches when the next reads it. Each piece leaves its last
  // value at its place in the handoff buffer (or the features), and the late ops run once on the
  // whole batch. No op mixes images, so every image gets the same bits as in one pass.
  const int until = plan.pieces_until;
  const Sink handoff = until < ops ? Sink{net.ops[until].input, buffers[plan.handoff_buffer]}
                                   : Sink{final_value, features};
  const int64_t image_numel = int64_t(plan.in_h) * plan.in_w * 3;
  const int64_t handoff_numel = int64_t(plan.values[handoff.value].numel()) / plan.n;
  const int per_piece = plan.pieces[0].n, count = (plan.n + per_piece - 1) / per_piece;
  // With lanes, each thread runs every lanes-th piece in its own part of the buffers, and the
  // kernels under it run on that thread alone: no op waits for the other threads at its end.
  const int planned_lanes = plan.piece_lanes;
  std::exception_ptr failure;
#pragma omp parallel num_threads(planned_lanes) if (planned_lanes > 1)
  {
    const int lane = omp_get_thread_num(), lanes = omp_get_num_threads();
    if (lanes > 1) omp_set_num_threads(1);
    thread_local std::vector<float*> mine;  // this lane's buffers (sized once per thread)
    mine.resize(plan.buffer_numel.size());
    for (size_t b = 0; b < mine.size(); ++b)
      mine[b] = buffers[b] + (b < plan.lane_numel.size() ? plan.lane_numel[b] * lane : 0);
    try {
      for (int k = lane; k < count; k += lanes) {
        const int i0 = k * per_piece;
        const NetPlan& piece = plan.n - i0 >= per_piece ? plan.pieces[0] : plan.pieces.back();
        run_ops(dev, net, piece, params, packed, mine.data(), {0, x + i0 * image_numel},
                {handoff.value, handoff.ptr + i0 * handoff_numel}, 0, until);
      }
    } catch (...) {
#pragma omp critical(graft_forward_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  if (until < ops)
    run_ops(dev, net, plan, params, packed, buffers, {handoff.value, handoff.ptr},
            {final_value, features}, until, ops);
}

void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws) {
  ws.buffers.resize(plan.buffer_numel.size());
  ws.ptrs.resize(plan.buffer_numel.size());
  for (size_t b = 0; b < plan.buffer_numel.size(); ++b) {
    if (ws.buffers[b].size() < plan.buffer_numel[b]) ws.buffers[b].resize(plan.buffer_numel[b]);
    ws.ptrs[b] = ws.buffers[b].data();
  }
  if (ws.packed.params != net.params.data() || ws.packed.path != cpu::cpu_path())
    ws.packed = pack_weights(net, plan, net.params.data(), int(net.ops.size()));
  forward(Device{}, net, plan, net.params.data(), ws.ptrs.data(), x, features, 0, &ws.packed);
}

}  // namespace graft
