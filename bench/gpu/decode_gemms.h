// The decode step's GEMMs on their own: GemmHandle's small-batch kernel beside cuBLASLt, for
// the GPU benchmark (bench/gpu; plain C++ header).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace tpserve::bench::gpu {

struct DecodeGemmTime {
  std::string name;        // "qkv", "o", "gate_up", "gate_up+swiglu", "down", "lm_head"
  int64_t tokens = 0, rows = 0, cols = 0;
  double small_batch_ms = 0;  // median (CUDA events), kernels/cuda/gemm_skinny.cu (fused with
                              // SwiGLU for gate_up+swiglu: GemmSwiGlu)
  double cublaslt_ms = 0;     // median, cuBLASLt's heuristic choice (then SwiGlu's kernel)
  double weight_bytes = 0;
  double max_abs_diff = 0;    // between the two outputs (fp32 of the results)
};

// Each projection of one layer of `config` (and lm_head, fp32 out) at each token count of
// `tokens` (1..8), random bf16 inputs, both paths, on `stream` (a cudaStream_t). The weights
// rotate over copies that together pass 256 MiB (at most 64 copies), so that no timed call of
// the full-size model finds its weights in L2. Dies on a CUDA or op error (the benchmark's policy).
std::vector<DecodeGemmTime> TimeDecodeGemms(const ModelConfig& config,
                                            const std::vector<int64_t>& tokens, void* stream);

}  // namespace tpserve::bench::gpu
