// AttendTile (attention_tiles.h). Reference: ref::PagedAttention; compared by the prefill
// cases of tests/kernels/ops_test.cc at every instruction set.
#include "kernels/cpu/attention_tiles.h"

#include <algorithm>
#include <limits>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/vec_math.h"

namespace tpserve::kernels::cpu {
namespace {

constexpr int64_t kKeys = 64;   // keys per block: one query's scores fill 4 AVX-512 registers
constexpr int64_t kChunk = 64;  // head_dim columns accumulated in registers at a time
constexpr int64_t kRows = kQueryTile + 1;  // + a scratch partner for an odd last query

// out_a[j] = sum_d qa[d] * kt[d][j], and out_b for qb: with K transposed ([dim][kKeys]) the
// sum runs along the keys, so there is no horizontal reduction, and each K load serves two
// queries.
TPSERVE_ALWAYS_INLINE void ScoreRows(const float* qa, const float* qb, const float* kt,
                                     int64_t dim, float* out_a, float* out_b) {
  float sa[kKeys] = {};
  float sb[kKeys] = {};
  for (int64_t d = 0; d < dim; ++d) {
    const float* k = kt + d * kKeys;
    const float xa = qa[d], xb = qb[d];
#pragma omp simd
    for (int64_t j = 0; j < kKeys; ++j) {
      sa[j] += xa * k[j];
      sb[j] += xb * k[j];
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < kKeys; ++j) {
    out_a[j] = sa[j];
    out_b[j] = sb[j];
  }
}

// acc_a[off + i] += sum_j pa[j] * v_j[off + i] for i < kWidth (and acc_b with pb): each V
// row is loaded once for both queries while the two accumulators stay in registers.
template <int64_t kWidth>
TPSERVE_ALWAYS_INLINE void AccumulateChunk(const float* pa, const float* pb,
                                           const float* const* vrows, int64_t nb, int64_t off,
                                           float* acc_a, float* acc_b) {
  float ra[kWidth], rb[kWidth];
#pragma omp simd
  for (int64_t i = 0; i < kWidth; ++i) {
    ra[i] = acc_a[off + i];
    rb[i] = acc_b[off + i];
  }
  for (int64_t j = 0; j < nb; ++j) {
    const float* v = vrows[j] + off;
    const float wa = pa[j], wb = pb[j];
#pragma omp simd
    for (int64_t i = 0; i < kWidth; ++i) {
      ra[i] += wa * v[i];
      rb[i] += wb * v[i];
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < kWidth; ++i) {
    acc_a[off + i] = ra[i];
    acc_b[off + i] = rb[i];
  }
}

// The same for the last `width` (< kChunk) columns of an odd head_dim, in memory.
TPSERVE_ALWAYS_INLINE void AccumulateTail(const float* pa, const float* pb,
                                          const float* const* vrows, int64_t nb, int64_t off,
                                          int64_t width, float* acc_a, float* acc_b) {
  for (int64_t j = 0; j < nb; ++j) {
    const float* v = vrows[j] + off;
    const float wa = pa[j], wb = pb[j];
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) {
      acc_a[off + i] += wa * v[i];
      acc_b[off + i] += wb * v[i];
    }
  }
}

TPSERVE_ALWAYS_INLINE void TileBody(const AttentionParams& p, const QueryTile& tile,
                                    float* scratch) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const KvCacheView& cache = p.cache;
  const int64_t heads = p.q_heads, dim = cache.head_dim, bs = cache.block_size;
  const int64_t row_stride = cache.kv_heads * dim;
  const int64_t nt = tile.count;
  const int64_t first_pos = tile.seq->start_pos + tile.first;
  const int64_t window = p.sliding_window;
  // Keys any query of the tile sees: HF/Mistral's pos - window < key <= pos.
  const int64_t lo = window > 0 ? std::max<int64_t>(0, first_pos - window + 1) : 0;
  const int64_t hi = first_pos + nt;
  const int64_t row0 = tile.seq->token_begin + tile.first;
  const int32_t* blocks = tile.seq->block_table;

  float* kt = scratch;                       // [dim][kKeys]: the block's K, transposed
  float* scores = kt + dim * kKeys;          // [kRows][kKeys]
  float* acc = scores + kRows * kKeys;       // [kRows][dim], unnormalised outputs
  float* run_max = acc + kRows * dim;        // [kQueryTile]
  float* run_sum = run_max + kQueryTile;     // [kQueryTile]
  const float* vrows[kKeys];

  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = p.kv_head_of_q[h];
    std::fill(acc, acc + kRows * dim, 0.0f);
    std::fill(run_max, run_max + kQueryTile, kNegInf);
    std::fill(run_sum, run_sum + kQueryTile, 0.0f);
    for (int64_t b0 = lo; b0 < hi; b0 += kKeys) {
      const int64_t nb = std::min(kKeys, hi - b0);
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t key = b0 + j;
        const int64_t slot = static_cast<int64_t>(blocks[key / bs]) * bs + key % bs;
        const float* k = cache.k + slot * row_stride + g * dim;
        for (int64_t d = 0; d < dim; ++d) kt[d * kKeys + j] = k[d];
        vrows[j] = cache.v + slot * row_stride + g * dim;
      }
      for (int64_t j = nb; j < kKeys; ++j) {
        for (int64_t d = 0; d < dim; ++d) kt[d * kKeys + j] = 0.0f;
      }
      for (int64_t t = 0; t < nt; t += 2) {
        const float* qa = p.q + ((row0 + t) * heads + h) * dim;
        const float* qb = t + 1 < nt ? qa + heads * dim : qa;
        ScoreRows(qa, qb, kt, dim, scores + t * kKeys, scores + (t + 1) * kKeys);
      }
      // Scale, mask and fold the block into each query's running max and sum.
      for (int64_t t = 0; t < nt; ++t) {
        float* s = scores + t * kKeys;
        const int64_t pos = first_pos + t;
        const int64_t key_lo = window > 0 ? pos - window + 1 : 0;
        float mx = kNegInf;
        for (int64_t j = 0; j < kKeys; ++j) {
          const int64_t key = b0 + j;
          const bool visible = j < nb && key <= pos && key >= key_lo;
          s[j] = visible ? s[j] * p.scale : kNegInf;
          mx = s[j] > mx ? s[j] : mx;  // NaN skipped here, and poisons the sum below
        }
        const float m_new = run_max[t] > mx ? run_max[t] : mx;
        if (m_new == kNegInf) {  // no key of this block or before is visible to this query
          std::fill(s, s + kKeys, 0.0f);
          continue;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < kKeys; ++j) {
          const float e = FastExp(s[j] - m_new);  // masked: e^-inf = 0
          s[j] = e;
          sum += e;
        }
        const float alpha = FastExp(run_max[t] - m_new);  // 0 on the first visible block
        run_sum[t] = run_sum[t] * alpha + sum;
        run_max[t] = m_new;
        if (alpha != 1.0f) {
          float* a = acc + t * dim;
#pragma omp simd
          for (int64_t d = 0; d < dim; ++d) a[d] *= alpha;
        }
      }
      for (int64_t t = 0; t < nt; t += 2) {
        const float* pa = scores + t * kKeys;
        const float* pb = scores + (t + 1) * kKeys;
        float* acc_a = acc + t * dim;
        float* acc_b = acc + (t + 1) * dim;  // row nt (scratch) when nt is odd
        int64_t off = 0;
        for (; off + kChunk <= dim; off += kChunk) {
          AccumulateChunk<kChunk>(pa, pb, vrows, nb, off, acc_a, acc_b);
        }
        if (off < dim) AccumulateTail(pa, pb, vrows, nb, off, dim - off, acc_a, acc_b);
      }
    }
    for (int64_t t = 0; t < nt; ++t) {
      const float inv = 1.0f / run_sum[t];
      float* out = p.out + ((row0 + t) * heads + h) * dim;
      const float* a = acc + t * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) out[d] = a[d] * inv;
    }
  }
}

void TileScalar(const AttentionParams& p, const QueryTile& t, float* s) { TileBody(p, t, s); }
TPSERVE_TARGET_AVX2 void TileAvx2(const AttentionParams& p, const QueryTile& t, float* s) {
  TileBody(p, t, s);
}
TPSERVE_TARGET_AVX512 void TileAvx512(const AttentionParams& p, const QueryTile& t, float* s) {
  TileBody(p, t, s);
}

}  // namespace

int64_t TileScratchFloats(const AttentionParams& p) {
  const int64_t dim = p.cache.head_dim;
  return dim * kKeys + kRows * kKeys + kRows * dim + 2 * kQueryTile;
}

void AttendTile(const AttentionParams& p, const QueryTile& tile, float* scratch) {
  switch (ActiveIsa()) {
    case Isa::kAvx512:
      TileAvx512(p, tile, scratch);
      return;
    case Isa::kAvx2:
      TileAvx2(p, tile, scratch);
      return;
    default:
      TileScalar(p, tile, scratch);
  }
}

}  // namespace tpserve::kernels::cpu
