// The weights one rank owns, copied out of the memory-mapped checkpoint (layer: worker;
// immutable after load, so reads are thread-safe). Projections that share an input are fused
// at load: q|k|v rows into one matrix, gate|up rows into another.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/gguf.h"
#include "worker/layout.h"

namespace tpserve {

// An owned weight matrix in its stored dtype.
struct OwnedMatrix {
  std::vector<uint8_t> bytes;
  kernels::WeightMatrix view;  // points into bytes
};

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> post_norm;   // [hidden]
  OwnedMatrix qkv;                // [(q_heads + 2 kv_heads) * head_dim, hidden], local heads
  OwnedMatrix o;                  // [hidden, q_heads * head_dim], local input columns
  OwnedMatrix gate_up;            // [2 * mlp_cols, hidden]: gate rows then up rows
  OwnedMatrix down;               // [hidden, mlp_cols], local input columns
};

struct ShardWeights {
  std::vector<LayerWeights> layers;  // this stage's layers, in order
  OwnedMatrix embedding;             // [vocab, hidden], first stage only
  std::vector<float> final_norm;     // [hidden], last stage only
  OwnedMatrix lm_head;               // [vocab_end - vocab_begin, hidden], last stage only
  uint64_t bytes = 0;                // total owned bytes
};

// Reads this rank's slices (Megatron split, see DESIGN.md). Errors name the file and tensor:
// NotFound for a missing tensor, InvalidArgument for a wrong shape or a dtype other than
// F32/F16/BF16, or fused projections stored in different dtypes.
absl::StatusOr<ShardWeights> LoadShardWeights(const Checkpoint& ckpt, const ModelConfig& config,
                                              const Layout& layout);

// The same slices from a llama.cpp GGUF file (names token_embd, blk.N.attn_q, ..., output;
// `config` from ModelConfigFromGguf). Every matrix is dequantised to F32 (view dtype F32),
// whatever its ggml type. Row slices (q/k/v, gate/up, vocab) dequantise only this rank's rows;
// o and down need a column slice, so all their rows are dequantised and only this rank's
// columns kept. attn_q / attn_k rows are put back from llama.cpp's interleaved RoPE order into
// HF order (UnpermuteGgufQkRows), so the result equals what the safetensors path loads from
// the same model. Errors: NotFound for a missing tensor; InvalidArgument for a wrong shape or
// a type DequantizeRows does not support; both name the tensor.
absl::StatusOr<ShardWeights> LoadShardWeights(const GgufModel& gguf, const ModelConfig& config,
                                              const Layout& layout);

}  // namespace tpserve
