#include "engine/augment.h"

#include <algorithm>
#include <cmath>

#include "io/dataset.h"

namespace graft {

void augment_image(const Image& src, const Preprocess& p, uint64_t key, uint8_t* dst) {
  SplitMix64 g{key};
  auto uniform = [&](double lo, double hi) {
    return lo + (hi - lo) * double(g.next() >> 11) * (1.0 / 9007199254740992.0);
  };
  const double area = double(src.width) * src.height;
  CropBox box{0, 0, double(src.width), double(src.height)};
  bool found = false;
  // torchvision's algorithm: up to 10 tries of (scale, log-uniform ratio), then a centre crop.
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * uniform(0.08, 1.0);
    const double ratio = std::exp(uniform(std::log(3.0 / 4.0), std::log(4.0 / 3.0)));
    const double w = std::round(std::sqrt(target * ratio));
    const double h = std::round(std::sqrt(target / ratio));
    if (w >= 1 && h >= 1 && w <= src.width && h <= src.height) {
      box = CropBox{double(g.below(uint64_t(src.width - w) + 1)),
                    double(g.below(uint64_t(src.height - h) + 1)), w, h};
      found = true;
    }
  }
  if (!found) {
    const double in_ratio = double(src.width) / src.height;
    double w = src.width, h = src.height;
    if (in_ratio < 3.0 / 4.0)
      h = std::round(w / (3.0 / 4.0));
    else if (in_ratio > 4.0 / 3.0)
      w = std::round(h * (4.0 / 3.0));
    box = CropBox{(src.width - w) / 2, (src.height - h) / 2, w, h};
  }
  resize_bilinear_aa(src, box.x, box.y, box.w, box.h, p.size, p.size, dst);
  if (g.next() & 1) {
    for (int y = 0; y < p.size; ++y) {
      uint8_t* row = dst + size_t(y) * p.size * 3;
      for (int a = 0, b = p.size - 1; a < b; ++a, --b)
        for (int c = 0; c < 3; ++c) std::swap(row[a * 3 + c], row[b * 3 + c]);
    }
  }
}

}  // namespace graft
