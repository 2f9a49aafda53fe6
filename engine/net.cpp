#include "engine/net.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>

namespace graft {

int add_conv(Net& net, const std::string& name, int input, int in_c, int out_c, int k, int stride,
             int groups, Act act, int residual) {
  NetOp op;
  op.kind = OpKind::conv;
  op.conv = ConvSpec{name, in_c, out_c, k, stride, groups, act};
  op.input = input;
  op.residual = residual;
  op.output = net.num_values++;
  net.ops.push_back(op);
  return op.output;
}

void add_global_avg_pool(Net& net, int input, int channels) {
  NetOp pool;
  pool.kind = OpKind::global_avg_pool;
  pool.input = input;
  pool.output = net.num_values++;
  net.ops.push_back(pool);
  net.feature_dim = channels;
}

const std::vector<std::string>& known_archs() {
  static const std::vector<std::string> names = {
      "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3",
      "efficientnet_lite4", "mobilenet_v2",       "resnet18",           "resnet50"};
  return names;
}

Net build_arch(const std::string& arch) {
  const std::string lite = "efficientnet_lite";
  if (arch.size() == lite.size() + 1 && arch.compare(0, lite.size(), lite) == 0 &&
      arch.back() >= '0' && arch.back() <= '4')
    return build_efficientnet_lite(arch.back() - '0');
  if (arch == "mobilenet_v2") return build_mobilenet_v2();
  if (arch == "resnet18") return build_resnet(18);
  if (arch == "resnet50") return build_resnet(50);
  std::string known;
  for (const auto& a : known_archs()) known += (known.empty() ? "" : ", ") + a;
  throw std::invalid_argument("unknown arch '" + arch + "' (known: " + known + ")");
}

// Output size and leading padding of one spatial axis.
static void axis_geometry(PadMode mode, int in, int k, int stride, int* out, int* pad_before) {
  if (mode == PadMode::tf_same) {
    same_padding(in, k, stride, out, pad_before);
  } else {
    *pad_before = k / 2;  // PyTorch's padding=(k-1)/2 for the odd kernels these nets use
    *out = conv_out_size(in, k, stride, k / 2, k / 2);
  }
}

namespace {

// "stem", "blocks.7" or "head": the block an op belongs to, by the name of its conv.
std::string block_key(const Net& net, size_t i) {
  for (size_t j = i + 1; j-- > 0;) {
    if (net.ops[j].kind != OpKind::conv) continue;
    const std::string& name = net.ops[j].conv.name;
    const size_t dot = name.find('.');
    if (name.compare(0, 7, "blocks.") != 0) return name.substr(0, dot);
    return name.substr(0, name.find('.', 7));
  }
  return "stem";
}

}  // namespace

int count_blocks(const Net& net) {
  int blocks = 0;
  for (size_t i = 0; i < net.ops.size(); ++i)
    blocks += i == 0 || block_key(net, i) != block_key(net, i - 1);
  return blocks;
}

int first_trainable_op(const Net& net, int blocks) {
  if (blocks <= 0) return int(net.ops.size());
  int seen = 0;
  for (size_t i = net.ops.size(); i-- > 0;) {
    if (i + 1 == net.ops.size() || block_key(net, i) != block_key(net, i + 1)) ++seen;
    if (seen > blocks) return int(i) + 1;
  }
  return 0;
}

namespace {

// Images per piece of a large batch on the CPU. Lite0's first activations take 1.6-1.8 MB an
// image, so a piece's layers hand over in the caches, where a batch of 32 goes through memory
// (bench/worklog-cpu.md). With a thread for each image or more, the pieces run side by side, one
// lane per thread (NetPlan::piece_lanes), 2 images a piece where every lane gets two, else 1.
// Otherwise each piece's ops split their work across the threads, and a piece holds as many
// images as there are threads, at least 2: fewer leave too few rows to split.
constexpr int kLaneImages = 2;
int piece_images(int n) {
  const int threads = omp_get_max_threads();
  if (threads > 1 && n >= threads) return n >= kLaneImages * threads ? kLaneImages : 1;
  return std::max(2, threads);
}

// Where pieces end: the first op whose weights are at least twice a piece's input to it, and from
// which on every op reads only that input and values made from there (so the pieces hand over one
// value). At 224x224 on Lite0 that is the 7x7 stage (weights 12x a 2-image piece's input): run in
// pieces, each piece (98 rows) would read its weights again; the whole batch runs it at once
// (bench/worklog-cpu.md).
int pieces_end(const Net& net, const NetPlan& plan, int piece) {
  const int ops = int(net.ops.size());
  std::vector<int> made_by(net.num_values, -1);
  for (int i = 0; i < ops; ++i) made_by[net.ops[i].output] = i;
  auto hands_over = [&](int i) {
    for (int j = i; j < ops; ++j)
      for (int v : {net.ops[j].input, net.ops[j].residual})
        if (v >= 0 && v != net.ops[i].input && made_by[v] < i) return false;
    return true;
  };
  for (int i = 0; i < ops; ++i) {
    const NetOp& op = net.ops[i];
    if (op.kind != OpKind::conv || op.input == 0) continue;
    const ConvShape& s = plan.convs[i];
    const int64_t weights = int64_t(s.k_h) * s.k_w * (s.in_c / s.groups) * s.out_c;
    if (weights >= 2 * (int64_t(plan.values[op.input].numel()) / plan.n * piece) && hands_over(i))
      return i;
  }
  return ops;
}

// Expand-depthwise pairs worth running as one kernel: the expanded activation of a lane's piece
// (kLaneImages) takes more than kFuseBytes (about a core's L2 on the machines measured;
// bench/worklog-cpu.md), no other op reads it, and backward does not keep it (both ops before
// keep_from). Per image, so that a batch and its pieces fuse the same pairs and share their
// buffers alike.
constexpr size_t kFuseBytes = size_t(1) << 20;

void mark_expand_pairs(const Net& net, int keep_from, NetPlan& plan) {
  const int ops = int(net.ops.size());
  plan.expand_with_next.assign(ops, 0);
  std::vector<int> readers(net.num_values, 0);
  for (const NetOp& op : net.ops)
    for (int v : {op.input, op.residual})
      if (v >= 0) ++readers[v];
  for (int i = 0; i + 1 < ops; ++i) {
    const NetOp &a = net.ops[i], &b = net.ops[i + 1];
    if (a.kind != OpKind::conv || b.kind != OpKind::conv) continue;
    if (keep_from >= 0 && i + 1 >= keep_from) continue;
    const ConvShape &pw = plan.convs[i], &dw = plan.convs[i + 1];
    const bool pointwise = pw.k_h == 1 && pw.k_w == 1 && pw.stride_h == 1 && pw.stride_w == 1 &&
                           pw.pad_top == 0 && pw.pad_left == 0 && pw.groups == 1 && a.residual < 0;
    const bool depthwise = dw.groups == dw.in_c && dw.groups == dw.out_c && dw.groups > 1 &&
                           dw.k_h == dw.k_w && dw.stride_h == dw.stride_w && b.residual < 0;
    const size_t piece_bytes = plan.values[a.output].numel() / plan.n * kLaneImages * 4;
    if (pointwise && depthwise && b.input == a.output && readers[a.output] == 1 &&
        a.output != net.ops.back().output && piece_bytes > kFuseBytes)
      plan.expand_with_next[i] = 1;
  }
}

void add_pieces(const Net& net, int keep_from, NetPlan& plan) {
  const int piece = piece_images(plan.n);
  if (keep_from >= 0 || plan.n <= piece) return;
  plan.pieces.push_back(plan_net(net, piece, plan.in_h, plan.in_w));
  if (plan.n % piece) plan.pieces.push_back(plan_net(net, plan.n % piece, plan.in_h, plan.in_w));
  // Buffers are shared by liveness alone, whatever the batch, so a piece's values land in the same
  // buffers as the batch's, at their start.
  for (const NetPlan& p : plan.pieces)
    if (p.buffer_of != plan.buffer_of)
      throw std::logic_error("plan_net: a piece's buffers differ from its batch's");
  plan.pieces_until = pieces_end(net, plan, piece);
  // Lanes, when the pieces run side by side: every lane's buffers fit in the batch's.
  const int threads = omp_get_max_threads();
  if (threads > 1 && plan.n >= threads)
    plan.piece_lanes = std::min(threads, (plan.n + piece - 1) / piece);
  plan.lane_numel = plan.pieces[0].buffer_numel;
  for (size_t b = 0; b < plan.buffer_numel.size(); ++b)
    plan.buffer_numel[b] = std::max(plan.buffer_numel[b], plan.lane_numel[b] * plan.piece_lanes);
  if (plan.pieces_until < int(net.ops.size())) {
    plan.handoff_buffer = int(plan.buffer_numel.size());
    plan.buffer_numel.push_back(plan.values[net.ops[plan.pieces_until].input].numel());
  }
}

}  // namespace

NetPlan plan_net(const Net& net, int n, int in_h, int in_w, int keep_from, bool for_cpu) {
  if (n <= 0 || in_h <= 0 || in_w <= 0)
    throw std::invalid_argument("plan_net: batch and image size must be positive");
  NetPlan plan;
  plan.n = n;
  plan.in_h = in_h;
  plan.in_w = in_w;
  plan.pieces_until = int(net.ops.size());
  plan.values.assign(net.num_values, ValueShape{});
  plan.convs.assign(net.ops.size(), ConvShape{});
  plan.pools.assign(net.ops.size(), PoolShape{});
  plan.values[0] = ValueShape{n, in_h, in_w, 3};

  for (size_t i = 0; i < net.ops.size(); ++i) {
    const NetOp& op = net.ops[i];
    const ValueShape& x = plan.values[op.input];
    ValueShape& y = plan.values[op.output];
    if (op.kind == OpKind::conv) {
      const ConvSpec& c = op.conv;
      if (x.c != c.in_c)
        throw std::logic_error("plan_net: " + c.name + " expects " + std::to_string(c.in_c) +
                               " channels, gets " + std::to_string(x.c));
      ConvShape s{};
      s.n = n;
      s.in_h = x.h;
      s.in_w = x.w;
      s.in_c = x.c;
      s.out_c = c.out_c;
      s.k_h = s.k_w = c.k;
      s.stride_h = s.stride_w = c.stride;
      s.groups = c.groups;
      axis_geometry(net.padding, x.h, c.k, c.stride, &s.out_h, &s.pad_top);
      axis_geometry(net.padding, x.w, c.k, c.stride, &s.out_w, &s.pad_left);
      if (s.out_h <= 0 || s.out_w <= 0)
        throw std::invalid_argument("plan_net: input " + std::to_string(in_h) + "x" +
                                    std::to_string(in_w) + " is too small for " + c.name);
      plan.convs[i] = s;
      y = ValueShape{n, s.out_h, s.out_w, s.out_c};
    } else if (op.kind == OpKind::max_pool) {
      PoolShape p{};
      p.n = n;
      p.in_h = x.h;
      p.in_w = x.w;
      p.c = x.c;
      p.k_h = p.k_w = op.pool_k;
      p.stride_h = p.stride_w = op.pool_stride;
      axis_geometry(net.padding, x.h, op.pool_k, op.pool_stride, &p.out_h, &p.pad_top);
      axis_geometry(net.padding, x.w, op.pool_k, op.pool_stride, &p.out_w, &p.pad_left);
      plan.pools[i] = p;
      y = ValueShape{n, p.out_h, p.out_w, p.c};
    } else {
      y = ValueShape{n, 1, 1, x.c};
    }
    if (op.residual >= 0) {
      const ValueShape& r = plan.values[op.residual];
      if (r.h != y.h || r.w != y.w || r.c != y.c)
        throw std::logic_error("plan_net: residual shape mismatch at op " + std::to_string(i));
    }
  }

  // Buffer sharing by liveness: a value's buffer is free again after the last op that reads it.
  // An op's output never shares a buffer with its own inputs, so kernels need not handle aliasing.
  // A value a trained op reads or writes is used again by backward: it is never freed.
  std::vector<int> last_use(net.num_values, -1);
  const int forever = int(net.ops.size());
  for (size_t i = 0; i < net.ops.size(); ++i) {
    const bool kept = keep_from >= 0 && int(i) >= keep_from;
    last_use[net.ops[i].input] = kept ? forever : int(i);
    if (net.ops[i].residual >= 0) last_use[net.ops[i].residual] = kept ? forever : int(i);
    if (kept) last_use[net.ops[i].output] = forever;
  }
  // A fused expand-depthwise pair reads the expand's input while it writes the depthwise output,
  // band by band: that input stays live through the pair.
  if (for_cpu) {
    mark_expand_pairs(net, keep_from, plan);
    for (size_t i = 0; i + 1 < net.ops.size(); ++i)
      if (plan.expand_with_next[i])
        last_use[net.ops[i].input] = std::max(last_use[net.ops[i].input], int(i) + 1);
  }
  const int final_value = net.ops.empty() ? 0 : net.ops.back().output;
  plan.buffer_of.assign(net.num_values, -1);
  std::vector<bool> busy;
  for (size_t i = 0; i < net.ops.size(); ++i) {
    const NetOp& op = net.ops[i];
    if (op.output != final_value) {
      int b = -1;
      for (size_t j = 0; j < busy.size(); ++j)
        if (!busy[j]) {
          b = int(j);
          break;
        }
      if (b < 0) {
        b = int(busy.size());
        busy.push_back(false);
        plan.buffer_numel.push_back(0);
      }
      busy[b] = true;
      plan.buffer_of[op.output] = b;
      plan.buffer_numel[b] = std::max(plan.buffer_numel[b], plan.values[op.output].numel());
    }
    for (int v : {op.input, op.residual})
      if (v > 0 && last_use[v] == int(i) && plan.buffer_of[v] >= 0) busy[plan.buffer_of[v]] = false;
  }
  if (for_cpu) add_pieces(net, keep_from, plan);
  return plan;
}

double net_flops_per_image(const Net& net, const NetPlan& plan) {
  double flops = 0;
  for (size_t i = 0; i < net.ops.size(); ++i) {
    if (net.ops[i].kind != OpKind::conv) continue;
    const ConvShape& s = plan.convs[i];
    flops += 2.0 * s.out_h * s.out_w * s.out_c * s.k_h * s.k_w * (s.in_c / s.groups);
  }
  return flops;
}

}  // namespace graft
