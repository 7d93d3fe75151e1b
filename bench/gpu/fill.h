// Device-side random fill for the GPU benchmark (bench/gpu; plain C++ header).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tpserve::bench::gpu {

// dst[i] = bf16(uniform(-scale, scale)) from a counter-based hash of (seed, i): no host data,
// so 20 GB of weights take milliseconds. Enqueued on `stream` (a cudaStream_t); returns the
// launch's cudaError_t as an int.
int FillRandomBf16(uint16_t* dst, size_t n, uint64_t seed, float scale, void* stream);

}  // namespace tpserve::bench::gpu
