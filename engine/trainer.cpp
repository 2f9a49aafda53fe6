#include "engine/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/augment.h"
#include "engine/checkpoint.h"
#include "engine/features.h"
#include "engine/report.h"
#include "io/loader.h"
#include "io/safetensors.h"

namespace graft {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One split's images: paths and labels, plus the cached feature rows when the cache is on.
struct SplitData {
  std::string name;
  std::vector<const DatasetItem*> items;
  float* cache = nullptr;         // [items][feature_dim] on the device, or null
  std::vector<char> cached, bad;  // per item
};

// Everything the loop needs on the device, carved from one arena.
struct Buffers {
  Arena arena;
  float* batch_features = nullptr;  // [batch][dim]
  int32_t* labels = nullptr;        // [batch]
  int32_t* rows = nullptr;          // [batch] cache rows to gather
  float* losses = nullptr;          // [largest split] per-row losses of the current pass
  int64_t* confusion = nullptr;     // [classes][classes]
};

void loader_teardown(struct Job& job);

// Owns every resource of a run; the destructor releases them in order on every exit, an
// exception or an interrupt included.
struct Job {
  explicit Job(const TrainConfig& c) : cfg(c) {}
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  const TrainConfig& cfg;
  Device dev;
  Model backbone;
  Dataset train_ds, val_ds, test_ds;  // val_ds/test_ds used only for --val-data/--test-data
  std::vector<std::string> classes;
  SplitData train, val, test;
  FeatureExtractor fe;
  Loader loader;
  LoaderConfig loader_cfg;
  std::vector<Event> slot_copied;  // per loader slot: its pixels have reached the device
  StageClock clock;
  Head head;
  Arena head_arena;
  Buffers buf;
  bool cache = false;
  int skipped = 0;
};

// Set by SIGINT/SIGTERM; the loop stops after the step in flight, keeping the last checkpoint.
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

void warn(const std::string& msg) {
  std::fprintf(stderr, "graft: warning: %s\n", msg.c_str());
}

void loader_setup(Job& job) {
  LoaderConfig& lc = job.loader_cfg;
  lc.batch = job.cfg.batch_size;
  lc.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  lc.slots = 3;
  lc.pre = job.backbone.preprocess;
  lc.augment = job.cfg.augment ? augment_image : nullptr;
  if (job.dev.is_cuda()) {  // pinned slots: their copies are real asynchronous DMA
    lc.alloc = pinned_alloc;
    lc.release = pinned_free;
  }
  lc.cancel = &g_stop;
  loader_create(job.loader, lc);
  job.slot_copied.resize(lc.slots);
  for (Event& e : job.slot_copied) event_create(job.dev, e);
}

void loader_teardown(Job& job) {
  loader_stop(job.loader);
  if (job.slot_copied.empty()) return;
  synchronize(job.dev);
  for (Event& e : job.slot_copied) event_destroy(e);
  job.slot_copied.clear();
}

Job::~Job() {
  loader_teardown(*this);
  stage_clock_destroy(clock);
  extractor_destroy(fe);
  arena_release(buf.arena);
  arena_release(head_arena);
  destroy_device(dev);
}

// One pass over a split in a given order, one batch at a time: from the feature cache when every
// image's features are there, else decoded by the streaming loader and run through the backbone.
struct Pass {
  SplitData* split = nullptr;
  bool decode = false, augment = false;
  StageClock* clock = nullptr;        // set for training passes
  const LoaderBatch* held = nullptr;  // the slot to hand back once its copy has landed
};

struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Pass pass_begin(Job& job, SplitData& split, const std::vector<int>& order, bool augment,
                uint64_t aug_base) {
  Pass pass;
  pass.split = &split;
  pass.augment = augment;
  pass.decode = augment || split.cache == nullptr;
  for (int p : order) pass.decode = pass.decode || (!split.bad[p] && !split.cached[p]);
  if (!pass.decode) return pass;
  std::vector<LoaderItem> items;
  items.reserve(order.size());
  for (int p : order) {
    // Each image's crop and flip depend only on (seed, epoch, the image), never on timing.
    SplitMix64 key{aug_base ^ (uint64_t(p) * 0xD1B54A32D192ED03ull)};
    items.push_back({&split.items[p]->path, key.next(), p});
  }
  loader_start_epoch(job.loader, std::move(items));
  return pass;
}

void pass_release_held(Job& job, Pass& pass) {
  if (!pass.held) return;
  event_synchronize(job.dev, job.slot_copied[pass.held->index % job.loader_cfg.slots]);
  loader_release(job.loader, pass.held);
  pass.held = nullptr;
}

void pass_end(Job& job, Pass& pass) {
  pass_release_held(job, pass);
}

// The next batch (positions pos[0..n) of the pass's order) into buf.batch_features rows
// [0, valid); returns the valid positions (unreadable images dropped, and remembered as bad).
std::vector<int> pass_next(Job& job, Pass& pass, const int* pos, int n) {
  SplitData& split = *pass.split;
  const int dim = job.backbone.net.feature_dim;
  if (!pass.decode) {
    std::vector<int32_t> rows;
    for (int i = 0; i < n; ++i)
      if (!split.bad[pos[i]]) rows.push_back(pos[i]);
    copy_to_device(job.dev, job.buf.rows, rows.data(), rows.size() * 4);
    op_gather_rows(job.dev, int(rows.size()), dim, split.cache, job.buf.rows,
                   job.buf.batch_features);
    return std::vector<int>(rows.begin(), rows.end());
  }
  const LoaderBatch* b = loader_next(job.loader);
  if (!b) throw Interrupted("interrupted");
  pass_release_held(job, pass);
  // ids keep the pass's order, and errors the order of the files that failed: a file is
  // reported (and counted) the first time only, not again every epoch.
  std::vector<int> valid(b->ids.begin(), b->ids.end());
  for (int i = 0, j = 0, e = 0; i < n; ++i) {
    if (j < int(valid.size()) && valid[j] == pos[i]) {
      ++j;
      continue;
    }
    if (!split.bad[pos[i]]) {
      warn((e < int(b->errors.size()) ? b->errors[e] : split.items[pos[i]]->path) + "; skipped");
      ++job.skipped;
    }
    ++e;
    split.bad[pos[i]] = 1;
  }
  if (b->n_valid > 0) {
    extract_from_slot(job.fe, b->pixels, b->n_valid, job.buf.batch_features,
                      job.slot_copied[b->index % job.loader_cfg.slots], pass.clock);
    if (split.cache && !pass.augment)
      for (size_t i = 0; i < valid.size(); ++i) {
        copy_on_device(job.dev, split.cache + size_t(valid[i]) * dim,
                       job.buf.batch_features + i * dim, size_t(dim) * 4);
        split.cached[valid[i]] = 1;
      }
  }
  pass.held = b;
  return valid;
}

void upload_labels(Job& job, const SplitData& split, const std::vector<int>& pos) {
  std::vector<int32_t> labels;
  for (int p : pos) labels.push_back(split.items[p]->label);
  copy_to_device(job.dev, job.buf.labels, labels.data(), labels.size() * 4);
}

// Loss, accuracy and confusion of the current head on a split (no dropout).
EvalResult evaluate_split(Job& job, SplitData& split) {
  const int classes = int(job.classes.size());
  const int batch = job.cfg.batch_size;
  EvalResult r;
  r.classes = classes;
  r.confusion.assign(size_t(classes) * classes, 0);
  std::vector<float> logits(size_t(batch) * classes), losses(batch);
  double loss_sum = 0;
  std::vector<int> order(split.items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  Pass pass = pass_begin(job, split, order, false, 0);
  for (int start = 0; start < int(split.items.size()); start += batch) {
    const int n = std::min<int>(batch, int(split.items.size()) - start);
    std::vector<int> valid = pass_next(job, pass, order.data() + start, n);
    if (valid.empty()) continue;
    upload_labels(job, split, valid);
    const int m = int(valid.size());
    head_eval(job.dev, job.head, m, job.buf.batch_features, job.buf.labels, job.cfg.label_smoothing,
              job.buf.losses, nullptr);
    copy_to_host(job.dev, logits.data(), job.head.s.logits, size_t(m) * classes * 4);
    copy_to_host(job.dev, losses.data(), job.buf.losses, size_t(m) * 4);
    synchronize(job.dev);
    for (int i = 0; i < m; ++i) {
      const float* row = logits.data() + size_t(i) * classes;
      int best = 0;
      for (int c = 1; c < classes; ++c)
        if (row[c] > row[best]) best = c;
      double z = 0;
      for (int c = 0; c < classes; ++c) z += std::exp(double(row[c]) - row[best]);
      const int truth = split.items[valid[i]]->label;
      r.confusion[size_t(truth) * classes + best] += 1;
      r.item.push_back(valid[i]);
      r.predicted.push_back(best);
      r.prob_predicted.push_back(float(1.0 / z));
      r.prob_true.push_back(float(std::exp(double(row[truth]) - row[best]) / z));
      loss_sum += losses[i];
    }
    r.n += m;
  }
  pass_end(job, pass);
  int64_t correct = 0;
  for (int c = 0; c < classes; ++c) correct += r.confusion[size_t(c) * classes + c];
  r.loss = r.n ? loss_sum / double(r.n) : 0.0;
  r.accuracy = r.n ? double(correct) / double(r.n) : 0.0;
  return r;
}

EpochStages epoch_stages(Job& job, const Pass& pass, int epoch, int64_t images, double wall) {
  const StageTotals t = stage_clock_collect(job.clock);
  const LoaderStats ls = loader_stats(job.loader);
  EpochStages e;
  e.epoch = epoch;
  e.images = images;
  e.wall = wall;
  e.from_cache = !pass.decode;
  if (pass.decode) {
    e.decode_cpu = ls.decode_s;
    e.decode_threads = job.loader_cfg.threads;
    e.wait_for_batch = ls.consumer_wait_s;
    e.wait_for_slot = ls.slot_wait_s;
  }
  e.h2d_copy = t.seconds[size_t(Stage::copy)];
  e.backbone = t.seconds[size_t(Stage::backbone)];
  e.head = t.seconds[size_t(Stage::head)];
  e.optimiser = t.seconds[size_t(Stage::optimiser)];
  e.device_idle_fraction = wall > 0 ? std::max(0.0, 1.0 - t.compute_busy / wall) : 0.0;
  return e;
}

std::string stages_json(const EpochStages& e) {
  nlohmann::ordered_json j = {{"epoch", e.epoch},
                              {"images", e.images},
                              {"seconds", e.wall},
                              {"from_cache", e.from_cache},
                              {"decode_cpu_seconds", e.decode_cpu},
                              {"decode_threads", e.decode_threads},
                              {"wait_for_batch", e.wait_for_batch},
                              {"wait_for_slot", e.wait_for_slot},
                              {"h2d_copy", e.h2d_copy},
                              {"backbone", e.backbone},
                              {"head", e.head},
                              {"optimiser", e.optimiser},
                              {"device_idle_fraction", e.device_idle_fraction}};
  return j.dump();
}

float learning_rate_at(const TrainConfig& cfg, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return cfg.learning_rate * float(step + 1) / float(warmup);
  if (cfg.lr_schedule == "cosine" && total > warmup) {
    const double t = double(step - warmup) / double(total - warmup);
    return float(0.5 * cfg.learning_rate * (1.0 + std::cos(M_PI * t)));
  }
  return cfg.learning_rate;
}

void progress_bar(int epoch, int epochs, int step, int steps, double elapsed) {
  const int width = 30;
  const int filled = steps ? step * width / steps : width;
  const double eta = step ? elapsed / step * (steps - step) : 0;
  std::fprintf(stderr, "\repoch %d/%d [%.*s%*s] %d/%d  %.1fs  ETA %.1fs ", epoch, epochs, filled,
               "==============================", width - filled, "", step, steps, elapsed, eta);
  std::fflush(stderr);
}

// The trained model as one file: the backbone's tensors exactly as they came, plus the head,
// with labels and preprocessing in the metadata.
void export_model(Job& job, const std::string& path, const Dense& hidden, const Dense& out) {
  WeightFile src = open_weights(job.cfg.backbone);
  std::vector<TensorToWrite> tensors;
  for (const TensorView& t : src.tensors) {
    if (t.name == "fc.weight" || t.name == "fc.bias" || t.name.rfind("hidden.", 0) == 0) continue;
    tensors.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  }
  if (hidden.out) {
    tensors.push_back({"hidden.weight",
                       DType::f32,
                       {hidden.out, hidden.in},
                       hidden.w.data(),
                       hidden.w.size() * 4});
    tensors.push_back(
        {"hidden.bias", DType::f32, {hidden.out}, hidden.b.data(), hidden.b.size() * 4});
  }
  tensors.push_back({"fc.weight", DType::f32, {out.out, out.in}, out.w.data(), out.w.size() * 4});
  tensors.push_back({"fc.bias", DType::f32, {out.out}, out.b.data(), out.b.size() * 4});
  auto meta = src.metadata;
  meta["labels"] = nlohmann::json(job.classes).dump();
  meta["num_classes"] = std::to_string(job.classes.size());
  meta["trained_with"] = "graft train";
  meta["label_smoothing"] = std::to_string(job.cfg.label_smoothing);
  meta["head"] = hidden.out ? "dropout,dense(" + std::to_string(hidden.out) + "),relu,dropout,dense"
                            : "dropout,dense";
  write_weights(path, tensors, meta);
}

void setup_splits(Job& job) {
  const TrainConfig& cfg = job.cfg;
  job.train_ds = scan_dataset(cfg.data);
  job.classes = job.train_ds.classes;
  for (const auto& s : job.train_ds.skipped) {
    warn(s);
    ++job.skipped;
  }
  const double val_frac = cfg.val_data.empty() ? cfg.val_split : 0.0;
  const double test_frac = cfg.test_data.empty() ? cfg.test_split : 0.0;
  Split split = split_dataset(job.train_ds, val_frac, test_frac, cfg.seed);
  for (int i : split.train) job.train.items.push_back(&job.train_ds.items[i]);
  for (int i : split.val) job.val.items.push_back(&job.train_ds.items[i]);
  for (int i : split.test) job.test.items.push_back(&job.train_ds.items[i]);
  auto add_folder = [&](const std::string& dir, Dataset& ds, SplitData& sd) {
    if (dir.empty()) return;
    ds = scan_dataset(dir, &job.classes);
    for (const auto& s : ds.skipped) warn(s);
    for (const auto& it : ds.items) sd.items.push_back(&it);
  };
  add_folder(cfg.val_data, job.val_ds, job.val);
  add_folder(cfg.test_data, job.test_ds, job.test);
}

// RUN_DIR/split.json names every image of every split, so a run can be audited and repeated.
void write_split(const Job& job) {
  const TrainConfig& cfg = job.cfg;
  nlohmann::json j;
  j["seed"] = cfg.seed;
  j["classes"] = job.classes;
  for (const SplitData* s : {&job.train, &job.val, &job.test}) {
    nlohmann::json a = nlohmann::json::array();
    for (const DatasetItem* it : s->items) a.push_back({{"path", it->path}, {"label", it->label}});
    j[s->name] = a;
  }
  std::ofstream(cfg.out_dir + "/split.json")
      << j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace

std::string eval_json(const std::string& split, const EvalResult& r,
                      const std::vector<std::string>& classes) {
  nlohmann::ordered_json j;
  j["split"] = split;
  j["loss"] = r.loss;
  j["accuracy"] = r.accuracy;
  nlohmann::ordered_json per = nlohmann::ordered_json::object();
  const int c = r.classes;
  for (int k = 0; k < c; ++k) {
    int64_t tp = r.confusion[size_t(k) * c + k], row = 0, col = 0;
    for (int o = 0; o < c; ++o) {
      row += r.confusion[size_t(k) * c + o];
      col += r.confusion[size_t(o) * c + k];
    }
    const double precision = col ? double(tp) / col : 0.0, recall = row ? double(tp) / row : 0.0;
    const double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
    per[classes[k]] = {{"precision", precision}, {"recall", recall}, {"f1", f1}, {"support", row}};
  }
  j["per_class"] = per;
  nlohmann::ordered_json m = nlohmann::ordered_json::array();
  for (int k = 0; k < c; ++k)
    m.push_back(std::vector<int64_t>(r.confusion.begin() + size_t(k) * c,
                                     r.confusion.begin() + size_t(k + 1) * c));
  j["confusion"] = m;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void save_config(const TrainConfig& c, const std::string& path) {
  nlohmann::ordered_json j = {{"data", c.data},
                              {"val_data", c.val_data},
                              {"test_data", c.test_data},
                              {"backbone", c.backbone},
                              {"out_dir", c.out_dir},
                              {"device", c.device},
                              {"epochs", c.epochs},
                              {"batch_size", c.batch_size},
                              {"hidden", c.hidden},
                              {"early_stop", c.early_stop},
                              {"learning_rate", c.learning_rate},
                              {"dropout", c.dropout},
                              {"label_smoothing", c.label_smoothing},
                              {"lr_schedule", c.lr_schedule},
                              {"warmup_epochs", c.warmup_epochs},
                              {"optimizer", c.opt.optimizer},
                              {"momentum", c.opt.momentum},
                              {"l2", c.opt.l2},
                              {"weight_decay", c.opt.weight_decay},
                              {"val_split", c.val_split},
                              {"test_split", c.test_split},
                              {"seed", c.seed},
                              {"cache", c.cache},
                              {"augment", c.augment}};
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << j.dump(1) << "\n";
  fs::rename(tmp, path);
}

TrainConfig load_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot be read (is this a graft run folder?)");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::runtime_error(path + ": not a JSON object");
  TrainConfig c;
  try {
    c.data = j.at("data"), c.val_data = j.at("val_data"), c.test_data = j.at("test_data");
    c.backbone = j.at("backbone"), c.out_dir = j.at("out_dir"), c.device = j.at("device");
    c.epochs = j.at("epochs"), c.batch_size = j.at("batch_size"), c.hidden = j.at("hidden");
    c.early_stop = j.at("early_stop"), c.learning_rate = j.at("learning_rate");
    c.dropout = j.at("dropout"), c.label_smoothing = j.at("label_smoothing");
    c.lr_schedule = j.at("lr_schedule"), c.warmup_epochs = j.at("warmup_epochs");
    c.opt.optimizer = j.at("optimizer"), c.opt.momentum = j.at("momentum");
    c.opt.l2 = j.at("l2"), c.opt.weight_decay = j.at("weight_decay");
    c.val_split = j.at("val_split"), c.test_split = j.at("test_split"), c.seed = j.at("seed");
    c.cache = j.at("cache"), c.augment = j.at("augment");
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  return c;
}

namespace {

TrainResult train_impl(const TrainConfig& cfg, bool resume) {
  if (cfg.epochs < 1 || cfg.batch_size < 1)
    throw std::invalid_argument("--epochs and --batch-size must be >= 1");
  if (!(cfg.dropout >= 0.f && cfg.dropout < 1.f))
    throw std::invalid_argument("--dropout must be in [0, 1)");
  if (!(cfg.label_smoothing >= 0.f && cfg.label_smoothing < 1.f))
    throw std::invalid_argument("--label-smoothing must be in [0, 1)");
  if (cfg.opt.optimizer != "sgd" && cfg.opt.optimizer != "adamw")
    throw std::invalid_argument("--optimizer must be sgd or adamw");
  if (cfg.lr_schedule != "constant" && cfg.lr_schedule != "cosine")
    throw std::invalid_argument("--lr-schedule must be constant or cosine");
  if (cfg.cache != "auto" && cfg.cache != "on" && cfg.cache != "off")
    throw std::invalid_argument("--cache-features must be auto, on or off");
  if (cfg.cache == "on" && cfg.augment)
    throw std::invalid_argument("--cache-features on cannot be combined with --augment");

  Job job(cfg);
  job.train.name = "train";
  job.val.name = "val";
  job.test.name = "test";
  // Everything that can reject the input runs before the run folder gets its first file.
  job.backbone = load_model(cfg.backbone);
  setup_splits(job);
  fs::create_directories(cfg.out_dir);
  if (!resume) save_config(cfg, cfg.out_dir + "/config.json");
  write_split(job);
  const int classes = int(job.classes.size());
  const int dim = job.backbone.net.feature_dim;
  const int batch = cfg.batch_size;

  job.dev = make_device(cfg.device);
  // The cache holds one feature vector per image on the device; a data set too large for half of
  // the free memory streams every epoch instead.
  const size_t cache_bytes =
      (job.train.items.size() + job.val.items.size() + job.test.items.size()) * dim * 4;
  const bool cache_fits = cache_bytes < device_free_memory(job.dev) / 2;
  job.cache = cfg.cache == "on" || (cfg.cache == "auto" && !cfg.augment && cache_fits);
  const char* why = cfg.cache != "auto" ? ""
                    : cfg.augment       ? " (auto: augmentation changes every epoch's features)"
                    : !cache_fits       ? " (auto: the features would not fit in memory)"
                                        : " (auto: frozen backbone, no augmentation)";
  std::fprintf(stderr,
               "graft: %s on %s: %zu classes, %zu train / %zu val / %zu test images; feature "
               "cache %s%s\n",
               job.backbone.net.arch.c_str(), device_name(job.dev).c_str(), job.classes.size(),
               job.train.items.size(), job.val.items.size(), job.test.items.size(),
               job.cache ? "on" : "off", why);

  extractor_create(job.fe, job.dev, job.backbone, batch);
  loader_setup(job);
  stage_clock_create(job.clock, job.dev, true);
  const size_t largest = std::max(
      {job.train.items.size(), job.val.items.size(), job.test.items.size(), size_t(batch)});
  size_t bytes = size_t(batch) * dim * 4 + size_t(batch) * 8 + largest * 4 +
                 size_t(classes) * classes * 8 + 6 * 64;
  if (job.cache) bytes += cache_bytes + 3 * 64;
  arena_reserve(job.buf.arena, job.dev, bytes);
  job.buf.batch_features = arena_alloc<float>(job.buf.arena, size_t(batch) * dim);
  job.buf.labels = arena_alloc<int32_t>(job.buf.arena, batch);
  job.buf.rows = arena_alloc<int32_t>(job.buf.arena, batch);
  job.buf.losses = arena_alloc<float>(job.buf.arena, largest);
  job.buf.confusion = arena_alloc<int64_t>(job.buf.arena, size_t(classes) * classes);
  for (SplitData* s : {&job.train, &job.val, &job.test}) {
    s->cached.assign(s->items.size(), 0);
    s->bad.assign(s->items.size(), 0);
    if (job.cache) s->cache = arena_alloc<float>(job.buf.arena, s->items.size() * dim);
  }
  HeadShape hs{dim, cfg.hidden, classes};
  arena_reserve(job.head_arena, job.dev, head_arena_bytes(hs, batch));
  head_create(job.head, job.head_arena, hs, batch, cfg.seed);

  const std::string metrics_path = cfg.out_dir + "/metrics.jsonl";
  const std::string checkpoint_path = cfg.out_dir + "/checkpoint.safetensors";
  Checkpoint ck;
  if (resume && fs::exists(checkpoint_path)) {
    ck = read_checkpoint(checkpoint_path, hs);
    head_restore(job.dev, job.head, ck.state, ck.head_step);
    truncate_metrics(metrics_path, ck.epoch);
    std::fprintf(stderr, "graft: resuming %s after epoch %d\n", cfg.out_dir.c_str(), ck.epoch);
  } else if (resume) {
    std::fprintf(stderr, "graft: %s has no checkpoint yet; starting from epoch 1\n",
                 cfg.out_dir.c_str());
  }
  std::ofstream metrics(metrics_path, ck.epoch > 0 ? std::ios::app : std::ios::trunc);
  std::ofstream stages_file(cfg.out_dir + "/stages.jsonl",
                            ck.epoch > 0 ? std::ios::app : std::ios::trunc);
  const int ntrain = int(job.train.items.size());
  const int steps = (ntrain + batch - 1) / batch;
  const int64_t total_steps = int64_t(steps) * cfg.epochs;
  const int64_t warmup_steps = int64_t(std::lround(cfg.warmup_epochs * steps));
  const bool tty = cfg.progress && isatty(fileno(stderr));

  TrainResult result;
  result.cache_used = job.cache;
  result.model_path = cfg.out_dir + "/model.safetensors";
  Dense best_hidden = ck.best_hidden, best_out = ck.best_out;
  double best_val_loss = ck.best_val_loss;
  int since_best = ck.since_best, overfit_epochs = ck.overfit_epochs;
  bool overfit_warned = ck.overfit_warned;
  if (ck.epoch > 0) {  // the finished epochs' metrics, for the report
    std::ifstream in(metrics_path);
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      EpochMetrics e;
      e.epoch = j["epoch"], e.loss = j["loss"], e.accuracy = j["accuracy"];
      e.has_val = !j["val_loss"].is_null();
      if (e.has_val) e.val_loss = j["val_loss"], e.val_accuracy = j["val_accuracy"];
      e.seconds = j["seconds"], e.images_per_second = j["images_per_second"];
      result.epochs.push_back(e);
    }
  }
  const bool stopped_early = cfg.early_stop > 0 && since_best >= cfg.early_stop;

  for (int epoch = ck.epoch + 1; epoch <= cfg.epochs && !stopped_early; ++epoch) {
    const auto t0 = Clock::now();
    // The epoch's order depends only on (seed, epoch).
    std::vector<int> order(ntrain);
    for (int i = 0; i < ntrain; ++i) order[i] = i;
    SplitMix64 g{cfg.seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch)};
    shuffle_with(order, g);
    fill_zero(job.dev, job.buf.confusion, size_t(classes) * classes * 8);
    int offset = 0;
    Pass pass = pass_begin(job, job.train, order, cfg.augment, cfg.seed ^ (uint64_t(epoch) << 40));
    pass.clock = &job.clock;
    stage_clock_reset(job.clock);
    for (int s = 0; s < steps; ++s) {
      if (g_stop.load()) throw Interrupted("interrupted");
      const int n = std::min(batch, ntrain - s * batch);
      std::vector<int> valid = pass_next(job, pass, order.data() + s * batch, n);
      if (!valid.empty()) {
        upload_labels(job, job.train, valid);
        const int64_t step = int64_t(epoch - 1) * steps + s;
        head_train_step(job.dev, job.head, cfg.opt, int(valid.size()), job.buf.batch_features,
                        job.buf.labels, cfg.dropout, cfg.label_smoothing,
                        learning_rate_at(cfg, step, total_steps, warmup_steps), cfg.seed,
                        uint64_t(step), job.buf.losses + offset, job.buf.confusion, &job.clock);
        offset += int(valid.size());
      }
      if (tty) progress_bar(epoch, cfg.epochs, s + 1, steps, seconds_since(t0));
    }
    pass_end(job, pass);
    const EpochStages stages = epoch_stages(job, pass, epoch, offset, seconds_since(t0));
    result.stages.push_back(stages);
    stages_file << stages_json(stages) << "\n" << std::flush;
    std::vector<float> losses(offset);
    std::vector<int64_t> conf(size_t(classes) * classes);
    copy_to_host(job.dev, losses.data(), job.buf.losses, size_t(offset) * 4);
    copy_to_host(job.dev, conf.data(), job.buf.confusion, conf.size() * 8);
    synchronize(job.dev);
    const double train_seconds = seconds_since(t0);
    if (offset == 0) throw DatasetError(cfg.data + ": no training image could be decoded");

    EpochMetrics em;
    em.epoch = epoch;
    double loss_sum = 0;
    for (float l : losses) loss_sum += l;  // fixed order: deterministic
    int64_t correct = 0;
    for (int c = 0; c < classes; ++c) correct += conf[size_t(c) * classes + c];
    em.loss = loss_sum / offset;
    em.accuracy = double(correct) / offset;
    em.images_per_second = offset / std::max(train_seconds, 1e-9);
    if (!job.val.items.empty()) {
      EvalResult v = evaluate_split(job, job.val);
      em.val_loss = v.loss;
      em.val_accuracy = v.accuracy;
      em.has_val = true;
    }
    em.seconds = seconds_since(t0);
    result.epochs.push_back(em);

    nlohmann::ordered_json line = {
        {"epoch", epoch},
        {"loss", em.loss},
        {"accuracy", em.accuracy},
        {"val_loss", em.has_val ? nlohmann::ordered_json(em.val_loss) : nlohmann::ordered_json()},
        {"val_accuracy",
         em.has_val ? nlohmann::ordered_json(em.val_accuracy) : nlohmann::ordered_json()},
        {"seconds", em.seconds},
        {"images_per_second", em.images_per_second}};
    metrics << line.dump() << "\n" << std::flush;
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::printf("epoch %d/%d  loss %.4f  accuracy %.4f", epoch, cfg.epochs, em.loss, em.accuracy);
    if (em.has_val) std::printf("  val_loss %.4f  val_accuracy %.4f", em.val_loss, em.val_accuracy);
    std::printf("  %.1fs  %.0f img/s\n", em.seconds, em.images_per_second);
    std::fflush(stdout);

    // Overfitting shows as training accuracy staying well above validation accuracy.
    if (em.has_val && em.accuracy - em.val_accuracy > 0.15)
      ++overfit_epochs;
    else
      overfit_epochs = 0;
    if (overfit_epochs >= 2 && !overfit_warned) {
      warn(
          "training accuracy is well above validation accuracy (overfitting); consider "
          "--augment, more --dropout, fewer --epochs or --early-stop");
      overfit_warned = true;
    }

    // Keep the best (by val_loss) head when early stopping, else the latest.
    Dense hidden, out;
    head_download(job.dev, job.head, &hidden, &out);
    const bool improved = !em.has_val || em.val_loss < best_val_loss;
    if (improved) {
      best_val_loss = em.has_val ? em.val_loss : best_val_loss;
      since_best = 0;
    } else {
      ++since_best;
    }
    if (cfg.early_stop == 0 || improved) {
      best_hidden = hidden;
      best_out = out;
    }
    // Written last: a run killed before this point redoes the epoch, after it continues.
    Checkpoint now;
    now.epoch = epoch;
    now.head_step = job.head.step;
    now.best_val_loss = best_val_loss;
    now.since_best = since_best;
    now.overfit_epochs = overfit_epochs;
    now.overfit_warned = overfit_warned;
    now.state = head_state(job.dev, job.head);
    now.best_hidden = best_hidden;
    now.best_out = best_out;
    write_checkpoint(checkpoint_path, now);
    if (cfg.early_stop > 0 && since_best >= cfg.early_stop) {
      std::fprintf(stderr,
                   "graft: early stop after epoch %d: val_loss has not improved for %d epochs; "
                   "keeping epoch %d\n",
                   epoch, cfg.early_stop, epoch - since_best);
      break;
    }
  }

  // The model file is written once, from the kept head; until then the per-epoch checkpoint
  // (small: the head and its optimiser state) is what protects finished work.
  export_model(job, result.model_path, best_hidden, best_out);
  head_upload(job.dev, job.head, best_hidden, best_out);
  if (!job.test.items.empty()) {
    result.test = evaluate_split(job, job.test);
    result.has_test = true;
    const std::string line = eval_json("test", result.test, job.classes);
    metrics << line << "\n" << std::flush;
    std::printf("%s\n", line.c_str());
  }
  result.skipped_images = job.skipped;

  ReportData rd;
  rd.title = cfg.data;
  rd.classes = job.classes;
  for (const auto& e : result.epochs)
    rd.epochs.push_back({e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy, e.seconds,
                         e.images_per_second, e.has_val});
  if (result.has_test) {
    rd.confusion = result.test.confusion;
    rd.test_loss = result.test.loss;
    rd.test_accuracy = result.test.accuracy;
    std::vector<size_t> wrong;
    for (size_t i = 0; i < result.test.item.size(); ++i)
      if (result.test.predicted[i] != job.test.items[result.test.item[i]]->label)
        wrong.push_back(i);
    std::stable_sort(wrong.begin(), wrong.end(), [&](size_t a, size_t b) {
      return result.test.prob_predicted[a] > result.test.prob_predicted[b];
    });
    for (size_t k = 0; k < wrong.size() && k < 24; ++k) {
      const size_t i = wrong[k];
      const DatasetItem* it = job.test.items[result.test.item[i]];
      rd.worst.push_back({it->path, it->label, result.test.predicted[i],
                          result.test.prob_predicted[i], result.test.prob_true[i]});
    }
  }
  rd.notes.push_back(std::string("device: ") + device_name(job.dev));
  rd.notes.push_back(std::string("feature cache: ") + (job.cache ? "on" : "off"));
  rd.notes.push_back("backbone: " + job.backbone.net.arch + " (" + cfg.backbone + ")");
  if (job.skipped) rd.notes.push_back(std::to_string(job.skipped) + " files skipped (see the log)");
  result.report_path = cfg.out_dir + "/report.html";
  write_report(result.report_path, rd);

  if (job.skipped) std::fprintf(stderr, "graft: %d files skipped\n", job.skipped);
  std::fprintf(stderr, "graft: model %s\ngraft: report %s\n", result.model_path.c_str(),
               result.report_path.c_str());
  return result;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume) {
  // Ctrl-C or a TERM stops after the step in flight: the loader shuts down, every resource is
  // released, and the run folder keeps its last finished epoch for --resume.
  g_stop.store(false);
  auto old_int = std::signal(SIGINT, on_stop_signal);
  auto old_term = std::signal(SIGTERM, on_stop_signal);
  struct RestoreSignals {
    decltype(old_int) i, t;
    ~RestoreSignals() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore{old_int, old_term};
  try {
    return train_impl(cfg, resume);
  } catch (const Interrupted&) {
    throw std::runtime_error("interrupted; " + cfg.out_dir +
                             " keeps every finished epoch: continue with graft train --resume " +
                             cfg.out_dir);
  }
}

EvalResult evaluate_folder(const std::string& model_path, const std::string& data_dir,
                           const std::string& device, int batch_size,
                           std::vector<std::string>* classes, int* skipped) {
  TrainConfig cfg;
  cfg.batch_size = batch_size;
  Job job(cfg);
  job.backbone = load_model(model_path);
  if (job.backbone.fc.out == 0)
    throw std::runtime_error(model_path + ": holds a backbone without a classifier");
  job.classes = job.backbone.labels;
  if (job.classes.empty())
    for (int i = 0; i < job.backbone.fc.out; ++i) job.classes.push_back(std::to_string(i));
  job.test_ds = scan_dataset(data_dir, &job.classes);
  for (const auto& s : job.test_ds.skipped) warn(s);
  job.skipped = int(job.test_ds.skipped.size());
  for (const auto& it : job.test_ds.items) job.test.items.push_back(&it);
  job.test.cached.assign(job.test.items.size(), 0);
  job.test.bad.assign(job.test.items.size(), 0);

  job.dev = make_device(device);
  const int dim = job.backbone.net.feature_dim, n_classes = int(job.classes.size());
  extractor_create(job.fe, job.dev, job.backbone, batch_size);
  loader_setup(job);
  arena_reserve(job.buf.arena, job.dev, size_t(batch_size) * (dim * 4 + 12) + 4 * 64);
  job.buf.batch_features = arena_alloc<float>(job.buf.arena, size_t(batch_size) * dim);
  job.buf.labels = arena_alloc<int32_t>(job.buf.arena, batch_size);
  job.buf.rows = arena_alloc<int32_t>(job.buf.arena, batch_size);
  job.buf.losses = arena_alloc<float>(job.buf.arena, batch_size);
  HeadShape hs{dim, job.backbone.hidden.out, n_classes};
  arena_reserve(job.head_arena, job.dev, head_arena_bytes(hs, batch_size));
  head_create(job.head, job.head_arena, hs, batch_size, 0);
  head_upload(job.dev, job.head, job.backbone.hidden, job.backbone.fc);
  // Report the loss the model was trained with (label smoothing is in its metadata).
  if (const auto it = job.backbone.metadata.find("label_smoothing");
      it != job.backbone.metadata.end()) {
    char* end = nullptr;
    const float v = std::strtof(it->second.c_str(), &end);
    if (*end == '\0' && v >= 0.f && v < 1.f) cfg.label_smoothing = v;
  }
  EvalResult r = evaluate_split(job, job.test);
  *skipped = job.skipped;
  *classes = job.classes;
  return r;
}

}  // namespace graft
