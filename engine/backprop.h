#pragma once
// Backward through the trained tail of a backbone (the op list of engine/net.h): from the
// gradient of the pooled features to the gradients of every trained conv's folded weight and bias.
// Batch norm stays frozen (folded into the conv, as the Keras fine-tuning guide prescribes), so the
// folded weight and bias are what train. The ops are walked in reverse (the list is topological,
// so its reverse is too); for each:
//   conv       dz = dy * act'(z), from the saved output (in place); db = sum of dz;
//              dw = x^T dz; the residual's gradient gets dz; dx = dz w^T
//   max pool   dx = dy routed to each window's first maximum
//   avg pool   dx = dy / pixels
// A value read by two ops (a block's input is also its residual) sums both gradients: the first
// contribution writes the value's gradient buffer, a later one goes to scratch and is added, so
// every op overwrites its output and runs repeat bitwise.
#include <cstddef>
#include <vector>

#include "engine/device.h"
#include "engine/net.h"

namespace graft {

struct BackpropPlan {
  int first_op = 0;                // ops from here on are trained
  std::vector<int> grad_of;        // per value: its gradient buffer, or -1 (no gradient needed)
  std::vector<size_t> grad_numel;  // per gradient buffer, at the planned batch
  size_t scratch_numel = 0;        // the largest gradient, for second contributions
  size_t workspace_bytes = 0;      // the largest reduction workspace (cuda; 0 on the cpu)
  size_t param_begin = 0;          // the trained parameters are net.params[param_begin, end)
};

// plan: the forward plan at the largest batch, made with keep_from = first_op so that every value
// a trained op reads or writes survives until backward.
BackpropPlan plan_backprop(const Device& dev, const Net& net, const NetPlan& plan, int first_op);

// Device memory the walk reads and writes.
struct BackpropBuffers {
  const float* params = nullptr;  // the folded parameters, laid out as net.params
  const float* x = nullptr;       // the backbone's input (value 0)
  float* const* acts = nullptr;   // the forward's buffers (plan.buffer_of)
  float* const* grads = nullptr;  // one per BackpropPlan::grad_numel entry
  float* scratch = nullptr;       // BackpropPlan::scratch_numel floats
  void* workspace = nullptr;      // BackpropPlan::workspace_bytes
  float* dparams = nullptr;       // dparams[k]: gradient of params[param_begin + k]
};

// plan: the forward plan of this batch (its n may be below the planned batch's). dfeatures:
// d loss / d features [n][feature_dim].
void backbone_backward(const Device& dev, const Net& net, const NetPlan& plan,
                       const BackpropPlan& bp, const BackpropBuffers& b, const float* dfeatures);

}  // namespace graft
