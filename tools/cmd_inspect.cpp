// graft inspect FILE: what a weight file holds, after full validation.
#include <cstdio>

#include "engine/model.h"
#include "tools/commands.h"

namespace graft {

Command add_inspect_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("inspect", "Print a model file's arch, tensors, metadata and labels");
  auto path = std::make_shared<std::string>();
  cmd->add_option("file", *path, "graft weight file (.safetensors)")->required();
  return [path] {
    Model m = load_model(*path);
    std::printf("file:        %s\n", m.path.c_str());
    std::printf("arch:        %s\n", m.net.arch.c_str());
    std::printf("tensors:     %zu\n", m.file_tensor_count);
    std::printf("parameters:  %zu\n", m.file_parameter_count);
    std::printf("features:    %d\n", m.net.feature_dim);
    std::printf("classes:     %d\n", m.fc.out);
    const Preprocess& p = m.preprocess;
    std::printf("preprocess:  %dx%d %s (crop %.3f) mean %.4f,%.4f,%.4f std %.4f,%.4f,%.4f\n",
                p.size, p.size, p.resize_mode.c_str(), p.crop_fraction, p.mean[0], p.mean[1],
                p.mean[2], p.std[0], p.std[1], p.std[2]);
    std::printf("metadata:\n");
    for (const auto& [k, v] : m.metadata) {
      if (k == "labels") continue;
      std::printf("  %-14s %s\n", k.c_str(), v.c_str());
    }
    std::printf("labels:      %zu", m.labels.size());
    for (size_t i = 0; i < m.labels.size() && i < 10; ++i)
      std::printf("%s%s", i ? ", " : " (", m.labels[i].c_str());
    std::printf("%s\n", m.labels.empty() ? "" : (m.labels.size() > 10 ? ", ...)" : ")"));
    return 0;
  };
}

}  // namespace graft
