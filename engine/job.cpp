#include "engine/job.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>

#include "engine/augment.h"

namespace graft {

std::atomic<bool>& stop_requested() {
  static std::atomic<bool> stop{false};
  return stop;
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
  lc.cancel = &stop_requested();
  loader_create(job.loader, lc);
  job.slot_copied.resize(lc.slots);
  for (Event& e : job.slot_copied) event_create(job.dev, e);
}

Job::~Job() {
  // Every member releases itself (in reverse order of declaration). Before they go, the loader's
  // threads stop, and the device finishes the copies out of its pinned slots and the kernels
  // that read the arenas.
  loader_stop(loader);
  synchronize(dev);
}

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

namespace {

void pass_release_held(Job& job, Pass& pass) {
  if (!pass.held) return;
  event_synchronize(job.dev, job.slot_copied[pass.held->index % job.loader_cfg.slots]);
  loader_release(job.loader, pass.held);
  pass.held = nullptr;
}

}  // namespace

void pass_end(Job& job, Pass& pass) {
  pass_release_held(job, pass);
}

std::vector<int> pass_next(Job& job, Pass& pass, const int* pos, int n, NetworkInput* in) {
  SplitData& split = *pass.split;
  *in = NetworkInput{};
  if (!pass.decode) {
    std::vector<int32_t> rows;
    for (int i = 0; i < n; ++i)
      if (!split.bad[pos[i]]) rows.push_back(pos[i]);
    copy_to_device(job.dev, job.buf.rows, rows.data(), rows.size() * 4);
    op_gather_rows(job.dev, int(rows.size()), int(job.cache_row), split.cache, job.buf.rows,
                   network_cache_slot(job.net));
    in->n = int(rows.size());
    in->cached = true;
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
  in->n = b->n_valid;
  in->images = b->pixels;
  in->copied = &job.slot_copied[b->index % job.loader_cfg.slots];
  pass.held = b;
  return valid;
}

void pass_cache(Job& job, const Pass& pass, const std::vector<int>& valid) {
  SplitData& split = *pass.split;
  if (!pass.decode || !split.cache || pass.augment) return;
  const size_t row = job.cache_row;
  const float* slot = network_cache_slot(job.net);
  for (size_t i = 0; i < valid.size(); ++i) {
    copy_on_device(job.dev, split.cache + valid[i] * row, slot + i * row, row * 4);
    split.cached[valid[i]] = 1;
  }
}

void upload_labels(Job& job, const SplitData& split, const std::vector<int>& pos) {
  std::vector<int32_t> labels;
  for (int p : pos) labels.push_back(split.items[p]->label);
  copy_to_device(job.dev, job.buf.labels, labels.data(), labels.size() * 4);
}

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
    NetworkInput in;
    std::vector<int> valid = pass_next(job, pass, order.data() + start, n, &in);
    if (valid.empty()) continue;
    upload_labels(job, split, valid);
    in.labels = job.buf.labels;
    const int m = int(valid.size());
    HeadPass eval;
    eval.smoothing = job.cfg.label_smoothing;
    network_forward(job.dev, job.net, in, eval, job.buf.losses, nullptr);
    pass_cache(job, pass, valid);
    copy_to_host(job.dev, logits.data(), job.net.head.s.logits, size_t(m) * classes * 4);
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

}  // namespace graft
