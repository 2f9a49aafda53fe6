// JPEG decoding through the TurboJPEG API, with DCT-domain scaled decode.
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/image_internal.h"

namespace graft {
namespace {

// One decompressor per thread: creating one costs a few allocations. After a failure the handle
// is replaced rather than reused: in TurboJPEG 2.1 a failed tjDecompressHeader3 leaves libjpeg
// part-way through the header, and the next image's markers would be parsed on top of it.
struct TjDecoder {
  tjhandle handle = nullptr;
  ~TjDecoder() { reset(); }
  void reset() {
    if (handle) tjDestroy(handle);
    handle = nullptr;
  }
};

thread_local TjDecoder t_decoder;

tjhandle thread_decoder() {
  if (!t_decoder.handle) {
    t_decoder.handle = tjInitDecompress();
    if (!t_decoder.handle)
      throw std::runtime_error(std::string("TurboJPEG: cannot create a decompressor: ") +
                               tjGetErrorStr2(nullptr));
  }
  return t_decoder.handle;
}

// The factors <= 1 that this libjpeg-turbo build offers (1/1, 7/8, 3/4, ... 1/8), largest first.
const std::vector<tjscalingfactor>& downscaling_factors() {
  static const std::vector<tjscalingfactor> factors = [] {
    int n = 0;
    const tjscalingfactor* all = tjGetScalingFactors(&n);
    std::vector<tjscalingfactor> v;
    for (int i = 0; all && i < n; ++i)
      if (all[i].num <= all[i].denom) v.push_back(all[i]);
    std::sort(v.begin(), v.end(), [](tjscalingfactor a, tjscalingfactor b) {
      return int64_t(a.num) * b.denom > int64_t(b.num) * a.denom;
    });
    if (v.empty() || v.front().num != v.front().denom) v.insert(v.begin(), {1, 1});
    return v;
  }();
  return factors;
}

tjscalingfactor choose_factor(int width, int height, int min_width, int min_height) {
  const auto& factors = downscaling_factors();
  if (min_width <= 0 && min_height <= 0) return factors.front();  // (0, 0): full size
  tjscalingfactor best = factors.front();  // 1/1: when even full size is too small, up-sample later
  for (const tjscalingfactor& f : factors) {
    if (TJSCALED(width, f) >= min_width && TJSCALED(height, f) >= min_height) best = f;
  }
  return best;
}

// True when an Adobe APP14 marker precedes the first scan. Photoshop (and libjpeg, which always
// writes this marker for CMYK/YCCK) stores CMYK inverted: 0 means full ink.
bool has_adobe_marker(const uint8_t* p, size_t n) {
  size_t i = 2;  // after SOI
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return false;
    const uint8_t marker = p[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) return false;  // SOS / EOI: no more header markers
    if ((marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {  // no length field
      i += 2;
      continue;
    }
    const size_t length = size_t(p[i + 2]) << 8 | p[i + 3];
    if (length < 2) return false;
    if (marker == 0xEE && length >= 7 && i + 9 <= n && std::memcmp(p + i + 4, "Adobe", 5) == 0)
      return true;
    i += 2 + length;
  }
  return false;
}

// a * b / 255, rounded, exactly as PIL's MULDIV255.
inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

// CMYK -> RGB with PIL's formula (R = (1 - C)(1 - K) in ink amounts), after undoing the Adobe
// inversion. No colour management: neither does PIL, the reference.
void cmyk_to_rgb(const uint8_t* cmyk, size_t pixels, bool inverted, uint8_t* rgb) {
  const int flip = inverted ? 255 : 0;
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* s = cmyk + 4 * i;
    const int nk = 255 - (s[3] ^ flip);  // 255 - ink; x ^ 255 == 255 - x for bytes
    for (int c = 0; c < 3; ++c) rgb[3 * i + c] = uint8_t(nk - muldiv255(s[c] ^ flip, nk));
  }
}

// Reports a TurboJPEG failure and drops the handle. A file that does not end with the EOI marker
// was most likely cut short, whatever libjpeg tripped over first.
[[noreturn]] void fail_from_libjpeg(const std::string& name, const char* what, tjhandle h,
                                    const uint8_t* bytes, size_t size) {
  const std::string message = tjGetErrorStr2(h);
  t_decoder.reset();
  const bool ends_with_eoi = size >= 2 && bytes[size - 2] == 0xFF && bytes[size - 1] == 0xD9;
  if (message.find("Premature end") != std::string::npos || !ends_with_eoi)
    detail::image_fail(name, "truncated JPEG data (" + message + ")");
  detail::image_fail(name, std::string(what) + " (" + message + ")");
}

// libjpeg warnings mean the pixels may be wrong (it substitutes grey for missing data), so all
// are errors except bytes of junk before the final EOI marker: common from some cameras and
// editors, harmless (every pixel was already decoded), and accepted by PIL. libjpeg reports only
// the first warning of an image, and junk before EOI can only be the last thing it sees, so when
// that is the reported warning there was no other.
bool harmless_warning(tjhandle h) {
  if (tjGetErrorCode(h) != TJERR_WARNING) return false;
  const std::string message = tjGetErrorStr2(h);
  return message.find("extraneous bytes before marker 0xd9") != std::string::npos;
}

}  // namespace

ImageSize choose_jpeg_scaled_size(int width, int height, int min_width, int min_height) {
  const tjscalingfactor f = choose_factor(width, height, min_width, min_height);
  return {TJSCALED(width, f), TJSCALED(height, f)};
}

namespace detail {

Image decode_jpeg(const uint8_t* bytes, size_t size, const DecodeTarget& target,
                  const DecodeLimits& limits, const std::string& name) {
  if (size > 0xFFFFFFFFul) image_fail(name, "JPEG file larger than 4 GiB");
  tjhandle h = thread_decoder();
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(h, bytes, (unsigned long)size, &width, &height, &subsamp, &colorspace) !=
      0)
    fail_from_libjpeg(name, "corrupt JPEG header", h, bytes, size);
  if (width <= 0 || height <= 0) {
    // TurboJPEG accepts a tables-only stream (EOI before any frame): here, a file cut short.
    t_decoder.reset();
    image_fail(name, "truncated JPEG data (the file ends before the image starts)");
  }
  check_pixel_cap(width, height, limits, name);

  int min_width = target.min_width, min_height = target.min_height;
  if (target.pre) {
    const ImageSize m = preprocess_min_decode_size(width, height, *target.pre);
    min_width = m.width;
    min_height = m.height;
  }
  const tjscalingfactor f = choose_factor(width, height, min_width, min_height);
  Image img;
  img.width = TJSCALED(width, f);
  img.height = TJSCALED(height, f);
  const size_t pixels = size_t(img.width) * size_t(img.height);
  // TJFLAG_LIMITSCANS: refuse progressive files with absurd scan counts (a known CPU-exhaustion
  // attack) instead of spending minutes on them.
  const int flags = TJFLAG_LIMITSCANS;

  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    // TurboJPEG will not convert CMYK to RGB itself.
    std::vector<uint8_t> cmyk(pixels * 4);
    if (tjDecompress2(h, bytes, (unsigned long)size, cmyk.data(), img.width, 0, img.height,
                      TJPF_CMYK, flags) != 0 &&
        !harmless_warning(h))
      fail_from_libjpeg(name, "corrupt JPEG data", h, bytes, size);
    img.rgb.resize(pixels * 3);
    cmyk_to_rgb(cmyk.data(), pixels, has_adobe_marker(bytes, size), img.rgb.data());
    return img;
  }
  // Greyscale and YCbCr (baseline or progressive) convert to RGB inside libjpeg.
  img.rgb.resize(pixels * 3);
  if (tjDecompress2(h, bytes, (unsigned long)size, img.rgb.data(), img.width, 0, img.height,
                    TJPF_RGB, flags) != 0 &&
      !harmless_warning(h))
    fail_from_libjpeg(name, "corrupt JPEG data", h, bytes, size);
  return img;
}

}  // namespace detail
}  // namespace graft
