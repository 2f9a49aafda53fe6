#pragma once
// Shared between the io/image*.cpp files; not part of the public API.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/image.h"

namespace graft::detail {

// One-line ImageError: "<name>: <fault>".
[[noreturn]] void image_fail(const std::string& name, const std::string& fault);

// What a scaled JPEG decode must deliver: fixed minimum dimensions, or (when pre is set) the
// minimum derived from the header and the preprocessing.
struct DecodeTarget {
  int min_width = 0, min_height = 0;
  const Preprocess* pre = nullptr;
};

Image decode_jpeg(const uint8_t* bytes, size_t size, const DecodeTarget& target,
                  const DecodeLimits& limits, const std::string& name);
Image decode_png(const uint8_t* bytes, size_t size, const DecodeLimits& limits,
                 const std::string& name);

// The header's width x height against the cap; throws before anything is allocated.
void check_pixel_cap(int64_t width, int64_t height, const DecodeLimits& limits,
                     const std::string& name);

}  // namespace graft::detail
