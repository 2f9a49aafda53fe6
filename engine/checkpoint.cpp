#include "engine/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "io/safetensors.h"

namespace graft {

namespace {

std::string hex_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%a", v);  // exact: resumed comparisons must not drift
  return buf;
}

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  std::vector<TensorToWrite> t;
  for (const auto& [name, v] : c.state)
    t.push_back({"head." + name, DType::f32, {int64_t(v.size())}, v.data(), v.size() * 4});
  auto add = [&](const std::string& name, const std::vector<float>& v) {
    if (!v.empty()) t.push_back({name, DType::f32, {int64_t(v.size())}, v.data(), v.size() * 4});
  };
  add("best.hidden.w", c.best_hidden.w);
  add("best.hidden.b", c.best_hidden.b);
  add("best.fc.w", c.best_out.w);
  add("best.fc.b", c.best_out.b);
  write_weights(path, t,
                {{"format", "graft-checkpoint"},
                 {"epoch", std::to_string(c.epoch)},
                 {"head_step", std::to_string(c.head_step)},
                 {"best_val_loss", hex_double(c.best_val_loss)},
                 {"since_best", std::to_string(c.since_best)},
                 {"overfit_epochs", std::to_string(c.overfit_epochs)},
                 {"overfit_warned", c.overfit_warned ? "1" : "0"}});
}

Checkpoint read_checkpoint(const std::string& path, const HeadShape& shape) {
  WeightFile f = open_weights(path);
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end()) throw std::runtime_error(path + ": checkpoint has no '" + k + "'");
    return it->second;
  };
  Checkpoint c;
  try {
    c.epoch = std::stoi(meta("epoch"));
    c.head_step = std::stoll(meta("head_step"));
    c.best_val_loss = std::strtod(meta("best_val_loss").c_str(), nullptr);
    c.since_best = std::stoi(meta("since_best"));
    c.overfit_epochs = std::stoi(meta("overfit_epochs"));
    c.overfit_warned = meta("overfit_warned") == "1";
  } catch (const std::logic_error&) {
    throw std::runtime_error(path + ": checkpoint metadata is malformed");
  }
  for (const TensorView& t : f.tensors) {
    if (t.name.rfind("head.", 0) == 0) c.state.emplace_back(t.name.substr(5), tensor_to_f32(t));
  }
  auto get = [&](const std::string& name) {
    const TensorView* t = find_tensor(f, name);
    return t ? tensor_to_f32(*t) : std::vector<float>{};
  };
  const int in2 = shape.hidden ? shape.hidden : shape.in;
  if (shape.hidden) {
    c.best_hidden = Dense{shape.in, shape.hidden, get("best.hidden.w"), get("best.hidden.b")};
    if (c.best_hidden.w.size() != size_t(shape.hidden) * shape.in)
      throw std::runtime_error(path + ": checkpoint does not match the run's head");
  }
  c.best_out = Dense{in2, shape.classes, get("best.fc.w"), get("best.fc.b")};
  if (c.best_out.w.size() != size_t(shape.classes) * in2)
    throw std::runtime_error(path + ": checkpoint does not match the run's head");
  return c;
}

void truncate_metrics(const std::string& path, int epochs) {
  std::ifstream in(path);
  std::string out, line;
  int kept = 0;
  while (kept < epochs && std::getline(in, line)) {
    out += line + "\n";
    ++kept;
  }
  in.close();
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp, std::ios::trunc) << out;
  std::filesystem::rename(tmp, path);
}

}  // namespace graft
