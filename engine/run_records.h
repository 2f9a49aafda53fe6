#pragma once
// The records of a run and their JSON: one metrics.jsonl line per epoch (and back, for --resume),
// one stages.jsonl object per epoch, and the test/eval result object.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

// metrics.jsonl's epoch line; a cached epoch has feature_rows_per_second and a null image rate.
std::string metrics_line(const EpochMetrics& em);
EpochMetrics metrics_from_json(const nlohmann::json& j);

// stages.jsonl's object for one epoch (graft bench adds its derived fields to it).
nlohmann::ordered_json stages_json(const EpochStages& e);

// The JSON object of a test or eval result:
// {"split": ..., "loss": ..., "accuracy": ..., "per_class": {label: {precision, recall, f1,
// support}}, "confusion": [[...]]}. A class absent from the evaluated images (support 0) has
// null precision, recall and f1; a present class never predicted has null precision.
std::string eval_json(const std::string& split, const EvalResult& r,
                      const std::vector<std::string>& classes);

}  // namespace graft
