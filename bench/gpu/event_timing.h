// Device-time measurement for the GPU benchmark (bench/gpu; plain C++ header).
#pragma once

#include "absl/functional/function_ref.h"

namespace tpserve::bench::gpu {

// Median milliseconds, by CUDA events on `stream` (a cudaStream_t), of `reps` calls of
// `enqueue` (which enqueues work on that stream) after `warmup` calls. Ends the process with
// a message on a CUDA error (the benchmark's policy).
double MedianEventMs(void* stream, int warmup, int reps, absl::FunctionRef<void()> enqueue);

}  // namespace tpserve::bench::gpu
