// Image decoding, resizing and preprocessing geometry. Every image is made here: JPEGs with
// TurboJPEG's compressor, PNGs with libpng's writer, in every colour type and bit depth.
#include <gtest/gtest.h>
#include <png.h>
#include <stdlib.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "io/image.h"

namespace fs = std::filesystem;
using namespace graft;

namespace {

// ---- Test images -------------------------------------------------------------------------------

// Smooth colour gradients with a little texture: JPEG-friendly, so its error bound can be tight.
Image smooth_image(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(128 + 100 * std::sin(x / 23.0) * std::cos(y / 31.0));
      p[1] = uint8_t(w > 1 ? 20 + 215 * x / (w - 1) : 100);
      p[2] = uint8_t(h > 1 ? 230 - 200 * y / (h - 1) : 50);
    }
  return img;
}

// Deterministic pseudo-random numbers (no <random> distribution differences between platforms).
struct Lcg {
  uint64_t s;
  explicit Lcg(uint64_t seed) : s(seed * 6364136223846793005ull + 1442695040888963407ull) {}
  uint32_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(s >> 33);
  }
};

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int w, int h, int pixel_format, int subsamp,
                                 int quality, int flags = 0) {
  tjhandle t = tjInitCompress();
  EXPECT_NE(t, nullptr);
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  const int rc = tjCompress2(t, pixels, w, 0, h, pixel_format, &buf, &n, subsamp, quality, flags);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(t);
  std::vector<uint8_t> out(buf, buf + (rc == 0 ? n : 0));
  tjFree(buf);
  tjDestroy(t);
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& img, int subsamp = TJSAMP_444, int quality = 95,
                                 int flags = 0) {
  return encode_jpeg(img.rgb.data(), img.width, img.height, TJPF_RGB, subsamp, quality, flags);
}

struct PngSpec {
  int width = 0, height = 0;
  int color_type = PNG_COLOR_TYPE_RGB;
  int bit_depth = 8;
  bool interlace = false;
  std::vector<uint16_t> samples;  // width * height * channels, in the file's bit depth
  std::vector<png_color> palette;
  std::vector<png_byte> trns_alpha;  // palette tRNS
  bool trns_color = false;           // grey / RGB tRNS
  png_color_16 trns_value{};
};

int png_channels(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
      return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return 2;
    case PNG_COLOR_TYPE_RGB:
      return 3;
    default:
      return 4;
  }
}

void png_sink(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
void png_sink_flush(png_structp) {}

// Trivial locals only: libpng longjmps back here on error.
bool write_png_c(png_structp png, png_infop info, const PngSpec* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, s->width, s->height, s->bit_depth, s->color_type,
               s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!s->palette.empty()) png_set_PLTE(png, info, s->palette.data(), int(s->palette.size()));
  if (!s->trns_alpha.empty())
    png_set_tRNS(png, info, s->trns_alpha.data(), int(s->trns_alpha.size()), nullptr);
  if (s->trns_color) png_set_tRNS(png, info, nullptr, 0, &s->trns_value);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

std::vector<uint8_t> encode_png(const PngSpec& s) {
  const int channels = png_channels(s.color_type);
  const size_t row_bytes = (size_t(s.width) * channels * s.bit_depth + 7) / 8;
  std::vector<uint8_t> packed(row_bytes * s.height, 0);
  for (int y = 0; y < s.height; ++y) {
    uint8_t* row = &packed[y * row_bytes];
    for (int i = 0; i < s.width * channels; ++i) {
      const uint16_t v = s.samples[size_t(y) * s.width * channels + i];
      if (s.bit_depth == 16) {
        row[2 * i] = uint8_t(v >> 8);
        row[2 * i + 1] = uint8_t(v);
      } else if (s.bit_depth == 8) {
        row[i] = uint8_t(v);
      } else {  // sub-byte samples, most significant first
        const int bit = i * s.bit_depth;
        row[bit / 8] |= uint8_t(v << (8 - s.bit_depth - bit % 8));
      }
    }
  }
  std::vector<png_bytep> rows(s.height);
  for (int y = 0; y < s.height; ++y) rows[y] = &packed[y * row_bytes];
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, png_sink, png_sink_flush);
  const bool ok = write_png_c(png, info, &s, rows.data());
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok);
  return out;
}

// A PNG of random RGB8 pixels; returns the bytes and fills `expected`.
std::vector<uint8_t> random_rgb_png(int w, int h, uint64_t seed, Image* expected,
                                    bool interlace = false) {
  PngSpec s;
  s.width = w;
  s.height = h;
  s.interlace = interlace;
  Lcg rng(seed);
  s.samples.resize(size_t(w) * h * 3);
  for (auto& v : s.samples) v = uint16_t(rng.next() & 255);
  if (expected) {
    expected->width = w;
    expected->height = h;
    expected->rgb.assign(s.samples.begin(), s.samples.end());
  }
  return encode_png(s);
}

// ---- Comparison and files ----------------------------------------------------------------------

struct Diff {
  double mean = 0;
  int max = 0;
};

Diff compare(const Image& a, const Image& b) {
  Diff d;
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.rgb.size() != b.rgb.size() || a.rgb.empty()) return {1e9, 255};
  double sum = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) {
    const int e = std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    sum += e;
    d.max = std::max(d.max, e);
  }
  d.mean = sum / a.rgb.size();
  return d;
}

// A fresh directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "graft_test_image_XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const fs::path p = path / fs::u8path(name);
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p.string();
  }
};

Image decode(const std::vector<uint8_t>& bytes, int min_w = 0, int min_h = 0,
             const std::string& name = "test") {
  return decode_image(bytes.data(), bytes.size(), min_w, min_h, DecodeLimits{}, name);
}

// Runs f, which must throw ImageError whose message starts with "<name>: " and holds `needle`.
void expect_image_error(const std::function<void()>& f, const std::string& name,
                        const std::string& needle = "") {
  try {
    f();
    ADD_FAILURE() << "no ImageError for " << name;
  } catch (const ImageError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(name + ": ", 0), 0u) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << "'" << what << "' lacks '" << needle << "'";
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type for " << name << ": " << e.what();
  }
}

size_t find_marker(const std::vector<uint8_t>& b, uint8_t marker) {
  for (size_t i = 0; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == marker) return i;
  return std::string::npos;
}

bool contains(const std::vector<uint8_t>& b, const std::string& s) {
  return std::search(b.begin(), b.end(), s.begin(), s.end()) != b.end();
}

}  // namespace

// ---- Sniffing ----------------------------------------------------------------------------------

TEST(Sniff, FromMagicBytesOnly) {
  const auto jpeg = encode_jpeg(smooth_image(8, 8));
  const auto png = random_rgb_png(8, 8, 1, nullptr);
  EXPECT_EQ(sniff_format(jpeg.data(), jpeg.size()), ImageFormat::jpeg);
  EXPECT_EQ(sniff_format(png.data(), png.size()), ImageFormat::png);
  const std::string text = "just some notes\n";
  EXPECT_EQ(sniff_format(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
            ImageFormat::unknown);
  EXPECT_EQ(sniff_format(jpeg.data(), 2), ImageFormat::unknown);
  EXPECT_EQ(sniff_format(png.data(), 7), ImageFormat::unknown);
  EXPECT_EQ(sniff_format(nullptr, 0), ImageFormat::unknown);
}

TEST(Files, ExtensionsAreIgnoredAndNamesMayBeAnything) {
  TempDir dir;
  const Image src = smooth_image(40, 30);
  const auto jpeg = encode_jpeg(src);
  Image png_expected;
  const auto png = random_rgb_png(40, 30, 7, &png_expected);
  const Image jpeg_ref = decode(jpeg);
  for (const std::string name : {"photo.JPG", "photo.JPEG", "really a jpeg.png", "no_extension",
                                 "fisch für mich ñ.jpg", "鱼 照片.Jpg"}) {
    const Image got = load_image(dir.write(name, jpeg), 0, 0, DecodeLimits{});
    EXPECT_EQ(got.rgb, jpeg_ref.rgb) << name;
  }
  for (const std::string name : {"image.PNG", "actually png.jpg", "größe 1.png"}) {
    const Image got = load_image(dir.write(name, png), 0, 0, DecodeLimits{});
    EXPECT_EQ(got.rgb, png_expected.rgb) << name;
  }
}

// ---- JPEG --------------------------------------------------------------------------------------

TEST(Jpeg, RgbRoundTripAtAwkwardSizes) {
  for (auto [w, h] : {std::pair{64, 48}, {1, 1}, {4000, 12}, {12, 4000}, {17, 33}}) {
    const Image src = smooth_image(w, h);
    for (int subsamp : {TJSAMP_444, TJSAMP_420}) {
      const Image got = decode(encode_jpeg(src, subsamp, 95));
      ASSERT_EQ(got.width, w);
      ASSERT_EQ(got.height, h);
      const Diff d = compare(got, src);
      EXPECT_LT(d.mean, subsamp == TJSAMP_444 ? 1.5 : 3.0) << w << "x" << h;
      EXPECT_LE(d.max, subsamp == TJSAMP_444 ? 16 : 40) << w << "x" << h;
    }
  }
}

TEST(Jpeg, Greyscale) {
  const Image src = smooth_image(50, 40);
  std::vector<uint8_t> grey(50 * 40);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = src.rgb[3 * i];
  const auto bytes = encode_jpeg(grey.data(), 50, 40, TJPF_GRAY, TJSAMP_GRAY, 95);
  const Image got = decode(bytes);
  ASSERT_EQ(got.width, 50);
  ASSERT_EQ(got.height, 40);
  int worst = 0;
  for (size_t i = 0; i < grey.size(); ++i) {
    EXPECT_EQ(got.rgb[3 * i], got.rgb[3 * i + 1]);
    EXPECT_EQ(got.rgb[3 * i], got.rgb[3 * i + 2]);
    worst = std::max(worst, std::abs(int(got.rgb[3 * i]) - int(grey[i])));
  }
  EXPECT_LE(worst, 8);
}

TEST(Jpeg, CmykWithAdobeMarkerIsInverted) {
  // libjpeg writes an Adobe APP14 marker for every CMYK/YCCK file, and the common (Photoshop)
  // convention for such files is inverted ink: stored 255 means no ink. Store the image as
  // inverted CMY with a varying black channel; the expected RGB follows PIL's conversion.
  const int w = 48, h = 32;
  const Image src = smooth_image(w, h);
  std::vector<uint8_t> cmyk(size_t(w) * h * 4);
  Image expected;
  expected.width = w;
  expected.height = h;
  expected.rgb.resize(size_t(w) * h * 3);
  for (int i = 0; i < w * h; ++i) {
    const int k_ink = (i % w) * 120 / w;  // black ink ramps left to right
    for (int c = 0; c < 3; ++c) {
      const int ink = 255 - src.rgb[3 * i + c];
      cmyk[4 * i + c] = uint8_t(255 - ink);  // inverted storage
      const int nk = 255 - k_ink;
      expected.rgb[3 * i + c] = uint8_t(std::lround(nk - ink * nk / 255.0));
    }
    cmyk[4 * i + 3] = uint8_t(255 - k_ink);
  }
  const auto bytes = encode_jpeg(cmyk.data(), w, h, TJPF_CMYK, TJSAMP_444, 98);
  ASSERT_TRUE(contains(bytes, "Adobe"));
  const Image got = decode(bytes);
  const Diff d = compare(got, expected);
  EXPECT_LT(d.mean, 2.0);
  EXPECT_LE(d.max, 16);
  // Scaled decode goes through the same conversion.
  const Image half = decode(bytes, w / 2, h / 2);
  EXPECT_EQ(half.width, w / 2);
  EXPECT_EQ(half.height, h / 2);
}

TEST(Jpeg, Progressive) {
  const Image src = smooth_image(120, 90);
  const auto bytes = encode_jpeg(src, TJSAMP_420, 95, TJFLAG_PROGRESSIVE);
  ASSERT_NE(find_marker(bytes, 0xC2), std::string::npos) << "not progressive (no SOF2)";
  const Image got = decode(bytes);
  const Diff d = compare(got, src);
  EXPECT_LT(d.mean, 3.0);
  EXPECT_LE(d.max, 40);
  const Image scaled = decode(bytes, 60, 45);
  EXPECT_EQ(scaled.width, 60);
  EXPECT_EQ(scaled.height, 45);
}

TEST(Jpeg, ScaledDecodePicksSmallestFactorCoveringTheTarget) {
  // Factors <= 1 are 1, 7/8, 3/4, 5/8, 1/2, 3/8, 1/4, 1/8. For a 1000x800 image and a 224x224
  // target, 3/8 gives 375x300 (both >= 224) and 1/4 gives 250x200 (height too small).
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 224, 224).width, 375);
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 224, 224).height, 300);
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 0, 0).width, 1000);      // (0, 0) means full size
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 1, 0).width, 125);       // 1/8
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 1001, 10).width, 1000);  // never up-scales
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 500, 400).width, 500);   // exact fit: 1/2
  EXPECT_EQ(choose_jpeg_scaled_size(1000, 800, 501, 0).width, 625);     // just over: 5/8
  // Sizes round up (TJSCALED), so 7x7 at 1/8 is 1x1.
  EXPECT_EQ(choose_jpeg_scaled_size(7, 7, 1, 1).width, 1);

  const Image src = smooth_image(1000, 800);
  const auto bytes = encode_jpeg(src, TJSAMP_420, 90);
  const Image full = decode(bytes);  // (0, 0): full size
  EXPECT_EQ(full.width, 1000);
  EXPECT_EQ(full.height, 800);
  const Image scaled = decode(bytes, 224, 224);
  ASSERT_EQ(scaled.width, 375);
  ASSERT_EQ(scaled.height, 300);
  // DCT-domain scaling is a box-like filter; on a smooth image it agrees with resizing.
  Image resized;
  resized.width = 375;
  resized.height = 300;
  resized.rgb.resize(375 * 300 * 3);
  resize_bilinear_aa(full, 0, 0, 1000, 800, 375, 300, resized.rgb.data());
  EXPECT_LT(compare(scaled, resized).mean, 2.0);
}

TEST(Jpeg, DecodeForPreprocessNeverLeavesTooFewPixels) {
  const auto bytes = encode_jpeg(smooth_image(1080, 1440), TJSAMP_420, 90);
  Preprocess crop;  // 224, center_crop 0.875: shorter side must reach 256
  Image img = decode_image_for(bytes.data(), bytes.size(), crop, DecodeLimits{}, "p.jpg");
  EXPECT_EQ(img.width, 270);  // 1/4; 3/8 would be 405 wide, 1/8 135
  EXPECT_EQ(img.height, 360);
  Preprocess squash;
  squash.resize_mode = "squash";
  img = decode_image_for(bytes.data(), bytes.size(), squash, DecodeLimits{}, "p.jpg");
  EXPECT_EQ(img.width, 270);
  EXPECT_EQ(img.height, 360);
  // Over many shapes: the decoded image never makes preprocess_image up-sample.
  for (int w : {100, 255, 256, 257, 300, 511, 640, 1000, 2049})
    for (int h : {100, 256, 333, 480, 1023, 1500}) {
      for (const Preprocess& p : {crop, squash}) {
        const ImageSize m = preprocess_min_decode_size(w, h, p);
        const ImageSize d = choose_jpeg_scaled_size(w, h, m.width, m.height);
        const CropBox box = preprocess_crop_box(d.width, d.height, p);
        const bool can = w >= m.width && h >= m.height;  // else decoded at full size
        if (can) {
          EXPECT_GE(box.w, p.size - 1e-9) << w << "x" << h << " " << p.resize_mode;
          EXPECT_GE(box.h, p.size - 1e-9) << w << "x" << h << " " << p.resize_mode;
        } else {
          EXPECT_EQ(d.width, w);
          EXPECT_EQ(d.height, h);
        }
      }
    }
}

TEST(Jpeg, JunkBeforeEndMarkerIsAccepted) {
  // Some cameras and editors leave a few bytes before EOI; libjpeg warns, PIL accepts, so do we.
  for (int flags : {0, TJFLAG_PROGRESSIVE}) {
    const auto clean = encode_jpeg(smooth_image(64, 64), TJSAMP_420, 90, flags);
    auto junk = clean;
    junk.insert(junk.end() - 2, {0x00, 0x12});
    EXPECT_EQ(decode(junk).rgb, decode(clean).rgb) << "flags " << flags;
  }
}

TEST(Jpeg, AFailureDoesNotSpoilTheNextDecode) {
  // The decoder handle is per thread and reused; a failure part-way through a header must not
  // leave state behind for the next file.
  const auto good = encode_jpeg(smooth_image(40, 30), TJSAMP_420, 90);
  const Image ref = decode(good);
  for (size_t cut : {size_t(20), size_t(100), size_t(200), good.size() / 2}) {
    const std::vector<uint8_t> bad(good.begin(), good.begin() + cut);
    EXPECT_THROW(decode(bad), ImageError);
    EXPECT_EQ(decode(good).rgb, ref.rgb) << "after a file cut at " << cut;
  }
}

TEST(Jpeg, ConcurrentDecodesAgree) {
  const auto bytes = encode_jpeg(smooth_image(300, 200), TJSAMP_420, 90);
  const Image ref = decode(bytes, 100, 100);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        if (decode(bytes, 100, 100).rgb != ref.rgb) ++mismatches[t];
    });
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// ---- PNG ---------------------------------------------------------------------------------------

namespace {

// Builds a PNG of the given type from random samples and the RGB8 the decoder must return.
std::vector<uint8_t> typed_png(int color_type, int depth, bool interlace, bool trns, int w, int h,
                               uint64_t seed, Image* expected) {
  PngSpec s;
  s.width = w;
  s.height = h;
  s.color_type = color_type;
  s.bit_depth = depth;
  s.interlace = interlace;
  const int channels = png_channels(color_type);
  const uint32_t maxv = (1u << depth) - 1;
  Lcg rng(seed);
  s.samples.resize(size_t(w) * h * channels);
  for (auto& v : s.samples) {
    if (depth == 16) {
      // Near b * 257 but not on it: an 8-bit conversion must round, not truncate.
      const int b = int(rng.next() % 256);
      const int jitter = int(rng.next() % 201) - 100;
      v = uint16_t(std::clamp(b * 257 + jitter, 0, 65535));
    } else {
      v = uint16_t(rng.next() % (maxv + 1));
    }
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    s.palette.resize(size_t(maxv) + 1);
    for (auto& c : s.palette) {
      c.red = png_byte(rng.next());
      c.green = png_byte(rng.next());
      c.blue = png_byte(rng.next());
    }
    if (trns) {
      s.trns_alpha.resize(s.palette.size() / 2 + 1);
      for (auto& a : s.trns_alpha) a = png_byte(rng.next());
    }
  } else if (trns) {
    s.trns_color = true;
    s.trns_value.gray = s.samples[0];
    s.trns_value.red = s.samples[0];
    s.trns_value.green = s.samples[std::min(1, channels - 1)];
    s.trns_value.blue = s.samples[std::min(2, channels - 1)];
  }
  auto to8 = [&](uint32_t v) -> uint8_t {
    if (depth == 16) return uint8_t(std::lround(v * 255.0 / 65535.0));
    return uint8_t(v * 255 / maxv);
  };
  expected->width = w;
  expected->height = h;
  expected->rgb.resize(size_t(w) * h * 3);
  for (int i = 0; i < w * h; ++i) {
    const uint16_t* p = &s.samples[size_t(i) * channels];
    uint8_t* o = &expected->rgb[size_t(i) * 3];
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
      o[0] = s.palette[p[0]].red;
      o[1] = s.palette[p[0]].green;
      o[2] = s.palette[p[0]].blue;
    } else if (channels <= 2) {
      o[0] = o[1] = o[2] = to8(p[0]);
    } else {
      for (int c = 0; c < 3; ++c) o[c] = to8(p[c]);
    }
  }
  return encode_png(s);
}

struct PngCase {
  int color_type, depth;
  bool trns;
};

}  // namespace

TEST(Png, EveryColourTypeAndBitDepthExactly) {
  const std::vector<PngCase> cases = {
      {PNG_COLOR_TYPE_GRAY, 1, false},        {PNG_COLOR_TYPE_GRAY, 2, false},
      {PNG_COLOR_TYPE_GRAY, 4, false},        {PNG_COLOR_TYPE_GRAY, 8, false},
      {PNG_COLOR_TYPE_GRAY, 16, false},       {PNG_COLOR_TYPE_GRAY, 8, true},
      {PNG_COLOR_TYPE_GRAY, 2, true},         {PNG_COLOR_TYPE_GRAY_ALPHA, 8, false},
      {PNG_COLOR_TYPE_GRAY_ALPHA, 16, false}, {PNG_COLOR_TYPE_RGB, 8, false},
      {PNG_COLOR_TYPE_RGB, 16, false},        {PNG_COLOR_TYPE_RGB, 8, true},
      {PNG_COLOR_TYPE_RGB, 16, true},         {PNG_COLOR_TYPE_RGB_ALPHA, 8, false},
      {PNG_COLOR_TYPE_RGB_ALPHA, 16, false},  {PNG_COLOR_TYPE_PALETTE, 1, false},
      {PNG_COLOR_TYPE_PALETTE, 2, false},     {PNG_COLOR_TYPE_PALETTE, 4, true},
      {PNG_COLOR_TYPE_PALETTE, 8, false},     {PNG_COLOR_TYPE_PALETTE, 8, true},
  };
  uint64_t seed = 100;
  for (const PngCase& c : cases)
    for (bool interlace : {false, true})
      for (auto [w, h] : {std::pair{37, 23}, {1, 1}, {4000, 12}, {3, 5}}) {
        Image expected;
        const auto bytes =
            typed_png(c.color_type, c.depth, interlace, c.trns, w, h, ++seed, &expected);
        const Image got = decode(bytes);
        ASSERT_EQ(got.width, w);
        ASSERT_EQ(got.height, h);
        EXPECT_TRUE(got.rgb == expected.rgb)
            << "colour type " << c.color_type << " depth " << c.depth << " tRNS " << c.trns
            << " interlace " << interlace << " " << w << "x" << h;
      }
}

TEST(Png, MinSizeIsIgnored) {
  Image expected;
  const auto bytes = random_rgb_png(64, 64, 3, &expected);
  EXPECT_EQ(decode(bytes, 8, 8).rgb, expected.rgb);
}

// ---- Limits and bad files ----------------------------------------------------------------------

namespace {

std::vector<uint8_t> png_header_only(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  auto put32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
  };
  put32(13);
  const size_t type_at = b.size();
  for (char c : std::string("IHDR")) b.push_back(uint8_t(c));
  put32(w);
  put32(h);
  for (uint8_t v : {8, 2, 0, 0, 0}) b.push_back(v);  // 8-bit RGB, no interlace
  put32(uint32_t(crc32(0, &b[type_at], 17)));
  return b;
}

}  // namespace

TEST(Limits, HugeHeadersAreRefusedBeforeAllocating) {
  // 100000 x 100000 x 3 bytes would be 30 GB: reaching the cap check first is the only way
  // these return quickly with this message.
  const auto png = png_header_only(100000, 100000);
  expect_image_error([&] { decode(png, 0, 0, "x.png"); }, "x.png",
                     "image 100000x100000 exceeds the pixel cap of 67108864");

  auto jpeg = encode_jpeg(smooth_image(16, 16));
  const size_t sof = find_marker(jpeg, 0xC0);
  ASSERT_NE(sof, std::string::npos);
  for (int i : {5, 7}) {  // height, then width, big-endian
    jpeg[sof + i] = 0xFD;
    jpeg[sof + i + 1] = 0xE8;  // 65000
  }
  expect_image_error([&] { decode(jpeg, 0, 0, "big.jpg"); }, "big.jpg",
                     "image 65000x65000 exceeds the pixel cap");
  // The cap applies to the header's size even when a scaled decode would be small.
  expect_image_error([&] { decode(jpeg, 10, 10, "big.jpg"); }, "big.jpg", "pixel cap");

  DecodeLimits tight;
  tight.max_pixels = 255;
  const auto small = encode_jpeg(smooth_image(16, 16));
  EXPECT_THROW(decode_image(small.data(), small.size(), 0, 0, tight, "s.jpg"), ImageError);
  tight.max_pixels = 256;
  EXPECT_NO_THROW(decode_image(small.data(), small.size(), 0, 0, tight, "s.jpg"));
}

TEST(BadFiles, EmptyTextDirectoryMissing) {
  TempDir dir;
  const std::string empty = dir.write("empty.jpg", {});
  expect_image_error([&] { load_image(empty, 0, 0, DecodeLimits{}); }, empty, "empty file");
  const std::string text_str = "Notes about the fish survey.\nNothing to see.\n";
  const std::string text = dir.write("notes.txt", {text_str.begin(), text_str.end()});
  expect_image_error([&] { load_image(text, 0, 0, DecodeLimits{}); }, text,
                     "not a JPEG or PNG file (unknown magic bytes)");
  const std::string disguised = dir.write("notes.jpg", {text_str.begin(), text_str.end()});
  expect_image_error([&] { load_image(disguised, 0, 0, DecodeLimits{}); }, disguised,
                     "not a JPEG or PNG file");
  const std::string webp_str("RIFF\x10\0\0\0WEBPVP8 ", 16);
  const std::string webp = dir.write("x.webp", {webp_str.begin(), webp_str.end()});
  expect_image_error([&] { load_image(webp, 0, 0, DecodeLimits{}); }, webp, "WebP");
  const std::string sub = (dir.path / "a folder.jpg").string();
  fs::create_directory(sub);
  expect_image_error([&] { load_image(sub, 0, 0, DecodeLimits{}); }, sub, "directory");
  const std::string missing = (dir.path / "missing.jpg").string();
  expect_image_error([&] { load_image(missing, 0, 0, DecodeLimits{}); }, missing, "cannot open");
  expect_image_error([&] { decode({}, 0, 0, "zero.png"); }, "zero.png", "empty file");
}

TEST(BadFiles, EveryTruncationIsAnError) {
  const Image src = smooth_image(96, 80);
  Image png_ref;
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {
      {"base line.jpg", encode_jpeg(src, TJSAMP_420, 90)},
      {"progressive.jpg", encode_jpeg(src, TJSAMP_420, 90, TJFLAG_PROGRESSIVE)},
      {"grey.jpg", encode_jpeg(src.rgb.data(), 96, 80, TJPF_RGB, TJSAMP_GRAY, 90)},
      {"plain.png", random_rgb_png(96, 80, 11, &png_ref)},
      {"adam7.png", random_rgb_png(96, 80, 12, &png_ref, true)},
  };
  for (const auto& file : files) {
    // Named references, not a structured binding: clang 14 cannot capture one in a lambda.
    const std::string& name = file.first;
    const std::vector<uint8_t>& bytes = file.second;
    for (int k = 0; k < 8; ++k) {
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + bytes.size() * k / 8);
      expect_image_error([&] { decode(prefix, 0, 0, name); }, name,
                         k == 0 ? "empty file" : "truncated");
      if (name.find(".jpg") != std::string::npos)  // and the scaled path
        expect_image_error([&] { decode(prefix, 24, 20, name); }, name);
    }
    // Missing only the last byte (of EOI or IEND's CRC).
    const std::vector<uint8_t> almost(bytes.begin(), bytes.end() - 1);
    expect_image_error([&] { decode(almost, 0, 0, name); }, name);
  }
}

TEST(BadFiles, CorruptBytes) {
  const Image src = smooth_image(64, 48);
  const auto jpeg = encode_jpeg(src, TJSAMP_420, 90);
  // Targeted damage that libjpeg can detect must be reported.
  {
    auto b = jpeg;
    b[find_marker(b, 0xC0) + 9] = 0;  // a frame of zero components
    expect_image_error([&] { decode(b, 0, 0, "sof.jpg"); }, "sof.jpg", "corrupt JPEG");
  }
  {
    auto b = jpeg;
    const size_t sos = find_marker(b, 0xDA);
    const size_t mid = sos + (b.size() - sos) / 2;
    b[mid] = 0xFF;  // a marker in the middle of the entropy-coded data
    b[mid + 1] = 0xD3;
    expect_image_error([&] { decode(b, 0, 0, "scan.jpg"); }, "scan.jpg", "corrupt JPEG");
  }
  {
    auto b = jpeg;
    const size_t dqt = find_marker(b, 0xDB);
    b[dqt + 2] = 0xFF;  // DQT length far past the end of the file
    expect_image_error([&] { decode(b, 0, 0, "dqt.jpg"); }, "dqt.jpg");
  }
  // Any single damaged byte: an ImageError or an image of the right size, never a crash.
  // (Flipped entropy-coded bits can decode to other valid codes, so not every one is detectable.)
  int detected = 0;
  for (size_t i = 0; i < jpeg.size(); ++i) {
    auto b = jpeg;
    b[i] ^= 0x5A;
    try {
      const Image img = decode(b, 0, 0, "fuzz.jpg");
      EXPECT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3);
    } catch (const ImageError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("fuzz.jpg: ", 0), 0u) << e.what();
      ++detected;
    }
  }
  EXPECT_GT(detected, 0);

  // In a PNG every byte is covered by the signature, a length or a CRC: all must be caught.
  Image ref;
  for (bool interlace : {false, true}) {
    const auto png = random_rgb_png(24, 16, 5, &ref, interlace);
    for (size_t i = 0; i < png.size(); ++i) {
      auto b = png;
      b[i] ^= 0x5A;
      expect_image_error([&] { decode(b, 0, 0, "fuzz.png"); }, "fuzz.png");
    }
  }
}

// ---- Resize ------------------------------------------------------------------------------------

namespace {

Image constant_image(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = r;
    img.rgb[i + 1] = g;
    img.rgb[i + 2] = b;
  }
  return img;
}

constexpr uint8_t kPoison = 0xA5;

// Resizes into a poisoned buffer with guard bytes and checks the guards survived.
std::vector<uint8_t> resize(const Image& src, double x, double y, double w, double h, int ow,
                            int oh) {
  const size_t n = size_t(ow) * oh * 3;
  std::vector<uint8_t> buf(n + 64, kPoison);
  resize_bilinear_aa(src, x, y, w, h, ow, oh, buf.data());
  for (size_t i = n; i < buf.size(); ++i) EXPECT_EQ(buf[i], kPoison) << "wrote past the end";
  buf.resize(n);
  return buf;
}

}  // namespace

TEST(Resize, ConstantStaysConstantAndEveryByteIsWritten) {
  const Image src = constant_image(97, 61, 10, 200, 77);
  for (auto [ow, oh] : {std::pair{224, 224}, {13, 7}, {1, 1}, {97, 61}, {500, 3}}) {
    for (auto box : {std::array<double, 4>{0, 0, 97, 61}, {10.25, 3.5, 40.5, 50}, {96, 60, 1, 1}}) {
      const auto out = resize(src, box[0], box[1], box[2], box[3], ow, oh);
      for (size_t i = 0; i < out.size(); i += 3) {
        ASSERT_EQ(out[i], 10) << ow << "x" << oh;
        ASSERT_EQ(out[i + 1], 200);
        ASSERT_EQ(out[i + 2], 77);
      }
    }
  }
}

TEST(Resize, IdentityAndIntegerCropsAreExact) {
  Image src;
  random_rgb_png(31, 19, 9, &src);
  EXPECT_EQ(resize(src, 0, 0, 31, 19, 31, 19), src.rgb);
  const auto crop = resize(src, 5, 3, 10, 8, 10, 8);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 10; ++x)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(crop[(y * 10 + x) * 3 + c], src.rgb[((y + 3) * 31 + x + 5) * 3 + c]);
}

TEST(Resize, LinearRampStaysLinear) {
  // Value = x along a row. Away from the edges (where the filter is cut off and renormalised)
  // a symmetric filter reproduces a linear function at the sample position.
  const int w = 256, h = 4;
  Image src = constant_image(w, h, 0, 0, 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) src.rgb[(y * w + x) * 3 + c] = uint8_t(x);
  for (int ow : {64, 100, 200, 256, 400, 1000}) {
    const auto out = resize(src, 0, 0, w, h, ow, 2);
    const double scale = double(w) / ow;
    const double radius = std::max(scale, 1.0) + 1;
    for (int x = 0; x < ow; ++x) {
      const double pos = (x + 0.5) * scale - 0.5;  // source pixel centre coordinates
      if (pos < radius || pos > w - 1 - radius) continue;
      for (int y = 0; y < 2; ++y)
        EXPECT_NEAR(out[(y * ow + x) * 3 + 1], pos, 1.0) << "out width " << ow << " x " << x;
    }
  }
}

TEST(Resize, DownsamplingIsAntialiased) {
  // A one-pixel checkerboard halved: point sampling would give pure black or white; the widened
  // triangle averages each output over its footprint to mid-grey.
  const int n = 64;
  Image src = constant_image(n, n, 0, 0, 0);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x)
      if ((x + y) % 2) std::fill_n(&src.rgb[(y * n + x) * 3], 3, uint8_t(255));
  for (int out_n : {32, 21, 16}) {
    const auto out = resize(src, 0, 0, n, n, out_n, out_n);
    for (int y = 1; y < out_n - 1; ++y)
      for (int x = 1; x < out_n - 1; ++x)
        EXPECT_NEAR(out[(y * out_n + x) * 3], 127.5, 2.5) << out_n << " at " << x << "," << y;
  }
}

TEST(Resize, RejectsBoxesOutsideTheImage) {
  const Image src = constant_image(10, 10, 1, 2, 3);
  std::vector<uint8_t> out(300);
  EXPECT_THROW(resize_bilinear_aa(src, -1, 0, 5, 5, 10, 10, out.data()), std::invalid_argument);
  EXPECT_THROW(resize_bilinear_aa(src, 6, 0, 5, 5, 10, 10, out.data()), std::invalid_argument);
  EXPECT_THROW(resize_bilinear_aa(src, 0, 0, 0, 5, 10, 10, out.data()), std::invalid_argument);
  EXPECT_THROW(resize_bilinear_aa(src, 0, 0, 5, 5, 0, 10, out.data()), std::invalid_argument);
  EXPECT_THROW(resize_bilinear_aa(Image{}, 0, 0, 5, 5, 10, 10, out.data()), std::invalid_argument);
}

// ---- Preprocessing -----------------------------------------------------------------------------

TEST(Preprocess, CenterCropGeometryMatchesTorchvision) {
  // torchvision: Resize(256) on 1080x1440 -> 256x341 (int(256 * 1440 / 1080) = 341), then
  // CenterCrop(224): left = round(16) = 16, top = round(58.5) = 58 (Python rounds half to even).
  Preprocess p;
  CropBox b = preprocess_crop_box(1080, 1440, p);
  EXPECT_DOUBLE_EQ(b.x, 16 * 1080.0 / 256);
  EXPECT_DOUBLE_EQ(b.y, 58 * 1440.0 / 341);
  EXPECT_DOUBLE_EQ(b.w, 224 * 1080.0 / 256);
  EXPECT_DOUBLE_EQ(b.h, 224 * 1440.0 / 341);
  // Landscape 500x375 -> 341x256: left = round(58.5) = 58, top = 16.
  b = preprocess_crop_box(500, 375, p);
  EXPECT_DOUBLE_EQ(b.x, 58 * 500.0 / 341);
  EXPECT_DOUBLE_EQ(b.y, 16 * 375.0 / 256);
  // 300x300 -> 256x256, offsets round(16) = 16.
  b = preprocess_crop_box(300, 300, p);
  EXPECT_DOUBLE_EQ(b.x, 16 * 300.0 / 256);
  // An odd half rounding up to even: 256x(256+2*59+1=375) -> top = round(75.5) = 76.
  b = preprocess_crop_box(256, 375, p);
  EXPECT_DOUBLE_EQ(b.y, 76.0);
  p.resize_mode = "squash";
  b = preprocess_crop_box(1080, 1440, p);
  EXPECT_EQ(b.x, 0);
  EXPECT_EQ(b.w, 1080);
  EXPECT_EQ(b.h, 1440);
  EXPECT_EQ(preprocess_min_decode_size(1080, 1440, p).width, 224);
  p.resize_mode = "center_crop";
  EXPECT_EQ(preprocess_min_decode_size(1080, 1440, p).width, 256);
  EXPECT_EQ(preprocess_min_decode_size(1080, 1440, p).height, 0);
  EXPECT_EQ(preprocess_min_decode_size(1440, 1080, p).height, 256);
}

TEST(Preprocess, OneResizeEqualsResizeThenCrop) {
  // The box resize must reproduce torchvision's two steps (resize the whole image, then crop).
  Image src;
  random_rgb_png(300, 220, 21, &src);
  Preprocess p;
  p.size = 96;
  p.crop_fraction = 0.75f;  // short side 128
  const int new_w = int(128.0 * 300 / 220), new_h = 128;
  const auto whole = resize(src, 0, 0, 300, 220, new_w, new_h);
  ASSERT_EQ(new_w, 174);
  const int left = 39, top = 16;  // (174 - 96) / 2, (128 - 96) / 2
  std::vector<uint8_t> out(96 * 96 * 3, kPoison);
  preprocess_image(src, p, out.data());
  int worst = 0;
  for (int y = 0; y < 96; ++y)
    for (int x = 0; x < 96 * 3; ++x)
      worst = std::max(worst, std::abs(int(out[y * 96 * 3 + x]) -
                                       int(whole[(top + y) * new_w * 3 + left * 3 + x])));
  EXPECT_LE(worst, 1);  // floating-point box edges may move a rounding by one level
}

TEST(Preprocess, AwkwardSizesAndModes) {
  for (auto [w, h] : {std::pair{1, 1}, {4000, 12}, {12, 4000}, {224, 224}, {2, 3}}) {
    const Image src = constant_image(w, h, 3, 140, 250);
    for (const std::string mode : {"center_crop", "squash"}) {
      Preprocess p;
      p.resize_mode = mode;
      std::vector<uint8_t> out(224 * 224 * 3, kPoison);
      preprocess_image(src, p, out.data());
      for (size_t i = 0; i < out.size(); i += 3) {
        ASSERT_EQ(out[i], 3) << w << "x" << h << " " << mode;
        ASSERT_EQ(out[i + 1], 140);
        ASSERT_EQ(out[i + 2], 250);
      }
    }
  }
  Preprocess bad;
  bad.resize_mode = "stretch";
  std::vector<uint8_t> out(224 * 224 * 3);
  EXPECT_THROW(preprocess_image(constant_image(4, 4, 0, 0, 0), bad, out.data()),
               std::invalid_argument);
  bad.resize_mode = "center_crop";
  bad.crop_fraction = 1.5f;
  EXPECT_THROW(preprocess_image(constant_image(4, 4, 0, 0, 0), bad, out.data()),
               std::invalid_argument);
}

TEST(Preprocess, RealPhotos) {
  // GRAFT_FISH_DIR points at a copy where ../shared is not beside the checkout (GPU machines).
  const char* env = std::getenv("GRAFT_FISH_DIR");
  const fs::path root =
      env ? fs::path(env) : fs::path(GRAFT_SOURCE_DIR) / ".." / "shared" / "data" / "fish";
  if (!fs::is_directory(root)) GTEST_SKIP() << "no photos at " << root.string();
  int count = 0;
  std::vector<uint8_t> out(224 * 224 * 3);
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string path = entry.path().string();
    for (const std::string mode : {"center_crop", "squash"}) {
      Preprocess p;
      p.resize_mode = mode;
      try {
        const Image img = load_image_for(path, p, DecodeLimits{});
        std::fill(out.begin(), out.end(), kPoison);
        preprocess_image(img, p, out.data());
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    }
    ++count;
  }
  if (count == 0) GTEST_SKIP() << "no files under " << root.string();
}
