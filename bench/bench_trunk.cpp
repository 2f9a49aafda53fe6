// The whole frozen trunk, timed: one model file, one normalised input batch already in the device's
// memory, the backbone's forward (input to pooled features) run many times back to back. What
// bench/trunk_vs_torch.py sets beside PyTorch on the same card.
//
//   bench_trunk --model M.safetensors --input x.f32 --shape N,H,W [--device cpu|cuda]
//               [--iters 50] [--repeats 5] [--warmup 5] [--graph] [--features out.f32]
//
// --input: raw little-endian float32, NHWC [N][H][W][3], normalised as the model's preprocessing
// says (H == W == its input size). Each measurement is --iters forwards between two CUDA events
// with one sync at the end (steady_clock on the cpu), so the host's launch overhead is hidden
// behind the GPU's work unless the host is the slower of the two (host_ms_per_batch says how long
// the launches themselves took). --graph captures one forward in a CUDA graph and times graph
// launches instead. Prints one JSON line; writes the last forward's features [N][feature_dim] as
// raw float32 to --features. Exit codes: 0 done, 1 the run failed, 2 bad arguments or input.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "engine/device.h"
#include "engine/features.h"
#include "engine/model.h"

#ifdef GRAFT_HAVE_CUDA
#include "kernels/cuda/check.h"
#endif

namespace {

using graft::bench::BadInput;

struct Args {
  std::string model, input, features, device = "cpu";
  int n = 0, h = 0, w = 0;
  int iters = 50, repeats = 5, warmup = 5;
  bool graph = false;
};

// "N,H,W" -> the three sizes, each at least 1.
void parse_shape(const std::string& v, Args* a) {
  int* dims[3] = {&a->n, &a->h, &a->w};
  size_t start = 0;
  for (int d = 0; d < 3; ++d) {
    const size_t comma = v.find(',', start);
    if ((d < 2) != (comma != std::string::npos))
      throw BadInput("--shape '" + v + "': expected N,H,W");
    const std::string part = v.substr(start, comma - start);
    size_t used = 0;
    long x = 0;
    try {
      x = std::stol(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || x < 1 || x > (1L << 30))
      throw BadInput("--shape '" + v + "': expected N,H,W of positive integers");
    *dims[d] = int(x);
    start = comma + 1;
  }
}

// Returns false when --help was printed.
bool parse_args(int argc, char** argv, Args* a) {
  CLI::App app{"The whole frozen trunk of a graft model, timed on an input already on the device."};
  std::string shape;
  app.add_option("--model", a->model, "graft model or backbone file")->required();
  app.add_option("--input", a->input, "raw float32 NHWC input, normalised for the model")
      ->required();
  app.add_option("--shape", shape, "N,H,W of --input")->required();
  app.add_option("--device", a->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--iters", a->iters, "forwards per measurement")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  app.add_option("--repeats", a->repeats, "measurements (the median is reported)")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  app.add_option("--warmup", a->warmup, "untimed forwards first")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  app.add_flag("--graph", a->graph, "capture one forward in a CUDA graph and time its replays");
  app.add_option("--features", a->features, "write the last forward's features here (float32)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    throw BadInput(e.what());
  }
  parse_shape(shape, a);
  return true;
}

// The whole file, checked against the shape it is said to have.
std::vector<float> read_input(const Args& a) {
  std::ifstream f(a.input, std::ios::binary | std::ios::ate);
  if (!f) throw BadInput(a.input + ": cannot open: " + std::strerror(errno));
  const std::streamoff bytes = f.tellg();
  const size_t count = size_t(a.n) * a.h * a.w * 3;
  if (bytes < 0 || size_t(bytes) != count * 4)
    throw BadInput(a.input + ": " + std::to_string(bytes) + " bytes, but --shape " +
                   std::to_string(a.n) + "," + std::to_string(a.h) + "," + std::to_string(a.w) +
                   " of float32 NHWC with 3 channels needs " + std::to_string(count * 4));
  std::vector<float> x(count);
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(x.data()), std::streamsize(count * 4)))
    throw BadInput(a.input + ": read failed");
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i]))
      throw BadInput(a.input + ": value " + std::to_string(i) + " is not finite");
  return x;
}

#ifdef GRAFT_HAVE_CUDA
// A forward captured once and replayed; null when the forward could not be captured (why says so).
struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

// The engine's forward launches kernels only (no allocation, no sync), so it should capture; if a
// call inside is not capturable, capture fails and the run times stream launches instead.
bool capture(Graph& g, cudaStream_t stream, const std::function<void()>& forward,
             std::string* why) {
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    forward();
  } catch (const std::exception& e) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream, &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    *why = e.what();
    return false;
  }
  const cudaError_t err = cudaStreamEndCapture(stream, &g.graph);
  if (err != cudaSuccess) {
    cudaGetLastError();
    *why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(err);
    return false;
  }
  CUDA_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  return true;
}

#endif

int run(const Args& a) {
  graft::Model model;
  try {
    model = graft::load_model(a.model);
  } catch (const std::exception& e) {
    throw BadInput(e.what());  // ModelError / WeightFileError already name the file
  }
  const int size = model.preprocess.size;
  if (a.h != size || a.w != size)
    throw BadInput(a.input + ": --shape " + std::to_string(a.h) + "x" + std::to_string(a.w) +
                   ", but " + a.model + " takes " + std::to_string(size) + "x" +
                   std::to_string(size) + " images");
  const std::vector<float> x = read_input(a);

  const graft::Device dev = graft::make_device(a.device);
  graft::FeatureExtractor fe;
  graft::extractor_create(fe, dev, model, a.n);
  const int dim = model.net.feature_dim;
  graft::Arena out_arena;
  graft::arena_reserve(out_arena, dev, size_t(a.n) * dim * 4 + 64);
  float* features_dev = graft::arena_alloc<float>(out_arena, size_t(a.n) * dim);
  // The input sits where the extractor's normalise step would leave it: value 0 of the op list.
  graft::copy_to_device(dev, graft::extractor_value(fe, 0), x.data(), x.size() * 4);
  graft::synchronize(dev);

  std::function<void()> forward = [&] { graft::extract_from_op(fe, a.n, 0, features_dev); };
  for (int i = 0; i < a.warmup; ++i) forward();
  graft::synchronize(dev);

  bool graphed = false;
  std::string graph_error;
  std::function<void()> step = forward;
#ifdef GRAFT_HAVE_CUDA
  Graph g;
  if (a.graph && dev.is_cuda()) {
    graphed = capture(g, dev.stream, forward, &graph_error);
    if (!graphed)
      std::cerr << "bench_trunk: the forward could not be captured in a CUDA graph (" << graph_error
                << "); timing stream launches\n";
  }
  if (graphed) {
    step = [&] { CUDA_CHECK(cudaGraphLaunch(g.exec, dev.stream)); };
    for (int i = 0; i < a.warmup; ++i) step();  // the first launches upload the graph
  }
#endif
  const graft::bench::Timing t = graft::bench::measure(dev, a.repeats, a.iters, step);
  if (a.graph && !dev.is_cuda()) graph_error = "CUDA graphs need --device cuda";

  std::vector<float> features(size_t(a.n) * dim);
  graft::copy_to_host(dev, features.data(), features_dev, features.size() * 4);
  graft::synchronize(dev);
  if (!a.features.empty()) {
    std::ofstream f(a.features, std::ios::binary);
    f.write(reinterpret_cast<const char*>(features.data()), std::streamsize(features.size() * 4));
    if (!f) throw std::runtime_error(a.features + ": cannot write the features");
  }

  nlohmann::json j = {{"device", a.device},
                      {"gpu", dev.is_cuda() ? graft::device_name(dev) : ""},
                      {"device_name", graft::device_name(dev)},
                      {"model", a.model},
                      {"batch", a.n},
                      {"height", a.h},
                      {"width", a.w},
                      {"feature_dim", dim},
                      {"iters", a.iters},
                      {"repeats", a.repeats},
                      {"warmup", a.warmup},
                      {"graph", graphed},
                      {"ms_per_batch", {{"median", t.median_ms}, {"min", t.min_ms}}},
                      {"ms_per_batch_all", t.all_ms},
                      {"host_ms_per_batch", t.host_ms},
                      {"images_per_s", a.n / (t.median_ms / 1000.0)}};
  if (!graph_error.empty()) j["graph_error"] = graph_error;
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return graft::bench::bench_main("bench_trunk", [&] {
    Args a;
    return parse_args(argc, argv, &a) ? run(a) : 0;
  });
}
