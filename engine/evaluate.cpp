#include "engine/evaluate.h"

#include <cstdlib>

#include "engine/job.h"

namespace graft {

EvalResult evaluate_folder(const std::string& model_path, const std::string& data_dir,
                           const std::string& device, int batch_size,
                           std::vector<std::string>* classes, int* skipped, int* skipped_folders) {
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
  job.skipped_folders = job.test_ds.skipped_folders;
  job.skipped = int(job.test_ds.skipped.size()) - job.skipped_folders;
  for (const auto& it : job.test_ds.items) job.test.items.push_back(&it);
  job.test.cached.assign(job.test.items.size(), 0);
  job.test.bad.assign(job.test.items.size(), 0);

  job.dev = make_device(device);
  const int dim = job.backbone.net.feature_dim, n_classes = int(job.classes.size());
  const HeadShape hs{dim, job.backbone.hidden.out, n_classes};
  network_create(job.net, job.dev, job.backbone, hs, batch_size, 0, nullptr);
  head_upload(job.dev, job.net.head, job.backbone.hidden, job.backbone.fc);
  loader_setup(job);
  arena_reserve(job.buf.arena, job.dev, size_t(batch_size) * 12 + 4 * 64);
  job.buf.labels = arena_alloc<int32_t>(job.buf.arena, batch_size);
  job.buf.rows = arena_alloc<int32_t>(job.buf.arena, batch_size);
  job.buf.losses = arena_alloc<float>(job.buf.arena, batch_size);
  // Report the loss the model was trained with (label smoothing is in its metadata).
  if (const auto it = job.backbone.metadata.find("label_smoothing");
      it != job.backbone.metadata.end()) {
    char* end = nullptr;
    const float v = std::strtof(it->second.c_str(), &end);
    if (*end == '\0' && v >= 0.f && v < 1.f) cfg.label_smoothing = v;
  }
  EvalResult r = evaluate_split(job, job.test);
  *skipped = job.skipped;
  if (skipped_folders) *skipped_folders = job.skipped_folders;
  *classes = job.classes;
  return r;
}

}  // namespace graft
