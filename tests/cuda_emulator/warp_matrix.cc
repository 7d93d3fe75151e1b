// Host-side emulation of ldmatrix .m8n8.x4 and mma .m16n8k16 .bf16 for a CPU CUDA emulator; see
// warp_matrix.h for the lane layouts and the PTX ISA sections they come from. Each function
// works the way the ISA states its layout: it computes, for every lane and element index, the
// (row, column) that the ISA's formula gives, so each line can be read against the ISA text.
#include "tests/cuda_emulator/warp_matrix.h"

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tpserve::cuda_emulator {
namespace {

// The emulated shared memory is host memory; 16-bit elements are stored little-endian on the
// GPU, so reading them with a host load is only right on a little-endian host.
static_assert(std::endian::native == std::endian::little);

constexpr int kRowBytes = 16;  // An m8n8 .b16 row: 8 elements of 2 bytes.

[[noreturn]] void Die(const char* what, int lane) {
  std::fprintf(stderr, "cuda_emulator: %s (lane %d)\n", what, lane);
  std::abort();
}

uint16_t LoadB16(const void* row, int col) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * col, sizeof(v));
  return v;
}

// "groupID" and "threadID_in_group" of the PTX ISA's fragment formulas.
constexpr int GroupId(int lane) { return lane >> 2; }
constexpr int ThreadInGroup(int lane) { return lane % 4; }

// Section "Matrix Fragments for mma.m16n8k16 with floating point type", multiplicand A
// (.bf16), element a_i for i = 0..7; a_i sits in register i / 2, half i % 2.
constexpr int ARow(int lane, int i) {
  return (i < 2 || (4 <= i && i < 6)) ? GroupId(lane) : GroupId(lane) + 8;
}
constexpr int ACol(int lane, int i) { return ThreadInGroup(lane) * 2 + (i & 1) + (i >= 4 ? 8 : 0); }

// Same section, multiplicand B (.bf16), element b_i for i = 0..3 (register i / 2, half i % 2).
constexpr int BRow(int lane, int i) { return ThreadInGroup(lane) * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
constexpr int BCol(int lane, int /*i*/) { return GroupId(lane); }

// Same section, accumulators C and D (.f32), element c_i for i = 0..3 (register i).
constexpr int CRow(int lane, int i) { return i < 2 ? GroupId(lane) : GroupId(lane) + 8; }
constexpr int CCol(int lane, int i) { return ThreadInGroup(lane) * 2 + (i & 1); }

float HalfAsFloat(uint32_t reg, int half) {
  return Bf16BitsToFloat(half == 0 ? LowB16(reg) : HighB16(reg));
}

}  // namespace

void LdMatrixX4(const void* const rows[kWarpLanes], bool trans, uint32_t out[kWarpLanes][4]) {
  // The ISA requires row addresses aligned to the 16 bytes a row of an 8x8 .b16 matrix spans.
  for (int lane = 0; lane < kWarpLanes; ++lane) {
    if (reinterpret_cast<uintptr_t>(rows[lane]) % kRowBytes != 0) {
      Die("ldmatrix row address is not 16-byte aligned", lane);
    }
  }
  // Lane 8 * m + r supplies row r of matrix m (the .x4 row of the ISA's address table), and
  // matrix m lands in destination register m of every lane.
  for (int m = 0; m < 4; ++m) {
    const void* const* matrix_rows = rows + 8 * m;
    for (int lane = 0; lane < kWarpLanes; ++lane) {
      const int g = GroupId(lane);
      const int t = ThreadInGroup(lane);
      uint16_t lo, hi;
      if (!trans) {
        // Four consecutive lanes receive one row, two adjacent elements each.
        lo = LoadB16(matrix_rows[g], 2 * t);
        hi = LoadB16(matrix_rows[g], 2 * t + 1);
      } else {
        // .trans reads the matrix as column-major: each lane gets the same fragment of the
        // transpose, so four consecutive lanes receive one column.
        lo = LoadB16(matrix_rows[2 * t], g);
        hi = LoadB16(matrix_rows[2 * t + 1], g);
      }
      out[lane][m] = PackB16x2(lo, hi);
    }
  }
}

void MmaM16N8K16Bf16(const uint32_t a[kWarpLanes][4], const uint32_t b[kWarpLanes][2],
                     const float c[kWarpLanes][4], float d[kWarpLanes][4]) {
  // Gather the whole matrices first: every D element needs data from eight lanes, and d may
  // alias c.
  float mat_a[16][16], mat_b[16][8], mat_c[16][8];
  for (int lane = 0; lane < kWarpLanes; ++lane) {
    for (int i = 0; i < 8; ++i) {
      mat_a[ARow(lane, i)][ACol(lane, i)] = HalfAsFloat(a[lane][i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) {
      mat_b[BRow(lane, i)][BCol(lane, i)] = HalfAsFloat(b[lane][i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) mat_c[CRow(lane, i)][CCol(lane, i)] = c[lane][i];
  }
  // Products of bf16 values are exact in fp32, so a compiler fusing the multiply and add into
  // an FMA cannot change the result: each step rounds once either way.
  float mat_d[16][8];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float acc = mat_c[i][j];
      for (int k = 0; k < 16; ++k) acc += mat_a[i][k] * mat_b[k][j];
      mat_d[i][j] = acc;
    }
  }
  for (int lane = 0; lane < kWarpLanes; ++lane) {
    for (int i = 0; i < 4; ++i) d[lane][i] = mat_d[CRow(lane, i)][CCol(lane, i)];
  }
}

}  // namespace tpserve::cuda_emulator
