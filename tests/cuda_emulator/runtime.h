// The CUDA emulator's runtime internals shared with its cuBLASLt (cublaslt.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

namespace tpserve::cuda_emulator {

// Enqueues `work` on `stream` (or into the stream's capture), to run in issue order when the
// host next synchronises.
void EnqueueWork(cudaStream_t stream, std::function<void()> work);

// Whether [p, p + bytes) lies inside one cudaMalloc allocation.
bool IsDeviceMemory(const void* p, size_t bytes);

}  // namespace tpserve::cuda_emulator
