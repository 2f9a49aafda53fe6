#include "kernels/cpu/reference.h"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/philox.h"

namespace graft::cpu::ref {

void conv2d(const ConvShape& s, const float* x, const float* w, const float* bias,
            const float* residual, Act act, float* y) {
  const int icg = s.in_c / s.groups, ocg = s.out_c / s.groups;
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int oc = 0; oc < s.out_c; ++oc) {
          const int g = oc / ocg;
          double acc = 0.0;
          for (int ky = 0; ky < s.k_h; ++ky) {
            const int iy = oy * s.stride_h - s.pad_top + ky;
            if (iy < 0 || iy >= s.in_h) continue;
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int ix = ox * s.stride_w - s.pad_left + kx;
              if (ix < 0 || ix >= s.in_w) continue;
              for (int ic = 0; ic < icg; ++ic) {
                const float xv =
                    x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + g * icg + ic];
                const float wv = w[((int64_t(ky) * s.k_w + kx) * icg + ic) * s.out_c + oc];
                acc += double(xv) * double(wv);
              }
            }
          }
          const int64_t o = ((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.out_c + oc;
          if (bias) acc += bias[oc];
          if (residual) acc += residual[o];
          y[o] = apply_act(float(acc), act);
        }
}

void bias_act(int64_t rows, int c, const float* x, const float* bias, const float* residual,
              Act act, float* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < c; ++j) {
      float v = x[r * c + j];
      if (bias) v += bias[j];
      if (residual) v += residual[r * c + j];
      y[r * c + j] = apply_act(v, act);
    }
}

void max_pool2d(const PoolShape& s, const float* x, float* y) {
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int ch = 0; ch < s.c; ++ch) {
          float m = -std::numeric_limits<float>::infinity();
          for (int ky = 0; ky < s.k_h; ++ky)
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int iy = oy * s.stride_h - s.pad_top + ky;
              const int ix = ox * s.stride_w - s.pad_left + kx;
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              const float v = x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.c + ch];
              if (v > m) m = v;
            }
          y[((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.c + ch] = m;
        }
}

void avg_pool2d(const PoolShape& s, bool count_pad, const float* x, float* y) {
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int ch = 0; ch < s.c; ++ch) {
          double sum = 0.0;
          int taps = 0;
          for (int ky = 0; ky < s.k_h; ++ky)
            for (int kx = 0; kx < s.k_w; ++kx) {
              const int iy = oy * s.stride_h - s.pad_top + ky;
              const int ix = ox * s.stride_w - s.pad_left + kx;
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              sum += x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.c + ch];
              ++taps;
            }
          const int div = count_pad ? s.k_h * s.k_w : taps;
          y[((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.c + ch] =
              div > 0 ? float(sum / div) : 0.f;
        }
}

void global_avg_pool(int n, int hw, int c, const float* x, float* y) {
  for (int b = 0; b < n; ++b)
    for (int ch = 0; ch < c; ++ch) {
      double sum = 0.0;
      for (int p = 0; p < hw; ++p) sum += x[(int64_t(b) * hw + p) * c + ch];
      y[int64_t(b) * c + ch] = float(sum / hw);
    }
}

void linear(int n, int in, int out, const float* x, const float* w, const float* bias, float* y) {
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < out; ++o) {
      double acc = bias ? bias[o] : 0.0;
      for (int k = 0; k < in; ++k) acc += double(x[int64_t(i) * in + k]) * w[int64_t(o) * in + k];
      y[int64_t(i) * out + o] = float(acc);
    }
}

void linear_backward(int n, int in, int out, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db) {
  if (dx)
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < in; ++k) {
        double acc = 0.0;
        for (int o = 0; o < out; ++o)
          acc += double(dy[int64_t(i) * out + o]) * w[int64_t(o) * in + k];
        dx[int64_t(i) * in + k] = float(acc);
      }
  for (int o = 0; o < out; ++o)
    for (int k = 0; k < in; ++k) {
      double acc = 0.0;
      for (int i = 0; i < n; ++i) acc += double(dy[int64_t(i) * out + o]) * x[int64_t(i) * in + k];
      dw[int64_t(o) * in + k] = float(acc);
    }
  if (db)
    for (int o = 0; o < out; ++o) {
      double acc = 0.0;
      for (int i = 0; i < n; ++i) acc += dy[int64_t(i) * out + o];
      db[o] = float(acc);
    }
}

void softmax(int n, int c, const float* x, float* y) {
  for (int i = 0; i < n; ++i) {
    const float* xr = x + int64_t(i) * c;
    double m = xr[0];
    for (int j = 1; j < c; ++j) m = std::max(m, double(xr[j]));
    double sum = 0.0;
    for (int j = 0; j < c; ++j) sum += std::exp(double(xr[j]) - m);
    // Read all of the row before writing: y may alias x.
    std::vector<double> p(c);
    for (int j = 0; j < c; ++j) p[j] = std::exp(double(xr[j]) - m) / sum;
    for (int j = 0; j < c; ++j) y[int64_t(i) * c + j] = float(p[j]);
  }
}

void softmax_xent(int n, int c, const float* logits, const int32_t* labels, float smoothing,
                  float grad_scale, float* loss, float* dlogits) {
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * c;
    double m = z[0];
    for (int j = 1; j < c; ++j) m = std::max(m, double(z[j]));
    double sum = 0.0;
    for (int j = 0; j < c; ++j) sum += std::exp(double(z[j]) - m);
    const double log_sum = std::log(sum);
    double l = 0.0;
    for (int j = 0; j < c; ++j) {
      const double q = (j == labels[i] ? 1.0 - smoothing : 0.0) + double(smoothing) / c;
      const double log_p = double(z[j]) - m - log_sum;
      l -= q * log_p;
      if (dlogits) dlogits[int64_t(i) * c + j] = float(grad_scale * (std::exp(log_p) - q));
    }
    loss[i] = float(l);
  }
}

void dropout(int64_t count, float p, uint64_t seed, uint64_t counter_base, const float* x,
             float* y) {
  const float scale = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < count; ++i)
    y[i] = philox_uniform(seed, counter_base + uint64_t(i)) >= p ? x[i] * scale : 0.0f;
}

void normalize_u8(int64_t pixels, int c, const uint8_t* x, const float* mean, const float* std,
                  float* y) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int ch = 0; ch < c; ++ch)
      y[p * c + ch] = (float(x[p * c + ch]) / 255.0f - mean[ch]) / std[ch];
}

void sgd_momentum(const ParamRef* params, int num_params, float lr, float momentum) {
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    for (int64_t i = 0; i < r.count; ++i) {
      const float g = r.grad[i] + r.weight_decay * r.param[i];
      r.m[i] = momentum * r.m[i] + g;
      r.param[i] -= lr * r.m[i];
    }
  }
}

void adamw(const ParamRef* params, int num_params, const AdamWConfig& cfg) {
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  for (int t = 0; t < num_params; ++t) {
    const ParamRef& r = params[t];
    for (int64_t i = 0; i < r.count; ++i) {
      const float g = r.grad[i];
      r.param[i] *= 1.0f - cfg.lr * r.weight_decay;
      r.m[i] = cfg.beta1 * r.m[i] + (1.0f - cfg.beta1) * g;
      r.v[i] = cfg.beta2 * r.v[i] + (1.0f - cfg.beta2) * g * g;
      const double mhat = r.m[i] / bc1, vhat = r.v[i] / bc2;
      r.param[i] -= float(cfg.lr * mhat / (std::sqrt(vhat) + cfg.eps));
    }
  }
}

void confusion_update(int n, int c, const float* logits, const int32_t* labels,
                      int64_t* confusion) {
  for (int i = 0; i < n; ++i) {
    int pred = 0;
    for (int j = 1; j < c; ++j)
      if (logits[int64_t(i) * c + j] > logits[int64_t(i) * c + pred]) pred = j;
    confusion[int64_t(labels[i]) * c + pred] += 1;
  }
}

// Input pixel iy is read by output row oy through tap ky when oy * stride - pad + ky == iy: the
// tap must leave a multiple of the stride, and the output row must exist.
static bool output_for_tap(int i, int k, int stride, int pad, int out, int* o) {
  const int num = i + pad - k;
  if (num < 0 || num % stride != 0) return false;
  *o = num / stride;
  return *o < out;
}

void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int icg = s.in_c / s.groups, ocg = s.out_c / s.groups;
  for (int b = 0; b < s.n; ++b)
    for (int iy = 0; iy < s.in_h; ++iy)
      for (int ix = 0; ix < s.in_w; ++ix)
        for (int ic = 0; ic < s.in_c; ++ic) {
          const int g = ic / icg;
          double acc = 0.0;
          for (int ky = 0; ky < s.k_h; ++ky) {
            int oy;
            if (!output_for_tap(iy, ky, s.stride_h, s.pad_top, s.out_h, &oy)) continue;
            for (int kx = 0; kx < s.k_w; ++kx) {
              int ox;
              if (!output_for_tap(ix, kx, s.stride_w, s.pad_left, s.out_w, &ox)) continue;
              for (int oc = g * ocg; oc < (g + 1) * ocg; ++oc) {
                const float dv = dy[((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.out_c + oc];
                const float wv =
                    w[((int64_t(ky) * s.k_w + kx) * icg + ic - g * icg) * s.out_c + oc];
                acc += double(dv) * double(wv);
              }
            }
          }
          dx[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + ic] = float(acc);
        }
}

void conv2d_backward_filter(const ConvShape& s, const float* x, const float* dy, float* dw) {
  const int icg = s.in_c / s.groups, ocg = s.out_c / s.groups;
  for (int ky = 0; ky < s.k_h; ++ky)
    for (int kx = 0; kx < s.k_w; ++kx)
      for (int icl = 0; icl < icg; ++icl)
        for (int oc = 0; oc < s.out_c; ++oc) {
          const int ic = oc / ocg * icg + icl;
          double acc = 0.0;
          for (int b = 0; b < s.n; ++b)
            for (int oy = 0; oy < s.out_h; ++oy) {
              const int iy = oy * s.stride_h - s.pad_top + ky;
              if (iy < 0 || iy >= s.in_h) continue;
              for (int ox = 0; ox < s.out_w; ++ox) {
                const int ix = ox * s.stride_w - s.pad_left + kx;
                if (ix < 0 || ix >= s.in_w) continue;
                const float xv = x[((int64_t(b) * s.in_h + iy) * s.in_w + ix) * s.in_c + ic];
                const float dv = dy[((int64_t(b) * s.out_h + oy) * s.out_w + ox) * s.out_c + oc];
                acc += double(xv) * double(dv);
              }
            }
          dw[((int64_t(ky) * s.k_w + kx) * icg + icl) * s.out_c + oc] = float(acc);
        }
}

}  // namespace graft::cpu::ref
