// Format sniffing, file reading and the preprocessing geometry. The codecs are in
// image_jpeg.cpp and image_png.cpp, the resampler in image_resize.cpp.
#include "io/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "io/image_internal.h"
#include "io/printable.h"

namespace graft {

namespace detail {

void image_fail(const std::string& name, const std::string& fault) {
  throw ImageError(printable(name) + ": " + fault);
}

void check_pixel_cap(int64_t width, int64_t height, const DecodeLimits& limits,
                     const std::string& name) {
  if (width <= 0 || height <= 0)
    image_fail(name, "header declares an empty image (" + std::to_string(width) + "x" +
                         std::to_string(height) + ")");
  // Divided, not multiplied: a PNG header's two 32-bit sizes can overflow a 64-bit product.
  if (width > limits.max_pixels / height)
    image_fail(name, "image " + std::to_string(width) + "x" + std::to_string(height) +
                         " exceeds the pixel cap of " + std::to_string(limits.max_pixels));
}

}  // namespace detail

namespace {

bool starts_with(const uint8_t* bytes, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(bytes, magic, n) == 0;
}

// Names formats people do feed in by mistake (phone HEIC, web WebP), for a more useful message.
const char* other_format_name(const uint8_t* b, size_t n) {
  if (starts_with(b, n, "GIF87a", 6) || starts_with(b, n, "GIF89a", 6)) return "GIF";
  if (n >= 12 && starts_with(b, n, "RIFF", 4) && std::memcmp(b + 8, "WEBP", 4) == 0) return "WebP";
  if (starts_with(b, n, "II*\0", 4) || starts_with(b, n, "MM\0*", 4)) return "TIFF";
  if (starts_with(b, n, "BM", 2) && n >= 14) return "BMP";
  if (n >= 12 && std::memcmp(b + 4, "ftyp", 4) == 0) {
    if (std::memcmp(b + 8, "avif", 4) == 0) return "AVIF";
    if (std::memcmp(b + 8, "heic", 4) == 0 || std::memcmp(b + 8, "heix", 4) == 0 ||
        std::memcmp(b + 8, "mif1", 4) == 0 || std::memcmp(b + 8, "hevc", 4) == 0)
      return "HEIC/HEIF";
  }
  return nullptr;
}

// Python's round() on a non-negative half-integer d / 2: halves go to the even neighbour.
int half_round_even(int d) {
  const int q = d / 2;
  if (d % 2 == 0) return q;
  return q % 2 == 0 ? q : q + 1;
}

void check_preprocess(const Preprocess& p) {
  if (p.size < 1) throw std::invalid_argument("preprocess: size must be positive");
  if (p.resize_mode != "center_crop" && p.resize_mode != "squash")
    throw std::invalid_argument("preprocess: resize_mode must be center_crop or squash, not '" +
                                p.resize_mode + "'");
  if (p.resize_mode == "center_crop" && !(p.crop_fraction > 0.f && p.crop_fraction <= 1.f))
    throw std::invalid_argument("preprocess: crop_fraction must be in (0, 1]");
}

// The shorter side after torchvision's Resize, before CenterCrop.
int resize_short_side(const Preprocess& p) {
  return int(std::lround(double(p.size) / double(p.crop_fraction)));
}

}  // namespace

ImageFormat sniff_format(const uint8_t* bytes, size_t size) {
  if (!bytes) return ImageFormat::unknown;
  // SOI followed by the first marker's 0xFF: every JPEG (JFIF, Exif, raw) starts so.
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return ImageFormat::jpeg;
  if (starts_with(bytes, size, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::png;
  return ImageFormat::unknown;
}

Image decode_image(const uint8_t* bytes, size_t size, int min_width, int min_height,
                   const DecodeLimits& limits, const std::string& name_for_messages) {
  detail::DecodeTarget target;
  target.min_width = min_width;
  target.min_height = min_height;
  if (size == 0 || !bytes) detail::image_fail(name_for_messages, "empty file (0 bytes)");
  switch (sniff_format(bytes, size)) {
    case ImageFormat::jpeg:
      return detail::decode_jpeg(bytes, size, target, limits, name_for_messages);
    case ImageFormat::png:
      return detail::decode_png(bytes, size, limits, name_for_messages);
    case ImageFormat::unknown:
      break;
  }
  if (const char* other = other_format_name(bytes, size))
    detail::image_fail(name_for_messages, std::string("not a JPEG or PNG file (looks like ") +
                                              other + ", which is not supported)");
  detail::image_fail(name_for_messages, "not a JPEG or PNG file (unknown magic bytes)");
}

Image decode_image_for(const uint8_t* bytes, size_t size, const Preprocess& p,
                       const DecodeLimits& limits, const std::string& name_for_messages) {
  check_preprocess(p);
  if (size == 0 || !bytes) detail::image_fail(name_for_messages, "empty file (0 bytes)");
  if (sniff_format(bytes, size) == ImageFormat::jpeg) {
    detail::DecodeTarget target;
    target.pre = &p;
    return detail::decode_jpeg(bytes, size, target, limits, name_for_messages);
  }
  return decode_image(bytes, size, 0, 0, limits, name_for_messages);
}

std::vector<uint8_t> read_image_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) detail::image_fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    detail::image_fail(path, std::string("cannot stat (") + std::strerror(errno) + ")");
  if (S_ISDIR(st.st_mode)) detail::image_fail(path, "is a directory, not an image file");
  if (!S_ISREG(st.st_mode)) detail::image_fail(path, "not a regular file");
  if (st.st_size == 0) detail::image_fail(path, "empty file (0 bytes)");
  // No photo comes near this; a larger file is a mistake, not an image to buffer.
  constexpr off_t kMaxFileBytes = off_t(1) << 30;
  if (st.st_size > kMaxFileBytes)
    detail::image_fail(path, "file of " + std::to_string(st.st_size) +
                                 " bytes is too large for an image (limit 1 GiB)");
  std::vector<uint8_t> bytes(size_t(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) detail::image_fail(path, std::string("read error (") + std::strerror(errno) + ")");
    if (n == 0) break;  // shrank while we read it
    done += size_t(n);
  }
  bytes.resize(done);
  if (bytes.empty()) detail::image_fail(path, "empty file (0 bytes)");
  return bytes;
}

Image load_image(const std::string& path, int min_width, int min_height,
                 const DecodeLimits& limits) {
  const std::vector<uint8_t> bytes = read_image_file(path);
  return decode_image(bytes.data(), bytes.size(), min_width, min_height, limits, path);
}

Image load_image_for(const std::string& path, const Preprocess& p, const DecodeLimits& limits) {
  const std::vector<uint8_t> bytes = read_image_file(path);
  return decode_image_for(bytes.data(), bytes.size(), p, limits, path);
}

CropBox preprocess_crop_box(int src_w, int src_h, const Preprocess& p) {
  check_preprocess(p);
  if (src_w <= 0 || src_h <= 0) throw std::invalid_argument("preprocess: empty source image");
  if (p.resize_mode == "squash") return {0.0, 0.0, double(src_w), double(src_h)};

  // torchvision Resize(r): the shorter side becomes r, the longer int(r * long / short).
  const int r = resize_short_side(p);
  int new_w, new_h;
  if (src_w <= src_h) {
    new_w = r;
    new_h = int(double(int64_t(r) * src_h) / src_w);
  } else {
    new_h = r;
    new_w = int(double(int64_t(r) * src_w) / src_h);
  }
  // CenterCrop(size): offsets int(round((new - size) / 2.0)). r >= size since crop_fraction <= 1.
  const int left = half_round_even(new_w - p.size);
  const int top = half_round_even(new_h - p.size);
  // Resized pixel i samples source (i + 0.5) * src / new; a crop starting at `left` is the same
  // as resizing the source box starting at left * src / new with the same scale.
  const double sx = double(src_w) / new_w, sy = double(src_h) / new_h;
  return {left * sx, top * sy, p.size * sx, p.size * sy};
}

ImageSize preprocess_min_decode_size(int src_w, int src_h, const Preprocess& p) {
  check_preprocess(p);
  if (p.resize_mode == "squash") return {p.size, p.size};
  // The shorter side must reach the Resize target. The longer side then does too: its resized
  // length int(r * long / short) is at most the decoded long side. DCT scaling keeps the order
  // of the sides (ceil of a monotone product), so the shorter side stays the shorter.
  const int r = resize_short_side(p);
  return src_w <= src_h ? ImageSize{r, 0} : ImageSize{0, r};
}

void preprocess_image(const Image& src, const Preprocess& p, uint8_t* dst) {
  const CropBox box = preprocess_crop_box(src.width, src.height, p);
  resize_bilinear_aa(src, box.x, box.y, box.w, box.h, p.size, p.size, dst);
}

}  // namespace graft
