#include "tools/setting_options.h"

#include <algorithm>
#include <type_traits>

namespace graft {

namespace {

template <class T>
void add_one(CLI::App* cmd, const SettingInfo& s, T& field) {
  if constexpr (std::is_same_v<T, bool>) {
    cmd->add_flag(s.flag, field, s.help);
  } else {
    CLI::Option* o = cmd->add_option(s.flag, field, s.help);
    if constexpr (std::is_arithmetic_v<T>)
      if (s.min <= s.max) o->check(CLI::Range(static_cast<T>(s.min), static_cast<T>(s.max)));
    if (!s.choices.empty()) o->check(CLI::IsMember(s.choices));
    // Paths have no default worth printing; numbers and words do.
    if (!std::is_same_v<T, std::string> || !s.choices.empty()) o->capture_default_str();
  }
}

}  // namespace

void add_setting_options(CLI::App* cmd, TrainConfig& cfg, const std::vector<std::string>& flags) {
  if (flags.empty()) {
    visit_settings(cfg, [&](const SettingInfo& s, auto& field) { add_one(cmd, s, field); });
    return;
  }
  for (const std::string& flag : flags) {
    bool found = false;
    visit_settings(cfg, [&](const SettingInfo& s, auto& field) {
      if (flag == s.flag) add_one(cmd, s, field), found = true;
    });
    if (!found) throw std::logic_error("no run setting has the flag " + flag);
  }
}

}  // namespace graft
