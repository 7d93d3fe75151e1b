// The public CUDA ops: argument checks on the host, then the launchers of the .cu files
// (kernels/cuda/launch.h), whose raw CUDA error codes become Status in cuda_status.cc.
// Checking here, in C++, keeps the .cu files free of abseil and the checks in one place.
#include "kernels/cuda/cuda_ops.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda {
namespace {

// A grid's x dimension holds at most 2^31 - 1 blocks (one per token); capping every size there
// too keeps products of two sizes far from int64 overflow inside the kernels.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();

absl::Status CheckTokens(absl::string_view op, int64_t tokens) {
  if (tokens < 0 || tokens > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tokens = ", tokens, " is outside [0, ", kMaxSize, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckSize(absl::string_view op, absl::string_view name, int64_t value) {
  if (value < 1 || value > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " = ", value, " is outside [1, ", kMaxSize, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckPointer(absl::string_view op, absl::string_view name, const void* ptr) {
  if (ptr == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is null"));
  return absl::OkStatus();
}

// A token stride of 0 means "rows packed"; otherwise it must leave room for the row.
absl::Status ResolveStride(absl::string_view op, absl::string_view name, int64_t row,
                           int64_t* stride) {
  if (*stride == 0) *stride = row;
  if (*stride < row || *stride > kMaxSize) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " = ", *stride,
                                                   " is outside [", row, ", ", kMaxSize, "]"));
  }
  return absl::OkStatus();
}

absl::Status LaunchStatus(absl::string_view op, int cuda_error) {
  return CudaErrorToStatus(cuda_error, absl::StrCat(op, " launch"));
}

constexpr CudaOpInfo kRegistry[] = {
    {"Embedding", "int32 ids, bf16 table -> fp32 residual rows"},
    {"AddRmsNorm", "fp32 residual += bf16 delta (optional); bf16 weight -> bf16 normalised rows"},
    {"ApplyRope", "bf16 q/k in place, fp32 cos/sin table, int32 positions"},
    {"SwiGlu", "bf16 gate_up [tokens, 2*inter] -> bf16 [tokens, inter]"},
    {"WriteKvCache", "bf16 k/v rows -> bf16 paged cache at int64 slots"},
};

}  // namespace

absl::Status Embedding(const EmbeddingParams& p, Stream stream) {
  constexpr absl::string_view kOp = "cuda::Embedding";
  RETURN_IF_ERROR(CheckTokens(kOp, p.tokens));
  RETURN_IF_ERROR(CheckSize(kOp, "vocab", p.vocab));
  RETURN_IF_ERROR(CheckSize(kOp, "hidden", p.hidden));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "ids", p.ids));
  RETURN_IF_ERROR(CheckPointer(kOp, "table", p.table));
  RETURN_IF_ERROR(CheckPointer(kOp, "out", p.out));
  return LaunchStatus(kOp, internal::LaunchEmbedding(p, stream));
}

absl::Status AddRmsNorm(const AddRmsNormParams& p, Stream stream) {
  constexpr absl::string_view kOp = "cuda::AddRmsNorm";
  RETURN_IF_ERROR(CheckTokens(kOp, p.tokens));
  RETURN_IF_ERROR(CheckSize(kOp, "dim", p.dim));
  if (!(p.eps >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": eps = ", p.eps, " is not >= 0"));
  }
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "residual", p.residual));
  RETURN_IF_ERROR(CheckPointer(kOp, "weight", p.weight));
  RETURN_IF_ERROR(CheckPointer(kOp, "out", p.out));
  return LaunchStatus(kOp, internal::LaunchAddRmsNorm(p, stream));
}

absl::Status ApplyRope(const RopeParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::ApplyRope";
  RopeParams p = params;
  RETURN_IF_ERROR(CheckTokens(kOp, p.tokens));
  RETURN_IF_ERROR(CheckSize(kOp, "heads", p.heads));
  RETURN_IF_ERROR(CheckSize(kOp, "head_dim", p.head_dim));
  if (p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": head_dim = ", p.head_dim, " is odd"));
  }
  RETURN_IF_ERROR(CheckSize(kOp, "heads * head_dim", p.heads * p.head_dim));
  RETURN_IF_ERROR(ResolveStride(kOp, "token_stride", p.heads * p.head_dim, &p.token_stride));
  RETURN_IF_ERROR(CheckSize(kOp, "max_positions", p.max_positions));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "x", p.x));
  RETURN_IF_ERROR(CheckPointer(kOp, "positions", p.positions));
  RETURN_IF_ERROR(CheckPointer(kOp, "cos", p.cos));
  RETURN_IF_ERROR(CheckPointer(kOp, "sin", p.sin));
  return LaunchStatus(kOp, internal::LaunchApplyRope(p, stream));
}

absl::Status SwiGlu(const SwiGluParams& p, Stream stream) {
  constexpr absl::string_view kOp = "cuda::SwiGlu";
  RETURN_IF_ERROR(CheckTokens(kOp, p.tokens));
  RETURN_IF_ERROR(CheckSize(kOp, "inter", p.inter));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "gate_up", p.gate_up));
  RETURN_IF_ERROR(CheckPointer(kOp, "out", p.out));
  return LaunchStatus(kOp, internal::LaunchSwiGlu(p, stream));
}

absl::Status WriteKvCache(const WriteKvCacheParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::WriteKvCache";
  WriteKvCacheParams p = params;
  const PagedKvCache& c = p.cache;
  RETURN_IF_ERROR(CheckTokens(kOp, p.tokens));
  RETURN_IF_ERROR(CheckSize(kOp, "cache.num_blocks", c.num_blocks));
  RETURN_IF_ERROR(CheckSize(kOp, "cache.block_size", c.block_size));
  RETURN_IF_ERROR(CheckSize(kOp, "cache.kv_heads", c.kv_heads));
  RETURN_IF_ERROR(CheckSize(kOp, "cache.head_dim", c.head_dim));
  const int64_t row = c.kv_heads * c.head_dim;
  RETURN_IF_ERROR(CheckSize(kOp, "cache.kv_heads * cache.head_dim", row));
  // Both factors are below 2^31, so the slot count cannot overflow; the element count could.
  const int64_t num_slots = c.num_blocks * c.block_size;
  if (num_slots > std::numeric_limits<int64_t>::max() / row) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": a cache of ", num_slots, " slots of ", row, " elements overflows"));
  }
  RETURN_IF_ERROR(ResolveStride(kOp, "k_token_stride", row, &p.k_token_stride));
  RETURN_IF_ERROR(ResolveStride(kOp, "v_token_stride", row, &p.v_token_stride));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "k", p.k));
  RETURN_IF_ERROR(CheckPointer(kOp, "v", p.v));
  RETURN_IF_ERROR(CheckPointer(kOp, "slots", p.slots));
  RETURN_IF_ERROR(CheckPointer(kOp, "cache.k", c.k));
  RETURN_IF_ERROR(CheckPointer(kOp, "cache.v", c.v));
  return LaunchStatus(kOp, internal::LaunchWriteKvCache(p, stream));
}

std::span<const CudaOpInfo> RegisteredCudaOps() { return kRegistry; }

}  // namespace tpserve::kernels::cuda
