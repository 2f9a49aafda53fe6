// libFuzzer target: builds a small folder tree from the input bytes, then scan_dataset,
// split_dataset on it.
//
// The input is a little program: each step makes a class folder, a file (with JPEG or PNG
// magic, random bytes, or empty), a hidden entry, a nested folder, a stray file at the root or
// a symlink (dangling, to a file, to a folder, to itself), with names made of arbitrary bytes.
// A dataset that cannot be used must be a DatasetError; anything else escaping aborts.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace fs = std::filesystem;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_dataset: invariant broken: %s\n", what);
    std::abort();
  }
}

// One scratch folder per fuzzer process, removed at exit.
const fs::path& scratch() {
  static const fs::path dir = [] {
    std::string tmpl = (fs::temp_directory_path() / "graft-fuzz-dataset-XXXXXX").string();
    check(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch(), ec);
    });
    return fs::path(tmpl);
  }();
  return dir;
}

// A file name from arbitrary bytes: anything but '/' and NUL, which no name can hold, and not
// "." or "..". May start with '.', which makes it hidden.
std::string entry_name(FuzzedDataProvider& in) {
  std::string name = in.ConsumeRandomLengthString(12);
  name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == '/' || c == 0; }),
             name.end());
  if (name.empty() || name == "." || name == "..") name += "x";
  return name;
}

void write_file(const fs::path& p, FuzzedDataProvider& in) {
  static const std::string kMagic[] = {
      "",                                   // empty file
      "\xFF\xD8\xFF\xE0",                   // JPEG
      std::string("\x89PNG\r\n\x1a\n", 8),  // PNG
      "GIF89a",                             // a format the scanner does not take
      "\xFF\xD8",                           // too short to be sure of
  };
  std::string content = kMagic[in.ConsumeIntegralInRange<size_t>(0, 4)];
  content += in.ConsumeRandomLengthString(24);
  std::ofstream(p, std::ios::binary) << content;
}

// Runs the input's steps inside `root`. Failures to create an entry (a name already taken by a
// folder, say) are part of the game and ignored.
void build_tree(const fs::path& root, FuzzedDataProvider& in) {
  std::vector<fs::path> folders;  // class folders and their sub-folders, for later steps
  for (int step = 0; step < 64 && in.remaining_bytes() > 0; ++step) {
    std::error_code ec;
    const fs::path parent =
        folders.empty() ? root : folders[in.ConsumeIntegralInRange<size_t>(0, folders.size() - 1)];
    switch (in.ConsumeIntegralInRange(0, 6)) {
      case 0: {  // class folder
        const fs::path p = root / entry_name(in);
        if (fs::create_directory(p, ec)) folders.push_back(p);
        break;
      }
      case 1:  // sub-folder
      case 2: {
        const fs::path p = parent / entry_name(in);
        if (fs::create_directory(p, ec)) folders.push_back(p);
        break;
      }
      case 3:  // file in a folder
      case 4:
        write_file(parent / entry_name(in), in);
        break;
      case 5:  // stray file at the root
        write_file(root / entry_name(in), in);
        break;
      case 6: {  // symlink: target relative to its folder, maybe dangling or a loop
        static const char* kTargets[] = {".", "..", "missing", "self"};
        std::string target = kTargets[in.ConsumeIntegralInRange(0, 3)];
        const fs::path link = parent / entry_name(in);
        if (target == "self") target = link.filename().string();
        fs::create_symlink(target, link, ec);
        break;
      }
    }
  }
}

void check_scan(const graft::Dataset& ds, bool labels_given) {
  for (size_t i = 0; i < ds.items.size(); ++i) {
    check(ds.items[i].label >= 0 && size_t(ds.items[i].label) < ds.classes.size(), "label range");
    // "Sorted by class, then path": by folder name, which is label order only when the labels
    // came from the folders (a model's labels may be in any order).
    if (i > 0) {
      const auto& a = ds.items[i - 1];
      const auto& b = ds.items[i];
      const auto& ca = ds.classes[a.label];
      const auto& cb = ds.classes[b.label];
      check(ca < cb || (ca == cb && a.path < b.path), "item order");
      if (!labels_given) check(a.label <= b.label, "label order");
    }
  }
}

void check_split(const graft::Dataset& ds, const graft::Split& s) {
  std::vector<int> all;
  for (const auto* v : {&s.train, &s.val, &s.test}) all.insert(all.end(), v->begin(), v->end());
  std::sort(all.begin(), all.end());
  check(all.size() == ds.items.size(), "split loses or repeats items");
  for (size_t i = 0; i < all.size(); ++i) check(all[i] == int(i), "split index");
}

void scan_and_split(const fs::path& root, const std::vector<std::string>* classes,
                    FuzzedDataProvider& in) {
  try {
    const graft::Dataset ds = graft::scan_dataset(root.string(), classes);
    check_scan(ds, classes != nullptr);
    const double val = in.ConsumeIntegralInRange(0, 10) / 20.0;
    const double test = in.ConsumeIntegralInRange(0, 10) / 20.0;
    const uint64_t seed = in.ConsumeIntegral<uint64_t>();
    const graft::Split split = graft::split_dataset(ds, val, test, seed);
    check_split(ds, split);
  } catch (const graft::DatasetError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const fs::path root = scratch() / "data";
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::create_directory(root);
  build_tree(root, in);

  // As for training (labels from the folders), then as for a test folder checked against a
  // model's labels: the folders found, plus or minus one.
  scan_and_split(root, nullptr, in);
  std::vector<std::string> labels;
  for (const auto& e : fs::directory_iterator(root, ec)) labels.push_back(e.path().filename());
  if (!labels.empty() && in.ConsumeBool()) labels.pop_back();
  if (in.ConsumeBool()) labels.push_back("extra");
  scan_and_split(root, &labels, in);

  fs::remove_all(root, ec);
  return 0;
}
