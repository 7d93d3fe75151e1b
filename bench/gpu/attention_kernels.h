// Prefill attention on its own: the tensor-core and the CUDA-core kernels behind
// PagedPrefillAttention (kernels/cuda/attention_internal.h) timed side by side on one layer
// of a causal prompt, for the GPU benchmark (bench/gpu; plain C++ header).
#pragma once

#include <cstdint>

#include "model/config.h"

namespace tpserve::bench::gpu {

struct AttentionKernelTimes {
  int64_t tokens = 0;
  double flops = 0;       // useful FLOPs of one layer: 4 * heads * head_dim * causal pairs
  double tensor_core_ms = 0;  // median over the repetitions (CUDA events)
  double simt_ms = 0;
  double max_abs_diff = 0;    // between the two kernels' outputs (fp32 of the bf16 results)
};

// One sequence of `tokens` new tokens (start position 0, all its keys in the cache) over the
// query and KV heads of `config` with random bf16 q and K/V, on `stream` (a cudaStream_t).
// Dies on a CUDA or op error (the benchmark's policy).
AttentionKernelTimes TimePrefillAttentionKernels(const ModelConfig& config, int64_t tokens,
                                                 void* stream);

}  // namespace tpserve::bench::gpu
