// graft train --data DIR --backbone FILE --out RUN_DIR [options]
#include <cstdio>

#include "engine/trainer.h"
#include "tools/commands.h"

namespace graft {

Command add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train",
      "Train a new classifier head on a frozen pretrained backbone from a folder of photos");
  auto c = std::make_shared<TrainConfig>();
  auto resume = std::make_shared<std::string>();
  cmd->add_option("--data", c->data, "folder with one sub-folder of images per class");
  cmd->add_option("--backbone", c->backbone, "pretrained graft weight file");
  cmd->add_option("--out", c->out_dir, "run folder for model, metrics, split and report");
  cmd->add_option("--resume", *resume,
                  "continue the run in this folder after its last finished epoch, with its "
                  "saved settings; --epochs may raise its epoch count, other options are "
                  "ignored");
  cmd->add_flag("--overwrite", c->overwrite,
                "replace the run files in a non-empty --out folder (refused without it)");
  cmd->add_option("--val-data", c->val_data, "validation folder (instead of a split of --data)");
  cmd->add_option("--test-data", c->test_data, "test folder (instead of a split of --data)");
  cmd->add_option("--val-split", c->val_split, "fraction of --data held out for validation")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  cmd->add_option("--test-split", c->test_split, "fraction of --data held out for test")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  cmd->add_option("--epochs", c->epochs, "passes over the training split")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--batch-size", c->batch_size, "images per step")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--learning-rate", c->learning_rate, "peak learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--momentum", c->opt.momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--optimizer", c->opt.optimizer, "sgd or adamw")
      ->check(CLI::IsMember({"sgd", "adamw"}))
      ->capture_default_str();
  cmd->add_option("--l2", c->opt.l2, "SGD: L2 regularisation of the dense kernels (Keras style)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--weight-decay", c->opt.weight_decay, "AdamW: decoupled weight decay")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--dropout", c->dropout, "dropout rate before each dense layer")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  cmd->add_option("--label-smoothing", c->label_smoothing, "label smoothing of the loss")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  cmd->add_option("--hidden", c->hidden, "units of an optional hidden dense layer (0: none)")
      ->check(CLI::Range(0, 65536))
      ->capture_default_str();
  cmd->add_option("--lr-schedule", c->lr_schedule, "constant or cosine (decay to 0)")
      ->check(CLI::IsMember({"constant", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--warmup-epochs", c->warmup_epochs, "linear learning-rate warm-up")
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  cmd->add_option("--early-stop", c->early_stop,
                  "stop after N epochs without val_loss improvement, keeping the best (0: off)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--seed", c->seed, "seed of the split, shuffles, dropout and head init")
      ->capture_default_str();
  cmd->add_option("--cache-features", c->cache, "auto, on or off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_flag("--augment", c->augment, "random resized crop and horizontal flip (cache off)");
  cmd->add_option("--device", c->device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  auto no_progress = std::make_shared<bool>(false);
  cmd->add_flag("--no-progress", *no_progress, "no live progress bar");
  return [c, resume, no_progress, cmd] {
    c->progress = !*no_progress;
    if (!resume->empty()) {
      TrainConfig saved = load_config(*resume + "/config.json");
      saved.out_dir = *resume;  // the folder as given now, wherever the run was started
      saved.progress = c->progress;
      if (cmd->count("--epochs")) saved.epochs = c->epochs;
      // Say which given options the run's own settings override, rather than drop them quietly.
      std::string ignored;
      for (const CLI::Option* o : cmd->get_options()) {
        const std::string name = o->get_name();
        if (o->count() == 0 || name == "--resume" || name == "--epochs" ||
            name == "--no-progress" || name == "--gpu" || name == "--help")
          continue;
        ignored += (ignored.empty() ? "" : ", ") + name;
      }
      if (!ignored.empty())
        std::fprintf(stderr, "graft: --resume: ignoring %s (the run's own settings are kept)\n",
                     ignored.c_str());
      return train(saved, true).epochs.empty() ? 1 : 0;
    }
    if (c->data.empty() || c->backbone.empty() || c->out_dir.empty())
      throw std::invalid_argument("train needs --data, --backbone and --out (or --resume RUN_DIR)");
    return train(*c).epochs.empty() ? 1 : 0;
  };
}

}  // namespace graft
