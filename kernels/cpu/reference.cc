// Plain references of every op in kernels/ops.h (namespace ref): single-threaded, written
// to be checked by eye against the contracts and against Hugging Face, never for speed.
// MatMul, RmsNorm and PagedAttention accumulate in double so that the fast fp32 versions
// are compared against something more exact than themselves; RoPE and SwiGlu follow HF's
// fp32 steps exactly (this file is built with -ffp-contract=off). Used by
// tests/kernels/ops_test.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/dtype.h"
#include "kernels/ops.h"

namespace tpserve::kernels::ref {
namespace {

// Element (r, c) of w widened to fp32.
float WeightAt(const WeightMatrix& w, int64_t r, int64_t c) {
  const int64_t i = r * w.cols + c;
  switch (w.dtype) {
    case DType::kF32: return static_cast<const float*>(w.data)[i];
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    default: return std::nan("");  // not a weight dtype: make the misuse visible
  }
}

// Offset in floats of (position `pos`, head `head`) of a sequence in a cache.
int64_t CacheOffset(const KvCacheView& cache, const int32_t* block_table, int64_t pos,
                    int64_t head) {
  const int64_t block = block_table[pos / cache.block_size];
  const int64_t slot = block * cache.block_size + pos % cache.block_size;
  return (slot * cache.kv_heads + head) * cache.head_dim;
}

}  // namespace

void MatMul(const float* x, int64_t tokens, const WeightMatrix& w, float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) {
        sum += static_cast<double>(x[t * w.cols + c]) * static_cast<double>(WeightAt(w, r, c));
      }
      y[t * w.rows + r] = static_cast<float>(sum);
    }
  }
}

void Embedding(const int32_t* ids, int64_t tokens, const WeightMatrix& table, float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < table.cols; ++c) y[t * table.cols + c] = WeightAt(table, ids[t], c);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t tokens, int64_t dim, float eps,
             float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * dim;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xt[i]) * xt[i];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      y[t * dim + i] = static_cast<float>(xt[i] * inv_rms * weight[i]);
    }
  }
}

void AddRmsNorm(float* x, const float* r, const float* weight, int64_t tokens, int64_t dim,
                float eps, float* y) {
  for (int64_t i = 0; i < tokens * dim; ++i) x[i] += r[i];
  RmsNorm(x, weight, tokens, dim, eps, y);
}

void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
               const RopeTable& table) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = positions[t] * table.half_dim;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float cos = table.cos[row + i], sin = table.sin[row + i];
        // HF: q * cos + rotate_half(q) * sin with rotate_half(q) = cat(-q2, q1).
        const float a = v[i], b = v[i + half];
        v[i] = a * cos + (-b) * sin;
        v[i + half] = b * cos + a * sin;
      }
    }
  }
}

void SwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < inter; ++i) {
      const float gate = gate_up[t * 2 * inter + i];
      const float up = gate_up[t * 2 * inter + inter + i];
      const float silu = gate / (1.0f + std::exp(-gate));  // torch's silu
      out[t * inter + i] = silu * up;
    }
  }
}

void WriteKvCache(const float* k, const float* v, int64_t tokens, const int64_t* slots,
                  const KvCacheView& cache) {
  const int64_t row = cache.kv_heads * cache.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < row; ++i) {
      cache.k[slots[t] * row + i] = k[t * row + i];
      cache.v[slots[t] * row + i] = v[t * row + i];
    }
  }
}

void PagedAttention(const AttentionParams& p) {
  const int64_t dim = p.cache.head_dim;
  std::vector<double> scores;
  std::vector<double> acc(static_cast<size_t>(dim));
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const AttentionSeq& seq = p.seqs[s];
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t pos = seq.start_pos + i;
      const int64_t row = seq.token_begin + i;
      // Keys j with pos - window < j <= pos (and j >= 0), or all j <= pos without a window.
      const int64_t first =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      for (int64_t h = 0; h < p.q_heads; ++h) {
        const int64_t kv = p.kv_head_of_q[h];
        const float* q = p.q + (row * p.q_heads + h) * dim;
        scores.assign(static_cast<size_t>(pos - first + 1), 0.0);
        double max_score = -INFINITY;
        for (int64_t j = first; j <= pos; ++j) {
          const float* k = p.cache.k + CacheOffset(p.cache, seq.block_table, j, kv);
          double dot = 0.0;
          for (int64_t d = 0; d < dim; ++d) dot += static_cast<double>(q[d]) * k[d];
          const double score = dot * p.scale;
          scores[static_cast<size_t>(j - first)] = score;
          max_score = std::max(max_score, score);
        }
        double sum = 0.0;
        for (double& sc : scores) {
          sc = std::exp(sc - max_score);
          sum += sc;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = first; j <= pos; ++j) {
          const double prob = scores[static_cast<size_t>(j - first)] / sum;
          const float* v = p.cache.v + CacheOffset(p.cache, seq.block_table, j, kv);
          for (int64_t d = 0; d < dim; ++d) acc[static_cast<size_t>(d)] += prob * v[d];
        }
        float* out = p.out + (row * p.q_heads + h) * dim;
        for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<float>(acc[static_cast<size_t>(d)]);
      }
    }
  }
}

}  // namespace tpserve::kernels::ref
