#include "model/checkpoint.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/safetensors_writer.h"
#include "nlohmann/json.hpp"
#include "tests/model/test_files.h"

namespace tpserve {
namespace {

using test::TestTensor;
using ::testing::HasSubstr;

constexpr uint8_t kGuard = 0xA5;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::MakeTempDir(); }

  void Write(const std::string& file, const std::vector<TestTensor>& tensors) {
    test::WriteFile(dir_ + "/" + file, test::SafetensorsBytes(tensors));
  }

  void WriteIndex(const nlohmann::json& weight_map) {
    test::WriteFile(
        dir_ + "/model.safetensors.index.json",
        nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2));
  }

  std::unique_ptr<Checkpoint> OpenOk() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  absl::Status OpenError() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_);
    EXPECT_FALSE(c.ok()) << "opened a bad checkpoint";
    return c.status();
  }

  std::string dir_;
};

// Reads `slice` of a [rows, cols] tensor holding Iota values in `dtype`, into a buffer with
// guard bytes behind it, and checks every element and that no guard byte was written.
void ExpectSliceOfIota(const Checkpoint& ckpt, const std::string& name,
                       const std::vector<int64_t>& shape, const Slice2D& s) {
  const int64_t cols = shape.size() == 2 ? shape[1] : 1;
  const TensorInfo* info = ckpt.Find(name);
  ASSERT_NE(info, nullptr);
  const size_t elem = DTypeSize(info->dtype);
  const int64_t out_rows = s.row_end - s.row_begin, out_cols = s.col_end - s.col_begin;
  const size_t bytes = static_cast<size_t>(out_rows * out_cols) * elem;
  std::vector<uint8_t> buf(bytes + 64, kGuard);
  absl::Status st = ckpt.ReadSlice(name, shape, s, buf.data());
  ASSERT_TRUE(st.ok()) << st;
  std::vector<float> got(static_cast<size_t>(out_rows * out_cols));
  ConvertToF32(info->dtype, buf.data(), got.data(), got.size());
  for (int64_t r = 0; r < out_rows; ++r) {
    for (int64_t c = 0; c < out_cols; ++c) {
      const float want = static_cast<float>((s.row_begin + r) * cols + (s.col_begin + c));
      ASSERT_EQ(got[static_cast<size_t>(r * out_cols + c)], want)
          << name << " element (" << r << ", " << c << ") of the slice";
    }
  }
  for (size_t i = bytes; i < buf.size(); ++i) ASSERT_EQ(buf[i], kGuard) << "wrote past slice";
}

TEST_F(CheckpointTest, SingleFileOpensAndIndexesEveryTensor) {
  Write("model.safetensors", {{"model.norm.weight", "F32", {32}, test::F32Bytes(test::Iota(32))},
                              {"w", "BF16", {4, 6}, test::Bf16Bytes(test::Iota(24))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  const TensorInfo* norm = ckpt->Find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->shape, std::vector<int64_t>{32});
  EXPECT_EQ(ckpt->Find("w")->dtype, DType::kBF16);
  EXPECT_EQ(ckpt->Find("nope"), nullptr);
  EXPECT_EQ(ckpt->FileOf("w"), "model.safetensors");
  EXPECT_EQ(ckpt->FileOf("nope"), "");
  EXPECT_EQ(ckpt->TotalTensorBytes(), 32u * 4 + 24u * 2);
}

TEST_F(CheckpointTest, RowSliceOfF32MatrixCopiesExactlyThoseRows) {
  Write("model.safetensors", {{"w", "F32", {8, 6}, test::F32Bytes(test::Iota(48))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "w", {8, 6},
                    {.row_begin = 2, .row_end = 5, .col_begin = 0, .col_end = 6});
  ExpectSliceOfIota(*ckpt, "w", {8, 6},
                    {.row_begin = 0, .row_end = 8, .col_begin = 0, .col_end = 6});
  ExpectSliceOfIota(*ckpt, "w", {8, 6},
                    {.row_begin = 7, .row_end = 8, .col_begin = 0, .col_end = 6});
}

TEST_F(CheckpointTest, ColumnSliceOfBf16MatrixCopiesExactlyThoseColumns) {
  Write("model.safetensors", {{"w", "BF16", {6, 10}, test::Bf16Bytes(test::Iota(60))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "w", {6, 10},
                    {.row_begin = 0, .row_end = 6, .col_begin = 3, .col_end = 7});
  ExpectSliceOfIota(*ckpt, "w", {6, 10},
                    {.row_begin = 0, .row_end = 6, .col_begin = 9, .col_end = 10});
}

TEST_F(CheckpointTest, BlockSliceOfF16MatrixCopiesRowsAndColumns) {
  Write("model.safetensors", {{"w", "F16", {5, 7}, test::F16Bytes(test::Iota(35))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "w", {5, 7},
                    {.row_begin = 1, .row_end = 4, .col_begin = 2, .col_end = 5});
}

TEST_F(CheckpointTest, OneDimensionalSliceCopiesThoseElements) {
  Write("model.safetensors", {{"b", "F32", {10}, test::F32Bytes(test::Iota(10))},
                              {"h", "BF16", {12}, test::Bf16Bytes(test::Iota(12))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "b", {10}, {.row_begin = 3, .row_end = 8});
  ExpectSliceOfIota(*ckpt, "b", {10}, {.row_begin = 0, .row_end = 10});
  ExpectSliceOfIota(*ckpt, "h", {12}, {.row_begin = 6, .row_end = 12});
}

TEST_F(CheckpointTest, EmptySliceWritesNothing) {
  Write("model.safetensors", {{"w", "F32", {4, 4}, test::F32Bytes(test::Iota(16))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<uint8_t> buf(16, kGuard);
  EXPECT_TRUE(ckpt->ReadSlice("w", {4, 4},
                              {.row_begin = 2, .row_end = 2, .col_begin = 0, .col_end = 4},
                              buf.data())
                  .ok());
  EXPECT_TRUE(ckpt->ReadSlice("w", {4, 4},
                              {.row_begin = 0, .row_end = 4, .col_begin = 1, .col_end = 1}, nullptr)
                  .ok());
  EXPECT_EQ(buf, std::vector<uint8_t>(16, kGuard));
}

TEST_F(CheckpointTest, WrongShapeNamesFileTensorAndBothShapes) {
  Write("model.safetensors", {{"model.norm.weight", "F32", {32}, test::F32Bytes(test::Iota(32))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<float> dst(64);
  EXPECT_EQ(ckpt->ReadSlice("model.norm.weight", {64}, {.row_begin = 0, .row_end = 32}, dst.data()),
            absl::InvalidArgumentError(
                "model.safetensors: tensor \"model.norm.weight\" has shape [32], expected [64]"));
  EXPECT_EQ(
      ckpt->ReadSlice("model.norm.weight", {32, 1}, {.row_begin = 0, .row_end = 32}, dst.data())
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, MissingTensorIsNotFoundNamingTheCheckpoint) {
  Write("model.safetensors", {{"w", "F32", {1}, test::F32Bytes({1})}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  float dst;
  EXPECT_EQ(ckpt->ReadSlice("lm_head.weight", {1}, {.row_begin = 0, .row_end = 1}, &dst),
            absl::NotFoundError("tensor \"lm_head.weight\" not found in checkpoint " + dir_));
}

TEST_F(CheckpointTest, OutOfBoundsSlicesAreRejected) {
  Write("model.safetensors", {{"w", "F32", {4, 6}, test::F32Bytes(test::Iota(24))},
                              {"b", "F32", {4}, test::F32Bytes(test::Iota(4))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<float> dst(1024);
  for (const Slice2D& s :
       std::vector<Slice2D>{{.row_begin = 0, .row_end = 5, .col_begin = 0, .col_end = 6},
                            {.row_begin = -1, .row_end = 2, .col_begin = 0, .col_end = 6},
                            {.row_begin = 3, .row_end = 2, .col_begin = 0, .col_end = 6},
                            {.row_begin = 0, .row_end = 4, .col_begin = 0, .col_end = 7},
                            {.row_begin = 0, .row_end = 4, .col_begin = -1, .col_end = 6},
                            {.row_begin = 0, .row_end = 4, .col_begin = 5, .col_end = 4}}) {
    absl::Status st = ckpt->ReadSlice("w", {4, 6}, s, dst.data());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument)
        << "rows [" << s.row_begin << ", " << s.row_end << ") cols [" << s.col_begin << ", "
        << s.col_end << ")";
    EXPECT_THAT(st.message(), HasSubstr("model.safetensors"));
    EXPECT_THAT(st.message(), HasSubstr("\"w\""));
  }
  // A 1-D tensor has one implicit column: only cols [0, 1) are valid.
  for (const Slice2D& s :
       std::vector<Slice2D>{{.row_begin = 0, .row_end = 5},
                            {.row_begin = 0, .row_end = 4, .col_begin = 0, .col_end = 2},
                            {.row_begin = 0, .row_end = 4, .col_begin = 1, .col_end = 1}}) {
    EXPECT_EQ(ckpt->ReadSlice("b", {4}, s, dst.data()).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(CheckpointTest, TensorOfRankThreeCannotBeSliced) {
  Write("model.safetensors", {{"t", "F32", {2, 2, 2}, test::F32Bytes(test::Iota(8))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<float> dst(8);
  absl::Status st = ckpt->ReadSlice("t", {2, 2, 2}, {.row_begin = 0, .row_end = 2}, dst.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("\"t\""));
}

TEST_F(CheckpointTest, ShardedCheckpointServesTensorsFromEveryShard) {
  Write("model-00001-of-00002.safetensors",
        {{"model.embed_tokens.weight", "BF16", {8, 4}, test::Bf16Bytes(test::Iota(32))},
         {"model.layers.0.mlp.down_proj.weight", "F32", {3, 5}, test::F32Bytes(test::Iota(15))}});
  Write("model-00002-of-00002.safetensors",
        {{"model.norm.weight", "F32", {4}, test::F32Bytes(test::Iota(4))},
         {"lm_head.weight", "F16", {8, 4}, test::F16Bytes(test::Iota(32))}});
  WriteIndex({{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
              {"model.layers.0.mlp.down_proj.weight", "model-00001-of-00002.safetensors"},
              {"model.norm.weight", "model-00002-of-00002.safetensors"},
              {"lm_head.weight", "model-00002-of-00002.safetensors"}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->FileOf("model.embed_tokens.weight"), "model-00001-of-00002.safetensors");
  EXPECT_EQ(ckpt->FileOf("lm_head.weight"), "model-00002-of-00002.safetensors");
  EXPECT_EQ(ckpt->TotalTensorBytes(), 32u * 2 + 15u * 4 + 4u * 4 + 32u * 2);
  ExpectSliceOfIota(*ckpt, "model.embed_tokens.weight", {8, 4},
                    {.row_begin = 2, .row_end = 6, .col_begin = 0, .col_end = 4});
  ExpectSliceOfIota(*ckpt, "model.layers.0.mlp.down_proj.weight", {3, 5},
                    {.row_begin = 0, .row_end = 3, .col_begin = 1, .col_end = 4});
  ExpectSliceOfIota(*ckpt, "model.norm.weight", {4}, {.row_begin = 1, .row_end = 3});
  ExpectSliceOfIota(*ckpt, "lm_head.weight", {8, 4},
                    {.row_begin = 4, .row_end = 8, .col_begin = 2, .col_end = 4});
}

TEST_F(CheckpointTest, SingleFileTakesPrecedenceOverIndex) {
  Write("model.safetensors", {{"w", "F32", {1}, test::F32Bytes({1})}});
  WriteIndex({{"w", "missing.safetensors"}});  // would fail if it were read
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->FileOf("w"), "model.safetensors");
}

TEST_F(CheckpointTest, MissingShardIsInvalidArgumentNamingIt) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  WriteIndex({{"x", "a.safetensors"}, {"y", "b.safetensors"}});
  absl::Status st = OpenError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("b.safetensors"));
}

TEST_F(CheckpointTest, IndexNamingTensorAbsentFromItsShardIsRejected) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  Write("b.safetensors", {{"y", "F32", {1}, test::F32Bytes({1})}});
  WriteIndex({{"x", "a.safetensors"}, {"y", "a.safetensors"}});
  absl::Status st = OpenError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("a.safetensors: tensor \"y\""));
}

TEST_F(CheckpointTest, ShardNamesThatLeaveTheFolderAreRejected) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  for (const char* name : {"../a.safetensors", "sub/a.safetensors", "/etc/passwd", "..", ""}) {
    WriteIndex({{"x", name}});
    absl::Status st = OpenError();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(st.message(), HasSubstr("model.safetensors.index.json")) << name;
  }
}

TEST_F(CheckpointTest, CorruptIndexIsRejectedNamingTheIndex) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  for (const char* text : {"{", "[]", "{\"metadata\": {}}", "{\"weight_map\": []}",
                           "{\"weight_map\": {\"x\": 3}}", "{\"weight_map\": {}}"}) {
    test::WriteFile(dir_ + "/model.safetensors.index.json", text);
    absl::Status st = OpenError();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(st.message(), HasSubstr("model.safetensors.index.json")) << text;
  }
}

TEST_F(CheckpointTest, TensorInTwoShardsIsRejectedAsNamedTwice) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  Write("b.safetensors",
        {{"x", "F32", {1}, test::F32Bytes({2})}, {"y", "F32", {1}, test::F32Bytes({3})}});
  WriteIndex({{"x", "a.safetensors"}, {"y", "b.safetensors"}});
  absl::Status st = OpenError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("\"x\" is named twice"));
}

TEST_F(CheckpointTest, TensorInShardButNotInIndexIsStillServed) {
  Write("a.safetensors",
        {{"x", "F32", {1}, test::F32Bytes({1})}, {"extra", "F32", {2}, test::F32Bytes({0, 1})}});
  WriteIndex({{"x", "a.safetensors"}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "extra", {2}, {.row_begin = 0, .row_end = 2});
}

TEST_F(CheckpointTest, FolderWithoutWeightsIsNotFound) {
  EXPECT_EQ(OpenError().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_ + "/does-not-exist");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, CorruptSingleFileErrorNamesIt) {
  std::string bytes = test::SafetensorsBytes({{"w", "F32", {4}, test::F32Bytes({1, 2, 3, 4})}});
  bytes.resize(bytes.size() - 3);
  test::WriteFile(dir_ + "/model.safetensors", bytes);
  absl::Status st = OpenError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("model.safetensors: tensor \"w\""));
}

TEST_F(CheckpointTest, EmptySingleFileIsRejected) {
  test::WriteFile(dir_ + "/model.safetensors", "");
  EXPECT_EQ(OpenError().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, CorruptShardErrorNamesTheShard) {
  Write("a.safetensors", {{"x", "F32", {1}, test::F32Bytes({1})}});
  test::WriteFile(dir_ + "/b.safetensors", test::Frame("{\"y\": 1}", ""));
  WriteIndex({{"x", "a.safetensors"}, {"y", "b.safetensors"}});
  absl::Status st = OpenError();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("b.safetensors: tensor \"y\""));
}

TEST_F(CheckpointTest, ReleasePagesKeepsTensorsReadable) {
  Write("model.safetensors", {{"w", "F32", {16, 16}, test::F32Bytes(test::Iota(256))}});
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "w", {16, 16},
                    {.row_begin = 0, .row_end = 16, .col_begin = 4, .col_end = 8});
  ckpt->ReleasePages();
  ExpectSliceOfIota(*ckpt, "w", {16, 16},
                    {.row_begin = 0, .row_end = 16, .col_begin = 4, .col_end = 8});
}

TEST_F(CheckpointTest, ReadsFilesMadeByTheProjectWriter) {
  // The writer pads its header with spaces for alignment; reader and writer must agree.
  const std::vector<TensorSpec> specs = {
      {"a", DType::kBF16, {3, 5}}, {"b", DType::kF32, {7}}, {"c", DType::kF16, {2, 3}}};
  absl::Status written = WriteSafetensors(
      dir_ + "/model.safetensors", specs, [](const TensorSpec& spec, std::vector<uint8_t>& out) {
        const size_t n = out.size() / DTypeSize(spec.dtype);
        const std::vector<float> v = test::Iota(n);
        const std::string bytes = spec.dtype == DType::kBF16  ? test::Bf16Bytes(v)
                                  : spec.dtype == DType::kF16 ? test::F16Bytes(v)
                                                              : test::F32Bytes(v);
        std::memcpy(out.data(), bytes.data(), out.size());
      });
  ASSERT_TRUE(written.ok()) << written;
  auto ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  ExpectSliceOfIota(*ckpt, "a", {3, 5},
                    {.row_begin = 1, .row_end = 3, .col_begin = 2, .col_end = 5});
  ExpectSliceOfIota(*ckpt, "b", {7}, {.row_begin = 2, .row_end = 7});
  ExpectSliceOfIota(*ckpt, "c", {2, 3},
                    {.row_begin = 0, .row_end = 2, .col_begin = 0, .col_end = 3});
}

}  // namespace
}  // namespace tpserve
