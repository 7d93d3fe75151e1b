// Wall-clock timing of RankCompute steps as the Engine makes them (bench/gpu; plain C++, any
// RankCompute: the benchmark times CudaRankCompute, and the same code runs on CpuRankCompute).
// One step = Forward over the step's rows, then Sample (greedy) of the last row of every
// sequence; both are synchronous, so std::chrono around the two calls is the time the Engine
// waits. Not thread-safe (as RankCompute).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/rank_compute.h"

namespace tpserve::bench::gpu {

// A step of `num_seqs` sequences, each with `new_tokens` new tokens at positions
// [start_pos, start_pos + new_tokens) and `start_pos` tokens already in the KV cache (whatever
// the cache holds there: zeros do for timing). new_tokens == 1 makes a decode step.
struct StepShape {
  int64_t num_seqs = 1;
  int64_t new_tokens = 1;
  int64_t start_pos = 0;

  bool decode() const { return new_tokens == 1; }
  int64_t tokens() const { return num_seqs * new_tokens; }
  int64_t context() const { return start_pos + new_tokens; }  // keys each sequence attends to
  // KV blocks of `block_size` tokens the step needs (each sequence has its own).
  int64_t blocks(int64_t block_size) const {
    return num_seqs * ((context() + block_size - 1) / block_size);
  }
};

struct StepTiming {
  int reps = 0;
  double step_ms = 0.0;    // median over the timed steps of Forward + Sample
  double sample_ms = 0.0;  // median of the Sample part alone (logits GEMM + sampling)
  double min_ms = 0.0, max_ms = 0.0;  // of Forward + Sample
  std::vector<int32_t> tokens;  // the last step's greedy token for each sequence
};

// Runs `warmup` untimed then `reps` timed steps of `shape` (every step the same rows: random
// token ids from a fixed seed, sequence i over the i-th run of shape.blocks(block_size) /
// num_seqs ids of `blocks`, which must hold shape.blocks(block_size) valid block ids of the
// compute's cache). After the last step checks the logits of the sampled rows (all finite) and
// the tokens (in [0, vocab)). Errors: InvalidArgument for a bad shape or too few blocks, the
// compute's own errors as they come (prefixed with the step), Internal for non-finite logits
// or a token out of range.
[[nodiscard]] absl::StatusOr<StepTiming> TimeSteps(RankCompute& compute, const StepShape& shape,
                                                   int64_t vocab, int64_t block_size,
                                                   std::span<const int32_t> blocks, int warmup,
                                                   int reps);

// "decode batch 8 at position 512" / "prefill 2048 tokens (1 sequence)".
std::string Describe(const StepShape& shape);

}  // namespace tpserve::bench::gpu
