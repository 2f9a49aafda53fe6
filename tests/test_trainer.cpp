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
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include "engine/checkpoint.h"
#include "engine/head.h"
#include "engine/net.h"
#include "engine/evaluate.h"
#include "engine/trainer.h"
#include "io/safetensors.h"
#include "tests/random_backbone.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

// ---- Head gradients
// ------------------------------------------------------------------------------

// Mean loss of one training forward and backward (no update): the gradients land in the head's
// tensors (and, given dx, the features'), and the loss serves as the function for finite
// differences. The dropout masks are the same on every call: they depend on (seed, counter) only.
double head_loss(Head& head, const std::vector<float>& x, const std::vector<int32_t>& labels,
                 float dropout, std::vector<float>& loss, float* dx = nullptr) {
  std::vector<int64_t> confusion(size_t(head.shape.classes) * head.shape.classes);
  const HeadPass train{true, dropout, 7, 3, 0.1f};
  const int n = int(labels.size());
  head_forward(Device{}, head, train, n, x.data(), labels.data(), loss.data(), confusion.data());
  head_backward(Device{}, head, train, n, dx);
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
    std::vector<float> dx(x.size(), NAN);
    head_loss(head, x, labels, dropout, loss, dx.data());

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
    // The gradient that flows on into the backbone, for fine-tuning: d loss / d features.
    params.push_back({x.data(), dx.data(), int(x.size())});
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
  if (!fs::exists(path)) test::write_random_backbone(path, {"mobilenet_v2"});
  return path;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  return lines;
}

// metrics.jsonl without the wall-clock and throughput fields, which differ between any two runs
// (and whether an epoch read the feature cache depends on whether the process was restarted).
std::vector<std::string> metrics_without_timing(const std::string& run) {
  std::vector<std::string> out;
  for (const auto& l : read_lines(run + "/metrics.jsonl")) {
    auto j = nlohmann::ordered_json::parse(l);
    for (const char* k : {"seconds", "images_per_second", "feature_rows_per_second", "from_cache"})
      j.erase(k);
    out.push_back(j.dump());
  }
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every file of a folder with its bytes: a refused run must leave all of them as they were.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[e.path().string()] = read_all(e.path().string());
  return files;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
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
  testing::internal::CaptureStdout();
  TrainResult a = train(on);
  const std::string log = testing::internal::GetCapturedStdout();
  TrainResult b = train(off);
  EXPECT_TRUE(a.cache_used);
  // Cached epochs decode no image: the log, metrics.jsonl and the report say feature rows/s.
  size_t cached_lines = 0, image_lines = 0;
  for (size_t at = log.find("epoch "); at != std::string::npos; at = log.find("\nepoch ", at + 1)) {
    const std::string line = log.substr(at, log.find('\n', at + 1) - at);
    cached_lines += contains(line, "feature rows/s (cached features)");
    image_lines += contains(line, "img/s");
  }
  EXPECT_EQ(cached_lines, 3u) << log;
  EXPECT_EQ(image_lines, 1u) << log;
  const auto on_lines = read_lines(on.out_dir + "/metrics.jsonl");
  auto first = nlohmann::json::parse(on_lines[0]), second = nlohmann::json::parse(on_lines[1]);
  EXPECT_FALSE(first["from_cache"].get<bool>());
  EXPECT_GT(first["images_per_second"].get<double>(), 0.0);
  EXPECT_TRUE(first["feature_rows_per_second"].is_null());
  EXPECT_TRUE(second["from_cache"].get<bool>());
  EXPECT_TRUE(second["images_per_second"].is_null());
  EXPECT_GT(second["feature_rows_per_second"].get<double>(), 0.0);
  EXPECT_TRUE(a.epochs[1].from_cache);
  const std::string report = read_all(a.report_path);
  EXPECT_EQ(contains(report, "feature rows/s (cached features)"), true);
  EXPECT_TRUE(nlohmann::json::parse(read_lines(off.out_dir + "/metrics.jsonl")[1])["from_cache"] ==
              false);
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
  ASSERT_EQ(lines.size(), 6u);  // 4 epochs, the kept-epoch line, the test line
  auto e = nlohmann::ordered_json::parse(lines[0]);
  std::vector<std::string> keys;
  for (auto it = e.begin(); it != e.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                            "seconds", "from_cache", "images_per_second",
                                            "feature_rows_per_second"}));
  EXPECT_EQ(nlohmann::ordered_json::parse(lines[4]).dump(),
            R"({"kept_epoch":4,"epochs_finished":4,"stopped_early":false,"interrupted":false})");
  EXPECT_EQ(r.kept_epoch, 4);
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
  testing::internal::CaptureStderr();
  TrainResult r = train(c);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.epochs.size(), 4u);
  // empty.jpg, notes.txt and corrupt.jpg, each reported once (not every epoch), and the class
  // folder empty_class, counted apart; the folder named folder.jpg is just an (empty) folder.
  EXPECT_EQ(r.skipped_files, 3);
  EXPECT_EQ(r.skipped_folders, 1);
  EXPECT_TRUE(contains(err, "graft: 3 files skipped, 1 empty class folder skipped\n")) << err;
  EXPECT_TRUE(contains(read_all(r.report_path), "3 files skipped, 1 empty class folder skipped"));
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

TEST(Trainer, SkippedSummaryCountsFilesAndFoldersApart) {
  EXPECT_EQ(skipped_summary(0, 0), "");
  EXPECT_EQ(skipped_summary(1, 0), "1 file skipped");
  EXPECT_EQ(skipped_summary(2, 0), "2 files skipped");
  EXPECT_EQ(skipped_summary(0, 1), "1 empty class folder skipped");
  EXPECT_EQ(skipped_summary(1, 2), "1 file skipped, 2 empty class folders skipped");
}

// Only an empty class folder left out: no file was skipped, and the summary does not say so.
TEST(Trainer, EmptyClassFolderAloneIsNotCalledAFile) {
  const std::string data = make_dataset("empty_folder_ds", 10);
  fs::create_directories(data + "/zebra");
  TrainConfig c = small_config(data, "run_empty_folder");
  c.epochs = 1;
  testing::internal::CaptureStderr();
  TrainResult r = train(c);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.skipped_files, 0);
  EXPECT_EQ(r.skipped_folders, 1);
  EXPECT_TRUE(contains(err, "graft: 1 empty class folder skipped\n")) << err;
  EXPECT_FALSE(contains(err, "files skipped")) << err;
}

// The settings are declared once (engine/config.h): every saved one survives config.json with a
// value other than its default, flags and keys are unique, and each range and choice list is
// enforced, naming the flag.
TEST(Trainer, EverySettingRoundTripsAndIsChecked) {
  TrainConfig c;
  std::set<std::string> flags, keys;
  int changed = 0;
  visit_settings(c, [&](const SettingInfo& s, auto& field) {
    EXPECT_TRUE(flags.insert(s.flag).second) << s.flag;
    EXPECT_TRUE(keys.insert(s.key).second) << s.key;
    EXPECT_GT(std::strlen(s.help), 0u) << s.flag;
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<T, bool>) {
      field = !field;
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (s.choices.empty()) field = std::string("path/") + s.key;
      for (const std::string& w : s.choices)
        if (w != field) {
          field = w;
          break;
        }
    } else if (s.min <= s.max) {
      field = static_cast<T>(s.min + (s.max - s.min) * 0.37);
    } else {
      field = static_cast<T>(field + 7);
    }
    ++changed;
  });
  EXPECT_GE(changed, 20);
  c.cache = "off";      // "on" (the first other choice) cannot be combined with --augment
  c.fine_tune = "2";    // a word with no list of choices, but a grammar of its own
  c.freeze_epochs = 1;  // fewer than --epochs
  const std::string path = scratch_dir() + "/config_all.json";
  save_config(c, path);
  const TrainConfig back = load_config(path);
  // Every saved setting left its default, and reads back as written; the unsaved one does not.
  const std::string path_default = scratch_dir() + "/config_default.json";
  const std::string path_back = scratch_dir() + "/config_back.json";
  const TrainConfig defaults;
  save_config(defaults, path_default);
  save_config(back, path_back);
  const auto written = nlohmann::json::parse(read_all(path));
  const auto fresh = nlohmann::json::parse(read_all(path_default));
  EXPECT_EQ(read_all(path_back), read_all(path));
  EXPECT_EQ(written.size(), keys.size() - 1);  // all but --overwrite
  for (const auto& [key, value] : written.items()) {
    EXPECT_NE(value, fresh[key]) << key;
  }
  EXPECT_FALSE(back.overwrite);
  EXPECT_NO_THROW(check_config(back));
  // A run folder from before the fine-tuning settings: they take their defaults; a mistyped value
  // is an error naming the setting.
  auto older = written;
  for (const char* key : {"fine_tune", "freeze_epochs", "backbone_lr"}) older.erase(key);
  write_file_atomic(path, older.dump(1));
  const TrainConfig old_run = load_config(path);
  EXPECT_EQ(old_run.fine_tune, defaults.fine_tune);
  EXPECT_EQ(old_run.freeze_epochs, 0);
  EXPECT_EQ(old_run.learning_rate, back.learning_rate);
  older["epochs"] = "many";
  write_file_atomic(path, older.dump(1));
  try {
    load_config(path);
    ADD_FAILURE() << "a mistyped setting was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "'epochs'")) << e.what();
  }

  TrainConfig probe = back;
  visit_settings(probe, [&](const SettingInfo& s, auto& field) {
    using T = std::decay_t<decltype(field)>;
    TrainConfig bad = back;
    visit_settings(bad, [&](const SettingInfo& t, auto& f) {
      if (std::string(t.key) != s.key) return;
      // F, the inner field's own type, in the branches: clang 14 instantiates a discarded branch
      // that names the enclosing lambda's T.
      using F = std::decay_t<decltype(f)>;
      if constexpr (std::is_arithmetic_v<F> && !std::is_same_v<F, bool> && std::is_same_v<F, T>) {
        if (t.min <= t.max) f = static_cast<F>(t.max + 1);
      } else if constexpr (std::is_same_v<F, std::string> && std::is_same_v<F, T>) {
        if (!t.choices.empty()) f = "bogus";
      }
    });
    if ((s.min <= s.max && std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) ||
        (std::is_same_v<T, std::string> && !s.choices.empty())) {
      try {
        check_config(bad);
        ADD_FAILURE() << s.flag << " out of range was accepted";
      } catch (const std::invalid_argument& e) {
        EXPECT_TRUE(contains(e.what(), s.flag)) << e.what();
      }
    }
  });
}

// --fine-tune 2 --freeze-epochs 2: two epochs train the head alone, the third the last two blocks
// too; after the first, every epoch starts from the cached activation that enters those blocks. The
// model file carries the trained blocks, read back by the loader to exactly the kept weights, and
// the frozen blocks exactly as they came.
TEST(Trainer, FineTuneWritesTheTrainedBlocksToTheModel) {
  const std::string data = make_dataset("finetune_ds", 10);
  TrainConfig c = small_config(data, "run_finetune");
  c.epochs = 3;
  c.fine_tune = "2";
  c.freeze_epochs = 2;
  const TrainResult r = train(c);
  ASSERT_EQ(r.epochs.size(), 3u);
  EXPECT_TRUE(r.cache_used);
  EXPECT_FALSE(r.epochs[0].from_cache);
  EXPECT_TRUE(r.epochs[1].from_cache);
  EXPECT_TRUE(r.epochs[2].from_cache);

  const Model original = load_model(c.backbone), tuned = load_model(r.model_path);
  const int first = first_trainable_op(original.net, 2);
  size_t begin = original.net.params.size();
  for (size_t i = first; i < original.net.ops.size(); ++i)
    if (original.net.ops[i].kind == OpKind::conv) begin = std::min(begin, original.net.w_off[i]);
  ASSERT_LT(begin, original.net.params.size());
  ASSERT_EQ(tuned.net.params.size(), original.net.params.size());
  EXPECT_EQ(0, std::memcmp(original.net.params.data(), tuned.net.params.data(), begin * 4));
  size_t changed = 0;
  for (size_t k = begin; k < original.net.params.size(); ++k)
    changed += original.net.params[k] != tuned.net.params[k];
  EXPECT_GT(changed, (original.net.params.size() - begin) * 9 / 10);
  // The kept slice as the checkpoint holds it, bit for bit after the trip through the file.
  WeightFile ck = open_weights(c.out_dir + "/checkpoint.safetensors");
  const TensorView* kept = find_tensor(ck, "best.backbone.params");
  ASSERT_NE(kept, nullptr);
  const std::vector<float> slice = tensor_to_f32(*kept);
  ASSERT_EQ(slice.size(), original.net.params.size() - begin);
  EXPECT_EQ(0, std::memcmp(slice.data(), tuned.net.params.data() + begin, slice.size() * 4));
  EXPECT_EQ(tuned.metadata.at("fine_tuned").rfind("2 blocks", 0), 0u);
}

// A fine-tuned run stopped after two epochs and resumed to three ends exactly as one that ran
// three: the checkpoint carries the trained blocks and their optimiser moments.
TEST(Trainer, FineTuneResumesExactly) {
  const std::string data = make_dataset("finetune_resume_ds", 10);
  TrainConfig ref = small_config(data, "run_finetune_ref");
  ref.epochs = 3;
  ref.fine_tune = "all";
  train(ref);
  TrainConfig c = small_config(data, "run_finetune_resume");
  c.epochs = 2;
  c.fine_tune = "all";
  train(c);
  TrainConfig more = load_config(c.out_dir + "/config.json");
  more.progress = false;
  more.epochs = 3;
  train(more, true);
  EXPECT_EQ(metrics_without_timing(c.out_dir), metrics_without_timing(ref.out_dir));
  WeightFile a = open_weights(c.out_dir + "/model.safetensors"),
             b = open_weights(ref.out_dir + "/model.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const TensorView& t : a.tensors) {
    const TensorView* u = find_tensor(b, t.name);
    ASSERT_NE(u, nullptr) << t.name;
    ASSERT_EQ(t.nbytes, u->nbytes) << t.name;
    EXPECT_EQ(0, std::memcmp(t.data, u->data, t.nbytes)) << t.name;
  }
}

// The cache at the freeze boundary changes nothing but the time: with --fine-tune, a run that
// keeps the activation entering the first trained block ends with the same metrics and the same
// model, bit for bit, as one that decodes and runs the frozen blocks every epoch.
TEST(Trainer, FineTuneCacheAtTheBoundaryGivesTheSameRun) {
  const std::string data = make_dataset("finetune_cache_ds", 10);
  TrainConfig on = small_config(data, "run_finetune_cache_on");
  TrainConfig off = small_config(data, "run_finetune_cache_off");
  for (TrainConfig* c : {&on, &off}) {
    c->epochs = 3;
    c->fine_tune = "3";
  }
  on.cache = "on";
  off.cache = "off";
  const TrainResult a = train(on), b = train(off);
  EXPECT_TRUE(a.cache_used);
  EXPECT_FALSE(b.cache_used);
  EXPECT_TRUE(a.epochs[2].from_cache);
  EXPECT_EQ(metrics_without_timing(on.out_dir), metrics_without_timing(off.out_dir));
  WeightFile x = open_weights(on.out_dir + "/model.safetensors"),
             y = open_weights(off.out_dir + "/model.safetensors");
  ASSERT_EQ(x.tensors.size(), y.tensors.size());
  for (const TensorView& t : x.tensors) {
    const TensorView* u = find_tensor(y, t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(0, std::memcmp(t.data, u->data, t.nbytes)) << t.name;
  }
}

// Settings that cannot work are refused before the run folder gets a file.
TEST(Trainer, FineTuneRefusesWhatCannotWork) {
  const std::string data = make_dataset("finetune_bad_ds", 4);
  auto refused = [&](TrainConfig c, const std::string& needle) {
    try {
      train(c);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const std::exception& e) {
      EXPECT_TRUE(contains(e.what(), needle)) << e.what();
    }
    EXPECT_FALSE(fs::exists(c.out_dir + "/config.json")) << needle;
  };
  auto config = [&](const char* fine_tune, int freeze_epochs) {
    TrainConfig c = small_config(data, "run_finetune_bad");
    c.fine_tune = fine_tune;
    c.freeze_epochs = freeze_epochs;
    return c;
  };
  refused(config("40", 0), "mobilenet_v2 has 19 blocks");
  refused(config("two", 0), "--fine-tune must be a number of blocks or all");
  refused(config("0", 1), "--freeze-epochs needs --fine-tune");
  refused(config("1", small_config(data, "unused").epochs), "leaves none");
}

// The user's values, not their float's binary expansion: 0.005, not 0.004999999888241291.
TEST(Trainer, ConfigKeepsTheUsersValues) {
  TrainConfig c;
  c.learning_rate = 0.005f;
  c.dropout = 0.3f;
  c.label_smoothing = 0.1f;
  c.opt.l2 = 1e-4f;
  c.opt.momentum = 0.9f;
  c.warmup_epochs = 1.5f;
  const std::string path = scratch_dir() + "/config_values.json";
  save_config(c, path);
  const auto j = nlohmann::json::parse(read_all(path));
  EXPECT_EQ(j["learning_rate"].dump(), "0.005");
  EXPECT_EQ(j["dropout"].dump(), "0.3");
  EXPECT_EQ(j["label_smoothing"].dump(), "0.1");
  EXPECT_EQ(j["l2"].dump(), "0.0001");
  EXPECT_EQ(j["momentum"].dump(), "0.9");
  EXPECT_EQ(j["warmup_epochs"].dump(), "1.5");
  EXPECT_FALSE(contains(read_all(path), "0.00499999"));
  const TrainConfig back = load_config(path);  // and they read back as the very same floats
  EXPECT_EQ(back.learning_rate, c.learning_rate);
  EXPECT_EQ(back.dropout, c.dropout);
  EXPECT_EQ(back.label_smoothing, c.label_smoothing);
  EXPECT_EQ(back.opt.l2, c.opt.l2);
  EXPECT_EQ(back.opt.momentum, c.opt.momentum);
  EXPECT_EQ(back.warmup_epochs, c.warmup_epochs);
}

// A class absent from the evaluated images has no precision, recall or f1 (null), not zeros.
TEST(Trainer, EvalJsonReportsAbsentClassesAsAbsent) {
  EvalResult r;
  r.classes = 3;
  // a: present and right; b: absent, yet predicted once; c: present, never predicted.
  r.confusion = {2, 1, 0,  //
                 0, 0, 0,  //
                 1, 0, 0};
  r.n = 4;
  const auto j = nlohmann::json::parse(eval_json("eval", r, {"a", "b", "c"}));
  const auto& b = j["per_class"]["b"];
  EXPECT_EQ(b["support"], 0);
  EXPECT_TRUE(b["precision"].is_null());
  EXPECT_TRUE(b["recall"].is_null());
  EXPECT_TRUE(b["f1"].is_null());
  const auto& c = j["per_class"]["c"];
  EXPECT_TRUE(c["precision"].is_null()) << "never predicted: precision is undefined";
  EXPECT_EQ(c["recall"].get<double>(), 0.0);
  EXPECT_EQ(c["f1"].get<double>(), 0.0);
  EXPECT_NEAR(j["per_class"]["a"]["precision"].get<double>(), 2.0 / 3, 1e-12);
  EXPECT_NEAR(j["per_class"]["a"]["recall"].get<double>(), 2.0 / 3, 1e-12);
}

// A new run into a folder that holds another run is refused before anything is touched.
TEST(Trainer, RefusesANonEmptyRunFolderUnlessOverwrite) {
  const std::string data = make_dataset("refuse_ds", 10);
  TrainConfig c = small_config(data, "run_refuse");
  c.epochs = 1;
  train(c);
  const auto before = snapshot(c.out_dir);
  ASSERT_GE(before.size(), 7u);
  TrainConfig again = c;
  again.epochs = 2;
  try {
    train(again);
    FAIL() << "a non-empty run folder was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), c.out_dir)) << e.what();
    EXPECT_TRUE(contains(e.what(), "--overwrite")) << e.what();
  }
  EXPECT_EQ(snapshot(c.out_dir), before) << "the old run's files changed";

  // --overwrite replaces the run's files and leaves anything else in the folder alone.
  std::ofstream(c.out_dir + "/my_notes.txt") << "keep me";
  again.overwrite = true;
  TrainResult r = train(again);
  EXPECT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(read_all(c.out_dir + "/my_notes.txt"), "keep me");
  EXPECT_NE(read_all(c.out_dir + "/metrics.jsonl"), before.at(c.out_dir + "/metrics.jsonl"));
  EXPECT_EQ(load_config(c.out_dir + "/config.json").epochs, 2);
}

// An --out that cannot be a folder, or cannot be written, is one line with the OS's reason
// naming the folder, and the run stops before training.
TEST(Trainer, UnwritableRunFolderNamesFolderAndReason) {
  const std::string data = make_dataset("unwritable_ds", 10);
  TrainConfig c = small_config(data, "run_unwritable");
  const std::string file = scratch_dir() + "/a_regular_file";
  std::ofstream(file) << "x";
  c.out_dir = file + "/sub";
  try {
    train(c);
    FAIL() << "a run folder under a regular file was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), c.out_dir)) << e.what();
    EXPECT_TRUE(contains(e.what(), "Not a directory")) << e.what();
    EXPECT_FALSE(contains(e.what(), ".tmp")) << e.what();
  }
  if (geteuid() == 0) {
    std::printf("permission case not run: root writes into a read-only folder\n");
    return;
  }
  const std::string locked = scratch_dir() + "/locked";
  fs::create_directories(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  c.out_dir = locked + "/run";
  try {
    train(c);
    ADD_FAILURE() << "a run folder in a read-only folder was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), c.out_dir)) << e.what();
    EXPECT_TRUE(contains(e.what(), "Permission denied")) << e.what();
  }
  fs::permissions(locked, fs::perms::owner_all);
}

// Early stopping: metrics.jsonl and the report name the kept epoch, and the log says "early
// stop" only when epochs were left to run. The expectations come from a run without early
// stopping (same seed: the same epochs), so they hold whatever the validation curve looks like.
TEST(Trainer, EarlyStopRecordsTheKeptEpoch) {
  const std::string data = make_dataset("early_ds", 10);
  TrainConfig full = small_config(data, "run_early_full");
  full.epochs = 8;
  full.learning_rate = 0.5f;  // a bumpy validation curve
  TrainResult ref = train(full);
  for (int patience : {1, 2, 3}) {
    // Replay the rule on the reference curve: when it stops, and which epoch it keeps.
    double best = INFINITY;
    int kept = 0, since = 0, stop = full.epochs;
    for (const EpochMetrics& e : ref.epochs) {
      if (e.val_loss < best)
        best = e.val_loss, kept = e.epoch, since = 0;
      else
        ++since;
      if (since >= patience) {
        stop = e.epoch;
        break;
      }
    }
    const bool early = stop < full.epochs;
    TrainConfig c = small_config(data, "run_early_" + std::to_string(patience));
    c.epochs = full.epochs;
    c.learning_rate = full.learning_rate;
    c.early_stop = patience;
    testing::internal::CaptureStderr();
    TrainResult r = train(c);
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(int(r.epochs.size()), stop) << "patience " << patience;
    EXPECT_EQ(r.kept_epoch, kept) << "patience " << patience;
    EXPECT_EQ(r.stopped_early, early) << "patience " << patience;
    EXPECT_EQ(contains(err, "early stop after epoch"), early) << err;
    const auto lines = read_lines(c.out_dir + "/metrics.jsonl");
    ASSERT_EQ(int(lines.size()), stop + 2);
    const auto k = nlohmann::json::parse(lines[size_t(stop)]);
    EXPECT_EQ(k["kept_epoch"], kept);
    EXPECT_EQ(k["epochs_finished"], stop);
    EXPECT_EQ(k["stopped_early"], early);
    const std::string report = read_all(r.report_path);
    EXPECT_TRUE(contains(report, "kept: epoch " + std::to_string(kept)));
    EXPECT_TRUE(contains(report, "<tr class=\"kept\"><td>" + std::to_string(kept) + " (kept)"));
  }
}

// The case a user met: --epochs 5 --early-stop 2 with no improvement in epochs 4 and 5. The
// run ends at epoch 5 as planned: no "early stop" in the log, stopped_early false.
TEST(Trainer, NoEarlyStopMessageAtTheLastEpoch) {
  const std::string data = make_dataset("early_last_ds", 10);
  TrainConfig probe = small_config(data, "run_early_last_probe");
  probe.epochs = 12;
  probe.learning_rate = 0.5f;
  TrainResult ref = train(probe);
  // The first epoch at which val_loss has not improved for two epochs: patience 2 stops there.
  double best = INFINITY;
  int since = 0, last = 0;
  for (const EpochMetrics& e : ref.epochs) {
    if (e.val_loss < best)
      best = e.val_loss, since = 0;
    else
      ++since;
    if (since >= 2) {
      last = e.epoch;
      break;
    }
  }
  // The probe's run is deterministic (fixed seed, data and settings) and its validation loss
  // stalls at a learning rate of 0.5; if it ever stops stalling, the test has lost its case.
  ASSERT_NE(last, 0) << "validation loss improved at every one of 12 epochs: the probe no longer "
                        "reaches the case this test is about";
  TrainConfig c = small_config(data, "run_early_last");
  c.epochs = last;  // the stop criterion is met exactly at the last epoch
  c.learning_rate = probe.learning_rate;
  c.early_stop = 2;
  testing::internal::CaptureStderr();
  TrainResult r = train(c);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(int(r.epochs.size()), last);
  EXPECT_FALSE(r.stopped_early);
  EXPECT_FALSE(contains(err, "early stop")) << err;
  EXPECT_TRUE(contains(err, "keeping epoch " + std::to_string(r.kept_epoch))) << err;
  EXPECT_LT(r.kept_epoch, last);
}

// A finished run extended with --resume --epochs ends where an uninterrupted longer run ends.
TEST(Trainer, ResumeCanRaiseTheEpochCount) {
  const std::string data = make_dataset("extend_ds", 10);
  TrainConfig ref = small_config(data, "run_extend_ref");
  train(ref);  // 4 epochs
  TrainConfig c = small_config(data, "run_extend");
  c.epochs = 2;
  train(c);

  // Fewer epochs than finished: refused, the run untouched.
  const auto before = snapshot(c.out_dir);
  TrainConfig fewer = load_config(c.out_dir + "/config.json");
  fewer.epochs = 1;
  try {
    train(fewer, true);
    FAIL() << "--epochs below the finished epochs was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "finished 2 epochs")) << e.what();
  }
  EXPECT_EQ(snapshot(c.out_dir), before);

  TrainConfig more = load_config(c.out_dir + "/config.json");
  more.progress = false;
  more.epochs = 4;
  train(more, true);
  EXPECT_EQ(metrics_without_timing(c.out_dir), metrics_without_timing(ref.out_dir));
  EXPECT_EQ(load_config(c.out_dir + "/config.json").epochs, 4);
  WeightFile a = open_weights(c.out_dir + "/model.safetensors"),
             b = open_weights(ref.out_dir + "/model.safetensors");
  for (const char* t : {"fc.weight", "hidden.weight"})
    EXPECT_EQ(
        0, std::memcmp(find_tensor(a, t)->data, find_tensor(b, t)->data, find_tensor(a, t)->nbytes))
        << t;

  // The cosine decay is fitted to the epoch count: extending it is refused, nothing changes.
  TrainConfig cos = small_config(data, "run_extend_cosine");
  cos.epochs = 2;
  cos.lr_schedule = "cosine";
  train(cos);
  const auto cos_before = snapshot(cos.out_dir);
  TrainConfig cos_more = load_config(cos.out_dir + "/config.json");
  cos_more.epochs = 3;
  try {
    train(cos_more, true);
    FAIL() << "extending a cosine run was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "cosine")) << e.what();
  }
  EXPECT_EQ(snapshot(cos.out_dir), cos_before);
}

// A trained graft model as --backbone: the user is told its head is replaced.
TEST(Trainer, WarnsWhenTheBackboneIsATrainedModel) {
  const std::string data = make_dataset("retrain_ds", 10);
  TrainConfig first = small_config(data, "run_retrain_first");
  first.epochs = 1;
  TrainResult r = train(first);
  TrainConfig second = small_config(data, "run_retrain_second");
  second.epochs = 1;
  second.hidden = 0;
  second.backbone = r.model_path;
  testing::internal::CaptureStderr();
  TrainResult r2 = train(second);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(err, r.model_path + " is a trained graft model (classes: blue, green, red)"))
      << err;
  EXPECT_TRUE(contains(err, "its head is replaced")) << err;
  EXPECT_TRUE(contains(err, "only its backbone is kept")) << err;
  Model m = load_model(r2.model_path);
  EXPECT_EQ(m.hidden.out, 0) << "the first model's hidden layer is not carried over";

  // A plain backbone gets no such warning.
  TrainConfig plain = small_config(data, "run_retrain_plain");
  plain.epochs = 1;
  testing::internal::CaptureStderr();
  train(plain);
  EXPECT_FALSE(contains(testing::internal::GetCapturedStderr(), "trained graft model"));
}

// Starts `graft train` on the tiny backbone in a child process; returns its pid.
pid_t spawn_train(const std::string& data, const std::string& backbone, const std::string& out,
                  int epochs, const std::string& err_file) {
  const std::string graft = std::string(GRAFT_BINARY_DIR) + "/graft";
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string e = std::to_string(epochs);
    freopen(err_file.c_str(), "w", stderr);
    freopen("/dev/null", "w", stdout);
    execl(graft.c_str(), graft.c_str(), "train", "--data", data.c_str(), "--backbone",
          backbone.c_str(), "--out", out.c_str(), "--device", "cpu", "--epochs", e.c_str(),
          "--batch-size", "5", "--learning-rate", "0.05", "--hidden", "6", "--cache-features",
          "off", "--no-progress", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Ctrl-C (or TERM) keeps the last finished epoch as a model and a report, then exits non-zero
// with the resume hint; the resumed run still ends like an uninterrupted one.
TEST(Trainer, InterruptWritesModelAndReportOfTheLastFinishedEpoch) {
  const std::string graft = std::string(GRAFT_BINARY_DIR) + "/graft";
  if (!fs::exists(graft)) GTEST_SKIP() << graft << " is not built";
  const std::string data = make_dataset("sigint_ds", 10);
  TrainConfig ref = small_config(data, "run_sigint_ref");
  ref.epochs = 30;  // the signal lands a few epochs in; the rest is the resume's to finish
  ref.cache = "off";
  train(ref);
  const std::string out = scratch_dir() + "/run_sigint";
  fs::remove_all(out);
  const std::string err_file = scratch_dir() + "/sigint.err";
  const pid_t pid = spawn_train(data, ref.backbone, out, ref.epochs, err_file);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline &&
         read_lines(out + "/metrics.jsonl").size() < 3)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by the signal instead of stopping";
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = read_all(err_file);
  EXPECT_TRUE(contains(err, "graft train --resume " + out)) << err;
  ASSERT_TRUE(fs::exists(out + "/model.safetensors")) << err;
  ASSERT_TRUE(fs::exists(out + "/report.html")) << err;
  const auto lines = read_lines(out + "/metrics.jsonl");
  ASSERT_GE(lines.size(), 4u);
  const auto k = nlohmann::json::parse(lines.back());
  ASSERT_TRUE(k.contains("interrupted")) << lines.back();
  EXPECT_TRUE(k["interrupted"].get<bool>());
  const int finished = k["epochs_finished"];
  EXPECT_EQ(int(lines.size()), finished + 1);
  EXPECT_EQ(k["kept_epoch"], finished);
  EXPECT_LT(finished, ref.epochs) << "the run finished before it could be interrupted";
  EXPECT_TRUE(contains(read_all(out + "/report.html"),
                       "interrupted after epoch " + std::to_string(finished)));
  // The model holds the head the checkpoint keeps for that epoch.
  WeightFile model = open_weights(out + "/model.safetensors"),
             ck = open_weights(out + "/checkpoint.safetensors");
  const TensorView *w = find_tensor(model, "fc.weight"), *kw = find_tensor(ck, "best.fc.w");
  ASSERT_TRUE(w && kw);
  ASSERT_EQ(w->nbytes, kw->nbytes);
  EXPECT_EQ(0, std::memcmp(w->data, kw->data, w->nbytes));

  TrainConfig saved = load_config(out + "/config.json");
  saved.progress = false;
  train(saved, true);
  EXPECT_EQ(metrics_without_timing(out), metrics_without_timing(ref.out_dir));
}

// Interrupted before any epoch finished: no model, no report.
TEST(Trainer, InterruptBeforeTheFirstEpochWritesNoModel) {
  const std::string graft = std::string(GRAFT_BINARY_DIR) + "/graft";
  if (!fs::exists(graft)) GTEST_SKIP() << graft << " is not built";
  const std::string data = make_dataset("sigint_early_ds", 40);  // a slower first epoch
  const std::string out = scratch_dir() + "/run_sigint_early";
  fs::remove_all(out);
  const std::string err_file = scratch_dir() + "/sigint_early.err";
  const pid_t pid = spawn_train(data, make_backbone(), out, 5, err_file);
  ASSERT_GT(pid, 0);
  // split.json is written just before training starts (the signal handler is in place).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(out + "/split.json"))
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const auto lines = read_lines(out + "/metrics.jsonl");
  ASSERT_TRUE(lines.empty()) << "an epoch finished before the signal; the test needs a slower one";
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/report.html"));
  EXPECT_TRUE(contains(read_all(err_file), "before the first epoch ended"));
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
