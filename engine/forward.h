#pragma once
// The backbone's forward pass: walks the op list on a Device, reusing the plan's buffers (on the
// CPU, a batch larger than a piece runs piece by piece: NetPlan::pieces).
#include <vector>

#include "engine/device.h"
#include "engine/net.h"
#include "kernels/cpu/cpu_path.h"

namespace graft {

// CPU: the weights of the frozen convs in the layout the CPU GEMM reads (cpu::conv2d_pack), made
// once; packing them on every call took a tenth of a batch-1 forward. The layout depends on a
// conv's channels and kernel, not on the batch or image size, so one set serves every plan of the
// net. It holds while those weights stay as they are, on the CPU path that packed them.
struct PackedWeights {
  cpu::CpuPath path = cpu::CpuPath::generic;
  const float* params = nullptr;  // the parameters packed from
  std::vector<float> data;
  std::vector<int64_t> at;  // per op: where its packed weights start in data, -1 for none
  const float* of(int op) const {
    return op < int(at.size()) && at[op] >= 0 ? data.data() + at[op] : nullptr;
  }
};
// Packs the convs among ops [0, until) that have a packed form (not depthwise) on the path in use;
// plan gives their shapes (any batch size).
PackedWeights pack_weights(const Net& net, const NetPlan& plan, const float* params, int until);

// params: the net's folded parameters in the device's memory (net.params itself on the CPU).
// buffers: one pointer per plan.buffer_numel entry, in the device's memory.
// x: [n][in_h][in_w][3] normalised input; features: [n][net.feature_dim].
// from_op: start at this op, its inputs already in place (the feature cache's boundary
// activation, engine/network.h); 0 runs the whole list.
// packed: the CPU's packed weights of params (pack_weights), or null; ops it does not cover pack
// their weights on each call.
void forward(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             float* const* buffers, const float* x, float* features, int from_op = 0,
             const PackedWeights* packed = nullptr);

// CPU convenience: scratch buffers sized by the plan and the net's weights packed, kept across
// calls (no allocation in the hot loop once sized). The net's parameters must not change between
// calls that share a workspace.
struct CpuWorkspace {
  std::vector<std::vector<float>> buffers;
  std::vector<float*> ptrs;
  PackedWeights packed;
};
void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws);

}  // namespace graft
