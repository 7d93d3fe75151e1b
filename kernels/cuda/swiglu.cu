// SwiGLU on the GPU: bf16 gate_up [tokens, 2 * inter] -> bf16 [tokens, inter].
// A grid-stride loop over output elements (64-bit indices: tokens * inter can pass 2^31).
// silu is torch's formula g / (1 + exp(-g)) in fp32 with the accurate expf (within 2 ulp; no
// fast-math; SwiGluBf16), so NaN and inf behave as in kernels::ref::SwiGlu; one rounding.
// Tested by tests/gpu/cuda_ops_test.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

__global__ void SwiGluKernel(const uint16_t* __restrict__ gate_up, uint16_t* __restrict__ out,
                             int64_t tokens, int64_t inter) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t total = tokens * inter;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < total;
       idx += step) {
    const int64_t t = idx / inter;
    const int64_t i = idx - t * inter;
    const uint16_t* row = gate_up + t * 2 * inter;
    out[idx] = SwiGluBf16(row[i], row[inter + i]);
  }
}

}  // namespace

int LaunchSwiGlu(const SwiGluParams& p, Stream stream) {
  const int64_t total = p.tokens * p.inter;
  const int64_t blocks = std::min(kMaxBlocks, (total + kThreads - 1) / kThreads);
  LaunchKernel(SwiGluKernel, static_cast<unsigned>(blocks), kThreads, 0, ToCudaStream(stream),
               p.gate_up, p.out, p.tokens, p.inter);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
