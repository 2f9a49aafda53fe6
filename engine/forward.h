#pragma once
// The backbone's forward pass: walks the op list on a Device, reusing the plan's buffers (on the
// CPU, a batch larger than a piece runs piece by piece: NetPlan::pieces).
#include <vector>

#include "engine/device.h"
#include "engine/net.h"

namespace graft {

// params: the net's folded parameters in the device's memory (net.params itself on the CPU).
// buffers: one pointer per plan.buffer_numel entry, in the device's memory.
// x: [n][in_h][in_w][3] normalised input; features: [n][net.feature_dim].
// from_op: start at this op, its inputs already in place (the feature cache's boundary
// activation, engine/network.h); 0 runs the whole list.
void forward(const Device& dev, const Net& net, const NetPlan& plan, const float* params,
             float* const* buffers, const float* x, float* features, int from_op = 0);

// CPU convenience: scratch buffers sized by the plan, reused across calls (no allocation in the
// hot loop once sized).
struct CpuWorkspace {
  std::vector<std::vector<float>> buffers;
  std::vector<float*> ptrs;
};
void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws);

}  // namespace graft
