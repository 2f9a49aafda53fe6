// Decode + preprocess throughput on one thread (so the numbers are per core): a synthetic
// 1080x1440 JPEG (quality 90, 4:2:0, as a phone writes them) to a 224x224 center crop, with a
// full-size decode and with TurboJPEG's scaled decode, plus the pieces separately.
//
//   build-*/bench/bench_decode [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/image.h"

using namespace graft;

namespace {

// Photo-like content: smooth shading, mid-frequency structure and sensor-like noise, so the
// entropy decoder has about as much work as on a real photo of this size.
Image synthetic_photo(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  uint32_t seed = 12345;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      seed = seed * 1664525u + 1013904223u;
      const double noise = double(seed >> 24) / 255.0 * 16 - 8;
      const double base = 0.5 + 0.25 * std::sin(x * 0.013 + y * 0.007) +
                          0.15 * std::sin(x * 0.11) * std::cos(y * 0.09) +
                          0.08 * std::sin((x + 2 * y) * 0.6);
      for (int c = 0; c < 3; ++c) {
        const double v = 255 * base * (0.7 + 0.15 * c) + noise + 20 * std::sin(y * 0.02 + c);
        img.rgb[(size_t(y) * w + x) * 3 + c] = uint8_t(std::clamp(v, 0.0, 255.0));
      }
    }
  return img;
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  tjhandle t = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  if (tjCompress2(t, img.rgb.data(), img.width, 0, img.height, TJPF_RGB, &buf, &n, TJSAMP_420,
                  quality, 0) != 0)
    throw std::runtime_error(tjGetErrorStr2(t));
  std::vector<uint8_t> out(buf, buf + n);
  tjFree(buf);
  tjDestroy(t);
  return out;
}

const std::vector<uint8_t>& portrait_jpeg() {
  static const std::vector<uint8_t> bytes = encode_jpeg(synthetic_photo(1080, 1440), 90);
  return bytes;
}

const std::vector<uint8_t>& landscape_jpeg() {
  static const std::vector<uint8_t> bytes = encode_jpeg(synthetic_photo(1000, 800), 90);
  return bytes;
}

void set_counters(benchmark::State& state, const std::vector<uint8_t>& bytes, const Image& last) {
  state.counters["images/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["jpeg_KB"] = double(bytes.size()) / 1024;
  state.counters["decoded_w"] = last.width;
  state.counters["decoded_h"] = last.height;
}

// min_w/min_h < 0: choose the scale from the preprocessing (decode_image_for).
void run_decode_preprocess(benchmark::State& state, const std::vector<uint8_t>& bytes, int min_w,
                           int min_h) {
  const Preprocess p;
  std::vector<uint8_t> out(size_t(p.size) * p.size * 3);
  Image img;
  for (auto _ : state) {
    img = min_w < 0
              ? decode_image_for(bytes.data(), bytes.size(), p, DecodeLimits{}, "bench")
              : decode_image(bytes.data(), bytes.size(), min_w, min_h, DecodeLimits{}, "bench");
    preprocess_image(img, p, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, bytes, img);
}

void BM_1080x1440_FullDecode_Preprocess(benchmark::State& state) {
  run_decode_preprocess(state, portrait_jpeg(), 0, 0);
}
void BM_1080x1440_ScaledDecode_Preprocess(benchmark::State& state) {
  run_decode_preprocess(state, portrait_jpeg(), -1, -1);
}

void run_decode_only(benchmark::State& state, const std::vector<uint8_t>& bytes, int min_w,
                     int min_h) {
  Image img;
  for (auto _ : state) {
    img = decode_image(bytes.data(), bytes.size(), min_w, min_h, DecodeLimits{}, "bench");
    benchmark::DoNotOptimize(img.rgb.data());
  }
  set_counters(state, bytes, img);
}

void BM_1080x1440_FullDecode_Only(benchmark::State& state) {
  run_decode_only(state, portrait_jpeg(), 0, 0);
}
void BM_1080x1440_ScaledDecode_Only(benchmark::State& state) {
  run_decode_only(state, portrait_jpeg(), 256, 0);  // what center_crop 224 asks for
}

void run_preprocess_only(benchmark::State& state, int min_w) {
  const Preprocess p;
  const auto& bytes = portrait_jpeg();
  const Image img = decode_image(bytes.data(), bytes.size(), min_w, 0, DecodeLimits{}, "bench");
  std::vector<uint8_t> out(size_t(p.size) * p.size * 3);
  for (auto _ : state) {
    preprocess_image(img, p, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, bytes, img);
}

void BM_Preprocess_From1080x1440(benchmark::State& state) {
  run_preprocess_only(state, 0);
}
void BM_Preprocess_From270x360(benchmark::State& state) {
  run_preprocess_only(state, 256);
}

// 1000x800 to a 256 short side: the smallest factor is 3/8 (375x300, libjpeg's plain-C 3x3
// IDCT); the nearest power of two is 1/2 (500x400, SIMD 4x4 IDCT) and leaves more to resize.
void BM_1000x800_Scale3of8_Preprocess(benchmark::State& state) {
  run_decode_preprocess(state, landscape_jpeg(), -1, -1);
}
void BM_1000x800_Scale1of2_Preprocess(benchmark::State& state) {
  run_decode_preprocess(state, landscape_jpeg(), 500, 400);
}

// The real photos, when the data set is present: scaled decode + center crop of each.
void BM_FishPhotos_ScaledDecode_Preprocess(benchmark::State& state) {
  const std::filesystem::path root =
      std::filesystem::path(GRAFT_SOURCE_DIR) / ".." / "shared" / "data" / "fish";
  std::vector<std::vector<uint8_t>> files;
  if (std::filesystem::is_directory(root))
    for (const auto& e : std::filesystem::recursive_directory_iterator(root))
      if (e.is_regular_file()) files.push_back(read_image_file(e.path().string()));
  if (files.empty()) {
    state.SkipWithError("no photos under ../shared/data/fish");
    return;
  }
  const Preprocess p;
  std::vector<uint8_t> out(size_t(p.size) * p.size * 3);
  size_t i = 0;
  for (auto _ : state) {
    const auto& bytes = files[i++ % files.size()];
    const Image img = decode_image_for(bytes.data(), bytes.size(), p, DecodeLimits{}, "fish");
    preprocess_image(img, p, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["files"] = double(files.size());
}

}  // namespace

BENCHMARK(BM_1080x1440_FullDecode_Preprocess)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_1080x1440_ScaledDecode_Preprocess)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_1080x1440_FullDecode_Only)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_1080x1440_ScaledDecode_Only)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Preprocess_From1080x1440)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Preprocess_From270x360)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_1000x800_Scale3of8_Preprocess)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_1000x800_Scale1of2_Preprocess)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FishPhotos_ScaledDecode_Preprocess)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
