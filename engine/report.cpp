#include "engine/report.h"

#include <turbojpeg.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/image.h"

namespace graft {

namespace {

// ---- Text helpers ------------------------------------------------------------------------------

// Every string that comes from the data (class names, file paths, notes, the title) goes through
// here: a class folder named "a<b" must not open a tag, and a quote must not end an attribute.
std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// printf into a std::string; numbers in the page are formatted here and nowhere else.
std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  va_list args, again;
  va_start(args, format);
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string out(size_t(std::max(n, 0)) + 1, '\0');
  std::vsnprintf(out.data(), out.size(), format, again);
  va_end(again);
  out.pop_back();  // the terminating NUL
  return out;
}

// Non-finite values (a diverged run) print as a dash: "nan" in a table reads like a bug in the
// report rather than in the training, and the summary says separately how many there were.
std::string num(double v, int decimals) {
  return std::isfinite(v) ? fmt("%.*f", decimals, v) : std::string("&ndash;");
}
std::string percent(double v, int decimals) {
  return std::isfinite(v) ? fmt("%.*f%%", decimals, 100 * v) : std::string("&ndash;");
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// RFC 4648 with padding, as data: URIs expect.
std::string base64(const uint8_t* data, size_t n) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = uint32_t(data[i]) << 16 | uint32_t(data[i + 1]) << 8 | data[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (n - i == 1) {
    const uint32_t v = uint32_t(data[i]) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (n - i == 2) {
    const uint32_t v = uint32_t(data[i]) << 16 | uint32_t(data[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// A class index from the data may be out of range (a stale label file); show it, don't crash.
std::string class_name(const ReportData& d, int i) {
  if (i >= 0 && size_t(i) < d.classes.size()) return html_escape(d.classes[size_t(i)]);
  return fmt("#%d", i);
}

// ---- Learning curves ---------------------------------------------------------------------------

struct Point {
  double x, y;
};

struct Series {
  std::string name, color;
  bool dashed = false;
  std::vector<Point> points;  // may hold non-finite y: those are gaps, not drawn
};

// The step of 1, 2 or 5 times a power of ten that cuts `range` into about `target` intervals.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

// Decimals that show every tick of this step distinctly (0.05 -> 2, 0.2 -> 1, 5 -> 0).
int decimals_for(double step) {
  return std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
}

// One ~600x300 chart: epoch on x, the series as polylines with a marker on every finite point
// (so a single epoch, or a point isolated between two NaNs, is still visible). With
// `as_percent` the y axis is clamped to [0, 1] and labelled in percent.
std::string svg_line_chart(const std::string& title, const std::vector<Series>& series,
                           bool as_percent, int kept_epoch) {
  const double W = 600, H = 300, left = 58, right = 16, top = 34, bottom = 44;
  const double px0 = left, px1 = W - right, py0 = top, py1 = H - bottom;
  const double inset = 10;  // keeps end markers off the axes

  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : series)
    for (const Point& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
      ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
    }
  const bool empty = !std::isfinite(xmin);
  if (empty) xmin = 1, xmax = 1, ymin = 0, ymax = 1;
  const double dmin = ymin, dmax = ymax;
  // A flat line (or one point) has no range to divide by: widen it around the value.
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin < 1e-12 * std::max(1.0, std::fabs(ymin))) {
    const double pad = ymin != 0 ? std::fabs(ymin) * 0.1 : 1.0;
    ymin -= pad, ymax += pad;
  }
  // A little headroom so that no line runs along an axis or the top grid line.
  const double headroom = 0.05 * (ymax - ymin);
  ymin -= headroom, ymax += headroom;
  // Padding must not invent a negative loss or an accuracy past 100% (unless the data has one).
  auto keep_in_domain = [&] {
    if (dmin >= 0) ymin = std::max(ymin, 0.0);
    if (as_percent) ymax = std::min(ymax, std::max(1.0, dmax));
  };
  keep_in_domain();
  const double ystep = nice_step(ymax - ymin, 5);
  ymin = std::floor(ymin / ystep + 1e-9) * ystep;
  ymax = std::ceil(ymax / ystep - 1e-9) * ystep;
  keep_in_domain();
  // Epochs are whole numbers: never a tick between two of them.
  const double xstep = std::max(1.0, std::ceil(nice_step(xmax - xmin, 8)));

  auto sx = [&](double x) {
    return px0 + inset + (x - xmin) / (xmax - xmin) * (px1 - px0 - 2 * inset);
  };
  auto sy = [&](double y) { return py1 - (y - ymin) / (ymax - ymin) * (py1 - py0); };

  std::string o;
  o +=
      fmt("<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" "
          "width=\"%.0f\" height=\"%.0f\" role=\"img\">\n",
          W, H, W, H);
  o += "<title>" + html_escape(title) + "</title>\n";
  o += fmt("<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", W, H);
  o += fmt("<text x=\"%.0f\" y=\"20\" class=\"ctitle\">%s</text>\n", px0,
           html_escape(title).c_str());

  // Horizontal grid lines with y tick labels.
  const int ydec = decimals_for(as_percent ? ystep * 100 : ystep);
  for (double y = ymin; y <= ymax + ystep * 1e-6; y += ystep) {
    const double py = sy(y);
    o += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"gridline\"/>\n", px0,
             py, px1, py);
    const std::string label = as_percent
                                  ? fmt("%.*f%%", ydec, std::fabs(y * 100) < 1e-9 ? 0 : y * 100)
                                  : fmt("%.*f", ydec, std::fabs(y) < 1e-12 ? 0 : y);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"ytick\">%s</text>\n", px0 - 6, py + 4,
             label.c_str());
  }
  // x ticks at whole epochs.
  for (double x = std::ceil(xmin / xstep) * xstep; x <= xmax + 1e-9; x += xstep) {
    const double px = sx(x);
    o += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>\n", px, py1,
             px, py1 + 5);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xtick\">%.0f</text>\n", px, py1 + 18, x);
  }
  o += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>\n", px0, py1,
           px1, py1);
  o += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>\n", px0, py0,
           px0, py1);
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xlabel\">epoch</text>\n", (px0 + px1) / 2, H - 6);
  if (empty) {
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"nodata\">no finite values</text>\n",
             (px0 + px1) / 2, (py0 + py1) / 2);
  }

  // The kept epoch (the head in the model file): a vertical line under the data, labelled.
  if (kept_epoch > 0 && !empty && kept_epoch >= xmin && kept_epoch <= xmax) {
    const double px = sx(kept_epoch);
    o += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"kept\"/>\n", px, py0,
             px, py1);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"keptlabel\">kept: epoch %d</text>\n", px + 4,
             py0 + 12, kept_epoch);
  }

  // The lines: a non-finite value breaks the line instead of being drawn or bridged.
  for (const Series& s : series) {
    const std::string dash = s.dashed ? " stroke-dasharray=\"6 4\"" : "";
    std::string run;
    int run_len = 0;
    auto flush = [&] {
      if (run_len >= 2) {
        o += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"2\"" + dash +
             " points=\"" + run + "\"/>\n";
      }
      run.clear();
      run_len = 0;
    };
    for (const Point& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) {
        flush();
        continue;
      }
      run += fmt("%s%.1f,%.1f", run.empty() ? "" : " ", sx(p.x), sy(p.y));
      ++run_len;
    }
    flush();
    for (const Point& p : s.points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      const std::string value = as_percent ? fmt("%.2f%%", p.y * 100) : fmt("%.4f", p.y);
      o +=
          fmt("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s, epoch %.0f: "
              "%s</title></circle>\n",
              sx(p.x), sy(p.y), s.color.c_str(), html_escape(s.name).c_str(), p.x, value.c_str());
    }
  }

  // Legend in the top margin, right-aligned; entries laid out right to left.
  double lx = px1;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const double text_w = 7.5 * double(it->name.size());  // ~13px sans-serif
    lx -= text_w;
    o += fmt("<text x=\"%.1f\" y=\"20\" class=\"legend\">%s</text>\n", lx,
             html_escape(it->name).c_str());
    o +=
        fmt("<line x1=\"%.1f\" y1=\"16\" x2=\"%.1f\" y2=\"16\" stroke=\"%s\" "
            "stroke-width=\"2\"%s/>\n",
            lx - 30, lx - 6, it->color.c_str(), it->dashed ? " stroke-dasharray=\"6 4\"" : "");
    lx -= 46;
  }
  o += "</svg>\n";
  return o;
}

// ---- Confusion matrix and per-class metrics ----------------------------------------------------

// Background for a cell with row-normalised value t in [0, 1]: white to dark blue.
std::string heat_color(double t) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0);
  auto mix = [t](int a, int b) { return int(std::lround(a + (b - a) * t)); };
  return fmt("#%02x%02x%02x", mix(255, 8), mix(255, 69), mix(255, 148));
}

bool confusion_ok(const ReportData& d) {
  const size_t n = d.classes.size();
  return n > 0 && d.confusion.size() == n * n;
}

// Rows are true classes, columns predictions. Colour intensity is the row-normalised value
// (the share of class i's images predicted as j), so a rare class is as readable as a common
// one; the cell shows the raw count.
std::string confusion_table(const ReportData& d) {
  const size_t n = d.classes.size();
  size_t longest = 0;
  for (const std::string& c : d.classes) longest = std::max(longest, c.size());
  // Many or long names would make the table very wide: turn the column headers sideways.
  const bool vertical = n > 8 || longest > 10;

  std::string o =
      "<table class=\"confusion\">\n<thead><tr><th class=\"corner\">true &darr; / "
      "predicted &rarr;</th>";
  for (size_t j = 0; j < n; ++j) {
    o += std::string("<th class=\"col") + (vertical ? " vertical" : "") + "\"><span>" +
         html_escape(d.classes[j]) + "</span></th>";
  }
  o += "<th class=\"total\">total</th></tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < n; ++i) {
    int64_t row_sum = 0;
    for (size_t j = 0; j < n; ++j) row_sum += d.confusion[i * n + j];
    o += "<tr><th class=\"row\">" + html_escape(d.classes[i]) + "</th>";
    for (size_t j = 0; j < n; ++j) {
      const int64_t v = d.confusion[i * n + j];
      const double t = row_sum > 0 ? double(v) / double(row_sum) : 0.0;
      std::string cls = i == j ? "diag" : "";
      if (v == 0) cls += cls.empty() ? "zero" : " zero";
      const char* ink = t > 0.5 ? "#fff" : "#111";
      o +=
          fmt("<td%s%s%s style=\"background:%s;color:%s\" title=\"", cls.empty() ? "" : " class=\"",
              cls.c_str(), cls.empty() ? "" : "\"", heat_color(t).c_str(), ink);
      o += "true " + html_escape(d.classes[i]) + ", predicted " + html_escape(d.classes[j]) +
           fmt(": %lld (%.1f%% of row)\">%lld</td>", (long long)v, 100 * t, (long long)v);
    }
    o += fmt("<td class=\"total\">%lld</td></tr>\n", (long long)row_sum);
  }
  o += "</tbody>\n</table>\n";
  return o;
}

// precision = tp / column sum, recall = tp / row sum; "-" where that sum is 0 (a class never
// predicted, or absent from the test split: then all three), and F1 only where both exist.
std::string metrics_table(const ReportData& d) {
  const size_t n = d.classes.size();
  std::string o =
      "<table class=\"metrics\">\n<thead><tr><th>class</th><th>precision</th><th>recall</th>"
      "<th>F1</th><th>support</th></tr></thead>\n<tbody>\n";
  double sum_p = 0, sum_r = 0, sum_f = 0;
  int count_p = 0, count_r = 0, count_f = 0;
  int64_t total = 0;
  for (size_t c = 0; c < n; ++c) {
    int64_t row = 0, col = 0;
    for (size_t k = 0; k < n; ++k) row += d.confusion[c * n + k], col += d.confusion[k * n + c];
    const int64_t tp = d.confusion[c * n + c];
    total += row;
    std::string ps = "-", rs = "-", fs = "-";
    double p = 0, r = 0;
    // A class absent from the test images has no metric at all: a precision of 0 from its false
    // positives would read as a failure on that class (its false positives still show in the
    // confusion matrix and in the other classes' recall).
    if (row > 0 && col > 0)
      p = double(tp) / double(col), ps = fmt("%.3f", p), sum_p += p, ++count_p;
    if (row > 0) r = double(tp) / double(row), rs = fmt("%.3f", r), sum_r += r, ++count_r;
    if (col > 0 && row > 0) {
      const double f = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
      fs = fmt("%.3f", f), sum_f += f, ++count_f;
    }
    o += "<tr><th>" + html_escape(d.classes[c]) + "</th><td>" + ps + "</td><td>" + rs +
         "</td><td>" + fs + "</td>" +
         (row > 0 ? fmt("<td>%lld</td></tr>\n", (long long)row)
                  : std::string("<td>0 (absent)</td></tr>\n"));
  }
  // Macro average over the classes where each metric is defined.
  auto avg = [](double sum, int count) { return count ? fmt("%.3f", sum / count) : "-"; };
  o += "</tbody>\n<tfoot><tr><th>macro average</th><td>" + avg(sum_p, count_p) + "</td><td>" +
       avg(sum_r, count_r) + "</td><td>" + avg(sum_f, count_f) + "</td>" +
       fmt("<td>%lld</td></tr></tfoot>\n</table>\n", (long long)total);
  return o;
}

// ---- Thumbnails --------------------------------------------------------------------------------

constexpr int kThumbSide = 160;  // longest side of a thumbnail, in pixels
constexpr int kThumbQuality = 85;
constexpr size_t kMaxThumbs = 64;  // bounds the page size whatever the caller passes

struct TjHandle {
  tjhandle h = tjInitCompress();
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
};

// The image at `path` shrunk to kThumbSide on its longest side, as a JPEG. Throws on any
// failure; the caller shows a placeholder instead.
std::vector<uint8_t> thumbnail_jpeg(const std::string& path, TjHandle& tj) {
  // Asking for at least kThumbSide on both axes lets TurboJPEG decode a large photo at a
  // reduced DCT scale while still leaving enough pixels for the longest side.
  const Image img = load_image(path, kThumbSide, kThumbSide, DecodeLimits{});
  if (img.width <= 0 || img.height <= 0) throw std::runtime_error("empty image");
  const double scale = double(kThumbSide) / std::max(img.width, img.height);
  const int w = std::max(1, int(std::lround(img.width * scale)));
  const int h = std::max(1, int(std::lround(img.height * scale)));
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  resize_bilinear_aa(img, 0, 0, img.width, img.height, w, h, rgb.data());

  if (!tj.h) throw std::runtime_error("cannot start the JPEG encoder");
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  if (tjCompress2(tj.h, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_420, kThumbQuality,
                  0) != 0) {
    if (jpeg) tjFree(jpeg);
    throw std::runtime_error(std::string("JPEG encode failed: ") + tjGetErrorStr2(tj.h));
  }
  std::vector<uint8_t> out(jpeg, jpeg + size);
  tjFree(jpeg);
  return out;
}

std::string mistakes_grid(const ReportData& d) {
  std::string o = "<div class=\"thumbs\">\n";
  TjHandle tj;
  const size_t shown = std::min(d.worst.size(), kMaxThumbs);
  for (size_t i = 0; i < shown; ++i) {
    const ReportMistake& m = d.worst[i];
    const std::string name = html_escape(base_name(m.path));
    const std::string full = html_escape(m.path);
    o += "<figure>";
    // A missing or corrupt file must not cost the user the rest of the report.
    try {
      const std::vector<uint8_t> jpeg = thumbnail_jpeg(m.path, tj);
      o += "<img src=\"data:image/jpeg;base64," + base64(jpeg.data(), jpeg.size()) + "\" alt=\"" +
           name + "\" title=\"" + full + "\">";
    } catch (const std::exception& e) {
      o += "<div class=\"missing\" title=\"" + html_escape(e.what()) +
           "\"><span>image unavailable</span><span class=\"fname\">" + name + "</span></div>";
    }
    o += "<figcaption>true: " + class_name(d, m.true_label) +
         " / predicted: " + class_name(d, m.predicted) +
         fmt(" (p=%.2f)", double(m.prob_predicted)) + "<br><span class=\"fname\" title=\"" + full +
         "\">" + name + "</span></figcaption></figure>\n";
  }
  o += "</div>\n";
  if (shown < d.worst.size()) {
    o += fmt("<p class=\"muted\">Showing the %zu most confident of %zu mistakes.</p>\n", shown,
             d.worst.size());
  }
  return o;
}

// ---- Page --------------------------------------------------------------------------------------

constexpr const char* kStyle = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
  max-width:1260px;margin:0 auto;padding:24px;background:#f6f7f9;line-height:1.4}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:0 0 12px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;
  margin:16px 0}
.muted{color:#6a737d}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #dde1e6;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:600}
.card .k{font-size:12px;color:#6a737d;text-transform:uppercase;letter-spacing:.04em}
ul.notes{margin:8px 0 0;padding-left:20px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{flex:1 1 460px;min-width:0;max-width:600px;height:auto;border:1px solid #eef0f3;
  border-radius:4px}
svg .ctitle{font-size:15px;font-weight:600;fill:#1b1f24}
svg .legend{font-size:13px;fill:#1b1f24;dominant-baseline:middle}
svg .gridline{stroke:#e6e8eb;stroke-width:1}
svg .axis{stroke:#6a737d;stroke-width:1}
svg .ytick{font-size:12px;fill:#4a535d;text-anchor:end}
svg .xtick{font-size:12px;fill:#4a535d;text-anchor:middle}
svg .xlabel{font-size:13px;fill:#4a535d;text-anchor:middle}
svg .nodata{font-size:13px;fill:#6a737d;text-anchor:middle}
svg .kept{stroke:#2da44e;stroke-width:1.5;stroke-dasharray:3 3}
svg .keptlabel{font-size:12px;fill:#2da44e}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
table.confusion td,table.confusion th{border:1px solid #dde1e6;padding:6px 10px;
  text-align:center;min-width:36px}
table.confusion th{background:#f6f7f9;font-weight:600}
table.confusion th.corner{font-weight:400;font-size:12px;color:#6a737d}
table.confusion th.row{text-align:right}
table.confusion th.vertical span{writing-mode:vertical-rl;transform:rotate(180deg);
  white-space:nowrap}
table.confusion td.diag{font-weight:700}
table.confusion td.zero{color:#b5bbc2 !important}
table.confusion .total{background:#f6f7f9;color:#4a535d}
table.metrics{margin-top:8px}
table.metrics td,table.metrics th{padding:5px 14px;border-bottom:1px solid #eef0f3;
  text-align:right}
table.metrics th:first-child{text-align:left}
table.metrics thead th{border-bottom:2px solid #dde1e6}
table.metrics tfoot th,table.metrics tfoot td{border-top:2px solid #dde1e6;font-weight:600}
table.epochs td,table.epochs th{padding:3px 12px;text-align:right;border-bottom:1px solid #eef0f3}
table.epochs tr.kept td{background:#dafbe1;font-weight:600}
table.settings td,table.settings th{padding:3px 14px;text-align:left;border-bottom:1px solid #eef0f3}
table.settings th{font-weight:400;color:#4a535d}
details{margin-top:12px}
summary{cursor:pointer;color:#4a535d}
.thumbs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:168px;font-size:12px}
figure img,figure .missing{display:block;margin:0 auto 4px;border-radius:4px}
figure .missing{width:160px;height:120px;border:2px dashed #c4c9cf;background:#f6f7f9;
  display:flex;flex-direction:column;align-items:center;justify-content:center;gap:4px;
  color:#6a737d;overflow:hidden;box-sizing:border-box;padding:4px;text-align:center}
figcaption{text-align:center;word-break:break-word}
.fname{color:#6a737d;font-size:11px;word-break:break-all}
)";

bool finite(double v) {
  return std::isfinite(v);
}

std::string summary_section(const ReportData& d) {
  std::string o = "<section>\n<h2>Summary</h2>\n<div class=\"cards\">\n";
  auto card = [&](const std::string& key, const std::string& value) {
    o += "<div class=\"card\"><div class=\"k\">" + key + "</div><div class=\"v\">" + value +
         "</div></div>\n";
  };
  const bool tested = !d.confusion.empty();
  card("test accuracy", tested ? percent(d.test_accuracy, 2) : "&ndash;");
  card("test loss", tested ? num(d.test_loss, 4) : "&ndash;");
  card("classes", fmt("%zu", d.classes.size()));
  card("epochs", fmt("%zu", d.epochs.size()));

  // Best validation epoch and training time: what a reader looks for after the test score.
  const EpochMetrics* best = nullptr;
  double seconds = 0;
  int bad_values = 0;
  for (const EpochMetrics& e : d.epochs) {
    if (finite(e.seconds)) seconds += e.seconds;
    bad_values += !finite(e.loss) + !finite(e.accuracy);
    if (e.has_val) {
      bad_values += !finite(e.val_loss) + !finite(e.val_accuracy);
      if (finite(e.val_accuracy) && (!best || e.val_accuracy > best->val_accuracy)) best = &e;
    }
  }
  if (best) card(fmt("best val accuracy (epoch %d)", best->epoch), percent(best->val_accuracy, 2));
  if (d.kept_epoch > 0) card("model kept", fmt("epoch %d", d.kept_epoch));
  if (seconds > 0)
    card("training time", seconds >= 120 ? fmt("%.1f min", seconds / 60) : fmt("%.1f s", seconds));
  o += "</div>\n";

  if (!d.classes.empty()) {
    o += "<p><b>Classes:</b> ";
    for (size_t i = 0; i < d.classes.size(); ++i) {
      o += (i ? ", " : "") + html_escape(d.classes[i]);
    }
    o += "</p>\n";
  }
  std::vector<std::string> notes;
  if (d.kept_epoch > 0)
    notes.push_back(fmt("model.safetensors holds the head of epoch %d", d.kept_epoch) +
                    (d.kept_why.empty() ? "" : " (" + html_escape(d.kept_why) + ")"));
  for (const std::string& n : d.notes) notes.push_back(html_escape(n));
  if (bad_values > 0) {
    notes.push_back(
        fmt("%d per-epoch value%s not finite (NaN or infinite); left out of the "
            "charts",
            bad_values, bad_values == 1 ? " was" : "s were"));
  }
  if (!notes.empty()) {
    o += "<b>Notes</b>\n<ul class=\"notes\">\n";
    for (const std::string& n : notes) o += "<li>" + n + "</li>\n";
    o += "</ul>\n";
  }
  o += "</section>\n";
  return o;
}

std::string curves_section(const ReportData& d) {
  std::string o = "<section>\n<h2>Learning curves</h2>\n";
  if (d.epochs.empty()) return o + "<p class=\"muted\">No epochs were recorded.</p>\n</section>\n";

  Series loss{"train", "#1f6feb", false, {}}, val_loss{"validation", "#e36209", true, {}};
  Series acc = loss, val_acc = val_loss;
  bool any_val = false;
  for (const EpochMetrics& e : d.epochs) {
    loss.points.push_back({double(e.epoch), e.loss});
    acc.points.push_back({double(e.epoch), e.accuracy});
    // An epoch without validation is a gap in the validation line, not a zero.
    val_loss.points.push_back({double(e.epoch), e.has_val ? e.val_loss : NAN});
    val_acc.points.push_back({double(e.epoch), e.has_val ? e.val_accuracy : NAN});
    any_val |= e.has_val;
  }
  std::vector<Series> ls{loss}, as{acc};
  if (any_val) ls.push_back(val_loss), as.push_back(val_acc);
  o += "<div class=\"charts\">\n" + svg_line_chart("Loss", ls, false, d.kept_epoch) +
       svg_line_chart("Accuracy", as, true, d.kept_epoch) + "</div>\n";

  // The exact numbers, folded away: the charts are for shape, this is for reading off values.
  o += "<details><summary>Per-epoch numbers</summary>\n<table class=\"epochs\">\n<thead><tr>"
       "<th>epoch</th><th>loss</th><th>accuracy</th>";
  if (any_val) o += "<th>val loss</th><th>val accuracy</th>";
  o += "<th>seconds</th><th>throughput</th></tr></thead>\n<tbody>\n";
  for (const EpochMetrics& e : d.epochs) {
    const bool kept = e.epoch == d.kept_epoch;
    o += fmt("<tr%s><td>%d%s</td><td>", kept ? " class=\"kept\"" : "", e.epoch,
             kept ? " (kept)" : "") +
         num(e.loss, 4) + "</td><td>" + percent(e.accuracy, 2) + "</td>";
    if (any_val) {
      o += "<td>" + (e.has_val ? num(e.val_loss, 4) : "&ndash;") + "</td><td>" +
           (e.has_val ? percent(e.val_accuracy, 2) : "&ndash;") + "</td>";
    }
    // A cached epoch decodes no image: its rate is feature rows, never shown as images/s.
    o += "<td>" + num(e.seconds, 1) + "</td><td>" +
         (e.from_cache ? num(e.feature_rows_per_second, 0) + " feature rows/s (cached features)"
                       : num(e.images_per_second, 0) + " images/s") +
         "</td></tr>\n";
  }
  o += "</tbody>\n</table>\n</details>\n</section>\n";
  return o;
}

std::string settings_section(const ReportData& d) {
  if (d.settings.empty()) return "";
  std::string o = "<section>\n<h2>Settings</h2>\n<table class=\"settings\">\n<tbody>\n";
  for (const auto& [name, value] : d.settings)
    o += "<tr><th>" + html_escape(name) + "</th><td>" + html_escape(value) + "</td></tr>\n";
  return o + "</tbody>\n</table>\n</section>\n";
}

std::string test_section(const ReportData& d) {
  std::string o = "<section>\n<h2>Confusion matrix (test)</h2>\n";
  if (d.confusion.empty()) {
    return o + "<p class=\"muted\">No test results were recorded.</p>\n</section>\n";
  }
  if (!confusion_ok(d)) {
    return o + fmt("<p class=\"muted\">The confusion matrix holds %zu counts; %zu classes need "
                   "%zu. Not shown.</p>\n</section>\n",
                   d.confusion.size(), d.classes.size(), d.classes.size() * d.classes.size());
  }
  o += "<p class=\"muted\">Rows: true class. Columns: predicted class. Shade: share of the "
       "row.</p>\n<div class=\"scroll\">\n" +
       confusion_table(d) + "</div>\n</section>\n";
  o += "<section>\n<h2>Per-class precision and recall (test)</h2>\n" + metrics_table(d) +
       "</section>\n";
  return o;
}

std::string render(const ReportData& d) {
  const std::string title = d.title.empty() ? "graft training report" : html_escape(d.title);
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>" +
      title + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  o += "<h1>" + title + "</h1>\n<div class=\"muted\">graft training report</div>\n";
  o += summary_section(d);
  o += curves_section(d);
  o += test_section(d);
  o += settings_section(d);
  o += "<section>\n<h2>Most confident mistakes (test)</h2>\n";
  o += d.worst.empty() ? "<p class=\"muted\">No misclassified images to show.</p>\n"
                       : mistakes_grid(d);
  o += "</section>\n</body>\n</html>\n";
  return o;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot write report '" + path + "': " + what);
}

}  // namespace

void write_report(const std::string& path, const ReportData& data) {
  const std::string html = render(data);

  // Temp file then rename, so a browser (or a crash mid-write) never sees half a page. No fsync:
  // unlike a checkpoint, a lost report is cheap to regenerate.
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, "cannot create '" + tmp + "': " + std::strerror(errno));
  const bool written = std::fwrite(html.data(), 1, html.size(), f) == html.size();
  int err = errno;
  // fclose flushes, and can be the first to report a full disk.
  const bool closed = std::fclose(f) == 0;
  if (!closed && written) err = errno;
  if (!written || !closed) {
    std::remove(tmp.c_str());
    fail(path, "cannot write '" + tmp + "': " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    fail(path, "cannot rename '" + tmp + "' over it: " + std::strerror(err));
  }
}

}  // namespace graft
