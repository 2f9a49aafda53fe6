#include "engine/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
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
  add("backbone.params", c.backbone);
  add("backbone.m", c.backbone_m);
  add("backbone.v", c.backbone_v);
  add("best.backbone.params", c.best_backbone);
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
  c.backbone = get("backbone.params");
  c.backbone_m = get("backbone.m");
  c.backbone_v = get("backbone.v");
  c.best_backbone = get("best.backbone.params");
  if (c.best_out.w.size() != size_t(shape.classes) * in2)
    throw std::runtime_error(path + ": checkpoint does not match the run's head");
  return c;
}

int checkpoint_epoch(const std::string& path) {
  if (!std::filesystem::exists(path)) return 0;
  WeightFile f = open_weights(path);
  const auto it = f.metadata.find("epoch");
  try {
    if (it != f.metadata.end()) return std::stoi(it->second);
  } catch (const std::logic_error&) {
  }
  throw std::runtime_error(path + ": checkpoint metadata is malformed");
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](int err) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;  // nothing was created: nothing to remove
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      fail(err);
    }
    done += size_t(n);
  }
  // A full disk can show first at fsync or close.
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail(err);
  }
  if (::close(fd) != 0) fail(errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(errno);
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
  write_file_atomic(path, out);
}

}  // namespace graft
