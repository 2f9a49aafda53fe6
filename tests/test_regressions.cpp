// Inputs found by the fuzz targets (tests/fuzz) that once crashed or misbehaved, each fed back
// to assert the clean error it now gets. The converter's inputs live in the fuzz seed corpus
// (tests/fuzz/corpus/convert/regress_*), so the fuzzer keeps exercising them too.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "io/image.h"

namespace fs = std::filesystem;
using namespace graft;

namespace {

std::string image_error(const std::vector<uint8_t>& bytes, const DecodeLimits& limits) {
  try {
    decode_image(bytes.data(), bytes.size(), 0, 0, limits, "regress.png");
  } catch (const ImageError& e) {
    return e.what();
  }
  return "(decoded without an error)";
}

}  // namespace

// fuzz_image: a PNG header declaring 2803459099 x 4292411136 pixels. The pixel cap multiplied
// the two 32-bit sizes in int64, which overflowed (undefined behaviour; in practice a negative
// product that passed the cap and left the rejection to libpng's own limits).
TEST(Regression, PngPixelCapDoesNotOverflow) {
  const std::vector<uint8_t> bytes = {0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00,
                                      0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0xa7, 0x19, 0x64, 0x1b,
                                      0xff, 0xd8, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x0f, 0xff, 0x00,
                                      0x85, 0xee, 0x4e, 0x54, 0x23, 0x60, 0x82};
  DecodeLimits limits;
  limits.max_pixels = int64_t(4) << 20;  // as in the fuzz target
  EXPECT_NE(image_error(bytes, limits).find("exceeds the pixel cap"), std::string::npos)
      << image_error(bytes, limits);
  // The largest sizes a PNG header can hold, under the default cap too.
  std::vector<uint8_t> widest = bytes;
  for (int i = 16; i < 24; ++i) widest[i] = 0xff;
  EXPECT_NE(image_error(widest, DecodeLimits{}).find("exceeds the pixel cap"), std::string::npos);
}

// ---- tools/convert.py, through its command line as `graft convert` runs it ----------------------

namespace {

struct Converted {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs the converter on one of the regression inputs, writing to a scratch path.
Converted convert(const std::string& input, const fs::path& out) {
  const char* python = std::getenv("GRAFT_PYTHON");
  const std::string cmd = std::string(python ? python : "python3") + " " + GRAFT_SOURCE_DIR +
                          "/tools/convert.py " + GRAFT_SOURCE_DIR + "/tests/fuzz/corpus/convert/" +
                          input + " -o " + out.string() + " --arch resnet18 2>&1";
  Converted r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 512> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool converter_runs() {
  const char* python = std::getenv("GRAFT_PYTHON");
  const std::string cmd =
      std::string(python ? python : "python3") + " -c 'import numpy' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class ConverterRegression : public ::testing::TestWithParam<std::array<const char*, 2>> {};

}  // namespace

// Each input must fail as convert.py promises: exit 2, one line naming the fault, no output
// file; never a traceback, and never by exhausting memory first.
TEST_P(ConverterRegression, FailsWithItsOwnError) {
  if (!converter_runs()) GTEST_SKIP() << "python3 with numpy is not available";
  const auto [input, fault] = GetParam();
  const fs::path out =
      fs::temp_directory_path() / ("graft-regress-" + std::string(input) + ".safetensors");
  fs::remove(out);
  const Converted r = convert(input, out);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(fault), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("unreadable checkpoint"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

INSTANTIATE_TEST_SUITE_P(
    FuzzFindings, ConverterRegression,
    ::testing::Values(
        // A legacy storage's element count of 2^62: its byte count overflowed read()
        // (OverflowError traceback).
        std::array<const char*, 2>{"regress_legacy_huge_count.pt", "truncated inside storage"},
        // LONG_BINPUT 0x7fffffff: the C unpickler sized its memo table from the index (gigabytes).
        std::array<const char*, 2>{"regress_legacy_memo_index.pt", "nothing uses"},
        // BYTEARRAY8 claiming 2^40 bytes, allocated before reading.
        std::array<const char*, 2>{"regress_bytearray8.pt", "BYTEARRAY8"},
        // A persistent id holding a newline, quoted into the message: two lines.
        std::array<const char*, 2>{"regress_persid_newline.pt", "stor\\nage"},
        // A member's local header broken: zipfile.BadZipFile traceback.
        std::array<const char*, 2>{"regress_zip_member_header.pt", "zip checkpoint is damaged"},
        // "Version needed to extract" 25.5: NotImplementedError traceback.
        std::array<const char*, 2>{"regress_zip_version.pt", "not a readable zip archive"}),
    [](const auto& info) {
      std::string name = fs::path(info.param[0]).stem().string();
      return name.substr(std::string("regress_").size());
    });
