// graft convert IN -o OUT --arch NAME: runs the torch-free converter (tools/convert.py, Python
// standard library + numpy) so one command line covers every step.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "tools/commands.h"

namespace graft {

namespace {

// The converter ships beside the sources; GRAFT_TOOLS_DIR overrides for installed layouts.
std::string converter_path() {
  if (const char* dir = std::getenv("GRAFT_TOOLS_DIR")) return std::string(dir) + "/convert.py";
  return std::string(GRAFT_SOURCE_DIR) + "/tools/convert.py";
}

}  // namespace

Command add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a PyTorch/timm/torchvision checkpoint or safetensors file to a graft file");
  struct Args {
    std::string in, out, arch, labels;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("input", a->in, "checkpoint (.pth/.pt zip or legacy format, or .safetensors)")
      ->required();
  cmd->add_option("-o,--output", a->out, "graft weight file to write")->required();
  cmd->add_option("--arch", a->arch, "architecture, e.g. efficientnet_lite0, resnet50")->required();
  cmd->add_option("--labels", a->labels, "class names, one per line (default: ImageNet's 1000)");
  return [a] {
    std::string script = converter_path();
    if (!std::filesystem::exists(script))
      throw std::runtime_error(script + ": converter script not found (set GRAFT_TOOLS_DIR)");
    std::vector<std::string> args = {"python3", script, a->in, "-o", a->out, "--arch", a->arch};
    if (!a->labels.empty()) args.insert(args.end(), {"--labels", a->labels});
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("convert: cannot start python3");
    if (pid == 0) {
      execvp(argv[0], argv.data());
      std::perror("graft: error: python3");
      _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0)
      throw std::runtime_error("convert: lost the converter process");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  };
}

}  // namespace graft
