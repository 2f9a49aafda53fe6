#include "tools/python_tool.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace graft {

namespace fs = std::filesystem;

namespace {

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

}  // namespace

std::string python_tool_path(const std::string& script) {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("GRAFT_TOOLS_DIR"); env && *env) {
    dirs.push_back(env);
  } else if (const fs::path exe = executable_dir(); !exe.empty()) {
    dirs.push_back(exe / ".." / "share" / "graft" / "tools");
    dirs.push_back(exe / "share" / "graft" / "tools");
  }
  std::string searched;
  for (const fs::path& d : dirs) {
    std::error_code ec;
    const fs::path p = (d / script).lexically_normal();
    if (fs::is_regular_file(p, ec)) return p.string();
    searched += (searched.empty() ? "" : ", ") + p.parent_path().string();
  }
  throw std::runtime_error(script + ": not found in " + (searched.empty() ? "?" : searched) +
                           " (reinstall graft, or set GRAFT_TOOLS_DIR to the folder holding it)");
}

int run_python_tool(const std::string& script, const std::vector<std::string>& args) {
  const char* env = std::getenv("GRAFT_PYTHON");
  std::vector<std::string> all = {env && *env ? env : "python3", script};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : all) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("cannot start " + all[0]);
  if (pid == 0) {
    execvp(argv[0], argv.data());
    std::perror(("graft: error: " + all[0]).c_str());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) throw std::runtime_error("lost the " + script + " process");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace graft
