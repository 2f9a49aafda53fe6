#pragma once
// Image decoding (JPEG via TurboJPEG, PNG via libpng), antialiased resizing and the
// preprocessing geometry that turns a photo into a size x size x 3 uint8 network input.
//
// Everything decodes to 8-bit RGB, row-major HWC. What is deliberately not done, to match
// torchvision's ImageFolder + PIL pipeline (the reference the accuracy numbers are compared to):
//  - EXIF orientation is ignored (PIL's Image.open does not apply it either);
//  - PNG gamma (gAMA), ICC profiles and JPEG ICC profiles are ignored;
//  - alpha is stripped, never composited: an RGBA pixel keeps its stored RGB, like PIL's
//    convert("RGB"). Palette and grey transparency (tRNS) is dropped the same way.
//
// A file that is corrupt or truncated anywhere in its pixel data is an error, even where the
// codec could carry on (libjpeg fills a truncated JPEG with grey): a half-grey photo must not
// silently enter training. Every fault throws ImageError with one line naming the file.
//
// All functions are thread-safe; each thread keeps its own TurboJPEG handle and resize scratch.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace graft {

// A bad image file: what() is one line, "<name>: <fault>".
struct ImageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// 8-bit RGB, row-major HWC: rgb.size() == width * height * 3.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct ImageSize {
  int width = 0, height = 0;
};

enum class ImageFormat { unknown, jpeg, png };

// From the magic bytes only; the file name's extension plays no part.
ImageFormat sniff_format(const uint8_t* bytes, size_t size);

struct DecodeLimits {
  // Refuse any image whose header declares more pixels than this (width * height at full size,
  // before any scaled decode: a progressive JPEG keeps full-size coefficients in memory whatever
  // the output scale). Checked before any pixel buffer is allocated.
  int64_t max_pixels = int64_t(64) * 1024 * 1024;
};

// Decodes a JPEG or PNG held in memory. For JPEG, picks the smallest TurboJPEG DCT scaling
// factor <= 1 whose output is at least min_width x min_height (so a later resize only
// down-samples), or full size when even 1/1 is smaller; (0, 0) means full size. PNG always
// decodes at full size. name_for_messages prefixes every error message.
Image decode_image(const uint8_t* bytes, size_t size, int min_width, int min_height,
                   const DecodeLimits& limits, const std::string& name_for_messages);

// Reads the file and decodes it. Directories, unreadable and empty files throw ImageError
// naming the path.
Image load_image(const std::string& path, int min_width, int min_height,
                 const DecodeLimits& limits);

// Reads the whole file into memory (the same errors as load_image).
std::vector<uint8_t> read_image_file(const std::string& path);

// The scaled JPEG output size decode_image would choose for a full-size w x h image.
ImageSize choose_jpeg_scaled_size(int width, int height, int min_width, int min_height);

// ---- Resizing ----------------------------------------------------------------------------------

// Resizes the crop rectangle [crop_x, crop_x + crop_w) x [crop_y, crop_y + crop_h) of src (in
// source pixel units, fractional allowed; it must lie inside the image) to out_w x out_h, writing
// out_w * out_h * 3 bytes to dst (caller-owned, e.g. a slot of a pinned ring buffer).
//
// This is PIL's BILINEAR resample (Image.resize with a box), which torchvision uses for PIL
// images: a triangle filter whose radius widens to the scale when down-sampling (antialiased),
// separable, horizontal pass first into a uint8 intermediate, 22-bit fixed-point weights. Output
// pixel i samples source position crop_x + (i + 0.5) * crop_w / out_w. For the same box the
// result is bit-identical to PIL's.
void resize_bilinear_aa(const Image& src, double crop_x, double crop_y, double crop_w,
                        double crop_h, int out_w, int out_h, uint8_t* dst);

// ---- Preprocessing -----------------------------------------------------------------------------

struct Preprocess {
  int size = 224;  // output is size x size x 3
  // "center_crop": torchvision Resize(round(size / crop_fraction)) on the shorter side, then
  //                CenterCrop(size).
  // "squash":      the whole image resized to size x size, aspect ratio not kept (TF Lite Model
  //                Maker style, but antialiased).
  std::string resize_mode = "center_crop";
  float crop_fraction = 0.875f;  // in (0, 1]; only for center_crop
  // Used later, on the device, for uint8 -> float normalisation; ImageNet defaults. The weight
  // file's metadata overrides them.
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
};

// The source rectangle of a src_w x src_h image that preprocess_image resizes to size x size.
// For center_crop it is torchvision's Resize + CenterCrop mapped back to source coordinates, so
// one resize of this box equals the two-step pipeline. Throws std::invalid_argument for a bad
// Preprocess.
struct CropBox {
  double x = 0, y = 0, w = 0, h = 0;
};
CropBox preprocess_crop_box(int src_w, int src_h, const Preprocess& p);

// The smallest decoded size of a src_w x src_h image for which preprocess_image never
// up-samples on either axis (0 on an axis that is unconstrained).
ImageSize preprocess_min_decode_size(int src_w, int src_h, const Preprocess& p);

// Writes p.size * p.size * 3 bytes of uint8 RGB to dst.
void preprocess_image(const Image& src, const Preprocess& p, uint8_t* dst);

// decode_image with the scale chosen from the file's header and p (preprocess_min_decode_size).
Image decode_image_for(const uint8_t* bytes, size_t size, const Preprocess& p,
                       const DecodeLimits& limits, const std::string& name_for_messages);
Image load_image_for(const std::string& path, const Preprocess& p, const DecodeLimits& limits);

}  // namespace graft
