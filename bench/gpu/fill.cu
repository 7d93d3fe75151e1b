// FillRandomBf16 (bench/gpu/fill.h): a grid-stride loop, one splitmix64 hash per element.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "bench/gpu/fill.h"
#include "kernels/cuda/device_utils.cuh"

namespace tpserve::bench::gpu {
namespace {

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void FillKernel(uint16_t* dst, size_t n, uint64_t seed, float scale) {
  kernels::cuda::internal::WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const uint64_t h = SplitMix64(seed ^ SplitMix64(i));
    // 24 random bits -> [-1, 1), then bf16 by truncation (uniform enough for a benchmark).
    const float u = static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
    dst[i] = static_cast<uint16_t>(__float_as_uint(u * scale) >> 16);
  }
}

}  // namespace

int FillRandomBf16(uint16_t* dst, size_t n, uint64_t seed, float scale, void* stream) {
  if (n == 0) return 0;
  const size_t blocks = std::min<size_t>((n + 255) / 256, size_t{1} << 16);
  kernels::cuda::internal::LaunchKernel(FillKernel, static_cast<unsigned>(blocks), 256, 0,
                                        static_cast<cudaStream_t>(stream), dst, n, seed, scale);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::bench::gpu
