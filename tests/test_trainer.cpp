// The training workflow on the CPU: head gradients against finite differences, the feature cache
// against recomputation, determinism, splits, and bad input in the photo folder.
#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "engine/head.h"
#include "engine/trainer.h"
#include "io/safetensors.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

// ---- Head gradients
// ------------------------------------------------------------------------------

// Mean loss of one training step with learning rate 0: the step computes loss and gradients but
// leaves the weights as they are, so the same call serves as the function for finite differences.
double head_loss(Head& head, const std::vector<float>& x, const std::vector<int32_t>& labels,
                 float dropout, std::vector<float>& loss) {
  OptimConfig opt;
  std::vector<int64_t> confusion(size_t(head.shape.classes) * head.shape.classes);
  head_train_step(Device{}, head, opt, int(labels.size()), x.data(), labels.data(), dropout, 0.1f,
                  0.f, 7, 3, loss.data(), confusion.data());
  double sum = 0;
  for (float l : loss) sum += l;
  return sum / double(labels.size());
}

TEST(Head, GradientsMatchFiniteDifferences) {
  for (int hidden : {0, 5}) {
    const HeadShape shape{7, hidden, 3};
    const int n = 4;
    Arena arena;
    arena_reserve(arena, Device{}, head_arena_bytes(shape, n));
    Head head;
    head_create(head, arena, shape, n, 11);
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> x(n * 7);
    for (float& v : x) v = u(rng);
    // Bigger biases so the ReLU units sit away from their kink.
    if (hidden)
      for (int i = 0; i < hidden; ++i) head.t.b1[i] = 0.5f + 0.1f * i;
    std::vector<int32_t> labels = {0, 2, 1, 2};
    std::vector<float> loss(n);
    const float dropout = 0.25f;  // masks are a pure function of (seed, counter): still smooth
    head_loss(head, x, labels, dropout, loss);

    struct P {
      float* w;
      const float* g;
      int count;
    };
    std::vector<P> params = {{head.t.w2, head.t.gw2, 3 * (hidden ? hidden : 7)},
                             {head.t.b2, head.t.gb2, 3}};
    if (hidden) {
      params.push_back({head.t.w1, head.t.gw1, hidden * 7});
      params.push_back({head.t.b1, head.t.gb1, hidden});
    }
    for (const P& p : params) {
      std::vector<float> analytic(p.g, p.g + p.count);
      for (int i = 0; i < p.count; ++i) {
        const float keep = p.w[i], h = 1e-2f;
        p.w[i] = keep + h;
        const double up = head_loss(head, x, labels, dropout, loss);
        p.w[i] = keep - h;
        const double down = head_loss(head, x, labels, dropout, loss);
        p.w[i] = keep;
        const double numeric = (up - down) / (2 * h);
        // float32 losses and h = 1e-2: agreement to ~1e-3 absolute is what the arithmetic allows.
        EXPECT_NEAR(analytic[i], numeric, 2e-3 + 1e-2 * std::abs(numeric))
            << "hidden " << hidden << " param " << i;
      }
    }
    arena_release(arena);
  }
}

// ---- A small photo folder and a small backbone
// ---------------------------------------------------

// A folder of this test process's own: two runs of the suite at once (ctest -j, or a developer's
// run beside CI) must not write into each other's datasets and run folders.
std::string scratch_dir() {
  static const std::string dir = [] {
    std::string d = testing::TempDir() + "/graft-trainer-" + std::to_string(getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

void write_jpeg(const std::string& path, int w, int h, uint8_t r, uint8_t g, uint8_t b,
                uint32_t seed) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int noise = int(rng() % 40) - 20;
      const bool spot = (x - w / 2) * (x - w / 2) + (y - h / 2) * (y - h / 2) < (w * h) / 12;
      uint8_t* p = &px[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(std::clamp(int(spot ? b : r) + noise, 0, 255));
      p[1] = uint8_t(std::clamp(int(g) + noise, 0, 255));
      p[2] = uint8_t(std::clamp(int(spot ? r : b) + noise, 0, 255));
    }
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0), 0);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<char*>(buf), long(size));
  tjFree(buf);
  tjDestroy(tj);
}

// Three colour classes, `per_class` photos each, plus whatever `extra` adds.
std::string make_dataset(const std::string& name, int per_class) {
  const std::string root = scratch_dir() + "/" + name;
  fs::remove_all(root);
  const struct {
    const char* cls;
    uint8_t r, g, b;
  } classes[] = {{"red", 200, 40, 40}, {"green", 40, 190, 60}, {"blue", 30, 60, 210}};
  uint32_t seed = 1;
  for (const auto& c : classes) {
    fs::create_directories(root + "/" + c.cls);
    for (int i = 0; i < per_class; ++i)
      write_jpeg(root + "/" + c.cls + "/img" + std::to_string(i) + ".jpg", 40 + 3 * i, 36 + 2 * i,
                 c.r, c.g, c.b, seed++);
  }
  return root;
}

// MobileNetV2 with random weights at a 48x48 input: small enough for fast CPU tests, and a real
// architecture through the real loader.
std::string make_backbone() {
  const std::string path = scratch_dir() + "/tiny_backbone.safetensors";
  if (fs::exists(path)) return path;
  Net net = build_arch("mobilenet_v2");
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, shape] : expected_backbone_tensors(net)) {
    int64_t n = 1, fan_in = 1;
    for (int64_t d : shape) n *= d;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    std::vector<float> v(n);
    const bool var = name.find("running_var") != std::string::npos;
    const bool weight = name.find("conv.weight") != std::string::npos;
    for (float& x : v)
      x = var      ? 1.f + 0.5f * std::abs(u(rng))
          : weight ? u(rng) * std::sqrt(6.f / float(fan_in))
                   : 0.1f * u(rng);
    data.push_back(std::move(v));
    tensors.push_back({name, DType::f32, shape, data.back().data(), data.back().size() * 4});
  }
  write_weights(path, tensors,
                {{"arch", "mobilenet_v2"},
                 {"padding", "symmetric"},
                 {"bn_eps", "1e-05"},
                 {"input_size", "48"},
                 {"resize_mode", "squash"}});
  return path;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  return lines;
}

// metrics.jsonl without the wall-clock fields, which differ between any two runs.
std::vector<std::string> metrics_without_timing(const std::string& run) {
  std::vector<std::string> out;
  for (const auto& l : read_lines(run + "/metrics.jsonl")) {
    auto j = nlohmann::ordered_json::parse(l);
    j.erase("seconds");
    j.erase("images_per_second");
    out.push_back(j.dump());
  }
  return out;
}

TrainConfig small_config(const std::string& data, const std::string& out) {
  TrainConfig c;
  c.data = data;
  c.backbone = make_backbone();
  c.out_dir = scratch_dir() + "/" + out;
  c.device = "cpu";
  c.epochs = 4;
  c.batch_size = 5;  // 3 classes x 10 photos, 80/10/10: 24 train -> a partial last batch
  c.learning_rate = 0.05f;
  c.hidden = 6;
  c.progress = false;
  fs::remove_all(c.out_dir);
  return c;
}

TEST(Trainer, FeatureCacheGivesTheSameRunAsRecomputing) {
  const std::string data = make_dataset("cache_ds", 10);
  TrainConfig on = small_config(data, "run_cache_on");
  on.cache = "on";
  TrainConfig off = small_config(data, "run_cache_off");
  off.cache = "off";
  TrainResult a = train(on), b = train(off);
  EXPECT_TRUE(a.cache_used);
  EXPECT_FALSE(b.cache_used);
  EXPECT_EQ(metrics_without_timing(on.out_dir), metrics_without_timing(off.out_dir));
  ASSERT_EQ(a.epochs.size(), 4u);
  // Stage timing: the cached run decodes and runs the backbone in epoch 1 only.
  ASSERT_EQ(a.stages.size(), 4u);
  ASSERT_EQ(read_lines(on.out_dir + "/stages.jsonl").size(), 4u);
  EXPECT_FALSE(a.stages[0].from_cache);
  EXPECT_GT(a.stages[0].backbone, 0.0);
  EXPECT_GT(a.stages[0].decode_cpu, 0.0);
  EXPECT_GT(a.stages[0].head, 0.0);
  EXPECT_TRUE(a.stages[1].from_cache);
  EXPECT_EQ(a.stages[1].backbone, 0.0);
  EXPECT_GT(b.stages[3].backbone, 0.0);
  for (const auto& e : b.stages) {
    EXPECT_GE(e.device_idle_fraction, 0.0);
    EXPECT_LE(e.device_idle_fraction, 1.0);
  }
  WeightFile fa = open_weights(a.model_path), fb = open_weights(b.model_path);
  for (const char* t : {"fc.weight", "fc.bias", "hidden.weight"}) {
    const TensorView *x = find_tensor(fa, t), *y = find_tensor(fb, t);
    ASSERT_TRUE(x && y);
    EXPECT_EQ(0, std::memcmp(x->data, y->data, x->nbytes)) << t;
  }
}

TEST(Trainer, SameSeedSameRunAndOutputsAreComplete) {
  const std::string data = make_dataset("det_ds", 10);
  TrainConfig c1 = small_config(data, "run_det_1"), c2 = small_config(data, "run_det_2");
  train(c1);
  TrainResult r = train(c2);
  EXPECT_EQ(metrics_without_timing(c1.out_dir), metrics_without_timing(c2.out_dir));

  auto lines = read_lines(c2.out_dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 5u);  // 4 epochs + the test line
  auto e = nlohmann::ordered_json::parse(lines[0]);
  std::vector<std::string> keys;
  for (auto it = e.begin(); it != e.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                            "seconds", "images_per_second"}));
  auto t = nlohmann::ordered_json::parse(lines.back());
  EXPECT_EQ(t["split"], "test");
  EXPECT_EQ(t["confusion"].size(), 3u);
  EXPECT_TRUE(t["per_class"].contains("green"));
  EXPECT_TRUE(fs::exists(c2.out_dir + "/split.json"));
  EXPECT_TRUE(fs::exists(c2.out_dir + "/report.html"));

  // The exported file is a whole model: predict-ready, with the dataset's labels.
  Model m = load_model(r.model_path);
  EXPECT_EQ(m.labels, (std::vector<std::string>{"blue", "green", "red"}));
  EXPECT_EQ(m.fc.out, 3);
  EXPECT_EQ(m.hidden.out, 6);

  // graft eval on the same folder gives a result of the same form.
  std::vector<std::string> classes;
  int skipped = -1;
  EvalResult ev = evaluate_folder(r.model_path, data, "cpu", 7, &classes, &skipped);
  EXPECT_EQ(ev.n, 30);
  EXPECT_EQ(skipped, 0);
}

// Augmentation turns the cache off by itself, changes what the head sees, and stays reproducible.
// (The pretrained backbone: the random one's features barely depend on the pixels.)
TEST(Trainer, AugmentedRunsAreReproducible) {
  const std::string pretrained =
      std::string(GRAFT_SOURCE_DIR) + "/models/efficientnet_lite0.safetensors";
  if (!fs::exists(pretrained)) GTEST_SKIP() << pretrained << " is absent: run scripts/setup.sh";
  const std::string data = make_dataset("augment_ds", 10);
  TrainConfig a = small_config(data, "run_augment_1"), b = small_config(data, "run_augment_2"),
              plain = small_config(data, "run_augment_plain");
  a.backbone = b.backbone = plain.backbone = pretrained;
  a.augment = b.augment = true;
  a.epochs = b.epochs = plain.epochs = 2;
  TrainResult ra = train(a);
  train(b);
  train(plain);
  EXPECT_FALSE(ra.cache_used);
  EXPECT_EQ(metrics_without_timing(a.out_dir), metrics_without_timing(b.out_dir));
  EXPECT_NE(metrics_without_timing(a.out_dir), metrics_without_timing(plain.out_dir));
}

// Bitwise the same run whatever the number of CPU threads: no reduction's order depends on how
// work is split between threads.
TEST(Trainer, SameRunAcrossThreadCounts) {
  const std::string data = make_dataset("threads_ds", 10);
  const int threads = omp_get_max_threads();
  std::vector<std::vector<std::string>> runs;
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    TrainConfig c = small_config(data, "run_threads_" + std::to_string(t));
    c.epochs = 3;
    train(c);
    runs.push_back(metrics_without_timing(c.out_dir));
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
}

// With the real pretrained backbone (random weights wash the colours out of the features).
TEST(Trainer, LearnsSeparableClasses) {
  const std::string pretrained =
      std::string(GRAFT_SOURCE_DIR) + "/models/efficientnet_lite0.safetensors";
  if (!fs::exists(pretrained)) GTEST_SKIP() << pretrained << " is absent: run scripts/setup.sh";
  const std::string data = make_dataset("learn_ds", 10);
  TrainConfig c = small_config(data, "run_learn");
  c.backbone = pretrained;
  c.epochs = 10;
  c.hidden = 0;
  c.learning_rate = 0.005f;  // Model Maker's default
  TrainResult r = train(c);
  EXPECT_LT(r.epochs.back().loss, r.epochs.front().loss);
  EXPECT_GE(r.epochs.back().accuracy, 0.9) << "three colour classes should be easy";
}

TEST(Trainer, BadFilesAreSkippedAndCounted) {
  const std::string data = make_dataset("bad_ds", 10);
  std::ofstream(data + "/red/empty.jpg").close();
  std::ofstream(data + "/red/notes.txt") << "not an image";
  std::ofstream(data + "/green/.hidden.jpg") << "ignored";
  {  // A JPEG header followed by garbage: only decoding finds it.
    std::ifstream src(data + "/green/img0.jpg", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(src)), {});
    bytes.resize(bytes.size() / 3);
    for (size_t i = 200; i < bytes.size(); i += 7) bytes[i] = char(0xFF);
    std::ofstream(data + "/green/corrupt.jpg", std::ios::binary) << bytes;
  }
  fs::create_directories(data + "/empty_class");
  fs::create_directories(data + "/blue/folder.jpg");
  TrainConfig c = small_config(data, "run_bad");
  c.cache = "off";
  TrainResult r = train(c);
  EXPECT_EQ(r.epochs.size(), 4u);
  // empty.jpg, notes.txt, empty_class and corrupt.jpg, each reported once (not every epoch);
  // the folder named folder.jpg is just an (empty) folder.
  EXPECT_EQ(r.skipped_images, 4);
  Model m = load_model(r.model_path);
  EXPECT_EQ(m.labels.size(), 3u) << "the empty class folder is left out";
}

// Killed with SIGKILL mid-run and resumed, a run ends with the metrics of an uninterrupted one.
TEST(Trainer, ResumeAfterSigkillMatchesAnUninterruptedRun) {
  const std::string graft = std::string(GRAFT_BINARY_DIR) + "/graft";
  if (!fs::exists(graft)) GTEST_SKIP() << graft << " is not built";
  const std::string data = make_dataset("resume_ds", 10);
  TrainConfig ref = small_config(data, "run_resume_ref");
  ref.epochs = 80;
  ref.cache = "off";  // slower epochs: room to kill in the middle, even on a loaded machine
  train(ref);

  const std::string out = scratch_dir() + "/run_resume_killed";
  fs::remove_all(out);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string epochs = std::to_string(ref.epochs);
    execl(graft.c_str(), graft.c_str(), "train", "--data", data.c_str(), "--backbone",
          ref.backbone.c_str(), "--out", out.c_str(), "--device", "cpu", "--epochs", epochs.c_str(),
          "--batch-size", "5", "--learning-rate", "0.05", "--hidden", "6", "--cache-features",
          "off", "--no-progress", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill it once a few epochs are on disk: wherever it is, mid-epoch or mid-write.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline &&
         read_lines(out + "/metrics.jsonl").size() < 7)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  const size_t done = read_lines(out + "/metrics.jsonl").size();
  ASSERT_LT(done, size_t(ref.epochs));

  TrainConfig saved = load_config(out + "/config.json");
  saved.progress = false;
  train(saved, true);
  EXPECT_EQ(metrics_without_timing(out), metrics_without_timing(ref.out_dir))
      << "killed after " << done << " epochs";
  WeightFile a = open_weights(out + "/model.safetensors"),
             b = open_weights(ref.out_dir + "/model.safetensors");
  for (const char* t : {"fc.weight", "hidden.weight"})
    EXPECT_EQ(
        0, std::memcmp(find_tensor(a, t)->data, find_tensor(b, t)->data, find_tensor(a, t)->nbytes))
        << t;
}

TEST(Dataset, UnusableFoldersStopWithOneClearMessage) {
  const std::string root = scratch_dir() + "/one_class";
  fs::remove_all(root);
  fs::create_directories(root + "/only");
  write_jpeg(root + "/only/a.jpg", 20, 20, 1, 2, 3, 1);
  try {
    scan_dataset(root);
    FAIL();
  } catch (const DatasetError& e) {
    EXPECT_NE(std::string(e.what()).find("at least two class folders"), std::string::npos);
  }
  EXPECT_THROW(scan_dataset(root + "/missing"), DatasetError);

  // Two photos per class cannot fill train, validation and test.
  const std::string tiny = make_dataset("tiny_ds", 2);
  Dataset ds = scan_dataset(tiny);
  EXPECT_THROW(split_dataset(ds, 0.1, 0.1, 1), DatasetError);
}

TEST(Dataset, SplitIsStratifiedAndDeterministic) {
  const std::string data = make_dataset("split_ds", 10);
  Dataset ds = scan_dataset(data);
  Split a = split_dataset(ds, 0.1, 0.2, 9), b = split_dataset(ds, 0.1, 0.2, 9);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.test, b.test);
  EXPECT_EQ(a.val.size(), 3u);
  EXPECT_EQ(a.test.size(), 6u);
  EXPECT_EQ(a.train.size(), 21u);
  std::vector<int> per_class(3, 0);
  for (int i : a.test) ++per_class[ds.items[i].label];
  EXPECT_EQ(per_class, (std::vector<int>{2, 2, 2}));
  Split c = split_dataset(ds, 0.1, 0.2, 10);
  EXPECT_NE(a.test, c.test) << "another seed, another split";
}

}  // namespace
}  // namespace graft
