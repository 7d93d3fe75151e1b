// AVX2 + FMA + F16C MatMul kernels (F32, F16 and BF16 weights, fp32 accumulation), the same
// two shapes as matmul_avx512.cc at half the width and with 16 ymm registers:
//  - GEMV: 4 weight rows x up to 2 tokens per tile, 16 columns per step.
//  - GEMM: weights widened and transposed into a [k][16 rows] fp32 panel, then a 16-row x
//    6-token register tile (12 ymm accumulators).
// Reached only through Avx2MatMulKernels() once cpu_features.cc found AVX2, FMA and F16C.
// Checked against ref::MatMul by tests/kernels/ops_test.cc (which forces this level).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"

namespace tpserve::kernels::cpu {
namespace {

constexpr int64_t kChunk = 16;  // GEMV columns per step (one ymm of BF16 pairs)
constexpr int kGemvRows = 4;
constexpr int kGemvTileTokens = 2;  // 16 registers: 8 accumulators + weights + x
constexpr int64_t kNr = 16;         // GEMM rows per register tile (two ymm)
constexpr int kMt = 6;              // GEMM tokens per register tile

// AVX2 has no masked 16-bit loads; tails are copied into a zeroed local chunk instead.
template <typename T>
struct TailBuf {
  alignas(32) T v[kChunk] = {};
};

struct Bf16W {
  using T = uint16_t;
  TPSERVE_INLINE_AVX2 static void Load(const T* p, __m256& a, __m256& b) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    a = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));  // even elements
    b = _mm256_castsi256_ps(
        _mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  TPSERVE_INLINE_AVX2 static __m256 Load8(const T* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
};

struct F16W {
  using T = uint16_t;
  TPSERVE_INLINE_AVX2 static void Load(const T* p, __m256& a, __m256& b) {
    a = Load8(p);
    b = Load8(p + 8);
  }
  TPSERVE_INLINE_AVX2 static __m256 Load8(const T* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

struct F32W {
  using T = float;
  TPSERVE_INLINE_AVX2 static void Load(const T* p, __m256& a, __m256& b) {
    a = _mm256_loadu_ps(p);
    b = _mm256_loadu_ps(p + 8);
  }
  TPSERVE_INLINE_AVX2 static __m256 Load8(const T* p) { return _mm256_loadu_ps(p); }
};

TPSERVE_INLINE_AVX2 float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---------------------------------- GEMV ----------------------------------

template <int R, int NT>
TPSERVE_INLINE_AVX2 void GemvStep(const __m256 (&wa)[R], const __m256 (&wb)[R], const float* xp,
                                  int64_t xs, int64_t c, __m256 (&acc)[R][NT],
                                  __m256 (&acc2)[R][NT]) {
  TPSERVE_UNROLL
  for (int t = 0; t < NT; ++t) {
    const __m256 xa = _mm256_loadu_ps(xp + t * xs + c);
    const __m256 xb = _mm256_loadu_ps(xp + t * xs + c + 8);
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      acc[r][t] = _mm256_fmadd_ps(wa[r], xa, acc[r][t]);
      if constexpr (NT == 1) {
        acc2[r][t] = _mm256_fmadd_ps(wb[r], xb, acc2[r][t]);
      } else {
        acc[r][t] = _mm256_fmadd_ps(wb[r], xb, acc[r][t]);
      }
    }
  }
}

template <typename P, int R, int NT>
TPSERVE_TARGET_AVX2 void GemvTile(const float* xp, int64_t xs, const typename P::T* w, int64_t cols,
                                  float* y, int64_t ldy) {
  __m256 acc[R][NT];
  __m256 acc2[R][NT];
  TPSERVE_UNROLL
  for (int r = 0; r < R; ++r) {
    TPSERVE_UNROLL
    for (int t = 0; t < NT; ++t) acc[r][t] = acc2[r][t] = _mm256_setzero_ps();
  }
  const int64_t full = cols / kChunk * kChunk;
  for (int64_t c = 0; c < full; c += kChunk) {
    __m256 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) P::Load(w + r * cols + c, wa[r], wb[r]);
    GemvStep<R, NT>(wa, wb, xp, xs, c, acc, acc2);
  }
  if (full < cols) {
    __m256 wa[R], wb[R];
    TPSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      TailBuf<typename P::T> tail;
      std::memcpy(tail.v, w + r * cols + full, (cols - full) * sizeof(typename P::T));
      P::Load(tail.v, wa[r], wb[r]);
    }
    GemvStep<R, NT>(wa, wb, xp, xs, full, acc, acc2);
  }
  TPSERVE_UNROLL
  for (int r = 0; r < R; ++r) {
    TPSERVE_UNROLL
    for (int t = 0; t < NT; ++t) {
      __m256 s = acc[r][t];
      if constexpr (NT == 1) s = _mm256_add_ps(s, acc2[r][t]);
      y[t * ldy + r] = HorizontalSum(s);
    }
  }
}

template <typename P, int NT>
TPSERVE_TARGET_AVX2 void GemvRows(const float* xp, int64_t xs, const typename P::T* w, int64_t cols,
                                  int64_t r0, int64_t r1, float* y, int64_t ldy) {
  int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) {
    GemvTile<P, kGemvRows, NT>(xp, xs, w + r * cols, cols, y + r, ldy);
  }
  switch (r1 - r) {
    case 3: GemvTile<P, 3, NT>(xp, xs, w + r * cols, cols, y + r, ldy); break;
    case 2: GemvTile<P, 2, NT>(xp, xs, w + r * cols, cols, y + r, ldy); break;
    case 1: GemvTile<P, 1, NT>(xp, xs, w + r * cols, cols, y + r, ldy); break;
    default: break;
  }
}

template <typename P>
TPSERVE_TARGET_AVX2 void Gemv(const float* xp, int64_t xs, int64_t tokens, const WeightMatrix& w,
                              int64_t r0, int64_t r1, float* y) {
  const auto* base = static_cast<const typename P::T*>(w.data);
  const int64_t ldy = w.rows;
  const int64_t block = GemvRowBlock(w.cols, static_cast<int64_t>(sizeof(typename P::T)));
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(rb + block, r1);
    for (int64_t t = 0; t < tokens; t += kGemvTileTokens) {
      if (tokens - t == 1) {
        GemvRows<P, 1>(xp + t * xs, xs, base, w.cols, rb, re, y + t * ldy, ldy);
      } else {
        GemvRows<P, 2>(xp + t * xs, xs, base, w.cols, rb, re, y + t * ldy, ldy);
      }
    }
  }
}

// ---------------------------------- GEMM ----------------------------------

TPSERVE_INLINE_AVX2 void Transpose8x8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  TPSERVE_UNROLL
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  TPSERVE_UNROLL
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  TPSERVE_UNROLL
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
    r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
  }
}

// Packs rows [0, nrows) (nrows <= 16) of w, columns [k0, k0 + kc), into panel[k][16].
template <typename P>
TPSERVE_TARGET_AVX2 void PackPanel(const typename P::T* w, int64_t cols, int64_t nrows, int64_t k0,
                                   int64_t kc, float* panel) {
  using T = typename P::T;
  for (int64_t kk = 0; kk < kc; kk += 8) {
    const int64_t nk = std::min<int64_t>(8, kc - kk);
    TPSERVE_UNROLL
    for (int half = 0; half < 2; ++half) {
      __m256 v[8];
      TPSERVE_UNROLL
      for (int i = 0; i < 8; ++i) {
        const int64_t row = half * 8 + i;
        if (row >= nrows) {
          v[i] = _mm256_setzero_ps();
        } else if (nk == 8) {
          v[i] = P::Load8(w + row * cols + k0 + kk);
        } else {
          TailBuf<T> tail;
          std::memcpy(tail.v, w + row * cols + k0 + kk, nk * sizeof(T));
          v[i] = P::Load8(tail.v);
        }
      }
      Transpose8x8(v);
      float* dst = panel + kk * kNr + half * 8;
      if (nk == 8) {  // constant indices keep v[] in registers
        TPSERVE_UNROLL
        for (int j = 0; j < 8; ++j) _mm256_store_ps(dst + j * kNr, v[j]);
      } else {
        for (int64_t j = 0; j < nk; ++j) _mm256_store_ps(dst + j * kNr, v[j]);
      }
    }
  }
}

TPSERVE_INLINE_AVX2 __m256i RowMask(int64_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                            iota);
}

template <int MT>
TPSERVE_TARGET_AVX2 void MicroKernel(const float* wp, const float* xp, int64_t kc, float* y,
                                     int64_t ldy, int64_t nr, bool accumulate) {
  __m256 c0[MT], c1[MT];
  TPSERVE_UNROLL
  for (int t = 0; t < MT; ++t) c0[t] = c1[t] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_load_ps(wp + k * kNr);
    const __m256 w1 = _mm256_load_ps(wp + k * kNr + 8);
    const float* xk = xp + k * kMt;
    TPSERVE_UNROLL
    for (int t = 0; t < MT; ++t) {
      const __m256 b = _mm256_broadcast_ss(xk + t);
      c0[t] = _mm256_fmadd_ps(w0, b, c0[t]);
      c1[t] = _mm256_fmadd_ps(w1, b, c1[t]);
    }
  }
  const __m256i m0 = RowMask(nr), m1 = RowMask(nr - 8);
  TPSERVE_UNROLL
  for (int t = 0; t < MT; ++t) {
    float* yt = y + t * ldy;
    if (accumulate) {
      c0[t] = _mm256_add_ps(c0[t], _mm256_maskload_ps(yt, m0));
      c1[t] = _mm256_add_ps(c1[t], _mm256_maskload_ps(yt + 8, m1));
    }
    _mm256_maskstore_ps(yt, m0, c0[t]);
    _mm256_maskstore_ps(yt + 8, m1, c1[t]);
  }
}

using MicroFn = void (*)(const float*, const float*, int64_t, float*, int64_t, int64_t, bool);
template <size_t... I>
constexpr std::array<MicroFn, sizeof...(I)> MakeMicroTable(std::index_sequence<I...>) {
  return {&MicroKernel<static_cast<int>(I) + 1>...};
}
constexpr std::array<MicroFn, kMt> kMicro = MakeMicroTable(std::make_index_sequence<kMt>());

template <typename P>
TPSERVE_TARGET_AVX2 void Gemm(const float* xpack, const WeightMatrix& w, int64_t r0, int64_t r1,
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
    for (int64_t t = t0; t < t1; t += kMt) {
      const MicroFn micro = kMicro[std::min<int64_t>(kMt, t1 - t) - 1];
      const float* xt = xpack + ((t / kMt) * cols + k0) * kMt;
      for (int64_t p = 0; p < npanels; ++p) {
        const int64_t rp = r0 + p * kNr;
        micro(panel + p * kc * kNr, xt, kc, y + t * ldy + rp, ldy, r1 - rp, k0 > 0);
      }
    }
  }
}

TPSERVE_TARGET_AVX2 void GemvAny(const float* xp, int64_t xs, int64_t tokens, const WeightMatrix& w,
                                 int64_t r0, int64_t r1, float* y) {
  switch (w.dtype) {
    case DType::kBF16: Gemv<Bf16W>(xp, xs, tokens, w, r0, r1, y); return;
    case DType::kF16: Gemv<F16W>(xp, xs, tokens, w, r0, r1, y); return;
    default: Gemv<F32W>(xp, xs, tokens, w, r0, r1, y); return;
  }
}

TPSERVE_TARGET_AVX2 void GemmAny(const float* xpack, const WeightMatrix& w, int64_t r0, int64_t r1,
                                 int64_t t0, int64_t t1, float* y, float* panel) {
  switch (w.dtype) {
    case DType::kBF16: Gemm<Bf16W>(xpack, w, r0, r1, t0, t1, y, panel); return;
    case DType::kF16: Gemm<F16W>(xpack, w, r0, r1, t0, t1, y, panel); return;
    default: Gemm<F32W>(xpack, w, r0, r1, t0, t1, y, panel); return;
  }
}

}  // namespace

const MatMulIsaKernels& Avx2MatMulKernels() {
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
