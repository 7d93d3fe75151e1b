// GemmHandle (kernels/cuda/cuda_ops.h): y[tokens, rows] = x[tokens, cols] · w^T through
// cuBLASLt, bf16 inputs, fp32 accumulation, bf16 or fp32 output.
//
// Layout: cuBLASLt is column-major. Our row-major w [rows, cols] is the column-major matrix
// W' [cols, rows] (ld = cols), x [tokens, cols] is X' [cols, tokens] (ld = cols) and y
// [tokens, rows] is Y' [rows, tokens] (ld = rows). So Y' = W'^T · X': A = w with op T, B = x
// with op N ("TN", the layout cuBLASLt's Hopper kernels prefer), C = D = y, alpha 1, beta 0
// (C is never read). For a bf16 y, split-K algorithms may only reduce their partial sums in
// fp32 (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE), never in bf16.
// Up to 8 tokens (decode steps), when the shape allows, a kernel of our own
// (gemm_skinny.cu) runs instead: see GemmHandle::UsesSmallBatchKernel.
// Plans: a shape's descriptors and the heuristic's first algorithm are built once and cached
// in a map keyed by (tokens, rows, cols, output dtype, alignment of each pointer): the
// heuristic picks kernels that assume the alignments it is told, so a plan built for 256-byte
// aligned pointers is never used with less aligned ones.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda {
namespace {

constexpr absl::string_view kOp = "cuda::GemmHandle::Gemm";
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();

// The largest power of two (up to 256) dividing the address: what cuBLASLt may assume.
uint32_t AlignmentOf(const void* ptr) {
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  uint32_t align = 256;
  while (align > 1 && addr % align != 0) align /= 2;
  return align;
}

absl::Status Cublas(cublasStatus_t status, absl::string_view what) {
  return CublasStatusToStatus(static_cast<int>(status), what);
}

absl::Status CheckGemm(const GemmParams& p, absl::string_view op = kOp) {
  if (p.tokens < 0 || p.tokens > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tokens = ", p.tokens, " is outside [0, ", kMaxSize, "]"));
  }
  for (const auto& [name, value] : {std::pair<absl::string_view, int64_t>{"rows", p.rows},
                                    std::pair<absl::string_view, int64_t>{"cols", p.cols}}) {
    if (value < 1 || value > kMaxSize) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, " = ", value, " is outside [1, ", kMaxSize, "]"));
    }
  }
  if (p.output != GemmOutput::kBf16 && p.output != GemmOutput::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": unknown output dtype ", static_cast<int>(p.output)));
  }
  if (p.tokens == 0) return absl::OkStatus();
  const uint32_t y_elem = p.output == GemmOutput::kF32 ? 4 : 2;
  const std::tuple<absl::string_view, const void*, uint32_t> ptrs[] = {
      {"x", p.x, 2}, {"w", p.w, 2}, {"y", p.y, y_elem}};
  for (const auto& [name, ptr, elem] : ptrs) {
    if (ptr == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is null"));
    if (AlignmentOf(ptr) < elem) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, " is not ", elem, "-byte aligned"));
    }
  }
  return absl::OkStatus();
}

// The cuBLASLt objects of one shape. Owns its descriptors.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_needed = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c != nullptr) (void)cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
  }
};

// tokens, rows, cols, output dtype, alignments of x, w, y.
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int32_t, uint32_t, uint32_t, uint32_t>;

class Preference {
 public:
  Preference() = default;
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  ~Preference() {
    if (pref_ != nullptr) (void)cublasLtMatmulPreferenceDestroy(pref_);
  }
  cublasLtMatmulPreference_t* out() { return &pref_; }
  cublasLtMatmulPreference_t get() const { return pref_; }

 private:
  cublasLtMatmulPreference_t pref_ = nullptr;
};

}  // namespace

struct GemmHandle::State {
  bool small_batch_kernel = true;
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;

  ~State() {
    plans.clear();
    if (handle != nullptr) (void)cublasLtDestroy(handle);
  }

  absl::StatusOr<const Plan*> GetPlan(const GemmParams& p) {
    const uint32_t align_x = AlignmentOf(p.x), align_w = AlignmentOf(p.w),
                   align_y = AlignmentOf(p.y);
    const PlanKey key{p.tokens, p.rows, p.cols, static_cast<int32_t>(p.output),
                      align_x, align_w, align_y};
    if (auto it = plans.find(key); it != plans.end()) return it->second.get();

    auto plan = std::make_unique<Plan>();
    const cudaDataType_t y_type = p.output == GemmOutput::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    RETURN_IF_ERROR(Cublas(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                           "cublasLtMatmulDescCreate"));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    RETURN_IF_ERROR(Cublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                          &trans_a, sizeof trans_a),
                           "cublasLtMatmulDescSetAttribute(TRANSA)"));
    RETURN_IF_ERROR(Cublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                          &trans_b, sizeof trans_b),
                           "cublasLtMatmulDescSetAttribute(TRANSB)"));
    // A = w as stored: column-major [cols, rows], ld cols (op T makes it [rows, cols]).
    RETURN_IF_ERROR(Cublas(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, p.cols, p.rows, p.cols),
                           "cublasLtMatrixLayoutCreate(w)"));
    // B = x: column-major [cols, tokens], ld cols.
    RETURN_IF_ERROR(Cublas(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, p.cols, p.tokens, p.cols),
                           "cublasLtMatrixLayoutCreate(x)"));
    // C = D = y: column-major [rows, tokens], ld rows.
    RETURN_IF_ERROR(Cublas(cublasLtMatrixLayoutCreate(&plan->c, y_type, p.rows, p.tokens, p.rows),
                           "cublasLtMatrixLayoutCreate(y)"));

    Preference pref;
    RETURN_IF_ERROR(Cublas(cublasLtMatmulPreferenceCreate(pref.out()),
                           "cublasLtMatmulPreferenceCreate"));
    const uint64_t max_workspace = workspace.size();
    RETURN_IF_ERROR(Cublas(
        cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &max_workspace, sizeof max_workspace),
        "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)"));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_w},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_x},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_y},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_y}};
    for (const auto& [attr, value] : aligns) {
      RETURN_IF_ERROR(Cublas(
          cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &value, sizeof value),
          "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)"));
    }
    if (p.output == GemmOutput::kBf16) {
      // Split-K partial sums must stay fp32: the in-place and output-type reduction schemes
      // would add bf16-rounded partials.
      const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      RETURN_IF_ERROR(Cublas(
          cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                               &schemes, sizeof schemes),
          "cublasLtMatmulPreferenceSetAttribute(REDUCTION_SCHEME_MASK)"));
    }

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    RETURN_IF_ERROR(Cublas(cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b,
                                                          plan->c, plan->c, pref.get(), 1, &result,
                                                          &found),
                           "cublasLtMatmulAlgoGetHeuristic"));
    if (found < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
      return absl::FailedPreconditionError(absl::StrCat(
          kOp, ": cuBLASLt has no algorithm for tokens = ", p.tokens, ", rows = ", p.rows,
          ", cols = ", p.cols, " (alignments x ", align_x, ", w ", align_w, ", y ", align_y,
          " bytes)"));
    }
    plan->algo = result.algo;
    plan->workspace_needed = result.workspaceSize;
    const Plan* raw = plan.get();
    plans.emplace(key, std::move(plan));
    return raw;
  }
};

GemmHandle::GemmHandle() = default;
GemmHandle::GemmHandle(GemmHandle&& other) noexcept = default;
GemmHandle& GemmHandle::operator=(GemmHandle&& other) noexcept = default;
GemmHandle::~GemmHandle() = default;

absl::StatusOr<GemmHandle> GemmHandle::Create(int64_t workspace_bytes) {
  if (workspace_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda::GemmHandle::Create: workspace_bytes = ", workspace_bytes, " < 0"));
  }
  // Without a device, fail cleanly before cuBLASLt is touched.
  if (CudaDeviceCount() == 0) {
    return absl::UnavailableError("cuda::GemmHandle::Create: no CUDA device or driver");
  }
  auto state = std::make_unique<State>();
  ASSIGN_OR_RETURN(state->workspace, DeviceBuffer::Allocate(static_cast<size_t>(workspace_bytes)));
  RETURN_IF_ERROR(Cublas(cublasLtCreate(&state->handle), "cublasLtCreate"));
  GemmHandle handle;
  handle.state_ = std::move(state);
  return handle;
}

absl::Status GemmHandle::Gemm(const GemmParams& p, Stream stream) {
  RETURN_IF_ERROR(CheckGemm(p));
  if (state_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(kOp, ": the handle is empty (use GemmHandle::Create)"));
  }
  if (p.tokens == 0) return absl::OkStatus();
  if (state_->small_batch_kernel && UsesSmallBatchKernel(p)) {
    return CudaErrorToStatus(internal::LaunchSkinnyGemm(p, stream),
                             absl::StrCat(kOp, " (small-batch kernel) launch"));
  }
  ASSIGN_OR_RETURN(const Plan* plan, state_->GetPlan(p));
  const float alpha = 1.0f, beta = 0.0f;
  return Cublas(cublasLtMatmul(state_->handle, plan->desc, &alpha, p.w, plan->a, p.x, plan->b,
                               &beta, p.y, plan->c, p.y, plan->c, &plan->algo,
                               state_->workspace.data(), state_->workspace.size(),
                               static_cast<cudaStream_t>(stream.handle)),
                "cublasLtMatmul");
}

size_t GemmHandle::cached_plans() const { return state_ == nullptr ? 0 : state_->plans.size(); }

void GemmHandle::set_small_batch_kernel(bool on) {
  if (state_ != nullptr) state_->small_batch_kernel = on;
}

bool GemmHandle::small_batch_kernel() const {
  return state_ != nullptr && state_->small_batch_kernel;
}

absl::Status GemmHandle::GemmSwiGlu(const GemmSwiGluParams& p, Stream stream) {
  constexpr absl::string_view kSwiGluOp = "cuda::GemmHandle::GemmSwiGlu";
  if (p.inter < 1 || p.inter > kMaxSize / 2) {
    return absl::InvalidArgumentError(absl::StrCat(kSwiGluOp, ": inter = ", p.inter,
                                                   " is outside [1, ", kMaxSize / 2, "]"));
  }
  // As Gemm checks its y, the fused path checks out (gate_up is the two-op path's, below).
  RETURN_IF_ERROR(CheckGemm(
      {p.x, p.w, p.out, GemmOutput::kBf16, p.tokens, 2 * p.inter, p.cols}, kSwiGluOp));
  if (state_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(kSwiGluOp, ": the handle is empty (use GemmHandle::Create)"));
  }
  if (p.tokens == 0) return absl::OkStatus();
  if (state_->small_batch_kernel && UsesFusedSwiGluKernel(p)) {
    return CudaErrorToStatus(internal::LaunchSkinnyGemmSwiGlu(p, stream),
                             absl::StrCat(kSwiGluOp, " (fused small-batch kernel) launch"));
  }
  if (p.gate_up == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        kSwiGluOp, ": gate_up is null, and ", p.tokens, " tokens need the two-op path"));
  }
  RETURN_IF_ERROR(
      Gemm({p.x, p.w, p.gate_up, GemmOutput::kBf16, p.tokens, 2 * p.inter, p.cols}, stream));
  return SwiGlu({p.gate_up, p.out, p.tokens, p.inter}, stream);
}

bool GemmHandle::UsesFusedSwiGluKernel(const GemmSwiGluParams& p) {
  return UsesSmallBatchKernel({p.x, p.w, p.out, GemmOutput::kBf16, p.tokens, 2 * p.inter, p.cols});
}

bool GemmHandle::UsesSmallBatchKernel(const GemmParams& p) {
  return p.tokens >= 1 && p.tokens <= internal::kSkinnyGemmMaxTokens && p.cols % 8 == 0 &&
         AlignmentOf(p.x) >= 16 && AlignmentOf(p.w) >= 16;
}

}  // namespace tpserve::kernels::cuda
