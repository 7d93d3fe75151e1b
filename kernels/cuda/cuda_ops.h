// The decoder's CUDA ops (layer: kernels/cuda; a plain C++ header: no CUDA types, callers need
// no CUDA headers). The ops of one decoder step (embedding, norms, RoPE, SwiGLU, KV-cache
// writes, the cuBLASLt GEMM and paged attention), each a counterpart of an op in kernels/ops.h
// with bf16 storage and fp32 math, plus the step's tail: the gather of the rows whose logits
// are wanted and sampling. The argument structs and the
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
//  - Values the host cannot check without waiting (token ids, positions, slots, row indices)
//    are checked on the device and never cause an out-of-bounds access: what happens to an
//    out-of-range one is stated per op.
//  - Thread safety: one call at a time per output buffer; calls on different streams with
//    disjoint outputs may run concurrently.
// Tested against the CPU references (kernels::ref; GatherRows against a plain host copy) by
// tests/gpu/cuda_ops_test.cc; every op here must appear in RegisteredCudaOps() and have cases
// there (the test fails otherwise).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// ApplyRope(rope) then WriteKvCache(kv) in one launch, with the same results bit for bit: the
// K (and V) rows that kv names may lie inside rope.x, as in a fused qkv row, and the copy
// reads them rotated. Each token's rows may only overlap that token's rotated row (one
// block per token). Both parameter sets are checked as by those ops, and rope.tokens must
// equal kv.tokens.
[[nodiscard]] absl::Status ApplyRopeAndWriteKvCache(const RopeParams& rope,
                                                    const WriteKvCacheParams& kv, Stream stream);

// ------------------------------------- GEMM -------------------------------------------------

// A cuBLASLt GEMM runner for one device: y[tokens, rows] = x[tokens, cols] · w^T with bf16 x
// and w, fp32 accumulation (CUBLAS_COMPUTE_32F, no reduced-precision reductions) and a bf16 or
// fp32 y (GemmParams). No epilogue: Mistral/Llama projections have no bias, and the residual
// add is fused into AddRmsNorm instead.
// Create it once per device (it owns the cuBLASLt handle and a workspace) and reuse it. The
// first call for a shape (tokens, rows, cols, output dtype, pointer alignments) builds its
// descriptors and asks cuBLASLt's heuristic for an algorithm on the host; later calls reuse
// that plan. A call allocates nothing on the device and never synchronises, so it can be
// captured into a CUDA graph (warm the plan of each captured shape up first: the heuristic
// query is host work that a replay would not redo anyway).
// Not thread-safe: one thread at a time, and all calls on one stream or otherwise ordered
// (they share the workspace); use one handle per concurrently running stream.
class GemmHandle {
 public:
  static constexpr int64_t kDefaultWorkspaceBytes = int64_t{32} << 20;  // NVIDIA's Hopper advice

  // An empty handle: Gemm() checks its arguments, then returns FailedPrecondition.
  GemmHandle();
  // Creates the cuBLASLt handle and allocates `workspace_bytes` (>= 0) of device memory on the
  // current device. Unavailable without a usable device; ResourceExhausted when out of memory.
  [[nodiscard]] static absl::StatusOr<GemmHandle> Create(
      int64_t workspace_bytes = kDefaultWorkspaceBytes);

  GemmHandle(GemmHandle&& other) noexcept;
  GemmHandle& operator=(GemmHandle&& other) noexcept;
  GemmHandle(const GemmHandle&) = delete;
  GemmHandle& operator=(const GemmHandle&) = delete;
  ~GemmHandle();

  // Enqueues y = x · w^T on `stream` (common contract above). InvalidArgument, with nothing
  // enqueued, for sizes outside [1, 2^31 - 1] (tokens may be 0: OK, nothing enqueued), null or
  // misaligned pointers (x and w 2-byte, y 2- or 4-byte aligned) or an unknown output dtype;
  // FailedPrecondition for an empty handle or when cuBLASLt has no algorithm for the shape;
  // otherwise the cuBLASLt status (CublasStatusToStatus).
  [[nodiscard]] absl::Status Gemm(const GemmParams& p, Stream stream);

  // Enqueues out = SwiGlu(x · w^T) for the fused gate_up weight (GemmSwiGluParams), bit for
  // bit what Gemm (bf16 y = gate_up) and then SwiGlu give. Where the fused kernel runs
  // (UsesFusedSwiGluKernel and the small-batch kernel on: decode batches) it is one launch
  // that never writes gate_up; otherwise it is exactly those two ops, through gate_up.
  // InvalidArgument as Gemm (with out for y), for inter outside [1, 2^30 - 1], or for a null
  // gate_up where the two-op path runs; FailedPrecondition for an empty handle.
  [[nodiscard]] absl::Status GemmSwiGlu(const GemmSwiGluParams& p, Stream stream);

  // Number of cached plans (one per distinct shape seen).
  size_t cached_plans() const;

  // The small-batch kernel (on by default): a Gemm for which UsesSmallBatchKernel holds runs
  // kernels/cuda's own weight-streaming kernel (gemm_skinny.cu) instead of cuBLASLt. Same
  // contract and tolerance; it needs no plan. Off: cuBLASLt for every shape. No effect on an
  // empty handle.
  void set_small_batch_kernel(bool on);
  bool small_batch_kernel() const;
  // 1 to 8 tokens, cols a multiple of 8, x and w 16-byte aligned.
  static bool UsesSmallBatchKernel(const GemmParams& p);
  // The same conditions for GemmSwiGlu's one-launch path.
  static bool UsesFusedSwiGluKernel(const GemmSwiGluParams& p);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ------------------------------------- attention --------------------------------------------
// Both ops below share these rules (PagedAttentionParams in cuda_types.h):
//  - head_dim 64 or 128 (anything else is InvalidArgument), q_heads a multiple of kv_heads,
//    cache.k and cache.v 16-byte aligned, num_seqs <= 65535 and q_heads <= 65535, scale
//    finite, sliding_window >= 0; zero sequences or zero tokens: OK, nothing enqueued.
//  - Checked on the device (the host cannot see device memory without waiting): a sequence
//    whose rows [token_begin, token_begin + num_tokens) do not lie inside [0, tokens) is
//    skipped, nothing written. A sequence whose rows fit but whose positions do not (a
//    negative start_pos, positions at or past 2^30), whose block table is null or too short
//    for its last key, or names a block outside [0, cache.num_blocks) for a position its
//    queries read, gets all its output rows NaN. Nothing outside q, out, the cache and the
//    block tables is read or written. Block-table entries of blocks wholly before the window
//    of a sequence's first query are never read (a sliding-window allocator may free them).
//  - Rows of q/out that belong to no sequence are not touched. Two sequences sharing rows
//    race.
//  - A NaN or inf in q or k makes the rows that see it NaN, as in the reference; a NaN in v
//    reaches exactly the (row, dim) pairs that attend to it. Keys a query does not see never
//    contribute (not even 0 * NaN).

// Prefill (and mixed) attention: any number of new tokens per sequence, queries of all
// sequences in one launch. A flash-attention style kernel on tensor cores
// (attention_prefill_tc.cu): per (64-query tile of a sequence, query head) block, the query
// tile stays in registers while 64-key K/V tiles are streamed through shared memory; S = q k^T
// and P V are bf16 MMAs with fp32 accumulation (P carried as two bf16 terms, so each weight
// keeps ~16 bits), the online softmax is fp32; key tiles wholly before a query tile's window or
// after its last query are skipped. A K/V tile whose V holds an inf or NaN is multiplied on
// CUDA cores instead, so the NaN/inf rules above hold exactly. The earlier CUDA-core kernel
// (attention_prefill.cu) has the same contract and stays reachable for tests and benchmarks
// (kernels/cuda/attention_internal.h).
[[nodiscard]] absl::Status PagedPrefillAttention(const PagedAttentionParams& p, Stream stream);

// Decode attention: one new token per sequence (num_tokens must be 1; a sequence with 0 is
// skipped, one with more gets a NaN row at token_begin and its other rows untouched). All
// q_heads / kv_heads (<= kMaxDecodeGroup) query heads of a KV head share one pass over its
// keys; a sequence's visible keys are split
// into up to kMaxDecodeSplits ranges processed by separate blocks when the batch alone would
// not fill the GPU (partials in p.workspace, merged by a second kernel).
[[nodiscard]] absl::Status PagedDecodeAttention(const DecodeAttentionParams& p, Stream stream);

// Bytes of workspace PagedDecodeAttention needs for `splits` splits (0 for splits <= 1):
// num_seqs * q_heads * splits * (head_dim + 2) floats. Negative arguments give 0.
int64_t DecodeAttentionWorkspaceBytes(int64_t num_seqs, int64_t q_heads, int64_t head_dim,
                                      int64_t splits);

// ------------------------------------- sampling ---------------------------------------------

// Per row r of p.logits, what worker/sampler.cc computes on the CPU for the same inputs:
// tokens[r] = SampleToken(logits[r] with the row's penalty over its seen ids, ...) and
// token_logprobs[r] / top_ids[r] / top_logprobs[r] = ComputeLogprobs(raw logits[r],
// tokens[r], top_n). One block per row: block reductions for max / sums / argmax, the top-k
// and top-p cut-offs by a 31-step bisection over the probabilities' bit patterns (count and
// fp64 mass of probabilities >= a threshold; no sort, any top_k), the inverse CDF by a block
// prefix sum in fp64 in token-id order at u = SamplingPhiloxUniform(seed, position).
// Equal to the CPU token except where the two sides' rounding differences move a probability
// across a cut-off or u across a CDF step: both take float(exp(double)) per probability (the
// two libraries' double exp round to the same float but for ~2^-29 of arguments, where their
// expf differ by an ulp far more often) and sum in fp64 in other orders, so flips are
// vanishingly rare, and the tests expect none.
// NaN: greedy over a row whose (penalised) logit 0 is NaN gives 0, otherwise NaNs are
// skipped; a sampled row with a NaN probability (a NaN or +inf logit, all logits -inf, a NaN
// temperature) gives token vocab - 1 (the CPU sampler's result); logprobs of a row with a NaN
// or +inf logit are all NaN (top ids then rank NaN last, ties by id, where the CPU's order is
// unspecified). Cost: a few passes over the row, plus 31 when top-k or top-p is on.
// Limits: vocab and rows in [1, 2^31 - 1] (rows 0: OK, nothing enqueued), top_n in
// [0, kMaxSampleTopLogprobs = 20], num_seen in [0, 2^31 - 1], any top_k; InvalidArgument
// otherwise or for a null pointer the call needs (seen lists only when num_seen > 0, top
// outputs only when top_n > 0; token_logprobs may be null).
[[nodiscard]] absl::Status SampleTokens(const SampleTokensParams& p, Stream stream);

// ------------------------------------- row gather -------------------------------------------

// out[i, :] = src[indices[i], :] for i in [0, rows): an exact copy of the bf16 bits (NaN
// payloads included); indices may repeat and need not be sorted. One block per output row.
// An index outside [0, src_rows) (checked on the device) makes that output row all NaN
// (bf16 0x7fc0) and reads nothing of src. Limits: rows in [0, 2^31 - 1] (0: OK, nothing
// enqueued), src_rows and dim in [1, 2^31 - 1]; InvalidArgument otherwise or for a null
// pointer when rows > 0.
[[nodiscard]] absl::Status GatherRows(const GatherRowsParams& p, Stream stream);

// Programmatic dependent launch (Hopper, sm_90, and later): while one of these lives with
// `on`, every kernel of kernels/cuda that this thread enqueues is launched so that it may begin
// while the kernel before it in the stream is finishing (its launch overlaps that kernel's
// tail); each kernel waits for its predecessor to complete (griddepcontrol.wait) before it
// touches memory, so results are the same bits as without. Ignored on older devices. Nests:
// the destructor restores the setting it found. Kernels of other libraries (cuBLASLt, NCCL)
// launch as they always do.
class ScopedProgrammaticLaunch {
 public:
  explicit ScopedProgrammaticLaunch(bool on);
  ~ScopedProgrammaticLaunch();
  ScopedProgrammaticLaunch(const ScopedProgrammaticLaunch&) = delete;
  ScopedProgrammaticLaunch& operator=(const ScopedProgrammaticLaunch&) = delete;

 private:
  bool previous_;
};

// The registry of the CUDA ops above: one entry per public op, in declaration order. The
// backend-ops test checks that it has cases for every name here, so an op added to this
// header and to the table (kernels/cuda/cuda_ops.cc) without a test case fails the test.
struct CudaOpInfo {
  std::string_view name;      // the function's name, e.g. "AddRmsNorm"
  std::string_view contract;  // one line: dtypes in -> out
};
std::span<const CudaOpInfo> RegisteredCudaOps();

}  // namespace tpserve::kernels::cuda
