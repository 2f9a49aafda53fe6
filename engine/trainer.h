#pragma once
// The transfer-learning job: a folder of photos in; a trained head, metrics, a report and one
// self-contained model file out. One loop for both devices: everything device-specific goes
// through engine/device.h.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/head.h"
#include "io/dataset.h"

namespace graft {

struct EpochMetrics {
  int epoch = 0;
  double loss = 0, accuracy = 0, val_loss = 0, val_accuracy = 0, seconds = 0;
  bool has_val = false;
  // An epoch trained from the feature cache decodes no image: its throughput is feature rows per
  // second, not images per second (metrics.jsonl: "from_cache", and the other rate is null).
  bool from_cache = false;
  double images_per_second = 0, feature_rows_per_second = 0;
};

// Where one epoch's training pass spent its time (RUN_DIR/stages.jsonl, and `graft bench`).
// Device stages are measured on the device (CUDA events) and may overlap each other and the
// host; decode is CPU time summed over the loader's threads.
struct EpochStages {
  int epoch = 0;
  int64_t images = 0;
  double wall = 0;        // the training pass, seconds
  double decode_cpu = 0;  // decoding and resizing, summed over decode threads
  int decode_threads = 0;
  double wait_for_batch = 0;  // the training loop waited for the loader
  double wait_for_slot = 0;   // decode threads waited for a free batch slot
  double h2d_copy = 0, backbone = 0, head = 0, optimiser = 0;
  double device_idle_fraction = 0;  // 1 - (backbone + head + optimiser) / wall
  bool from_cache = false;          // the pass read cached features: no decode, copy or backbone
};

struct EvalResult {
  int classes = 0;
  int64_t n = 0;
  double loss = 0, accuracy = 0;
  std::vector<int64_t> confusion;  // [true][predicted]
  // Per evaluated image (in item order): predicted class and probabilities of it and of the truth.
  std::vector<int> item, predicted;
  std::vector<float> prob_predicted, prob_true;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  std::vector<EpochStages> stages;  // epochs run by this call (not those before a resume)
  EvalResult test;
  bool has_test = false;
  bool cache_used = false;
  int skipped_files = 0;       // unreadable or non-image files, each counted once
  int skipped_folders = 0;     // class folders without images, left out
  int kept_epoch = 0;          // the epoch whose head is in model.safetensors
  bool stopped_early = false;  // --early-stop ended the run before its last epoch
  std::string model_path, report_path;
};

// Runs the job. With resume, continues from RUN_DIR/checkpoint.safetensors (written atomically
// after every epoch): the finished run's metrics.jsonl is then the one an uninterrupted run
// writes, wall-clock and throughput fields aside. A resumed run may have more epochs than its
// config.json (it is updated), not fewer than it has finished; with the cosine schedule the
// epoch count cannot change, as the decay is fitted to it.
// metrics.jsonl: one line per epoch, then {"kept_epoch", "epochs_finished", "stopped_early",
// "interrupted"}, then the test line. On SIGINT/SIGTERM the model and report are written from
// the last finished epoch (the kept head) before train throws the resume hint.
TrainResult train(const TrainConfig& cfg, bool resume = false);

// The JSON object of a test or eval result:
// {"split": ..., "loss": ..., "accuracy": ..., "per_class": {label: {precision, recall, f1,
// support}}, "confusion": [[...]]}. A class absent from the evaluated images (support 0) has
// null precision, recall and f1; a present class never predicted has null precision.
std::string eval_json(const std::string& split, const EvalResult& r,
                      const std::vector<std::string>& classes);

// Evaluates a trained model file on a folder whose classes are the model's (graft eval).
// `skipped` counts skipped files, `skipped_folders` class folders left out for want of images.
EvalResult evaluate_folder(const std::string& model_path, const std::string& data_dir,
                           const std::string& device, int batch_size,
                           std::vector<std::string>* classes, int* skipped,
                           int* skipped_folders = nullptr);

// "1 file skipped", "2 files skipped, 1 empty class folder skipped"; empty when both are 0.
std::string skipped_summary(int files, int folders);

}  // namespace graft
