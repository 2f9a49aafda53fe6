#include "engine/inverted_residual.h"

namespace graft {

int add_inverted_residual(Net& net, int index, int input, int in_c, int out_c, int expand_ratio,
                          int k, int stride) {
  const std::string p = "blocks." + std::to_string(index);
  const int mid = in_c * expand_ratio;
  int x = input;
  if (expand_ratio != 1) x = add_conv(net, p + ".expand", x, in_c, mid, 1, 1, 1, Act::relu6);
  x = add_conv(net, p + ".dw", x, mid, mid, k, stride, mid, Act::relu6);
  const bool shortcut = stride == 1 && in_c == out_c;
  return add_conv(net, p + ".project", x, mid, out_c, 1, 1, 1, Act::none, shortcut ? input : -1);
}

}  // namespace graft
