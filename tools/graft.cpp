// graft: transfer learning on images with a pretrained backbone.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <sstream>

#include "engine/device.h"
#include "kernels/cpu/cpu_path.h"
#include "tools/commands.h"
#include "tools/suggest.h"

namespace {

// "graft 0.2.0", the CPU paths this binary carries (the one in use first) and the GPU
// architectures it holds code for. CMake's list reads "90" (machine code and PTX), "90-real"
// (machine code) or "120-virtual" (PTX only).
std::string version_text() {
  namespace cpu = graft::cpu;
  std::string text = "graft " GRAFT_VERSION "\nCPU path: ";
  const std::string error = cpu::select_cpu_path_from_env();
  const std::vector<cpu::CpuPath> supported = cpu::cpu_paths_supported();
  if (!error.empty() && !supported.empty()) cpu::set_cpu_path(supported.front());
  if (supported.empty()) return text + "none (" + error + ")";
  text += cpu::cpu_path_name(cpu::cpu_path());
  if (!error.empty()) text += " (" + error + ")";
  std::string others;
  for (cpu::CpuPath p : cpu::cpu_paths_built())
    if (p != cpu::cpu_path())
      others += std::string(others.empty() ? "" : ", ") + cpu::cpu_path_name(p) +
                (cpu::cpu_path_supported(p) ? "" : " (not on this CPU)");
  if (!others.empty()) text += "; also built: " + others;
  text += "\nCUDA architectures: ";
  std::istringstream archs(GRAFT_CUDA_ARCHS);
  std::string sass, ptx;
  for (std::string a; archs >> a;) {
    const size_t dash = a.find('-');
    const std::string num = a.substr(0, dash), kind = dash == a.npos ? "" : a.substr(dash + 1);
    if (kind != "virtual") sass += " sm_" + num;
    if (kind != "real") ptx += " compute_" + num;
  }
#if GRAFT_CUDA_EMULATION
  return text + "none: CUDA emulated on the CPU (kernels/emu), for testing, slowly";
#endif
  if (sass.empty() && ptx.empty()) return text + "none (a CPU-only build)";
  text += sass.empty() ? "no machine code" : "machine code for" + sass;
  if (!ptx.empty()) text += "; PTX for" + ptx + " (compiled by the driver for newer cards)";
  return text;
}

std::vector<std::string> command_names(CLI::App& app) {
  std::vector<std::string> names;
  for (CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  return names;
}

std::string joined(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : ", ") + w;
  return s;
}

// CLI11 reports an unknown command or option as "arguments not expected"; a user who typed
// `graft trian` or `--epoch` is better served by the nearest valid name. Returns the message for
// the first such mistake in argv, or "" when there is none.
std::string find_typo(CLI::App& app, int argc, char** argv) {
  CLI::App* sub = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (!sub) {
      if (arg.empty() || arg[0] == '-') continue;  // --help, --version: CLI11 handles them
      for (CLI::App* s : app.get_subcommands({}))
        if (s->check_name(arg)) sub = s;
      if (sub) continue;
      const std::vector<std::string> names = command_names(app);
      const std::string near = graft::closest_match(arg, names);
      return "unknown command '" + arg + "'" +
             (near.empty() ? "" : "; did you mean " + near + "?") + " (commands: " + joined(names) +
             ")";
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) continue;
    const std::string name = arg.substr(2, arg.find('=') - 2);
    std::vector<std::string> known;
    for (const CLI::Option* opt : sub->get_options())
      for (const std::string& l : opt->get_lnames()) known.push_back(l);
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    const std::string near = graft::closest_match(name, known);
    return "unknown option --" + name + " for " + sub->get_name() +
           (near.empty() ? "" : "; did you mean --" + near + "?") + " (see graft " +
           sub->get_name() + " --help)";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"graft: train image classifiers on a pretrained backbone"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());
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
  add(graft::add_export_command);
  add(graft::add_bench_command);
  // Every command that runs on a device can be pointed at one GPU of several.
  int gpu = 0;
  for (CLI::App* sub : app.get_subcommands({}))
    if (sub->get_option_no_throw("--device"))
      sub->add_option("--gpu", gpu,
                      "index of the GPU to use among those CUDA_VISIBLE_DEVICES leaves visible")
          ->check(CLI::NonNegativeNumber)
          ->capture_default_str();

  if (const std::string typo = find_typo(app, argc, argv); !typo.empty()) {
    std::fprintf(stderr, "graft: error: %s\n", typo.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    // One line and the usual usage-error code, like every other error graft reports.
    std::string where = "graft";
    for (CLI::App* sub : app.get_subcommands())
      if (sub->parsed()) where += " " + sub->get_name();
    std::fprintf(stderr, "graft: error: %s (see %s --help)\n", e.what(), where.c_str());
    return 2;
  }
  // A GRAFT_CPU the build lacks, or this CPU cannot run, is a usage error like a bad option.
  if (const std::string error = graft::cpu::select_cpu_path_from_env(); !error.empty()) {
    std::fprintf(stderr, "graft: error: %s\n", error.c_str());
    return 2;
  }
  try {
    graft::select_gpu(gpu);
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "graft: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
