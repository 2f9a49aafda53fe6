#pragma once
// A model as graft loads it from one self-describing weight file: the backbone (BN folded into
// its convs, weights re-laid to HWIO), an optional classifier, the labels and the preprocessing.
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/net.h"
#include "io/image.h"

namespace graft {

// A weight file that does not describe a usable model: what() is one line naming the file and
// the fault.
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Dense layer y = x W^T + b, W [out][in] (PyTorch's layout).
struct Dense {
  int in = 0, out = 0;
  std::vector<float> w, b;
};

struct Model {
  std::string path;
  Net net;  // parameters folded and filled
  float bn_eps = 1e-5f;
  Dense fc;      // the file's classifier; out == 0 when the file holds a backbone only
  Dense hidden;  // optional hidden layer before fc (ReLU after it); out == 0 when absent
  std::vector<std::string> labels;
  Preprocess preprocess;
  std::map<std::string, std::string> metadata;
  size_t file_tensor_count = 0;
  size_t file_parameter_count = 0;  // elements in the file, before folding
};

// Opens, validates and folds. Throws ModelError (or WeightFileError for a malformed container).
Model load_model(const std::string& path);

// The tensors a file must hold for `net` (name -> shape), excluding the classifier.
std::map<std::string, std::vector<int64_t>> expected_backbone_tensors(const Net& net);

}  // namespace graft
