// Tests for the host-side ldmatrix / mma emulation (tests/cuda_emulator/warp_matrix.h).
// The expected per-lane registers are built here, independently of warp_matrix.cc, as plain
// loops over matrix elements that ask "which lane, register and half holds this element?",
// the inverse of the PTX ISA's per-lane formulas in sections "Warp-level matrix load
// instruction: ldmatrix" and "Matrix Fragments for mma.m16n8k16 with floating point type".
// Matrix contents are seeded random values, distinct where a misplaced element must show.
#include "tests/cuda_emulator/warp_matrix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace tpserve::cuda_emulator {
namespace {

constexpr int kLanes = kWarpLanes;

// --- ldmatrix ------------------------------------------------------------------------------

// A stand-in for shared memory: kSmemRows rows of kSmemStride 16-bit elements (48 bytes, so
// every 8-element block at a column multiple of 8 is 16-byte aligned), 8 elements of padding
// beyond a 16-wide tile.
constexpr int kSmemRows = 40;
constexpr int kSmemStride = 24;

struct Smem {
  alignas(16) uint16_t e[kSmemRows * kSmemStride];
};

// Where row r of matrix m lies: a random distinct buffer row and a random 8-aligned column, so
// the matrices' rows are neither adjacent nor in order, as the ISA allows.
struct Placement {
  int row[4][8];
  int col[4];
};

// Fills every element (padding included) with distinct values, so that reading any wrong
// element, of any matrix or of the padding, yields a value the expectation cannot contain.
void FillDistinct(std::mt19937& rng, Smem& smem) {
  std::vector<uint16_t> values(1 << 16);
  std::iota(values.begin(), values.end(), uint16_t{0});
  std::shuffle(values.begin(), values.end(), rng);
  std::copy_n(values.begin(), kSmemRows * kSmemStride, smem.e);
}

Placement RandomPlacement(std::mt19937& rng) {
  std::vector<int> buffer_rows(kSmemRows);
  std::iota(buffer_rows.begin(), buffer_rows.end(), 0);
  std::shuffle(buffer_rows.begin(), buffer_rows.end(), rng);
  Placement p;
  for (int m = 0; m < 4; ++m) {
    for (int r = 0; r < 8; ++r) p.row[m][r] = buffer_rows[8 * m + r];
    p.col[m] = 8 * std::uniform_int_distribution<int>(0, kSmemStride / 8 - 1)(rng);
  }
  return p;
}

uint16_t Element(const Smem& smem, const Placement& p, int m, int r, int c) {
  return smem.e[p.row[m][r] * kSmemStride + p.col[m] + c];
}

// The ISA's .x4 address table: threads 0-7 give addr0-7 (matrix 0's rows), 8-15 addr8-15, ...
void RowAddresses(const Smem& smem, const Placement& p, const void* rows[kLanes]) {
  for (int m = 0; m < 4; ++m) {
    for (int r = 0; r < 8; ++r) rows[8 * m + r] = &smem.e[p.row[m][r] * kSmemStride + p.col[m]];
  }
}

// Expected registers, element by element. Without .trans a group of four lanes holds a row
// (thread 0 the first two elements, and so on): element (r, c) goes to lane 4r + c/2. With
// .trans the matrix is taken column-major: element (r, c) goes to lane 4c + r/2. The element
// of lower column (row, with .trans) index is the low half. Matrix m is register m.
void ExpectedLdMatrix(const Smem& smem, const Placement& p, bool trans,
                      uint32_t expected[kLanes][4]) {
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int m = 0; m < 4; ++m) expected[lane][m] = 0;
  }
  for (int m = 0; m < 4; ++m) {
    for (int r = 0; r < 8; ++r) {
      for (int c = 0; c < 8; ++c) {
        const int lane = trans ? 4 * c + r / 2 : 4 * r + c / 2;
        const int half = trans ? r % 2 : c % 2;
        expected[lane][m] |= static_cast<uint32_t>(Element(smem, p, m, r, c)) << (16 * half);
      }
    }
  }
}

void CheckLdMatrix(bool trans) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    Smem smem;
    FillDistinct(rng, smem);
    const Placement p = RandomPlacement(rng);
    const void* rows[kLanes];
    RowAddresses(smem, p, rows);
    uint32_t expected[kLanes][4];
    ExpectedLdMatrix(smem, p, trans, expected);
    uint32_t out[kLanes][4];
    std::memset(out, 0xA5, sizeof(out));
    LdMatrixX4(rows, trans, out);
    for (int lane = 0; lane < kLanes; ++lane) {
      for (int reg = 0; reg < 4; ++reg) {
        ASSERT_EQ(out[lane][reg], expected[lane][reg])
            << "seed " << seed << " lane " << lane << " register " << reg;
      }
    }
  }
}

TEST(LdMatrixX4Test, NoTransGivesEachLaneItsRowFragment) { CheckLdMatrix(/*trans=*/false); }

TEST(LdMatrixX4Test, TransGivesEachLaneItsColumnFragment) { CheckLdMatrix(/*trans=*/true); }

// A hand-checked corner of the tables: lane 5 is group 1, thread 1 of its group.
TEST(LdMatrixX4Test, LaneFiveHandChecked) {
  std::mt19937 rng(7);
  Smem smem;
  FillDistinct(rng, smem);
  const Placement p = RandomPlacement(rng);
  const void* rows[kLanes];
  RowAddresses(smem, p, rows);
  uint32_t out[kLanes][4];
  LdMatrixX4(rows, /*trans=*/false, out);
  EXPECT_EQ(LowB16(out[5][2]), Element(smem, p, 2, 1, 2));
  EXPECT_EQ(HighB16(out[5][2]), Element(smem, p, 2, 1, 3));
  LdMatrixX4(rows, /*trans=*/true, out);
  EXPECT_EQ(LowB16(out[5][3]), Element(smem, p, 3, 2, 1));
  EXPECT_EQ(HighB16(out[5][3]), Element(smem, p, 3, 3, 1));
}

TEST(LdMatrixX4DeathTest, MisalignedRowAborts) {
  Smem smem{};
  const void* rows[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) rows[lane] = &smem.e[lane * 8];
  rows[13] = &smem.e[13 * 8 + 1];  // 2 bytes past a 16-byte boundary.
  uint32_t out[kLanes][4];
  EXPECT_DEATH(LdMatrixX4(rows, false, out), "not 16-byte aligned \\(lane 13\\)");
}

// --- mma -----------------------------------------------------------------------------------

// Whole matrices in host memory; A and B hold bf16 bit patterns.
struct MmaOperands {
  uint16_t a[16][16];  // M x K
  uint16_t b[16][8];   // K x N
  float c[16][8];      // M x N
};

struct Fragments {
  uint32_t a[kLanes][4];
  uint32_t b[kLanes][2];
  float c[kLanes][4];
};

void SetHalf(uint32_t& reg, int half, uint16_t v) {
  const int shift = 16 * half;
  reg = (reg & ~(0xffffu << shift)) | (static_cast<uint32_t>(v) << shift);
}

// Distribution per "Matrix Fragments for mma.m16n8k16 with floating point type", written as
// the inverse of its formulas (groupID = lane / 4, threadID_in_group = lane % 4):
//   A (r, c): lane 4 * (r % 8) + (c % 8) / 2, element a_i with i / 2 = r / 8 + 2 * (c / 8)
//             (a0-a3 hold columns 0-7, rows g then g + 8; a4-a7 columns 8-15), half c % 2.
//   B (k, n): lane 4 * n + (k % 8) / 2, register k / 8 (b0, b1 rows 0-7; b2, b3 rows 8-15),
//             half k % 2.
//   C/D (r, n): lane 4 * (r % 8) + n / 2, element c_i with i = 2 * (r / 8) + n % 2.
Fragments Distribute(const MmaOperands& op) {
  Fragments f{};
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      SetHalf(f.a[4 * (r % 8) + (c % 8) / 2][r / 8 + 2 * (c / 8)], c % 2, op.a[r][c]);
    }
  }
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < 8; ++n) SetHalf(f.b[4 * n + (k % 8) / 2][k / 8], k % 2, op.b[k][n]);
  }
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 8; ++n) f.c[4 * (r % 8) + n / 2][2 * (r / 8) + n % 2] = op.c[r][n];
  }
  return f;
}

// Reads D back through the same C/D table.
void Gather(const float d[kLanes][4], float out[16][8]) {
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 8; ++n) out[r][n] = d[4 * (r % 8) + n / 2][2 * (r / 8) + n % 2];
  }
}

void RunMma(const MmaOperands& op, float out[16][8]) {
  const Fragments f = Distribute(op);
  float d[kLanes][4];
  std::fill(&d[0][0], &d[0][0] + kLanes * 4, std::numeric_limits<float>::quiet_NaN());
  MmaM16N8K16Bf16(f.a, f.b, f.c, d);
  Gather(d, out);
}

float F(uint16_t bf16) { return Bf16BitsToFloat(bf16); }

MmaOperands RandomOperands(std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  MmaOperands op;
  for (auto& row : op.a) {
    for (auto& v : row) v = FloatToBf16Bits(dist(rng));
  }
  for (auto& row : op.b) {
    for (auto& v : row) v = FloatToBf16Bits(dist(rng));
  }
  for (auto& row : op.c) {
    for (auto& v : row) v = 8.0f * dist(rng);
  }
  return op;
}

TEST(MmaM16N8K16Bf16Test, RandomMatchesDoubleReference) {
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    std::mt19937 rng(seed);
    const MmaOperands op = RandomOperands(rng);
    float got[16][8];
    RunMma(op, got);
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        double ref = op.c[i][j];
        double magnitude = std::fabs(ref);
        for (int k = 0; k < 16; ++k) {
          const double term = double{F(op.a[i][k])} * double{F(op.b[k][j])};
          ref += term;
          magnitude += std::fabs(term);
        }
        // 16 fp32 additions of exact products: error at most 16 * 2^-24 * sum |terms|.
        const double tolerance = 16.0 * std::ldexp(1.0, -24) * magnitude;
        ASSERT_NEAR(got[i][j], ref, tolerance) << "seed " << seed << " D[" << i << "][" << j << "]";
      }
    }
  }
}

// The documented accumulation order (c first, then k = 0..15, rounding to fp32 each step) is
// the emulator's contract; pin it bit for bit.
TEST(MmaM16N8K16Bf16Test, AccumulatesInFp32InKOrder) {
  for (uint32_t seed = 100; seed < 110; ++seed) {
    std::mt19937 rng(seed);
    const MmaOperands op = RandomOperands(rng);
    float got[16][8];
    RunMma(op, got);
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        float acc = op.c[i][j];
        // The product is exact in fp32, so FMA contraction cannot change this model.
        for (int k = 0; k < 16; ++k) acc += F(op.a[i][k]) * F(op.b[k][j]);
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i][j]), std::bit_cast<uint32_t>(acc))
            << "seed " << seed << " D[" << i << "][" << j << "]";
      }
    }
  }
}

// A = unit at (i, k), B = unit at (k, j), C = 0: only D[i][j] is 1. Covers every A, B and D
// position.
TEST(MmaM16N8K16Bf16Test, OneHotProductsLandAtTheirPosition) {
  const uint16_t kOne = FloatToBf16Bits(1.0f);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      for (int k = 0; k < 16; ++k) {
        MmaOperands op{};
        op.a[i][k] = kOne;
        op.b[k][j] = kOne;
        float got[16][8];
        RunMma(op, got);
        for (int r = 0; r < 16; ++r) {
          for (int n = 0; n < 8; ++n) {
            ASSERT_EQ(got[r][n], (r == i && n == j) ? 1.0f : 0.0f)
                << "A(" << i << "," << k << ") B(" << k << "," << j << ") D[" << r << "][" << n
                << "]";
          }
        }
      }
    }
  }
}

// A = B = 0, C = unit at (i, j): D = C, which checks the C table against the D table.
TEST(MmaM16N8K16Bf16Test, OneHotAccumulatorPassesThrough) {
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      MmaOperands op{};
      op.c[i][j] = 1.0f;
      float got[16][8];
      RunMma(op, got);
      for (int r = 0; r < 16; ++r) {
        for (int n = 0; n < 8; ++n) {
          ASSERT_EQ(got[r][n], (r == i && n == j) ? 1.0f : 0.0f)
              << "C(" << i << "," << j << ") D[" << r << "][" << n << "]";
        }
      }
    }
  }
}

// Kernels accumulate in place (d and c the same registers).
TEST(MmaM16N8K16Bf16Test, InPlaceAccumulationMatches) {
  std::mt19937 rng(3);
  const MmaOperands op = RandomOperands(rng);
  const Fragments f = Distribute(op);
  float separate[kLanes][4];
  MmaM16N8K16Bf16(f.a, f.b, f.c, separate);
  float acc[kLanes][4];
  std::memcpy(acc, f.c, sizeof(acc));
  MmaM16N8K16Bf16(f.a, f.b, acc, acc);
  EXPECT_EQ(std::memcmp(acc, separate, sizeof(acc)), 0);
}

// --- ldmatrix feeding mma ------------------------------------------------------------------

// What the two tables imply together: A stored row-major loads with .x4 (matrices: rows 0-7 /
// 8-15 of columns 0-7, then of columns 8-15) straight into the A fragment; B stored K x N
// row-major loads with .x4.trans, and B stored N x K (as B's transpose) with .x4, into the B
// fragments of two 8-column tiles (registers 0-1 and 2-3). Checked end to end against the
// double-precision product.
TEST(WarpMatrixTest, LdMatrixFeedsMma) {
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    alignas(16) uint16_t a_smem[16 * kSmemStride] = {};
    alignas(16) uint16_t b_kn_smem[16 * kSmemStride] = {};  // B[k][n] at k * stride + n.
    alignas(16) uint16_t b_nk_smem[16 * kSmemStride] = {};  // B[k][n] at n * stride + k.
    for (int r = 0; r < 16; ++r) {
      for (int c = 0; c < 16; ++c) a_smem[r * kSmemStride + c] = FloatToBf16Bits(dist(rng));
    }
    for (int k = 0; k < 16; ++k) {
      for (int n = 0; n < 16; ++n) {
        const uint16_t v = FloatToBf16Bits(dist(rng));
        b_kn_smem[k * kSmemStride + n] = v;
        b_nk_smem[n * kSmemStride + k] = v;
      }
    }
    const void* a_rows[kLanes];
    const void* b_kn_rows[kLanes];
    const void* b_nk_rows[kLanes];
    for (int m = 0; m < 4; ++m) {
      for (int r = 0; r < 8; ++r) {
        const int lane = 8 * m + r;
        // Matrix m covers stored rows 8 * (m % 2) + 0..7 and columns 8 * (m / 2) + 0..7.
        const int offset = (8 * (m % 2) + r) * kSmemStride + 8 * (m / 2);
        a_rows[lane] = &a_smem[offset];
        b_kn_rows[lane] = &b_kn_smem[offset];
        // N x K storage: matrix m covers n = 8 * (m / 2) + 0..7, k = 8 * (m % 2) + 0..7.
        b_nk_rows[lane] = &b_nk_smem[(8 * (m / 2) + r) * kSmemStride + 8 * (m % 2)];
      }
    }
    uint32_t a_frag[kLanes][4], b_kn_frag[kLanes][4], b_nk_frag[kLanes][4];
    LdMatrixX4(a_rows, /*trans=*/false, a_frag);
    LdMatrixX4(b_kn_rows, /*trans=*/true, b_kn_frag);
    LdMatrixX4(b_nk_rows, /*trans=*/false, b_nk_frag);
    EXPECT_EQ(std::memcmp(b_kn_frag, b_nk_frag, sizeof(b_kn_frag)), 0) << "seed " << seed;

    for (int tile = 0; tile < 2; ++tile) {
      uint32_t b_frag[kLanes][2];
      for (int lane = 0; lane < kLanes; ++lane) {
        b_frag[lane][0] = b_kn_frag[lane][2 * tile];
        b_frag[lane][1] = b_kn_frag[lane][2 * tile + 1];
      }
      const float zero[kLanes][4] = {};
      float d[kLanes][4];
      MmaM16N8K16Bf16(a_frag, b_frag, zero, d);
      float got[16][8];
      Gather(d, got);
      for (int i = 0; i < 16; ++i) {
        for (int j = 0; j < 8; ++j) {
          const int n = 8 * tile + j;
          double ref = 0.0, magnitude = 0.0;
          for (int k = 0; k < 16; ++k) {
            const double term =
                double{F(a_smem[i * kSmemStride + k])} * double{F(b_kn_smem[k * kSmemStride + n])};
            ref += term;
            magnitude += std::fabs(term);
          }
          ASSERT_NEAR(got[i][j], ref, 16.0 * std::ldexp(1.0, -24) * magnitude)
              << "seed " << seed << " D[" << i << "][" << n << "]";
        }
      }
    }
  }
}

// --- bf16 helpers --------------------------------------------------------------------------

TEST(Bf16Test, ConversionsRoundToNearestEven) {
  EXPECT_EQ(FloatToBf16Bits(1.0f), 0x3f80);
  EXPECT_EQ(Bf16BitsToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16BitsToFloat(0xc000), -2.0f);
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: rounds down.
  EXPECT_EQ(FloatToBf16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(FloatToBf16Bits(1.0f + 3.0f * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above halfway rounds up.
  EXPECT_EQ(FloatToBf16Bits(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_TRUE(
      std::isnan(Bf16BitsToFloat(FloatToBf16Bits(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the low 16 bits must not round into infinity.
  EXPECT_TRUE(std::isnan(Bf16BitsToFloat(FloatToBf16Bits(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_EQ(PackB16x2(0x1234, 0xabcd), 0xabcd1234u);
  EXPECT_EQ(LowB16(0xabcd1234u), 0x1234);
  EXPECT_EQ(HighB16(0xabcd1234u), 0xabcd);
}

}  // namespace
}  // namespace tpserve::cuda_emulator
