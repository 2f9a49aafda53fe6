// graft predict --model M --top K [--device D] PATH...: one JSON line per image, probabilities
// descending. The forward pass is the one train and eval run (engine/classify.h Classifier).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/classify.h"
#include "tools/commands.h"

namespace graft {

namespace {

// Files as given; folders expand to the files below them (sorted, hidden entries skipped), so a
// user can point predict at a folder of new photos. Non-images are then reported by the decoder.
std::vector<std::string> expand_paths(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (!fs::is_directory(p, ec)) {
      out.push_back(p);
      continue;
    }
    std::vector<std::string> found;
    for (auto it =
             fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(ec)) found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

// Six decimals are all a probability printed for people needs; the float's own 17 significant
// digits in the JSON were noise. The double nearest to the rounded value prints as exactly that.
double round6(float p) {
  return std::round(double(p) * 1e6) / 1e6;
}

}  // namespace

Command add_predict_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("predict", "Classify images (files or folders) with a model file");
  struct Args {
    std::string model, device = "auto";
    int top = 5;
    int batch = 8;
    std::vector<std::string> paths;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-m,--model", a->model, "graft model file (.safetensors)")->required();
  cmd->add_option("-k,--top", a->top, "how many classes to print per image")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--batch-size", a->batch, "images per forward pass")->check(CLI::Range(1, 4096));
  cmd->add_option("--device", a->device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("paths", a->paths, "image files or folders")->required();
  return [a] {
    Model model = load_model(a->model);
    if (model.fc.out == 0)
      throw std::runtime_error(a->model +
                               ": holds a backbone without a classifier; train one first");
    const Preprocess& p = model.preprocess;
    const size_t image_bytes = size_t(p.size) * p.size * 3;
    std::vector<std::string> paths = expand_paths(a->paths);
    // No bigger than the work: the device memory for a batch of 4096 would be wasted on 3 photos.
    const int batch_size = int(std::clamp<size_t>(paths.size(), 1, size_t(a->batch)));
    std::vector<uint8_t> batch(size_t(batch_size) * image_bytes);
    std::vector<std::string> batch_paths;
    Classifier classifier;
    classifier_create(classifier, a->device, model, batch_size);
    std::vector<float> probs;
    int skipped = 0;

    auto flush = [&] {
      const int n = int(batch_paths.size());
      if (n == 0) return;
      const auto& logits = classifier_logits(classifier, batch.data(), n);
      probs.resize(logits.size());
      cpu::softmax(n, model.fc.out, logits.data(), probs.data());
      for (int i = 0; i < n; ++i) {
        const float* row = probs.data() + size_t(i) * model.fc.out;
        nlohmann::json top = nlohmann::json::array();
        for (int idx : top_k(row, model.fc.out, a->top)) {
          std::string label =
              idx < int(model.labels.size()) ? model.labels[idx] : std::to_string(idx);
          top.push_back({{"index", idx}, {"label", label}, {"prob", round6(row[idx])}});
        }
        nlohmann::json line = {{"path", batch_paths[i]}, {"top", top}};
        std::printf("%s\n",
                    line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      }
      std::fflush(stdout);
      batch_paths.clear();
    };

    for (const auto& path : paths) {
      try {
        Image img = load_image_for(path, p, DecodeLimits{});
        preprocess_image(img, p, batch.data() + batch_paths.size() * image_bytes);
        batch_paths.push_back(path);
      } catch (const ImageError& e) {
        std::fprintf(stderr, "graft: warning: %s; skipped\n", e.what());
        ++skipped;
      }
      if (int(batch_paths.size()) == batch_size) flush();
    }
    flush();
    if (skipped) std::fprintf(stderr, "graft: %d of %zu images skipped\n", skipped, paths.size());
    return skipped ? 1 : 0;
  };
}

}  // namespace graft
