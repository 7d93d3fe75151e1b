// The compute operations of the decoder (layer: kernels; pure compute, no MPI, no files).
// Activations are fp32; weights keep their stored dtype and are widened on the fly with fp32
// accumulation. Every op is implemented twice in kernels/cpu: a plain reference
// (namespace ref, written for clarity) and the fast version here (multi-threaded with OpenMP,
// vectorised with run-time CPU dispatch). All functions are synchronous and may be called
// from one thread at a time per output buffer.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace tpserve::kernels {

// A row-major weight matrix [rows, cols] in its stored dtype (F32, F16 or BF16).
// y = x W^T: rows are output features, cols input features.
struct WeightMatrix {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
};

// y[t, r] = sum_c x[t, c] * w[r, c].  x: [tokens, w.cols] fp32; y: [tokens, w.rows] fp32.
void MatMul(const float* x, int64_t tokens, const WeightMatrix& w, float* y);

// y[t, :] = table[ids[t], :] widened to fp32. ids must be in [0, table.rows).
void Embedding(const int32_t* ids, int64_t tokens, const WeightMatrix& table, float* y);

// y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight.  x, y: [tokens, dim]; may alias.
void RmsNorm(const float* x, const float* weight, int64_t tokens, int64_t dim, float eps,
             float* y);

// x[t, :] += r[t, :] then y = RmsNorm(x): the residual add fused with the next norm.
void AddRmsNorm(float* x, const float* r, const float* weight, int64_t tokens, int64_t dim,
                float eps, float* y);

// Precomputed RoPE angles: cos/sin [max_positions, head_dim / 2] fp32, computed as HF does
// (inv_freq = 1 / theta^(2i/d) in fp32, angle = pos * inv_freq in fp32).
struct RopeTable {
  int64_t max_positions = 0;
  int64_t half_dim = 0;
  const float* cos = nullptr;
  const float* sin = nullptr;
};
// Fills cos/sin (each max_positions * head_dim / 2 floats, caller-owned).
void BuildRopeTable(double theta, int64_t head_dim, int64_t max_positions, float* cos,
                    float* sin);

// In-place rotary embedding with HF's rotate_half pairing (i, i + head_dim/2).
// x: [tokens, heads, head_dim] fp32; positions: [tokens], each < table.max_positions.
void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
               const int32_t* positions, const RopeTable& table);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].  gate_up: [tokens, 2*inter];
// out: [tokens, inter].
void SwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out);

// Paged KV cache layout: [num_blocks, block_size, kv_heads, head_dim] fp32, one for K and one
// for V per layer. A sequence's position p lives in block block_table[p / block_size] at
// offset p % block_size.
struct KvCacheView {
  float* k = nullptr;
  float* v = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// Writes k, v ([tokens, kv_heads, head_dim]) into the cache at `slots` ([tokens], slot =
// block * block_size + offset).
void WriteKvCache(const float* k, const float* v, int64_t tokens, const int64_t* slots,
                  const KvCacheView& cache);

// One sequence's share of a batched attention call.
struct AttentionSeq {
  int64_t token_begin = 0;  // first row of this sequence in q / out
  int64_t num_tokens = 0;   // its new tokens this step
  int64_t start_pos = 0;    // position of its first new token
  const int32_t* block_table = nullptr;  // blocks covering positions [0, start_pos+num_tokens)
  int64_t num_blocks = 0;
};

// Causal grouped-query attention over the paged cache, which must already hold K/V for
// every position up to each query. Query head h reads cache head kv_head_of_q[h] (a rank
// holding a slice of the heads maps its local query heads to its local KV heads).
// A query at position i sees keys j with max(0, i - sliding_window + 1) <= j <= i when
// sliding_window > 0 (Hugging Face's i - W < j <= i), else 0 <= j <= i.
// q, out: [total_tokens, q_heads, head_dim] fp32. Softmax in fp32 with max subtraction.
struct AttentionParams {
  const float* q = nullptr;
  float* out = nullptr;
  int64_t q_heads = 0;
  const int32_t* kv_head_of_q = nullptr;  // [q_heads]
  float scale = 1.0f;
  int64_t sliding_window = 0;
  KvCacheView cache;
  const AttentionSeq* seqs = nullptr;
  int64_t num_seqs = 0;
};
void PagedAttention(const AttentionParams& p);

namespace ref {
// Plain single-threaded references of the ops above, same contracts.
void MatMul(const float* x, int64_t tokens, const WeightMatrix& w, float* y);
void Embedding(const int32_t* ids, int64_t tokens, const WeightMatrix& table, float* y);
void RmsNorm(const float* x, const float* weight, int64_t tokens, int64_t dim, float eps,
             float* y);
void AddRmsNorm(float* x, const float* r, const float* weight, int64_t tokens, int64_t dim,
                float eps, float* y);
void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
               const int32_t* positions, const RopeTable& table);
void SwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out);
void WriteKvCache(const float* k, const float* v, int64_t tokens, const int64_t* slots,
                  const KvCacheView& cache);
void PagedAttention(const AttentionParams& p);
}  // namespace ref

}  // namespace tpserve::kernels
