// The two prefill attention kernels behind PagedPrefillAttention (layer: kernels/cuda, internal:
// for the backend-ops test and the GPU benchmark, not for the decoder, which calls the public
// op). A plain C++ header like cuda_ops.h: no CUDA types.
//  - the tensor-core kernel (attention_prefill_tc.cu): mma.sync bf16 with fp32 accumulation;
//    what the public op runs;
//  - the CUDA-core kernel (attention_prefill.cu): fp32 FMAs, simpler, kept as the GPU version
//    the tensor-core kernel is compared with (and timed against).
// Both functions below have PagedPrefillAttention's whole contract (cuda_ops.h: the same host
// checks and Status codes, the same device-side checks, NaN/inf rules and tolerance against
// kernels::ref::PagedAttention); their results differ only by fp32 rounding.
// Thread safety: as the public op. Each call picks its kernel for the duration of the call on
// the calling thread only (a thread-local choice that PagedPrefillAttention's launcher reads),
// so concurrent calls from other threads are unaffected.
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/cuda_ops.h"

namespace tpserve::kernels::cuda::internal {

// PagedPrefillAttention on the CUDA-core kernel.
[[nodiscard]] absl::Status PagedPrefillAttentionSimt(const PagedAttentionParams& p,
                                                     Stream stream);

// PagedPrefillAttention on the tensor-core kernel (what the public op runs today; calling
// this keeps a benchmark or test on that kernel should the public op's choice change).
[[nodiscard]] absl::Status PagedPrefillAttentionTensorCore(const PagedAttentionParams& p,
                                                           Stream stream);

// The kernel PagedPrefillAttention launches when called on this thread: kTensorCore, except
// inside PagedPrefillAttentionSimt. For the host-side test of the selection.
enum class PrefillKernel : int { kTensorCore = 0, kSimt = 1 };
PrefillKernel PrefillKernelOnThisThread();

}  // namespace tpserve::kernels::cuda::internal
