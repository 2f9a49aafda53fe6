// libFuzzer target: graft::parse_weights on arbitrary bytes, then tensor_to_f32 on every view.
//
// Beyond "no sanitizer report", it checks the promises io/safetensors.h makes: errors are
// WeightFileError with a one-line message, and every view it hands out lies inside the buffer
// with nbytes == numel * dtype_size.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "io/safetensors.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
    std::abort();
  }
}

void check_one_line(const std::exception& e) {
  check(std::strchr(e.what(), '\n') == nullptr, "error message spans several lines");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into an exactly sized heap block so ASan catches a read one byte past the end
  // (libFuzzer's own buffer already is one, but this keeps the target honest if reused).
  auto* copy = static_cast<uint8_t*>(std::malloc(size ? size : 1));
  if (size) std::memcpy(copy, data, size);
  try {
    const graft::WeightFile file = graft::parse_weights(copy, size, "fuzz.safetensors");
    check(file.by_name.size() == file.tensors.size(), "by_name size");
    for (const graft::TensorView& t : file.tensors) {
      check(t.nbytes == static_cast<size_t>(t.numel) * graft::dtype_size(t.dtype), "nbytes");
      check(t.data >= copy && t.data + t.nbytes <= copy + size, "view outside the buffer");
      check(graft::find_tensor(file, t.name) == &t, "find_tensor");
      try {
        const std::vector<float> values = graft::tensor_to_f32(t);
        check(values.size() == static_cast<size_t>(t.numel), "tensor_to_f32 size");
      } catch (const graft::WeightFileError& e) {
        check_one_line(e);  // integer and bool dtypes do not convert
      }
    }
  } catch (const graft::WeightFileError& e) {
    check_one_line(e);
  }
  std::free(copy);
  return 0;
}
