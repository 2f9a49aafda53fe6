#include "io/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/image.h"
#include "io/printable.h"

namespace graft {

namespace fs = std::filesystem;

namespace {

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Reads the first bytes only: enough to tell an image from a stray text file without decoding.
bool looks_like_image(const fs::path& p, std::string* why) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    *why = "cannot be opened";
    return false;
  }
  uint8_t head[16] = {};
  f.read(reinterpret_cast<char*>(head), sizeof(head));
  const size_t got = size_t(f.gcount());
  if (got == 0) {
    *why = "empty file";
    return false;
  }
  if (sniff_format(head, got) == ImageFormat::unknown) {
    *why = "not a JPEG or PNG file";
    return false;
  }
  return true;
}

// "3 classes: 'a', 'b', 'c'", the first 20 only past that ("... and 980 more"), so the user sees
// which folder names would be accepted without a thousand ImageNet labels on one line.
std::string list_classes(const std::vector<std::string>& classes) {
  constexpr size_t kShown = 20;
  std::string s =
      std::to_string(classes.size()) + (classes.size() == 1 ? " class: " : " classes: ");
  for (size_t i = 0; i < classes.size() && i < kShown; ++i)
    s += (i ? ", '" : "'") + printable(classes[i], 80) + "'";
  if (classes.size() > kShown) s += " ... and " + std::to_string(classes.size() - kShown) + " more";
  return s;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

Dataset scan_dataset(const std::string& root, const std::vector<std::string>* classes) {
  Dataset ds;
  ds.root = root;
  std::error_code ec;
  // exists() clears ec when the path is simply missing and sets it when the path cannot be
  // looked at (a folder above it without permission), which is not the same fault.
  if (!fs::exists(root, ec)) {
    if (ec) throw DatasetError(printable(root) + ": cannot be read: " + ec.message());
    throw DatasetError(printable(root) +
                       ": does not exist (expected a folder with one sub-folder of images per "
                       "class)");
  }
  if (!fs::is_directory(root, ec))
    throw DatasetError(printable(root) +
                       ": not a folder (expected one sub-folder of images per class)");

  std::vector<std::string> folders;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (hidden(it->path())) continue;
    if (it->is_directory(ec))
      folders.push_back(it->path().filename().string());
    else
      ds.skipped.push_back(printable(it->path().string()) + ": not inside a class folder");
  }
  if (ec) throw DatasetError(printable(root) + ": cannot be read: " + ec.message());
  std::sort(folders.begin(), folders.end());

  if (classes) {
    ds.classes = *classes;
    for (const auto& f : folders)
      if (std::find(classes->begin(), classes->end(), f) == classes->end())
        throw DatasetError(printable(root) + ": class folder '" + printable(f) +
                           "' is not one of the model's " + list_classes(*classes));
  }

  std::vector<std::string> kept;
  for (const auto& cls : folders) {
    std::vector<std::string> files;
    const fs::path dir = fs::path(root) / cls;
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec),
        end;
    for (; !ec && it != end; it.increment(ec)) {
      if (hidden(it->path())) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_directory(ec)) continue;
      std::string why;
      if (!it->is_regular_file(ec))
        ds.skipped.push_back(printable(it->path().string()) + ": not a regular file");
      else if (!looks_like_image(it->path(), &why))
        ds.skipped.push_back(printable(it->path().string()) + ": " + why);
      else
        files.push_back(it->path().string());
    }
    if (ec) throw DatasetError(printable(dir.string()) + ": cannot be read: " + ec.message());
    if (files.empty()) {
      ds.skipped.push_back(printable(dir.string()) + ": class folder without images, left out");
      ++ds.skipped_folders;
      continue;
    }
    std::sort(files.begin(), files.end());
    int label;
    if (classes) {
      label = int(std::find(classes->begin(), classes->end(), cls) - classes->begin());
    } else {
      label = int(kept.size());
      kept.push_back(cls);
    }
    for (auto& f : files) ds.items.push_back({std::move(f), label});
  }
  if (!classes) {
    ds.classes = kept;
    if (ds.classes.size() < 2)
      throw DatasetError(printable(root) +
                         ": needs at least two class folders with images, found " +
                         std::to_string(ds.classes.size()));
  } else if (ds.items.empty()) {
    throw DatasetError(printable(root) + ": no images found");
  }
  return ds;
}

Split split_dataset(const Dataset& ds, double val_fraction, double test_fraction, uint64_t seed) {
  if (val_fraction < 0 || test_fraction < 0 || val_fraction + test_fraction >= 1)
    throw DatasetError(printable(ds.root) +
                       ": validation and test fractions must be >= 0 and sum to < 1");
  Split s;
  for (int c = 0; c < int(ds.classes.size()); ++c) {
    std::vector<int> idx;
    for (int i = 0; i < int(ds.items.size()); ++i)
      if (ds.items[i].label == c) idx.push_back(i);
    if (idx.empty()) continue;
    SplitMix64 g{seed ^ fnv1a(ds.classes[c])};
    shuffle_with(idx, g);
    const int n = int(idx.size());
    int n_test = int(std::lround(n * test_fraction));
    int n_val = int(std::lround(n * val_fraction));
    while (n_test + n_val > n - 1 && (n_test > 0 || n_val > 0)) {
      if (n_val >= n_test && n_val > 0)
        --n_val;
      else
        --n_test;
    }
    s.test.insert(s.test.end(), idx.begin(), idx.begin() + n_test);
    s.val.insert(s.val.end(), idx.begin() + n_test, idx.begin() + n_test + n_val);
    s.train.insert(s.train.end(), idx.begin() + n_test + n_val, idx.end());
  }
  for (auto* v : {&s.train, &s.val, &s.test}) std::sort(v->begin(), v->end());
  if (s.train.empty()) throw DatasetError(printable(ds.root) + ": the training split is empty");
  if (val_fraction > 0 && s.val.empty())
    throw DatasetError(printable(ds.root) +
                       ": the validation split is empty (too few images per class)");
  if (test_fraction > 0 && s.test.empty())
    throw DatasetError(printable(ds.root) + ": the test split is empty (too few images per class)");
  return s;
}

}  // namespace graft
