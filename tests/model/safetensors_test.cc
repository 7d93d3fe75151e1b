#include "model/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/test_files.h"

namespace tpserve {
namespace {

using test::Frame;
using test::TestTensor;
using ::testing::HasSubstr;

absl::StatusOr<SafetensorsHeader> Parse(std::string_view file) {
  return ParseSafetensors(file, "weights.safetensors");
}

// Parsing must fail with InvalidArgument naming the file and every given substring.
void ExpectRejected(std::string_view file, const std::vector<std::string>& substrings) {
  absl::StatusOr<SafetensorsHeader> h = Parse(file);
  ASSERT_FALSE(h.ok()) << "accepted a corrupt file";
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << h.status();
  EXPECT_THAT(h.status().message(), HasSubstr("weights.safetensors: "));
  for (const std::string& s : substrings) {
    EXPECT_THAT(h.status().message(), HasSubstr(s)) << h.status();
  }
}

TEST(SafetensorsTest, ParsesF32Bf16F16TensorsSortedByNameWithData) {
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  const std::string file = test::SafetensorsBytes({
      {"z.f32", "F32", {2, 3}, test::F32Bytes(w)},
      {"a.bf16", "BF16", {3, 2}, test::Bf16Bytes(w)},
      {"m.f16", "F16", {6}, test::F16Bytes(w)},
  });
  absl::StatusOr<SafetensorsHeader> h = Parse(file);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "a.bf16");
  EXPECT_EQ(h->tensors[1].name, "m.f16");
  EXPECT_EQ(h->tensors[2].name, "z.f32");
  EXPECT_EQ(h->tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(h->tensors[1].dtype, DType::kF16);
  EXPECT_EQ(h->tensors[2].dtype, DType::kF32);
  EXPECT_EQ(h->tensors[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(h->tensors[1].shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(h->tensors[2].shape, (std::vector<int64_t>{2, 3}));
  // Written in the order z, a, m: offsets follow the write order, not the name order.
  EXPECT_EQ(h->tensors[2].data_begin, 0u);
  EXPECT_EQ(h->tensors[2].data_end, 24u);
  EXPECT_EQ(h->tensors[0].data_begin, 24u);
  EXPECT_EQ(h->tensors[0].data_end, 36u);
  EXPECT_EQ(h->tensors[1].data_begin, 36u);
  EXPECT_EQ(h->tensors[1].data_end, 48u);
  EXPECT_EQ(h->data_offset + 48, file.size());
  for (const TensorInfo& t : h->tensors) {
    ASSERT_EQ(t.NumElements(), 6);
    std::vector<float> got(6);
    ConvertToF32(t.dtype, file.data() + h->data_offset + t.data_begin, got.data(), 6);
    EXPECT_EQ(got, w) << t.name;  // all values are exact in bf16 and f16
  }
}

TEST(SafetensorsTest, MetadataEntryIsNotATensor) {
  const std::string file = test::SafetensorsBytes({{"x", "F32", {1}, test::F32Bytes({1})}});
  absl::StatusOr<SafetensorsHeader> h = Parse(file);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 1u);
  EXPECT_EQ(h->tensors[0].name, "x");
}

TEST(SafetensorsTest, EmptyHeaderObjectHasNoTensors) {
  absl::StatusOr<SafetensorsHeader> h = Parse(Frame("{}", ""));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->tensors.empty());
  EXPECT_EQ(h->data_offset, 10u);
}

TEST(SafetensorsTest, HeaderPaddedWithSpacesIsAccepted) {
  // Writers pad the header to 8-byte alignment with spaces.
  const std::string file =
      Frame(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}     )", test::F32Bytes({2}));
  absl::StatusOr<SafetensorsHeader> h = Parse(file);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_offset, file.size() - 4);
}

TEST(SafetensorsTest, ZeroElementAndScalarTensorsAreAccepted) {
  const std::string file = Frame(
      R"({"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[4,4]},
          "scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]},
          "empty2":{"dtype":"BF16","shape":[3,0],"data_offsets":[2,2]}})",
      test::F32Bytes({1}));
  absl::StatusOr<SafetensorsHeader> h = Parse(file);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].NumElements(), 0);  // "empty"
  EXPECT_EQ(h->tensors[2].NumElements(), 1);  // "scalar"
}

TEST(SafetensorsTest, NumElementsReportsOverflowAsMinusOne) {
  TensorInfo t;
  t.shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(t.NumElements(), -1);
  t.shape = {3, -1};
  EXPECT_EQ(t.NumElements(), -1);
  t.shape = {3, 5};
  EXPECT_EQ(t.NumElements(), 15);
}

TEST(SafetensorsTest, FileShorterThanLengthPrefixIsRejected) {
  ExpectRejected("", {"too short"});
  ExpectRejected(std::string(7, '\0'), {"too short"});
}

TEST(SafetensorsTest, LengthPrefixLargerThanFileIsRejected) {
  std::string file = Frame("{}", "");
  file[0] = 3;  // claims a 259-byte header in a 10-byte file
  file[1] = 1;
  ExpectRejected(file, {"header length 259", "exceeds"});
}

TEST(SafetensorsTest, HugeLengthPrefixIsRejectedWithoutOverflow) {
  std::string file(64, ' ');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(0xff);
  ExpectRejected(file, {"header length 18446744073709551615"});
}

TEST(SafetensorsTest, TruncatedDataSectionIsRejected) {
  std::string file = test::SafetensorsBytes({{"w", "F32", {4}, test::F32Bytes({1, 2, 3, 4})}});
  file.resize(file.size() - 1);
  ExpectRejected(file, {"tensor \"w\"", "beyond the data section"});
}

TEST(SafetensorsTest, TruncatedHeaderIsCaughtByLengthPrefix) {
  std::string full = test::SafetensorsBytes({{"w", "F32", {1}, test::F32Bytes({1})}});
  // Keep the real length prefix but cut the file inside the header.
  ExpectRejected(full.substr(0, 20), {"header length"});
}

TEST(SafetensorsTest, HeaderThatIsNotJsonIsRejected) {
  ExpectRejected(Frame("{\"w\": {", ""), {"not valid JSON"});
  ExpectRejected(Frame("\xff\xfe garbage", ""), {"not valid JSON"});
}

TEST(SafetensorsTest, HeaderThatIsNotAnObjectIsRejected) {
  ExpectRejected(Frame("[1, 2]", ""), {"JSON object"});
  ExpectRejected(Frame("\"w\"", ""), {"JSON object"});
}

TEST(SafetensorsTest, EntryThatIsNotAnObjectIsRejected) {
  ExpectRejected(Frame(R"({"w": [0, 4]})", "abcd"), {"tensor \"w\"", "object"});
}

TEST(SafetensorsTest, EntryMissingAFieldIsRejectedNamingIt) {
  ExpectRejected(Frame(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "\"dtype\""});
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "\"shape\""});
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"),
                 {"tensor \"w\"", "\"data_offsets\""});
}

TEST(SafetensorsTest, UnknownOrMistypedDtypeIsRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "Q4_K"});
  ExpectRejected(Frame(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "\"dtype\""});
}

TEST(SafetensorsTest, NegativeOrFractionalDimensionIsRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "dimension -1"});
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "\"shape\""});
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "\"shape\""});
  ExpectRejected(
      Frame(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}})", "abcd"),
      {"tensor \"w\"", "dimension"});
}

TEST(SafetensorsTest, ElementCountOverflowIsRejected) {
  // 2^32 * 2^32 * 16 wraps to 0 in 64 bits, which would match data_offsets [0, 0].
  ExpectRejected(
      Frame(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", ""),
      {"tensor \"w\"", "overflows"});
  // 2^62 elements fit, 2^62 * 4 bytes wrap to 0.
  ExpectRejected(
      Frame(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""),
      {"tensor \"w\"", "overflows"});
}

TEST(SafetensorsTest, MalformedDataOffsetsAreRejected) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,0]", "[0,4.0]", "\"0,4\"", "[0,null]"}) {
    ExpectRejected(
        Frame(std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}}",
              "abcd"),
        {"tensor \"w\"", "\"data_offsets\""});
  }
}

TEST(SafetensorsTest, OffsetsWithBeginAfterEndAreRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", "abcd"),
                 {"tensor \"w\"", "begin after end"});
}

TEST(SafetensorsTest, OffsetsBeyondDataSectionAreRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "abcd"),
                 {"tensor \"w\"", "beyond the data section of 4 bytes"});
  // An end near 2^64: a check written as begin + size <= data would wrap.
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[1],)"
                       R"("data_offsets":[18446744073709551612,18446744073709551615]}})",
                       "abcd"),
                 {"tensor \"w\"", "beyond"});
}

TEST(SafetensorsTest, SizeNotMatchingShapeIsRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "needs 8"});
  ExpectRejected(Frame(R"({"w":{"dtype":"BF16","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                 {"tensor \"w\"", "needs 2"});
}

TEST(SafetensorsTest, OverlappingTensorsAreRejectedNamingBoth) {
  ExpectRejected(Frame(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                           "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       "abcdefgh"),
                 {"\"a\"", "\"b\"", "overlap"});
  // Identical ranges overlap too.
  ExpectRejected(Frame(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                           "b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                       "abcd"),
                 {"overlap"});
  // A later tensor contained in an earlier long one, with a short one between them.
  ExpectRejected(Frame(R"({"long":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
                           "short":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
                           "inner":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                       std::string(16, 'x')),
                 {"overlap"});
}

TEST(SafetensorsTest, AdjacentAndEmptyTensorsDoNotCountAsOverlap) {
  absl::StatusOr<SafetensorsHeader> h =
      Parse(Frame(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                      "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
                      "e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})",
                  "abcdefgh"));
  EXPECT_TRUE(h.ok()) << h.status();
}

TEST(SafetensorsTest, TensorNamedTwiceIsRejected) {
  ExpectRejected(Frame(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                           "w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       "abcdefgh"),
                 {"tensor \"w\"", "twice"});
}

}  // namespace
}  // namespace tpserve
