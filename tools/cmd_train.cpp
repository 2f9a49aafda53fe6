// graft train --data DIR --backbone FILE --out RUN_DIR [options]
#include <cstdio>

#include "engine/trainer.h"
#include "tools/commands.h"
#include "tools/setting_options.h"

namespace graft {

Command add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train",
      "Train a new classifier head on a frozen pretrained backbone from a folder of photos");
  auto c = std::make_shared<TrainConfig>();
  auto resume = std::make_shared<std::string>();
  add_setting_options(cmd, *c);
  cmd->add_option("--resume", *resume,
                  "continue the run in this folder after its last finished epoch, with its "
                  "saved settings; --epochs may raise its epoch count, other options are "
                  "ignored");
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
      visit_settings(*c, [&](const SettingInfo& s, auto&) {
        if (cmd->count(s.flag) && std::string(s.flag) != "--epochs")
          ignored += (ignored.empty() ? "" : ", ") + std::string(s.flag);
      });
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
