// Branch-free scalar maths that the compiler can vectorise inside `#pragma omp simd` loops
// (layer: kernels, internal to kernels/cpu). libm's expf is an opaque call that keeps a loop
// scalar; this one is plain arithmetic, so it runs at the width of the calling function's
// target (see TPSERVE_ALWAYS_INLINE in cpu_features.h).
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace tpserve::kernels::cpu {

// e^x for fp32 within about 2 ulp (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-6
// polynomial, then 2^n). NaN in, NaN out; x > 88.72 gives +inf and x < -87.34 gives 0 (the
// true result is below FLT_MIN there: the subnormal range is flushed).
__attribute__((always_inline)) inline float FastExp(float x) {
  constexpr float kHi = 88.72283935546875f;   // just above ln(FLT_MAX)
  constexpr float kLo = -87.33654022216797f;  // ln(FLT_MIN)
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // Comparisons are false for NaN, so NaN passes through the clamp unchanged.
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);
  const float t = xc * kLog2e + kRound;  // n = round(x / ln 2) sits in t's low mantissa bits
  const float fn = t - kRound;
  float r = xc - fn * kLn2Hi;
  r = r - fn * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * (r * r) + r + 1.0f;
  // n is in [-126, 128] (garbage for NaN, which the result ignores). It is read from t's bits
  // in unsigned arithmetic, never by a float-to-int conversion (undefined for NaN), and 2^n
  // is applied as two factors so that n = 128 cannot overflow the exponent field.
  const uint32_t n = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kRound);
  const uint32_t h = static_cast<uint32_t>(static_cast<int32_t>(n) >> 1);
  const float s1 = std::bit_cast<float>((h + 127u) << 23);
  const float s2 = std::bit_cast<float>((n - h + 127u) << 23);
  float y = e * s1 * s2;
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  y = x < kLo ? 0.0f : y;
  return y;
}

}  // namespace tpserve::kernels::cpu
