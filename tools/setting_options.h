#pragma once
// Command-line options made from the run settings' one declaration (engine/config.h).
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "engine/config.h"

namespace graft {

// Adds each setting's option to cmd, bound to its field in cfg (which must outlive the parse),
// with its help, its default as it stands in cfg, and its range or choices as a check. `flags`
// picks the settings by flag, in that order; empty means all of them.
void add_setting_options(CLI::App* cmd, TrainConfig& cfg,
                         const std::vector<std::string>& flags = {});

}  // namespace graft
