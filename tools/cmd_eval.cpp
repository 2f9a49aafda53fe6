// graft eval --model FILE --data DIR: the test-line JSON for any folder of the model's classes.
#include <cstdio>

#include "engine/evaluate.h"
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
    int skipped = 0, skipped_folders = 0;
    EvalResult r = evaluate_folder(a->model, a->data, a->device, a->batch, &classes, &skipped,
                                   &skipped_folders);
    std::printf("%s\n", eval_json("eval", r, classes).c_str());
    // A class of the model with no photo here has no precision or recall (null in the JSON).
    std::string absent;
    for (int k = 0; k < r.classes; ++k) {
      int64_t support = 0;
      for (int o = 0; o < r.classes; ++o) support += r.confusion[size_t(k) * r.classes + o];
      if (support == 0) absent += (absent.empty() ? "" : ", ") + classes[size_t(k)];
    }
    if (!absent.empty())
      std::fprintf(stderr,
                   "graft: no photos of %s in %s: reported with support 0 and null metrics\n",
                   absent.c_str(), a->data.c_str());
    if (skipped || skipped_folders)
      std::fprintf(stderr, "graft: %s\n", skipped_summary(skipped, skipped_folders).c_str());
    return 0;
  };
}

}  // namespace graft
