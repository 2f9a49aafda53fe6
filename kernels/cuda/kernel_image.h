#pragma once
// Can this binary run on the current GPU? A build holds machine code for some architectures and
// possibly PTX that the driver compiles for newer ones; a card outside that set fails at its first
// kernel launch with "no kernel image is available". Asking before any work starts lets the
// engine fall back to the CPU or stop with a message that says how to rebuild.
#include <string>

namespace graft::cuda {

// True when the current device can run this binary's kernels; otherwise *why names the card, its
// architecture and the CUDA error.
bool kernel_image_available(std::string* why);

}  // namespace graft::cuda
