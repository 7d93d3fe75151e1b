// AVX-512 MatMul kernels (F32, F16 and BF16 weights, fp32 accumulation):
//  - GEMV (up to kGemvMaxTokens, matmul_kernels.h): dot products along the columns, 32 columns
//    per step, reduced once per row at the end. One token: one row at a time (a single
//    sequential stream, software-prefetched). More tokens: 4 rows x 4 tokens per tile, over
//    a block of rows that stays in L2 while each group of 4 tokens passes, so the weights
//    come from DRAM once. Eight or more tokens (batched decode): the same 4 x 4 tile, but over
//    column blocks whose slice of x (4 tokens x kGemvKb fp32, 8 KiB) stays in L1 while the
//    block's rows pass (with 4096 columns the whole x of 4 tokens, 64 KiB, does not fit, and
//    x then came from L2 for every chunk), and with the 16 partial sums of a tile reduced
//    together by one transposing add tree. +20-25% at 8..32 tokens on 4096 columns (Zen 5).
//    Tried: 2 rows x 8 tokens (slower on 512 columns), column blocks of 256 or 1024 (slower).
//  - GEMM: weights widened and transposed into a [k][32 rows] fp32 panel, then a 32-row x
//    12-token register tile (24 zmm accumulators) broadcasts one x element per FMA pair.
// Every function here carries the AVX-512 target attribute and is reached only through
// Avx512MatMulKernels() after cpu_features.cc confirmed the CPU supports it. Checked against
// ref::MatMul by tests/kernels/ops_test.cc; timed by bench/kernels/kernels_bench.cc.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"

namespace tpserve::kernels::cpu {
namespace {

constexpr int64_t kChunk = 32;      // GEMV columns per step (one zmm of BF16 pairs)
constexpr int kGemvRows = 4;        // weight rows per GEMV tile (two or more tokens)
constexpr int kGemvTileTokens = 4;  // tokens per GEMV tile
constexpr int64_t kGemvPrefetchBytes = 1024;
constexpr int kWideRows = 4;     // weight rows per column-blocked GEMV tile
constexpr int kWideTokens = 4;   // tokens per column-blocked tile (rows x tokens = 16)
constexpr int64_t kWideMinTokens = 8;  // from here the column-blocked tiles are used
constexpr int64_t kGemvKb = 512;  // columns per wide GEMV column block (multiple of kChunk)
constexpr int64_t kNr = 32;  // GEMM rows per register tile (two zmm)
constexpr int kMt = 12;      // GEMM tokens per register tile

TPSERVE_INLINE_AVX512 __mmask16 Mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : static_cast<__mmask16>((1u << std::max<int64_t>(n, 0)) - 1);
}

// ---- Widening policies. Load() gives the two 16-lane halves of a 32-column chunk in the
// order the prepared x uses; Load16() gives 16 columns in natural order (GEMM packing). ----

struct Bf16W {
  using T = uint16_t;
  // A BF16 value is the high half of an fp32, so a 32-bit lane holding the pair (even, odd)
  // yields both as floats with one shift and one AND: no cross-lane shuffle at all.
  TPSERVE_INLINE_AVX512 static void Split(__m512i raw, __m512& even, __m512& odd) {
    even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
    odd = _mm512_castsi512_ps(
        _mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  TPSERVE_INLINE_AVX512 static void Load(const T* p, __m512& a, __m512& b) {
    Split(_mm512_loadu_si512(p), a, b);
  }
  TPSERVE_INLINE_AVX512 static void LoadTail(const T* p, int64_t n, __m512& a, __m512& b) {
    Split(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << n) - 1), p), a, b);
  }
  TPSERVE_INLINE_AVX512 static __m512 Load16(const T* p, __mmask16 m) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
};

struct F16W {
  using T = uint16_t;
  TPSERVE_INLINE_AVX512 static void Load(const T* p, __m512& a, __m512& b) {
    a = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    b = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  }
  TPSERVE_INLINE_AVX512 static void LoadTail(const T* p, int64_t n, __m512& a, __m512& b) {
    a = Load16(p, Mask16(n));
    b = Load16(p + 16, Mask16(n - 16));
  }
  TPSERVE_INLINE_AVX512 static __m512 Load16(const T* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};

struct F32W {
  using T = float;
  TPSERVE_INLINE_AVX512 static void Load(const T* p, __m512& a, __m512& b) {
    a = _mm512_loadu_ps(p);
    b = _mm512_loadu_ps(p + 16);
  }
  TPSERVE_INLINE_AVX512 static void LoadTail(const T* p, int64_t n, __m512& a, __m512& b) {
    a = Load16(p, Mask16(n));
    b = Load16(p + 16, Mask16(n - 16));
  }
  TPSERVE_INLINE_AVX512 static __m512 Load16(const T* p, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, p);
  }
};

// ---------------------------------- GEMV ----------------------------------

// With one or two tokens the even and odd halves get separate accumulators so that each
// FMA chain has a step of its own (latency 4, two FMA pipes); with more tokens there are
// enough independent chains already and registers run short.
template <int R, int NT>
TPSERVE_INLINE_AVX512 void GemvStep(const __m512 (&wa)[R], const __m512 (&wb)[R], const float* xp,
                                    int64_t xs, int64_t c, __m512 (&acc)[R][NT],
                                    __m512 (&acc2)[R][NT]) {
  TPSERVE_UNROLL
  for (int t = 0; t < NT; ++t) {
    const __m512 xa = _mm512_loadu_ps(xp + t * xs + c);
    const __m512 xb = _mm512_loadu_ps(xp + t * xs + c + 16);
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      acc[r][t] = _mm512_fmadd_ps(wa[r], xa, acc[r][t]);
      if constexpr (NT <= 2) {
        acc2[r][t] = _mm512_fmadd_ps(wb[r], xb, acc2[r][t]);
      } else {
        acc[r][t] = _mm512_fmadd_ps(wb[r], xb, acc[r][t]);
      }
    }
  }
}

// y[t * ldy + r] for R rows starting at w and NT tokens starting at xp. U column chunks
// per iteration, each with its own accumulators, give more independent FMA chains when
// R * NT is small.
template <typename P, int R, int NT, int U>
TPSERVE_TARGET_AVX512 void GemvTile(const float* xp, int64_t xs, const typename P::T* w,
                                    int64_t cols, float* y, int64_t ldy) {
  __m512 acc[U][R][NT];
  __m512 acc2[U][R][NT];
  TPSERVE_UNROLL
  for (int u = 0; u < U; ++u) {
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      TPSERVE_UNROLL
      for (int t = 0; t < NT; ++t) acc[u][r][t] = acc2[u][r][t] = _mm512_setzero_ps();
    }
  }
  const int64_t full = cols / kChunk * kChunk;
  int64_t c = 0;
  for (; c + U * kChunk <= full; c += U * kChunk) {
    TPSERVE_UNROLL
    for (int u = 0; u < U; ++u) {
      __m512 wa[R], wb[R];
      TPSERVE_UNROLL
      for (int r = 0; r < R; ++r) {
        const typename P::T* src = w + r * cols + c + u * kChunk;
        // Decode reads every weight once, straight from DRAM; asking a little ahead keeps
        // more lines in flight than the hardware prefetcher does across 4 KiB pages. A chunk
        // of F32 weights spans two cache lines: both are asked for, as far ahead in time.
        constexpr int64_t kAhead = kGemvPrefetchBytes * int64_t{sizeof(typename P::T)} / 2;
        TPSERVE_PREFETCH_AHEAD(src, kAhead, _MM_HINT_T0);
        if constexpr (sizeof(typename P::T) == 4) TPSERVE_PREFETCH_AHEAD(src, kAhead + 64, _MM_HINT_T0);
        P::Load(src, wa[r], wb[r]);
      }
      GemvStep<R, NT>(wa, wb, xp, xs, c + u * kChunk, acc[u], acc2[u]);
    }
  }
  for (; c < full; c += kChunk) {
    __m512 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) P::Load(w + r * cols + c, wa[r], wb[r]);
    GemvStep<R, NT>(wa, wb, xp, xs, c, acc[0], acc2[0]);
  }
  if (full < cols) {
    // The prepared x is zero past cols and the masked load zeroes the weights, so the
    // padding adds exact zeros (never 0 * garbage, which could be NaN).
    __m512 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) P::LoadTail(w + r * cols + full, cols - full, wa[r], wb[r]);
    GemvStep<R, NT>(wa, wb, xp, xs, full, acc[0], acc2[0]);
  }
  TPSERVE_UNROLL
  for (int r = 0; r < R; ++r) {
    TPSERVE_UNROLL
    for (int t = 0; t < NT; ++t) {
      __m512 s = acc[0][r][t];
      if constexpr (NT <= 2) s = _mm512_add_ps(s, acc2[0][r][t]);
      TPSERVE_UNROLL
      for (int u = 1; u < U; ++u) {
        s = _mm512_add_ps(s, acc[u][r][t]);
        if constexpr (NT <= 2) s = _mm512_add_ps(s, acc2[u][r][t]);
      }
      y[t * ldy + r] = _mm512_reduce_add_ps(s);
    }
  }
}

// One token reads one row at a time: a single sequential stream is what the prefetchers
// follow best, and two unrolled chunks (even and odd halves apart) give four FMA chains.
// With more tokens four rows share each load of x.
template <typename P, int NT>
TPSERVE_TARGET_AVX512 void GemvRows(const float* xp, int64_t xs, const typename P::T* w,
                                    int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if constexpr (NT == 1) {
    for (int64_t r = r0; r < r1; ++r) GemvTile<P, 1, 1, 2>(xp, xs, w + r * cols, cols, y + r, ldy);
  } else {
    int64_t r = r0;
    for (; r + kGemvRows <= r1; r += kGemvRows) {
      GemvTile<P, kGemvRows, NT, 1>(xp, xs, w + r * cols, cols, y + r, ldy);
    }
    switch (r1 - r) {
      case 3: GemvTile<P, 3, NT, 1>(xp, xs, w + r * cols, cols, y + r, ldy); break;
      case 2: GemvTile<P, 2, NT, 1>(xp, xs, w + r * cols, cols, y + r, ldy); break;
      case 1: GemvTile<P, 1, NT, 1>(xp, xs, w + r * cols, cols, y + r, ldy); break;
      default: break;
    }
  }
}

// Horizontal sums of 16 vectors at once: lane 4 * L + j of the result is the sum of the
// lanes of v[4 * j + L]. 15 adds and 30 shuffles, where 16 separate reductions take ~128 ops.
TPSERVE_INLINE_AVX512 __m512 ReduceAdd16(const __m512 (&v)[16]) {
  __m512 u[8], w[4], z[2];
  TPSERVE_UNROLL
  for (int i = 0; i < 8; ++i) {  // 256-bit halves: u[i] = [v[2i] (8 lanes), v[2i+1] (8)]
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
  }
  TPSERVE_UNROLL
  for (int i = 0; i < 4; ++i) {  // 128-bit lane L of w[i]: v[4i + L]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xdd));
  }
  TPSERVE_UNROLL
  for (int i = 0; i < 2; ++i) {  // lane L of z[i]: [v[8i+L], v[8i+4+L]] twice
    z[i] = _mm512_add_ps(_mm512_unpacklo_ps(w[2 * i], w[2 * i + 1]),
                         _mm512_unpackhi_ps(w[2 * i], w[2 * i + 1]));
  }
  return _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(z[0]), _mm512_castps_pd(z[1]))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(z[0]), _mm512_castps_pd(z[1]))));
}

// Column-blocked GEMV tile: y[t * ldy + r] (+)= the dot products over columns [c0, c1) of rows
// w + r * cols (r < kWideRows) with tokens xp + t * xs (t < kWideTokens). c0 is a multiple of
// kChunk; c1 is too unless it is cols. Stores when !accumulate (the first column block).
// With `prefetch` (the first token group over a row block, which reads the weights from
// DRAM) it asks for the same columns of the next column block of each row.
template <typename P, bool kPrefetch>
TPSERVE_TARGET_AVX512 void GemvWideTile(const float* xp, int64_t xs, const typename P::T* w,
                                        int64_t cols, int64_t c0, int64_t c1, float* y,
                                        int64_t ldy, bool accumulate) {
  constexpr int R = kWideRows, NT = kWideTokens;
  static_assert(R * NT == 16, "ReduceAdd16 takes exactly 16 accumulators");
  __m512 acc[R][NT];
  TPSERVE_UNROLL
  for (int r = 0; r < R; ++r) {
    TPSERVE_UNROLL
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const int64_t full = c0 + (c1 - c0) / kChunk * kChunk;
  for (int64_t c = c0; c < full; c += kChunk) {
    __m512 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      const typename P::T* src = w + r * cols + c;
      if constexpr (kPrefetch) {
        TPSERVE_PREFETCH_AHEAD(src, kGemvKb * int64_t{sizeof(typename P::T)}, _MM_HINT_T0);
      }
      P::Load(src, wa[r], wb[r]);
    }
    GemvStep<R, NT>(wa, wb, xp, xs, c, acc, acc);
  }
  if (full < c1) {  // zero-padded x and masked weights, as in GemvTile
    __m512 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) P::LoadTail(w + r * cols + full, c1 - full, wa[r], wb[r]);
    GemvStep<R, NT>(wa, wb, xp, xs, full, acc, acc);
  }
  // Output o = t * R + r goes in at slot 4 * (o % 4) + o / 4 (ReduceAdd16's lane order).
  __m512 in[16];
  TPSERVE_UNROLL
  for (int o = 0; o < 16; ++o) in[4 * (o % 4) + o / 4] = acc[o % R][o / R];
  alignas(64) float sums[16];
  _mm512_store_ps(sums, ReduceAdd16(in));
  TPSERVE_UNROLL
  for (int t = 0; t < NT; ++t) {
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      float& out = y[t * ldy + r];
      out = accumulate ? out + sums[t * R + r] : sums[t * R + r];
    }
  }
}

// kWideTokens tokens over rows [rb, re): column block outer, so the x slice stays in L1
// while every row pair of the block passes over it.
template <typename P, bool kPrefetch>
TPSERVE_TARGET_AVX512 void GemvWideRows(const float* xp, int64_t xs, const typename P::T* w,
                                        int64_t cols, int64_t rb, int64_t re, float* y,
                                        int64_t ldy) {
  for (int64_t c0 = 0; c0 < cols; c0 += kGemvKb) {
    const int64_t c1 = std::min(cols, c0 + kGemvKb);
    for (int64_t r = rb; r + kWideRows <= re; r += kWideRows) {
      GemvWideTile<P, kPrefetch>(xp, xs, w + r * cols, cols, c0, c1, y + r, ldy, c0 > 0);
    }
  }
  for (int64_t r = re - (re - rb) % kWideRows; r < re; ++r) {
    GemvTile<P, 1, kWideTokens, 1>(xp, xs, w + r * cols, cols, y + r, ldy);
  }
}

template <typename P>
TPSERVE_TARGET_AVX512 void Gemv(const float* xp, int64_t xs, int64_t tokens, const WeightMatrix& w,
                                int64_t r0, int64_t r1, float* y) {
  const auto* base = static_cast<const typename P::T*>(w.data);
  const int64_t ldy = w.rows;
  // Token groups run over a small block of rows before moving on, so with more than four
  // tokens the block's weights are re-read from L2, not from memory.
  const int64_t block = GemvRowBlock(w.cols, static_cast<int64_t>(sizeof(typename P::T)));
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(rb + block, r1);
    int64_t t0 = 0;
    for (; tokens >= kWideMinTokens && t0 + kWideTokens <= tokens; t0 += kWideTokens) {
      if (t0 == 0) {
        GemvWideRows<P, true>(xp, xs, base, w.cols, rb, re, y, ldy);
      } else {
        GemvWideRows<P, false>(xp + t0 * xs, xs, base, w.cols, rb, re, y + t0 * ldy, ldy);
      }
    }
    for (int64_t t = t0; t < tokens; t += kGemvTileTokens) {
      const float* xt = xp + t * xs;
      float* yt = y + t * ldy;
      switch (std::min<int64_t>(kGemvTileTokens, tokens - t)) {
        case 1: GemvRows<P, 1>(xt, xs, base, w.cols, rb, re, yt, ldy); break;
        case 2: GemvRows<P, 2>(xt, xs, base, w.cols, rb, re, yt, ldy); break;
        case 3: GemvRows<P, 3>(xt, xs, base, w.cols, rb, re, yt, ldy); break;
        default: GemvRows<P, 4>(xt, xs, base, w.cols, rb, re, yt, ldy); break;
      }
    }
  }
}

// ---------------------------------- GEMM ----------------------------------

// In-register transpose: on return r[j] holds column j of the 16x16 block whose row i was
// r[i]. 64 shuffles per 256 elements.
TPSERVE_INLINE_AVX512 void Transpose16x16(__m512 (&r)[16]) {
  __m512 t[16];
  TPSERVE_UNROLL
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + j], 128-bit lane L: rows 4i..4i+3 of column 4L + j.
  TPSERVE_UNROLL
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  TPSERVE_UNROLL
  for (int j = 0; j < 4; ++j) {
    const __m512 s0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44);
    const __m512 s1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xee);
    const __m512 s2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
    const __m512 s3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xee);
    t[j] = _mm512_shuffle_f32x4(s0, s2, 0x88);       // column j
    t[4 + j] = _mm512_shuffle_f32x4(s0, s2, 0xdd);   // column 4 + j
    t[8 + j] = _mm512_shuffle_f32x4(s1, s3, 0x88);   // column 8 + j
    t[12 + j] = _mm512_shuffle_f32x4(s1, s3, 0xdd);  // column 12 + j
  }
  TPSERVE_UNROLL
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Packs rows [0, nrows) (nrows <= 32) of w, columns [k0, k0 + kc), into panel[k][32] fp32;
// rows past nrows are zero so the micro-kernel needs no row tail.
template <typename P>
TPSERVE_TARGET_AVX512 void PackPanel(const typename P::T* w, int64_t cols, int64_t nrows,
                                     int64_t k0, int64_t kc, float* panel) {
  for (int64_t kk = 0; kk < kc; kk += 16) {
    const int64_t nk = std::min<int64_t>(16, kc - kk);
    const __mmask16 m = Mask16(nk);
    TPSERVE_UNROLL
    for (int half = 0; half < 2; ++half) {
      __m512 v[16];
      TPSERVE_UNROLL
      for (int i = 0; i < 16; ++i) {
        const int64_t row = half * 16 + i;
        if (row < nrows) {
          const typename P::T* src = w + row * cols + k0 + kk;
          // The next column chunk of the same row: 32 short row streams defeat the hardware
          // prefetcher, so the pack asks for its next chunk while it packs this one.
          TPSERVE_PREFETCH_AHEAD(src, kGemmKc * sizeof(typename P::T), _MM_HINT_T0);
          v[i] = P::Load16(src, m);
        } else {
          v[i] = _mm512_setzero_ps();
        }
      }
      Transpose16x16(v);
      float* dst = panel + kk * kNr + half * 16;
      if (nk == 16) {  // constant indices keep v[] in registers
        TPSERVE_UNROLL
        for (int j = 0; j < 16; ++j) _mm512_store_ps(dst + j * kNr, v[j]);
      } else {
        for (int64_t j = 0; j < nk; ++j) _mm512_store_ps(dst + j * kNr, v[j]);
      }
    }
  }
}

// y[t * ldy + i] (+)= sum_k panel[k][i] * xp[k][t] for t < MT, i < 32 (masked by m0/m1).
template <int MT>
TPSERVE_TARGET_AVX512 void MicroKernel(const float* wp, const float* xp, int64_t kc, float* y,
                                       int64_t ldy, __mmask16 m0, __mmask16 m1, bool accumulate) {
  __m512 c0[MT], c1[MT];
  TPSERVE_UNROLL
  for (int t = 0; t < MT; ++t) c0[t] = c1[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 w0 = _mm512_load_ps(wp + k * kNr);
    const __m512 w1 = _mm512_load_ps(wp + k * kNr + 16);
    const float* xk = xp + k * kMt;
    TPSERVE_UNROLL
    for (int t = 0; t < MT; ++t) {
      const __m512 b = _mm512_set1_ps(xk[t]);  // folds into the FMA as {1to16}
      c0[t] = _mm512_fmadd_ps(w0, b, c0[t]);
      c1[t] = _mm512_fmadd_ps(w1, b, c1[t]);
    }
  }
  TPSERVE_UNROLL
  for (int t = 0; t < MT; ++t) {
    float* yt = y + t * ldy;
    if (accumulate) {
      c0[t] = _mm512_add_ps(c0[t], _mm512_maskz_loadu_ps(m0, yt));
      c1[t] = _mm512_add_ps(c1[t], _mm512_maskz_loadu_ps(m1, yt + 16));
    }
    _mm512_mask_storeu_ps(yt, m0, c0[t]);
    _mm512_mask_storeu_ps(yt + 16, m1, c1[t]);
  }
}

using MicroFn = void (*)(const float*, const float*, int64_t, float*, int64_t, __mmask16, __mmask16,
                         bool);
template <size_t... I>
constexpr std::array<MicroFn, sizeof...(I)> MakeMicroTable(std::index_sequence<I...>) {
  return {&MicroKernel<static_cast<int>(I) + 1>...};
}
constexpr std::array<MicroFn, kMt> kMicro = MakeMicroTable(std::make_index_sequence<kMt>());

template <typename P>
TPSERVE_TARGET_AVX512 void Gemm(const float* xpack, const WeightMatrix& w, int64_t r0, int64_t r1,
                                int64_t t0, int64_t t1, float* y, float* panel) {
  const auto* base = static_cast<const typename P::T*>(w.data);
  const int64_t cols = w.cols;
  const int64_t ldy = w.rows;
  const int64_t npanels = (r1 - r0 + kNr - 1) / kNr;
  for (int64_t k0 = 0; k0 < cols; k0 += kGemmKc) {
    const int64_t kc = std::min(kGemmKc, cols - k0);
    for (int64_t p = 0; p < npanels; ++p) {
      const int64_t rp = r0 + p * kNr;
      PackPanel<P>(base + rp * cols, cols, std::min(kNr, r1 - rp), k0, kc, panel + p * kc * kNr);
    }
    // Token tile outer, row panel inner: the 12-token slice of x (12 KiB) stays in L1 while
    // the weight panels (<= 128 KiB) stream from L2.
    for (int64_t t = t0; t < t1; t += kMt) {
      const MicroFn micro = kMicro[std::min<int64_t>(kMt, t1 - t) - 1];
      const float* xt = xpack + ((t / kMt) * cols + k0) * kMt;
      for (int64_t p = 0; p < npanels; ++p) {
        const int64_t rp = r0 + p * kNr;
        const int64_t nr = std::min(kNr, r1 - rp);
        micro(panel + p * kc * kNr, xt, kc, y + t * ldy + rp, ldy, Mask16(nr), Mask16(nr - 16),
              k0 > 0);
      }
    }
  }
}

TPSERVE_TARGET_AVX512 void GemvAny(const float* xp, int64_t xs, int64_t tokens,
                                   const WeightMatrix& w, int64_t r0, int64_t r1, float* y) {
  switch (w.dtype) {
    case DType::kBF16: Gemv<Bf16W>(xp, xs, tokens, w, r0, r1, y); return;
    case DType::kF16: Gemv<F16W>(xp, xs, tokens, w, r0, r1, y); return;
    default: Gemv<F32W>(xp, xs, tokens, w, r0, r1, y); return;
  }
}

TPSERVE_TARGET_AVX512 void GemmAny(const float* xpack, const WeightMatrix& w, int64_t r0,
                                   int64_t r1, int64_t t0, int64_t t1, float* y, float* panel) {
  switch (w.dtype) {
    case DType::kBF16: Gemm<Bf16W>(xpack, w, r0, r1, t0, t1, y, panel); return;
    case DType::kF16: Gemm<F16W>(xpack, w, r0, r1, t0, t1, y, panel); return;
    default: Gemm<F32W>(xpack, w, r0, r1, t0, t1, y, panel); return;
  }
}

}  // namespace

const MatMulIsaKernels& Avx512MatMulKernels() {
  static constexpr MatMulIsaKernels kKernels{
      .gemv_chunk = kChunk,
      .gemv_split_bf16 = true,
      .gemv = &GemvAny,
      .gemm_tokens = kMt,
      .gemm = &GemmAny,
  };
  return kKernels;
}

}  // namespace tpserve::kernels::cpu
