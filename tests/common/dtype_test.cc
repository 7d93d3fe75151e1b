#include "common/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tpserve {
namespace {

TEST(DTypeTest, EveryF16ValueSurvivesARoundTripThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToF16(f), h) << std::hex << h;
  }
}

TEST(DTypeTest, F16ConversionMatchesKnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie rounds to even
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);                          // overflow to inf
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f)), 1.0f);
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);   // halfway between 1 and next: to even (1)
  EXPECT_EQ(F32ToBf16(1.01171875f), 0x3f82);   // halfway, rounds up to even
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

TEST(DTypeTest, ParseDTypeAcceptsSafetensorsNamesOnly) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("F16"), DType::kF16);
  EXPECT_FALSE(ParseDType("bf16").ok());
  EXPECT_FALSE(ParseDType("F8_E4M3").ok());
}

}  // namespace
}  // namespace tpserve
