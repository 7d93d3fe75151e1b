// Which prefill attention kernel the public op launches (attention_internal.h). The host checks
// of PagedPrefillAttention live in cuda_ops.cc; the internal entry points reuse them by calling
// the public op with this thread's choice of kernel set for the duration of the call, so the
// three entry points cannot drift apart in what they accept.
#include "kernels/cuda/attention_internal.h"

#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {

// The kernels' launchers (attention_prefill.cu, attention_prefill_tc.cu), with
// LaunchPagedPrefillAttention's preconditions (launch.h). Declared here rather than in
// launch.h, which this change does not touch.
int LaunchPagedPrefillAttentionSimt(const PagedAttentionParams& p, Stream stream);
int LaunchPagedPrefillAttentionTensorCore(const PagedAttentionParams& p, Stream stream);

namespace {

thread_local PrefillKernel t_prefill_kernel = PrefillKernel::kTensorCore;

// Sets this thread's kernel for one call and restores the previous choice afterwards.
class ScopedPrefillKernel {
 public:
  explicit ScopedPrefillKernel(PrefillKernel kernel) : saved_(t_prefill_kernel) {
    t_prefill_kernel = kernel;
  }
  ~ScopedPrefillKernel() { t_prefill_kernel = saved_; }
  ScopedPrefillKernel(const ScopedPrefillKernel&) = delete;
  ScopedPrefillKernel& operator=(const ScopedPrefillKernel&) = delete;

 private:
  PrefillKernel saved_;
};

}  // namespace

// The launcher cuda_ops.cc's PagedPrefillAttention calls after its checks (launch.h).
int LaunchPagedPrefillAttention(const PagedAttentionParams& p, Stream stream) {
  if (t_prefill_kernel == PrefillKernel::kSimt) return LaunchPagedPrefillAttentionSimt(p, stream);
  return LaunchPagedPrefillAttentionTensorCore(p, stream);
}

absl::Status PagedPrefillAttentionSimt(const PagedAttentionParams& p, Stream stream) {
  ScopedPrefillKernel use(PrefillKernel::kSimt);
  return PagedPrefillAttention(p, stream);
}

absl::Status PagedPrefillAttentionTensorCore(const PagedAttentionParams& p, Stream stream) {
  ScopedPrefillKernel use(PrefillKernel::kTensorCore);
  return PagedPrefillAttention(p, stream);
}

PrefillKernel PrefillKernelOnThisThread() { return t_prefill_kernel; }

}  // namespace tpserve::kernels::cuda::internal
