// safetensors reader and writer: round trips, conversions, every malformed-file rejection,
// truncation and byte-flip sweeps, and the writer's atomic replace.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "io/safetensors.h"

namespace graft {
namespace {

using Bytes = std::vector<uint8_t>;

// A fresh directory per test, so files from one test never satisfy another's checks.
std::string test_dir() {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = testing::TempDir() + "graft_st_" + std::to_string(::getpid()) + "_" +
                    info->test_suite_name() + "_" + info->name();
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  return names;
}

// A raw file: u64 header length, header text (padded with spaces to a multiple of 8 when
// `pad`), then data bytes.
Bytes make_file(const std::string& header, const Bytes& data = {}, bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t n = h.size();
  Bytes out(8 + h.size() + data.size());
  std::memcpy(out.data(), &n, 8);
  std::copy(h.begin(), h.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<long>(h.size()));
  return out;
}

Bytes with_length(uint64_t n, const std::string& rest) {
  Bytes out(8 + rest.size());
  std::memcpy(out.data(), &n, 8);
  std::copy(rest.begin(), rest.end(), out.begin() + 8);
  return out;
}

// Parses from an exactly-sized heap copy so that any read past the end is a heap overflow
// (caught by ASan builds) rather than a read of neighbouring bytes.
WeightFile parse_exact(const Bytes& bytes, std::unique_ptr<uint8_t[]>* keep,
                       const std::string& label = "buffer.safetensors") {
  keep->reset(new uint8_t[bytes.size() ? bytes.size() : 1]);
  if (!bytes.empty()) std::memcpy(keep->get(), bytes.data(), bytes.size());
  return parse_weights(bytes.empty() ? nullptr : keep->get(), bytes.size(), label);
}

// Checks a rejection through both entry points: the message names the file and contains every
// expected fragment, and is one line.
void expect_rejected(const Bytes& bytes, std::initializer_list<std::string> fragments) {
  const std::string path = test_dir() + "/bad_model.safetensors";
  write_bytes(path, bytes);
  std::string from_file, from_buffer;
  try {
    open_weights(path);
    ADD_FAILURE() << "open_weights accepted a malformed file";
  } catch (const WeightFileError& e) {
    from_file = e.what();
  }
  std::unique_ptr<uint8_t[]> keep;
  try {
    parse_exact(bytes, &keep, "bad_model.safetensors");
    ADD_FAILURE() << "parse_weights accepted a malformed buffer";
  } catch (const WeightFileError& e) {
    from_buffer = e.what();
  }
  for (const std::string& msg : {from_file, from_buffer}) {
    EXPECT_NE(msg.find("bad_model.safetensors"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& f : fragments) {
      EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
    }
  }
}

template <typename T>
Bytes as_bytes(std::initializer_list<T> values) {
  Bytes out(values.size() * sizeof(T));
  if (values.size()) std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

// A valid file of several dtypes and shapes, written by write_weights.
struct Sample {
  std::vector<float> w32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  std::vector<uint16_t> w16 = {0x3c00, 0xc000, 0x7bff, 0x0001};
  std::vector<uint16_t> wbf = {0x3f80, 0xc040, 0x7f80, 0x0000};
  std::vector<double> w64 = {3.141592653589793, -1e300, 2.5};
  std::vector<int64_t> i64 = {-1, 1LL << 40};
  std::vector<int32_t> i32 = {7, -8};
  std::vector<int16_t> i16 = {-300, 300, 0};
  std::vector<int8_t> i8 = {-128, 127, 0, 1, -1};
  std::vector<uint8_t> u8 = {0, 1, 2, 3, 254, 255, 128};
  std::vector<uint8_t> bools = {1, 0, 1};
  float scalar = 42.0f;

  std::vector<TensorToWrite> tensors() const {
    return {
        {"conv.weight", DType::f32, {2, 3}, w32.data(), w32.size() * 4},
        {"half", DType::f16, {4}, w16.data(), 8},
        {"brain", DType::bf16, {2, 2}, wbf.data(), 8},
        {"double", DType::f64, {3}, w64.data(), 24},
        {"long", DType::i64, {2}, i64.data(), 16},
        {"int", DType::i32, {1, 2, 1}, i32.data(), 8},
        {"short", DType::i16, {3}, i16.data(), 6},
        {"byte", DType::i8, {5}, i8.data(), 5},
        {"ubyte", DType::u8, {7}, u8.data(), 7},
        {"flags", DType::boolean, {3}, bools.data(), 3},
        {"scalar", DType::f32, {}, &scalar, 4},
        {"empty", DType::f32, {0, 4}, nullptr, 0},
    };
  }
  std::map<std::string, std::string> metadata() const {
    return {{"arch", "efficientnet_lite0"},
            {"labels", "[\"cat\", \"dog\"]"},
            {"empty", ""},
            {"unicode", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93"},
            {"newline", "a\nb"}};
  }
};

Bytes sample_file_bytes() {
  const std::string path = test_dir() + "/sample.safetensors";
  Sample s;
  write_weights(path, s.tensors(), s.metadata());
  return read_bytes(path);
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(SafetensorsRoundTrip, AllDtypesShapesAndMetadata) {
  const std::string path = test_dir() + "/model.safetensors";
  Sample s;
  const auto in = s.tensors();
  write_weights(path, in, s.metadata());

  const WeightFile f = open_weights(path);
  EXPECT_EQ(f.path, path);
  EXPECT_EQ(f.metadata, s.metadata());
  ASSERT_EQ(f.tensors.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const TensorView& t = f.tensors[i];  // file order is write order
    SCOPED_TRACE(in[i].name);
    EXPECT_EQ(t.name, in[i].name);
    EXPECT_EQ(t.dtype, in[i].dtype);
    EXPECT_EQ(t.shape, in[i].shape);
    EXPECT_EQ(t.nbytes, in[i].nbytes);
    int64_t numel = 1;
    for (int64_t d : in[i].shape) numel *= d;
    EXPECT_EQ(t.numel, numel);
    if (t.nbytes) {
      EXPECT_EQ(std::memcmp(t.data, in[i].data, t.nbytes), 0);
    }
    EXPECT_EQ(find_tensor(f, in[i].name), &t);
  }
  const TensorView* scalar = find_tensor(f, "scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->numel, 1);
  EXPECT_EQ(tensor_to_f32(*scalar), std::vector<float>{42.0f});
  const TensorView* empty = find_tensor(f, "empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->numel, 0);
  EXPECT_EQ(empty->nbytes, 0u);
  EXPECT_TRUE(tensor_to_f32(*empty).empty());
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "conv.weight")), s.w32);
}

TEST(SafetensorsRoundTrip, NoTensorsNoMetadata) {
  const std::string path = test_dir() + "/empty.safetensors";
  write_weights(path, {}, {});
  const WeightFile f = open_weights(path);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());
  EXPECT_EQ(find_tensor(f, "anything"), nullptr);
  EXPECT_EQ(read_bytes(path).size(), 16u);  // "{}" padded to 8
}

TEST(SafetensorsRoundTrip, HeaderIsPaddedJsonInGivenOrder) {
  const std::string path = test_dir() + "/order.safetensors";
  const float a[2] = {1, 2}, b[1] = {3};
  write_weights(path, {{"zeta", DType::f32, {2}, a, 8}, {"alpha", DType::f32, {1}, b, 4}},
                {{"k", "v"}});
  const Bytes raw = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(raw.size(), 8 + n + 12);
  const std::string header(raw.begin() + 8, raw.begin() + 8 + static_cast<long>(n));
  const std::string expected =
      R"({"__metadata__":{"k":"v"},"zeta":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("alpha":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_EQ(header.substr(0, expected.size()), expected);
  EXPECT_EQ(header.find_first_not_of(' ', expected.size()), std::string::npos);
  const WeightFile f = open_weights(path);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].name, "zeta");
  EXPECT_EQ(f.tensors[1].name, "alpha");
}

TEST(SafetensorsRoundTrip, DataPointersAreAligned) {
  const std::string path = test_dir() + "/aligned.safetensors";
  // Larger dtypes first (as the reference writer orders them) keeps every tensor aligned.
  const double d[3] = {1, 2, 3};
  const float f32[5] = {1, 2, 3, 4, 5};
  const uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
  const uint8_t u[3] = {1, 2, 3};
  // Header length chosen by the names; several name lengths exercise the padding.
  for (const std::string prefix : {"a", "ab", "abc", "abcdefg", "abcdefgh"}) {
    write_weights(path,
                  {{prefix + ".d", DType::f64, {3}, d, 24},
                   {prefix + ".f", DType::f32, {5}, f32, 20},
                   {prefix + ".h", DType::f16, {3}, h, 6},
                   {prefix + ".u", DType::u8, {3}, u, 3}},
                  {});
    const WeightFile f = open_weights(path);
    for (const TensorView& t : f.tensors) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << t.name;
    }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensors[0].data) % 8, 0u);
  }
}

TEST(SafetensorsRoundTrip, UnpaddedHeaderAndUnalignedDataStillRead) {
  // Other writers may not pad; the data section then starts at an odd address.
  const Bytes file = make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                               as_bytes<float>({1.5f, -2.5f}), /*pad=*/false);
  std::unique_ptr<uint8_t[]> keep;
  const WeightFile f = parse_exact(file, &keep);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(tensor_to_f32(f.tensors[0]), (std::vector<float>{1.5f, -2.5f}));
}

TEST(SafetensorsRoundTrip, GapsTrailingBytesAndUnknownFieldsAccepted) {
  const Bytes file =
      make_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":{"x":[1]}},)"
                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                Bytes{1, 2, 0, 0, 3, 4, 9, 9, 9});
  std::unique_ptr<uint8_t[]> keep;
  const WeightFile f = parse_exact(file, &keep);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[1].data[0], 3);
}

TEST(SafetensorsRoundTrip, ZeroSizeTensorsMayShareOffsets) {
  const Bytes file = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("z1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                               R"("z2":{"dtype":"I64","shape":[3,0],"data_offsets":[8,8]},)"
                               R"("z3":{"dtype":"I64","shape":[0],"data_offsets":[8,8]}})",
                               Bytes(8, 0));
  std::unique_ptr<uint8_t[]> keep;
  const WeightFile f = parse_exact(file, &keep);
  ASSERT_EQ(f.tensors.size(), 4u);
  EXPECT_EQ(find_tensor(f, "z2")->numel, 0);
}

TEST(SafetensorsRoundTrip, MoveKeepsViewsValid) {
  static_assert(!std::is_copy_constructible_v<WeightFile>);
  static_assert(!std::is_copy_assignable_v<WeightFile>);
  static_assert(std::is_nothrow_move_constructible_v<WeightFile>);
  const std::string path = test_dir() + "/move.safetensors";
  const float v[3] = {1, 2, 3};
  write_weights(path, {{"v", DType::f32, {3}, v, 12}}, {});
  WeightFile a = open_weights(path);
  const uint8_t* data = a.tensors[0].data;
  WeightFile b = std::move(a);
  EXPECT_EQ(b.tensors[0].data, data);
  WeightFile c;
  c = std::move(b);
  EXPECT_EQ(tensor_to_f32(*find_tensor(c, "v")), (std::vector<float>{1, 2, 3}));
}

TEST(SafetensorsRoundTrip, FindTensorManyNames) {
  const std::string path = test_dir() + "/many.safetensors";
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) names.push_back("blocks." + std::to_string(i * 7919 % 300) + ".w");
  const uint8_t byte = 0;
  std::vector<TensorToWrite> tensors;
  for (const auto& n : names) tensors.push_back({n, DType::u8, {1}, &byte, 1});
  write_weights(path, tensors, {});
  const WeightFile f = open_weights(path);
  for (const auto& n : names) {
    const TensorView* t = find_tensor(f, n);
    ASSERT_NE(t, nullptr) << n;
    EXPECT_EQ(t->name, n);
  }
  EXPECT_EQ(find_tensor(f, "blocks.300.w"), nullptr);
  EXPECT_EQ(find_tensor(f, ""), nullptr);
  EXPECT_EQ(find_tensor(f, "blocks.1"), nullptr);
}

// ---------------------------------------------------------------------------------------------
// Conversions

TEST(SafetensorsConvert, F16HandValues) {
  struct Case {
    uint16_t bits;
    float value;
  };
  const Case cases[] = {
      {0x0000, 0.0f},
      {0x3c00, 1.0f},
      {0xc000, -2.0f},
      {0x3555, 0.33325195f},
      {0x7bff, 65504.0f},
      {0xfbff, -65504.0f},
      {0x0400, 6.1035156e-05f},  // smallest normal, 2^-14
      {0x0001, 5.9604645e-08f},  // smallest subnormal, 2^-24
      {0x03ff, 6.0975552e-05f},  // largest subnormal, 1023 * 2^-24
      {0x8001, -5.9604645e-08f},
      {0x3bff, 0.99951172f},
      {0x7c00, INFINITY},
      {0xfc00, -INFINITY},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(f16_bits_to_f32(c.bits), c.value) << std::hex << c.bits;
  }
  EXPECT_TRUE(std::signbit(f16_bits_to_f32(0x8000)));
  EXPECT_EQ(f16_bits_to_f32(0x8000), 0.0f);
  EXPECT_TRUE(std::isnan(f16_bits_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_bits_to_f32(0xfc01)));
  // A NaN keeps its payload (shifted into the float mantissa) and its sign.
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_bits_to_f32(0x7c01)), 0x7f802000u);
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_bits_to_f32(0xfe00)), 0xffc00000u);
}

TEST(SafetensorsConvert, F16AllBitPatternsMatchFormula) {
  // value = (-1)^s * 2^(e-15) * (1 + m/1024) for normals, 2^-14 * m/1024 for subnormals.
  for (uint32_t b = 0; b < 65536; ++b) {
    const int s = b >> 15, e = (b >> 10) & 31, m = b & 1023;
    const float got = f16_bits_to_f32(static_cast<uint16_t>(b));
    if (e == 31) {
      EXPECT_EQ(std::isnan(got), m != 0) << b;
      if (m == 0) {
        EXPECT_EQ(got, s ? -INFINITY : INFINITY) << b;
      }
      continue;
    }
    const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    ASSERT_EQ(static_cast<double>(got), s ? -mag : mag) << b;
    ASSERT_EQ(std::signbit(got), s == 1) << b;
  }
}

TEST(SafetensorsConvert, BF16HandValues) {
  EXPECT_EQ(bf16_bits_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_bits_to_f32(0xc040), -3.0f);
  EXPECT_EQ(bf16_bits_to_f32(0x4049), 3.140625f);
  EXPECT_EQ(bf16_bits_to_f32(0x7f80), INFINITY);
  EXPECT_EQ(bf16_bits_to_f32(0xff80), -INFINITY);
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(0x7fc0)));
  EXPECT_EQ(bf16_bits_to_f32(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
  EXPECT_TRUE(std::signbit(bf16_bits_to_f32(0x8000)));
}

TEST(SafetensorsConvert, TensorToF32AllFloatDtypes) {
  const std::string path = test_dir() + "/conv.safetensors";
  Sample s;
  write_weights(path, s.tensors(), {});
  const WeightFile f = open_weights(path);
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "half")),
            (std::vector<float>{1.0f, -2.0f, 65504.0f, 5.9604645e-08f}));
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "brain")),
            (std::vector<float>{1.0f, -3.0f, INFINITY, 0.0f}));
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "double")),
            (std::vector<float>{3.14159265f, -INFINITY, 2.5f}));
}

TEST(SafetensorsConvert, IntegerDtypesRefuse) {
  const std::string path = test_dir() + "/conv.safetensors";
  Sample s;
  write_weights(path, s.tensors(), {});
  const WeightFile f = open_weights(path);
  for (const char* name : {"long", "int", "short", "byte", "ubyte", "flags"}) {
    try {
      tensor_to_f32(*find_tensor(f, name));
      ADD_FAILURE() << name;
    } catch (const WeightFileError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string("'") + name + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("cannot convert"), std::string::npos) << msg;
    }
  }
}

TEST(SafetensorsConvert, InconsistentViewRefused) {
  const float v[2] = {1, 2};
  TensorView t{"hand_made", DType::f32, {3}, reinterpret_cast<const uint8_t*>(v), 8, 3};
  EXPECT_THROW(tensor_to_f32(t), WeightFileError);
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each names the file, the fault and (where there is one) the tensor.

const char* kGoodEntry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

TEST(SafetensorsMalformed, EmptyFile) {
  expect_rejected({}, {"empty"});
}

TEST(SafetensorsMalformed, ShorterThanHeaderLength) {
  expect_rejected(Bytes{1, 0, 0, 0, 0}, {"5 bytes", "shorter than the 8-byte header length"});
}

TEST(SafetensorsMalformed, HeaderLengthPastEnd) {
  expect_rejected(with_length(1000, R"({"a":1})"), {"header length 1000", "past the end"});
  expect_rejected(with_length(8, "{}"), {"header length 8", "past the end"});
}

TEST(SafetensorsMalformed, HeaderLengthAbsurd) {
  expect_rejected(with_length(100'000'001, "{}"), {"100000001", "absurdly large"});
  expect_rejected(with_length(~uint64_t{0}, "{}"), {"absurdly large"});
  expect_rejected(with_length(~uint64_t{0} - 7, "{}"), {"absurdly large"});
}

TEST(SafetensorsMalformed, MalformedJson) {
  expect_rejected(make_file(R"({"a": )"), {"not valid JSON"});
  expect_rejected(make_file(R"({"a":1,})"), {"not valid JSON"});
  expect_rejected(make_file("{} trailing"), {"not valid JSON"});
  expect_rejected(make_file(""), {"not valid JSON"});
  expect_rejected(make_file("{\"\xff\":1}"), {"not valid JSON"});  // invalid UTF-8
  expect_rejected(make_file("{/*c*/}"), {"not valid JSON"});       // comments are not JSON
  expect_rejected(make_file(std::string("{}\0", 3)), {"not valid JSON"});
}

TEST(SafetensorsMalformed, NotAnObject) {
  expect_rejected(make_file("[1,2]"), {"not a JSON object", "array"});
  expect_rejected(make_file("\"x\""), {"not a JSON object", "string"});
  expect_rejected(make_file("null"), {"not a JSON object"});
}

TEST(SafetensorsMalformed, EntryNotObject) {
  expect_rejected(make_file(R"({"blocks.0.w": 3})"),
                  {"tensor 'blocks.0.w'", "not a JSON object", "number"});
  expect_rejected(make_file(R"({"blocks.0.w": [1]})"),
                  {"tensor 'blocks.0.w'", "not a JSON object"});
}

TEST(SafetensorsMalformed, MissingFields) {
  expect_rejected(make_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", Bytes(8)),
                  {"tensor 'w'", "missing 'dtype'"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", Bytes(8)),
                  {"tensor 'w'", "missing 'shape'"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2]}})", Bytes(8)),
                  {"tensor 'w'", "missing 'data_offsets'"});
}

TEST(SafetensorsMalformed, MistypedFields) {
  expect_rejected(make_file(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", Bytes(8)),
                  {"tensor 'w'", "'dtype' is not a string"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", Bytes(8)),
                  {"tensor 'w'", "'shape' is not an array"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", Bytes(8)),
      {"tensor 'w'", "shape element 0 is not an integer"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[1,"2"],"data_offsets":[0,8]}})", Bytes(8)),
      {"tensor 'w'", "shape element 1 is not an integer"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}})", Bytes(8)),
      {"tensor 'w'", "not an integer"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}})", Bytes(8)),
      {"tensor 'w'", "not an integer"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":8}})", Bytes(8)),
                  {"tensor 'w'", "'data_offsets' must be an array of 2 integers"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", Bytes(8)),
                  {"tensor 'w'", "'data_offsets' must be an array of 2 integers"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", Bytes(8)),
      {"tensor 'w'", "'data_offsets' must be an array of 2 integers"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}})", Bytes(8)),
      {"tensor 'w'", "must be non-negative 64-bit integers"});
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", Bytes(8)),
      {"tensor 'w'", "must be non-negative 64-bit integers"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", Bytes(8)),
                  {"tensor 'w'", "negative value"});
  // Beyond 64 bits nlohmann falls back to a double; that is not an offset.
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],)"
                            R"("data_offsets":[0,99999999999999999999999]}})",
                            Bytes(8)),
                  {"tensor 'w'", "must be non-negative 64-bit integers"});
}

TEST(SafetensorsMalformed, UnknownDtype) {
  for (const char* dt : {"F8_E4M3", "f32", "U16", "C64", "", "FLOAT"}) {
    expect_rejected(make_file(std::string(R"({"w":{"dtype":")") + dt +
                                  R"(","shape":[2],"data_offsets":[0,8]}})",
                              Bytes(8)),
                    {"tensor 'w'", std::string("unknown dtype '") + dt + "'"});
  }
}

TEST(SafetensorsMalformed, NegativeDim) {
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]}})", Bytes(8)),
      {"tensor 'w'", "negative dimension", "-3"});
}

TEST(SafetensorsMalformed, DimsOverflow) {
  // Element count overflows 64 bits.
  expect_rejected(
      make_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                Bytes(8)),
      {"tensor 'w'", "overflows"});
  // Element count fits in int64, bytes do not.
  expect_rejected(
      make_file(R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})",
                Bytes(8)),
      {"tensor 'w'", "overflows"});
  // Element count past int64 but within uint64.
  expect_rejected(
      make_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967295,3],"data_offsets":[0,8]}})",
                Bytes(8)),
      {"tensor 'w'", "overflows"});
  // A single dim past int64.
  expect_rejected(
      make_file(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})",
                Bytes(8)),
      {"tensor 'w'", "overflows"});
  // Overflow before a zero dim is still rejected.
  expect_rejected(make_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,0],)"
                            R"("data_offsets":[0,0]}})"),
                  {"tensor 'w'", "overflows"});
}

TEST(SafetensorsMalformed, SizeMismatch) {
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", Bytes(24)),
      {"tensor 'w'", "size mismatch", "span 16 bytes", "needs 24 bytes"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})"),
                  {"tensor 'w'", "size mismatch"});
}

TEST(SafetensorsMalformed, OffsetsOutOfBounds) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(7)),
                  {"tensor 'w'", "[0, 8]", "past the end of the data section", "7 bytes"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],)"
                            R"("data_offsets":[18446744073709551608,18446744073709551615]}})",
                            Bytes(8)),
                  {"tensor 'w'", "past the end of the data section"});
  // A zero-size tensor must still sit inside the data section.
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[9,9]}})", Bytes(8)),
                  {"tensor 'w'", "past the end of the data section"});
}

TEST(SafetensorsMalformed, ReversedOffsets) {
  expect_rejected(make_file(R"({"blocks.3.dw.conv.weight":{"dtype":"F32","shape":[0],)"
                            R"("data_offsets":[10,9]}})",
                            Bytes(16)),
                  {"tensor 'blocks.3.dw.conv.weight'", "data_offsets [10, 9] are reversed"});
}

TEST(SafetensorsMalformed, OverlappingRanges) {
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            Bytes(12)),
                  {"tensor 'b'", "overlap", "tensor 'a'", "[0, 8]", "[4, 12]"});
  // Identical ranges.
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                            Bytes(8)),
                  {"overlap"});
  // Nested inside a long earlier range, after a short one that ends first.
  expect_rejected(make_file(R"({"long":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                            R"("x":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
                            R"("y":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}})",
                            Bytes(16)),
                  {"tensor 'x'", "overlap", "tensor 'long'"});
}

TEST(SafetensorsMalformed, MetadataNotObjectOfStrings) {
  expect_rejected(make_file(R"({"__metadata__":[1,2]})"),
                  {"__metadata__", "not a JSON object of strings", "array"});
  expect_rejected(make_file(R"({"__metadata__":"x"})"), {"__metadata__", "not a JSON object"});
  expect_rejected(make_file(R"({"__metadata__":{"labels":["a","b"]}})"),
                  {"__metadata__", "'labels'", "not a string", "array"});
  expect_rejected(make_file(R"({"__metadata__":{"version":1}})"),
                  {"__metadata__", "'version'", "not a string"});
}

TEST(SafetensorsMalformed, DuplicateNames) {
  // nlohmann keeps the last duplicate silently; the parser callback catches it instead.
  expect_rejected(
      make_file(std::string(R"({"w":)") + kGoodEntry + R"(,"w":)" + kGoodEntry + "}", Bytes(8)),
      {"tensor 'w'", "duplicate tensor name"});
  expect_rejected(make_file(R"({"w":{"dtype":"F32","dtype":"F16","shape":[2],)"
                            R"("data_offsets":[0,8]}})",
                            Bytes(8)),
                  {"tensor 'w'", "duplicate key 'dtype'"});
  expect_rejected(make_file(R"({"__metadata__":{},"__metadata__":{}})"),
                  {"duplicate __metadata__"});
  expect_rejected(make_file(R"({"__metadata__":{"a":"1","a":"2"}})"),
                  {"__metadata__", "duplicate key 'a'"});
}

TEST(SafetensorsMalformed, DeepNesting) {
  expect_rejected(make_file(R"({"w":)" + std::string(100000, '[') + std::string(100000, ']') + "}"),
                  {"nested"});
  // Unbalanced: rejected before the end is reached either way.
  expect_rejected(make_file(std::string(1000, '{')), {"bad_model"});
}

TEST(SafetensorsMalformed, ControlBytesInNamesStayOnOneLine) {
  expect_rejected(
      make_file(R"({"bad\nname":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(4)),
      {"tensor 'bad\\x0aname'", "past the end"});
}

TEST(SafetensorsMalformed, OpenErrorsNameThePath) {
  const std::string dir = test_dir();
  try {
    open_weights(dir + "/missing.safetensors");
    ADD_FAILURE();
  } catch (const WeightFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir + "/missing.safetensors: cannot open"), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
  }
  try {
    open_weights(dir);
    ADD_FAILURE();
  } catch (const WeightFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir + ": is a directory"), std::string::npos) << msg;
  }
  try {
    open_weights("/dev/null");
    ADD_FAILURE();
  } catch (const WeightFileError& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/null: is not a regular file"), std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Sweeps: whatever the bytes, the reader accepts or throws WeightFileError, never crashes or
// reads outside the buffer.

// Invariants a successful parse must guarantee, checked against the buffer it came from.
void check_invariants(const WeightFile& f, const uint8_t* base, size_t size) {
  std::vector<std::pair<const uint8_t*, const uint8_t*>> ranges;
  for (const TensorView& t : f.tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      ASSERT_GE(d, 0);
      numel *= d;
    }
    ASSERT_EQ(t.numel, numel);
    ASSERT_EQ(t.nbytes, static_cast<size_t>(numel) * dtype_size(t.dtype));
    ASSERT_GE(t.data, base);
    ASSERT_LE(t.data + t.nbytes, base + size);
    if (t.nbytes) ranges.push_back({t.data, t.data + t.nbytes});
    ASSERT_EQ(find_tensor(f, t.name), &t);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) ASSERT_LE(ranges[i - 1].second, ranges[i].first);
}

// Parses `bytes`; true when accepted. Any exception other than WeightFileError fails the test.
bool try_parse(const Bytes& bytes, WeightFile* out, std::unique_ptr<uint8_t[]>* keep) {
  try {
    *out = parse_exact(bytes, keep);
  } catch (const WeightFileError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return false;
  }
  check_invariants(*out, keep->get(), bytes.size());
  return true;
}

TEST(SafetensorsSweep, EveryTruncationIsRejected) {
  const Bytes full = sample_file_bytes();
  std::unique_ptr<uint8_t[]> keep_full;
  const WeightFile original = parse_exact(full, &keep_full);
  for (size_t len = 0; len < full.size(); ++len) {
    const Bytes prefix(full.begin(), full.begin() + static_cast<long>(len));
    WeightFile f;
    std::unique_ptr<uint8_t[]> keep;
    if (try_parse(prefix, &f, &keep)) {
      // Only possible if nothing of substance was cut; then the content must be identical.
      ASSERT_EQ(f.tensors.size(), original.tensors.size()) << len;
      for (size_t i = 0; i < f.tensors.size(); ++i) {
        ASSERT_EQ(f.tensors[i].name, original.tensors[i].name);
        ASSERT_EQ(f.tensors[i].nbytes, original.tensors[i].nbytes);
        ASSERT_EQ(std::memcmp(f.tensors[i].data, original.tensors[i].data, f.tensors[i].nbytes), 0);
      }
    }
  }
  // The last tensor ends at the end of the file, so in practice every strict prefix fails;
  // spot-check a few through the file path too.
  const std::string path = test_dir() + "/cut.safetensors";
  for (size_t len :
       {size_t{0}, size_t{7}, size_t{8}, size_t{9}, full.size() / 2, full.size() - 1}) {
    write_bytes(path, Bytes(full.begin(), full.begin() + static_cast<long>(len)));
    EXPECT_THROW(open_weights(path), WeightFileError) << len;
  }
}

TEST(SafetensorsSweep, HeaderByteFlips) {
  const Bytes full = sample_file_bytes();
  uint64_t n;
  std::memcpy(&n, full.data(), 8);
  const uint8_t replacements[] = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', '\\', 0};
  int accepted = 0, rejected = 0;
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    std::vector<uint8_t> values = {
        static_cast<uint8_t>(full[pos] ^ 0x01), static_cast<uint8_t>(full[pos] ^ 0x20),
        static_cast<uint8_t>(full[pos] ^ 0x80), static_cast<uint8_t>(full[pos] ^ 0xff)};
    values.insert(values.end(), std::begin(replacements), std::end(replacements));
    for (uint8_t v : values) {
      if (v == full[pos]) continue;
      Bytes mutated = full;
      mutated[pos] = v;
      WeightFile f;
      std::unique_ptr<uint8_t[]> keep;
      (try_parse(mutated, &f, &keep) ? accepted : rejected)++;
      if (testing::Test::HasFatalFailure()) return;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(accepted, 0);  // e.g. flips inside tensor names or metadata values
}

TEST(SafetensorsSweep, RandomMultiByteMutations) {
  const Bytes full = sample_file_bytes();
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 20000; ++iter) {
    Bytes m = full;
    const int flips = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < flips; ++k) {
      // Bias towards the header and length prefix, where the parsing happens.
      const size_t pos = rng() % 4 ? rng() % std::min<size_t>(m.size(), 512) : rng() % m.size();
      m[pos] = static_cast<uint8_t>(rng());
    }
    if (rng() % 8 == 0) m.resize(rng() % (m.size() + 1));
    WeightFile f;
    std::unique_ptr<uint8_t[]> keep;
    try_parse(m, &f, &keep);
    if (testing::Test::HasFatalFailure()) return;
  }
}

TEST(SafetensorsSweep, CorpusSeedsParseOrRejectCleanly) {
  const std::string dir = std::string(GRAFT_SOURCE_DIR) + "/tests/corpus/safetensors";
  const std::vector<std::string> names = list_dir(dir);
  if (names.empty()) GTEST_SKIP() << "no seeds in " << dir;
  for (const std::string& name : names) {
    const Bytes bytes = read_bytes(dir + "/" + name);
    WeightFile f;
    std::unique_ptr<uint8_t[]> keep;
    const bool ok = try_parse(bytes, &f, &keep);
    // Seeds named bad_* are meant to be rejected; the rest are valid files.
    EXPECT_EQ(ok, name.rfind("bad_", 0) != 0) << name;
  }
}

TEST(SafetensorsInterop, ReadsReferenceWriterFile) {
  // Written by the reference Python library (safetensors.torch.save_file) from:
  //   {'w': arange(6, f32).reshape(2, 3), 'bf': [1.5, -2] bf16, 'hf': [65504, 1e-7] f16,
  //    'i8': [-3] int8, 'sc': 3.0 f64 scalar, 'z': zeros(0, 2) f32}, metadata {'format': 'pt'}
  const std::string path = std::string(GRAFT_SOURCE_DIR) +
                           "/tests/corpus/safetensors/valid_reference_writer.safetensors";
  if (::access(path.c_str(), R_OK) != 0) GTEST_SKIP() << "missing " << path;
  const WeightFile f = open_weights(path);
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors.size(), 6u);
  const TensorView* w = find_tensor(f, "w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensor_to_f32(*w), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "bf")), (std::vector<float>{1.5f, -2.0f}));
  // 1e-7 rounds to the f16 subnormal 2 * 2^-24.
  EXPECT_EQ(tensor_to_f32(*find_tensor(f, "hf")),
            (std::vector<float>{65504.0f, std::ldexp(1.0f, -23)}));
  const TensorView* i8 = find_tensor(f, "i8");
  ASSERT_NE(i8, nullptr);
  EXPECT_EQ(i8->dtype, DType::i8);
  EXPECT_EQ(static_cast<int8_t>(i8->data[0]), -3);
  const TensorView* sc = find_tensor(f, "sc");
  ASSERT_NE(sc, nullptr);
  EXPECT_TRUE(sc->shape.empty());
  EXPECT_EQ(tensor_to_f32(*sc), std::vector<float>{3.0f});
  EXPECT_EQ(find_tensor(f, "z")->shape, (std::vector<int64_t>{0, 2}));
  // The reference writer pads its header too, and orders tensors for alignment.
  for (const TensorView& t : f.tensors) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << t.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

bool has_temp_files(const std::string& dir) {
  for (const std::string& n : list_dir(dir)) {
    if (n.find(".tmp.") != std::string::npos) return true;
  }
  return false;
}

TEST(SafetensorsWriter, ReplacesExistingFileFully) {
  const std::string dir = test_dir();
  const std::string path = dir + "/model.safetensors";
  std::vector<float> big(10000, 7.0f);
  write_weights(path, {{"big", DType::f32, {10000}, big.data(), big.size() * 4}},
                {{"run", "first"}});
  const float small[2] = {1, 2};
  write_weights(path, {{"small", DType::f32, {2}, small, 8}}, {{"run", "second"}});
  const Bytes raw = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(raw.size(), 8 + n + 8);  // nothing of the larger file remains
  const WeightFile f = open_weights(path);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].name, "small");
  EXPECT_EQ(f.metadata.at("run"), "second");
  EXPECT_FALSE(has_temp_files(dir));
}

TEST(SafetensorsWriter, OpenFileKeepsOldContentAcrossReplace) {
  // The rename leaves an open mapping on the old inode, so readers never see a torn file.
  const std::string path = test_dir() + "/model.safetensors";
  const float a[2] = {1, 2}, b[2] = {3, 4};
  write_weights(path, {{"w", DType::f32, {2}, a, 8}}, {});
  const WeightFile before = open_weights(path);
  write_weights(path, {{"w", DType::f32, {2}, b, 8}}, {});
  EXPECT_EQ(tensor_to_f32(before.tensors[0]), (std::vector<float>{1, 2}));
  EXPECT_EQ(tensor_to_f32(open_weights(path).tensors[0]), (std::vector<float>{3, 4}));
}

TEST(SafetensorsWriter, MissingDirectoryThrowsAndLeavesNothing) {
  const std::string dir = test_dir();
  const std::string path = dir + "/no_such_dir/model.safetensors";
  const float a[1] = {1};
  try {
    write_weights(path, {{"w", DType::f32, {1}, a, 4}}, {});
    ADD_FAILURE();
  } catch (const WeightFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
  }
  EXPECT_TRUE(list_dir(dir).empty());
}

TEST(SafetensorsWriter, FailedRenameRemovesTempFile) {
  // The target is a non-empty directory: the temp file is written, the rename fails.
  const std::string dir = test_dir();
  const std::string path = dir + "/model.safetensors";
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  write_bytes(path + "/keep", Bytes{1});
  const float a[1] = {1};
  try {
    write_weights(path, {{"w", DType::f32, {1}, a, 4}}, {});
    ADD_FAILURE();
  } catch (const WeightFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path + ": cannot rename"), std::string::npos) << msg;
  }
  EXPECT_FALSE(has_temp_files(dir));
  EXPECT_EQ(list_dir(path), std::vector<std::string>{"keep"});
}

TEST(SafetensorsWriter, RelativePathInCurrentDirectory) {
  const std::string dir = test_dir();
  char old_cwd[4096];
  ASSERT_NE(::getcwd(old_cwd, sizeof old_cwd), nullptr);
  ASSERT_EQ(::chdir(dir.c_str()), 0);
  const uint8_t v = 5;
  EXPECT_NO_THROW(write_weights("rel.safetensors", {{"v", DType::u8, {1}, &v, 1}}, {}));
  ASSERT_EQ(::chdir(old_cwd), 0);
  EXPECT_EQ(open_weights(dir + "/rel.safetensors").tensors[0].data[0], 5);
}

void expect_write_rejected(const std::vector<TensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata,
                           std::initializer_list<std::string> fragments) {
  const std::string dir = test_dir();
  const std::string path = dir + "/out.safetensors";
  try {
    write_weights(path, tensors, metadata);
    ADD_FAILURE() << "write_weights accepted bad input";
  } catch (const WeightFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const std::string& f : fragments) {
      EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
    }
  }
  EXPECT_TRUE(list_dir(dir).empty());  // neither the file nor a temp file
}

TEST(SafetensorsWriter, ValidatesInput) {
  const float a[4] = {1, 2, 3, 4};
  expect_write_rejected({{"w", DType::f32, {2}, a, 8}, {"w", DType::f32, {1}, a, 4}}, {},
                        {"tensor 'w'", "duplicate"});
  expect_write_rejected({{"w", DType::f32, {2, 2}, a, 12}}, {},
                        {"tensor 'w'", "nbytes 12", "16 bytes"});
  expect_write_rejected({{"w", DType::f32, {-1, 2}, a, 8}}, {}, {"tensor 'w'", "negative"});
  expect_write_rejected({{"w", DType::f32, {1LL << 62, 4}, a, 16}}, {},
                        {"tensor 'w'", "overflows"});
  expect_write_rejected({{"__metadata__", DType::f32, {1}, a, 4}}, {}, {"reserved"});
  expect_write_rejected({{"w", DType::f32, {1}, nullptr, 4}}, {}, {"tensor 'w'", "null"});
  expect_write_rejected({{"bad\xff", DType::f32, {1}, a, 4}}, {}, {"UTF-8"});
  expect_write_rejected({}, {{"k", "\xc3"}}, {"__metadata__", "'k'", "UTF-8"});
}

}  // namespace
}  // namespace graft
