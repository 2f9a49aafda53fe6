#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <utility>

#include "io/printable.h"

namespace graft {

// Tensor data is used in place as little-endian bytes.
static_assert(std::endian::native == std::endian::little, "graft assumes a little-endian host");

namespace {

using json = nlohmann::json;

// The reference implementation's limit: a header this large is corruption, not a model, and
// parsing it would cost gigabytes of JSON nodes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three deep (object -> tensor entry -> shape). The cap keeps a hostile
// "[[[[..." header from building millions of nodes before it is rejected.
constexpr int kMaxJsonDepth = 16;
constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void fail(const std::string& path, const std::string& fault) {
  throw WeightFileError(printable(path, 200) + ": " + printable(fault, 1000));
}

[[noreturn]] void fail_tensor(const std::string& path, std::string_view tensor,
                              const std::string& fault) {
  throw WeightFileError(printable(path, 200) + ": tensor '" + printable(tensor, 200) +
                        "': " + printable(fault, 1000));
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    if (i == 8) {
      s += "...";
      break;
    }
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_text(uint64_t begin, uint64_t end) {
  // snprintf rather than string concatenation: GCC 12 warns falsely (-Wrestrict) on the latter.
  char buf[64];
  std::snprintf(buf, sizeof(buf), "[%llu, %llu]", static_cast<unsigned long long>(begin),
                static_cast<unsigned long long>(end));
  return buf;
}

uint64_t load_le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// numel and byte count of a shape, or false on negative dims or 64-bit overflow. Overflow of
// the running product is rejected even if a later dim is zero: such a shape is never intended.
bool shape_sizes(const std::vector<int64_t>& shape, DType dtype, int64_t* numel, size_t* nbytes) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(dtype_size(dtype)), &bytes)) return false;
  if (bytes > std::numeric_limits<size_t>::max()) return false;
  *numel = static_cast<int64_t>(n);
  *nbytes = static_cast<size_t>(bytes);
  return true;
}

// Parses the header text. nlohmann keeps the last of duplicate keys silently, so the callback
// tracks the keys of each open object and rejects repeats; it also caps the nesting depth.
json parse_header(const char* begin, const char* end, const std::string& path) {
  std::vector<std::set<std::string>> open_objects;
  std::string top_key;  // the tensor entry being parsed, for messages
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) {
          fail(path,
               "JSON header is nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
        }
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        const bool fresh = open_objects.back().insert(key).second;
        if (depth == 1) {
          if (!fresh) {
            if (key == kMetadataKey) fail(path, "duplicate __metadata__ in JSON header");
            fail_tensor(path, key, "duplicate tensor name in JSON header");
          }
          top_key = key;
        } else if (!fresh) {
          if (depth == 2 && top_key == kMetadataKey) {
            fail(path, "__metadata__ has duplicate key '" + key + "'");
          }
          fail_tensor(path, top_key, "duplicate key '" + key + "' in its entry");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, which would accept anything
  // after it. Valid JSON never holds a raw NUL (inside strings it must be escaped).
  if (const void* nul = std::memchr(begin, 0, static_cast<size_t>(end - begin))) {
    fail(path, "header is not valid JSON: NUL byte at header offset " +
                   std::to_string(static_cast<const char*>(nul) - begin));
  }
  try {
    return json::parse(begin, end, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep its position and reason.
    std::string why = e.what();
    if (!why.empty() && why[0] == '[') {
      const size_t close = why.find("] ");
      if (close != std::string::npos) why.erase(0, close + 2);
    }
    fail(path, "header is not valid JSON: " + why);
  }
}

// A non-negative JSON integer, or nullopt-like false. nlohmann stores non-negative integer
// literals as number_unsigned and negative ones as number_integer; anything else (1.5, 1e3,
// integers beyond 64 bits, strings) is not an integer here.
enum class IntKind { ok, negative, not_integer };
IntKind get_u64(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return IntKind::ok;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v >= 0) {
      *out = static_cast<uint64_t>(v);
      return IntKind::ok;
    }
    return IntKind::negative;
  }
  return IntKind::not_integer;
}

struct Entry {
  TensorView view;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& value,
                  const uint8_t* data, uint64_t data_size) {
  Entry e;
  e.view.name = name;
  if (!value.is_object()) {
    fail_tensor(path, name,
                std::string("entry is not a JSON object (found ") + value.type_name() + ")");
  }

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) fail_tensor(path, name, "missing 'dtype'");
  if (!dtype_it->is_string()) {
    fail_tensor(path, name,
                std::string("'dtype' is not a string (found ") + dtype_it->type_name() + ")");
  }
  const std::string& dtype_str = dtype_it->get_ref<const std::string&>();
  if (!dtype_from_name(dtype_str, &e.view.dtype)) {
    fail_tensor(path, name,
                "unknown dtype '" + printable(dtype_str, 40) +
                    "' (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL)");
  }

  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) fail_tensor(path, name, "missing 'shape'");
  if (!shape_it->is_array()) {
    fail_tensor(path, name,
                std::string("'shape' is not an array (found ") + shape_it->type_name() + ")");
  }
  e.view.shape.reserve(shape_it->size());
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const json& dim = (*shape_it)[i];
    uint64_t d = 0;
    switch (get_u64(dim, &d)) {
      case IntKind::negative:
        fail_tensor(path, name,
                    "shape has a negative dimension (" + std::to_string(dim.get<int64_t>()) +
                        " at index " + std::to_string(i) + ")");
      case IntKind::not_integer:
        fail_tensor(path, name,
                    "shape element " + std::to_string(i) + " is not an integer (" +
                        printable(dim.dump(), 40) + ")");
      case IntKind::ok:
        break;
    }
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail_tensor(path, name,
                  "shape dimension " + std::to_string(d) + " overflows a 64-bit signed size");
    }
    e.view.shape.push_back(static_cast<int64_t>(d));
  }
  if (!shape_sizes(e.view.shape, e.view.dtype, &e.view.numel, &e.view.nbytes)) {
    fail_tensor(path, name,
                "shape " + shape_text(e.view.shape) + " of " +
                    std::string(dtype_name(e.view.dtype)) + " overflows a 64-bit byte count");
  }

  const auto off_it = value.find("data_offsets");
  if (off_it == value.end()) fail_tensor(path, name, "missing 'data_offsets'");
  if (!off_it->is_array() || off_it->size() != 2) {
    fail_tensor(path, name,
                "'data_offsets' must be an array of 2 integers (found " +
                    printable(off_it->dump(), 60) + ")");
  }
  for (int k = 0; k < 2; ++k) {
    uint64_t* target = k == 0 ? &e.begin : &e.end;
    switch (get_u64((*off_it)[k], target)) {
      case IntKind::negative:
        fail_tensor(path, name,
                    "'data_offsets' " + printable(off_it->dump(), 60) + " has a negative value");
      case IntKind::not_integer:
        fail_tensor(path, name,
                    "'data_offsets' " + printable(off_it->dump(), 60) +
                        " must be non-negative 64-bit integers");
      case IntKind::ok:
        break;
    }
  }
  if (e.begin > e.end) {
    fail_tensor(path, name, "data_offsets " + range_text(e.begin, e.end) + " are reversed");
  }
  if (e.end > data_size) {
    fail_tensor(path, name,
                "data_offsets " + range_text(e.begin, e.end) +
                    " run past the end of the data section (" + std::to_string(data_size) +
                    " bytes)");
  }
  if (e.end - e.begin != e.view.nbytes) {
    fail_tensor(path, name,
                "data_offsets " + range_text(e.begin, e.end) + " span " +
                    std::to_string(e.end - e.begin) + " bytes but " +
                    std::string(dtype_name(e.view.dtype)) + " shape " + shape_text(e.view.shape) +
                    " needs " + std::to_string(e.view.nbytes) + " bytes (size mismatch)");
  }
  // begin <= end <= data_size, so this stays within (or one past) the buffer.
  e.view.data = data + e.begin;
  return e;
}

void parse_metadata(const std::string& path, const json& value,
                    std::map<std::string, std::string>* out) {
  if (!value.is_object()) {
    fail(path, std::string("__metadata__ is not a JSON object of strings (found ") +
                   value.type_name() + ")");
  }
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      fail(path, "__metadata__ value for key '" + printable(key) + "' is not a string (found " +
                     v.type_name() + ")");
    }
    out->emplace(key, v.get<std::string>());
  }
}

void write_all(int fd, const void* data, size_t size, const std::string& path,
               const std::string& tmp) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "cannot write temp file '" + tmp + "': " + errno_text(errno));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Rejects a string nlohmann would refuse to serialise (invalid UTF-8), naming what it was.
bool is_valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::bf16:
    case DType::i16:
      return 2;
    case DType::i8:
    case DType::u8:
    case DType::boolean:
      return 1;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::f64:
      return "F64";
    case DType::i64:
      return "I64";
    case DType::i32:
      return "I32";
    case DType::i16:
      return "I16";
    case DType::i8:
      return "I8";
    case DType::u8:
      return "U8";
    case DType::boolean:
      return "BOOL";
  }
  return "?";
}

bool dtype_from_name(std::string_view name, DType* dtype) {
  static constexpr DType all[] = {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64,
                                  DType::i32, DType::i16, DType::i8,   DType::u8,  DType::boolean};
  for (DType d : all) {
    if (dtype_name(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data(std::exchange(other.data, nullptr)), size(std::exchange(other.size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data) ::munmap(const_cast<uint8_t*>(data), size);
    data = std::exchange(other.data, nullptr);
    size = std::exchange(other.size, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data) ::munmap(const_cast<uint8_t*>(data), size);
}

WeightFile parse_weights(const uint8_t* bytes, size_t size, const std::string& path) {
  if (size == 0) fail(path, "file is empty");
  if (size < 8) {
    fail(path, "file is " + std::to_string(size) +
                   " bytes, shorter than the 8-byte header length (truncated?)");
  }
  const uint64_t header_len = load_le64(bytes);
  if (header_len > kMaxHeaderBytes) {
    fail(path, "header length " + std::to_string(header_len) + " is absurdly large (limit " +
                   std::to_string(kMaxHeaderBytes) + " bytes; not a safetensors file?)");
  }
  if (header_len > size - 8) {
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(size) + " bytes; truncated?)");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes) + 8;
  const json header = parse_header(header_begin, header_begin + header_len, path);
  if (!header.is_object()) {
    fail(path, std::string("header is not a JSON object (found ") + header.type_name() + ")");
  }

  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  WeightFile file;
  file.path = path;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      parse_metadata(path, value, &file.metadata);
    } else {
      entries.push_back(parse_entry(path, key, value, data, data_size));
    }
  }

  // Data order, which is the order the tensors were written; names break ties between
  // zero-size tensors so the order never depends on the JSON library.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.view.name < b.view.name;
  });
  // Sorted by begin, a non-empty range overlaps an earlier one exactly when it starts before
  // the furthest end seen so far. Zero-size tensors own no bytes and may sit anywhere.
  const Entry* furthest = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (furthest && e.begin < furthest->end) {
      fail_tensor(path, e.view.name,
                  "bytes " + range_text(e.begin, e.end) + " overlap tensor '" +
                      printable(furthest->view.name) + "' bytes " +
                      range_text(furthest->begin, furthest->end));
    }
    if (!furthest || e.end > furthest->end) furthest = &e;
  }

  file.tensors.reserve(entries.size());
  for (Entry& e : entries) file.tensors.push_back(std::move(e.view));
  file.by_name.resize(file.tensors.size());
  for (size_t i = 0; i < file.by_name.size(); ++i) file.by_name[i] = i;
  std::sort(file.by_name.begin(), file.by_name.end(),
            [&](size_t a, size_t b) { return file.tensors[a].name < file.tensors[b].name; });
  return file;
}

WeightFile open_weights(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};

  struct stat st;
  if (::fstat(fd, &st) != 0) fail(path, "cannot stat: " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a weight file");
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file");
  if (st.st_size == 0) fail(path, "file is empty");  // mmap of length 0 is an error anyway

  MappedFile mapping;
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) fail(path, "cannot mmap: " + errno_text(errno));
  mapping.data = static_cast<const uint8_t*>(p);
  mapping.size = static_cast<size_t>(st.st_size);

  WeightFile file = parse_weights(mapping.data, mapping.size, path);
  // Moving the mapping keeps its address, so the views stay valid.
  file.mapping = std::move(mapping);
  return file;
}

const TensorView* find_tensor(const WeightFile& file, std::string_view name) {
  const auto it = std::lower_bound(
      file.by_name.begin(), file.by_name.end(), name,
      [&](size_t i, std::string_view n) { return std::string_view(file.tensors[i].name) < n; });
  if (it == file.by_name.end() || file.tensors[*it].name != name) return nullptr;
  return &file.tensors[*it];
}

float f16_bits_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float32 (which has range to spare).
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  uint32_t out;
  if (exponent == 31) {
    out = sign | 0x7f800000u | (mantissa << 13);  // inf, or NaN keeping its payload
  } else {
    out = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(out);
}

float bf16_bits_to_f32(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

std::vector<float> tensor_to_f32(const TensorView& t) {
  int64_t numel = 0;
  size_t nbytes = 0;
  if (!shape_sizes(t.shape, t.dtype, &numel, &nbytes) || numel != t.numel || nbytes != t.nbytes ||
      (nbytes > 0 && t.data == nullptr)) {
    throw WeightFileError("tensor '" + printable(t.name) +
                          "': view is inconsistent (shape, numel, nbytes and data disagree)");
  }
  std::vector<float> out(static_cast<size_t>(numel));
  const uint8_t* src = t.data;
  // Every read goes through memcpy: the data may be unaligned within the file.
  switch (t.dtype) {
    case DType::f32:
      if (nbytes) std::memcpy(out.data(), src, nbytes);
      break;
    case DType::f16:
    case DType::bf16: {
      const bool half = t.dtype == DType::f16;
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        out[i] = half ? f16_bits_to_f32(b) : bf16_bits_to_f32(b);
      }
      break;
    }
    case DType::f64:
      for (size_t i = 0; i < out.size(); ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      throw WeightFileError("tensor '" + printable(t.name) + "': cannot convert dtype " +
                            std::string(dtype_name(t.dtype)) +
                            " to F32 (only F32, F16, BF16 and F64 convert)");
  }
  return out;
}

void write_weights(const std::string& path, const std::vector<TensorToWrite>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  // Validate everything before touching the file system, so bad input leaves no trace.
  std::set<std::string_view> names;
  for (const TensorToWrite& t : tensors) {
    if (t.name == kMetadataKey) fail_tensor(path, t.name, "name is reserved for metadata");
    if (!names.insert(t.name).second) fail_tensor(path, t.name, "duplicate tensor name");
    if (!is_valid_utf8(t.name)) fail_tensor(path, t.name, "name is not valid UTF-8");
    for (int64_t d : t.shape) {
      if (d < 0) {
        fail_tensor(path, t.name, "shape " + shape_text(t.shape) + " has a negative dimension");
      }
    }
    int64_t numel = 0;
    size_t nbytes = 0;
    if (!shape_sizes(t.shape, t.dtype, &numel, &nbytes)) {
      fail_tensor(path, t.name, "shape " + shape_text(t.shape) + " overflows a 64-bit byte count");
    }
    if (nbytes != t.nbytes) {
      fail_tensor(path, t.name,
                  "nbytes " + std::to_string(t.nbytes) + " does not match " +
                      std::string(dtype_name(t.dtype)) + " shape " + shape_text(t.shape) + " (" +
                      std::to_string(nbytes) + " bytes)");
    }
    if (nbytes > 0 && t.data == nullptr) fail_tensor(path, t.name, "data is null");
  }
  for (const auto& [key, value] : metadata) {
    if (!is_valid_utf8(key) || !is_valid_utf8(value)) {
      fail(path, "__metadata__ entry '" + printable(key) + "' is not valid UTF-8");
    }
  }

  // ordered_json keeps the header in the caller's order, which makes files easy to read by eye.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    uint64_t end;
    if (__builtin_add_overflow(offset, static_cast<uint64_t>(t.nbytes), &end)) {
      fail(path, "total tensor data overflows 64 bits");
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(dtype_name(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
    header[t.name] = std::move(entry);
    offset = end;
  }
  std::string text = header.dump();
  // Spaces are valid trailing JSON whitespace; padding to 8 puts the data section (and so
  // every naturally ordered tensor) on an aligned address in a page-aligned mapping.
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderBytes) {
    fail(path, "JSON header would be " + std::to_string(text.size()) + " bytes, over the " +
                   std::to_string(kMaxHeaderBytes) + "-byte limit readers enforce");
  }

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create temp file '" + tmp + "': " + errno_text(errno));
  // Until the rename succeeds, any failure closes and removes the temp file.
  struct TempGuard {
    int fd;
    const std::string& tmp;
    bool renamed = false;
    ~TempGuard() {
      if (fd >= 0) ::close(fd);
      if (!renamed) ::unlink(tmp.c_str());
    }
  } guard{fd, tmp};

  uint8_t len_bytes[8];
  const uint64_t header_len = text.size();
  std::memcpy(len_bytes, &header_len, 8);
  write_all(fd, len_bytes, 8, path, tmp);
  write_all(fd, text.data(), text.size(), path, tmp);
  for (const TensorToWrite& t : tensors) {
    if (t.nbytes) write_all(fd, t.data, t.nbytes, path, tmp);
  }
  if (::fsync(fd) != 0) fail(path, "cannot fsync temp file '" + tmp + "': " + errno_text(errno));
  const int fd_to_close = std::exchange(guard.fd, -1);
  // close() can report a deferred write error (e.g. on network file systems).
  if (::close(fd_to_close) != 0) {
    fail(path, "cannot close temp file '" + tmp + "': " + errno_text(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    fail(path, "cannot rename temp file '" + tmp + "' over it: " + errno_text(errno));
  }
  guard.renamed = true;

  // The rename is durable only once the directory entry is on disk.
  const std::string dir = parent_dir(path);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    fail(path, "written, but cannot open directory '" + dir + "' to fsync: " + errno_text(errno));
  }
  const int rc = ::fsync(dir_fd);
  const int err = errno;
  ::close(dir_fd);
  if (rc != 0) fail(path, "written, but cannot fsync directory '" + dir + "': " + errno_text(err));
}

}  // namespace graft
