#include "engine/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "engine/augment.h"
#include "engine/checkpoint.h"
#include "engine/fine_tune.h"
#include "engine/job.h"
#include "engine/network.h"
#include "engine/report.h"
#include "engine/run_folder.h"
#include "engine/run_records.h"
#include "io/loader.h"
#include "io/safetensors.h"

namespace graft {

namespace fs = std::filesystem;

namespace {

// SIGINT/SIGTERM: the loop stops after the step in flight, keeping the last checkpoint.
extern "C" void on_stop_signal(int) {
  stop_requested().store(true);
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
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
// The trained model as one file: the backbone's tensors as they came, except the fine-tuned
// convs' (written from `backbone`, the kept trained slice: engine/fine_tune.h), plus the head,
// with labels and preprocessing in the metadata.
void write_model_file(Job& job, const std::string& path, const Dense& hidden, const Dense& out,
                  const std::vector<float>& backbone) {
  WeightFile src = open_weights(job.cfg.backbone);
  const std::vector<OwnedTensor> trained =
      backbone.empty() ? std::vector<OwnedTensor>{}
                       : trained_backbone_tensors(job.backbone, job.net.bp.first_op,
                                                  job.net.bp.param_begin, backbone);
  std::set<std::string> replaced;
  for (const OwnedTensor& t : trained) replaced.insert(t.name);
  for (const NetOp& op : job.backbone.net.ops)  // folded into the trained bias
    if (op.kind == OpKind::conv && replaced.count(op.conv.name + ".conv.weight"))
      replaced.insert(op.conv.name + ".conv.bias");
  std::vector<TensorToWrite> tensors;
  for (const TensorView& t : src.tensors) {
    if (t.name == "fc.weight" || t.name == "fc.bias" || t.name.rfind("hidden.", 0) == 0) continue;
    if (replaced.count(t.name)) continue;
    tensors.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  }
  for (const OwnedTensor& t : trained)
    tensors.push_back({t.name, DType::f32, t.shape, t.data.data(), t.data.size() * 4});
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
  meta["label_smoothing"] = shortest(job.cfg.label_smoothing);
  meta["head"] = hidden.out ? "dropout,dense(" + std::to_string(hidden.out) + "),relu,dropout,dense"
                            : "dropout,dense";
  if (!backbone.empty())
    meta["fine_tuned"] = job.cfg.fine_tune + " blocks (batch norm folded: identity statistics)";
  write_weights(path, tensors, meta);
}

void setup_splits(Job& job) {
  const TrainConfig& cfg = job.cfg;
  job.train_ds = scan_dataset(cfg.data);
  job.classes = job.train_ds.classes;
  auto count_skipped = [&](const Dataset& ds) {
    for (const auto& s : ds.skipped) warn(s);
    job.skipped += int(ds.skipped.size()) - ds.skipped_folders;
    job.skipped_folders += ds.skipped_folders;
  };
  count_skipped(job.train_ds);
  const double val_frac = cfg.val_data.empty() ? cfg.val_split : 0.0;
  const double test_frac = cfg.test_data.empty() ? cfg.test_split : 0.0;
  Split split = split_dataset(job.train_ds, val_frac, test_frac, cfg.seed);
  for (int i : split.train) job.train.items.push_back(&job.train_ds.items[i]);
  for (int i : split.val) job.val.items.push_back(&job.train_ds.items[i]);
  for (int i : split.test) job.test.items.push_back(&job.train_ds.items[i]);
  auto add_folder = [&](const std::string& dir, Dataset& ds, SplitData& sd) {
    if (dir.empty()) return;
    ds = scan_dataset(dir, &job.classes);
    count_skipped(ds);
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
  write_file_atomic(cfg.out_dir + "/split.json",
                    j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

// ---- Device, buffers and head ------------------------------------------------------------------

void setup_device(Job& job) {
  const TrainConfig& cfg = job.cfg;
  const int classes = int(job.classes.size());
  const int dim = job.backbone.net.feature_dim;
  const int batch = cfg.batch_size;
  job.dev = make_device(cfg.device);
  const HeadShape hs{dim, cfg.hidden, classes};
  const float backbone_lr = cfg.backbone_lr > 0 ? cfg.backbone_lr : cfg.learning_rate / 10;
  network_create(job.net, job.dev, job.backbone, hs, batch, cfg.seed, &cfg.opt,
                 FineTune{job.fine_tune, backbone_lr / cfg.learning_rate});
  // The cache holds, per image, what the frozen part of the network computes: the feature vector,
  // or with --fine-tune the activation entering the first trained block. A data set too large for
  // half of the memory left streams every epoch instead.
  job.cache_row = network_cache_row(job.net);
  const size_t cache_bytes =
      (job.train.items.size() + job.val.items.size() + job.test.items.size()) * job.cache_row * 4;
  const bool cache_fits = job.cache_row > 0 && cache_bytes < device_free_memory(job.dev) / 2;
  if (cfg.cache == "on" && job.cache_row == 0)
    throw std::invalid_argument(
        "--cache-features on: more than one activation enters the trained "
        "blocks, which the cache cannot hold; use auto or off");
  job.cache = cfg.cache == "on" || (cfg.cache == "auto" && !cfg.augment && cache_fits);
  const std::string held = job.fine_tune ? "the activation entering the first trained block (" +
                                               std::to_string(job.cache_row) + " floats a photo)"
                                         : "the features";
  const std::string why = cfg.cache != "auto" ? ""
                          : cfg.augment       ? " (auto: augmentation changes every epoch's input)"
                          : job.cache_row == 0
                              ? " (auto: more than one activation enters the trained blocks)"
                          : !cache_fits ? " (auto: " + held + " would not fit in memory)"
                                        : " (auto: " + held + ", computed once)";
  std::fprintf(stderr,
               "graft: %s on %s: %zu classes, %zu train / %zu val / %zu test images; feature "
               "cache %s%s\n",
               job.backbone.net.arch.c_str(), device_name(job.dev).c_str(), job.classes.size(),
               job.train.items.size(), job.val.items.size(), job.test.items.size(),
               job.cache ? "on" : "off", why.c_str());
  loader_setup(job);
  stage_clock_create(job.clock, job.dev, true);
  const size_t largest = std::max(
      {job.train.items.size(), job.val.items.size(), job.test.items.size(), size_t(batch)});
  size_t bytes = size_t(batch) * 8 + largest * 4 + size_t(classes) * classes * 8 + 6 * 64;
  if (job.cache) bytes += cache_bytes + 3 * 64;
  arena_reserve(job.buf.arena, job.dev, bytes);
  job.buf.labels = arena_alloc<int32_t>(job.buf.arena, batch);
  job.buf.rows = arena_alloc<int32_t>(job.buf.arena, batch);
  job.buf.losses = arena_alloc<float>(job.buf.arena, largest);
  job.buf.confusion = arena_alloc<int64_t>(job.buf.arena, size_t(classes) * classes);
  for (SplitData* s : {&job.train, &job.val, &job.test}) {
    s->cached.assign(s->items.size(), 0);
    s->bad.assign(s->items.size(), 0);
    if (job.cache) s->cache = arena_alloc<float>(job.buf.arena, s->items.size() * job.cache_row);
  }
}

// ---- Epochs ------------------------------------------------------------------------------------

// What carries from one epoch to the next, and into the checkpoint.
struct RunState {
  int epoch = 0;       // finished epochs
  int kept_epoch = 0;  // the epoch of best_hidden/best_out
  Dense best_hidden, best_out;
  std::vector<float> best_backbone;  // the trained slice at kept_epoch (fine-tuning only)
  double best_val_loss = std::numeric_limits<double>::infinity();
  int since_best = 0, overfit_epochs = 0;
  bool overfit_warned = false, stopped_early = false;
  int steps = 0;  // per epoch
  int64_t total_steps = 0, warmup_steps = 0;
  bool tty = false;
};

// The state after the checkpoint's epochs (or a fresh one), and those epochs' metrics for the
// report.
RunState start_or_resume(Job& job, bool resume, TrainResult& result) {
  const TrainConfig& cfg = job.cfg;
  const std::string metrics_path = run_file(cfg, "metrics.jsonl");
  const std::string checkpoint_path = run_file(cfg, "checkpoint.safetensors");
  RunState st;
  if (resume && fs::exists(checkpoint_path)) {
    const Checkpoint ck = read_checkpoint(checkpoint_path, job.net.head.shape);
    head_restore(job.dev, job.net.head, ck.state, ck.head_step);
    try {
      backbone_upload(job.dev, job.net, BackboneState{ck.backbone, ck.backbone_m, ck.backbone_v});
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(checkpoint_path + ": " + e.what());
    }
    st.best_backbone = ck.best_backbone;
    truncate_metrics(metrics_path, ck.epoch);
    std::fprintf(stderr, "graft: resuming %s after epoch %d\n", cfg.out_dir.c_str(), ck.epoch);
    st.epoch = ck.epoch;
    st.best_hidden = ck.best_hidden, st.best_out = ck.best_out;
    st.best_val_loss = ck.best_val_loss;
    st.since_best = ck.since_best, st.overfit_epochs = ck.overfit_epochs;
    st.overfit_warned = ck.overfit_warned;
    // The kept head is the last epoch's unless early stopping kept an earlier, better one.
    st.kept_epoch = cfg.early_stop > 0 ? ck.epoch - ck.since_best : ck.epoch;
    st.stopped_early =
        cfg.early_stop > 0 && ck.since_best >= cfg.early_stop && ck.epoch < cfg.epochs;
    if (st.stopped_early)
      std::fprintf(stderr,
                   "graft: %s stopped early after epoch %d (--early-stop %d): nothing to "
                   "train\n",
                   cfg.out_dir.c_str(), ck.epoch, cfg.early_stop);
    std::ifstream in(metrics_path);
    for (std::string line; std::getline(in, line);)
      result.epochs.push_back(metrics_from_json(nlohmann::json::parse(line)));
  } else if (resume) {
    std::fprintf(stderr, "graft: %s has no checkpoint yet; starting from epoch 1\n",
                 cfg.out_dir.c_str());
  }
  if (st.epoch == 0) {  // a fresh metrics and stages file
    write_file_atomic(metrics_path, "");
    write_file_atomic(run_file(cfg, "stages.jsonl"), "");
  }
  const int ntrain = int(job.train.items.size());
  st.steps = (ntrain + cfg.batch_size - 1) / cfg.batch_size;
  st.total_steps = int64_t(st.steps) * cfg.epochs;
  st.warmup_steps = int64_t(std::lround(cfg.warmup_epochs * st.steps));
  st.tty = cfg.progress && isatty(fileno(stderr));
  return st;
}

// One pass over the training split in the epoch's order: loss, accuracy and throughput.
EpochMetrics train_pass(Job& job, const RunState& st, int epoch, TrainResult& result) {
  const TrainConfig& cfg = job.cfg;
  const int classes = int(job.classes.size()), batch = cfg.batch_size;
  const int ntrain = int(job.train.items.size());
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
  for (int s = 0; s < st.steps; ++s) {
    if (stop_requested().load()) throw Interrupted("interrupted");
    const int n = std::min(batch, ntrain - s * batch);
    NetworkInput in;
    std::vector<int> valid = pass_next(job, pass, order.data() + s * batch, n, &in);
    if (!valid.empty()) {
      upload_labels(job, job.train, valid);
      in.labels = job.buf.labels;
      const int64_t step = int64_t(epoch - 1) * st.steps + s;
      const float lr = learning_rate_at(cfg, step, st.total_steps, st.warmup_steps);
      // Dropout masks depend on (seed, step) only, so a resumed run draws the same ones.
      const HeadPass train{true, cfg.dropout, cfg.seed, uint64_t(step), cfg.label_smoothing};
      network_forward(job.dev, job.net, in, train, job.buf.losses + offset, job.buf.confusion,
                      &job.clock);
      pass_cache(job, pass, valid);
      network_backward(job.dev, job.net, in.n, train, &job.clock);
      network_update(job.dev, job.net, cfg.opt, lr, &job.clock);
      offset += int(valid.size());
    }
    if (st.tty) progress_bar(epoch, cfg.epochs, s + 1, st.steps, seconds_since(t0));
  }
  pass_end(job, pass);
  const EpochStages stages = epoch_stages(job, pass, epoch, offset, seconds_since(t0));
  result.stages.push_back(stages);
  append_line(run_file(cfg, "stages.jsonl"), stages_json(stages).dump());
  std::vector<float> losses(offset);
  std::vector<int64_t> conf(size_t(classes) * classes);
  copy_to_host(job.dev, losses.data(), job.buf.losses, size_t(offset) * 4);
  copy_to_host(job.dev, conf.data(), job.buf.confusion, conf.size() * 8);
  synchronize(job.dev);
  const double train_seconds = std::max(seconds_since(t0), 1e-9);
  if (offset == 0) throw DatasetError(cfg.data + ": no training image could be decoded");

  EpochMetrics em;
  em.epoch = epoch;
  double loss_sum = 0;
  for (float l : losses) loss_sum += l;  // fixed order: deterministic
  int64_t correct = 0;
  for (int c = 0; c < classes; ++c) correct += conf[size_t(c) * classes + c];
  em.loss = loss_sum / offset;
  em.accuracy = double(correct) / offset;
  em.from_cache = !pass.decode;
  (em.from_cache ? em.feature_rows_per_second : em.images_per_second) = offset / train_seconds;
  return em;
}

void print_epoch(const TrainConfig& cfg, const EpochMetrics& em, bool tty) {
  if (tty) std::fprintf(stderr, "\r\033[K");
  std::printf("epoch %d/%d  loss %.4f  accuracy %.4f", em.epoch, cfg.epochs, em.loss, em.accuracy);
  if (em.has_val) std::printf("  val_loss %.4f  val_accuracy %.4f", em.val_loss, em.val_accuracy);
  if (em.from_cache)  // no image was decoded: rows of cached features, not images
    std::printf("  %.1fs  %.0f feature rows/s (cached features)\n", em.seconds,
                em.feature_rows_per_second);
  else
    std::printf("  %.1fs  %.0f img/s\n", em.seconds, em.images_per_second);
  std::fflush(stdout);
}

// Overfitting shows as training accuracy staying well above validation accuracy.
void watch_overfitting(RunState& st, const EpochMetrics& em) {
  if (em.has_val && em.accuracy - em.val_accuracy > 0.15)
    ++st.overfit_epochs;
  else
    st.overfit_epochs = 0;
  if (st.overfit_epochs >= 2 && !st.overfit_warned) {
    warn(
        "training accuracy is well above validation accuracy (overfitting); consider "
        "--augment, more --dropout, fewer --epochs or --early-stop");
    st.overfit_warned = true;
  }
}

// Keeps the best (by val_loss) head when early stopping, else the latest, then writes the
// checkpoint: a run killed before that redoes the epoch, after it continues.
void keep_and_checkpoint(Job& job, RunState& st, const EpochMetrics& em) {
  const TrainConfig& cfg = job.cfg;
  Dense hidden, out;
  head_download(job.dev, job.net.head, &hidden, &out);
  const bool improved = !em.has_val || em.val_loss < st.best_val_loss;
  if (improved) {
    st.best_val_loss = em.has_val ? em.val_loss : st.best_val_loss;
    st.since_best = 0;
  } else {
    ++st.since_best;
  }
  BackboneState backbone = backbone_download(job.dev, job.net, true);
  if (cfg.early_stop == 0 || improved) {
    st.best_hidden = hidden;
    st.best_out = out;
    st.best_backbone = backbone.params;
    st.kept_epoch = em.epoch;
  }
  Checkpoint now;
  now.epoch = em.epoch;
  now.head_step = job.net.head.step;
  now.best_val_loss = st.best_val_loss;
  now.since_best = st.since_best;
  now.overfit_epochs = st.overfit_epochs;
  now.overfit_warned = st.overfit_warned;
  now.state = head_state(job.dev, job.net.head);
  now.best_hidden = st.best_hidden;
  now.best_out = st.best_out;
  now.backbone = std::move(backbone.params);
  now.backbone_m = std::move(backbone.m);
  now.backbone_v = std::move(backbone.v);
  now.best_backbone = st.best_backbone;
  write_checkpoint(run_file(cfg, "checkpoint.safetensors"), now);
  st.epoch = em.epoch;
  // "Early" only when epochs were left to run: at the last epoch the run simply ends.
  if (cfg.early_stop > 0 && st.since_best >= cfg.early_stop && em.epoch < cfg.epochs) {
    st.stopped_early = true;
    std::fprintf(stderr,
                 "graft: early stop after epoch %d of %d: val_loss has not improved for %d "
                 "epochs; keeping epoch %d\n",
                 em.epoch, cfg.epochs, cfg.early_stop, st.kept_epoch);
  }
}

// The head trains alone for the first --freeze-epochs, then the fine-tuned blocks join it. The
// feature cache holds what the blocks before them compute, so it serves both stages.
void unfreeze_for(Job& job, int epoch) {
  const bool on = job.fine_tune > 0 && epoch > job.cfg.freeze_epochs;
  network_train_backbone(job.net, on);
  if (on && job.cfg.freeze_epochs > 0 && epoch == job.cfg.freeze_epochs + 1)
    std::fprintf(stderr, "graft: epoch %d: the backbone's last %d blocks train from now on\n",
                 epoch, job.fine_tune);
}

void run_epoch(Job& job, RunState& st, int epoch, TrainResult& result) {
  const auto t0 = Clock::now();
  unfreeze_for(job, epoch);
  EpochMetrics em = train_pass(job, st, epoch, result);
  if (!job.val.items.empty()) {
    EvalResult v = evaluate_split(job, job.val);
    em.val_loss = v.loss;
    em.val_accuracy = v.accuracy;
    em.has_val = true;
  }
  em.seconds = seconds_since(t0);
  result.epochs.push_back(em);
  append_line(run_file(job.cfg, "metrics.jsonl"), metrics_line(em));
  print_epoch(job.cfg, em, st.tty);
  watch_overfitting(st, em);
  keep_and_checkpoint(job, st, em);
}

// ---- Finishing ---------------------------------------------------------------------------------

std::string fine_tune_text(const TrainConfig& c, int blocks) {
  if (blocks == 0) return "off: the backbone is frozen";
  const float lr = c.backbone_lr > 0 ? c.backbone_lr : c.learning_rate / 10;
  return (c.fine_tune == "all" ? "all " + std::to_string(blocks) : std::to_string(blocks)) +
         " blocks from epoch " + std::to_string(c.freeze_epochs + 1) + ", learning rate " +
         shortest(lr) + "; batch norm frozen";
}

std::vector<std::pair<std::string, std::string>> report_settings(const Job& job) {
  const TrainConfig& c = job.cfg;
  std::string schedule = c.lr_schedule;
  if (c.warmup_epochs > 0) schedule += ", warm-up " + shortest(c.warmup_epochs) + " epochs";
  std::string optimizer =
      c.opt.optimizer == "adamw"
          ? "AdamW, weight decay " + shortest(c.opt.weight_decay)
          : "SGD, momentum " + shortest(c.opt.momentum) + ", L2 " + shortest(c.opt.l2);
  std::string cache = c.cache + (job.cache ? " (used)" : " (not used)");
  return {
      {"epochs", std::to_string(c.epochs)},
      {"batch size", std::to_string(c.batch_size)},
      {"learning rate", shortest(c.learning_rate)},
      {"learning-rate schedule", schedule},
      {"optimizer", optimizer},
      {"hidden layer", c.hidden ? std::to_string(c.hidden) + " units" : "none"},
      {"dropout", shortest(c.dropout)},
      {"label smoothing", shortest(c.label_smoothing)},
      {"early stop", c.early_stop ? "after " + std::to_string(c.early_stop) +
                                        " epochs without val_loss improvement"
                                  : "off"},
      {"seed", std::to_string(c.seed)},
      {"augmentation", c.augment ? "random resized crop, horizontal flip" : "off"},
      {"fine-tuning", fine_tune_text(c, job.fine_tune)},
      {"feature cache", cache},
      {"device", c.device + " (" + device_name(job.dev) + ")"},
      {"validation", c.val_data.empty() ? shortest(float(c.val_split)) + " of --data" : c.val_data},
      {"test", c.test_data.empty() ? shortest(float(c.test_split)) + " of --data" : c.test_data},
      {"backbone", c.backbone}};
}

ReportData make_report(const Job& job, const RunState& st, const TrainResult& result,
                       bool interrupted) {
  const TrainConfig& cfg = job.cfg;
  ReportData rd;
  rd.title = cfg.data;
  rd.classes = job.classes;
  rd.epochs = result.epochs;
  rd.kept_epoch = st.kept_epoch;
  rd.kept_why = st.kept_epoch != st.epoch ? "lowest validation loss (--early-stop)"
                : interrupted             ? "the last finished epoch"
                                          : "the last epoch";
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
  if (interrupted)
    rd.notes.push_back("interrupted after epoch " + std::to_string(st.epoch) + " of " +
                       std::to_string(cfg.epochs) + ": not tested; continue with graft train " +
                       "--resume " + cfg.out_dir);
  if (st.stopped_early)
    rd.notes.push_back("stopped early after epoch " + std::to_string(st.epoch) + " of " +
                       std::to_string(cfg.epochs) + " (--early-stop " +
                       std::to_string(cfg.early_stop) + ")");
  rd.notes.push_back(std::string("device: ") + device_name(job.dev));
  rd.notes.push_back(std::string("feature cache: ") + (job.cache ? "on" : "off"));
  rd.notes.push_back("backbone: " + job.backbone.net.arch + " (" + cfg.backbone + ")");
  if (job.skipped || job.skipped_folders)
    rd.notes.push_back(skipped_summary(job.skipped, job.skipped_folders) + " (see the log)");
  rd.settings = report_settings(job);
  return rd;
}

// The model (the kept head), the kept-epoch line, the test line and the report. Interrupted,
// the test is left out: the loader has been cancelled, and the run is not over.
void finish_run(Job& job, const RunState& st, TrainResult& result, bool interrupted) {
  const TrainConfig& cfg = job.cfg;
  const std::string metrics_path = run_file(cfg, "metrics.jsonl");
  result.model_path = run_file(cfg, "model.safetensors");
  result.kept_epoch = st.kept_epoch;
  result.stopped_early = st.stopped_early;
  // The model file is written once, from the kept head; until then the per-epoch checkpoint
  // (small: the head and its optimiser state) is what protects finished work.
  write_model_file(job, result.model_path, st.best_hidden, st.best_out, st.best_backbone);
  if (!st.stopped_early && cfg.early_stop > 0 && st.kept_epoch != st.epoch)
    std::fprintf(stderr, "graft: keeping epoch %d, the lowest val_loss (--early-stop)\n",
                 st.kept_epoch);
  append_line(metrics_path, nlohmann::ordered_json{{"kept_epoch", st.kept_epoch},
                                                   {"epochs_finished", st.epoch},
                                                   {"stopped_early", st.stopped_early},
                                                   {"interrupted", interrupted}}
                                .dump());
  if (!interrupted && !job.test.items.empty()) {
    head_upload(job.dev, job.net.head, st.best_hidden, st.best_out);
    if (!st.best_backbone.empty()) backbone_upload(job.dev, job.net, {st.best_backbone, {}, {}});
    result.test = evaluate_split(job, job.test);
    result.has_test = true;
    const std::string line = eval_json("test", result.test, job.classes);
    append_line(metrics_path, line);
    std::printf("%s\n", line.c_str());
  }
  result.skipped_files = job.skipped;
  result.skipped_folders = job.skipped_folders;
  result.report_path = run_file(cfg, "report.html");
  write_report(result.report_path, make_report(job, st, result, interrupted));

  if (job.skipped || job.skipped_folders)
    std::fprintf(stderr, "graft: %s\n", skipped_summary(job.skipped, job.skipped_folders).c_str());
  std::fprintf(stderr, "graft: model %s (epoch %d)\ngraft: report %s\n", result.model_path.c_str(),
               st.kept_epoch, result.report_path.c_str());
}

// A trained graft model as --backbone: its head (and classes) cannot carry over to new data.
void warn_if_trained_model(const Job& job) {
  const auto& meta = job.backbone.metadata;
  // A pretrained backbone's own classifier (ImageNet's, say) is replaced without a word.
  if (meta.find("trained_with") == meta.end()) return;
  std::string labels;
  for (size_t i = 0; i < job.backbone.labels.size() && i < 5; ++i)
    labels += (i ? ", " : "") + job.backbone.labels[i];
  if (job.backbone.labels.size() > 5) labels += ", ...";
  warn(job.cfg.backbone + " is a trained graft model (classes: " + labels +
       "); its head is replaced by a new one for " + job.cfg.data + ": only its backbone is kept");
}

TrainResult train_impl(const TrainConfig& cfg, bool resume) {
  check_config(cfg);
  check_run_folder(cfg, resume);
  Job job(cfg);
  job.train.name = "train";
  job.val.name = "val";
  job.test.name = "test";
  // Everything that can reject the input runs before the run folder gets its first file.
  job.backbone = load_model(cfg.backbone);
  job.fine_tune = fine_tune_blocks(cfg.fine_tune, job.backbone.net);
  warn_if_trained_model(job);
  setup_splits(job);
  prepare_run_folder(cfg, resume);
  write_split(job);
  setup_device(job);

  TrainResult result;
  result.cache_used = job.cache;
  RunState st = start_or_resume(job, resume, result);
  bool interrupted = false;
  try {
    for (int epoch = st.epoch + 1; epoch <= cfg.epochs && !st.stopped_early; ++epoch)
      run_epoch(job, st, epoch, result);
  } catch (const Interrupted&) {
    interrupted = true;
  }
  // Interrupted with no finished epoch: nothing worth a model file.
  if (interrupted && st.epoch == 0) throw Interrupted("interrupted before the first epoch ended");
  finish_run(job, st, result, interrupted);
  if (interrupted)
    throw Interrupted("interrupted during epoch " + std::to_string(st.epoch + 1) +
                      "; model and report written from epoch " + std::to_string(st.kept_epoch));
  return result;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume) {
  // Ctrl-C or a TERM stops after the step in flight: the loader shuts down, every resource is
  // released, and the run folder keeps its last finished epoch for --resume.
  stop_requested().store(false);
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
  } catch (const Interrupted& e) {
    throw std::runtime_error(std::string(e.what()) + "; " + cfg.out_dir +
                             " keeps every finished epoch: continue with graft train --resume " +
                             cfg.out_dir);
  }
}

std::string skipped_summary(int files, int folders) {
  std::string s;
  if (files) s = std::to_string(files) + (files == 1 ? " file skipped" : " files skipped");
  if (folders)
    s += (s.empty() ? "" : ", ") + std::to_string(folders) +
         (folders == 1 ? " empty class folder skipped" : " empty class folders skipped");
  return s;
}

}  // namespace graft
