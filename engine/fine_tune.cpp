#include "engine/fine_tune.h"

#include <cmath>
#include <stdexcept>

namespace graft {

int fine_tune_blocks(const std::string& setting, const Net& net) {
  const int blocks = count_blocks(net);
  if (setting == "all") return blocks;
  int n = -1;
  size_t used = 0;
  try {
    n = std::stoi(setting, &used);
  } catch (const std::logic_error&) {
  }
  if (n < 0 || used != setting.size())
    throw std::invalid_argument("--fine-tune must be a number of blocks or all, not '" + setting +
                                "'");
  if (n > blocks)
    throw std::invalid_argument("--fine-tune " + setting + ": " + net.arch + " has " +
                                std::to_string(blocks) +
                                " blocks (the stem, its blocks and the final conv); use all");
  return n;
}

BackboneState backbone_download(const Device& dev, const Network& net, bool with_moments) {
  BackboneState s;
  if (!backbone_trained(net)) return s;
  const size_t begin = net.bp.param_begin, count = net.backbone.model->net.params.size() - begin;
  s.params.resize(count);
  copy_to_host(dev, s.params.data(), net.backbone.params + begin, count * 4);
  if (with_moments) {
    s.m.resize(count);
    s.v.resize(count);
    copy_to_host(dev, s.m.data(), net.moments_m, count * 4);
    copy_to_host(dev, s.v.data(), net.moments_v, count * 4);
  }
  synchronize(dev);
  return s;
}

void backbone_upload(const Device& dev, Network& net, const BackboneState& s) {
  const size_t begin = net.bp.param_begin;
  const size_t count = backbone_trained(net) ? net.backbone.model->net.params.size() - begin : 0;
  if (s.params.size() != count || (!s.m.empty() && (s.m.size() != count || s.v.size() != count)))
    throw std::runtime_error("the saved backbone has " + std::to_string(s.params.size()) +
                             " trained parameters, this run trains " + std::to_string(count));
  if (count == 0) return;
  copy_to_device(dev, net.backbone.params + begin, s.params.data(), count * 4);
  if (!s.m.empty()) {
    copy_to_device(dev, net.moments_m, s.m.data(), count * 4);
    copy_to_device(dev, net.moments_v, s.v.data(), count * 4);
  }
  synchronize(dev);  // the host vectors may go away when we return
}

namespace {

// The float variance whose sum with eps is exactly 1, so the loader's gamma / sqrt(var + eps) is
// exactly 1 and folding changes nothing.
float unit_variance(float eps) {
  float v = 1.0f - eps;
  for (int i = 0; i < 8 && v + eps != 1.0f; ++i) v = std::nextafter(v, v + eps < 1.0f ? 2.f : 0.f);
  if (v + eps != 1.0f) throw std::logic_error("no variance folds to 1 for this epsilon");
  return v;
}

}  // namespace

std::vector<OwnedTensor> trained_backbone_tensors(const Model& model, int first_op,
                                                  size_t param_begin,
                                                  const std::vector<float>& params) {
  const Net& net = model.net;
  const float var = unit_variance(model.bn_eps);
  std::vector<OwnedTensor> out;
  for (size_t i = first_op; i < net.ops.size(); ++i) {
    if (net.ops[i].kind != OpKind::conv) continue;
    const ConvSpec& c = net.ops[i].conv;
    const int ipg = c.in_c / c.groups;
    const float* hwio = params.data() + (net.w_off[i] - param_begin);
    const float* bias = params.data() + (net.b_off[i] - param_begin);
    OwnedTensor w{c.name + ".conv.weight", {c.out_c, ipg, c.k, c.k}, {}};
    w.data.resize(size_t(c.out_c) * ipg * c.k * c.k);
    for (int o = 0; o < c.out_c; ++o)  // HWIO back to the file's OIHW
      for (int ci = 0; ci < ipg; ++ci)
        for (int ky = 0; ky < c.k; ++ky)
          for (int kx = 0; kx < c.k; ++kx)
            w.data[((size_t(o) * ipg + ci) * c.k + ky) * c.k + kx] =
                hwio[((size_t(ky) * c.k + kx) * ipg + ci) * c.out_c + o];
    out.push_back(std::move(w));
    const std::vector<int64_t> per_channel = {c.out_c};
    out.push_back({c.name + ".bn.weight", per_channel, std::vector<float>(c.out_c, 1.f)});
    out.push_back({c.name + ".bn.bias", per_channel, std::vector<float>(bias, bias + c.out_c)});
    out.push_back({c.name + ".bn.running_mean", per_channel, std::vector<float>(c.out_c, 0.f)});
    out.push_back({c.name + ".bn.running_var", per_channel, std::vector<float>(c.out_c, var)});
  }
  return out;
}

}  // namespace graft
