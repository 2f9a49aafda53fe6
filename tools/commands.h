#pragma once
// The graft subcommands. Each registers its options on the CLI11 app and returns the function
// that runs it (exit code); main() catches every error and prints it as one line.
#include <CLI/CLI.hpp>
#include <functional>

namespace graft {

using Command = std::function<int()>;

Command add_inspect_command(CLI::App& app);
Command add_predict_command(CLI::App& app);
Command add_convert_command(CLI::App& app);
Command add_export_command(CLI::App& app);
Command add_train_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_bench_command(CLI::App& app);

}  // namespace graft
