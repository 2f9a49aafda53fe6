#include "engine/model.h"

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/safetensors.h"

namespace graft {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ModelError(path + ": " + what);
}

const std::string& meta(const Model& m, const std::string& key) {
  auto it = m.metadata.find(key);
  if (it == m.metadata.end()) fail(m.path, "metadata has no '" + key + "'");
  return it->second;
}

double parse_number(const Model& m, const std::string& key, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v))
    fail(m.path, "metadata '" + key + "' is not a number: '" + text + "'");
  return v;
}

void parse_triple(const Model& m, const std::string& key, float out[3]) {
  std::stringstream ss(meta(m, key));
  std::string item;
  int i = 0;
  while (std::getline(ss, item, ',')) {
    if (i == 3) fail(m.path, "metadata '" + key + "' must hold 3 comma-separated numbers");
    out[i++] = float(parse_number(m, key, item));
  }
  if (i != 3) fail(m.path, "metadata '" + key + "' must hold 3 comma-separated numbers");
}

void parse_preprocess(Model& m) {
  Preprocess& p = m.preprocess;
  if (m.metadata.count("input_size")) {
    double size = parse_number(m, "input_size", meta(m, "input_size"));
    if (size < 16 || size > 4096 || size != std::floor(size))
      fail(m.path, "metadata 'input_size' must be an integer in [16, 4096]");
    p.size = int(size);
  }
  if (m.metadata.count("resize_mode")) {
    p.resize_mode = meta(m, "resize_mode");
    if (p.resize_mode != "center_crop" && p.resize_mode != "squash")
      fail(m.path,
           "metadata 'resize_mode' must be center_crop or squash, not '" + p.resize_mode + "'");
  }
  if (m.metadata.count("crop_fraction")) {
    p.crop_fraction = float(parse_number(m, "crop_fraction", meta(m, "crop_fraction")));
    if (!(p.crop_fraction > 0.f && p.crop_fraction <= 1.f))
      fail(m.path, "metadata 'crop_fraction' must be in (0, 1]");
  }
  if (m.metadata.count("mean")) parse_triple(m, "mean", p.mean);
  if (m.metadata.count("std")) {
    parse_triple(m, "std", p.std);
    for (float s : p.std)
      if (!(s > 0.f)) fail(m.path, "metadata 'std' values must be positive");
  }
}

void parse_labels(Model& m) {
  if (!m.metadata.count("labels")) return;
  nlohmann::json j = nlohmann::json::parse(meta(m, "labels"), nullptr, false);
  if (j.is_discarded() || !j.is_array()) fail(m.path, "metadata 'labels' is not a JSON array");
  for (const auto& e : j) {
    if (!e.is_string()) fail(m.path, "metadata 'labels' must hold only strings");
    m.labels.push_back(e.get<std::string>());
  }
}

const TensorView& require(const Model& m, const WeightFile& f, const std::string& name,
                          const std::vector<int64_t>& shape) {
  const TensorView* t = find_tensor(f, name);
  if (!t) fail(m.path, "tensor '" + name + "' is missing (arch " + m.net.arch + ")");
  if (t->shape != shape)
    fail(m.path, "tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected " +
                     shape_str(shape));
  return *t;
}

std::vector<float> to_f32(const Model& m, const TensorView& t) {
  std::vector<float> v;
  try {
    v = tensor_to_f32(t);
  } catch (const std::exception& e) {
    fail(m.path, "tensor '" + t.name + "': " + e.what());
  }
  for (float x : v)
    if (!std::isfinite(x)) fail(m.path, "tensor '" + t.name + "' holds a NaN or infinity");
  return v;
}

}  // namespace

std::map<std::string, std::vector<int64_t>> expected_backbone_tensors(const Net& net) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const NetOp& op : net.ops) {
    if (op.kind != OpKind::conv) continue;
    const ConvSpec& c = op.conv;
    out[c.name + ".conv.weight"] = {c.out_c, c.in_c / c.groups, c.k, c.k};
    for (const char* bn : {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"})
      out[c.name + bn] = {c.out_c};
  }
  return out;
}

namespace {

// The arch, padding, batch-norm epsilon, preprocessing and labels from the file's metadata.
void read_metadata(Model& m) {
  const std::string& arch = meta(m, "arch");
  try {
    m.net = build_arch(arch);
  } catch (const std::invalid_argument& e) {
    fail(m.path, e.what());
  }
  if (m.metadata.count("padding")) {
    const std::string& pad = meta(m, "padding");
    if (pad == "tf_same")
      m.net.padding = PadMode::tf_same;
    else if (pad == "symmetric")
      m.net.padding = PadMode::symmetric;
    else
      fail(m.path, "metadata 'padding' must be tf_same or symmetric, not '" + pad + "'");
  }
  if (m.metadata.count("bn_eps")) {
    m.bn_eps = float(parse_number(m, "bn_eps", meta(m, "bn_eps")));
    if (!(m.bn_eps > 0.f && m.bn_eps < 1.f)) fail(m.path, "metadata 'bn_eps' must be in (0, 1)");
  }
  parse_preprocess(m);
  parse_labels(m);
}

// Every tensor must be one the arch expects: an extra tensor means the file is for another model
// (or a different variant), and silently ignoring it would hide that.
void reject_unexpected_tensors(const Model& m, const WeightFile& file) {
  std::set<std::string> allowed;
  for (const auto& [name, shape] : expected_backbone_tensors(m.net)) allowed.insert(name);
  for (const NetOp& op : m.net.ops)
    if (op.kind == OpKind::conv) allowed.insert(op.conv.name + ".conv.bias");
  for (const char* n : {"fc.weight", "fc.bias", "hidden.weight", "hidden.bias"}) allowed.insert(n);
  for (const TensorView& t : file.tensors)
    if (!allowed.count(t.name))
      fail(m.path, "tensor '" + t.name + "' is unexpected for arch " + m.net.arch);
}

// Batch norm folded into each conv: w' = w * g / sqrt(var + eps), b' = beta + (b - mean) * g /
// sqrt(var + eps); and the weights re-laid OIHW -> HWIO so the kernels read output channels
// contiguously. Fills net.params, w_off and b_off.
void fold_batch_norm(Model& m, const WeightFile& file) {
  Net& net = m.net;
  const auto expected = expected_backbone_tensors(net);
  net.w_off.assign(net.ops.size(), 0);
  net.b_off.assign(net.ops.size(), 0);
  net.params.clear();
  for (size_t i = 0; i < net.ops.size(); ++i) {
    if (net.ops[i].kind != OpKind::conv) continue;
    const ConvSpec& c = net.ops[i].conv;
    const int ipg = c.in_c / c.groups;
    auto w =
        to_f32(m, require(m, file, c.name + ".conv.weight", expected.at(c.name + ".conv.weight")));
    auto gamma = to_f32(m, require(m, file, c.name + ".bn.weight", {c.out_c}));
    auto beta = to_f32(m, require(m, file, c.name + ".bn.bias", {c.out_c}));
    auto mean = to_f32(m, require(m, file, c.name + ".bn.running_mean", {c.out_c}));
    auto var = to_f32(m, require(m, file, c.name + ".bn.running_var", {c.out_c}));
    std::vector<float> bias(c.out_c, 0.f);
    if (find_tensor(file, c.name + ".conv.bias"))
      bias = to_f32(m, require(m, file, c.name + ".conv.bias", {c.out_c}));
    for (float v : var)
      if (v < 0.f) fail(m.path, "tensor '" + c.name + ".bn.running_var' has a negative variance");

    net.w_off[i] = net.params.size();
    net.params.resize(net.params.size() + size_t(c.k) * c.k * ipg * c.out_c);
    float* hwio = net.params.data() + net.w_off[i];
    for (int o = 0; o < c.out_c; ++o) {
      const float scale = gamma[o] / std::sqrt(var[o] + m.bn_eps);
      for (int ci = 0; ci < ipg; ++ci)
        for (int ky = 0; ky < c.k; ++ky)
          for (int kx = 0; kx < c.k; ++kx)
            hwio[((size_t(ky) * c.k + kx) * ipg + ci) * c.out_c + o] =
                w[((size_t(o) * ipg + ci) * c.k + ky) * c.k + kx] * scale;
    }
    net.b_off[i] = net.params.size();
    for (int o = 0; o < c.out_c; ++o) {
      const float scale = gamma[o] / std::sqrt(var[o] + m.bn_eps);
      net.params.push_back(beta[o] + (bias[o] - mean[o]) * scale);
    }
  }
}

// A trained head, if the file has one: an optional hidden layer (dense + ReLU) between the
// features and fc, then fc.
void read_head(Model& m, const WeightFile& file) {
  const std::string& path = m.path;
  const int feature_dim = m.net.feature_dim;
  int fc_in = feature_dim;
  const TensorView* hw = find_tensor(file, "hidden.weight");
  if (hw || find_tensor(file, "hidden.bias")) {
    if (!hw || hw->shape.size() != 2 || hw->shape[1] != feature_dim || hw->shape[0] < 1)
      fail(path,
           "tensor 'hidden.weight' must have shape [units, " + std::to_string(feature_dim) + "]");
    m.hidden.in = feature_dim;
    m.hidden.out = int(hw->shape[0]);
    m.hidden.w = to_f32(m, *hw);
    m.hidden.b = to_f32(m, require(m, file, "hidden.bias", {m.hidden.out}));
    fc_in = m.hidden.out;
  }
  const TensorView* fw = find_tensor(file, "fc.weight");
  const TensorView* fb = find_tensor(file, "fc.bias");
  if (m.hidden.out && !fw) fail(path, "tensor 'fc.weight' is missing after 'hidden.weight'");
  if (fw || fb) {
    if (!fw || !fb) fail(path, "classifier needs both 'fc.weight' and 'fc.bias'");
    if (fw->shape.size() != 2 || fw->shape[1] != fc_in || fw->shape[0] < 1)
      fail(path, "tensor 'fc.weight' has shape " + shape_str(fw->shape) + ", expected [classes, " +
                     std::to_string(fc_in) + "]");
    m.fc.in = fc_in;
    m.fc.out = int(fw->shape[0]);
    m.fc.w = to_f32(m, *fw);
    m.fc.b = to_f32(m, require(m, file, "fc.bias", {m.fc.out}));
    if (!m.labels.empty() && int(m.labels.size()) != m.fc.out)
      fail(path, "metadata has " + std::to_string(m.labels.size()) + " labels but the classifier " +
                     std::to_string(m.fc.out) + " outputs");
  }
}

}  // namespace

Model load_model(const std::string& path) {
  WeightFile file = open_weights(path);
  Model m;
  m.path = path;
  m.metadata = file.metadata;
  m.file_tensor_count = file.tensors.size();
  for (const TensorView& t : file.tensors) m.file_parameter_count += size_t(t.numel);
  read_metadata(m);
  reject_unexpected_tensors(m, file);
  fold_batch_norm(m, file);
  read_head(m, file);
  return m;
}

}  // namespace graft
