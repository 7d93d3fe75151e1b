#include "common/bytes.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

TEST(BytesTest, ReaderReturnsWhatWriterPut) {
  ByteWriter w;
  w.Put<int32_t>(-5);
  w.PutVector(std::vector<float>{1.5f, 2.5f});
  ByteReader r(w.bytes().data(), w.bytes().size());
  int32_t i = 0;
  std::vector<float> v;
  EXPECT_TRUE(r.Get(i) && r.GetVector(v));
  EXPECT_EQ(i, -5);
  EXPECT_EQ(v, (std::vector<float>{1.5f, 2.5f}));
  EXPECT_TRUE(r.AtEnd());
}

TEST(BytesTest, ALyingVectorLengthFailsInsteadOfOverReading) {
  ByteWriter w;
  w.Put<uint64_t>(1ull << 60);  // claims a huge vector
  w.Put<float>(1.0f);
  ByteReader r(w.bytes().data(), w.bytes().size());
  std::vector<float> v;
  EXPECT_FALSE(r.GetVector(v));
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace tpserve
