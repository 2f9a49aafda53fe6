// The HTML training report: escaping, metrics, thumbnails, chart edge cases and atomic writes.
// Every image it reads is made here: a JPEG with TurboJPEG's compressor, a PNG with libpng.
#include <gtest/gtest.h>
#include <png.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/report.h"

namespace fs = std::filesystem;
using namespace graft;

namespace {

// A fresh directory per test under GoogleTest's temp dir.
std::string temp_dir(const std::string& name) {
  const fs::path dir =
      fs::path(testing::TempDir()) / ("graft_report_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

std::vector<uint8_t> gradient_rgb(int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(255 * x / (w - 1));
      p[1] = uint8_t(255 * y / (h - 1));
      p[2] = 90;
    }
  return rgb;
}

void write_jpeg(const std::string& path, int w, int h) {
  const std::vector<uint8_t> rgb = gradient_rgb(w, h);
  tjhandle t = tjInitCompress();
  ASSERT_NE(t, nullptr);
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  ASSERT_EQ(tjCompress2(t, rgb.data(), w, 0, h, TJPF_RGB, &buf, &n, TJSAMP_444, 90, 0), 0);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(buf), std::streamsize(n));
  tjFree(buf);
  tjDestroy(t);
}

void write_png(const std::string& path, int w, int h) {
  const std::vector<uint8_t> rgb = gradient_rgb(w, h);
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(w);
  img.height = png_uint_32(h);
  img.format = PNG_FORMAT_RGB;
  ASSERT_NE(png_image_write_to_file(&img, path.c_str(), 0, rgb.data(), 0, nullptr), 0);
}

std::vector<uint8_t> base64_decode(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = value(c);
    if (v < 0) break;  // '=' padding
    acc = acc << 6 | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
    }
  }
  return out;
}

struct Size {
  int w = 0, h = 0;
};

// The pixel sizes of the embedded JPEG thumbnails, in page order.
std::vector<Size> thumbnail_sizes(const std::string& html) {
  const std::string prefix = "data:image/jpeg;base64,";
  std::vector<Size> sizes;
  tjhandle t = tjInitDecompress();
  for (size_t at = html.find(prefix); at != std::string::npos; at = html.find(prefix, at + 1)) {
    const size_t start = at + prefix.size();
    const std::vector<uint8_t> jpeg =
        base64_decode(html.substr(start, html.find('"', start) - start));
    Size s;
    int subsamp = 0, colorspace = 0;
    EXPECT_EQ(tjDecompressHeader3(t, jpeg.data(), jpeg.size(), &s.w, &s.h, &subsamp, &colorspace),
              0);
    sizes.push_back(s);
  }
  tjDestroy(t);
  return sizes;
}

// The page without its data: URIs, whose base64 could spell anything.
std::string without_data_uris(const std::string& html) {
  return std::regex_replace(html, std::regex("data:image/jpeg;base64,[A-Za-z0-9+/=]*"), "DATA");
}

// printf's spellings of non-finite numbers, as they would leak into text or SVG coordinates.
bool has_non_finite_text(const std::string& html) {
  return std::regex_search(without_data_uris(html),
                           std::regex("(^|[^A-Za-z])-?(nan|inf)([^A-Za-z]|$)"));
}

// The cell texts of the per-class metrics row whose header is `name` (already escaped).
std::vector<std::string> metrics_row(const std::string& html, const std::string& name) {
  const size_t table = html.find("<table class=\"metrics\">");
  if (table == std::string::npos) return {};
  const size_t row = html.find("<tr><th>" + name + "</th>", table);
  if (row == std::string::npos) return {};
  const size_t end = html.find("</tr>", row);
  std::vector<std::string> cells;
  for (size_t at = html.find("<td>", row); at < end; at = html.find("<td>", at + 1)) {
    cells.push_back(html.substr(at + 4, html.find("</td>", at) - at - 4));
  }
  return cells;
}

EpochMetrics epoch(int e, double loss, double acc, bool has_val, double vloss = 0,
                   double vacc = 0) {
  EpochMetrics r;
  r.epoch = e;
  r.loss = loss;
  r.accuracy = acc;
  r.has_val = has_val;
  r.val_loss = vloss;
  r.val_accuracy = vacc;
  r.seconds = 12.5;
  r.images_per_second = 800;
  return r;
}

}  // namespace

TEST(Report, FullReport) {
  const std::string dir = temp_dir("full");
  const std::string jpeg_path = dir + "/tall.jpg";
  const std::string png_path = dir + "/wide&1.png";
  write_jpeg(jpeg_path, 90, 120);  // smaller than a thumbnail: scaled up to 120 x 160
  write_png(png_path, 400, 200);   // scaled down to 160 x 80

  ReportData d;
  d.title = "photos/<fish>";
  d.classes = {"cat", "a<b&c", "dog"};
  d.epochs = {epoch(1, 1.2, 0.55, true, 1.0, 0.60), epoch(2, 0.8, 0.72, true, 0.75, 0.70),
              epoch(3, 0.6, 0.81, true, 0.7, 0.74), epoch(4, 0.5, 0.86, true, 0.72, 0.75)};
  // Rows are true classes. Column sums 7, 4, 5; row sums 6, 6, 4.
  d.confusion = {5, 1, 0,  //
                 2, 3, 1,  //
                 0, 0, 4};
  d.test_loss = 0.6543;
  d.test_accuracy = 0.75;
  d.worst = {{jpeg_path, 0, 1, 0.93f, 0.05f},
             {dir + "/gone/ghost_photo.jpg", 1, 2, 0.88f, 0.1f},
             {png_path, 2, 0, 0.71f, 0.2f}};
  d.notes = {"cache: on", "skipped <2> unreadable images"};

  const std::string path = dir + "/report.html";
  write_report(path, d);
  ASSERT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const std::string html = read_file(path);

  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(html, "<svg"), 2u);  // loss and accuracy
  EXPECT_NE(html.find(">validation<"), std::string::npos);

  // Every string from the data is escaped.
  EXPECT_NE(html.find("a&lt;b&amp;c"), std::string::npos);
  EXPECT_EQ(html.find("a<b&c"), std::string::npos);
  EXPECT_NE(html.find("photos/&lt;fish&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<fish>"), std::string::npos);
  EXPECT_NE(html.find("skipped &lt;2&gt; unreadable images"), std::string::npos);
  EXPECT_NE(html.find("wide&amp;1.png"), std::string::npos);
  EXPECT_EQ(html.find("wide&1.png"), std::string::npos);

  // Two thumbnails, longest side 160, aspect kept; the unreadable file gets a placeholder.
  EXPECT_EQ(count(html, "data:image/jpeg;base64,"), 2u);
  const std::vector<Size> sizes = thumbnail_sizes(html);
  ASSERT_EQ(sizes.size(), 2u);
  EXPECT_EQ(sizes[0].w, 120);
  EXPECT_EQ(sizes[0].h, 160);
  EXPECT_EQ(sizes[1].w, 160);
  EXPECT_EQ(sizes[1].h, 80);
  EXPECT_EQ(count(html, "class=\"missing\""), 1u);
  EXPECT_NE(html.find("ghost_photo.jpg"), std::string::npos);
  EXPECT_NE(html.find("true: cat / predicted: a&lt;b&amp;c (p=0.93)"), std::string::npos);
  EXPECT_NE(html.find("true: a&lt;b&amp;c / predicted: dog (p=0.88)"), std::string::npos);

  // precision = tp / column sum, recall = tp / row sum, F1, support.
  EXPECT_EQ(metrics_row(html, "cat"),
            (std::vector<std::string>{"0.714", "0.833", "0.769", "6"}));  // 5/7, 5/6, 10/13
  EXPECT_EQ(metrics_row(html, "a&lt;b&amp;c"),
            (std::vector<std::string>{"0.750", "0.500", "0.600", "6"}));  // 3/4, 3/6
  EXPECT_EQ(metrics_row(html, "dog"),
            (std::vector<std::string>{"0.800", "1.000", "0.889", "4"}));  // 4/5, 4/4, 8/9

  EXPECT_NE(html.find("75.00%"), std::string::npos);  // test accuracy
  EXPECT_NE(html.find("0.6543"), std::string::npos);  // test loss
  EXPECT_FALSE(has_non_finite_text(html));

  // Writing again replaces the page and leaves no temp file.
  d.title = "second";
  write_report(path, d);
  EXPECT_NE(read_file(path).find("<h1>second</h1>"), std::string::npos);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // GRAFT_KEEP_REPORT keeps the page for a look in a browser.
  if (!std::getenv("GRAFT_KEEP_REPORT")) fs::remove_all(dir);
}

TEST(Report, OneEpochWithoutValidation) {
  const std::string dir = temp_dir("one_epoch");
  ReportData d;
  d.classes = {"x", "y"};
  d.epochs = {epoch(1, 0.7, 0.6, false)};
  d.confusion = {3, 1, 0, 2};
  d.test_accuracy = 5.0 / 6;
  write_report(dir + "/r.html", d);
  const std::string html = read_file(dir + "/r.html");

  EXPECT_EQ(count(html, "<svg"), 2u);
  EXPECT_EQ(html.find("<polyline"), std::string::npos);  // one point: no line to draw
  EXPECT_EQ(count(html, "<circle"), 2u);                 // but a marker on each chart
  EXPECT_EQ(html.find(">validation<"), std::string::npos);
  EXPECT_NE(html.find(">train<"), std::string::npos);
  EXPECT_NE(html.find("No misclassified images"), std::string::npos);
  EXPECT_FALSE(has_non_finite_text(html));
  fs::remove_all(dir);
}

TEST(Report, NonFiniteAndFlatValues) {
  const std::string dir = temp_dir("non_finite");
  ReportData d;
  d.classes = {"x", "y"};
  // Flat training loss and accuracy (min == max), a NaN and an inf, and validation only on
  // some epochs.
  d.epochs = {epoch(1, 0.5, 1.0, true, NAN, 0.5), epoch(2, 0.5, 1.0, false),
              epoch(3, 0.5, 1.0, true, 0.4, INFINITY), epoch(4, 0.5, 1.0, true, 0.3, 0.9)};
  d.epochs[1].loss = std::numeric_limits<double>::quiet_NaN();
  d.confusion = {1, 0, 0, 1};
  d.test_loss = NAN;
  d.test_accuracy = 1;
  // Labels outside the class list are shown, not a crash.
  d.worst = {{dir + "/missing.png", 7, -1, 0.5f, 0.1f}};
  write_report(dir + "/r.html", d);
  const std::string html = read_file(dir + "/r.html");

  EXPECT_EQ(count(html, "<svg"), 2u);
  EXPECT_FALSE(has_non_finite_text(html));
  EXPECT_NE(html.find("not finite"), std::string::npos);
  EXPECT_NE(html.find("true: #7 / predicted: #-1"), std::string::npos);
  EXPECT_EQ(count(html, "class=\"missing\""), 1u);
  fs::remove_all(dir);
}

TEST(Report, ZeroSupportClass) {
  const std::string dir = temp_dir("zero_support");
  ReportData d;
  d.classes = {"x", "y", "z"};
  d.epochs = {epoch(1, 0.9, 0.5, true, 0.8, 0.55), epoch(2, 0.7, 0.6, true, 0.75, 0.6)};
  // y is neither in the test split nor ever predicted: every one of its metrics is undefined.
  d.confusion = {3, 0, 1,  //
                 0, 0, 0,  //
                 1, 0, 2};
  write_report(dir + "/r.html", d);
  const std::string html = read_file(dir + "/r.html");

  EXPECT_EQ(metrics_row(html, "x"), (std::vector<std::string>{"0.750", "0.750", "0.750", "4"}));
  EXPECT_EQ(metrics_row(html, "y"), (std::vector<std::string>{"-", "-", "-", "0 (absent)"}));
  EXPECT_EQ(metrics_row(html, "z"), (std::vector<std::string>{"0.667", "0.667", "0.667", "3"}));
  EXPECT_FALSE(has_non_finite_text(html));
  fs::remove_all(dir);
}

// A class absent from the test split but predicted for some images: still no precision (a 0 would
// read as a failure on that class); its false positives show in the matrix and in x's recall.
TEST(Report, AbsentButPredictedClassHasNoMetrics) {
  const std::string dir = temp_dir("absent_predicted");
  ReportData d;
  d.classes = {"x", "y"};
  d.confusion = {3, 1,  //
                 0, 0};
  write_report(dir + "/r.html", d);
  const std::string html = read_file(dir + "/r.html");
  EXPECT_EQ(metrics_row(html, "y"), (std::vector<std::string>{"-", "-", "-", "0 (absent)"}));
  EXPECT_EQ(metrics_row(html, "x"), (std::vector<std::string>{"1.000", "0.750", "0.857", "4"}));
  fs::remove_all(dir);
}

// The run's settings, the kept epoch (card, chart line, table row) and cached epochs' throughput.
TEST(Report, SettingsKeptEpochAndCachedEpochs) {
  const std::string dir = temp_dir("settings");
  ReportData d;
  d.classes = {"x", "y"};
  d.epochs = {epoch(1, 0.9, 0.5, true, 0.8, 0.55), epoch(2, 0.7, 0.6, true, 0.7, 0.6),
              epoch(3, 0.6, 0.7, true, 0.75, 0.6)};
  d.epochs[1].from_cache = d.epochs[2].from_cache = true;
  d.epochs[1].feature_rows_per_second = 200718;
  d.epochs[2].feature_rows_per_second = 190000;
  d.confusion = {2, 0, 0, 2};
  d.kept_epoch = 2;
  d.kept_why = "lowest validation loss (--early-stop)";
  d.settings = {{"learning rate", "0.005"},
                {"optimizer", "SGD, momentum 0.9"},
                {"backbone", "models/<odd>.safetensors"}};
  write_report(dir + "/r.html", d);
  const std::string html = read_file(dir + "/r.html");

  EXPECT_NE(html.find("<h2>Settings</h2>"), std::string::npos);
  EXPECT_NE(html.find("<tr><th>learning rate</th><td>0.005</td></tr>"), std::string::npos);
  EXPECT_NE(html.find("<tr><th>optimizer</th><td>SGD, momentum 0.9</td></tr>"), std::string::npos);
  EXPECT_NE(html.find("models/&lt;odd&gt;.safetensors"), std::string::npos);
  EXPECT_EQ(html.find("<odd>"), std::string::npos);

  EXPECT_EQ(count(html, "kept: epoch 2"), 2u);   // a line on each chart
  EXPECT_EQ(count(html, "class=\"kept\""), 3u);  // the two lines and the table row
  EXPECT_NE(html.find("<tr class=\"kept\"><td>2 (kept)</td>"), std::string::npos);
  EXPECT_NE(html.find("epoch 2</div>"), std::string::npos);  // the "model kept" card
  EXPECT_NE(html.find("holds the head of epoch 2 (lowest validation loss (--early-stop))"),
            std::string::npos);

  EXPECT_NE(html.find("200718 feature rows/s (cached features)"), std::string::npos);
  EXPECT_EQ(count(html, " images/s</td>"), 1u);  // epoch 1 only
  EXPECT_EQ(html.find("200718 images/s"), std::string::npos);
  EXPECT_FALSE(has_non_finite_text(html));

  // Without a kept epoch or settings, neither section nor marker appears.
  d.kept_epoch = 0;
  d.settings.clear();
  write_report(dir + "/r.html", d);
  const std::string plain = read_file(dir + "/r.html");
  EXPECT_EQ(plain.find("Settings"), std::string::npos);
  EXPECT_EQ(plain.find("class=\"kept\""), std::string::npos);
  EXPECT_EQ(plain.find("(kept)"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Report, MissingDirectoryThrowsNamingPath) {
  const std::string dir = temp_dir("no_dir");
  const std::string path = dir + "/does/not/exist/report.html";
  ReportData d;
  d.classes = {"x"};
  try {
    write_report(path, d);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);
}

TEST(Report, FailedRenameRemovesTempFile) {
  // The target is a non-empty directory: the temp file is written, the rename fails.
  const std::string dir = temp_dir("rename");
  const std::string path = dir + "/report.html";
  fs::create_directories(path + "/occupied");
  ReportData d;
  d.classes = {"x"};
  EXPECT_THROW(write_report(path, d), std::runtime_error);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);
}
