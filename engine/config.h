#pragma once
// A run's settings, declared once. visit_settings() below has one line per setting: its field
// (with its default in TrainConfig), its name in RUN_DIR/config.json, its command-line flag, its
// help text and its allowed values. Saving, loading and checking a configuration, the options of
// `graft train` and `graft bench`, and the options `--resume` reports as ignored are all loops
// over that list, so a new setting is one field and one line.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/head.h"

namespace graft {

// Defaults follow TensorFlow Lite Model Maker's image classifier (its TF-Hub training path):
// batch 32, SGD lr 0.005 momentum 0.9, dropout 0.2, L2 1e-4 on the dense kernel, label smoothing
// 0.1, 5 epochs, constant learning rate. --lr-schedule cosine with --warmup-epochs gives its
// other path's warm-up + cosine decay.
struct TrainConfig {
  std::string data, val_data, test_data, backbone, out_dir;
  std::string device = "auto";
  int epochs = 5;
  int batch_size = 32;
  int hidden = 0;
  int early_stop = 0;  // epochs without val_loss improvement before stopping; 0 = never
  float learning_rate = 0.005f;
  float dropout = 0.2f;
  float label_smoothing = 0.1f;
  std::string lr_schedule = "constant";  // constant | cosine
  float warmup_epochs = 0.f;
  OptimConfig opt;
  double val_split = 0.1, test_split = 0.1;
  uint64_t seed = 42;
  std::string cache = "auto";  // auto | on | off
  bool augment = false;
  // Fine-tuning (engine/fine_tune.h): the backbone's last blocks that train ("0", N or "all"),
  // after how many head-only epochs, and at what learning rate (0: a tenth of learning_rate).
  std::string fine_tune = "0";
  int freeze_epochs = 0;
  float backbone_lr = 0.f;
  // A new run refuses a non-empty out_dir (another run's model, metrics and report) unless this
  // is set; then graft's own files there are replaced. Not saved in config.json.
  bool overwrite = false;
  bool progress = true;  // a live bar on a terminal; not a setting of the run (not saved)
};

// What is known about one setting besides its field.
struct SettingInfo {
  const char* key;   // name in config.json
  const char* flag;  // command-line flag
  const char* help;
  double min = 0, max = -1;          // numeric range [min, max], when min <= max
  std::vector<std::string> choices;  // allowed words, when not empty
  bool saved = true;                 // false: a property of one invocation (--overwrite)

  SettingInfo(const char* k, const char* f, const char* h) : key(k), flag(f), help(h) {}
  SettingInfo(const char* k, const char* f, const char* h, double lo, double hi)
      : key(k), flag(f), help(h), min(lo), max(hi) {}
  SettingInfo(const char* k, const char* f, const char* h, std::vector<std::string> words)
      : key(k), flag(f), help(h), choices(std::move(words)) {}
};
inline SettingInfo unsaved(SettingInfo s) {
  s.saved = false;
  return s;
}

// Calls visit(info, field) for every setting, in config.json's order. Fields are std::string,
// int, float, double, uint64_t or bool.
template <class Visit>
void visit_settings(TrainConfig& c, Visit&& visit) {
  using V = std::vector<std::string>;
  visit(SettingInfo{"data", "--data", "folder with one sub-folder of images per class"}, c.data);
  visit(SettingInfo{"val_data", "--val-data", "validation folder (instead of a split of --data)"},
        c.val_data);
  visit(SettingInfo{"test_data", "--test-data", "test folder (instead of a split of --data)"},
        c.test_data);
  visit(SettingInfo{"backbone", "--backbone", "pretrained graft weight file"}, c.backbone);
  visit(SettingInfo{"out_dir", "--out", "run folder for model, metrics, split and report"},
        c.out_dir);
  visit(SettingInfo{"device", "--device", "auto, cpu or cuda", V{"auto", "cpu", "cuda"}}, c.device);
  visit(SettingInfo{"epochs", "--epochs", "passes over the training split", 1, 100000}, c.epochs);
  visit(SettingInfo{"batch_size", "--batch-size", "images per step", 1, 65536}, c.batch_size);
  visit(SettingInfo{"hidden", "--hidden", "units of an optional hidden dense layer (0: none)", 0,
                    65536},
        c.hidden);
  visit(SettingInfo{"early_stop", "--early-stop",
                    "stop after N epochs without val_loss improvement, keeping the best (0: off)",
                    0, 100000},
        c.early_stop);
  visit(SettingInfo{"learning_rate", "--learning-rate", "peak learning rate", 1e-12, 100},
        c.learning_rate);
  visit(SettingInfo{"dropout", "--dropout", "dropout rate before each dense layer", 0, 0.99},
        c.dropout);
  visit(SettingInfo{"label_smoothing", "--label-smoothing", "label smoothing of the loss", 0, 0.99},
        c.label_smoothing);
  visit(SettingInfo{"lr_schedule", "--lr-schedule", "constant or cosine (decay to 0)",
                    V{"constant", "cosine"}},
        c.lr_schedule);
  visit(SettingInfo{"warmup_epochs", "--warmup-epochs", "linear learning-rate warm-up", 0, 1000},
        c.warmup_epochs);
  visit(SettingInfo{"optimizer", "--optimizer", "sgd or adamw", V{"sgd", "adamw"}},
        c.opt.optimizer);
  visit(SettingInfo{"momentum", "--momentum", "SGD momentum", 0, 1}, c.opt.momentum);
  visit(
      SettingInfo{"l2", "--l2", "SGD: L2 regularisation of the dense kernels (Keras style)", 0, 1},
      c.opt.l2);
  visit(SettingInfo{"weight_decay", "--weight-decay", "AdamW: decoupled weight decay", 0, 1},
        c.opt.weight_decay);
  visit(
      SettingInfo{"val_split", "--val-split", "fraction of --data held out for validation", 0, 0.9},
      c.val_split);
  visit(SettingInfo{"test_split", "--test-split", "fraction of --data held out for test", 0, 0.9},
        c.test_split);
  visit(SettingInfo{"seed", "--seed", "seed of the split, shuffles, dropout and head init"},
        c.seed);
  visit(SettingInfo{"cache", "--cache-features", "auto, on or off", V{"auto", "on", "off"}},
        c.cache);
  visit(SettingInfo{"augment", "--augment", "random resized crop and horizontal flip (cache off)"},
        c.augment);
  visit(
      SettingInfo{"fine_tune", "--fine-tune",
                  "train the backbone's last N blocks with the head (the final 1x1 conv counts as "
                  "one), or all of it; batch norm stays frozen"},
      c.fine_tune);
  visit(SettingInfo{"freeze_epochs", "--freeze-epochs",
                    "with --fine-tune: train the head alone for the first K epochs, then unfreeze",
                    0, 100000},
        c.freeze_epochs);
  visit(
      SettingInfo{"backbone_lr", "--backbone-lr",
                  "learning rate of the fine-tuned blocks (0: a tenth of --learning-rate)", 0, 100},
      c.backbone_lr);
  visit(unsaved(SettingInfo{"overwrite", "--overwrite",
                            "replace the run files in a non-empty --out folder (refused without "
                            "it)"}),
        c.overwrite);
}

// Throws std::invalid_argument naming the flag when a setting is out of its range or choices, or
// when settings contradict each other.
void check_config(const TrainConfig& cfg);

// RUN_DIR/config.json: every saved setting, written when a run starts, so `graft train --resume
// RUN_DIR` continues with exactly the same settings. Float settings are stored as the shortest
// decimal that reads back as the same float (0.005, not 0.004999999888241291).
void save_config(const TrainConfig& cfg, const std::string& path);
// Reads what save_config wrote; a mistyped setting names the file and the setting, and a missing
// one (a run folder older than the setting) keeps its default.
TrainConfig load_config(const std::string& path);

// The shortest decimal that reads back as the same float ("0.005").
std::string shortest(float v);

}  // namespace graft
