#pragma once
// The inverted-residual (MBConv) block shared by EfficientNet-Lite and MobileNetV2:
// 1x1 expand (skipped when the ratio is 1) -> k x k depthwise -> 1x1 linear projection, with the
// identity shortcut when the block keeps stride 1 and the channel count. Both use ReLU6.
#include <string>

#include "engine/net.h"

namespace graft {

// Appends one block named "blocks.<index>" and returns its output value.
int add_inverted_residual(Net& net, int index, int input, int in_c, int out_c, int expand_ratio,
                          int k, int stride);

}  // namespace graft
