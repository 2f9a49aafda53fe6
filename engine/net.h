#pragma once
// A backbone as a flat list of ops over numbered values (value 0 is the input image, NHWC).
// Architectures build this list in code (efficientnet_lite.cpp, mobilenet_v2.cpp, resnet.cpp); the
// loader fills in the parameters from a weight file, folding batch norm into each conv; the
// executor (engine/forward.cpp, on either device) walk the list. No layer classes, no registry.
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace graft {

enum class PadMode { tf_same, symmetric };

// One convolution with its batch norm folded in, followed by the epilogue.
struct ConvSpec {
  std::string name;  // weight-file prefix: "<name>.conv.weight", "<name>.bn.*"
  int in_c = 0, out_c = 0;
  int k = 1, stride = 1, groups = 1;
  Act act = Act::none;
};

enum class OpKind { conv, max_pool, global_avg_pool };

struct NetOp {
  OpKind kind = OpKind::conv;
  ConvSpec conv;                    // kind == conv
  int pool_k = 0, pool_stride = 0;  // kind == max_pool (padding follows the net's PadMode)
  int input = 0;
  int residual = -1;  // value added before the activation, or -1
  int output = 0;
};

struct Net {
  std::string arch;
  PadMode padding = PadMode::symmetric;
  std::vector<NetOp> ops;
  int num_values = 1;
  int feature_dim = 0;  // channels of the pooled feature vector (the last op's output)
  // Folded parameters, filled by the loader: for conv op i, weights (HWIO) at w_off[i] and bias at
  // b_off[i] in `params`. Unused entries for non-conv ops.
  std::vector<float> params;
  std::vector<size_t> w_off, b_off;
};

// Appends a conv op reading `input` and returns its output value id.
int add_conv(Net& net, const std::string& name, int input, int in_c, int out_c, int k, int stride,
             int groups, Act act, int residual = -1);

// Appends the global average pool that ends every backbone; its output, [n][channels], is the
// feature vector (sets net.feature_dim).
void add_global_avg_pool(Net& net, int input, int channels);

// Architecture builders. Each returns the op list with no parameters yet.
Net build_efficientnet_lite(int variant);  // 0..4
Net build_mobilenet_v2();
Net build_resnet(int depth);  // 18 or 50
// By metadata name ("efficientnet_lite0", "mobilenet_v2", "resnet50", ...); throws
// std::invalid_argument listing the known names for anything else.
Net build_arch(const std::string& arch);
const std::vector<std::string>& known_archs();

// Shapes of every value and conv for a given input size: computed once per (n, h, w).
struct ValueShape {
  int n = 0, h = 0, w = 0, c = 0;
  size_t numel() const { return size_t(n) * h * w * c; }
};
struct NetPlan {
  int n = 0, in_h = 0, in_w = 0;
  std::vector<ValueShape> values;
  std::vector<ConvShape> convs;  // per op (valid for conv ops)
  std::vector<PoolShape> pools;  // per op (valid for max_pool ops)
  // Values share a few buffers: value v lives in buffer buffer_of[v] (value 0 and the final
  // feature value are owned by the caller: buffer -1).
  std::vector<int> buffer_of;
  std::vector<size_t> buffer_numel;
  // The CPU runs a batch larger than a piece as pieces of a few images (engine/forward.cpp): the
  // plans of a whole piece and, if the batch is not a multiple of it, of the remainder. They use
  // the same buffers (from their start). Empty for a batch of one piece or less, and when values
  // are kept for backward (keep_from).
  std::vector<NetPlan> pieces;
  // Ops [0, pieces_until) run piece by piece; the rest, where a layer's weights outweigh a piece's
  // activations, run on the whole batch, from buffer `handoff_buffer`, which gathers the pieces'
  // outputs of op pieces_until - 1. pieces_until is the op count when every op runs in pieces
  // (handoff_buffer -1).
  int pieces_until = 0;
  int handoff_buffer = -1;
  // With several threads the pieces run side by side, each on one thread (a lane) with kernels
  // that do not split their work: lane t's buffers start lane_numel[b] * t floats into buffer b.
  // A piece's ops are too small to split across threads without waiting at every op's end.
  int piece_lanes = 1;
  std::vector<size_t> lane_numel;
  // CPU: expand_with_next[i] means op i, a pointwise expand, and op i + 1, the depthwise conv that
  // alone reads its output, run as one kernel (cpu::expand_depthwise) when that output is larger
  // than the caches. Empty for a GPU plan.
  std::vector<char> expand_with_next;
};
// keep_from: ops from this index on are trained; every value they read or write gets a buffer of
// its own, kept until backward has used it (-1: inference, buffers shared by liveness; the plan
// then has pieces, unless it is for a GPU: `for_cpu` false).
NetPlan plan_net(const Net& net, int n, int in_h, int in_w, int keep_from = -1,
                 bool for_cpu = true);

// Blocks, for fine-tuning: the stem, then each "blocks.K" in order, then the final 1x1 "head" conv
// where the arch has one. An op without parameters (pooling) belongs to the block before it.
// Returns the first op of the last `blocks` blocks: 0 for all of them (or more blocks than there
// are), net.ops.size() for none.
int first_trainable_op(const Net& net, int blocks);
int count_blocks(const Net& net);

// Multiply-adds of one image's forward pass at the planned size (for throughput reports).
double net_flops_per_image(const Net& net, const NetPlan& plan);

}  // namespace graft
