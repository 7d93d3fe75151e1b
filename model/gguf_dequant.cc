#include "model/gguf_dequant.h"

#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"

// ggml rounds after every multiply and add; a fused multiply-add would change the last bit and
// break bit-exactness with ggml and gguf-py.
#ifdef __clang__
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace tpserve {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy quants
constexpr int kQKK = 256;  // elements per K-quant super-block

float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return F16ToF32(h);
}

// Each Block function dequantises one block at `b` into `y`, exactly as ggml's
// dequantize_row_* does for that block.

// Q8_0: {f16 d; int8 qs[32]}.
void BlockQ8_0(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q4_0: {f16 d; u8 qs[16]}; low nibbles are elements 0..15, high nibbles 16..31.
void BlockQ4_0(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

// Q4_1: {f16 d; f16 m; u8 qs[16]}; x = q * d + m.
void BlockQ4_1(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const float m = HalfAt(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// The 12 bytes of 6-bit scales and mins shared by Q4_K and Q5_K (ggml's get_scale_min_k4).
void ScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}.
void BlockQ4_K(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const float min = HalfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < kQKK; j += 64) {
    uint8_t sc, m;
    ScaleMinK4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    ScaleMinK4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}.
void BlockQ5_K(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const float min = HalfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQKK; j += 64) {
    uint8_t sc, m;
    ScaleMinK4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    ScaleMinK4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
    ql += 32;
    is += 2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

// Q6_K: {u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d}.
void BlockQ6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = HalfAt(b + 208);
  for (int n = 0; n < kQKK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

void ElemF32(const uint8_t* b, float* y) { std::memcpy(y, b, sizeof(float)); }
void ElemF16(const uint8_t* b, float* y) { *y = HalfAt(b); }
void ElemBF16(const uint8_t* b, float* y) {
  uint16_t h;
  std::memcpy(&h, b, sizeof h);
  *y = Bf16ToF32(h);
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn BlockFunction(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return ElemF32;
    case GgmlType::kF16: return ElemF16;
    case GgmlType::kBF16: return ElemBF16;
    case GgmlType::kQ8_0: return BlockQ8_0;
    case GgmlType::kQ4_0: return BlockQ4_0;
    case GgmlType::kQ4_1: return BlockQ4_1;
    case GgmlType::kQ4_K: return BlockQ4_K;
    case GgmlType::kQ5_K: return BlockQ5_K;
    case GgmlType::kQ6_K: return BlockQ6_K;
    default: return nullptr;
  }
}

}  // namespace

bool CanDequantize(GgmlType type) { return BlockFunction(type) != nullptr; }

absl::Status DequantizeRows(GgmlType type, const uint8_t* data, int64_t row_elements,
                            int64_t first_row, int64_t num_rows, float* out) {
  const BlockFn fn = BlockFunction(type);
  const std::optional<GgmlTypeTraits> traits = GetGgmlTypeTraits(type);
  const uint32_t type_number = static_cast<uint32_t>(type);
  if (fn == nullptr || !traits.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot dequantize ggml type ", type_number,
        traits.has_value() ? absl::StrCat(" (", traits->name, ")") : std::string(" (unknown)")));
  }
  if (row_elements <= 0 || row_elements % traits->block_elements != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ggml type ", type_number, " (", traits->name,
                                                   "): a row of ", row_elements,
                                                   " elements is not a positive multiple of ",
                                                   traits->block_elements));
  }
  if (first_row < 0 || num_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("negative row range [", first_row, ", +", num_rows, ")"));
  }
  const int64_t blocks_per_row = row_elements / traits->block_elements;
  int64_t row_bytes = 0, start = 0, end_row = 0, end = 0, out_elements = 0;
  if (__builtin_mul_overflow(blocks_per_row, traits->block_bytes, &row_bytes) ||
      __builtin_add_overflow(first_row, num_rows, &end_row) ||
      __builtin_mul_overflow(end_row, row_bytes, &end) ||
      __builtin_mul_overflow(first_row, row_bytes, &start) ||
      __builtin_mul_overflow(num_rows, row_elements, &out_elements)) {
    return absl::InvalidArgumentError(absl::StrCat("ggml type ", type_number,
                                                   ": row range overflows 64 bits"));
  }
  const uint8_t* src = data + start;
  float* y = out;
  const int64_t total_blocks = blocks_per_row * num_rows;  // <= out_elements, no overflow
  for (int64_t i = 0; i < total_blocks; ++i) {
    fn(src, y);
    src += traits->block_bytes;
    y += traits->block_elements;
  }
  return absl::OkStatus();
}

}  // namespace tpserve
