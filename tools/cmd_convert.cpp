// graft convert IN -o OUT --arch NAME: runs the torch-free converter (tools/convert.py, Python
// standard library + numpy) so one command line covers every step.
#include "engine/net.h"
#include "tools/commands.h"
#include "tools/python_tool.h"

namespace graft {

Command add_convert_command(CLI::App& app) {
  std::string archs;
  for (const auto& a : known_archs()) archs += (archs.empty() ? "" : ", ") + a;
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a PyTorch/timm/torchvision checkpoint or safetensors file to a graft file");
  cmd->footer("Architectures: " + archs +
              ".\nPreprocessing options default to what the checkpoint's source (lukemelas, "
              "timm, torchvision) trained with.");
  struct Args {
    // Numbers stay strings: the converter gets them exactly as the user wrote them.
    std::string in, out, arch, naming, labels, padding, resize_mode, mean, std, bn_eps, input_size,
        crop_fraction;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("input", a->in, "checkpoint (.pth/.pt zip or legacy format, or .safetensors)")
      ->required();
  cmd->add_option("-o,--output", a->out, "graft weight file to write")->required();
  cmd->add_option("--arch", a->arch, "network architecture (listed below)")
      ->required()
      ->check(CLI::IsMember(known_archs()));
  cmd->add_option("--naming", a->naming, "tensor names of the source (default: detected)")
      ->check(CLI::IsMember({"auto", "lukemelas", "timm", "torchvision"}));
  cmd->add_option("--labels", a->labels, "class names, one per line (default: ImageNet's 1000)");
  cmd->add_option("--padding", a->padding, "conv padding the weights were trained with")
      ->check(CLI::IsMember({"tf_same", "symmetric"}));
  cmd->add_option("--bn-eps", a->bn_eps, "batch-norm epsilon")->check(CLI::PositiveNumber);
  cmd->add_option("--input-size", a->input_size, "input height and width in pixels")
      ->check(CLI::Range(8, 4096));
  cmd->add_option("--resize-mode", a->resize_mode, "how photos are fitted to the input")
      ->check(CLI::IsMember({"center_crop", "squash"}));
  cmd->add_option("--crop-fraction", a->crop_fraction, "center crop: fraction of the short side")
      ->check(CLI::Range(0.05, 1.0));
  cmd->add_option("--mean", a->mean, "normalisation mean r,g,b in units of pixel/255");
  cmd->add_option("--std", a->std, "normalisation std r,g,b in units of pixel/255");
  return [a] {
    std::vector<std::string> args = {a->in, "-o", a->out, "--arch", a->arch};
    auto pass = [&](const char* flag, const std::string& v) {
      if (!v.empty()) args.insert(args.end(), {flag, v});
    };
    pass("--naming", a->naming);
    pass("--labels", a->labels);
    pass("--padding", a->padding);
    pass("--resize-mode", a->resize_mode);
    pass("--mean", a->mean);
    pass("--std", a->std);
    pass("--bn-eps", a->bn_eps);
    pass("--input-size", a->input_size);
    pass("--crop-fraction", a->crop_fraction);
    return run_python_tool(python_tool_path("convert.py"), args);
  };
}

}  // namespace graft
