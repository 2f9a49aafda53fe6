// EfficientNet-Lite0..4 (Tan & Le 2019; the "lite" variants drop squeeze-excitation and swap swish
// for ReLU6 so they quantise well). Lite1-4 only scale width and depth of Lite0 and keep the stem,
// the head and the repeats of the first and last stage fixed, exactly as the TensorFlow builder
// (efficientnet_lite_builder.py) does. Padding is TensorFlow "SAME" and BN epsilon 1e-3; both
// come from the weight file's metadata, not from here.
#include <cmath>

#include "engine/inverted_residual.h"
#include "engine/net.h"

namespace graft {

namespace {

struct Stage {
  int repeats, k, stride, expand, in_c, out_c;
};

// Lite0's stages: r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
const Stage kStages[] = {{1, 3, 1, 1, 32, 16},  {2, 3, 2, 6, 16, 24},  {2, 5, 2, 6, 24, 40},
                         {3, 3, 2, 6, 40, 80},  {3, 5, 1, 6, 80, 112}, {4, 5, 2, 6, 112, 192},
                         {1, 3, 1, 6, 192, 320}};

struct LiteScale {
  double width, depth;
};
const LiteScale kScales[] = {{1.0, 1.0}, {1.0, 1.1}, {1.1, 1.2}, {1.2, 1.4}, {1.4, 1.8}};

// round_filters of the TensorFlow reference: scale, round to a multiple of 8, never drop > 10%.
int round_filters(int filters, double width) {
  const int divisor = 8;
  double f = filters * width;
  int rounded = std::max(divisor, int(f + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * f) rounded += divisor;
  return rounded;
}

}  // namespace

Net build_efficientnet_lite(int variant) {
  const LiteScale sc = kScales[variant];
  Net net;
  net.arch = "efficientnet_lite" + std::to_string(variant);
  net.padding = PadMode::tf_same;
  int x = add_conv(net, "stem", 0, 3, 32, 3, 2, 1, Act::relu6);
  int c = 32;
  int index = 0;
  const int num_stages = int(sizeof(kStages) / sizeof(kStages[0]));
  for (int s = 0; s < num_stages; ++s) {
    const Stage& st = kStages[s];
    const bool fixed = s == 0 || s == num_stages - 1;
    const int repeats = fixed ? st.repeats : int(std::ceil(sc.depth * st.repeats));
    const int out_c = round_filters(st.out_c, sc.width);
    for (int r = 0; r < repeats; ++r) {
      x = add_inverted_residual(net, index++, x, c, out_c, st.expand, st.k, r == 0 ? st.stride : 1);
      c = out_c;
    }
  }
  x = add_conv(net, "head", x, c, 1280, 1, 1, 1, Act::relu6);
  add_global_avg_pool(net, x, 1280);
  return net;
}

}  // namespace graft
