// graft eval --model FILE --data DIR: the test-line JSON for any folder of the model's classes.
#include <cstdio>

#include "engine/trainer.h"
#include "tools/commands.h"

namespace graft {

Command add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a trained model on a folder of labelled photos");
  struct Args {
    std::string model, data, device = "auto";
    int batch = 32;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-m,--model", a->model, "trained graft model file")->required();
  cmd->add_option("--data", a->data, "folder with one sub-folder per class (the model's classes)")
      ->required();
  cmd->add_option("--batch-size", a->batch, "images per forward pass")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  return [a] {
    std::vector<std::string> classes;
    int skipped = 0;
    EvalResult r = evaluate_folder(a->model, a->data, a->device, a->batch, &classes, &skipped);
    std::printf("%s\n", eval_json("eval", r, classes).c_str());
    if (skipped) std::fprintf(stderr, "graft: %d files skipped\n", skipped);
    return 0;
  };
}

}  // namespace graft
