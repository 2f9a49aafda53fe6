#include "engine/config.h"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <type_traits>

#include "engine/checkpoint.h"

namespace graft {

std::string shortest(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

namespace {

// A float widened to double prints as 0.004999999888241291; its shortest decimal, read as a
// double, prints as 0.005.
template <class T>
auto as_json(const T& v) {
  if constexpr (std::is_same_v<T, float>)
    return std::strtod(shortest(v).c_str(), nullptr);
  else
    return v;
}

std::string number_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

}  // namespace

void check_config(const TrainConfig& cfg) {
  TrainConfig c = cfg;  // visit_settings hands out mutable fields; nothing is changed here
  visit_settings(c, [](const SettingInfo& s, const auto& field) {
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      const double v = double(field);
      if (s.min <= s.max && !(v >= s.min && v <= s.max))  // NaN fails too
        throw std::invalid_argument(std::string(s.flag) + " must be in [" + number_text(s.min) +
                                    ", " + number_text(s.max) + "], not " + number_text(v));
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (s.choices.empty()) return;
      std::string list;
      for (const auto& w : s.choices) {
        if (w == field) return;
        list += (list.empty() ? "" : ", ") + w;
      }
      throw std::invalid_argument(std::string(s.flag) + " must be one of " + list + ", not '" +
                                  field + "'");
    }
  });
  if (cfg.cache == "on" && cfg.augment)
    throw std::invalid_argument("--cache-features on cannot be combined with --augment");
  const bool fine_tune = cfg.fine_tune != "0";
  if (fine_tune && cfg.fine_tune != "all" &&
      cfg.fine_tune.find_first_not_of("0123456789") != std::string::npos)
    throw std::invalid_argument("--fine-tune must be a number of blocks or all, not '" +
                                cfg.fine_tune + "'");
  if (!fine_tune && cfg.freeze_epochs > 0)
    throw std::invalid_argument(
        "--freeze-epochs needs --fine-tune (the backbone is frozen anyway)");
  if (fine_tune && cfg.freeze_epochs >= cfg.epochs)
    throw std::invalid_argument("--freeze-epochs " + std::to_string(cfg.freeze_epochs) +
                                " leaves none of the " + std::to_string(cfg.epochs) +
                                " --epochs to fine-tune in");
}

void save_config(const TrainConfig& cfg, const std::string& path) {
  TrainConfig c = cfg;
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  visit_settings(c, [&](const SettingInfo& s, const auto& field) {
    if (s.saved) j[s.key] = as_json(field);
  });
  write_file_atomic(path, j.dump(1) + "\n");
}

TrainConfig load_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot be read (is this a graft run folder?)");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::runtime_error(path + ": not a JSON object");
  TrainConfig c;
  visit_settings(c, [&](const SettingInfo& s, auto& field) {
    // A run made before a setting existed ran with what is now its default.
    if (!s.saved || !j.contains(s.key)) return;
    try {
      field = j.at(s.key).get<std::decay_t<decltype(field)>>();
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": setting '" + s.key + "': " + e.what());
    }
  });
  return c;
}

}  // namespace graft
