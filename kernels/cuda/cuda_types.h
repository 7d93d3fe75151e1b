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

}  // namespace tpserve::kernels::cuda
