#pragma once
// Fine-tuning seen from a run: which blocks the --fine-tune setting trains, host copies of the
// trained backbone parameters and their optimiser moments (for checkpoints and the kept model),
// and the model file's tensors for a trained backbone.
//
// Batch norm stays frozen (inference mode, as the Keras fine-tuning guide prescribes): the loader
// folds it into each conv, w' = w * gamma / sqrt(var + eps) and b' = beta + (b - mean) * gamma /
// sqrt(var + eps), and it is w' and b' that train. A model file keeps graft's usual layout: each
// trained conv is written with weight w' and a batch norm that is the identity (gamma 1, mean 0,
// variance 1 - eps, beta b'), which the loader folds back to exactly w' and b'.
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/network.h"
#include "io/safetensors.h"

namespace graft {

// "0" (none), a block count, or "all". Throws std::invalid_argument naming --fine-tune and the
// number of blocks the arch has when the setting does not fit it.
int fine_tune_blocks(const std::string& setting, const Net& net);

// The trained slice of the backbone's parameters (net.params[bp.param_begin, end), as trained)
// and its optimiser moments; empty vectors when the backbone is frozen.
struct BackboneState {
  std::vector<float> params, m, v;
};
BackboneState backbone_download(const Device& dev, const Network& net, bool with_moments);
// Restores params (and m, v when not empty); sizes must match the network's trained slice.
void backbone_upload(const Device& dev, Network& net, const BackboneState& s);

// The model file's tensors for the trained convs (ops from first_op on) with the trained slice
// `params` (offsets from param_begin), as described above; names are the file's own.
struct OwnedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};
std::vector<OwnedTensor> trained_backbone_tensors(const Model& model, int first_op,
                                                  size_t param_begin,
                                                  const std::vector<float>& params);

}  // namespace graft
