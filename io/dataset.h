#pragma once
// Image-classification datasets laid out as one sub-folder per class (labels are the folder
// names, sorted), and the deterministic stratified train/validation/test split.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace graft {

// A dataset that cannot be trained on (fewer than two classes with images, an empty split, an
// unreadable folder): what() is one line naming the folder and the fault.
struct DatasetError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DatasetItem {
  std::string path;
  int label = 0;
};

struct Dataset {
  std::string root;
  std::vector<std::string> classes;  // index = label
  std::vector<DatasetItem> items;    // sorted by class, then path
  // Files and folders left out, one line each ("<path>: <why>"), for the run's summary.
  std::vector<std::string> skipped;
  int skipped_folders = 0;  // how many of `skipped` are class folders left out (no images)
};

// Scans root/<class>/... recursively. Hidden files and folders are ignored; files whose first
// bytes are not JPEG or PNG are skipped with a note (decoding errors are found later, when the
// image is read); empty class folders are left out with a note. When `classes` is given (a
// model's labels, or the training set's), the folder's class names must be among them (the error
// lists them, the first 20 past that) and labels follow that list. Throws DatasetError when root
// does not exist or is not a folder, fewer than two classes hold images (unless `classes` is
// given, as for a test folder), or the folder cannot be read.
Dataset scan_dataset(const std::string& root, const std::vector<std::string>* classes = nullptr);

struct Split {
  std::vector<int> train, val, test;  // indices into Dataset::items
};

// Stratified and deterministic: each class's items (in path order) are shuffled by a generator
// seeded from `seed` and the class name, then the first round(n * test_fraction) go to test, the
// next round(n * val_fraction) to validation, the rest to train (at least one per class stays in
// train). Throws DatasetError if a requested split ends up empty.
Split split_dataset(const Dataset& ds, double val_fraction, double test_fraction, uint64_t seed);

// A small, portable 64-bit generator (splitmix64): the split and the shuffles must not depend on
// the standard library's distribution implementations.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias worth caring about for n << 2^64.
  uint64_t below(uint64_t n) { return next() % n; }
};

// Fisher-Yates shuffle of v with g.
template <typename T>
void shuffle_with(std::vector<T>& v, SplitMix64& g) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
}

}  // namespace graft
