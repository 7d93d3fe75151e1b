// Tests of the GGUF parser and dequantisation against golden files written by gguf-py
// (tests/data/make_gguf_golden.py), plus hand-built and corrupted files.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"
#include "model/gguf_dequant.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kGoldenDir = TPSERVE_GGUF_GOLDEN_DIR;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class GgufGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bytes_ = ReadAll(kGoldenDir + "/tiny.gguf");
    ASSERT_FALSE(bytes_.empty());
    golden_ = Json::parse(ReadAll(kGoldenDir + "/tiny.json"));
    const std::string ref = ReadAll(kGoldenDir + "/tiny_ref.f32");
    ref_.resize(ref.size() / sizeof(float));
    std::memcpy(ref_.data(), ref.data(), ref_.size() * sizeof(float));
    absl::StatusOr<GgufFile> f = ParseGguf(bytes_, "tiny.gguf");
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = *std::move(f);
  }

  std::vector<float> ReadAllRows(const GgufTensorInfo& t) {
    std::vector<float> out(static_cast<size_t>(t.NumElements()));
    absl::Status s = ReadGgufRows(bytes_, t, 0, t.NumRows(), out.data());
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  std::string bytes_;
  Json golden_;
  std::vector<float> ref_;
  GgufFile file_;
};

std::string TypeName(GgufValue::Type t) {
  static const char* const kNames[] = {"uint8",  "int8",  "uint16", "int16", "uint32",
                                       "int32",  "float32", "bool", "string", "array",
                                       "uint64", "int64", "float64"};
  return kNames[static_cast<uint32_t>(t)];
}

// Compares one value with its JSON form; `type` is the JSON's name for the value's type.
void ExpectValueEquals(const GgufValue& v, const std::string& type, const Json& expected,
                       const std::string& key) {
  SCOPED_TRACE(key);
  EXPECT_EQ(TypeName(v.type()), type);
  if (type == "string") {
    ASSERT_NE(v.AsString(), nullptr);
    EXPECT_EQ(*v.AsString(), expected.get<std::string>());
  } else if (type == "bool") {
    EXPECT_EQ(v.AsBool(), expected.get<bool>());
  } else if (type == "float32" || type == "float64") {
    ASSERT_TRUE(v.AsDouble().has_value());
    EXPECT_EQ(*v.AsDouble(), expected.get<double>());  // float32 widens exactly
  } else if (type[0] == 'u') {
    EXPECT_EQ(v.AsUint64(), expected.get<uint64_t>());
  } else if (type[0] == 'i') {
    EXPECT_EQ(v.AsInt64(), expected.get<int64_t>());
  } else {
    FAIL() << "unexpected type " << type;
  }
}

TEST_F(GgufGoldenTest, HeaderAndMetadataOfEveryTypeEqualTheGoldenJson) {
  EXPECT_EQ(file_.version, golden_["version"].get<uint32_t>());
  EXPECT_EQ(file_.alignment, golden_["alignment"].get<uint64_t>());
  EXPECT_EQ(file_.data_offset % file_.alignment, 0u);
  const Json& meta = golden_["metadata"];
  EXPECT_EQ(file_.metadata.size(), meta.size());
  for (const auto& [key, entry] : meta.items()) {
    const GgufValue* v = file_.FindMetadata(key);
    ASSERT_NE(v, nullptr) << key;
    const std::string type = entry["type"].get<std::string>();
    if (type != "array") {
      ExpectValueEquals(*v, type, entry["value"], key);
      continue;
    }
    ASSERT_EQ(v->type(), GgufValue::Type::kArray) << key;
    const std::string elem = entry["element_type"].get<std::string>();
    EXPECT_EQ(TypeName(v->element_type()), elem) << key;
    const std::vector<GgufValue>* arr = v->AsArray();
    ASSERT_NE(arr, nullptr);
    ASSERT_EQ(arr->size(), entry["value"].size()) << key;
    for (size_t i = 0; i < arr->size(); ++i) {
      if (elem != "array") {
        ExpectValueEquals((*arr)[i], elem, entry["value"][i], key);
        continue;
      }
      const std::vector<GgufValue>* inner = (*arr)[i].AsArray();
      ASSERT_NE(inner, nullptr);
      ASSERT_EQ(inner->size(), entry["value"][i].size());
      for (size_t j = 0; j < inner->size(); ++j) {
        ExpectValueEquals((*inner)[j], entry["inner_element_type"].get<std::string>(),
                          entry["value"][i][j], key);
      }
    }
  }
  // Accessors refuse values of another type.
  EXPECT_EQ(file_.FindMetadata("tiny.name")->AsUint64(), std::nullopt);
  EXPECT_EQ(file_.FindMetadata("tiny.i8")->AsUint64(), std::nullopt);
  EXPECT_EQ(file_.FindMetadata("tiny.u64")->AsInt64(), std::nullopt);
  EXPECT_EQ(file_.FindMetadata("tiny.u8")->AsString(), nullptr);
  EXPECT_EQ(file_.FindMetadata("tiny.f32")->AsBool(), std::nullopt);
  EXPECT_EQ(file_.FindMetadata("nope"), nullptr);
}

TEST_F(GgufGoldenTest, TensorTableEqualsGoldenAndLiesInsideTheFile) {
  const Json& tensors = golden_["tensors"];
  ASSERT_EQ(file_.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorInfo& t = file_.tensors[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, tensors[i]["name"].get<std::string>());
    EXPECT_EQ(static_cast<uint32_t>(t.type), tensors[i]["type"].get<uint32_t>());
    EXPECT_EQ(t.dims, tensors[i]["dims"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.NumElements(), tensors[i]["count"].get<int64_t>());
    EXPECT_EQ((t.offset - file_.data_offset) % file_.alignment, 0u);
    EXPECT_LE(t.offset + t.nbytes, bytes_.size());
    const GgmlTypeTraits traits = *GetGgmlTypeTraits(t.type);
    EXPECT_EQ(t.nbytes, static_cast<uint64_t>(t.NumElements() / traits.block_elements *
                                              traits.block_bytes));
    EXPECT_EQ(file_.FindTensor(t.name), &t);
  }
}

TEST_F(GgufGoldenTest, EveryTensorDequantizesToTheGgufPyReference) {
  for (const Json& g : golden_["tensors"]) {
    const GgufTensorInfo* t = file_.FindTensor(g["name"].get<std::string>());
    ASSERT_NE(t, nullptr);
    SCOPED_TRACE(t->name);
    const std::vector<float> got = ReadAllRows(*t);
    const size_t base = g["ref_offset"].get<size_t>();
    ASSERT_LE(base + got.size(), ref_.size());
    const bool k_quant = t->type == GgmlType::kQ4_K || t->type == GgmlType::kQ5_K ||
                         t->type == GgmlType::kQ6_K;
    size_t mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const float want = ref_[base + i];
      const bool ok = k_quant ? std::fabs(got[i] - want) <= 1e-6f * std::fabs(want)
                              : std::memcmp(&got[i], &want, sizeof(float)) == 0;
      if (!ok && ++mismatches <= 5) ADD_FAILURE() << "element " << i << ": " << got[i] << " vs " << want;
    }
    EXPECT_EQ(mismatches, 0u);
  }
}

TEST_F(GgufGoldenTest, RowSliceEqualsTheSameRowsOfTheFullRead) {
  for (const GgufTensorInfo& t : file_.tensors) {
    SCOPED_TRACE(t.name);
    const std::vector<float> full = ReadAllRows(t);
    const int64_t rows = t.NumRows();
    const int64_t cols = t.RowElements();
    for (int64_t first = 0; first < rows; ++first) {
      for (int64_t n = 0; first + n <= rows; ++n) {
        std::vector<float> part(static_cast<size_t>(n * cols) + 1, -7.0f);
        ASSERT_TRUE(ReadGgufRows(bytes_, t, first, n, part.data()).ok());
        EXPECT_EQ(0, std::memcmp(part.data(), full.data() + first * cols, n * cols * sizeof(float)));
        EXPECT_EQ(part.back(), -7.0f) << "wrote past the requested rows";
      }
    }
    // Reading rows [first, rows) from a copy that holds exactly those rows proves no byte
    // outside them is read (under ASan an over-read would be reported).
    if (rows >= 2) {
      const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(rows);
      std::vector<uint8_t> only_tail(t.nbytes - row_bytes);
      std::memcpy(only_tail.data(), bytes_.data() + t.offset + row_bytes, only_tail.size());
      std::vector<float> tail(static_cast<size_t>((rows - 1) * cols));
      ASSERT_TRUE(
          DequantizeRows(t.type, only_tail.data(), cols, 0, rows - 1, tail.data()).ok());
      EXPECT_EQ(0, std::memcmp(tail.data(), full.data() + cols, tail.size() * sizeof(float)));
    }
    std::vector<float> sink(static_cast<size_t>(cols) * 2);
    EXPECT_FALSE(ReadGgufRows(bytes_, t, rows, 1, sink.data()).ok());
    EXPECT_FALSE(ReadGgufRows(bytes_, t, -1, 1, sink.data()).ok());
    EXPECT_FALSE(ReadGgufRows(bytes_, t, 0, rows + 1, sink.data()).ok());
  }
}

TEST(GgufOpenTest, OpenMapsAndParsesAndReadsRows) {
  absl::StatusOr<std::unique_ptr<GgufModel>> m = OpenGguf(kGoldenDir + "/tiny.gguf");
  ASSERT_TRUE(m.ok()) << m.status();
  const GgufTensorInfo* t = (*m)->file().FindTensor("t.q8_0");
  ASSERT_NE(t, nullptr);
  std::vector<float> row(static_cast<size_t>(t->RowElements()));
  EXPECT_TRUE((*m)->ReadRows(*t, 5, 1, row.data()).ok());
  EXPECT_EQ(OpenGguf(kGoldenDir + "/missing.gguf").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufDequantTest, UnsupportedTypesAreInvalidArgumentNamingTheTypeNumber) {
  std::vector<uint8_t> data(1024);
  std::vector<float> out(256);
  for (uint32_t type : {6u, 10u, 23u, 4u, 999u}) {
    absl::Status s = DequantizeRows(static_cast<GgmlType>(type), data.data(), 256, 0, 1, out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("type ", type)));
  }
  // Rows must be whole blocks, ranges non-negative and without overflow.
  EXPECT_FALSE(DequantizeRows(GgmlType::kQ8_0, data.data(), 33, 0, 1, out.data()).ok());
  EXPECT_FALSE(DequantizeRows(GgmlType::kQ4_K, data.data(), 0, 0, 1, out.data()).ok());
  EXPECT_FALSE(DequantizeRows(GgmlType::kF32, data.data(), 4, -1, 1, out.data()).ok());
  EXPECT_FALSE(
      DequantizeRows(GgmlType::kF32, data.data(), 1 << 20, int64_t{1} << 60, 1, out.data()).ok());
}

TEST(GgufDequantTest, Q4_0UsesLowNibblesFirstAndOffsetEight) {
  // d = 1.0 (f16 0x3c00); byte j holds low nibble j % 16, high nibble 15 - j % 16.
  std::vector<uint8_t> block = {0x00, 0x3c};
  for (int j = 0; j < 16; ++j) block.push_back(static_cast<uint8_t>(j | ((15 - j) << 4)));
  std::vector<float> out(32);
  ASSERT_TRUE(DequantizeRows(GgmlType::kQ4_0, block.data(), 32, 0, 1, out.data()).ok());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], static_cast<float>(j - 8));
    EXPECT_EQ(out[j + 16], static_cast<float>(7 - j));
  }
}

// --- Hand-built and corrupted files -------------------------------------------------------

class Builder {
 public:
  Builder& U32(uint32_t v) { return Raw(&v, 4); }
  Builder& U64(uint64_t v) { return Raw(&v, 8); }
  Builder& Str(const std::string& s) {
    U64(s.size());
    bytes_ += s;
    return *this;
  }
  Builder& Pad(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_ += '\0';
    return *this;
  }
  Builder& Zeros(size_t n) {
    bytes_.append(n, '\0');
    return *this;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  Builder& Raw(const void* p, size_t n) {
    bytes_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string bytes_;
};

// One kv (u32 "k" = 7) and one tensor "w" with the given fields, then its data.
std::string OneTensorFile(uint32_t n_dims, std::vector<uint64_t> dims, uint32_t type,
                          uint64_t offset, size_t data_bytes) {
  Builder f;
  f.U32(0x46554747).U32(3).U64(1).U64(1);
  f.Str("k").U32(4).U32(7);
  f.Str("w").U32(n_dims);
  for (uint64_t d : dims) f.U64(d);
  f.U32(type).U64(offset);
  f.Pad(32).Zeros(data_bytes);
  return f.bytes();
}

void ExpectInvalid(std::string_view bytes, const std::string& what_contains = "") {
  absl::StatusOr<GgufFile> f = ParseGguf(bytes, "bad.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("bad.gguf"));
  if (!what_contains.empty()) EXPECT_THAT(f.status().message(), HasSubstr(what_contains));
}

TEST(GgufCorruptTest, HandBuiltFileParsesSoTheCorruptionsBelowAreWhatFails) {
  absl::StatusOr<GgufFile> f = ParseGguf(OneTensorFile(2, {4, 3}, 0, 0, 48), "good.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors[0].nbytes, 48u);
  EXPECT_EQ(f->FindMetadata("k")->AsUint64(), 7u);
  // Version 2 is accepted too.
  std::string v2 = OneTensorFile(2, {4, 3}, 0, 0, 48);
  v2[4] = 2;
  EXPECT_TRUE(ParseGguf(v2, "v2.gguf").ok());
}

TEST(GgufCorruptTest, BadMagicAndUnsupportedVersionsAreInvalidArgument) {
  std::string s = OneTensorFile(2, {4, 3}, 0, 0, 48);
  std::string bad = s;
  bad[0] = 'X';
  ExpectInvalid(bad, "magic");
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    bad = s;
    std::memcpy(bad.data() + 4, &v, 4);
    ExpectInvalid(bad, "version");
  }
  ExpectInvalid("");
  ExpectInvalid("GGU");
}

TEST_F(GgufGoldenTest, EveryTruncationIsInvalidArgument) {
  // The last tensor ends at the end of the file, so every proper prefix is missing something.
  ASSERT_EQ(file_.tensors.back().offset + file_.tensors.back().nbytes, bytes_.size());
  for (size_t n = 0; n < bytes_.size(); n += 37) {
    SCOPED_TRACE(n);
    ExpectInvalid(std::string_view(bytes_).substr(0, n));
  }
  ExpectInvalid(std::string_view(bytes_).substr(0, bytes_.size() - 1));
}

TEST_F(GgufGoldenTest, AbsurdCountsAreInvalidArgument) {
  for (size_t at : {8u, 16u}) {  // tensor count, metadata count
    std::string bad = bytes_;
    const uint64_t huge = uint64_t{1} << 60;
    std::memcpy(bad.data() + at, &huge, 8);
    ExpectInvalid(bad, "more than the file can hold");
    const uint64_t all_ones = ~uint64_t{0};
    std::memcpy(bad.data() + at, &all_ones, 8);
    ExpectInvalid(bad);
  }
}

TEST(GgufCorruptTest, TensorFieldsOutOfRangeAreInvalidArgument) {
  ExpectInvalid(OneTensorFile(2, {4, 3}, 0, 1 << 20, 48), "past the end");
  ExpectInvalid(OneTensorFile(2, {4, 3}, 0, 0, 47), "past the end");
  ExpectInvalid(OneTensorFile(2, {4, 3}, 0, 8, 48), "alignment");
  ExpectInvalid(OneTensorFile(5, {1, 1, 1, 1, 1}, 0, 0, 4), "dims");
  ExpectInvalid(OneTensorFile(0, {}, 0, 0, 4), "dims");
  ExpectInvalid(OneTensorFile(1, {4}, 4, 0, 64), "unknown ggml type 4");
  ExpectInvalid(OneTensorFile(1, {4}, 1000, 0, 64), "unknown ggml type 1000");
  ExpectInvalid(OneTensorFile(1, {33}, 8, 0, 64), "block");
  ExpectInvalid(OneTensorFile(2, {uint64_t{1} << 62, uint64_t{1} << 62}, 0, 0, 64), "overflows");
  ExpectInvalid(OneTensorFile(3, {0, uint64_t{1} << 62, uint64_t{1} << 62}, 0, 0, 64),
                "overflows");
  ExpectInvalid(OneTensorFile(1, {~uint64_t{0}}, 0, 0, 64));
}

TEST(GgufCorruptTest, StringLengthsPastTheEndAreInvalidArgument) {
  Builder key_len;
  key_len.U32(0x46554747).U32(3).U64(0).U64(1).U64(uint64_t{1} << 40).Zeros(64);
  ExpectInvalid(key_len.bytes(), "past the end");
  Builder value_len;
  value_len.U32(0x46554747).U32(3).U64(0).U64(1).Str("k").U32(8).U64(~uint64_t{0}).Zeros(64);
  ExpectInvalid(value_len.bytes(), "past the end");
  Builder name_len;
  name_len.U32(0x46554747).U32(3).U64(1).U64(0).U64(uint64_t{1} << 50).Zeros(64);
  ExpectInvalid(name_len.bytes(), "past the end");
}

TEST(GgufCorruptTest, BadMetadataIsInvalidArgument) {
  auto one_kv = [](const Builder& value) {
    Builder b;
    b.U32(0x46554747).U32(3).U64(0).U64(1).Str("k");
    return b.bytes() + value.bytes();
  };
  ExpectInvalid(one_kv(Builder().U32(13).U32(0)), "unknown value type 13");
  ExpectInvalid(one_kv(Builder().U32(9).U32(13).U64(1).U32(0)), "unknown value type 13");
  ExpectInvalid(one_kv(Builder().U32(9).U32(0).U64(uint64_t{1} << 60).Zeros(64)),
                "more than the rest");
  ExpectInvalid(one_kv(Builder().U32(7).Zeros(0)));  // bool with no byte
  Builder bool2;
  bool2.U32(7);
  ExpectInvalid(one_kv(bool2) + std::string(1, '\x02'), "bool");
  // Arrays nested 100 deep.
  Builder deep;
  deep.U32(9);
  for (int i = 0; i < 100; ++i) deep.U32(9).U64(1);
  deep.U32(0).U64(0);
  ExpectInvalid(one_kv(deep), "deep");
  // The same key twice.
  Builder dup;
  dup.U32(0x46554747).U32(3).U64(0).U64(2).Str("k").U32(4).U32(1).Str("k").U32(4).U32(2);
  ExpectInvalid(dup.bytes(), "twice");
  // general.alignment that is not a power of two.
  Builder align;
  align.U32(0x46554747).U32(3).U64(0).U64(1).Str("general.alignment").U32(4).U32(48);
  ExpectInvalid(align.bytes(), "alignment");
}

}  // namespace
}  // namespace tpserve
