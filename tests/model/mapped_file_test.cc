// MappedFile lives in common/, but tests/common is owned elsewhere; these move there as is.
#include "common/mapped_file.h"

#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "tests/model/test_files.h"

namespace tpserve {
namespace {

std::string Contents(const MappedFile& f) {
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

TEST(MappedFileTest, MapsTheFileContents) {
  const std::string path = test::MakeTempDir() + "/f.bin";
  test::WriteFile(path, std::string("hello\0world", 11));
  absl::StatusOr<MappedFile> f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->size(), 11u);
  EXPECT_EQ(Contents(*f), std::string("hello\0world", 11));
  EXPECT_EQ(f->path(), path);
}

TEST(MappedFileTest, EmptyFileMapsToNullDataAndZeroSize) {
  const std::string path = test::MakeTempDir() + "/empty";
  test::WriteFile(path, "");
  absl::StatusOr<MappedFile> f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data(), nullptr);
  EXPECT_EQ(f->size(), 0u);
  f->ReleasePages();  // must be a no-op, not a crash
}

TEST(MappedFileTest, MissingFileIsNotFoundNamingThePath) {
  const std::string path = test::MakeTempDir() + "/absent";
  absl::StatusOr<MappedFile> f = MappedFile::Open(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find(path), std::string_view::npos) << f.status();
}

TEST(MappedFileTest, DirectoryIsInvalidArgument) {
  absl::StatusOr<MappedFile> f = MappedFile::Open(test::MakeTempDir());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MappedFileTest, MoveTransfersTheMappingAndEmptiesTheSource) {
  const std::string dir = test::MakeTempDir();
  test::WriteFile(dir + "/a", "aaaa");
  test::WriteFile(dir + "/b", "bb");
  absl::StatusOr<MappedFile> a = MappedFile::Open(dir + "/a");
  absl::StatusOr<MappedFile> b = MappedFile::Open(dir + "/b");
  ASSERT_TRUE(a.ok() && b.ok());
  MappedFile moved(std::move(*a));
  EXPECT_EQ(a->data(), nullptr);
  EXPECT_EQ(a->size(), 0u);
  EXPECT_EQ(Contents(moved), "aaaa");
  moved = std::move(*b);  // unmaps "a", takes "b"
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_EQ(Contents(moved), "bb");
}

TEST(MappedFileTest, ReleasePagesKeepsContentsReadable) {
  const std::string path = test::MakeTempDir() + "/big";
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  test::WriteFile(path, data);
  absl::StatusOr<MappedFile> f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(Contents(*f), data);
  f->ReleasePages();
  EXPECT_EQ(Contents(*f), data);
}

}  // namespace
}  // namespace tpserve
