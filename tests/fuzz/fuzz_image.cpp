// libFuzzer target: graft::decode_image on arbitrary bytes (full size and TurboJPEG scaled
// decodes), then preprocess_image of every decoded image, centre crop and squash.
//
// A bad image must be an ImageError with a one-line message; anything else escaping (say
// std::invalid_argument from the resizer) aborts and is reported as a crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "io/image.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_image: invariant broken: %s\n", what);
    std::abort();
  }
}

void preprocess_both_ways(const graft::Image& img) {
  check(img.width > 0 && img.height > 0, "empty image decoded without an error");
  check(img.rgb.size() == size_t(img.width) * img.height * 3, "rgb size");
  graft::Preprocess p;
  p.size = 32;
  std::vector<uint8_t> out(size_t(p.size) * p.size * 3);
  for (const char* mode : {"center_crop", "squash"}) {
    p.resize_mode = mode;
    graft::preprocess_image(img, p, out.data());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Small enough that the largest decode (4M pixels, 12 MB RGB, 16 MB CMYK) stays well under
  // the fuzzer's RSS limit; the cap itself is what is under test, not the machine's memory.
  graft::DecodeLimits limits;
  limits.max_pixels = int64_t(4) << 20;
  // (0, 0) is full size; the others pick TurboJPEG DCT scales (PNG ignores them).
  static const int kMinSizes[][2] = {{0, 0}, {32, 32}, {1, 1}, {300, 5}};
  const bool jpeg = graft::sniff_format(data, size) == graft::ImageFormat::jpeg;
  graft::ImageSize full;
  for (const auto& m : kMinSizes) {
    try {
      const graft::Image img = graft::decode_image(data, size, m[0], m[1], limits, "fuzz");
      if (m[0] == 0) full = {img.width, img.height};
      // A scaled decode is never smaller than asked unless even full size is.
      if (full.width > 0 && (img.width < m[0] || img.height < m[1]))
        check(img.width == full.width && img.height == full.height, "scaled decode too small");
      preprocess_both_ways(img);
    } catch (const graft::ImageError& e) {
      check(std::strchr(e.what(), '\n') == nullptr, "error message spans several lines");
    }
    if (!jpeg) break;  // scaling only changes JPEG decodes
  }
  // The loader's path: the scale chosen from the header and the preprocessing.
  if (jpeg) {
    graft::Preprocess p;
    p.size = 32;
    try {
      preprocess_both_ways(graft::decode_image_for(data, size, p, limits, "fuzz"));
    } catch (const graft::ImageError&) {
    }
  }
  return 0;
}
