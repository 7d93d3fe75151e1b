// Fused residual add + RMSNorm on the GPU: fp32 residual stream, bf16 delta, weight and output.
// One block of kThreads threads per token. Pass 1: each thread adds the delta to its strided
// share of the row, writes the sum back and accumulates its squares in fp32; one block sum.
// Pass 2: the same thread rereads the same elements (it wrote them itself, so no barrier is
// needed for them) and writes x * inv_rms * w rounded once to bf16. inv_rms is 1/sqrtf with
// IEEE sqrt and division (no fast-math), so the only differences from the double-precision
// reference are the fp32 sum order and the final rounding.
// Tested by tests/gpu/cuda_ops_test.cc against kernels::ref::AddRmsNorm / RmsNorm.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 256;

__global__ void AddRmsNormKernel(float* __restrict__ residual, const uint16_t* __restrict__ delta,
                                 const uint16_t* __restrict__ weight, uint16_t* __restrict__ out,
                                 int64_t dim, float eps) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  __shared__ float warp_sums[kThreads / 32];
  const int64_t t = blockIdx.x;
  float* x = residual + t * dim;
  float sum_sq = 0.0f;
  if (delta != nullptr) {
    const uint16_t* d = delta + t * dim;
    for (int64_t c = threadIdx.x; c < dim; c += kThreads) {
      const float v = x[c] + Bf16ToF32(d[c]);
      x[c] = v;
      sum_sq += v * v;
    }
  } else {
    for (int64_t c = threadIdx.x; c < dim; c += kThreads) {
      const float v = x[c];
      sum_sq += v * v;
    }
  }
  const float total = BlockSum<kThreads>(sum_sq, warp_sums);
  const float inv_rms = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  uint16_t* y = out + t * dim;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) {
    y[c] = F32ToBf16(x[c] * inv_rms * Bf16ToF32(weight[c]));
  }
}

}  // namespace

int LaunchAddRmsNorm(const AddRmsNormParams& p, Stream stream) {
  LaunchKernel(AddRmsNormKernel, static_cast<unsigned>(p.tokens), kThreads, 0, ToCudaStream(stream),
               p.residual, p.delta, p.weight, p.out, p.dim, p.eps);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
