// The CUDA emulator's cuBLASLt: the calls kernels/cuda/gemm.cc makes, over host memory.
// cublasLtMatmul computes D = alpha op(A) op(B) + beta C for column-major matrices of fp32 or
// bf16 (fp32 compute and scale, host-side alpha and beta, the default epilogue), accumulating
// in fp32, and runs in its stream's order like a kernel. Any other descriptor
// attribute or type is refused with CUBLAS_STATUS_NOT_SUPPORTED, so a new use shows here
// instead of being emulated wrongly.
#include <cublasLt.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "tests/cuda_emulator/runtime.h"
#include "tests/cuda_emulator/warp_matrix.h"

struct cublasLtContext {};

namespace tpserve::cuda_emulator {
namespace {

struct Layout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct Desc {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t));
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t));

Layout& LayoutOf(cublasLtMatrixLayout_t l) { return *reinterpret_cast<Layout*>(l->data); }
Desc& DescOf(cublasLtMatmulDesc_t d) { return *reinterpret_cast<Desc*>(d->data); }

bool Supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }
size_t ElementBytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

float Load(const void* base, cudaDataType t, uint64_t i, uint64_t j, int64_t ld) {
  const uint64_t at = i + j * static_cast<uint64_t>(ld);
  if (t == CUDA_R_32F) return static_cast<const float*>(base)[at];
  return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[at]);
}

void Store(void* base, cudaDataType t, uint64_t i, uint64_t j, int64_t ld, float v) {
  const uint64_t at = i + j * static_cast<uint64_t>(ld);
  if (t == CUDA_R_32F) {
    static_cast<float*>(base)[at] = v;
  } else {
    static_cast<uint16_t*>(base)[at] = FloatToBf16Bits(v);
  }
}

// Eight interleaved fp32 partial sums (vectorisable; the order is any fp32 order, as cuBLASLt's
// own is unspecified), then their sum.
float Dot(const float* x, const float* y, uint64_t n) {
  float part[8] = {};
  uint64_t p = 0;
  for (; p + 8 <= n; p += 8) {
    for (int l = 0; l < 8; ++l) part[l] += x[p + l] * y[p + l];
  }
  for (; p < n; ++p) part[p % 8] += x[p] * y[p];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// Whether a column-major matrix of this layout at p lies in device memory.
bool InDevice(const void* p, const Layout& l) {
  if (l.rows == 0 || l.cols == 0) return true;
  const uint64_t span = (l.cols - 1) * static_cast<uint64_t>(l.ld) + l.rows;
  return IsDeviceMemory(p, span * ElementBytes(l.type));
}

}  // namespace
}  // namespace tpserve::cuda_emulator

namespace emu = tpserve::cuda_emulator;

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
#define TPSERVE_STATUS_NAME(s) \
  case s:                      \
    return #s;
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_SUCCESS)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_NOT_INITIALIZED)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_ALLOC_FAILED)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_INVALID_VALUE)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_ARCH_MISMATCH)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_MAPPING_ERROR)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_EXECUTION_FAILED)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_INTERNAL_ERROR)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_NOT_SUPPORTED)
    TPSERVE_STATUS_NAME(CUBLAS_STATUS_LICENSE_ERROR)
#undef TPSERVE_STATUS_NAME
  }
  return "CUBLAS_STATUS (unknown)";
}
const char* cublasLtGetStatusString(cublasStatus_t status) { return cublasLtGetStatusName(status); }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cublasLtMatmulDescOpaque_t{};
  new ((*desc)->data) emu::Desc{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t bytes) {
  if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
  cublasOperation_t op;
  std::memcpy(&op, buf, sizeof op);
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
  (attr == CUBLASLT_MATMUL_DESC_TRANSA ? emu::DescOf(desc).trans_a : emu::DescOf(desc).trans_b) =
      op;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (!emu::Supported(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < static_cast<int64_t>(rows) || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t{};
  new ((*layout)->data) emu::Layout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void*, size_t) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return CUBLAS_STATUS_SUCCESS;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results,
                                              int* found) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].workspaceSize = 0;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* a, cublasLtMatrixLayout_t a_desc, const void* b,
                              cublasLtMatrixLayout_t b_desc, const void* beta, const void* c,
                              cublasLtMatrixLayout_t c_desc, void* d, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  if (handle == nullptr || desc == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const emu::Desc op = emu::DescOf(desc);
  const emu::Layout la = emu::LayoutOf(a_desc), lb = emu::LayoutOf(b_desc),
                    lc = emu::LayoutOf(c_desc), ld = emu::LayoutOf(d_desc);
  const bool ta = op.trans_a == CUBLAS_OP_T, tb = op.trans_b == CUBLAS_OP_T;
  const uint64_t m = ta ? la.cols : la.rows, k = ta ? la.rows : la.cols;
  const uint64_t n = tb ? lb.rows : lb.cols, kb = tb ? lb.cols : lb.rows;
  if (k != kb || lc.rows != m || lc.cols != n || ld.rows != m || ld.cols != n) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (!emu::InDevice(a, la) || !emu::InDevice(b, lb) || !emu::InDevice(d, ld) ||
      !emu::InDevice(c, lc)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  float alpha_v, beta_v;
  std::memcpy(&alpha_v, alpha, sizeof alpha_v);
  std::memcpy(&beta_v, beta, sizeof beta_v);
  emu::EnqueueWork(stream, [=] {
    // op(A) as rows of k and op(B) as columns of k, widened once, then dot products.
    std::vector<float> a_rows(m * k), b_cols(n * k);
    for (uint64_t i = 0; i < m; ++i) {
      for (uint64_t p = 0; p < k; ++p) {
        a_rows[i * k + p] =
            ta ? emu::Load(a, la.type, p, i, la.ld) : emu::Load(a, la.type, i, p, la.ld);
      }
    }
    for (uint64_t j = 0; j < n; ++j) {
      for (uint64_t p = 0; p < k; ++p) {
        b_cols[j * k + p] =
            tb ? emu::Load(b, lb.type, j, p, lb.ld) : emu::Load(b, lb.type, p, j, lb.ld);
      }
    }
    for (uint64_t j = 0; j < n; ++j) {
      for (uint64_t i = 0; i < m; ++i) {
        float v = alpha_v * emu::Dot(&a_rows[i * k], &b_cols[j * k], k);
        if (beta_v != 0.0f) v += beta_v * emu::Load(c, lc.type, i, j, lc.ld);
        emu::Store(d, ld.type, i, j, ld.ld, v);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}
