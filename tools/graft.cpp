// graft: transfer learning on images with a frozen pretrained backbone.
#include <cstdio>
#include <exception>
#include <map>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"graft: train image classifiers on a frozen pretrained backbone"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "graft 0.1");
  std::map<CLI::App*, graft::Command> commands;
  auto add = [&](graft::Command (*make)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    graft::Command run = make(app);
    commands[app.get_subcommands({})[before]] = run;
  };
  add(graft::add_train_command);
  add(graft::add_eval_command);
  add(graft::add_predict_command);
  add(graft::add_inspect_command);
  add(graft::add_convert_command);
  add(graft::add_bench_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "graft: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
