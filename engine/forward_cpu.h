#pragma once
// The backbone's forward pass on the CPU twins: walks the op list, reusing the plan's buffers.
#include <vector>

#include "engine/net.h"

namespace graft {

// Scratch buffers sized by a NetPlan; reused across calls with the same plan, so the hot loop
// allocates nothing.
struct CpuWorkspace {
  std::vector<std::vector<float>> buffers;
};

// x: [n][in_h][in_w][3] normalised input; features: [n][net.feature_dim].
void forward_cpu(const Net& net, const NetPlan& plan, const float* x, float* features,
                 CpuWorkspace& ws);

}  // namespace graft
