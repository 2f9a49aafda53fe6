#pragma once
// safetensors weight files: reader (memory-mapped, zero-copy) and atomic writer.
//
// Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
// The JSON object maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) plus an optional "__metadata__" of string -> string.
//
// The reader trusts nothing in the file: every offset, size and shape is checked before a
// TensorView is handed out, so a corrupt or hostile file is rejected with a one-line
// WeightFileError naming the file, the tensor (when there is one) and the fault. It never reads
// outside the bytes it is given.
//
// Deliberately accepted (the reference reader is stricter): gaps between tensors and bytes after
// the last tensor, JSON headers whose length is not a multiple of 8 (data pointers may then be
// unaligned), and unknown fields inside a tensor entry.
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace graft {

enum class DType { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

// Bytes per element (boolean is one byte, as in safetensors).
size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL".
std::string_view dtype_name(DType dtype);
// Inverse of dtype_name; false for anything else (names are case-sensitive, as in the format).
bool dtype_from_name(std::string_view name, DType* dtype);

// Every fault in reading, converting or writing a weight file. what() is a single line.
struct WeightFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One tensor inside a WeightFile. `data` points into the file's mapping (or the buffer given to
// parse_weights) and is valid while that lives. It is aligned to the dtype's size when the file
// was written with an 8-byte-padded header and tensors in naturally aligned order (the reference
// writer and write_weights with larger dtypes first both do); otherwise read it with memcpy or
// tensor_to_f32, never through a cast pointer.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // empty for a 0-d scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;  // == numel * dtype_size(dtype)
  int64_t numel = 0;  // product of shape; 1 for a scalar, 0 when any dim is 0
};

// Owns a read-only mapping of a file; unmaps on destruction. Move-only.
struct MappedFile {
  const uint8_t* data = nullptr;
  size_t size = 0;

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  ~MappedFile();
};

// A parsed weight file. Tensors are in data order (ascending data_offsets, i.e. the order they
// were written). Move-only because it owns the mapping the views point into.
// Note: the mapping is of the file on disk; truncating the file while it is open makes later
// reads of tensor data fault (SIGBUS), as with any mmap. Writers here replace files by rename,
// which is safe.
struct WeightFile {
  std::string path;
  std::map<std::string, std::string> metadata;
  std::vector<TensorView> tensors;

  // Indices into `tensors`, sorted by name, for find_tensor. Rebuilt by the parser; stale if
  // `tensors` is edited by hand.
  std::vector<size_t> by_name;
  MappedFile mapping;  // empty when parsed from a caller's buffer
};

// Maps `path` and parses it. Throws WeightFileError (open/stat/mmap failures name the path and
// the system's reason; an empty file or a directory gets its own message).
WeightFile open_weights(const std::string& path);

// Parses `size` bytes at `bytes` as a safetensors file, without any I/O. The views point into
// `bytes`, which must outlive the result. `path_for_messages` only labels errors and becomes
// WeightFile::path. Reads only [bytes, bytes + size) whatever the content.
WeightFile parse_weights(const uint8_t* bytes, size_t size, const std::string& path_for_messages);

// The tensor called `name`, or nullptr. O(log n).
const TensorView* find_tensor(const WeightFile& file, std::string_view name);

// Converts an F32, F16, BF16 or F64 tensor to float32 values (F16 exactly, including subnormals,
// infinities and NaN payloads; F64 rounds). Other dtypes throw WeightFileError.
std::vector<float> tensor_to_f32(const TensorView& tensor);

// Exact half -> float and bfloat16 -> float conversions used by tensor_to_f32.
float f16_bits_to_f32(uint16_t bits);
float bf16_bits_to_f32(uint16_t bits);

struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // little-endian, nbytes long; may be null when nbytes == 0
  size_t nbytes = 0;
};

// Writes a safetensors file with the tensors' data laid out contiguously in the given order and
// the JSON header padded with spaces so the data section starts at a multiple of 8. Atomic:
// writes `path + ".tmp.<pid>"`, fsyncs it, renames it over `path`, then fsyncs the directory;
// on failure the temp file is removed and `path` is untouched. Validates its input first
// (unique names, "__metadata__" is reserved, non-negative dims, nbytes == numel * dtype size,
// valid UTF-8 in names and metadata). Not safe for two threads of one process writing the same
// path at once (they would share the temp name).
void write_weights(const std::string& path, const std::vector<TensorToWrite>& tensors,
                   const std::map<std::string, std::string>& metadata);

}  // namespace graft
