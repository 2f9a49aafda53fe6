// ResNet-18 and ResNet-50 (He et al. 2016) as torchvision builds them: the bottleneck puts its
// stride on the 3x3 conv ("v1.5"), the shortcut is a strided 1x1 conv + BN where the shape changes,
// and the residual is added before the final ReLU of each block.
#include "engine/net.h"

namespace graft {

Net build_resnet(int depth) {
  const bool bottleneck = depth == 50;
  const int repeats18[] = {2, 2, 2, 2};
  const int repeats50[] = {3, 4, 6, 3};
  const int* repeats = bottleneck ? repeats50 : repeats18;
  const int expansion = bottleneck ? 4 : 1;

  Net net;
  net.arch = "resnet" + std::to_string(depth);
  net.padding = PadMode::symmetric;
  int x = add_conv(net, "stem", 0, 3, 64, 7, 2, 1, Act::relu);
  NetOp pool;
  pool.kind = OpKind::max_pool;
  pool.pool_k = 3;
  pool.pool_stride = 2;
  pool.input = x;
  pool.output = net.num_values++;
  net.ops.push_back(pool);
  x = pool.output;

  int c = 64, index = 0;
  for (int layer = 0; layer < 4; ++layer) {
    const int width = 64 << layer;
    for (int r = 0; r < repeats[layer]; ++r, ++index) {
      const int stride = (layer > 0 && r == 0) ? 2 : 1;
      const std::string p = "blocks." + std::to_string(index);
      const int out_c = width * expansion;
      int shortcut = x;
      if (stride != 1 || c != out_c)
        shortcut = add_conv(net, p + ".down", x, c, out_c, 1, stride, 1, Act::none);
      int y;
      if (bottleneck) {
        y = add_conv(net, p + ".conv1", x, c, width, 1, 1, 1, Act::relu);
        y = add_conv(net, p + ".conv2", y, width, width, 3, stride, 1, Act::relu);
        y = add_conv(net, p + ".conv3", y, width, out_c, 1, 1, 1, Act::relu, shortcut);
      } else {
        y = add_conv(net, p + ".conv1", x, c, width, 3, stride, 1, Act::relu);
        y = add_conv(net, p + ".conv2", y, width, out_c, 3, 1, 1, Act::relu, shortcut);
      }
      x = y;
      c = out_c;
    }
  }
  add_global_avg_pool(net, x, c);
  return net;
}

}  // namespace graft
