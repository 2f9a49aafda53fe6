#pragma once
// The Python side of the command line: `graft convert` and `graft export` run scripts that ship
// with graft (tools/*.py, installed to PREFIX/share/graft/tools). They are found relative to the
// graft executable, so an installed graft needs nothing from the source tree.
#include <string>
#include <vector>

namespace graft {

// The folder holding the scripts: $GRAFT_TOOLS_DIR, else EXE_DIR/../share/graft/tools (installed),
// else EXE_DIR/share/graft/tools (the build tree, where the build copies them). Throws, naming the
// places searched, when none holds `script`.
std::string python_tool_path(const std::string& script);

// Runs `$GRAFT_PYTHON (default python3) SCRIPT ARGS...` with stdout and stderr passed through;
// returns its exit code (1 when it died from a signal). Throws when Python cannot be started.
int run_python_tool(const std::string& script, const std::vector<std::string>& args);

}  // namespace graft
