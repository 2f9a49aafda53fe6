// PNG decoding through libpng's low-level API.
//
// libpng reports errors by longjmp. A longjmp that skips a C++ frame holding objects with
// non-trivial destructors is undefined behaviour, so the setjmp calls live in two small functions
// (png_read_header_c, png_read_pixels_c) whose locals are all trivial, and every libpng call that
// can fail happens inside them. The frames jumped over are libpng's own and the two plain
// callbacks below. Everything owning memory (the libpng structs, the pixel buffer, the row
// pointers) lives in decode_png, a caller of those functions, which a longjmp never crosses.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/image_internal.h"

namespace graft {
namespace {

struct PngSource {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  bool hit_end = false;  // the file ended before libpng was done with it
  char message[256] = {};
};

void png_read_from_memory(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) {
    src->hit_end = true;
    png_error(png, "truncated PNG data");
  }
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof src->message, "%s", message ? message : "unknown error");
  png_longjmp(png, 1);
}

// Warnings (unknown sRGB profiles, bad CRCs in ancillary chunks, trailing zlib data) leave the
// pixels intact; they are not worth a message per image.
void png_on_warning(png_structp, png_const_charp) {}

// Only trivially destructible locals from here to the end of png_read_pixels_c.
bool png_read_header_c(png_structp png, png_infop info, png_uint_32* width, png_uint_32* height) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  *width = png_get_image_width(png, info);
  *height = png_get_image_height(png, info);
  return true;
}

// Sets up the conversion to RGB8 and reads every row. *layout_ok is false (and the function
// returns false) if libpng would not deliver 3 x 8-bit channels, which should not happen.
bool png_read_pixels_c(png_structp png, png_infop info, png_bytepp rows, size_t row_bytes,
                       bool* layout_ok) {
  if (setjmp(png_jmpbuf(png))) return false;
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);  // adds alpha on tRNS
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  // Rounds (v * 255 / 65535); png_set_strip_16 would just keep the high byte.
  if (bit_depth == 16) png_set_scale_16(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(png);
  // Alpha (stored, or from a palette's tRNS) is dropped, not composited: PIL's convert("RGB").
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);  // Adam7: png_read_image then runs all seven passes
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != row_bytes) {
    *layout_ok = false;
    return false;
  }
  png_read_image(png, rows);
  // Reads to IEND, so a file cut after its last IDAT is still caught.
  png_read_end(png, nullptr);
  return true;
}

struct PngReadGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReadGuard() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

[[noreturn]] void fail_png(const std::string& name, const PngSource& src) {
  if (src.hit_end) detail::image_fail(name, "truncated PNG data");
  detail::image_fail(name, std::string("corrupt PNG data (") + src.message + ")");
}

}  // namespace

namespace detail {

Image decode_png(const uint8_t* bytes, size_t size, const DecodeLimits& limits,
                 const std::string& name) {
  // IHDR must be the first chunk; its size is checked here, before libpng allocates anything or
  // reads on to the first IDAT.
  if (size >= 24 && std::memcmp(bytes + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t at) {
      return uint32_t(bytes[at]) << 24 | uint32_t(bytes[at + 1]) << 16 |
             uint32_t(bytes[at + 2]) << 8 | bytes[at + 3];
    };
    check_pixel_cap(be32(16), be32(20), limits, name);
  }
  PngSource src;
  src.data = bytes;
  src.size = size;
  PngReadGuard guard;
  guard.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
  if (!guard.png) throw std::runtime_error("libpng: cannot create a read struct");
  guard.info = png_create_info_struct(guard.png);
  if (!guard.info) throw std::runtime_error("libpng: cannot create an info struct");
  png_set_read_fn(guard.png, &src, png_read_from_memory);

  png_uint_32 width = 0, height = 0;
  if (!png_read_header_c(guard.png, guard.info, &width, &height)) fail_png(name, src);
  check_pixel_cap(width, height, limits, name);

  Image img;
  img.width = int(width);
  img.height = int(height);
  const size_t row_bytes = size_t(width) * 3;
  img.rgb.resize(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (size_t y = 0; y < height; ++y) rows[y] = img.rgb.data() + y * row_bytes;
  bool layout_ok = true;
  if (!png_read_pixels_c(guard.png, guard.info, rows.data(), row_bytes, &layout_ok)) {
    if (!layout_ok) image_fail(name, "PNG colour layout could not be converted to 8-bit RGB");
    fail_png(name, src);
  }
  return img;
}

}  // namespace detail
}  // namespace graft
