// Fast paged-KV-cache ops: WriteKvCache (parallel row copies) and PagedAttention.
//
// PagedAttention works position-major: an item is one query token and a contiguous range of
// its visible keys, for all query heads at once. The cache stores a position's K (and V) for
// every KV head contiguously ([block, pos, kv_head, head_dim]), so an item streams whole
// rows that the hardware prefetcher follows; per-head items would read head_dim floats out
// of every kv_heads * head_dim, a page-sized stride that caps bandwidth at less than half.
// Keys go in blocks of kKeyBlock with an online softmax in fp32 (running max, running sum,
// accumulator rescaled once per block). When there are too few query tokens to occupy the
// threads (decode of a few sequences), each token's keys are split across several items and
// their partial results are merged at the end (flash-decoding), with the same max-shifted
// arithmetic. The body is plain C++ instantiated per instruction set, so the compiler
// vectorises it at that width. Sequences with several new tokens (prefill) go through query
// tiles instead (attention_tiles.h).
// Reference: ref::PagedAttention in reference.cc; compared in tests/kernels/ops_test.cc.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {

constexpr int64_t kKeyBlock = 64;       // keys per online-softmax step
constexpr int64_t kMinSplitKeys = 256;  // fewest keys worth a split of their own

// One query token and a range of its keys.
struct Item {
  const AttentionSeq* seq;
  int64_t row;                 // row of the token in q / out
  int64_t key_begin, key_end;  // absolute positions [key_begin, key_end)
  int64_t partial;             // slot in the partials buffer, or -1: write `out` directly
};

// a[i] += sum_j w[j] * rows[j][off + i] for i < kWidth: kWidth / 16 independent FMA chains
// per key hide the FMA latency while the block's rows come from L1/L2.
template <int kWidth>
TPSERVE_ALWAYS_INLINE void AccumulateRows(const float* w, const float* const* rows, int64_t nb,
                                          int64_t off, float* a) {
  float r[kWidth];
#pragma omp simd
  for (int i = 0; i < kWidth; ++i) r[i] = a[i];
  for (int64_t j = 0; j < nb; ++j) {
    const float* v = rows[j] + off;
    const float wj = w[j];
#pragma omp simd
    for (int i = 0; i < kWidth; ++i) r[i] += wj * v[i];
  }
#pragma omp simd
  for (int i = 0; i < kWidth; ++i) a[i] = r[i];
}

// Scratch per thread, in floats.
int64_t ScratchFloats(int64_t q_heads, int64_t dim) { return q_heads * (kKeyBlock + dim + 2); }

// Runs one item. Partial results are (acc[h][dim] unnormalised, max[h], sum[h]).
TPSERVE_ALWAYS_INLINE void AttendBody(const AttentionParams& p, const Item& item, float* scratch,
                                      float* partials) {
  const KvCacheView& cache = p.cache;
  const int64_t heads = p.q_heads, dim = cache.head_dim, bs = cache.block_size;
  const int64_t row_stride = cache.kv_heads * dim;
  float* scores = scratch;                  // [heads][kKeyBlock]
  float* acc = scores + heads * kKeyBlock;  // [heads][dim]
  float* run_max = acc + heads * dim;       // [heads]
  float* run_sum = run_max + heads;         // [heads]
  std::fill(acc, acc + heads * dim, 0.0f);
  std::fill(run_max, run_max + heads, -std::numeric_limits<float>::infinity());
  std::fill(run_sum, run_sum + heads, 0.0f);
  const int32_t* blocks = item.seq->block_table;
  const float* q_row = p.q + item.row * heads * dim;
  const float* krows[kKeyBlock];
  const float* vrows[kKeyBlock];

  for (int64_t b0 = item.key_begin; b0 < item.key_end; b0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, item.key_end - b0);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t key = b0 + j;
      const int64_t slot = static_cast<int64_t>(blocks[key / bs]) * bs + key % bs;
      krows[j] = cache.k + slot * row_stride;
      vrows[j] = cache.v + slot * row_stride;
    }
    // Scores, key-major: each K row (all KV heads) is read once from memory.
    for (int64_t j = 0; j < nb; ++j) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* q = q_row + h * dim;
        const float* k = krows[j] + p.kv_head_of_q[h] * dim;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < dim; ++d) s += q[d] * k[d];
        scores[h * kKeyBlock + j] = s * p.scale;
      }
    }
    // Online softmax: fold this block into the running max and sum.
    for (int64_t h = 0; h < heads; ++h) {
      float* s = scores + h * kKeyBlock;
      float m = run_max[h];
      for (int64_t j = 0; j < nb; ++j) m = s[j] > m ? s[j] : m;  // NaN skipped here, and
      float sum = 0.0f;                                          // poisons sum below
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < nb; ++j) {
        const float e = cpu::FastExp(s[j] - m);
        s[j] = e;
        sum += e;
      }
      const float alpha = cpu::FastExp(run_max[h] - m);  // 0 on the first block
      run_sum[h] = run_sum[h] * alpha + sum;
      run_max[h] = m;
      if (alpha != 1.0f) {
        float* a = acc + h * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) a[d] *= alpha;
      }
    }
    // acc[h] += e[h][j] * v_j[kv(h)], key-major like the scores so that every V row is read
    // front to back once; acc (heads * head_dim floats) stays in L1.
    for (int64_t j = 0; j < nb; ++j) {
      for (int64_t h = 0; h < heads; ++h) {
        const float w = scores[h * kKeyBlock + j];
        const float* v = vrows[j] + p.kv_head_of_q[h] * dim;
        float* a = acc + h * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) a[d] += w * v[d];
      }
    }
  }

  if (item.partial < 0) {
    float* out = p.out + item.row * heads * dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float inv = 1.0f / run_sum[h];
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) out[h * dim + d] = acc[h * dim + d] * inv;
    }
  } else {
    float* dst = partials + item.partial * heads * (dim + 2);
    std::memcpy(dst, acc, sizeof(float) * static_cast<size_t>(heads * (dim + 2)));
  }
}

using AttendFn = void (*)(const AttentionParams&, const Item&, float*, float*);
void AttendScalar(const AttentionParams& p, const Item& i, float* s, float* partials) {
  AttendBody(p, i, s, partials);
}
TPSERVE_TARGET_AVX2 void AttendAvx2(const AttentionParams& p, const Item& i, float* s,
                                    float* partials) {
  AttendBody(p, i, s, partials);
}
TPSERVE_TARGET_AVX512 void AttendAvx512(const AttentionParams& p, const Item& i, float* s,
                                        float* partials) {
  AttendBody(p, i, s, partials);
}

// Merges `count` partial results of one token into out[heads][dim].
void MergePartials(const float* parts, int64_t count, int64_t heads, int64_t dim, float* out) {
  const int64_t part_size = heads * (dim + 2);
  for (int64_t h = 0; h < heads; ++h) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < count; ++c) {
      const float mc = parts[c * part_size + heads * dim + h];
      m = mc > m ? mc : m;
    }
    float* o = out + h * dim;
    std::fill(o, o + dim, 0.0f);
    float sum = 0.0f;
    for (int64_t c = 0; c < count; ++c) {
      const float* part = parts + c * part_size;
      const float scale = cpu::FastExp(part[heads * dim + h] - m);
      sum += part[heads * dim + heads + h] * scale;
      for (int64_t d = 0; d < dim; ++d) o[d] += part[h * dim + d] * scale;
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < dim; ++d) o[d] *= inv;
  }
}

}  // namespace

void WriteKvCache(const float* k, const float* v, int64_t tokens, const int64_t* slots,
                  const KvCacheView& cache) {
  const int64_t row = cache.kv_heads * cache.head_dim;
  const size_t bytes = sizeof(float) * static_cast<size_t>(row);
#pragma omp parallel for schedule(static) if (tokens * row >= (int64_t{1} << 16))
  for (int64_t t = 0; t < tokens; ++t) {
    std::memcpy(cache.k + slots[t] * row, k + t * row, bytes);
    std::memcpy(cache.v + slots[t] * row, v + t * row, bytes);
  }
}

void PagedAttention(const AttentionParams& p) {
  const int64_t heads = p.q_heads, dim = p.cache.head_dim;
  if (heads <= 0) return;
  const int threads = omp_get_max_threads();
  int64_t num_rows = 0, total_keys = 0;
  std::vector<cpu::QueryTile> tiles;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const AttentionSeq& seq = p.seqs[s];
    if (seq.num_tokens < cpu::kMinTileTokens) {
      num_rows += seq.num_tokens;
      continue;
    }
    // Last tiles first: they see the most keys, and dynamic scheduling then balances.
    for (int64_t first = (seq.num_tokens - 1) / cpu::kQueryTile * cpu::kQueryTile; first >= 0;
         first -= cpu::kQueryTile) {
      tiles.push_back({&seq, first, std::min(cpu::kQueryTile, seq.num_tokens - first)});
      total_keys += (seq.start_pos + first + tiles.back().count) * tiles.back().count;
    }
  }
  if (num_rows == 0 && tiles.empty()) return;

  // Splits per token: 1 when tokens alone give every thread work, else enough (each of at
  // least kMinSplitKeys keys) to reach about two items per thread.
  const int64_t want_splits =
      num_rows == 0 ? 1 : std::max<int64_t>(1, (2 * threads + num_rows - 1) / num_rows);
  std::vector<Item> items;
  std::vector<std::pair<int64_t, int64_t>> merges;  // (first partial, count) per split token
  std::vector<int64_t> merge_rows;
  int64_t partials = 0;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const AttentionSeq& seq = p.seqs[s];
    if (seq.num_tokens >= cpu::kMinTileTokens) continue;  // tiles
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t pos = seq.start_pos + i;
      // Keys j with pos - window < j <= pos (HF/Mistral), or all j <= pos without a window.
      const int64_t lo =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      const int64_t n = pos - lo + 1;
      total_keys += n;
      const int64_t splits = std::min(want_splits, std::max<int64_t>(1, n / kMinSplitKeys));
      if (splits == 1) {
        items.push_back({&seq, seq.token_begin + i, lo, pos + 1, -1});
        continue;
      }
      // Split boundaries on key-block multiples, so every block but the last is full.
      const int64_t per = (n + splits - 1) / splits;
      const int64_t step = (per + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
      int64_t count = 0;
      for (int64_t b = lo; b <= pos; b += step) {
        items.push_back({&seq, seq.token_begin + i, b, std::min(pos + 1, b + step), partials});
        ++partials;
        ++count;
      }
      merges.emplace_back(partials - count, count);
      merge_rows.push_back(seq.token_begin + i);
    }
  }

  AttendFn attend = &AttendScalar;
  if (cpu::ActiveIsa() == cpu::Isa::kAvx512) attend = &AttendAvx512;
  if (cpu::ActiveIsa() == cpu::Isa::kAvx2) attend = &AttendAvx2;
  std::vector<float> partial_buf(static_cast<size_t>(partials * heads * (dim + 2)));
  const int64_t num_items = static_cast<int64_t>(items.size());
  const int64_t num_merges = static_cast<int64_t>(merges.size());
  const int64_t num_tiles = static_cast<int64_t>(tiles.size());
  const bool parallel = total_keys * heads * dim >= (int64_t{1} << 15);

#pragma omp parallel num_threads(parallel ? threads : 1)
  {
    std::vector<float> scratch(static_cast<size_t>(
        std::max(ScratchFloats(heads, dim), num_tiles > 0 ? cpu::TileScratchFloats(p) : 0)));
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t t = 0; t < num_tiles; ++t) {
      cpu::AttendTile(p, tiles[static_cast<size_t>(t)], scratch.data());
    }
    // Causal tokens differ in key count, so hand out items dynamically.
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < num_items; ++it) {
      attend(p, items[static_cast<size_t>(it)], scratch.data(), partial_buf.data());
    }
#pragma omp for schedule(static)
    for (int64_t m = 0; m < num_merges; ++m) {
      const auto [first, count] = merges[static_cast<size_t>(m)];
      MergePartials(partial_buf.data() + first * heads * (dim + 2), count, heads, dim,
                    p.out + merge_rows[static_cast<size_t>(m)] * heads * dim);
    }
  }
}

}  // namespace tpserve::kernels
