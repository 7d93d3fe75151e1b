// Device helpers shared by the paged-attention kernels (attention_prefill.cu,
// attention_prefill_tc.cu, attention_decode.cu; internal, CUDA code only): their common
// arguments (AttentionArgs), reading and checking one sequence's descriptor, checking the
// block-table entries its queries will read, and locating a key's row in the paged cache.
// The kernels trust nothing the host could not check: every value read from device memory
// goes through here before it is used as an index.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device_utils.cuh"

namespace tpserve::kernels::cuda::internal {

// The grid of both prefill kernels: one block per (tile of `block_m` query rows, query head,
// sequence), the tiles covering the longest sequence.
inline dim3 PrefillGrid(int64_t max_seq_tokens, int block_m, int64_t q_heads, int64_t num_seqs) {
  return dim3(static_cast<unsigned>((max_seq_tokens + block_m - 1) / block_m),
              static_cast<unsigned>(q_heads), static_cast<unsigned>(num_seqs));
}

// Positions at or past this are refused, so that position arithmetic fits in int32.
constexpr int64_t kMaxAttentionPosition = int64_t{1} << 30;

// log2(e): scores are kept in the log2 domain (q pre-multiplied by scale * log2(e)), so the
// softmax's exponentials are exp2f.
constexpr float kLog2e = 1.4426950408889634f;

// What every attention kernel reads of PagedAttentionParams, resolved on the host
// (AttentionArgsOf): passed by value as (part of) each kernel's argument.
struct AttentionArgs {
  const uint16_t* q;
  int64_t q_token_stride;  // resolved: non-zero
  uint16_t* out;
  int64_t tokens;
  int64_t q_heads;
  int64_t group;       // q_heads / kv_heads
  float log2_scale;    // scale * log2(e)
  int64_t window;      // 0 = none
  const uint16_t* cache_k;
  const uint16_t* cache_v;
  int64_t cache_blocks;
  int64_t block_size;  // <= 2^31 - 1 (checked by cuda_ops.cc)
  int64_t kv_heads;
  const AttentionSeq* seqs;
};

inline AttentionArgs AttentionArgsOf(const PagedAttentionParams& p) {
  const PagedKvCache& c = p.cache;
  return {p.q,          p.q_token_stride, p.out,      p.tokens,       p.q_heads,
          p.q_heads / c.kv_heads,         p.scale * kLog2e,           p.sliding_window,
          c.k,          c.v,              c.num_blocks, c.block_size, c.kv_heads,
          p.seqs};
}

// One sequence's descriptor after the checks (AttentionSeq in cuda_types.h).
struct SeqView {
  bool rows_ok = false;  // rows [token_begin, token_begin + num_tokens) lie in [0, tokens)
  bool valid = false;    // rows_ok, and positions and block table are usable
  int64_t token_begin = 0;
  int num_tokens = 0;
  int start_pos = 0;
  int context = 0;  // start_pos + num_tokens: keys are positions [0, context)
  const int32_t* block_table = nullptr;
};

// Reads seqs[s] and checks the fields that need no block-table access. Every thread of a
// block may call it (the loads are broadcast).
__device__ __forceinline__ SeqView ReadSeq(const AttentionSeq* seqs, int64_t s, int64_t tokens,
                                           int64_t block_size) {
  const AttentionSeq seq = seqs[s];
  SeqView v;
  v.rows_ok = seq.token_begin >= 0 && seq.num_tokens >= 0 && seq.num_tokens <= tokens &&
              seq.token_begin <= tokens - seq.num_tokens;
  if (!v.rows_ok) return v;
  v.token_begin = seq.token_begin;
  v.num_tokens = static_cast<int>(seq.num_tokens);  // <= tokens < 2^31
  const bool positions_ok = seq.start_pos >= 0 &&
                            seq.start_pos <= kMaxAttentionPosition - seq.num_tokens;
  if (!positions_ok) return v;
  v.start_pos = static_cast<int>(seq.start_pos);
  v.context = v.start_pos + v.num_tokens;
  // The last key's block must have an entry (positions before it are covered then too).
  const bool table_ok = seq.num_tokens == 0 ||
                        (seq.block_table != nullptr &&
                         seq.num_blocks > (static_cast<int64_t>(v.context) - 1) / block_size);
  if (!table_ok) return v;
  v.block_table = seq.block_table;
  v.valid = true;
  return v;
}

// The first key any of the queries at positions [first_query, ...] can see.
__device__ __forceinline__ int FirstVisibleKey(int first_query_pos, int64_t window) {
  if (window <= 0 || window > first_query_pos) return 0;
  return first_query_pos - static_cast<int>(window) + 1;
}

// Whether every block-table entry covering keys [first_key, last_key] names a block of the
// cache. Collective: every thread of the block must call it with the same arguments; it
// contains one __syncthreads_or.
__device__ __forceinline__ bool BlockEntriesValid(const int32_t* table, int first_key,
                                                  int last_key, int64_t block_size,
                                                  int64_t cache_blocks) {
  bool bad = false;
  if (first_key <= last_key) {
    const int64_t first = first_key / block_size, last = last_key / block_size;
    for (int64_t i = first + threadIdx.x; i <= last; i += blockDim.x) {
      const int32_t b = table[i];
      bad = bad || b < 0 || b >= cache_blocks;
    }
  }
  return __syncthreads_or(bad ? 1 : 0) == 0;
}

// Element offset of (key position `pos`, KV head `kv_head`) in a cache tensor
// [num_blocks, block_size, kv_heads, head_dim]. The block-table entry must have been checked.
__device__ __forceinline__ int64_t KeyOffset(const int32_t* table, int pos, int64_t block_size,
                                             int64_t kv_heads, int64_t kv_head,
                                             int64_t head_dim) {
  const int64_t block = table[pos / block_size];
  const int64_t slot = block * block_size + pos % block_size;
  return (slot * kv_heads + kv_head) * head_dim;
}

// Eight bf16 (one 16-byte load) -> eight floats.
__device__ __forceinline__ void Bf16x8ToF32(const uint4& raw, float* f) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);              // the lower address holds element 2i
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);  // element 2i + 1
  }
}

// The body both prefill kernels share (grid: PrefillGrid): block (x, h, s) takes the query
// tiles of `kBlockM` rows of head h of sequence s from the last tile down, gridDim.x tiles
// apart, and computes each with `tile(seq, row0, rows)`. A sequence whose descriptor fails the
// device checks (the host cannot check them without waiting) gets NaN rows instead; one whose
// rows lie outside the step, or that has none, is skipped. Every branch is the same for the
// whole block.
template <int D, int kBlockM, typename Tile>
__device__ __forceinline__ void ForEachPrefillTile(const AttentionArgs& a, Tile tile) {
  const int h = static_cast<int>(blockIdx.y);
  const SeqView seq = ReadSeq(a.seqs, blockIdx.z, a.tokens, a.block_size);
  if (!seq.rows_ok || seq.num_tokens == 0) return;
  const int num_tiles = (seq.num_tokens + kBlockM - 1) / kBlockM;
  const int first_tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  if (first_tile >= num_tiles) return;
  bool valid = seq.valid;
  if (valid) {
    valid = BlockEntriesValid(seq.block_table, FirstVisibleKey(seq.start_pos, a.window),
                              seq.context - 1, a.block_size, a.cache_blocks);
  }
  for (int t = first_tile; t < num_tiles; t += static_cast<int>(gridDim.x)) {
    const int row0 = t * kBlockM;
    const int rows = min(kBlockM, seq.num_tokens - row0);
    if (valid) {
      tile(seq, h, row0, rows);
      continue;
    }
    for (int e = static_cast<int>(threadIdx.x); e < rows * D; e += static_cast<int>(blockDim.x)) {
      const int64_t row = seq.token_begin + row0 + e / D;
      a.out[row * a.q_heads * D + h * D + e % D] = kBf16Nan;
    }
  }
}

}  // namespace tpserve::kernels::cuda::internal
