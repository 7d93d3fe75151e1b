// The decoder's CUDA ops (layer: kernels/cuda; a plain C++ header: no CUDA types, callers need
// no CUDA headers). The non-GEMM, non-attention ops of one decoder step, each a counterpart of
// an op in kernels/ops.h with bf16 storage and fp32 math; the argument structs and the
// activation-dtype contract (fp32 residual stream, bf16 everywhere else) are in
// kernels/cuda/cuda_types.h.
//
// Common contract of every op below:
//  - All tensor pointers are device pointers; shapes, dtypes and layouts are stated on the
//    Params fields. Ops never allocate and never synchronise.
//  - Asynchronous: the op is enqueued on `stream` and the call returns at once. The output is
//    ready only after the stream has reached it (SynchronizeStream, an event, or later work on
//    the same stream). Inputs must stay valid until then.
//  - Returns InvalidArgument, with nothing enqueued, when the shapes or pointers are unusable
//    (negative or zero sizes, a null pointer with work to do, an odd head_dim, more than
//    2^31 - 1 tokens, a dimension above 2^31 - 1); OK with nothing enqueued for zero tokens;
//    otherwise the status of the launch (kernels::cuda::CudaErrorToStatus). Faults while a
//    kernel runs surface at the next synchronisation.
//  - Values the host cannot check without waiting (token ids, positions, slots) are checked
//    on the device and never cause an out-of-bounds access: what happens to an out-of-range
//    one is stated per op.
//  - Thread safety: one call at a time per output buffer; calls on different streams with
//    disjoint outputs may run concurrently.
// Tested against the CPU references (kernels::ref) by tests/gpu/cuda_ops_test.cc; every op
// here must appear in RegisteredCudaOps() and have cases there (the test fails otherwise).
#pragma once

#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cuda_types.h"

namespace tpserve::kernels::cuda {

// out[t, :] = widen(table[ids[t], :]): the first layer's input, written into the fp32
// residual stream (widening bf16 to fp32 is exact). An id outside [0, vocab) makes that
// token's row all NaN.
[[nodiscard]] absl::Status Embedding(const EmbeddingParams& p, Stream stream);

// Per token: residual += widen(delta) (fp32 adds, skipped when delta is nullptr), then
// out = bf16(residual * 1/sqrt(mean(residual^2) + eps) * widen(weight)), with the sum of
// squares accumulated in fp32. One rounding, to nearest even, per output element. With delta
// == nullptr this is a plain RMSNorm that leaves residual untouched. A NaN anywhere in a
// token's residual row makes that token's whole output row NaN (as the reference).
[[nodiscard]] absl::Status AddRmsNorm(const AddRmsNormParams& p, Stream stream);

// Rotary embedding in place, HF rotate_half pairing (i, i + head_dim/2), fp32 arithmetic
// without fused multiply-adds, so the result equals bf16(kernels::ref::ApplyRope(widen(x)))
// bit for bit. To rotate q and k of a fused qkv row in one call, pass heads = q_heads +
// kv_heads and token_stride = (q_heads + 2 * kv_heads) * head_dim. A position outside
// [0, max_positions) makes all of that token's heads NaN.
[[nodiscard]] absl::Status ApplyRope(const RopeParams& p, Stream stream);

// out[t, i] = bf16(silu(g) * u) with g = widen(gate_up[t, i]), u = widen(gate_up[t, inter + i]),
// silu(g) = g / (1 + exp(-g)) in fp32 (torch's formula; NaN/inf behave as in the reference).
[[nodiscard]] absl::Status SwiGlu(const SwiGluParams& p, Stream stream);

// cache.k[slot, :, :] = k[t, :, :] and cache.v[slot, :, :] = v[t, :, :] for each token t
// with slot = slots[t] (an exact copy of the bf16 bits). Tokens with a negative slot (padding)
// or a slot >= num_blocks * block_size (a caller bug) are skipped; nothing else in the cache
// is touched.
[[nodiscard]] absl::Status WriteKvCache(const WriteKvCacheParams& p, Stream stream);

// The registry of the CUDA ops above: one entry per public op, in declaration order. The
// backend-ops test checks that it has cases for every name here, so an op added to this
// header and to the table (kernels/cuda/cuda_ops.cc) without a test case fails the test.
struct CudaOpInfo {
  std::string_view name;      // the function's name, e.g. "AddRmsNorm"
  std::string_view contract;  // one line: dtypes in -> out
};
std::span<const CudaOpInfo> RegisteredCudaOps();

}  // namespace tpserve::kernels::cuda
