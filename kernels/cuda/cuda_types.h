// Plain argument types of the CUDA ops (layer: kernels/cuda; no CUDA or abseil types, so that
// both the public C++ header cuda_ops.h and the .cu files include it).
//
// Conventions for every struct here:
//  - Every pointer is a DEVICE pointer (cudaMalloc'ed or an offset into such memory), never a
//    host pointer. The caller owns all memory; ops never allocate.
//  - bf16 tensors are stored as uint16_t bit patterns (the upper half of an IEEE fp32), the
//    same encoding as common/dtype.h's Bf16ToF32 / F32ToBf16.
//  - Shapes are written [outer, ..., inner]; the innermost dimension is contiguous. A
//    "token stride" is the distance in ELEMENTS between the first elements of consecutive
//    tokens, so that an op can work on a slice of a wider row (q, k, v inside one fused qkv
//    projection output [tokens, (q_heads + 2 * kv_heads) * head_dim]).
//
// Activation dtypes between ops (the contract every CUDA op and the CUDA decoder follow):
//  - the residual stream is fp32 [tokens, hidden]: Embedding writes it, AddRmsNorm adds each
//    sub-layer's output to it;
//  - everything a GEMM reads or writes is bf16: the normalised hidden state, q/k/v, the
//    gate_up projection, the SwiGLU output, attention output, o_proj/down_proj outputs;
//  - math inside every op is fp32; each bf16 result is rounded once, to nearest even.
// (vLLM and TensorRT-LLM keep bf16 activations; an fp32 residual keeps the 48 additions of a
// deep model from accumulating bf16 rounding error, at 4 bytes/element instead of 2.)
#pragma once

#include <cstdint>

namespace tpserve::kernels::cuda {

// A CUDA stream, as an opaque handle: a cudaStream_t converted to void*. nullptr is the
// legacy default stream. Non-owning; copy freely.
struct Stream {
  void* handle = nullptr;
};

// Embedding: out[t, :] = widen(table[ids[t], :]).
struct EmbeddingParams {
  const int32_t* ids = nullptr;   // [tokens] int32
  const uint16_t* table = nullptr;  // [vocab, hidden] bf16 row-major
  float* out = nullptr;           // [tokens, hidden] fp32 row-major (the residual stream)
  int64_t tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
};

// Residual add fused with RMSNorm:
//   residual[t, :] += widen(delta[t, :])            (skipped when delta == nullptr)
//   out[t, :] = bf16(residual[t, :] / sqrt(mean(residual[t, :]^2) + eps) * widen(weight))
struct AddRmsNormParams {
  float* residual = nullptr;        // [tokens, dim] fp32, read and (when delta) updated
  const uint16_t* delta = nullptr;  // [tokens, dim] bf16, or nullptr for a plain RmsNorm
  const uint16_t* weight = nullptr;  // [dim] bf16
  uint16_t* out = nullptr;          // [tokens, dim] bf16; must not overlap residual or delta
  int64_t tokens = 0;
  int64_t dim = 0;
  float eps = 1e-5f;
};

// Rotary embedding in place with Hugging Face's rotate_half pairing (i, i + head_dim/2):
//   lo = x[i], hi = x[i + half]:  x[i] = lo*cos - hi*sin,  x[i + half] = hi*cos + lo*sin
// with cos/sin = table[positions[t], i].
struct RopeParams {
  uint16_t* x = nullptr;  // token t, head h at x + t * token_stride + h * head_dim; bf16
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;      // even
  int64_t token_stride = 0;  // elements; >= heads * head_dim (0 means heads * head_dim)
  const int32_t* positions = nullptr;  // [tokens] int32
  // [max_positions, head_dim / 2] fp32 each, as kernels::BuildRopeTable fills them on the
  // host (copy them to the device once at load).
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t max_positions = 0;
};

// SwiGLU: out[t, i] = bf16(silu(gate[t, i]) * up[t, i]), silu(g) = g / (1 + exp(-g)),
// where gate_up[t, :] = [gate (inter) | up (inter)].
struct SwiGluParams {
  const uint16_t* gate_up = nullptr;  // [tokens, 2 * inter] bf16
  uint16_t* out = nullptr;            // [tokens, inter] bf16; must not overlap gate_up
  int64_t tokens = 0;
  int64_t inter = 0;
};

// One layer's paged KV cache on the device: K and V each [num_blocks, block_size, kv_heads,
// head_dim] bf16 row-major. Slot s = block * block_size + offset addresses one position's
// [kv_heads, head_dim] row.
struct PagedKvCache {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// Writes each token's K and V rows into the cache at its slot.
struct WriteKvCacheParams {
  const uint16_t* k = nullptr;  // token t at k + t * k_token_stride: [kv_heads, head_dim] bf16
  const uint16_t* v = nullptr;  // likewise with v_token_stride
  int64_t k_token_stride = 0;   // elements; >= kv_heads * head_dim (0 means exactly that)
  int64_t v_token_stride = 0;
  int64_t tokens = 0;
  // [tokens] int64: slot of each token. A negative slot skips the token (padding); slots must
  // be distinct (two tokens writing one slot race).
  const int64_t* slots = nullptr;
  PagedKvCache cache;
};

// ---------------------------------------------------------------------------------------------
// GEMM (kernels/cuda/gemm.cc, through cuBLASLt): y[tokens, rows] = x[tokens, cols] · w^T.

// The dtype of a GEMM's output.
enum class GemmOutput : int32_t {
  kBf16 = 0,  // y is uint16_t bf16 bits, rounded once from the fp32 accumulator
  kF32 = 1,   // y is float (logits)
};

struct GemmParams {
  const uint16_t* x = nullptr;  // [tokens, cols] bf16 row-major (activations)
  const uint16_t* w = nullptr;  // [rows, cols] bf16 row-major (our weight layout)
  void* y = nullptr;            // [tokens, rows] row-major, dtype per `output`; must not
                                // overlap x or w
  GemmOutput output = GemmOutput::kBf16;
  int64_t tokens = 0;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features (the reduction dimension)
};

// The MLP's first half in one call (GemmHandle::GemmSwiGlu): out = SwiGlu(x · w^T) for the
// fused gate_up weight w (gate rows [0, inter), then up rows [inter, 2 inter)), bit for bit the
// Gemm (bf16 out) into gate_up followed by SwiGlu.
struct GemmSwiGluParams {
  const uint16_t* x = nullptr;  // [tokens, cols] bf16
  const uint16_t* w = nullptr;  // [2 * inter, cols] bf16
  uint16_t* gate_up = nullptr;  // [tokens, 2 * inter] bf16 scratch for the two-op path; null
                                // allowed where the fused kernel runs (UsesFusedSwiGluKernel)
  uint16_t* out = nullptr;      // [tokens, inter] bf16; overlaps none of the others
  int64_t tokens = 0;
  int64_t inter = 0;
  int64_t cols = 0;
};

// ---------------------------------------------------------------------------------------------
// Paged attention (kernels/cuda/attention_prefill.cu, attention_decode.cu).

// One sequence's share of a batched attention call: the same fields, in the same order, as
// kernels::AttentionSeq (kernels/ops.h), but the struct itself and its block table live in
// DEVICE memory (an array of these is uploaded with the step's metadata).
struct AttentionSeq {
  int64_t token_begin = 0;  // first row of this sequence in q and out
  int64_t num_tokens = 0;   // its new tokens (queries) this step; 0 = nothing to do
  int64_t start_pos = 0;    // position of its first new token; its keys are positions
                            // [0, start_pos + num_tokens), already in the cache
  const int32_t* block_table = nullptr;  // device [num_blocks]: cache block of positions
                                         // [i * block_size, (i + 1) * block_size)
  int64_t num_blocks = 0;   // entries in block_table
};

// Causal grouped-query attention of a batch of sequences over the paged KV cache (bf16),
// softmax and accumulation in fp32. Query head h reads KV head h / (q_heads / cache.kv_heads)
// (Hugging Face's repeat_kv grouping: kernels::ref::PagedAttention with
// kv_head_of_q[h] = h / group). A query at position i sees keys j with i - W < j <= i when
// sliding_window W > 0, else 0 <= j <= i.
struct PagedAttentionParams {
  // Token t, head h at q + t * q_token_stride + h * head_dim: bf16. A fused qkv projection
  // output works as is (q_token_stride = (q_heads + 2 * kv_heads) * head_dim).
  const uint16_t* q = nullptr;
  int64_t q_token_stride = 0;  // elements; >= q_heads * head_dim (0 means exactly that)
  uint16_t* out = nullptr;     // [tokens, q_heads, head_dim] bf16 packed; must not overlap q
  int64_t tokens = 0;          // rows of q and out
  int64_t q_heads = 0;         // a multiple of cache.kv_heads
  float scale = 1.0f;          // applied to q·k (usually 1/sqrt(head_dim)); finite
  int64_t sliding_window = 0;  // W; 0 = no window
  PagedKvCache cache;          // head_dim 64 or 128; k and v 16-byte aligned
  const AttentionSeq* seqs = nullptr;  // device [num_seqs]
  int64_t num_seqs = 0;
  // Prefill only: the largest num_tokens among the sequences (sizes the grid). Any value in
  // [1, tokens] gives the same results (blocks loop over the remaining query tiles); a smaller
  // one is only slower. 0 means `tokens`.
  int64_t max_seq_tokens = 0;
};

// Decode attention: every sequence has exactly one new token (num_tokens == 1) whose query is
// row token_begin. Long contexts are split across thread blocks (flash-decoding): each split
// writes a partial result into `workspace`, and a second kernel merges them.
struct DecodeAttentionParams {
  PagedAttentionParams attn;  // attn.max_seq_tokens is ignored
  // An upper bound of start_pos + 1 over the batch (0 = unknown): only chooses the number of
  // splits; any value gives correct results (within float reassociation). The split count is
  // fixed when the call is enqueued (so also inside a captured CUDA graph); each sequence's
  // key ranges are computed on the device, so a replay with longer contexts stays correct.
  int64_t max_context = 0;
  // Splits per sequence: 0 chooses automatically (enough blocks to fill the GPU, at least
  // 128 keys per split); n > 0 asks for n (1 never splits and needs no workspace). Either way
  // capped at kMaxDecodeSplits and by the workspace.
  int64_t splits = 0;
  // Device scratch for the partial results, DecodeAttentionWorkspaceBytes(...) bytes for the
  // splits wanted, 16-byte aligned; fewer splits are used when it is smaller (none when null).
  // Its contents mean nothing to the caller; one call at a time per workspace.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
};

// Upper limit on decode splits per sequence.
constexpr int64_t kMaxDecodeSplits = 32;
// Largest q_heads / kv_heads the decode kernel takes (its query heads share each K/V load).
constexpr int64_t kMaxDecodeGroup = 16;

// ---------------------------------------------------------------------------------------------
// Token sampling (kernels/cuda/sampling.cu): worker/sampler.cc's SampleToken and
// ComputeLogprobs for a batch of logit rows.

// Most top logprobs per row SampleTokens returns.
constexpr int64_t kMaxSampleTopLogprobs = 20;

// One row's sampling parameters (the fields of common/step.h's SamplingParams plus the
// position), in DEVICE memory. Values are used as the CPU sampler uses them, with no check:
// temperature <= 0 (or top_k == 1) is greedy; top_k <= 0 or >= vocab is off; top_p is off
// unless < 1; min_p is off unless > 0; repetition_penalty == 1 is off.
struct SamplingRow {
  float temperature = 0.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int64_t position = 0;  // Philox counter (the position of the token being sampled)
};

struct SampleTokensParams {
  const float* logits = nullptr;       // [rows, vocab] fp32 row-major, raw (not modified)
  int64_t rows = 0;
  int64_t vocab = 0;
  const SamplingRow* params = nullptr;  // device [rows]
  // Tokens seen by each row, for the repetition penalty, in CSR form: row r's ids are
  // seen_ids[seen_offsets[r] .. seen_offsets[r + 1]). Both may be null when num_seen == 0.
  // On the device, offsets are clamped to [0, num_seen] (a reversed range is empty) and ids
  // outside [0, vocab) are ignored, as the CPU sampler ignores them.
  const int32_t* seen_offsets = nullptr;  // device [rows + 1] int32
  const int32_t* seen_ids = nullptr;      // device [num_seen] int32
  int64_t num_seen = 0;
  // Scratch of rows * vocab floats (penalised logits, then probabilities); must not overlap
  // anything else. Its contents mean nothing to the caller.
  float* workspace = nullptr;
  int32_t* tokens = nullptr;           // [rows] int32: the sampled token of each row
  float* token_logprobs = nullptr;     // [rows] fp32 or nullptr: log-softmax(raw)[token]
  int64_t top_n = 0;                   // [0, kMaxSampleTopLogprobs]
  // [rows, top_n] each (may be null when top_n == 0): the top_n best raw logits, best first,
  // ties to the lower id, as log-softmax values; slots past vocab get id -1 and -inf.
  int32_t* top_ids = nullptr;
  float* top_logprobs = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Row gather (kernels/cuda/gather_rows.cu): out[i, :] = src[indices[i], :], the bf16 bits
// copied exactly (the worker picks the rows of a step whose logits are wanted).
struct GatherRowsParams {
  const uint16_t* src = nullptr;     // [src_rows, dim] bf16 row-major
  const int32_t* indices = nullptr;  // [rows] int32: the src row of each output row
  uint16_t* out = nullptr;           // [rows, dim] bf16 row-major; must not overlap src
  int64_t rows = 0;                  // output rows
  int64_t src_rows = 0;              // rows of src (the valid index range is [0, src_rows))
  int64_t dim = 0;                   // elements per row
};

// The sampler's random number, the same formula as worker/sampler.cc's PhiloxUniform
// (Philox4x32-10 of counter (lo, hi, 0, 0) under key (seed lo, seed hi), first word mapped to
// [0, 1) with 24 bits). Host and device share this one definition, so a host test can check it
// against the CPU sampler without a GPU.
#if defined(__CUDACC__)
#define TPSERVE_HOST_DEVICE __host__ __device__
#else
#define TPSERVE_HOST_DEVICE
#endif
inline TPSERVE_HOST_DEVICE float SamplingPhiloxUniform(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return static_cast<float>(c0 >> 8) * (1.0f / 16777216.0f);
}
#undef TPSERVE_HOST_DEVICE

}  // namespace tpserve::kernels::cuda
