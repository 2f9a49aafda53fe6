// scan_dataset's one-line errors for the folder a user passes as --data: a missing path, a file,
// and a class sub-folder the model does not know (the message lists the model's classes).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace graft {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the system temp folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("graft-dataset-" +
            std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string error_of(const std::string& root, const std::vector<std::string>* classes = nullptr) {
  try {
    scan_dataset(root, classes);
  } catch (const DatasetError& e) {
    return e.what();
  }
  return "";
}

TEST(ScanDataset, MissingPathSaysItDoesNotExist) {
  TempDir tmp;
  const std::string root = (tmp.path / "nowhere").string();
  const std::string msg = error_of(root);
  EXPECT_NE(msg.find(root + ": does not exist"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("not a folder"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(ScanDataset, FileSaysItIsNotAFolder) {
  TempDir tmp;
  const std::string root = (tmp.path / "photo.jpg").string();
  std::ofstream(root) << "not a folder";
  const std::string msg = error_of(root);
  EXPECT_NE(msg.find(root + ": not a folder"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(ScanDataset, UnknownClassFolderListsTheModelsClasses) {
  TempDir tmp;
  for (const char* c : {"cat", "dog", "zebra"}) fs::create_directories(tmp.path / c);
  const std::vector<std::string> classes = {"cat", "dog", "tiger cat"};
  const std::string msg = error_of(tmp.path.string(), &classes);
  EXPECT_NE(msg.find("class folder 'zebra' is not one of the model's 3 classes: 'cat', 'dog', "
                     "'tiger cat'"),
            std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("more"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(ScanDataset, UnknownClassFolderListsTwentyOfAThousandClasses) {
  TempDir tmp;
  fs::create_directories(tmp.path / "zebra");
  std::vector<std::string> classes;
  for (int i = 0; i < 1000; ++i) classes.push_back("class" + std::to_string(i));
  const std::string msg = error_of(tmp.path.string(), &classes);
  EXPECT_NE(msg.find("'zebra' is not one of the model's 1000 classes: 'class0', 'class1', "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("'class19' ... and 980 more"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("'class20'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(ScanDataset, KnownClassFoldersAreAccepted) {
  TempDir tmp;
  fs::create_directories(tmp.path / "dog");
  // A PNG signature is all the scan looks at; decoding happens later.
  std::ofstream(tmp.path / "dog" / "a.png", std::ios::binary) << "\x89PNG\r\n\x1a\n0000000000";
  const std::vector<std::string> classes = {"cat", "dog"};
  const Dataset ds = scan_dataset(tmp.path.string(), &classes);
  ASSERT_EQ(ds.items.size(), 1u);
  EXPECT_EQ(ds.items[0].label, 1);
}

}  // namespace
}  // namespace graft
