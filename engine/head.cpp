#include "engine/head.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/philox.h"

namespace graft {

namespace {

size_t floats_per_head(const HeadShape& s, int batch) {
  const size_t out_in = s.hidden ? size_t(s.hidden) : size_t(s.in);
  size_t params = size_t(s.classes) * out_in + s.classes;
  if (s.hidden) params += size_t(s.hidden) * s.in + s.hidden;
  size_t scratch = size_t(batch) * (s.in + 2 * s.classes);  // x_drop, logits, dlogits
  if (s.hidden) scratch += size_t(batch) * 3 * s.hidden;    // h, h_drop, dh
  return params * 4 + scratch;                              // weights, grads, m, v
}

// Glorot (Xavier) uniform, Keras Dense's default: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
std::vector<float> glorot(int out, int in, uint64_t seed) {
  std::vector<float> w(size_t(out) * in);
  const float a = std::sqrt(6.f / float(in + out));
  for (size_t i = 0; i < w.size(); ++i) w[i] = (2.f * philox_uniform(seed, i) - 1.f) * a;
  return w;
}

}  // namespace

size_t head_arena_bytes(const HeadShape& shape, int batch) {
  // 64-byte alignment padding for each of the up to 22 carved buffers.
  return floats_per_head(shape, batch) * sizeof(float) + 22 * 64;
}

void head_create(Head& head, Arena& a, const HeadShape& shape, int batch, uint64_t seed) {
  head = Head{};
  head.shape = shape;
  head.batch = batch;
  const int in2 = shape.hidden ? shape.hidden : shape.in;
  HeadTensors& t = head.t;
  auto take = [&](size_t n) { return arena_alloc<float>(a, n); };
  if (shape.hidden) {
    const size_t n1 = size_t(shape.hidden) * shape.in;
    t.w1 = take(n1), t.gw1 = take(n1), t.mw1 = take(n1), t.vw1 = take(n1);
    t.b1 = take(shape.hidden), t.gb1 = take(shape.hidden), t.mb1 = take(shape.hidden),
    t.vb1 = take(shape.hidden);
  }
  const size_t n2 = size_t(shape.classes) * in2;
  t.w2 = take(n2), t.gw2 = take(n2), t.mw2 = take(n2), t.vw2 = take(n2);
  t.b2 = take(shape.classes), t.gb2 = take(shape.classes), t.mb2 = take(shape.classes),
  t.vb2 = take(shape.classes);

  HeadScratch& s = head.s;
  s.x_drop = take(size_t(batch) * shape.in);
  s.logits = take(size_t(batch) * shape.classes);
  s.dlogits = take(size_t(batch) * shape.classes);
  if (shape.hidden) {
    s.h = take(size_t(batch) * shape.hidden);
    s.h_drop = take(size_t(batch) * shape.hidden);
    s.dh = take(size_t(batch) * shape.hidden);
  }

  Dense hidden, out;
  if (shape.hidden) {
    hidden.in = shape.in;
    hidden.out = shape.hidden;
    hidden.w = glorot(shape.hidden, shape.in, seed ^ 0x68696464656eull);  // "hidden"
    hidden.b.assign(shape.hidden, 0.f);
  }
  out.in = in2;
  out.out = shape.classes;
  out.w = glorot(shape.classes, in2, seed);
  out.b.assign(shape.classes, 0.f);
  head_upload(a.dev, head, hidden, out);
}

void head_upload(const Device& dev, Head& head, const Dense& hidden, const Dense& out) {
  const HeadShape& s = head.shape;
  HeadTensors& t = head.t;
  const int in2 = s.hidden ? s.hidden : s.in;
  if (s.hidden) {
    copy_to_device(dev, t.w1, hidden.w.data(), hidden.w.size() * 4);
    copy_to_device(dev, t.b1, hidden.b.data(), hidden.b.size() * 4);
    for (float* p : {t.mw1, t.vw1}) fill_zero(dev, p, size_t(s.hidden) * s.in * 4);
    for (float* p : {t.mb1, t.vb1}) fill_zero(dev, p, size_t(s.hidden) * 4);
  }
  copy_to_device(dev, t.w2, out.w.data(), out.w.size() * 4);
  copy_to_device(dev, t.b2, out.b.data(), out.b.size() * 4);
  for (float* p : {t.mw2, t.vw2}) fill_zero(dev, p, size_t(s.classes) * in2 * 4);
  for (float* p : {t.mb2, t.vb2}) fill_zero(dev, p, size_t(s.classes) * 4);
  head.step = 0;
  synchronize(dev);  // the host vectors may go away when we return
}

void head_download(const Device& dev, const Head& head, Dense* hidden, Dense* out) {
  const HeadShape& s = head.shape;
  const int in2 = s.hidden ? s.hidden : s.in;
  *hidden = Dense{};
  if (s.hidden) {
    hidden->in = s.in;
    hidden->out = s.hidden;
    hidden->w.resize(size_t(s.hidden) * s.in);
    hidden->b.resize(s.hidden);
    copy_to_host(dev, hidden->w.data(), head.t.w1, hidden->w.size() * 4);
    copy_to_host(dev, hidden->b.data(), head.t.b1, hidden->b.size() * 4);
  }
  out->in = in2;
  out->out = s.classes;
  out->w.resize(size_t(s.classes) * in2);
  out->b.resize(s.classes);
  copy_to_host(dev, out->w.data(), head.t.w2, out->w.size() * 4);
  copy_to_host(dev, out->b.data(), head.t.b2, out->b.size() * 4);
  synchronize(dev);
}

namespace {

struct NamedBuffer {
  const char* name;
  float* ptr;
  size_t count;
};

std::vector<NamedBuffer> state_buffers(const Head& head) {
  const HeadShape& s = head.shape;
  const HeadTensors& t = head.t;
  const int in2 = s.hidden ? s.hidden : s.in;
  std::vector<NamedBuffer> out;
  auto add = [&](const char* name, float* ptr, size_t count) { out.push_back({name, ptr, count}); };
  if (s.hidden) {
    const size_t n1 = size_t(s.hidden) * s.in;
    add("w1", t.w1, n1), add("b1", t.b1, s.hidden);
    add("m.w1", t.mw1, n1), add("m.b1", t.mb1, s.hidden);
    add("v.w1", t.vw1, n1), add("v.b1", t.vb1, s.hidden);
  }
  const size_t n2 = size_t(s.classes) * in2;
  add("w2", t.w2, n2), add("b2", t.b2, s.classes);
  add("m.w2", t.mw2, n2), add("m.b2", t.mb2, s.classes);
  add("v.w2", t.vw2, n2), add("v.b2", t.vb2, s.classes);
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::vector<float>>> head_state(const Device& dev,
                                                                   const Head& head) {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const NamedBuffer& b : state_buffers(head)) {
    out.emplace_back(b.name, std::vector<float>(b.count));
    copy_to_host(dev, out.back().second.data(), b.ptr, b.count * 4);
  }
  synchronize(dev);
  return out;
}

void head_restore(const Device& dev, Head& head,
                  const std::vector<std::pair<std::string, std::vector<float>>>& state,
                  int64_t step) {
  for (const NamedBuffer& b : state_buffers(head)) {
    auto it =
        std::find_if(state.begin(), state.end(), [&](const auto& e) { return e.first == b.name; });
    if (it == state.end() || it->second.size() != b.count)
      throw std::runtime_error(std::string("checkpoint: head tensor '") + b.name +
                               "' is missing or has the wrong size");
    copy_to_device(dev, b.ptr, it->second.data(), b.count * 4);
  }
  head.step = step;
  synchronize(dev);
}

void head_forward(const Device& dev, Head& head, const HeadPass& pass, int n, const float* features,
                  const int32_t* labels, float* loss_out, int64_t* confusion) {
  const HeadShape& sh = head.shape;
  const HeadTensors& t = head.t;
  const HeadScratch& s = head.s;
  const float p = pass.training ? pass.dropout : 0.f;
  // Each dropout layer draws from its own counter range so masks never repeat. Eval skips the
  // dropout kernels; training runs them even at p = 0 so its inputs are always in s.x_drop/h_drop.
  const uint64_t span = uint64_t(head.batch) * (sh.in + sh.hidden);
  const float* x = features;
  if (pass.training) {
    op_dropout(dev, int64_t(n) * sh.in, p, pass.seed, pass.counter * span, features, s.x_drop);
    x = s.x_drop;
  }
  if (sh.hidden) {
    op_linear(dev, n, sh.in, sh.hidden, x, t.w1, t.b1, s.h);
    op_bias_act(dev, n, sh.hidden, s.h, nullptr, nullptr, Act::relu, s.h);
    x = s.h;
    if (pass.training) {
      op_dropout(dev, int64_t(n) * sh.hidden, p, pass.seed,
                 pass.counter * span + uint64_t(head.batch) * sh.in, s.h, s.h_drop);
      x = s.h_drop;
    }
  }
  op_linear(dev, n, sh.hidden ? sh.hidden : sh.in, sh.classes, x, t.w2, t.b2, s.logits);
  if (!labels) return;
  op_softmax_xent(dev, n, sh.classes, s.logits, labels, pass.smoothing,
                  pass.training ? 1.f / float(n) : 1.f, loss_out,
                  pass.training ? s.dlogits : nullptr);
  if (confusion) op_confusion_update(dev, n, sh.classes, s.logits, labels, confusion);
}

void head_backward(const Device& dev, Head& head, const HeadPass& pass, int n, float* dfeatures) {
  const HeadShape& sh = head.shape;
  const HeadTensors& t = head.t;
  const HeadScratch& s = head.s;
  const uint64_t span = uint64_t(head.batch) * (sh.in + sh.hidden);
  const int in2 = sh.hidden ? sh.hidden : sh.in;
  const float* top_in = sh.hidden ? s.h_drop : s.x_drop;
  // The top layer's input gradient goes to the hidden layer, or straight to the features.
  float* d_top_in = sh.hidden ? s.dh : dfeatures;
  op_linear_backward(dev, n, in2, sh.classes, top_in, t.w2, s.dlogits, d_top_in, t.gw2, t.gb2);
  float* d_in = dfeatures;
  if (sh.hidden) {
    op_dropout(dev, int64_t(n) * sh.hidden, pass.dropout, pass.seed,
               pass.counter * span + uint64_t(head.batch) * sh.in, s.dh, s.dh);
    // ReLU's gradient passes where the saved post-ReLU activation is positive.
    op_relu_backward(dev, int64_t(n) * sh.hidden, s.h, s.dh);
    op_linear_backward(dev, n, sh.in, sh.hidden, s.x_drop, t.w1, s.dh, d_in, t.gw1, t.gb1);
  }
  // Through the first dropout: the same mask, applied to the gradient.
  if (d_in)
    op_dropout(dev, int64_t(n) * sh.in, pass.dropout, pass.seed, pass.counter * span, d_in, d_in);
}

std::vector<ParamRef> head_params(const Head& head, const OptimConfig& opt) {
  const HeadShape& sh = head.shape;
  const HeadTensors& t = head.t;
  const float kernel_decay = opt.optimizer == "sgd" ? 2.f * opt.l2 : opt.weight_decay;
  std::vector<ParamRef> refs;
  if (sh.hidden) {
    refs.push_back({t.w1, t.gw1, t.mw1, t.vw1, int64_t(sh.hidden) * sh.in, kernel_decay});
    refs.push_back({t.b1, t.gb1, t.mb1, t.vb1, sh.hidden, 0.f});
  }
  const int in2 = sh.hidden ? sh.hidden : sh.in;
  refs.push_back({t.w2, t.gw2, t.mw2, t.vw2, int64_t(sh.classes) * in2, kernel_decay});
  refs.push_back({t.b2, t.gb2, t.mb2, t.vb2, sh.classes, 0.f});
  return refs;
}

void optimizer_update(const Device& dev, const OptimConfig& opt, const ParamRef* params,
                      size_t count, float lr, int64_t step) {
  if (opt.optimizer == "sgd")
    op_sgd_momentum(dev, params, int(count), lr, opt.momentum);
  else
    op_adamw(dev, params, int(count), AdamWConfig{lr, opt.beta1, opt.beta2, opt.eps, step});
}

}  // namespace graft
