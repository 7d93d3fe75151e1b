// Host-side (CPU) emulation of the two warp-wide PTX matrix instructions that tpserve's CUDA
// flash-attention kernel issues, so that a CPU CUDA emulator can run that kernel:
//   ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// Every lane layout here is taken from the NVIDIA PTX ISA, sections "Warp-level matrix load
// instruction: ldmatrix" and "Matrix Fragments for mma.m16n8k16 with floating point type", and
// never from the kernel: running the kernel on this emulator is then an independent check of
// the layouts the kernel assumes.
//
// Notation: a warp has 32 lanes; for lane l, g = l / 4 ("groupID" in the PTX ISA) and
// t = l % 4 ("threadID_in_group"). A register holding two 16-bit elements is written {lo, hi}:
// lo in bits 0-15, hi in bits 16-31.
//
// ldmatrix .m8n8.x4 (section "Warp-level matrix load instruction: ldmatrix"). Lane 8 * m + r
// supplies the address of row r of matrix m (m = 0..3, r = 0..7); a row is 8 consecutive
// 16-bit elements (16 bytes, 16-byte aligned), and rows need not be adjacent in memory. Write
// M_m[r][c] for element c of that row. Matrix m lands in destination register m of every lane:
//   without .trans: out[l][m] = {M_m[g][2t], M_m[g][2t + 1]}  (four lanes hold one row)
//   with .trans:    out[l][m] = {M_m[2t][g], M_m[2t + 1][g]}  (four lanes hold one column)
//
// mma .m16n8k16 .bf16 -> .f32 (section "Matrix Fragments for mma.m16n8k16 with floating point
// type"); A is 16x16 (M x K, .row), B is 16x8 (K x N, .col), C and D are 16x8:
//   a[l][0] = {A[g][2t],         A[g][2t + 1]}          elements a0, a1
//   a[l][1] = {A[g + 8][2t],     A[g + 8][2t + 1]}      elements a2, a3
//   a[l][2] = {A[g][2t + 8],     A[g][2t + 9]}          elements a4, a5
//   a[l][3] = {A[g + 8][2t + 8], A[g + 8][2t + 9]}      elements a6, a7
//   b[l][0] = {B[2t][g],         B[2t + 1][g]}          elements b0, b1
//   b[l][1] = {B[2t + 8][g],     B[2t + 9][g]}          elements b2, b3
//   c[l][i], d[l][i] = C/D[g][2t], [g][2t + 1], [g + 8][2t], [g + 8][2t + 1]  for i = 0..3
#pragma once

#include <bit>
#include <cstdint>

namespace tpserve::cuda_emulator {

inline constexpr int kWarpLanes = 32;

// bf16 is the upper half of an IEEE binary32, so widening is exact.
constexpr float Bf16BitsToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

// Rounds to nearest, ties to even (as cvt.rn.bf16.f32 does); a NaN stays a (quiet) NaN rather
// than rounding into infinity.
constexpr uint16_t FloatToBf16Bits(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t tie_to_even = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + tie_to_even) >> 16);
}

// Two 16-bit elements in one 32-bit register, lo in bits 0-15 (the PTX ISA's "low to high").
constexpr uint32_t PackB16x2(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}
constexpr uint16_t LowB16(uint32_t reg) { return static_cast<uint16_t>(reg & 0xffffu); }
constexpr uint16_t HighB16(uint32_t reg) { return static_cast<uint16_t>(reg >> 16); }

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 for a whole warp.
// rows[l] is the 16-byte row address that lane l supplies (lanes 0-7 address matrix 0's rows
// 0-7, lanes 8-15 matrix 1's, 16-23 matrix 2's, 24-31 matrix 3's); out[l][i] receives lane l's
// destination register i, laid out as in the table above. A row address that is not 16-byte
// aligned (undefined behaviour on the GPU) aborts with a message naming the lane, so a kernel
// bug surfaces here instead of being read around.
void LdMatrixX4(const void* const rows[kWarpLanes], bool trans, uint32_t out[kWarpLanes][4]);

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for a whole warp: d = a * b + c.
// a[l][0..3] and b[l][0..1] are lane l's packed bf16x2 source registers, c[l][0..3] and
// d[l][0..3] its fp32 accumulator registers, all in the layouts of the table above. Each D
// element is computed in fp32 as c, then + A[i][k] * B[k][j] for k = 0..15 in order; a product
// of two bf16 values is exact in fp32 (barring overflow and underflow). d may alias c.
void MmaM16N8K16Bf16(const uint32_t a[kWarpLanes][4], const uint32_t b[kWarpLanes][2],
                     const float c[kWarpLanes][4], float d[kWarpLanes][4]);

}  // namespace tpserve::cuda_emulator
