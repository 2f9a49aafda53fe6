// MobileNetV2 (Sandler et al. 2018) as torchvision builds it: symmetric padding, ReLU6, BN
// epsilon 1e-5 (from the weight file's metadata).
#include "engine/inverted_residual.h"
#include "engine/net.h"

namespace graft {

Net build_mobilenet_v2() {
  struct Stage {
    int expand, out_c, repeats, stride;
  };
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                          {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  Net net;
  net.arch = "mobilenet_v2";
  net.padding = PadMode::symmetric;
  int x = add_conv(net, "stem", 0, 3, 32, 3, 2, 1, Act::relu6);
  int c = 32, index = 0;
  for (const Stage& st : stages)
    for (int r = 0; r < st.repeats; ++r) {
      x = add_inverted_residual(net, index++, x, c, st.out_c, st.expand, 3, r == 0 ? st.stride : 1);
      c = st.out_c;
    }
  x = add_conv(net, "head", x, c, 1280, 1, 1, 1, Act::relu6);
  add_global_avg_pool(net, x, 1280);
  return net;
}

}  // namespace graft
