// The public CUDA ops: argument checks on the host, then the launchers of the .cu files
// (kernels/cuda/launch.h), whose raw CUDA error codes become Status in cuda_status.cc.
// Checking here, in C++, keeps the .cu files free of abseil and the checks in one place.
#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <cmath>
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

// Grid y and z dimensions hold at most 65535 blocks (attention puts heads and sequences there).
constexpr int64_t kMaxGridYZ = 65535;

// The checks both attention ops share. Resolves q_token_stride; sets *has_work to false when
// there is nothing to enqueue (zero tokens or zero sequences).
absl::Status CheckAttention(absl::string_view op, PagedAttentionParams* p, bool* has_work) {
  const PagedKvCache& c = p->cache;
  RETURN_IF_ERROR(CheckTokens(op, p->tokens));
  RETURN_IF_ERROR(CheckSize(op, "cache.num_blocks", c.num_blocks));
  RETURN_IF_ERROR(CheckSize(op, "cache.block_size", c.block_size));
  RETURN_IF_ERROR(CheckSize(op, "cache.kv_heads", c.kv_heads));
  if (c.head_dim != 64 && c.head_dim != 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": cache.head_dim = ", c.head_dim, " is not supported (64 or 128)"));
  }
  if (p->q_heads < 1 || p->q_heads > kMaxGridYZ) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": q_heads = ", p->q_heads, " is outside [1, ", kMaxGridYZ, "]"));
  }
  if (p->q_heads % c.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": q_heads = ", p->q_heads,
                                                   " is not a multiple of cache.kv_heads = ",
                                                   c.kv_heads));
  }
  // Both factors are below 2^31, so the slot count cannot overflow; the element count could.
  const int64_t row = c.kv_heads * c.head_dim;
  const int64_t num_slots = c.num_blocks * c.block_size;
  if (num_slots > std::numeric_limits<int64_t>::max() / row) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": a cache of ", num_slots, " slots of ", row, " elements overflows"));
  }
  if (p->num_seqs < 0 || p->num_seqs > kMaxGridYZ) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_seqs = ", p->num_seqs, " is outside [0, ", kMaxGridYZ, "]"));
  }
  if (!std::isfinite(p->scale)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": scale = ", p->scale, " is not finite"));
  }
  if (p->sliding_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": sliding_window = ", p->sliding_window, " is negative"));
  }
  RETURN_IF_ERROR(ResolveStride(op, "q_token_stride", p->q_heads * c.head_dim, &p->q_token_stride));
  *has_work = p->tokens > 0 && p->num_seqs > 0;
  if (!*has_work) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(op, "q", p->q));
  RETURN_IF_ERROR(CheckPointer(op, "out", p->out));
  RETURN_IF_ERROR(CheckPointer(op, "seqs", p->seqs));
  RETURN_IF_ERROR(CheckPointer(op, "cache.k", c.k));
  RETURN_IF_ERROR(CheckPointer(op, "cache.v", c.v));
  // The kernels read the cache in 16-byte pieces (8 bf16 of one head row).
  if (reinterpret_cast<uintptr_t>(c.k) % 16 != 0 || reinterpret_cast<uintptr_t>(c.v) % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": cache.k and cache.v must be 16-byte aligned"));
  }
  return absl::OkStatus();
}

constexpr CudaOpInfo kRegistry[] = {
    {"Embedding", "int32 ids, bf16 table -> fp32 residual rows"},
    {"AddRmsNorm", "fp32 residual += bf16 delta (optional); bf16 weight -> bf16 normalised rows"},
    {"ApplyRope", "bf16 q/k in place, fp32 cos/sin table, int32 positions"},
    {"SwiGlu", "bf16 gate_up [tokens, 2*inter] -> bf16 [tokens, inter]"},
    {"WriteKvCache", "bf16 k/v rows -> bf16 paged cache at int64 slots"},
    {"ApplyRopeAndWriteKvCache", "ApplyRope, then WriteKvCache of the rotated rows, one launch"},
    {"Gemm", "bf16 x [tokens, cols] . bf16 w [rows, cols]^T -> bf16 or fp32 y (cuBLASLt)"},
    {"GemmSwiGlu", "bf16 x . bf16 gate_up weight^T -> SwiGlu -> bf16 [tokens, inter]"},
    {"PagedPrefillAttention", "bf16 q, bf16 paged K/V cache -> bf16 out, ragged causal GQA"},
    {"PagedDecodeAttention", "bf16 q (1 token/seq), bf16 paged K/V -> bf16 out, split-K"},
    {"SampleTokens", "fp32 logits [rows, vocab] -> int32 token, fp32 logprob, top-N per row"},
    {"GatherRows", "bf16 src [src_rows, dim], int32 indices [rows] -> bf16 [rows, dim]"},
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

namespace {

// ApplyRope's checks, in errors named `op`; resolves params->token_stride.
absl::Status CheckRope(absl::string_view op, RopeParams* params) {
  RopeParams& p = *params;
  RETURN_IF_ERROR(CheckTokens(op, p.tokens));
  RETURN_IF_ERROR(CheckSize(op, "heads", p.heads));
  RETURN_IF_ERROR(CheckSize(op, "head_dim", p.head_dim));
  if (p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": head_dim = ", p.head_dim, " is odd"));
  }
  RETURN_IF_ERROR(CheckSize(op, "heads * head_dim", p.heads * p.head_dim));
  RETURN_IF_ERROR(ResolveStride(op, "token_stride", p.heads * p.head_dim, &p.token_stride));
  RETURN_IF_ERROR(CheckSize(op, "max_positions", p.max_positions));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(op, "x", p.x));
  RETURN_IF_ERROR(CheckPointer(op, "positions", p.positions));
  RETURN_IF_ERROR(CheckPointer(op, "cos", p.cos));
  return CheckPointer(op, "sin", p.sin);
}

}  // namespace

absl::Status ApplyRope(const RopeParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::ApplyRope";
  RopeParams p = params;
  RETURN_IF_ERROR(CheckRope(kOp, &p));
  if (p.tokens == 0) return absl::OkStatus();
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

namespace {

// WriteKvCache's checks, in errors named `op`; resolves the token strides.
absl::Status CheckWriteKv(absl::string_view op, WriteKvCacheParams* params) {
  WriteKvCacheParams& p = *params;
  const PagedKvCache& c = p.cache;
  RETURN_IF_ERROR(CheckTokens(op, p.tokens));
  RETURN_IF_ERROR(CheckSize(op, "cache.num_blocks", c.num_blocks));
  RETURN_IF_ERROR(CheckSize(op, "cache.block_size", c.block_size));
  RETURN_IF_ERROR(CheckSize(op, "cache.kv_heads", c.kv_heads));
  RETURN_IF_ERROR(CheckSize(op, "cache.head_dim", c.head_dim));
  const int64_t row = c.kv_heads * c.head_dim;
  RETURN_IF_ERROR(CheckSize(op, "cache.kv_heads * cache.head_dim", row));
  // Both factors are below 2^31, so the slot count cannot overflow; the element count could.
  const int64_t num_slots = c.num_blocks * c.block_size;
  if (num_slots > std::numeric_limits<int64_t>::max() / row) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": a cache of ", num_slots, " slots of ", row, " elements overflows"));
  }
  RETURN_IF_ERROR(ResolveStride(op, "k_token_stride", row, &p.k_token_stride));
  RETURN_IF_ERROR(ResolveStride(op, "v_token_stride", row, &p.v_token_stride));
  if (p.tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(op, "k", p.k));
  RETURN_IF_ERROR(CheckPointer(op, "v", p.v));
  RETURN_IF_ERROR(CheckPointer(op, "slots", p.slots));
  RETURN_IF_ERROR(CheckPointer(op, "cache.k", c.k));
  return CheckPointer(op, "cache.v", c.v);
}

}  // namespace

absl::Status WriteKvCache(const WriteKvCacheParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::WriteKvCache";
  WriteKvCacheParams p = params;
  RETURN_IF_ERROR(CheckWriteKv(kOp, &p));
  if (p.tokens == 0) return absl::OkStatus();
  return LaunchStatus(kOp, internal::LaunchWriteKvCache(p, stream));
}

absl::Status ApplyRopeAndWriteKvCache(const RopeParams& rope, const WriteKvCacheParams& kv,
                                      Stream stream) {
  constexpr absl::string_view kOp = "cuda::ApplyRopeAndWriteKvCache";
  RopeParams r = rope;
  WriteKvCacheParams w = kv;
  RETURN_IF_ERROR(CheckRope(kOp, &r));
  RETURN_IF_ERROR(CheckWriteKv(kOp, &w));
  if (r.tokens != w.tokens) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": rope.tokens = ", r.tokens,
                                                   " but kv.tokens = ", w.tokens));
  }
  if (r.tokens == 0) return absl::OkStatus();
  return LaunchStatus(kOp, internal::LaunchApplyRopeAndWriteKvCache(r, w, stream));
}

absl::Status PagedPrefillAttention(const PagedAttentionParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::PagedPrefillAttention";
  PagedAttentionParams p = params;
  bool has_work = false;
  RETURN_IF_ERROR(CheckAttention(kOp, &p, &has_work));
  if (p.max_seq_tokens == 0) p.max_seq_tokens = std::max<int64_t>(p.tokens, 1);
  if (p.max_seq_tokens < 1 || p.max_seq_tokens > std::max<int64_t>(p.tokens, 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": max_seq_tokens = ", p.max_seq_tokens, " is outside [1, tokens = ", p.tokens, "]"));
  }
  if (!has_work) return absl::OkStatus();
  return LaunchStatus(kOp, internal::LaunchPagedPrefillAttention(p, stream));
}

absl::Status PagedDecodeAttention(const DecodeAttentionParams& params, Stream stream) {
  constexpr absl::string_view kOp = "cuda::PagedDecodeAttention";
  DecodeAttentionParams p = params;
  bool has_work = false;
  RETURN_IF_ERROR(CheckAttention(kOp, &p.attn, &has_work));
  const int64_t group = p.attn.q_heads / p.attn.cache.kv_heads;
  if (group > kMaxDecodeGroup) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": q_heads / kv_heads = ", group,
                                                   " is above ", kMaxDecodeGroup));
  }
  if (p.max_context < 0 || p.splits < 0 || p.workspace_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": max_context = ", p.max_context, ", splits = ", p.splits,
        ", workspace_bytes = ", p.workspace_bytes, ": none may be negative"));
  }
  if (p.workspace == nullptr) p.workspace_bytes = 0;
  if (reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": workspace must be 16-byte aligned"));
  }
  if (!has_work) return absl::OkStatus();
  const int splits = internal::ChooseDecodeSplits(
      p.attn.num_seqs, p.attn.q_heads, p.attn.cache.kv_heads, p.attn.cache.head_dim,
      p.max_context, p.attn.sliding_window, p.splits, p.workspace_bytes,
      internal::CurrentDeviceMultiprocessors());
  return LaunchStatus(kOp, internal::LaunchPagedDecodeAttention(p, splits, stream));
}

absl::Status SampleTokens(const SampleTokensParams& p, Stream stream) {
  constexpr absl::string_view kOp = "cuda::SampleTokens";
  RETURN_IF_ERROR(CheckTokens(kOp, p.rows));
  RETURN_IF_ERROR(CheckSize(kOp, "vocab", p.vocab));
  if (p.top_n < 0 || p.top_n > kMaxSampleTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": top_n = ", p.top_n, " is outside [0, ", kMaxSampleTopLogprobs, "]"));
  }
  if (p.num_seen < 0 || p.num_seen > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": num_seen = ", p.num_seen, " is outside [0, ", kMaxSize, "]"));
  }
  if (p.rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "logits", p.logits));
  RETURN_IF_ERROR(CheckPointer(kOp, "params", p.params));
  RETURN_IF_ERROR(CheckPointer(kOp, "workspace", p.workspace));
  RETURN_IF_ERROR(CheckPointer(kOp, "tokens", p.tokens));
  if (p.num_seen > 0) {
    RETURN_IF_ERROR(CheckPointer(kOp, "seen_offsets", p.seen_offsets));
    RETURN_IF_ERROR(CheckPointer(kOp, "seen_ids", p.seen_ids));
  }
  if (p.top_n > 0) {
    RETURN_IF_ERROR(CheckPointer(kOp, "top_ids", p.top_ids));
    RETURN_IF_ERROR(CheckPointer(kOp, "top_logprobs", p.top_logprobs));
  }
  return LaunchStatus(kOp, internal::LaunchSampleTokens(p, stream));
}

absl::Status GatherRows(const GatherRowsParams& p, Stream stream) {
  constexpr absl::string_view kOp = "cuda::GatherRows";
  RETURN_IF_ERROR(CheckTokens(kOp, p.rows));
  RETURN_IF_ERROR(CheckSize(kOp, "src_rows", p.src_rows));
  RETURN_IF_ERROR(CheckSize(kOp, "dim", p.dim));
  if (p.rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPointer(kOp, "src", p.src));
  RETURN_IF_ERROR(CheckPointer(kOp, "indices", p.indices));
  RETURN_IF_ERROR(CheckPointer(kOp, "out", p.out));
  return LaunchStatus(kOp, internal::LaunchGatherRows(p, stream));
}

int64_t DecodeAttentionWorkspaceBytes(int64_t num_seqs, int64_t q_heads, int64_t head_dim,
                                      int64_t splits) {
  if (num_seqs <= 0 || q_heads <= 0 || head_dim <= 0 || splits <= 1) return 0;
  // Every factor is capped so that the product cannot overflow (2^16 * 2^16 * 2^6 * 2^11 * 4);
  // larger values are refused by the op anyway.
  num_seqs = std::min(num_seqs, kMaxGridYZ + 1);
  q_heads = std::min(q_heads, kMaxGridYZ + 1);
  splits = std::min<int64_t>(splits, 64);
  head_dim = std::min<int64_t>(head_dim, 2048);
  return num_seqs * q_heads * splits * (head_dim + 2) * static_cast<int64_t>(sizeof(float));
}

namespace internal {

int ChooseDecodeSplits(int64_t num_seqs, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                       int64_t max_context, int64_t sliding_window, int64_t requested,
                       int64_t workspace_bytes, int multiprocessors) {
  if (num_seqs < 1 || q_heads < 1 || kv_heads < 1 || head_dim < 1) return 1;
  const int64_t per_split = DecodeAttentionWorkspaceBytes(num_seqs, q_heads, head_dim, 2) / 2;
  int64_t cap = std::min(kMaxDecodeSplits, workspace_bytes / std::max<int64_t>(per_split, 1));
  int64_t splits = requested;
  if (splits == 0) {
    // Automatic: about two waves of blocks, but no split shorter than kMinKeysPerDecodeSplit.
    const int64_t blocks = num_seqs * kv_heads;
    splits = multiprocessors > 0 ? (2 * int64_t{multiprocessors} + blocks - 1) / blocks : 1;
    int64_t keys = max_context;
    if (sliding_window > 0) keys = keys > 0 ? std::min(keys, sliding_window) : sliding_window;
    if (keys > 0) {
      splits = std::min(splits, (keys + kMinKeysPerDecodeSplit - 1) / kMinKeysPerDecodeSplit);
    }
  }
  splits = std::min(splits, cap);
  return static_cast<int>(std::max<int64_t>(splits, 1));
}

}  // namespace internal

std::span<const CudaOpInfo> RegisteredCudaOps() { return kRegistry; }

}  // namespace tpserve::kernels::cuda
