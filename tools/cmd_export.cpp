// graft export MODEL -o model.onnx: the whole classifier as one ONNX graph, for deployment with
// any ONNX runtime. The graph is built by tools/export_onnx.py (numpy and the onnx package), which
// walks the same architecture description as the C++ builders; this command only runs it.
#include "tools/commands.h"
#include "tools/python_tool.h"

namespace graft {

Command add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export",
      "Export a model file as one ONNX graph (opset 17): uint8 images in, class probabilities "
      "out");
  cmd->footer(
      "Input 'image': uint8 RGB, NHWC [N, S, S, 3], S the model's input size, already resized "
      "and\ncropped by the caller the way the model's resize_mode and crop_fraction say (both "
      "are in the\nONNX metadata too); the graph converts to float and normalises with the "
      "model's mean and std.\nThe batch N is dynamic.\n"
      "Output 'probabilities': float32 [N, classes], softmax.\n"
      "Class names: the ONNX metadata key 'labels' (a JSON list) and labels.txt beside the "
      ".onnx file,\none per line. Needs the Python packages numpy and onnx (scripts/setup.sh "
      "installs them).");
  struct Args {
    std::string in, out;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("model", a->in, "graft model file (.safetensors) with a classifier")->required();
  cmd->add_option("-o,--output", a->out, "ONNX file to write; labels.txt goes beside it")
      ->required();
  return [a] { return run_python_tool(python_tool_path("export_onnx.py"), {a->in, "-o", a->out}); };
}

}  // namespace graft
