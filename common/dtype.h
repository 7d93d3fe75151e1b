// Element types of stored weights and their conversions to fp32 (layer: common; thread-safe).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace tpserve {

// Storage types a checkpoint tensor may have. Activations are always fp32.
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64 };

// Bytes per element.
size_t DTypeSize(DType t);
// Name as safetensors spells it ("F32", "BF16", ...).
const char* DTypeName(DType t);
// Parses a safetensors dtype name; InvalidArgument for anything else.
absl::StatusOr<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, NaN kept quiet, as torch does.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t v);
uint16_t F32ToF16(float f);

// Converts `n` elements of type `t` at `src` to fp32 at `dst`.
void ConvertToF32(DType t, const void* src, float* dst, size_t n);

}  // namespace tpserve
