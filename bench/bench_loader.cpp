// Streaming loader throughput: decode + resize + centre crop (224, the default Preprocess) of a
// folder of synthetic phone photos (1080x1440 and 3024x4032, JPEG quality 90, 4:2:0), through
// loader_start_epoch / loader_next, with 1 and 2 decode threads.
//
// Counters: images/s (wall clock), images/s/core (images/s over decode threads) and
// images/cpu_s (images per second of process CPU time: the per-core figure that holds even when
// other jobs share the machine). bench/pil_decode.py times torchvision's ImageFolder path (PIL)
// on the same files for comparison; the folder is printed on stderr and kept between runs.
//
//   build-*/bench/bench_loader [--benchmark_filter=...]
//   python3 bench/pil_decode.py [folder]
#include <benchmark/benchmark.h>
#include <time.h>
#include <turbojpeg.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/loader.h"

using namespace graft;
namespace fs = std::filesystem;

namespace {

constexpr int kPerSize = 16;  // photos of each size: 32 in all

struct PhotoSize {
  const char* name;
  int width, height;
};
constexpr PhotoSize kSizes[] = {{"1080x1440", 1080, 1440}, {"3024x4032", 3024, 4032}};

// Photo-like content (smooth shading, mid-frequency structure, sensor-like noise) so the
// entropy decoder has about as much work as on a real photo; separable tables keep generating a
// 12-megapixel image fast. `seed` shifts the pattern so no two files are alike.
std::vector<uint8_t> synthetic_photo(int w, int h, uint32_t seed) {
  const double phase = seed * 0.37;
  std::vector<double> sx(w), sy(h), mx(w), my(h), diag(size_t(w) + 2 * h);
  for (int x = 0; x < w; ++x) sx[x] = std::sin(x * 0.013 + phase), mx[x] = std::sin(x * 0.11);
  for (int y = 0; y < h; ++y) sy[y] = std::sin(y * 0.007 - phase), my[y] = std::cos(y * 0.09);
  for (size_t i = 0; i < diag.size(); ++i) diag[i] = std::sin(double(i) * 0.6);
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  uint32_t rng = seed * 2654435761u + 1;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      rng = rng * 1664525u + 1013904223u;
      const double noise = double(rng >> 24) / 255.0 * 16 - 8;
      const double base =
          0.5 + 0.125 * (sx[x] + sy[y]) + 0.15 * mx[x] * my[y] + 0.08 * diag[size_t(x) + 2 * y];
      for (int c = 0; c < 3; ++c) {
        const double v = 255 * base * (0.7 + 0.15 * c) + noise + 20 * my[(y + 40 * c) % h];
        rgb[(size_t(y) * w + x) * 3 + c] = uint8_t(std::clamp(v, 0.0, 255.0));
      }
    }
  return rgb;
}

void write_jpeg(const std::string& path, int w, int h, uint32_t seed) {
  const std::vector<uint8_t> rgb = synthetic_photo(w, h, seed);
  tjhandle t = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  if (tjCompress2(t, rgb.data(), w, 0, h, TJPF_RGB, &buf, &n, TJSAMP_420, 90, 0) != 0)
    throw std::runtime_error(tjGetErrorStr2(t));
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(buf), long(n));
  tjFree(buf);
  tjDestroy(t);
}

// $GRAFT_BENCH_PHOTOS, or a folder under the system's temp dir; written once, reused after.
fs::path photo_dir() {
  const char* env = std::getenv("GRAFT_BENCH_PHOTOS");
  return env ? fs::path(env) : fs::temp_directory_path() / "graft_bench_photos";
}

// Paths of the photos of one size ("" for all), creating the folder on first use. Portrait and
// landscape alternate, as in a phone's camera roll.
std::vector<std::string> photos(const std::string& size_name) {
  const fs::path dir = photo_dir();
  std::vector<std::string> paths;
  for (const PhotoSize& s : kSizes) {
    fs::create_directories(dir / s.name);
    for (int i = 0; i < kPerSize; ++i) {
      const fs::path p = dir / s.name / ("photo" + std::to_string(i) + ".jpg");
      if (!fs::exists(p)) {
        const bool portrait = i % 2 == 0;
        write_jpeg(p.string(), portrait ? s.width : s.height, portrait ? s.height : s.width,
                   uint32_t(i + 1));
      }
      if (size_name.empty() || size_name == s.name) paths.push_back(p.string());
    }
  }
  return paths;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// One iteration = one epoch over the folder; the consumer only releases each batch, so the
// decode threads are the whole cost.
void BM_Loader(benchmark::State& state, const std::string& size_name) {
  const int threads = int(state.range(0));
  const std::vector<std::string> paths = photos(size_name);
  std::vector<LoaderItem> items;
  for (size_t i = 0; i < paths.size(); ++i) items.push_back({&paths[i], 0, int(i)});

  LoaderConfig cfg;  // the default Preprocess: Resize(256) + CenterCrop(224)
  cfg.batch = 8;
  cfg.threads = threads;
  cfg.slots = 3;
  Loader ld;
  loader_create(ld, cfg);

  int64_t images = 0, errors = 0;
  double decode_s = 0;
  const auto wall0 = std::chrono::steady_clock::now();
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    loader_start_epoch(ld, items);
    while (const LoaderBatch* b = loader_next(ld)) {
      benchmark::DoNotOptimize(b->pixels);
      loader_release(ld, b);
    }
    const LoaderStats st = loader_stats(ld);
    images += st.images;
    errors += st.errors;
    decode_s += st.decode_s;
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  const double cpu = process_cpu_seconds() - cpu0;
  if (errors) state.SkipWithError("some photos failed to decode");
  state.counters["images/s"] = double(images) / wall;
  state.counters["images/s/core"] = double(images) / wall / threads;
  state.counters["images/cpu_s"] = double(images) / cpu;
  state.counters["ms/image"] = 1e3 * decode_s / double(images);  // per decode, summed over threads
  state.counters["files"] = double(paths.size());
}

void register_benchmarks() {
  std::fprintf(stderr, "photos: %s\n", photo_dir().string().c_str());
  for (const char* set : {"1080x1440", "3024x4032", ""}) {
    const std::string name = std::string("BM_Loader/") + (*set ? set : "mixed");
    benchmark::RegisterBenchmark(name.c_str(), BM_Loader, std::string(set))
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->MinTime(2.0)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
