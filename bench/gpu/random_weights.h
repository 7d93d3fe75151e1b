// Random host weights for the GPU benchmark (bench/gpu; plain C++, no CUDA): a ShardWeights of
// the shapes a rank of `layout` owns, every matrix bf16, filled on many threads so that the
// full-size model (10.7 B parameters, 21.5 GB) takes seconds, not minutes.
// Not thread-safe itself (it starts and joins its own threads).
#pragma once

#include <cstdint>

#include "model/config.h"
#include "worker/layout.h"
#include "worker/shard_weights.h"

namespace tpserve::bench::gpu {

// This rank's weights (worker/shard_weights.h shapes: fused qkv and gate_up rows, the rank's
// heads, MLP columns and vocab shard), BF16 matrices uniform in +-sqrt(3 / cols) (so each
// output has about the variance of its input), the embedding likewise, norm vectors all 1.
// Deterministic for a given `seed`, whatever `threads` is (each matrix has its own stream of
// splitmix64 values). `threads` <= 0 uses std::thread::hardware_concurrency(). Memory comes
// from std::vector (bad_alloc when the host runs out, as any allocation).
ShardWeights RandomShardWeights(const ModelConfig& config, const Layout& layout, uint64_t seed,
                                int threads);

// Elements of the matrices one decode step of this rank reads in full: every layer's qkv, o,
// gate_up and down, plus lm_head on the last stage (the embedding is read one row per token).
int64_t MatmulParams(const ModelConfig& config, const Layout& layout);

}  // namespace tpserve::bench::gpu
