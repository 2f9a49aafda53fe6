#pragma once
// Training-time augmentation: torchvision's RandomResizedCrop (scale 0.08..1, aspect 3/4..4/3)
// and a horizontal flip with probability 1/2, drawn from a generator keyed by (seed, epoch,
// image), so an augmented run is as reproducible as a plain one.
#include <cstdint>

#include "io/image.h"

namespace graft {

// Writes p.size x p.size x 3 uint8 to dst, like preprocess_image but with a random crop box.
void augment_image(const Image& src, const Preprocess& p, uint64_t key, uint8_t* dst);

}  // namespace graft
