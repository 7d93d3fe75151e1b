// The host-side checks of CreateCudaRankCompute (create_checks.h) and CudaBackendSupports
// (cuda_rank_compute.h).
#include "worker/cuda/create_checks.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/cuda_types.h"

namespace tpserve::cuda_compute {
namespace {


absl::Status CheckMatrix(const kernels::WeightMatrix& m, int64_t rows, int64_t cols,
                         absl::string_view name) {
  if (m.rows != rows || m.cols != cols) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " is [", m.rows, ", ",
                                                   m.cols, "], this rank expects [", rows, ", ",
                                                   cols, "]"));
  }
  if (!ConvertibleDType(m.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " is ", DTypeName(m.dtype),
                                                   "; the CUDA backend takes F32, F16 or BF16"));
  }
  if (rows * cols > 0 && m.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " has no data"));
  }
  return absl::OkStatus();
}

absl::Status CheckVector(const std::vector<float>& v, int64_t size, absl::string_view name) {
  if (static_cast<int64_t>(v.size()) != size) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " has ", v.size(),
                                                   " elements, expected ", size));
  }
  return absl::OkStatus();
}

// Everything that needs no device: what the CUDA ops support, the weights' shapes, the TP
// group, the options.
}  // namespace

bool ConvertibleDType(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

}  // namespace tpserve::cuda_compute

namespace tpserve {

absl::Status CudaBackendSupports(const ModelConfig& c, const Layout& l) {
  if (c.head_dim != 64 && c.head_dim != 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA backend supports head_dim 64 and 128; this model has ", c.head_dim));
  }
  if (c.hidden_size < 1 || c.intermediate_size < 1 || c.num_heads < 1 || c.num_kv_heads < 1 ||
      c.num_heads % c.num_kv_heads != 0 || c.vocab_size < 1 || c.max_position_embeddings < 1 ||
      c.sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: hidden ", c.hidden_size, ", intermediate ", c.intermediate_size,
        ", heads ", c.num_heads, "/", c.num_kv_heads, ", vocab ", c.vocab_size,
        ", max positions ", c.max_position_embeddings, ", sliding window ", c.sliding_window,
        " are not a valid decoder"));
  }
  const int lq = l.q_heads(), lkv = l.kv_heads();
  if (lq < 1 || lkv < 1 || lq % lkv != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        l.Describe(), ": the CUDA attention needs the rank's ", lq,
        " query heads to be a multiple of its ", lkv, " KV heads"));
  }
  // The device kernels read local KV head h / (lq / lkv) for local query head h; the CPU
  // engine's (and Hugging Face's) mapping is global head / (num_heads / num_kv_heads) minus
  // the rank's first KV head. They differ when a rank's heads straddle KV groups unevenly.
  const int group = c.num_heads / c.num_kv_heads, local_group = lq / lkv;
  for (int h = l.q_head_begin; h < l.q_head_end; ++h) {
    if (h / group - l.kv_head_begin != (h - l.q_head_begin) / local_group) {
      return absl::InvalidArgumentError(absl::StrCat(
          l.Describe(), ": query head ", h, " reads KV head ", h / group,
          ", which the CUDA attention (local query head i reads local KV head i / ",
          local_group, ") cannot express; use a tensor-parallel size that divides the ",
          c.num_kv_heads, " KV heads or is a multiple of them"));
    }
  }
  if (local_group > kernels::cuda::kMaxDecodeGroup) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA backend supports at most ", kernels::cuda::kMaxDecodeGroup,
        " query heads per KV head; this rank has ", local_group));
  }
  return absl::OkStatus();
}

}  // namespace tpserve

namespace tpserve::cuda_compute {

absl::Status CheckCreateArgs(const ModelConfig& c, const Layout& l, const ShardWeights& w,
                             DeviceCommunicator* tp_group, const CudaComputeOptions& o) {
  RETURN_IF_ERROR(CudaBackendSupports(c, l));
  const int lq = l.q_heads(), lkv = l.kv_heads();
  if (l.tp > 1 && tp_group == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallelism ", l.tp, " needs a device communicator for the group"));
  }
  if (tp_group != nullptr && (tp_group->size() != l.tp || tp_group->rank() != l.tp_rank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the device communicator is rank ", tp_group->rank(), " of ", tp_group->size(),
        ", the layout says tensor rank ", l.tp_rank, " of ", l.tp));
  }
  if (o.device < 0 || !(o.memory_fraction > 0.0 && o.memory_fraction <= 1.0) ||
      o.max_step_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA options: device ", o.device, " (>= 0), memory_fraction ", o.memory_fraction,
        " (in (0, 1]), max_step_tokens ", o.max_step_tokens, " (>= 1)"));
  }

  const int64_t h = c.hidden_size, d = c.head_dim, mlp = l.mlp_end - l.mlp_begin;
  if (static_cast<int>(w.layers.size()) != l.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", w.layers.size(),
                                                   " layers, the stage has ", l.num_layers()));
  }
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& lw = w.layers[i];
    const std::string name = absl::StrCat("layer ", l.layer_begin + static_cast<int>(i), " ");
    RETURN_IF_ERROR(CheckVector(lw.input_norm, h, name + "input_norm"));
    RETURN_IF_ERROR(CheckVector(lw.post_norm, h, name + "post_norm"));
    RETURN_IF_ERROR(CheckMatrix(lw.qkv.view, (lq + 2 * lkv) * d, h, name + "qkv"));
    RETURN_IF_ERROR(CheckMatrix(lw.o.view, h, lq * d, name + "o"));
    RETURN_IF_ERROR(CheckMatrix(lw.gate_up.view, 2 * mlp, h, name + "gate_up"));
    RETURN_IF_ERROR(CheckMatrix(lw.down.view, h, mlp, name + "down"));
  }
  if (l.first_stage()) RETURN_IF_ERROR(CheckMatrix(w.embedding.view, c.vocab_size, h, "embedding"));
  if (l.last_stage()) {
    RETURN_IF_ERROR(CheckVector(w.final_norm, h, "final_norm"));
    RETURN_IF_ERROR(CheckMatrix(w.lm_head.view, l.vocab_end - l.vocab_begin, h, "lm_head"));
  }
  return absl::OkStatus();
}

}  // namespace tpserve::cuda_compute
